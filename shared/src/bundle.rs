//! Model bundles: the exported inference path and its model card, as the host writes them and the
//! edge reads them.
//!
//! ```text
//! models/NAME/model.json     the card: labels, preprocessing, zoom, files + sha256, metrics, provenance
//! models/NAME/backbone.onnx  image [1,3,N,N] → feature [1,D], attention [1,1,h,w]
//! models/NAME/head.onnx      features [1,2D] (or [1,D]) → probabilities [1,K]
//! models/NAME/backbone.nnef.tar, head.nnef.tar   the same graphs in NNEF: what the edge runs
//! ```
//!
//! [`Bundle::open`] refuses a bundle whose files are missing, changed (sha256 or size) or whose card
//! is inconsistent or out of range, with a message that names the problem.
//!
//! **Binding.** The card's hashes protect the graphs, but the card itself decides the answer (labels
//! and their order, preprocessing, zoom, thresholds). So every graph carries, in its ONNX
//! `metadata_props` under [`CARD_DIGEST_KEY`], the SHA-256 of the card's canonical form
//! ([`ModelCard::digest`]: every field except `files`, keys sorted, no whitespace). The graphs'
//! hashes in `files` then cover that stamp: an edited card no longer matches its graphs, an edited
//! graph no longer matches the card, and either is refused before a frame is served. This catches
//! any edit, corruption or mix-up of bundle files. The NNEF archives carry no stamp of their own:
//! their hashes are card fields ([`NnefGraphs`]) that the digest covers, so the ONNX graphs' stamps
//! bind them too (the edge reads the ONNX files' metadata, never their graphs). This is not a
//! signature against someone who rewrites all of them on purpose — that is [`crate::signature`],
//! checked by [`Bundle::open_trusted`] when the device is given trusted keys.

use crate::exam::ExamRule;
use crate::gate::FrameGate;
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
/// Card format version this code writes (2: graphs stamped with the card digest; 3: a calibrated
/// frame gate; 4: NNEF graphs beside the ONNX, which the edge runs). Format 3 is still read: the
/// host runs its ONNX graphs and `cdnet nnef` upgrades it.
pub const CARD_FORMAT: u32 = 4;
/// The last format without NNEF graphs.
pub const CARD_FORMAT_ONNX_ONLY: u32 = 3;
/// The ONNX `metadata_props` key under which each graph carries [`ModelCard::digest`].
pub const CARD_DIGEST_KEY: &str = "cdnet.card_sha256";
/// Input of the backbone graph.
pub const BACKBONE_INPUT: &str = "image";
/// Feature output of the backbone graph.
pub const BACKBONE_FEATURE: &str = "feature";
/// Heatmap output of the backbone graph (stride 16; named "attention" and AttS in older bundles).
pub const BACKBONE_HEATMAP: &str = "heatmap";
/// Input of the head graph.
pub const HEAD_INPUT: &str = "features";
/// Output of the head graph.
pub const HEAD_OUTPUT: &str = "probabilities";

/// One graph of the bundle in NNEF and the SHA-256 of its archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NnefGraph {
    /// The archive file (a tar of tract's NNEF, `graph.nnef` + tensors).
    pub file: String,
    /// Lower-case hex SHA-256 of the archive; the card digest covers it (see the module doc).
    pub sha256: String,
}

