//! Model bundles: the exported inference path and its model card, as the host writes them and the
//! edge reads them.
//!
//! ```text
//! models/NAME/model.json     the card: labels, preprocessing, zoom, files + sha256, metrics, provenance
//! models/NAME/backbone.onnx  image [1,3,N,N] → feature [1,D], attention [1,1,h,w]
//! models/NAME/head.onnx      features [1,2D] (or [1,D]) → probabilities [1,K]
//! ```
//!
//! [`Bundle::open`] refuses a bundle whose files are missing, changed (sha256 or size) or whose card
//! is inconsistent, with a message that names the problem.

use crate::labels::LabelSet;
use crate::{CenterZoomParams, PreprocessConfig};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::string::{String, ToString};
use std::vec::Vec;

/// Card file name inside a bundle folder.
pub const CARD_FILE: &str = "model.json";
/// Card format version this code reads and writes.
pub const CARD_FORMAT: u32 = 1;
/// Input of the backbone graph.
pub const BACKBONE_INPUT: &str = "image";
/// Feature output of the backbone graph.
pub const BACKBONE_FEATURE: &str = "feature";
/// Attention (AttS) output of the backbone graph.
pub const BACKBONE_ATTENTION: &str = "attention";
/// Input of the head graph.
pub const HEAD_INPUT: &str = "features";
/// Output of the head graph.
pub const HEAD_OUTPUT: &str = "probabilities";

/// Numeric precision of the exported graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// 32-bit float.
    Fp32,
    /// 8-bit integer weights and activations (QDQ), float elsewhere.
    Int8,
}

/// One file of the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCard {
    /// Lower-case hex SHA-256 of the file's bytes.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
}

/// The model card (`model.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// Card format version.
    pub format: u32,
    /// Bundle name.
    pub name: String,
    /// Precision of the graphs.
    pub precision: Precision,
    /// Output classes, in order.
    pub labels: LabelSet,
    /// Frame → network input.
    pub preprocess: PreprocessConfig,
    /// Test-time centre zoom.
    pub center_zoom: CenterZoomParams,
    /// Two passes (global + centre zoom, fused head) or one (global, per-view head).
    pub zoom_inference: bool,
    /// Below this top probability the screen says "uncertain — refer".
    pub refer_threshold: f32,
    /// Side of the attention map (`input_size / 32`).
    pub attention_side: usize,
    /// Width of the backbone's feature output.
    pub feature_dim: usize,
    /// The backbone graph file.
    pub backbone: String,
    /// The head graph file.
    pub head: String,
    /// ONNX opset of the graphs.
    pub opset: i64,
    /// Every file of the bundle (the card excepted) with its hash.
    pub files: BTreeMap<String, FileCard>,
    /// Evaluation metrics (fp32 and, for int8 bundles, int8).
    #[serde(default)]
    pub metrics: serde_json::Value,
    /// How the model was trained (config, data summary, command, seed).
    #[serde(default)]
    pub training: serde_json::Value,
    /// How the bundle was exported (exporter version, command, quantisation).
    #[serde(default)]
    pub export: serde_json::Value,
}

/// Why a bundle was refused.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// No card.
    #[error("{0} is not a model bundle: it has no {CARD_FILE}")]
    NoCard(PathBuf),
    /// The card does not parse or is inconsistent.
    #[error("model card {path} is invalid: {reason}")]
    BadCard {
        /// The card.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A listed file is missing.
    #[error("bundle file {0} is missing; copy the whole bundle folder again")]
    MissingFile(PathBuf),
    /// A file changed since export.
    #[error("bundle file {path} was modified or damaged ({what}); re-export or copy the bundle again")]
    Tampered {
        /// The file.
        path: PathBuf,
        /// Size or hash difference.
        what: String,
    },
    /// I/O failure.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| std::format!("{b:02x}")).collect()
}

/// A verified bundle: its folder and card.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The folder.
    pub dir: PathBuf,
    /// The card.
    pub card: ModelCard,
}

impl ModelCard {
    /// Internal consistency (not the files).
    pub fn check(&self) -> Result<(), String> {
        if self.format != CARD_FORMAT {
            return Err(std::format!("card format {} is not supported (this build reads {CARD_FORMAT})", self.format));
        }
        for (role, file) in [("backbone", &self.backbone), ("head", &self.head)] {
            if !self.files.contains_key(file) {
                return Err(std::format!("the {role} graph {file} is not listed in files"));
            }
        }
        if self.attention_side == 0 || self.feature_dim == 0 || self.preprocess.input_size == 0 {
            return Err("attention_side, feature_dim and preprocess.input_size must be positive".into());
        }
        if !(0.0..=1.0).contains(&self.refer_threshold) {
            return Err(std::format!("refer_threshold {} is not a probability", self.refer_threshold));
        }
        self.preprocess.crop.validate().map_err(|e| e.to_string())
    }
}

impl Bundle {
    /// Reads and verifies the bundle in `dir`: card, file sizes and hashes.
    pub fn open(dir: &Path) -> Result<Bundle, BundleError> {
        let card_path = dir.join(CARD_FILE);
        if !card_path.is_file() {
            return Err(BundleError::NoCard(dir.to_path_buf()));
        }
        let text = std::fs::read(&card_path).map_err(|source| BundleError::Io { path: card_path.clone(), source })?;
        let bad = |reason: String| BundleError::BadCard { path: card_path.clone(), reason };
        let card: ModelCard = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
        card.check().map_err(bad)?;
        for (name, expected) in &card.files {
            if name.contains('/') || name.contains('\\') || name == ".." {
                return Err(bad(std::format!("file name {name:?} must be a plain name inside the bundle")));
            }
            let path = dir.join(name);
            if !path.is_file() {
                return Err(BundleError::MissingFile(path));
            }
            let bytes = std::fs::read(&path).map_err(|source| BundleError::Io { path: path.clone(), source })?;
            if bytes.len() as u64 != expected.bytes {
                return Err(BundleError::Tampered {
                    path,
                    what: std::format!("{} bytes, the card says {}", bytes.len(), expected.bytes),
                });
            }
            let actual = sha256_hex(&bytes);
            if actual != expected.sha256 {
                return Err(BundleError::Tampered {
                    path,
                    what: std::format!("sha256 {actual}, the card says {}", expected.sha256),
                });
            }
        }
        Ok(Bundle { dir: dir.to_path_buf(), card })
    }

    /// Path of a bundle file.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `card` into `dir` after filling in the hashes of the listed files.
    pub fn write_card(dir: &Path, card: &mut ModelCard, files: &[&str]) -> Result<(), BundleError> {
        card.files.clear();
        for name in files {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(|source| BundleError::Io { path: path.clone(), source })?;
            card.files.insert(name.to_string(), FileCard { sha256: sha256_hex(&bytes), bytes: bytes.len() as u64 });
        }
        let path = dir.join(CARD_FILE);
        let mut text: Vec<u8> = serde_json::to_vec_pretty(card)
            .map_err(|e| BundleError::BadCard { path: path.clone(), reason: e.to_string() })?;
        text.push(b'\n');
        std::fs::write(&path, text).map_err(|source| BundleError::Io { path, source })
    }
}
