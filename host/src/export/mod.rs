//! `cdnet export`: a trained model → an ONNX bundle for the edge (fp32 or int8) with its model card.
//!
//! The backbone graph (image → feature, AttS) and the head graph (features → probabilities) are
//! captured with burn's own ONNX exporter (opset 18). The protobuf is then edited with
//! `tract_onnx::pb` (prost): stable input/output names, BatchNorm folded into the convolutions,
//! a Softmax on the head, and for int8, quantisation. The centre-zoom crop between the two passes is
//! not in the graph. The edge runs it with the `shared` code, the same code the host evaluated
//! with (burn's exporter bakes slice bounds as constants, so a data-dependent crop cannot be
//! expressed in its graph). Every export is checked by running the bundle with tract, the edge's
//! runtime, against burn.

pub mod from_bundle;
pub mod gate;
pub mod nnef;
pub mod onnx;
pub mod quantize;

use crate::data::{Dataset, Sample};
use crate::model::Cdnet;
use crate::model::infer::predict;
use crate::model::saved::{self, ModelInfo};
use crate::train::eval::{add_pointing_game, normalised};
use crate::train::metrics::{LesionMaps, Metrics, compute};
use anyhow::{Context, Result, bail};
use burn::prelude::*;
use burn_onnx::export::OnnxExporter;
use cdnet_shared::PreprocessConfig;
use cdnet_shared::bundle::{
    BACKBONE_FEATURE, BACKBONE_HEATMAP, BACKBONE_INPUT, Bundle, CARD_FORMAT, HEAD_INPUT, HEAD_OUTPUT, ModelCard,
    Precision,
};
use cdnet_shared::gate::GateSettings;
use cdnet_shared::labels::LabelSet;
use cdnet_shared::runtime::{Inference, Pipeline, Threads};
use onnx::Graph;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What to export.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// Run folder or saved model.
    pub model: PathBuf,
    /// Bundle folder to create.
    pub out: PathBuf,
    /// Bundle name (default: the folder name).
    pub name: Option<String>,
    /// Quantise to int8 with images from this folder (an ImageFolder or plain images).
    pub calibrate: Option<PathBuf>,
    /// Calibration images to use (at most).
    pub calibration_images: usize,
    /// Shortest reduction (`C_in·kh·kw`) of a convolution quantised; see
    /// [`quantize::DEFAULT_MIN_REDUCTION`](crate::export::quantize::DEFAULT_MIN_REDUCTION).
    pub min_reduction: usize,
    /// Evaluation data for the card's metrics and the parity check (default: the training data).
    pub data: Option<PathBuf>,
    /// Top probability below which the screen says "uncertain — refer".
    pub refer_threshold: f32,
    /// Replace an existing bundle folder.
    pub force: bool,
    /// The command line, for the card.
    pub command: String,
}

/// The result of an export.
#[derive(Debug, Clone)]
pub struct ExportReport {
    /// The bundle folder.
    pub bundle: PathBuf,
    /// Its card.
    pub card: ModelCard,
    /// Largest |burn − tract| probability difference over the checked images (fp32 bundles).
    pub parity_max_abs: Option<f32>,
    /// Metrics of the bundle on the evaluation split.
    pub metrics: Option<Metrics>,
}

/// Captures the feature extractor as ONNX: image `[1,3,N,N]` → feature, stride-16 heatmap.
fn backbone_graph(model_path: &Path, n: usize) -> Result<Graph> {
    // The exporter takes over the BatchNorm running state of the module it captures, so every
    // capture uses a freshly loaded model.
    let (model, _) = saved::load(model_path, &Device::flex())?;
    let x = Tensor::<4>::zeros([1, 3, n, n], &Device::flex());
    let exported = OnnxExporter::new()
        .export(model.extractor(), x, |m, x| m.forward(x))
        .map_err(|e| anyhow::anyhow!("burn's ONNX exporter failed on the backbone: {e:?}"))?;
    let mut graph = Graph::decode(exported.as_bytes())?;
    graph.rename_io(&[BACKBONE_INPUT], &[BACKBONE_FEATURE, BACKBONE_HEATMAP])?;
    let folded = graph.fold_batch_norms()?;
    let clipped = graph.fuse_relu6()?;
    tracing::debug!("folded {folded} BatchNorm layers into convolutions, wrote {clipped} ReLU6 as Clip");
    Ok(graph)
}