/// The bundle's graphs in NNEF, translated from its ONNX graphs at export: what the edge runs, with
/// tract-nnef alone (no ONNX front end on the device). The ONNX graphs stay in the bundle as the
/// interchange format (onnxruntime, Netron) and as the carriers of the card digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NnefGraphs {
    /// The backbone (same inputs and outputs as [`ModelCard::backbone`]).
    pub backbone: NnefGraph,
    /// The head (same inputs and outputs as [`ModelCard::head`]).
    pub head: NnefGraph,
    /// What translated them (tract version): the edge's tract must read it.
    pub translator: String,
}

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
    /// Side of the heatmap the backbone graph outputs: `2 · attention_side`, the stride-16 map whose
    /// 2 × 2 block means are AttS. Absent in bundles exported before it existed, whose graph outputs
    /// AttS itself (then the heatmap is AttS). See [`ModelCard::heatmap_side`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heatmap_side: Option<usize>,
    /// Width of the backbone's feature output.
    pub feature_dim: usize,
    /// The backbone graph file.
    pub backbone: String,
    /// The head graph file.
    pub head: String,
    /// ONNX opset of the graphs.
    pub opset: i64,
    /// The graphs in NNEF (format 4 on; absent in format 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nnef: Option<NnefGraphs>,
    /// The frame gate: which frames are classified at all. Required from format 3; `None` only
    /// while reading an older card, which [`ModelCard::check`] then refuses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<FrameGate>,
    /// How the device turns a sweep's frames into one verdict per eye.
    #[serde(default)]
    pub exam: ExamRule,
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
    /// The card and a graph were not exported together (one was edited, or files were mixed).
    #[error(
        "model card {card} does not match its graph {graph}: {what}. The card was edited or the files \
         come from different exports; copy the bundle again or re-export it (cdnet export)"
    )]
    Unbound {
        /// The card.
        card: PathBuf,
        /// The graph.
        graph: PathBuf,
        /// Which digest differs.
        what: String,
    },
    /// A file changed since export.
    #[error("bundle file {path} was modified or damaged ({what}); re-export or copy the bundle again")]
    Tampered {
        /// The file.
        path: PathBuf,
        /// Size or hash difference.
        what: String,
    },
    /// The device trusts signed bundles only and this one has no `model.sig`.
    #[error(
        "bundle {dir} is not signed, and this device serves only bundles signed by a trusted key ({trusted}); \
         sign it on the laptop with `cdnet sign --bundle DIR --key KEY.pem`"
    )]
    Unsigned {
        /// The bundle folder.
        dir: PathBuf,
        /// The trusted keys' ids.
        trusted: String,
    },
    /// `model.sig` is malformed, stale, by an untrusted key, or not valid.
    #[error("bundle signature {path} is refused: {what}")]
    BadSignature {
        /// The signature file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// A key file is not a PEM ed25519 key of the expected kind.
    #[error("key {path}: {reason}")]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
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
    hex(&Sha256::digest(bytes))
}

