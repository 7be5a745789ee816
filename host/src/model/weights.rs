//! Loading pretrained backbone weights from timm's `tf_efficientnet_b*` safetensors files.
//!
//! Users who own ImageNet (or in-house) weights convert the timm model's `state_dict()` to
//! safetensors, e.g. `safetensors.torch.save_file(model.state_dict(), "b3.safetensors")`, and pass it
//! as `backbone_weights` in the training config. The names are mapped to this crate's module tree;
//! BatchNorm `weight`/`bias` become `gamma`/`beta`. Any tensor of the backbone that the file lacks,
//! or any shape mismatch, is an error naming the tensor.

use super::efficientnet::EfficientNet;
use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use std::path::Path;

/// Why weights could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file could not be read or parsed.
    #[error("cannot read backbone weights {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The file does not fit the configured backbone.
    #[error("backbone weights {path} do not fit the configured EfficientNet: {reason} (is it the same b0…b3 variant?)")]
    Mismatch {
        /// The file.
        path: String,
        /// Which tensors.
        reason: String,
    },
}

/// timm name → module path. Stage 0 is a depthwise-separable block (`conv_dw`, `bn1`, `conv_pw`,
/// `bn2`); later stages are inverted residuals (`conv_pw`, `bn1`, `conv_dw`, `bn2`, `conv_pwl`,
/// `bn3`). Patterns apply in order, so stage 0 is renamed before the general rules see it.
const TIMM_RENAMES: [(&str, &str); 12] = [
    (r"^blocks\.0\.(\d+)\.conv_dw\.", "stages.0.blocks.$1.depthwise.conv."),
    (r"^blocks\.0\.(\d+)\.bn1\.", "stages.0.blocks.$1.depthwise.bn."),
    (r"^blocks\.0\.(\d+)\.conv_pw\.", "stages.0.blocks.$1.project.conv."),
    (r"^blocks\.0\.(\d+)\.bn2\.", "stages.0.blocks.$1.project.bn."),
    (r"^blocks\.(\d+)\.(\d+)\.conv_pw\.", "stages.$1.blocks.$2.expand.conv."),
    (r"^blocks\.(\d+)\.(\d+)\.bn1\.", "stages.$1.blocks.$2.expand.bn."),
    (r"^blocks\.(\d+)\.(\d+)\.conv_dw\.", "stages.$1.blocks.$2.depthwise.conv."),
    (r"^blocks\.(\d+)\.(\d+)\.bn2\.", "stages.$1.blocks.$2.depthwise.bn."),
    (r"^blocks\.(\d+)\.(\d+)\.conv_pwl\.", "stages.$1.blocks.$2.project.conv."),
    (r"^blocks\.(\d+)\.(\d+)\.bn3\.", "stages.$1.blocks.$2.project.bn."),
    (r"^blocks\.(\d+)\.(\d+)\.se\.conv_reduce\.", "stages.$1.blocks.$2.se.reduce."),
    (r"^blocks\.(\d+)\.(\d+)\.se\.conv_expand\.", "stages.$1.blocks.$2.se.expand."),
];

/// Loads timm `tf_efficientnet_b*` weights (safetensors) into `backbone`. Extra tensors in the file
/// (the classifier, `conv_head`, `num_batches_tracked`) are ignored; missing ones are an error.
pub fn load_timm_backbone(backbone: EfficientNet, path: &Path) -> Result<EfficientNet, WeightsError> {
    let name = path.display().to_string();
    if !path.is_file() {
        return Err(WeightsError::Read { path: name, reason: "no such file".into() });
    }
    let mut store = SafetensorsStore::from_file(path).with_from_adapter(PyTorchToBurnAdapter).allow_partial(true);
    for (from, to) in TIMM_RENAMES {
        store = store.with_key_remapping(from, to);
    }
    let mut backbone = backbone;
    let result =
        backbone.load_from(&mut store).map_err(|e| WeightsError::Read { path: name.clone(), reason: e.to_string() })?;
    let mut problems: Vec<String> = result.missing.iter().map(|(p, _)| format!("missing {p}")).collect();
    problems.extend(result.errors.iter().map(|e| format!("{e:?}")));
    if !problems.is_empty() {
        problems.truncate(5);
        return Err(WeightsError::Mismatch { path: name, reason: problems.join("; ") });
    }
    Ok(backbone)
}
