//! The CDNet host: trains the full CDNet with burn (CPU or CUDA), evaluates it, and exports the
//! inference path as an ONNX model bundle for the edge.
//!
//! * [`cli`]: the `cdnet` command line.
//! * [`data`]: ImageFolder and DICOM data sets, splits, preprocessing.
//! * [`export`]: ONNX model bundles (fp32 and int8) with their model card, checked with tract.
//! * [`model`]: the CDNet network, its loss and its views.
//! * [`phantom`]: procedural ocular B-scan phantom (labelled data with lesion masks).
//! * [`sweeps`]: frame-level against exam-level accuracy of a bundle on phantom sweeps.
//! * [`train`]: training loop, checkpoints, metrics, reports.

pub mod cli;
pub mod data;
pub mod export;
pub mod model;
pub mod phantom;
pub mod sweeps;
pub mod train;
