//! CDNet in burn: EfficientNet multi-scale features, WSLL attention with MCSP pooling, contrastive
//! multi-zoom views, the HCD loss, and the two-pass inference path.

pub mod activation;
pub mod cdnet;
pub mod cmz;
pub mod efficientnet;
pub mod infer;
pub mod loss;
pub mod saved;
pub mod weights;
pub mod wsll;

pub use cdnet::{Cdnet, CdnetConfig, Extracted, FeatureExtractor, Head, NetworkConfig};
pub use efficientnet::{BackboneKind, EfficientNet, EfficientNetConfig};
