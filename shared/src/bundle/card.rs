//! The model card (`model.json`): what it holds, its checks, and the digests that bind it to the
//! graphs (see the [`super`] module doc).

use super::{CARD_FORMAT, CARD_FORMAT_ONNX_ONLY, sha256_hex};
use crate::exam::ExamRule;
use crate::gate::FrameGate;
use crate::labels::LabelSet;
use crate::{CenterZoomParams, PreprocessConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::string::{String, ToString};
use std::vec::Vec;

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
    pub(super) fn check_values(&self) -> Result<(), String> {
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
