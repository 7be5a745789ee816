//! What the CDNet host and edge must agree on, in one place so they cannot drift.
//!
//! * [`labels`]: class label sets (the five ocular classes by default; a model card may carry its own).
//! * [`preprocess`]: device crop, grayscale, bilinear resize (PyTorch `align_corners=False`) and
//!   normalisation, turning any 8-bit frame into the network input.
//! * [`zoom`]: the test-time centre-zoom box computed from the attention map, and the crop it implies.
//! * [`heatmap`]: where an attention cell lies in the image (TF-padding-corrected centres), the
//!   one geometry behind the zoom box, the pointing game and every drawn heatmap.
//! * [`postprocess`]: softmax, top class, heatmap quantisation.
//! * [`protocol`]: the probe link: messages, packet framing (postcard + CRC-32 + COBS), a streaming
//!   decoder that resynchronises after garbage, and frame chunking/reassembly.
//!
//! * [`phantom`] (feature `phantom`): the procedural ocular B-scan phantom, so the host trains on
//!   and the edge's probe simulator streams the very same images.
//! * [`bundle`] (feature `bundle`): the exported model bundle and its card, verified by hash and
//!   bound to its graphs ([`onnx_metadata`]: the ONNX `metadata_props` stamp), and [`gate`], the
//!   calibrated frame gate the card carries (which frames show an eye at all), and [`signature`],
//!   the optional ed25519 signature that lets a board serve only bundles its owner signed.
//! * [`exam`] (`std`): a sweep's gated frames → one verdict per eye (soft voting, key frame).
//! * [`runtime`] (feature `runtime`): the two-pass inference path on a bundle, with tract — the
//!   edge runs it on every frame, the host runs it to check exports.
//! * [`imageio`] (feature `files`): PNG/JPEG/BMP/DICOM files → 8-bit gray frames, the one
//!   conversion both halves use.
//!
//! The crate is `#![no_std]`; the `alloc` feature adds label sets and frame reassembly, `std` (default)
//! adds `std::error::Error` impls; `phantom`, `files`, `bundle` and `runtime` need `std`. The wire format is specified in `docs/protocol.md`.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(feature = "std")]
extern crate std;

#[cfg(feature = "bundle")]
pub mod bundle;
#[cfg(feature = "std")]
pub mod exam;
#[cfg(feature = "runtime")]
mod frame_pool;
#[cfg(feature = "bundle")]
pub mod gate;
pub mod geometry;
pub mod heatmap;
#[cfg(feature = "files")]
pub mod imageio;
#[cfg(feature = "alloc")]
pub mod labels;
#[cfg(feature = "bundle")]
pub mod onnx_metadata;
#[cfg(feature = "phantom")]
pub mod phantom;
pub mod postprocess;
pub mod preprocess;
pub mod protocol;
#[cfg(feature = "runtime")]
pub mod quantise_fusion;
pub mod resize;
#[cfg(feature = "runtime")]
pub mod runtime;
#[cfg(feature = "bundle")]
pub mod signature;
pub mod zoom;

/// Most classes a model may have; bounded so the probe protocol's result message has a fixed size.
pub const MAX_CLASSES: usize = 16;

pub use geometry::Rect;
pub use preprocess::{CropProfile, GrayImage, Normalization, PreprocessConfig, PreprocessError};
pub use zoom::{CenterZoomParams, center_zoom_box};
