//! The arguments of each `cdnet` subcommand (clap), one struct per command.

use crate::phantom::Difficulty;
use crate::train::device::Backend;
use clap::Args;
use std::path::PathBuf;

/// `cdnet bench-step`.
#[derive(Debug, Args)]
pub struct BenchStepArgs {
    /// TOML config whose model, loss and views are timed (default: the paper's, b3 at 224).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override any config key, as for `cdnet train` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Images per step (default: the config's training.batch_size).
    #[arg(long)]
    pub batch: Option<usize>,
    /// Untimed steps first (allocation, kernel compilation and autotuning on a GPU).
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Timed steps.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Compute device.
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: Backend,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// `cdnet bind`, `cdnet nnef`: one bundle.
#[derive(Debug, Args)]
pub struct BundleArgs {
    /// The bundle folder (with model.json).
    #[arg(long)]
    pub bundle: PathBuf,
}

/// `cdnet keygen`.
#[derive(Debug, Args)]
pub struct KeygenArgs {
    /// Writes PREFIX.key.pem (private, mode 0600: keep it off the boards) and PREFIX.pub.pem
    /// (public: give it to the boards with `cdnet-edge --trust`).
    #[arg(long, value_name = "PREFIX")]
    pub out: PathBuf,
    /// Replace existing key files.
    #[arg(long)]
    pub force: bool,
}

/// `cdnet sign`.
#[derive(Debug, Args)]
pub struct SignArgs {
    /// The bundle folder (with model.json); it must verify first.
    #[arg(long)]
    pub bundle: PathBuf,
    /// ed25519 private key, PKCS#8 PEM (`cdnet keygen`, or `openssl genpkey -algorithm ed25519`).
    #[arg(long, value_name = "KEY.pem")]
    pub key: PathBuf,
}

/// `cdnet sweeps`.
#[derive(Debug, Args)]
pub struct SweepsArgs {
    /// The bundle folder (five ocular classes).
    #[arg(long)]
    pub model: PathBuf,
    /// Sweeps per class (and as many of uninformative frames only).
    #[arg(long, default_value_t = 20)]
    pub per_class: usize,
    /// Frames per sweep.
    #[arg(long, default_value_t = 24)]
    pub frames: usize,
    /// Fraction of uninformative frames (air, lid, globe at the edge).
    #[arg(long, default_value_t = 0.35)]
    pub uninformative: f32,
    /// Phantom difficulty: easy, medium, hard, or 0…1.
    #[arg(long, default_value = "hard", value_parser = parse_difficulty)]
    pub difficulty: f32,
    /// Seed of the eyes.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// `cdnet gate`.
#[derive(Debug, Args)]
pub struct GateArgs {
    /// The bundle folder (with model.json).
    #[arg(long)]
    pub model: PathBuf,
    /// The data the model was trained on: the gate is fitted on its train split, and its
    /// threshold set on the val split.
    #[arg(long)]
    pub data: PathBuf,
    /// Quantile of the validation frames' distances that, times --margin, is the threshold.
    #[arg(long, default_value_t = cdnet_shared::gate::GateSettings::default().quantile)]
    pub quantile: f32,
    /// Factor from that quantile to the threshold (room for other probes, gains and patients).
    #[arg(long, default_value_t = cdnet_shared::gate::GateSettings::default().margin)]
    pub margin: f32,
}

/// `cdnet quantise`.
#[derive(Debug, Args)]
pub struct QuantiseArgs {
    /// The fp32 bundle folder to quantise.
    #[arg(long)]
    pub bundle: PathBuf,
    /// Bundle folder to create, e.g. models/my-scanner-int8.
    #[arg(long)]
    pub out: PathBuf,
    /// Bundle name (default: the folder name).
    #[arg(long)]
    pub name: Option<String>,
    /// Calibrate on the images under this folder (the training images, as for `export --calibrate`).
    #[arg(long, value_name = "DIR")]
    pub calibrate: PathBuf,
    /// How many calibration images to use.
    #[arg(long, default_value_t = 64)]
    pub calibration_images: usize,
    /// Quantise the dense convolutions whose outputs each sum at least this many products
    /// (C_in·kh·kw); shorter ones stay float, where int8 does not pay.
    #[arg(long, default_value_t = crate::export::quantize::DEFAULT_MIN_REDUCTION)]
    pub min_reduction: usize,
    /// Labelled data for the card's metrics (default: the data the card says the model was
    /// trained on, if present).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Replace an existing bundle folder.
    #[arg(long)]
    pub force: bool,
    /// Sign the bundle with this ed25519 private key (PKCS#8 PEM, from `cdnet keygen`).
    #[arg(long, value_name = "KEY.pem")]
    pub sign: Option<PathBuf>,
}

/// `cdnet export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A run folder (uses its best model) or a model file (.bpk with its .json).
    #[arg(long)]
    pub model: PathBuf,
    /// Bundle folder to create, e.g. models/my-scanner.
    #[arg(long)]
    pub out: PathBuf,
    /// Bundle name (default: the folder name).
    #[arg(long)]
    pub name: Option<String>,
    /// Quantise to int8, calibrating on the images under this folder.
    #[arg(long, value_name = "DIR")]
    pub calibrate: Option<PathBuf>,
    /// How many calibration images to use.
    #[arg(long, default_value_t = 64)]
    pub calibration_images: usize,
    /// Quantise the dense convolutions whose outputs each sum at least this many products
    /// (C_in·kh·kw); shorter ones stay float, where int8 does not pay.
    #[arg(long, default_value_t = crate::export::quantize::DEFAULT_MIN_REDUCTION)]
    pub min_reduction: usize,
    /// Evaluation data for the card's metrics (default: the model's training data, if present).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Below this top probability the device shows "uncertain — refer".
    #[arg(long, default_value_t = 0.6)]
    pub refer_threshold: f32,
    /// Replace an existing bundle folder.
    #[arg(long)]
    pub force: bool,
    /// Sign the bundle with this ed25519 private key (PKCS#8 PEM, from `cdnet keygen`).
    #[arg(long, value_name = "KEY.pem")]
    pub sign: Option<PathBuf>,
}

/// `cdnet train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Data root: <class>/*.png, images/<class>/*.png, or train/ val/ test/ splits of those.
    #[arg(long)]
    pub data: PathBuf,
    /// TOML config (see configs/); defaults are the paper's setup (b3, 224, 128 epochs, batch 64).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Override any config key: `--set loss.kind=\"ce\"`, `--set model.wsll=false` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Epochs (overrides training.epochs).
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Batch size (overrides training.batch_size).
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Learning rate (overrides optim.lr). A negative value is read as a number, so the config
    /// check names optim.lr, instead of the parser calling it an unknown flag.
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Seed (overrides training.seed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Skip unreadable images and empty class folders with a warning.
    #[arg(long)]
    pub skip_bad: bool,
    /// Compute device.
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: Backend,
    /// Run folder (checkpoints, best model, metrics, plots). Default: runs/<config>-<time>.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Continue the run in --out from its last checkpoint, with its saved config.
    #[arg(long, requires = "out")]
    pub resume: bool,
}

/// `cdnet eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// A run folder (uses its best model), a model file (.bpk with its .json), or a bundle folder
    /// (model.json: evaluated through the board's path, tract on its graphs).
    #[arg(long)]
    pub model: PathBuf,
    /// Data root (same layouts as training).
    #[arg(long)]
    pub data: PathBuf,
    /// Which images: auto (test, else val), train, val, test, or all.
    #[arg(long, default_value = "auto", value_parser = ["auto", "train", "val", "test", "all"])]
    pub split: String,
    /// Where to write metrics.json and plots (a bundle: a JSON file of its metrics, only when
    /// given). Default: <model folder>/eval-<data folder name>.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Skip unreadable images with a warning.
    #[arg(long)]
    pub skip_bad: bool,
    /// Compute device.
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: Backend,
}

