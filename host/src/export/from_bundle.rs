//! `cdnet quantise`: an int8 bundle made from an fp32 bundle, without the trained model — for a
//! bundle received from elsewhere, or to quantise a shipped bundle again after the quantiser
//! changed. The graphs, checks and card are those of `cdnet export --calibrate`: the same
//! quantiser on the fp32 backbone graph, the same NNEF translation and agreement check, the same
//! metrics against the fp32 bundle on labelled data; the fp32 card's export record is kept.

use super::onnx::Graph;
use super::{ExportReport, QuantisedExport, evaluation_data_for, nnef, parity_planes, record_fp32, write_card};
use anyhow::{Context, Result, bail};
use cdnet_shared::bundle::{Bundle, ModelCard, Precision};
use cdnet_shared::runtime::{Pipeline, Threads};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What to quantise.
#[derive(Debug, Clone)]
pub struct QuantiseOptions {
    /// The fp32 bundle.
    pub bundle: PathBuf,
    /// The int8 bundle's folder.
    pub out: PathBuf,
    /// Its name (default: the folder name).
    pub name: Option<String>,
    /// Folder of calibration images (an ImageFolder or plain images).
    pub calibrate: PathBuf,
    /// Calibration images to use (at most).
    pub calibration_images: usize,
    /// Shortest reduction (`C_in·kh·kw`) of a convolution quantised; see
    /// [`quantize::DEFAULT_MIN_REDUCTION`](crate::export::quantize::DEFAULT_MIN_REDUCTION).
    pub min_reduction: usize,
    /// Labelled data for the card's metrics (default: the data the card says the model was
    /// trained on, if it is still there).
    pub data: Option<PathBuf>,
    /// Replace an existing folder.
    pub force: bool,
    /// The command line, for the card.
    pub command: String,
}

/// Quantises the fp32 bundle `options.bundle` into an int8 bundle at `options.out`.
pub fn quantise_bundle(options: &QuantiseOptions) -> Result<ExportReport> {
    let source = Bundle::open(&options.bundle)?;
    if source.card.precision != Precision::Fp32 {
        bail!("{} is already an int8 bundle; quantise the fp32 bundle it was made from", options.bundle.display());
    }
    // Checked before an existing output is replaced, so a mistyped folder costs nothing.
    if !options.calibrate.is_dir() {
        bail!("calibration folder {} does not exist (pass the training images' folder)", options.calibrate.display());
    }
    if same_folder(&options.bundle, &options.out) {
        bail!("--out {} is the fp32 bundle itself; choose another folder", options.out.display());
    }
    let backbone = read_graph(&options.bundle.join(&source.card.backbone))?;
    super::quantize::check_min_reduction(&backbone, options.min_reduction)?;
    if options.out.exists() && options.out.read_dir()?.next().is_some() {
        if !options.force {
            bail!("{} already exists; pass --force to replace it or choose another --out", options.out.display());
        }
        std::fs::remove_dir_all(&options.out).with_context(|| format!("cannot replace {}", options.out.display()))?;
    }
    let head = read_graph(&options.bundle.join(&source.card.head))?;
    let fp32 = Pipeline::load(source, Threads(1))?;
    let fp32_card = fp32.bundle().card.clone();
    let dataset =
        evaluation_data_for(options.data.as_deref(), &fp32_card.training, &fp32_card.preprocess, &fp32_card.labels)?;
    let evaluation = dataset.as_ref().map(|data| data.eval_split());
    let samples = evaluation.map(|(_, samples)| samples);

    let mut metrics = serde_json::Map::new();
    let mut fp32_answers = Vec::new();
    if let Some((split, samples)) = evaluation {
        (fp32_answers, _) = record_fp32(&fp32, split, samples, &mut metrics)?;
    }
    let mut card = int8_card(&fp32_card, options, &head);
    let quantised = QuantisedExport {
        backbone: &backbone,
        head: &head,
        fp32: &fp32,
        calibration: &options.calibrate,
        calibration_images: options.calibration_images,
        min_reduction: options.min_reduction,
        out: &options.out,
    };
    let int8_metrics = quantised.write(&mut card, samples, &fp32_answers, &mut metrics)?;
    let parity = parity_planes(&card.preprocess, samples)?;
    let translations = nnef::agreement(&Bundle::open(&options.out)?, &parity)?;
    card.export["parity_onnx_vs_nnef_max_abs"] = serde_json::json!(translations);
    card.metrics = serde_json::Value::Object(metrics);
    write_card(&options.out, &mut card)?;
    Ok(ExportReport { bundle: options.out.clone(), card, parity_max_abs: None, metrics: int8_metrics })
}

/// The int8 card: the fp32 card's model, preprocessing, gate and training record, a new name,
/// precision and export record (which keeps the fp32 one; the quantiser adds the backbone's
/// operators), no files or metrics yet.
fn int8_card(fp32: &ModelCard, options: &QuantiseOptions, head: &Graph) -> ModelCard {
    let name = options
        .name
        .clone()
        .unwrap_or_else(|| options.out.file_name().map_or("cdnet-int8".into(), |n| n.to_string_lossy().into_owned()));
    ModelCard {
        name,
        precision: Precision::Int8,
        nnef: None,
        files: BTreeMap::new(),
        metrics: serde_json::Value::Null,
        export: serde_json::json!({
            "exporter": concat!("cdnet quantise ", env!("CARGO_PKG_VERSION")),
            "command": options.command,
            "source_bundle": options.bundle.display().to_string(),
            "source_bundle_files": fp32.files,
            "source_export": fp32.export,
            "head_ops": head.op_counts(),
        }),
        ..fp32.clone()
    }
}

fn read_graph(path: &Path) -> Result<Graph> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Graph::decode(&bytes).with_context(|| format!("{} is not an ONNX graph", path.display()))
}

/// Whether two paths name one folder (the output may not exist yet).
fn same_folder(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}