/// `bytes` as lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| std::format!("{b:02x}")).collect()
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
    /// Internal consistency and the range of every field that changes an answer (not the files).
    /// Errors name the field.
    pub fn check(&self) -> Result<(), String> {
        if self.format != CARD_FORMAT && self.format != CARD_FORMAT_ONNX_ONLY {
            return Err(std::format!(
                "format {} is not supported: this build reads formats {CARD_FORMAT_ONNX_ONLY} and {CARD_FORMAT} \
                 (graphs bound to the card, a calibrated frame gate, NNEF graphs from format 4); re-export the \
                 model with this version (cdnet export), or give a format-2 bundle its gate with \
                 `cdnet gate --model BUNDLE --data TRAINING_DATA`",
                self.format
            ));
        }
        if self.format != self.current_format() {
            return Err(match self.nnef {
                Some(_) => std::format!("nnef: a format-{} card has no NNEF graphs", self.format),
                None => std::format!("nnef is missing: a format-{} card lists its NNEF graphs", self.format),
            });
        }
        for (role, file) in [("backbone", &self.backbone), ("head", &self.head)] {
            if !self.files.contains_key(file) {
                return Err(std::format!("{role}: the graph {file} is not listed in files"));
            }
        }
        self.check_nnef_files()?;
        self.check_values()
    }

    /// The format a card with these contents has: [`CARD_FORMAT`] with NNEF graphs, else
    /// [`CARD_FORMAT_ONNX_ONLY`].
    pub fn current_format(&self) -> u32 {
        if self.nnef.is_some() { CARD_FORMAT } else { CARD_FORMAT_ONNX_ONLY }
    }

    /// Each NNEF graph is listed in `files` with the hash the card digest covers: the ONNX graphs'
    /// stamps bind the card, the card binds the NNEF archives.
    fn check_nnef_files(&self) -> Result<(), String> {
        let Some(nnef) = &self.nnef else { return Ok(()) };
        for (role, graph) in [("backbone", &nnef.backbone), ("head", &nnef.head)] {
            match self.files.get(&graph.file) {
                None => return Err(std::format!("nnef.{role}: the graph {} is not listed in files", graph.file)),
                Some(listed) if listed.sha256 != graph.sha256 => {
                    return Err(std::format!(
                        "nnef.{role}.sha256 is {} but files lists {} for {}",
                        graph.sha256,
                        listed.sha256,
                        graph.file
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Width of the head graph's input: both views' features with the centre zoom, one without.
    pub fn head_width(&self) -> usize {
        if self.zoom_inference { 2 * self.feature_dim } else { self.feature_dim }
    }

    /// Every graph file of the bundle: the ONNX graphs, then the NNEF archives.
    pub fn graph_files(&self) -> Vec<String> {
        let mut files = std::vec![self.backbone.clone(), self.head.clone()];
        if let Some(nnef) = &self.nnef {
            files.extend([nnef.backbone.file.clone(), nnef.head.file.clone()]);
        }
        files
    }

    /// The range of every field that changes an answer.
    fn check_values(&self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("name is empty".into());
        }
        self.check_geometry()?;
        let normalization = &self.preprocess.normalization;
        if !(normalization.std.is_finite() && normalization.std > 0.0) {
            return Err(std::format!("preprocess.normalization.std = {} must be a positive number", normalization.std));
        }
        if !(0.0..=1.0).contains(&normalization.mean) {
            return Err(std::format!(
                "preprocess.normalization.mean = {} must lie in 0…1 (pixels are scaled to 0…1 first)",
                normalization.mean
            ));
        }
        self.preprocess.crop.validate().map_err(|e| std::format!("preprocess.crop: {e}"))?;
        self.exam.validate()?;
        match &self.gate {
            Some(gate) => gate.validate()?,
            None => {
                return Err("gate is missing: the card has no calibrated frame gate, so the device could not refuse \
                     frames that show no eye; calibrate one with `cdnet gate --model BUNDLE --data TRAINING_DATA`"
                    .into());
            }
        }
        if !(self.center_zoom.threshold > 0.0 && self.center_zoom.threshold <= 1.0) {
            return Err(std::format!(
                "center_zoom.threshold = {} must lie in (0, 1] (a fraction of the attention maximum)",
                self.center_zoom.threshold
            ));
        }
        if !(0.0..0.5).contains(&self.center_zoom.padding) {
            return Err(std::format!(
                "center_zoom.padding = {} must lie in [0, 0.5) (a fraction of the input side)",
                self.center_zoom.padding
            ));
        }
        if !(0.0..=1.0).contains(&self.refer_threshold) {
            return Err(std::format!("refer_threshold = {} must be a probability (0…1)", self.refer_threshold));
        }
        Ok(())
    }

    /// Side of the backbone graph's heatmap output (AttS's side for bundles without `heatmap_side`).
    pub fn heatmap_side(&self) -> usize {
        self.heatmap_side.unwrap_or(self.attention_side)
    }

    /// Input size, attention side and feature width agree with each other.
    fn check_geometry(&self) -> Result<(), String> {
        let n = self.preprocess.input_size;
        if n < 32 || !n.is_multiple_of(32) || n > 4096 {
            return Err(std::format!("preprocess.input_size = {n} must be a multiple of 32 between 32 and 4096"));
        }
        if self.attention_side != n / 32 {
            return Err(std::format!(
                "attention_side = {} must be preprocess.input_size / 32 = {}",
                self.attention_side,
                n / 32
            ));
        }
        if self.heatmap_side.is_some_and(|h| h != 2 * self.attention_side) {
            return Err(std::format!(
                "heatmap_side = {} must be 2 · attention_side = {} (or absent: the heatmap is AttS)",
                self.heatmap_side.unwrap_or(0),
                2 * self.attention_side
            ));
        }
        if self.feature_dim == 0 || self.feature_dim > 1 << 16 {
            return Err(std::format!("feature_dim = {} must lie in 1…65536", self.feature_dim));
        }
        Ok(())
    }

    /// SHA-256 (hex) of the card's canonical form: every field but `files` (which hashes the graphs
    /// that carry this digest), as JSON with object keys sorted and no whitespace. Numbers are
    /// written from their parsed values, so re-serialising a card gives the same digest on every
    /// build, whatever JSON map order a dependency enables.
    pub fn digest(&self) -> Result<String, String> {
        let mut value = serde_json::to_value(ModelCard { files: BTreeMap::new(), ..self.clone() })
            .map_err(|e| std::format!("cannot serialise the card: {e}"))?;
        if let Some(object) = value.as_object_mut() {
            object.remove("files");
        }
        let mut canonical = String::new();
        write_canonical(&value, &mut canonical);
        Ok(sha256_hex(canonical.as_bytes()))
    }

    /// SHA-256 (hex) of the canonical form of the whole card, `files` included: what a bundle
    /// signature signs ([`crate::signature`]). The graphs carry [`digest`](Self::digest) and
    /// `files` carries the graphs' hashes, so this one value covers every field and every file.
    pub fn bundle_digest(&self) -> Result<String, String> {
        let value = serde_json::to_value(self).map_err(|e| std::format!("cannot serialise the card: {e}"))?;
        let mut canonical = String::new();
        write_canonical(&value, &mut canonical);
        Ok(sha256_hex(canonical.as_bytes()))
    }

    /// The [`digest`](Self::digest) a reader of this card's `model.json` will compute: that of the
    /// card written as JSON and read back. serde_json's float parser is not always correctly
    /// rounded, so a number can come back one ULP away from the value that was written (found by
    /// the `card` fuzz target); the writer must stamp what the edge will see, not what it holds.
    pub fn written_digest(&self) -> Result<String, String> {
        let text = serde_json::to_vec_pretty(self).map_err(|e| std::format!("cannot serialise the card: {e}"))?;
        let read: ModelCard =
            serde_json::from_slice(&text).map_err(|e| std::format!("the card does not read back: {e}"))?;
        read.digest()
    }
}

/// Canonical JSON: objects with keys sorted, no whitespace; scalars as serde_json writes them.
fn write_canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

impl Bundle {
    /// Reads and verifies the bundle in `dir`: card, file sizes and hashes.
    pub fn open(dir: &Path) -> Result<Bundle, BundleError> {
        let (card_path, card) = read_card(dir)?;
        card.check().map_err(|reason| BundleError::BadCard { path: card_path.clone(), reason })?;
        let want = card.digest().map_err(|reason| BundleError::BadCard { path: card_path.clone(), reason })?;
        // Each graph's stamp is read from the bytes just hashed: one read per file.
        verify_files(dir, &card, &card_path, |path, name, bytes| {
            if *name == card.backbone || *name == card.head {
                check_stamp(&card_path, path, bytes, &want)?;
            }
            Ok(())
        })?;
        Ok(Bundle { dir: dir.to_path_buf(), card })
    }

    /// [`open`](Self::open), then, when `trusted` holds keys, the bundle's signature: it must be by
    /// one of them, over exactly this card (see [`crate::signature`]). Returns the bundle and the
    /// signing key's id (`None` when no key is trusted).
    pub fn open_trusted(
        dir: &Path,
        trusted: &crate::signature::TrustedKeys,
    ) -> Result<(Bundle, Option<String>), BundleError> {
        let bundle = Bundle::open(dir)?;
        if trusted.is_empty() {
            return Ok((bundle, None));
        }
        let signer = trusted.verify(dir, &bundle.card)?;
        Ok((bundle, Some(signer)))
    }

    /// Binds a bundle whose graphs are intact to the card it has now: the upgrade of a format-1
    /// bundle (exported before binding), or the deliberate, reviewed edit of a card field. The
    /// listed files must still match the card's hashes, every field must be in range; then the
    /// graphs are stamped, the card rewritten as the current format, and the bundle reopened.
    pub fn bind(dir: &Path) -> Result<Bundle, BundleError> {
        let (card_path, mut card) = read_card(dir)?;
        verify_files(dir, &card, &card_path, |_, _, _| Ok(()))?;
        card.format = card.current_format();
        card.check().map_err(|reason| BundleError::BadCard { path: card_path.clone(), reason })?;
        let files: Vec<String> = card.files.keys().cloned().collect();
        let names: Vec<&str> = files.iter().map(String::as_str).collect();
        Bundle::write_card(dir, &mut card, &names)?;
        Bundle::open(dir)
    }

    /// Gives the bundle in `dir` a calibrated frame gate (the upgrade of a format-2 bundle, or a
    /// recalibration): the listed files must still match the card's hashes; then the card is
    /// rewritten as the current format with `gate`, the graphs restamped, and the bundle reopened.
    pub fn set_gate(dir: &Path, gate: FrameGate) -> Result<Bundle, BundleError> {
        let (card_path, mut card) = read_card(dir)?;
        verify_files(dir, &card, &card_path, |_, _, _| Ok(()))?;
        card.format = card.current_format();
        card.gate = Some(gate);
        card.check().map_err(|reason| BundleError::BadCard { path: card_path.clone(), reason })?;
        let files: Vec<String> = card.files.keys().cloned().collect();
        let names: Vec<&str> = files.iter().map(String::as_str).collect();
        Bundle::write_card(dir, &mut card, &names)?;
        Bundle::open(dir)
    }

    /// Path of a bundle file.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Writes `card` into `dir`: stamps both graphs with the card's digest (replacing an earlier
    /// stamp), then fills in the hashes of the listed files and writes the card. Call it again after
    /// any change to the card. A signature of the old card no longer applies and is removed (sign
    /// again after reviewing the change).
    pub fn write_card(dir: &Path, card: &mut ModelCard, files: &[&str]) -> Result<(), BundleError> {
        let path = dir.join(CARD_FILE);
        let bad = |reason: String| BundleError::BadCard { path: path.clone(), reason };
        card.format = card.current_format();
        card.check_values().map_err(bad)?;
        let digest = card.written_digest().map_err(bad)?;
        for graph in [&card.backbone, &card.head] {
            let graph = dir.join(graph);
            let bytes = std::fs::read(&graph).map_err(|source| BundleError::Io { path: graph.clone(), source })?;
            let stamped = crate::onnx_metadata::set(&bytes, CARD_DIGEST_KEY, &digest)
                .map_err(|e| BundleError::Tampered { path: graph.clone(), what: e.to_string() })?;
            write_atomically(&graph, &stamped)?;
        }
        card.files.clear();
        for name in files {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(|source| BundleError::Io { path: path.clone(), source })?;
            card.files.insert(name.to_string(), FileCard { sha256: sha256_hex(&bytes), bytes: bytes.len() as u64 });
        }
        let mut text: Vec<u8> = serde_json::to_vec_pretty(card)
            .map_err(|e| BundleError::BadCard { path: path.clone(), reason: e.to_string() })?;
        text.push(b'\n');
        write_atomically(&path, &text)?;
        let signature = dir.join(crate::signature::SIGNATURE_FILE);
        match std::fs::remove_file(&signature) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(BundleError::Io { path: signature, source: error })
            }
            _ => Ok(()),
        }
    }
}

/// The card of the bundle in `dir` and its path, parsed but not checked (for tools that upgrade or
/// recalibrate a card that [`Bundle::open`] would refuse).
pub fn read_card(dir: &Path) -> Result<(PathBuf, ModelCard), BundleError> {
    let card_path = dir.join(CARD_FILE);
    if !card_path.is_file() {
        return Err(BundleError::NoCard(dir.to_path_buf()));
    }
    let text = std::fs::read(&card_path).map_err(|source| BundleError::Io { path: card_path.clone(), source })?;
    let card: ModelCard = serde_json::from_slice(&text)
        .map_err(|e| BundleError::BadCard { path: card_path.clone(), reason: e.to_string() })?;
    Ok((card_path, card))
}

/// The graph at `graph` (its `bytes`) carries the card digest `want`.
fn check_stamp(card_path: &Path, graph: &Path, bytes: &[u8], want: &str) -> Result<(), BundleError> {
    let unbound =
        |what: String| BundleError::Unbound { card: card_path.to_path_buf(), graph: graph.to_path_buf(), what };
    match crate::onnx_metadata::get(bytes, CARD_DIGEST_KEY).map_err(|e| unbound(e.to_string()))? {
        Some(got) if got == want => Ok(()),
        Some(got) => Err(unbound(std::format!("the graph was exported with card {got}, this card is {want}"))),
        None => Err(unbound(std::format!("the graph carries no single {CARD_DIGEST_KEY} entry"))),
    }
}

/// Every listed file is a plain name in `dir` with the size and sha256 the card records; `each`
/// then sees the verified bytes.
fn verify_files(
    dir: &Path,
    card: &ModelCard,
    card_path: &Path,
    mut each: impl FnMut(&Path, &String, &[u8]) -> Result<(), BundleError>,
) -> Result<(), BundleError> {
    for (name, expected) in &card.files {
        if name.is_empty() || name.contains('/') || name.contains('\\') || name == ".." || name == "." {
            return Err(BundleError::BadCard {
                path: card_path.to_path_buf(),
                reason: std::format!("files: {name:?} must be a plain file name inside the bundle"),
            });
        }
        let path = dir.join(name);
        if !path.is_file() {
            return Err(BundleError::MissingFile(path));
        }
        let bytes = std::fs::read(&path).map_err(|source| BundleError::Io { path: path.clone(), source })?;
        if bytes.len() as u64 != expected.bytes {
            let what = std::format!("{} bytes, the card says {}", bytes.len(), expected.bytes);
            return Err(BundleError::Tampered { path, what });
        }
        let actual = sha256_hex(&bytes);
        if actual != expected.sha256 {
            let what = std::format!("sha256 {actual}, the card says {}", expected.sha256);
            return Err(BundleError::Tampered { path, what });
        }
        each(&path, name, &bytes)?;
    }
    Ok(())
}

/// Writes through a temporary file and a rename, so a reader never sees half a file.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), BundleError> {
    let io = |source| BundleError::Io { path: path.to_path_buf(), source };
    let mut temporary = std::ffi::OsString::from(path.as_os_str());
    temporary.push(".partial");
    let temporary = PathBuf::from(temporary);
    std::fs::write(&temporary, bytes).map_err(io)?;
    std::fs::rename(&temporary, path).map_err(io)
}