/// Captures the inference head as ONNX: features → probabilities.
fn head_graph(model_path: &Path, width: usize) -> Result<Graph> {
    let (model, _) = saved::load(model_path, &Device::flex())?;
    let f = Tensor::<2>::zeros([1, width], &Device::flex());
    let exported = OnnxExporter::new()
        .export(model.inference_head(), f, |m, f| m.forward(f))
        .map_err(|e| anyhow::anyhow!("burn's ONNX exporter failed on the head: {e:?}"))?;
    let mut graph = Graph::decode(exported.as_bytes())?;
    graph.rename_io(&[HEAD_INPUT], &[HEAD_OUTPUT])?;
    graph.append_softmax()?;
    graph.prune_initializers();
    Ok(graph)
}

/// Runs a bundle with tract over samples (preprocessed planes, normalised here with the card's
/// settings): the answers the board would give (probabilities, class, heatmap).
fn run_bundle(pipeline: &Pipeline, samples: &[Sample]) -> Result<Vec<Inference>> {
    let normalization = &pipeline.bundle().card.preprocess.normalization;
    samples.iter().map(|s| Ok(pipeline.infer_plane(&normalised(s, normalization))?)).collect()
}

/// The classification metrics of a bundle's answers, and where the samples have lesion masks the
/// pointing game of its heatmaps, scored as for a trained model.
fn metrics_of(pipeline: &Pipeline, samples: &[Sample], answers: &[Inference]) -> Metrics {
    let labels: Vec<usize> = samples.iter().map(|s| s.label).collect();
    let predicted: Vec<usize> = answers.iter().map(|a| a.class).collect();
    let probabilities: Vec<Vec<f32>> = answers.iter().map(|a| a.probabilities.clone()).collect();
    let mut metrics = compute(pipeline.bundle().card.labels.names(), &labels, &predicted, &probabilities);
    let maps: Vec<LesionMaps<'_>> =
        answers.iter().map(|a| LesionMaps::new(&a.heatmap, a.heatmap_side, &a.attention, a.attention_side)).collect();
    add_pointing_game(&mut metrics, samples, &maps, pipeline.bundle().card.preprocess.input_size);
    metrics
}

/// A bundle's metrics on labelled samples, measured through the board's inference path (what
/// `cdnet eval --model BUNDLE` reports; the card's figures come from the same code at export).
pub fn evaluate_bundle(pipeline: &Pipeline, samples: &[Sample]) -> Result<Metrics> {
    Ok(metrics_of(pipeline, samples, &run_bundle(pipeline, samples)?))
}

/// Normalised input planes of phantom B-scans, one per class in turn (parity check without data).
pub fn phantom_planes(preprocess: &PreprocessConfig, count: usize) -> Result<Vec<Vec<f32>>> {
    use cdnet_shared::phantom::{PhantomClass, PhantomConfig, render};
    let n = preprocess.input_size;
    (0..count)
        .map(|i| {
            let class = PhantomClass::ALL[i % PhantomClass::ALL.len()];
            let image = render(class, 1000 + i as u64, &PhantomConfig { size: 256, difficulty: 0.5 });
            let gray = cdnet_shared::GrayImage::new(image.size, image.size, &image.pixels)?;
            let mut plane = vec![0.0; n * n];
            cdnet_shared::preprocess::preprocess_plane(&gray, preprocess, &mut plane)?;
            Ok(plane)
        })
        .collect()
}

/// Writes the two graphs, their NNEF translations and the card into `dir`.
fn write_bundle(dir: &Path, backbone: &Graph, head: &Graph, card: &mut ModelCard) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (file, graph) in [(&card.backbone, backbone), (&card.head, head)] {
        std::fs::write(dir.join(file), graph.encode())
            .with_context(|| format!("cannot write {}", dir.join(file).display()))?;
    }
    nnef::translate_graphs(dir, card)?;
    write_card(dir, card)
}

/// Writes the card of the graphs in `dir` (stamps, hashes).
fn write_card(dir: &Path, card: &mut ModelCard) -> Result<()> {
    let files = card.graph_files();
    let names: Vec<&str> = files.iter().map(String::as_str).collect();
    Ok(Bundle::write_card(dir, card, &names)?)
}

