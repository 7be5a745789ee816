//! Saved models: weights (`NAME.bpk`, burnpack) next to `NAME.json`, which says how to rebuild and use
//! them (network config, label set, preprocessing, centre zoom, how they were trained).

use super::{Cdnet, CdnetConfig};
use burn::prelude::*;
use burn::store::ModuleRecord;
use cdnet_shared::labels::LabelSet;
use cdnet_shared::{CenterZoomParams, PreprocessConfig};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How to rebuild and run a saved model.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelInfo {
    /// File format version.
    pub format: u32,
    /// The network.
    pub cdnet: CdnetConfig,
    /// Output classes, in order.
    pub labels: LabelSet,
    /// Frame → input.
    pub preprocess: PreprocessConfig,
    /// Test-time centre zoom.
    pub center_zoom: CenterZoomParams,
    /// Free-form record of how it was trained (config, data, epochs, metrics).
    #[serde(default)]
    pub training: serde_json::Value,
}

/// Why a model could not be saved or loaded.
#[derive(Debug, thiserror::Error)]
pub enum SavedModelError {
    /// Missing or unreadable file.
    #[error("cannot read model {path}: {reason}")]
    Read {
        /// File.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The weights do not fit the described network.
    #[error("model weights {path} do not match {info}: {reason}")]
    Mismatch {
        /// Weights.
        path: PathBuf,
        /// Description.
        info: PathBuf,
        /// Why.
        reason: String,
    },
    /// Could not write.
    #[error("cannot write model {path}: {reason}")]
    Write {
        /// File.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, flushed to disk, then
/// renamed over the target, so a crash leaves either the old file or the new one, never half.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && let Ok(dir) = std::fs::File::open(dir)
    {
        let _ = dir.sync_all(); // make the rename durable where the OS allows it
    }
    Ok(())
}

/// The weights of a model as burnpack bytes.
pub fn model_bytes(model: &Cdnet) -> Result<Vec<u8>, String> {
    // Through `valid()`: burn keeps a training step's BatchNorm running-statistics update pending
    // per thread until something syncs it, and a record reads the last synced value, so a
    // checkpoint taken right after a training step (no validation pass in between: stage 1 of
    // the two-stage regime) lost that step's update, and a resumed run's frozen features
    // differed from the uninterrupted run's. `valid()` syncs first (shared state, so the training
    // model sees the same value). docs/upstream/burn-core-running-state-record.md.
    model.valid().into_record().into_bytes().map(|b| b.to_vec()).map_err(|e| e.to_string())
}

/// Loads burnpack bytes into a freshly built model.
pub fn model_from_bytes(model: Cdnet, bytes: Vec<u8>) -> Result<Cdnet, String> {
    let record = ModuleRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes)).map_err(|e| e.to_string())?;
    model.try_load_record(record).map_err(|e| e.to_string())
}

/// Saves `model` as `stem.bpk` + `stem.json`.
pub fn save(model: &Cdnet, info: &ModelInfo, stem: &Path) -> Result<(), SavedModelError> {
    let weights = stem.with_extension("bpk");
    let json = stem.with_extension("json");
    let write_err = |path: &Path, reason: String| SavedModelError::Write { path: path.to_path_buf(), reason };
    let bytes = model_bytes(model).map_err(|r| write_err(&weights, r))?;
    write_atomic(&weights, &bytes).map_err(|e| write_err(&weights, e.to_string()))?;
    let text = serde_json::to_vec_pretty(info).map_err(|e| write_err(&json, e.to_string()))?;
    write_atomic(&json, &text).map_err(|e| write_err(&json, e.to_string()))
}

/// Resolves what the user pointed at: a run folder (its best model), `X.bpk` or `X.json`.
pub fn resolve(path: &Path) -> Result<(PathBuf, PathBuf), SavedModelError> {
    let stem = if path.is_dir() {
        path.join("best")
    } else if path.extension().is_some_and(|e| e == "bpk" || e == "json") {
        path.with_extension("")
    } else {
        path.to_path_buf()
    };
    let (weights, json) = (stem.with_extension("bpk"), stem.with_extension("json"));
    for file in [&weights, &json] {
        if !file.is_file() {
            return Err(SavedModelError::Read {
                path: file.clone(),
                reason: "no such file (pass a run folder, or a .bpk model with its .json beside it)".into(),
            });
        }
    }
    Ok((weights, json))
}

/// Reads a model saved before `CdnetConfig` nested its `NetworkConfig`: moves those keys from
/// `cdnet` into `cdnet.network`, so every trained model keeps loading.
fn nest_network_keys(info: &mut serde_json::Value) {
    let Some(cdnet) = info.get_mut("cdnet").and_then(serde_json::Value::as_object_mut) else { return };
    if cdnet.contains_key("network") {
        return;
    }
    // The keys to move are NetworkConfig's own, read from its serialised form.
    let keys = serde_json::to_value(super::NetworkConfig::new()).unwrap_or_default();
    let network: serde_json::Map<String, serde_json::Value> = keys
        .as_object()
        .into_iter()
        .flat_map(|object| object.keys())
        .filter_map(|key| cdnet.remove(key).map(|value| (key.clone(), value)))
        .collect();
    cdnet.insert("network".into(), serde_json::Value::Object(network));
}

/// Loads a saved model onto `device`.
pub fn load(path: &Path, device: &Device) -> Result<(Cdnet, ModelInfo), SavedModelError> {
    let (weights, json) = resolve(path)?;
    let read = |p: &Path, e: String| SavedModelError::Read { path: p.to_path_buf(), reason: e };
    let mut value: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).map_err(|e| read(&json, e.to_string()))?)
            .map_err(|e| read(&json, e.to_string()))?;
    nest_network_keys(&mut value);
    let info: ModelInfo = serde_json::from_value(value).map_err(|e| read(&json, e.to_string()))?;
    info.cdnet.validate().map_err(|e| read(&json, e))?;
    if info.labels.len() != info.cdnet.num_classes {
        return Err(read(&json, format!("{} labels for {} outputs", info.labels.len(), info.cdnet.num_classes)));
    }
    let bytes = std::fs::read(&weights).map_err(|e| read(&weights, e.to_string()))?;
    let model = model_from_bytes(info.cdnet.init(device), bytes).map_err(|reason| SavedModelError::Mismatch {
        path: weights.clone(),
        info: json.clone(),
        reason,
    })?;
    Ok((model, info))
}
