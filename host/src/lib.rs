//! The CDNet host: trains the full CDNet with burn (CPU or CUDA), evaluates it, and exports the
//! inference path as an ONNX model bundle for the edge.
//!
//! * [`cli`]: the `cdnet` command line.
//! * [`data`]: ImageFolder and DICOM data sets, splits, preprocessing.
//! * [`phantom`]: procedural ocular B-scan phantom (labelled data with lesion masks).

pub mod cli;
pub mod data;
pub mod phantom;