/// Exports a trained model to a bundle and checks it.
pub fn export(options: &ExportOptions) -> Result<ExportReport> {
    let device = Device::flex();
    let (model, info) = saved::load(&options.model, &device)?;
    check_options(options, &model)?;
    let (backbone, head) = graphs(options, &info, model.zoom_inference())?;
    if options.calibrate.is_some() {
        quantize::check_min_reduction(&backbone, options.min_reduction)?;
    }
    let mut card = card_for(options, &info, model.zoom_inference(), &backbone, &head);
    let dataset = evaluation_data(options, &info)?;
    let evaluation = dataset.as_ref().map(|data| {
        let (split, samples) = data.eval_split();
        (split.to_string(), samples.to_vec())
    });
    card.gate = Some(match &dataset {
        Some(data) => gate::calibrate_on(data, &GateSettings::default())?,
        None => {
            tracing::warn!("no data to calibrate the frame gate on: calibrated on phantom B-scans (pass --data)");
            gate::calibrate_on_phantom(&info.preprocess, &GateSettings::default())?
        }
    });

    // The fp32 bundle (written to the output, or to a scratch folder when exporting int8).
    let scratch = tempfile::tempdir().context("cannot create a scratch folder")?;
    let int8 = options.calibrate.is_some();
    let fp32_dir = if int8 { scratch.path().join("fp32") } else { options.out.clone() };
    if options.force && options.out.exists() {
        std::fs::remove_dir_all(&options.out).with_context(|| format!("cannot replace {}", options.out.display()))?;
    }
    let mut fp32_card = ModelCard { precision: Precision::Fp32, ..card.clone() };
    write_bundle(&fp32_dir, &backbone, &head, &mut fp32_card)?;
    let fp32 = Pipeline::load(Bundle::open(&fp32_dir)?, Threads(1))?;
    let parity_samples = parity_planes(&info.preprocess, evaluation.as_ref().map(|(_, s)| &s[..]))?;
    let worst = burn_tract_parity(&model, &info, &fp32, &parity_samples)?;

    let mut metrics = serde_json::Map::new();
    let mut final_metrics = None;
    let mut fp32_answers = Vec::new();
    if let Some((split, samples)) = &evaluation {
        let fp32_metrics;
        (fp32_answers, fp32_metrics) = record_fp32(&fp32, split, samples, &mut metrics)?;
        final_metrics = Some(fp32_metrics);
    }
    if let Some(calibration) = &options.calibrate {
        let quantised = QuantisedExport {
            backbone: &backbone,
            head: &head,
            fp32: &fp32,
            calibration,
            calibration_images: options.calibration_images,
            min_reduction: options.min_reduction,
            out: &options.out,
        };
        let samples = evaluation.as_ref().map(|(_, s)| &s[..]);
        if let Some(int8_metrics) = quantised.write(&mut card, samples, &fp32_answers, &mut metrics)? {
            final_metrics = Some(int8_metrics);
        }
    } else {
        card = fp32_card;
    }
    card.export["parity_burn_vs_tract_max_abs"] = serde_json::json!(worst);
    // The bundle in the output as written (fp32, or the int8 graphs): what the edge will run.
    let translations = nnef::agreement(&Bundle::open(&options.out)?, &parity_samples)?;
    card.export["parity_onnx_vs_nnef_max_abs"] = serde_json::json!(translations);
    card.metrics = serde_json::Value::Object(metrics);
    write_card(&options.out, &mut card)?;
    Ok(ExportReport { bundle: options.out.clone(), card, parity_max_abs: Some(worst), metrics: final_metrics })
}