/// `cdnet predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// A run folder (uses its best model) or a model file (.bpk with its .json).
    #[arg(long)]
    pub model: PathBuf,
    /// Where to write the heatmap overlays.
    #[arg(long, default_value = "predictions")]
    pub out: PathBuf,
    /// Compute device.
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: Backend,
    /// Images (PNG, JPEG, BMP, DICOM; every frame of a multi-frame DICOM).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
}

/// `cdnet phantom`.
#[derive(Debug, Args)]
pub struct PhantomArgs {
    /// Output folder; created, must not exist or be empty.
    #[arg(long)]
    pub out: PathBuf,
    /// Training images per class (Normal, IOT, RD, PSS, VH).
    #[arg(long, default_value_t = 100)]
    pub per_class: usize,
    /// Validation images per class; with this or --test-per-class the set is split into train/, val/, test/.
    #[arg(long, default_value_t = 0)]
    pub val_per_class: usize,
    /// Test images per class.
    #[arg(long, default_value_t = 0)]
    pub test_per_class: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Lesion size/contrast: easy, medium, hard, or a number from 0 (easiest) to 1 (hardest).
    #[arg(long, default_value = "medium", value_parser = parse_difficulty)]
    pub difficulty: f32,
    /// Base seed; the same seed gives the same images.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write a contact sheet PNG (5 images per class, lesion boxes in red) to this path.
    #[arg(long)]
    pub sheet: Option<PathBuf>,
}

pub(crate) fn parse_difficulty(text: &str) -> Result<f32, String> {
    Difficulty::parse(text).ok_or_else(|| format!("`{text}` is not easy, medium, hard or a number between 0 and 1"))
}