/// Runs the fp32 bundle on the evaluation `samples` and records the split, its size and the fp32
/// metrics in the card's `metrics`; returns the probabilities (the int8 stage compares with them).
fn record_fp32(
    fp32: &Pipeline,
    split: &str,
    samples: &[Sample],
    metrics: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<(Vec<Inference>, Metrics)> {
    let answers = run_bundle(fp32, samples)?;
    let fp32_metrics = metrics_of(fp32, samples, &answers);
    metrics.insert("split".into(), serde_json::json!(split));
    metrics.insert("images".into(), serde_json::json!(samples.len()));
    metrics.insert("fp32".into(), serde_json::to_value(&fp32_metrics)?);
    Ok((answers, fp32_metrics))
}

/// Refuses what cannot become a bundle: a model without a heatmap, an output folder in use, a
/// referral threshold that is not a probability.
fn check_options(options: &ExportOptions, model: &Cdnet) -> Result<()> {
    if !model.has_attention() {
        bail!(
            "{} has no WSLL attention (a baseline); the edge needs the attention heatmap, so export a CDNet model",
            options.model.display()
        );
    }
    if options.out.exists() && options.out.read_dir()?.next().is_some() && !options.force {
        bail!("{} already exists; pass --force to replace it or choose another --out", options.out.display());
    }
    if !(0.0..=1.0).contains(&options.refer_threshold) {
        bail!("--refer-threshold {} is not a probability", options.refer_threshold);
    }
    Ok(())
}

/// The backbone and head graphs, captured and edited, with their producer set.
fn graphs(options: &ExportOptions, info: &ModelInfo, zoom: bool) -> Result<(Graph, Graph)> {
    let feature_dim = info.cdnet.network.feature_dim;
    let width = if zoom { 2 * feature_dim } else { feature_dim };
    let mut backbone = backbone_graph(&options.model, info.preprocess.input_size)?;
    let mut head = head_graph(&options.model, width)?;
    let version = env!("CARGO_PKG_VERSION");
    backbone.set_producer(
        "cdnet export",
        version,
        "CDNet feature extractor: image -> feature, heatmap (stride 16; AttS = its 2x2 block means)",
    );
    head.set_producer("cdnet export", version, "CDNet fused head: cat[global, zoom] features -> probabilities");
    Ok((backbone, head))
}

/// The model card before its gate, metrics and file digests are known.
fn card_for(options: &ExportOptions, info: &ModelInfo, zoom: bool, backbone: &Graph, head: &Graph) -> ModelCard {
    let name = options
        .name
        .clone()
        .unwrap_or_else(|| options.out.file_name().map_or("cdnet".into(), |n| n.to_string_lossy().into_owned()));
    ModelCard {
        format: CARD_FORMAT,
        name,
        precision: if options.calibrate.is_some() { Precision::Int8 } else { Precision::Fp32 },
        labels: info.labels.clone(),
        preprocess: info.preprocess,
        center_zoom: info.center_zoom,
        zoom_inference: zoom,
        refer_threshold: options.refer_threshold,
        attention_side: info.cdnet.attention_size(),
        heatmap_side: Some(2 * info.cdnet.attention_size()),
        feature_dim: info.cdnet.network.feature_dim,
        backbone: "backbone.onnx".into(),
        head: "head.onnx".into(),
        opset: backbone.opset(),
        nnef: None,
        files: BTreeMap::new(),
        gate: None,
        exam: Default::default(),
        metrics: serde_json::Value::Null,
        training: info.training.clone(),
        export: serde_json::json!({
            "exporter": concat!("cdnet ", env!("CARGO_PKG_VERSION"), " (burn-onnx 0.22 + prost graph edits)"),
            "command": options.command,
            "source_model": options.model.display().to_string(),
            "backbone_ops": backbone.op_counts(),
            "head_ops": head.op_counts(),
        }),
    }
}

/// Evaluation data: given, or the data the model was trained on if it is still there.
fn evaluation_data(options: &ExportOptions, info: &ModelInfo) -> Result<Option<Dataset>> {
    evaluation_data_for(options.data.as_deref(), &info.training, &info.preprocess, &info.labels)
}

/// Evaluation data: `data` if given, else the folder `training` (a card's or a run's training
/// record) names, if it is still there.
fn evaluation_data_for(
    data: Option<&Path>,
    training: &serde_json::Value,
    preprocess: &PreprocessConfig,
    labels: &LabelSet,
) -> Result<Option<Dataset>> {
    let data_root = data
        .map(Path::to_path_buf)
        .or_else(|| training["data"]["root"].as_str().map(PathBuf::from).filter(|p| p.is_dir()));
    let dataset = data_root.as_deref().map(|root| gate::load_for_model(root, preprocess, labels)).transpose()?;
    if dataset.is_none() {
        tracing::warn!("no evaluation data (pass --data): the card will carry no metrics");
    }
    Ok(dataset)
}

/// The planes the parity checks run on: up to 16 evaluation images or, without any, phantom
/// frames, so no bundle leaves unchecked.
fn parity_planes(preprocess: &PreprocessConfig, samples: Option<&[Sample]>) -> Result<Vec<Vec<f32>>> {
    Ok(match samples {
        Some(samples) => samples.iter().take(16).map(|s| normalised(s, &preprocess.normalization)).collect(),
        None => phantom_planes(preprocess, 4)?,
    })
}

/// Largest |a − b| over two probability vectors; a NaN on either side counts as an infinite
/// difference (`f32::max` would drop it and pass a broken graph).
fn largest_difference(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, |worst, d| if d.is_nan() { f32::INFINITY } else { worst.max(d) })
}

/// The largest probability difference between burn's inference path and tract on the bundle.
/// Over 1e-3 is an error: the export is wrong.
fn burn_tract_parity(model: &Cdnet, info: &ModelInfo, fp32: &Pipeline, planes: &[Vec<f32>]) -> Result<f32> {
    let refs: Vec<&[f32]> = planes.iter().map(Vec::as_slice).collect();
    let burn = predict(model, &refs, info.preprocess.input_size, &info.center_zoom, &Device::flex());
    let mut worst = 0.0f32;
    for (plane, b) in planes.iter().zip(&burn) {
        let t = fp32.infer_plane(plane)?;
        worst = worst.max(largest_difference(&t.probabilities, &b.probabilities));
    }
    if worst > 1e-3 {
        bail!("the exported graph disagrees with burn by {worst} in probability; the export is wrong");
    }
    Ok(worst)
}

/// The int8 stage: what it quantises and checks against, and where it writes.
struct QuantisedExport<'a> {
    backbone: &'a Graph,
    head: &'a Graph,
    fp32: &'a Pipeline,
    /// Folder of calibration images.
    calibration: &'a Path,
    /// How many of them to use (at most).
    calibration_images: usize,
    /// Shortest reduction of a convolution quantised.
    min_reduction: usize,
    /// The int8 bundle's folder.
    out: &'a Path,
}

impl QuantisedExport<'_> {
    /// Quantises the backbone on the calibration images, writes the int8 bundle to the output and,
    /// with evaluation images, records its metrics and how often it agrees with fp32.
    fn write(
        &self,
        card: &mut ModelCard,
        samples: Option<&[Sample]>,
        fp32_answers: &[Inference],
        metrics: &mut serde_json::Map<String, serde_json::Value>,
    ) -> Result<Option<Metrics>> {
        let preprocess = &self.fp32.bundle().card.preprocess;
        let images = quantize::calibration_planes(self.calibration, preprocess, self.calibration_images)?;
        let quantised = quantize::quantize(self.backbone, self.fp32, &images, self.min_reduction)?;
        card.export["quantisation"] = serde_json::to_value(&quantised.summary)?;
        card.export["backbone_ops"] = serde_json::to_value(quantised.graph.op_counts())?;
        write_bundle(self.out, &quantised.graph, self.head, card)?;
        let int8 = Pipeline::load(Bundle::open(self.out)?, Threads(1))?;
        let Some(samples) = samples else { return Ok(None) };
        let int8_answers = run_bundle(&int8, samples)?;
        let int8_metrics = metrics_of(&int8, samples, &int8_answers);
        let agree = fraction_agreeing(&int8_answers, fp32_answers, |a| a.class);
        metrics.insert("int8".into(), serde_json::to_value(&int8_metrics)?);
        metrics.insert("int8_same_class_as_fp32".into(), serde_json::json!(agree));
        let peaks = fraction_agreeing(&int8_answers, fp32_answers, |a| heatmap_peak(&a.heatmap));
        metrics.insert("int8_same_heatmap_peak_as_fp32".into(), serde_json::json!(peaks));
        Ok(Some(int8_metrics))
    }
}

/// The fraction of images on which two bundles' answers agree in `what`. On the heatmap's hottest
/// cell it is what quantisation costs the screen's lesion marker, which the classes alone do not show.
fn fraction_agreeing<T: PartialEq>(a: &[Inference], b: &[Inference], what: impl Fn(&Inference) -> T) -> f64 {
    let same = a.iter().zip(b).filter(|(x, y)| what(x) == what(y)).count();
    same as f64 / a.len().max(1) as f64
}

/// The index of a heatmap's hottest cell.
fn heatmap_peak(heatmap: &[f32]) -> Option<usize> {
    heatmap.iter().enumerate().max_by(|x, y| x.1.total_cmp(y.1)).map(|(i, _)| i)
}
