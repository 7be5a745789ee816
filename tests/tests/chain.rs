//! The whole chain at tiny scale — phantom data → burn training → ONNX export (fp32 signed with
//! `cdnet export --sign`, int8) → tract on the edge (trusting only that key) over a pseudo-terminal
//! → PNG screen — with each link's output checked, and the exported graphs checked against burn and
//! against a second runtime (onnxruntime).

use burn::prelude::Device;
use cdnet_edge::display::PngDisplay;
use cdnet_edge::link::SerialLink;
use cdnet_edge::runner::{EdgeOptions, run};
use cdnet_edge::screen::{AMBER, TEXT};
use cdnet_edge::sim::{Faults, PtyProbe, SimOptions, Source, SourceFrame, simulate};
use cdnet_host::export::{ExportOptions, export};
use cdnet_host::model::cdnet::Cdnet;
use cdnet_host::model::infer::{Prediction, predict};
use cdnet_host::model::saved::{self, ModelInfo};
use cdnet_host::phantom::{PhantomConfig, WriteOptions, write_image_folder};
use cdnet_host::train::config::TrainConfig;
use cdnet_host::train::device::Backend;
use cdnet_host::train::trainer::{TrainOptions, train};
use cdnet_integration::{data_dir, python};
use cdnet_shared::GrayImage;
use cdnet_shared::bundle::Bundle;
use cdnet_shared::heatmap::block_mean;
use cdnet_shared::preprocess::preprocess_plane;
use cdnet_shared::runtime::{Pipeline, Threads};
use cdnet_shared::signature::TrustedKeys;
use cdnet_shared::zoom::{center_zoom_box, crop_and_resize};
use embedded_graphics::pixelcolor::RgbColor;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// A tiny CDNet that learns within seconds: WSLL with the centre-zoom inference path, trained with
/// cross-entropy (from scratch, the contrastive stage-1 of `cpu-small` stays at chance at this
/// size), Adam β₁ 0.9 (at 0.97 a from-scratch WSLL model barely moves in ten epochs).
const TINY: &str = r#"
[model]
backbone = "tiny"
input_size = 64
texture_channels = 32
feature_dim = 64
attention_maps = 8
projection_hidden = 32
projection_dim = 16
[loss]
kind = "ce"
[zoom]
training = "center"
[training]
epochs = 10
batch_size = 8
eval_batch_size = 16
[optim]
lr = 3e-3
beta1 = 0.9
schedule = "cosine"
"#;

struct Chain {
    dir: PathBuf,
    data: PathBuf,
    run: PathBuf,
    fp32: PathBuf,
    int8: PathBuf,
    /// The public key the fp32 bundle was signed with.
    trusted: TrustedKeys,
}

/// Runs the `cdnet` command line in-process; a refusal fails the test.
fn cdnet(args: &[&str]) {
    cdnet_integration::cdnet(args).unwrap_or_else(|e| panic!("cdnet {args:?}: {e:#}"));
}

/// Builds the chain once for all tests of this file.
fn chain() -> &'static Chain {
    static CHAIN: OnceLock<Chain> = OnceLock::new();
    CHAIN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let data = dir.join("data");
        write_image_folder(&WriteOptions {
            out: data.clone(),
            per_class: 16,
            val_per_class: 0,
            test_per_class: 3,
            seed: 4,
            config: PhantomConfig { size: 96, difficulty: 0.1 },
            progress: false,
        })
        .unwrap();
        std::fs::write(dir.join("tiny.toml"), TINY).unwrap();
        let config = TrainConfig::load(Some(&dir.join("tiny.toml")), &[]).unwrap();
        let run = dir.join("run");
        train(
            config,
            &TrainOptions {
                data: data.clone(),
                out: run.clone(),
                resume: false,
                backend: Backend::Cpu,
                progress: false,
                command: "cdnet train (tests/chain.rs)".into(),
            },
        )
        .unwrap();
        let options = |out: &Path, calibrate: Option<PathBuf>| ExportOptions {
            model: run.clone(),
            out: out.to_path_buf(),
            name: Some("chain".into()),
            calibrate,
            calibration_images: 16,
            min_reduction: cdnet_host::export::quantize::DEFAULT_MIN_REDUCTION,
            data: None,
            refer_threshold: 0.6,
            force: false,
            command: "cdnet export (tests/chain.rs)".into(),
        };
        let fp32 = dir.join("bundle-fp32");
        let int8 = dir.join("bundle-int8");
        let key = dir.join("clinic");
        cdnet(&["keygen", "--out", key.to_str().unwrap()]);
        let (run_dir, out) = (run.to_str().unwrap(), fp32.to_str().unwrap());
        let sign = format!("{}.key.pem", key.display());
        cdnet(&["export", "--model", run_dir, "--out", out, "--name", "chain", "--sign", &sign]);
        export(&options(&int8, Some(data.join("train")))).unwrap();
        let trusted = TrustedKeys::read(&[PathBuf::from(format!("{}.pub.pem", key.display()))]).unwrap();
        Chain { dir, data, run, fp32, int8, trusted }
    })
}

fn plane(frame: &SourceFrame, info: &ModelInfo) -> Vec<f32> {
    let n = info.preprocess.input_size;
    let image = GrayImage::new(frame.width as usize, frame.height as usize, &frame.pixels).unwrap();
    let mut plane = vec![0.0; n * n];
    preprocess_plane(&image, &info.preprocess, &mut plane).unwrap();
    plane
}

fn burn_predict(model: &Cdnet, info: &ModelInfo, plane: &[f32]) -> Prediction {
    predict(model, &[plane], info.preprocess.input_size, &info.center_zoom, &Device::flex()).remove(0)
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn whole_chain_phantom_to_screen() {
    let chain = chain();
    // Link 1: the phantom set, five classes with masks.
    for class in ["Normal", "IOT", "RD", "PSS", "VH"] {
        let images = std::fs::read_dir(chain.data.join("train").join(class))
            .unwrap()
            .filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "png")));
        assert_eq!(images.count(), 16, "{class}");
    }
    // Link 2: training wrote its history, model and evaluation.
    let history: serde_json::Value =
        serde_json::from_slice(&std::fs::read(chain.run.join("history.json")).unwrap()).unwrap();
    assert!(history.as_array().is_some_and(|h| h.len() >= 2), "{history}");
    let metrics: serde_json::Value =
        serde_json::from_slice(&std::fs::read(chain.run.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["metrics"]["count"], 15);
    // Link 3: both bundles verify, describe the model and carry metrics.
    for bundle in [&chain.fp32, &chain.int8] {
        let card = Bundle::open(bundle).unwrap().card;
        assert_eq!(card.labels.len(), 5);
        assert_eq!(card.preprocess.input_size, 64);
        assert!(card.zoom_inference, "two-pass inference path expected");
        assert!(card.metrics["fp32"]["accuracy"].is_number(), "{}", card.metrics);
        assert!(card.training["command"].as_str().is_some_and(|c| c.contains("cdnet train")));
    }
    assert!(Bundle::open(&chain.int8).unwrap().card.metrics["int8"]["macro_f1"].is_number());

    // Link 4: the edge over a pty answers every test image with what burn says on the host.
    let (model, info) = saved::load(&chain.run, &Device::flex()).unwrap();
    let screen = chain.dir.join("screen");
    let link = chain.dir.join("probe");
    let stop = Arc::new(AtomicBool::new(false));
    let edge = {
        let options = EdgeOptions {
            heatmap_opacity: 0.5,
            trusted: chain.trusted.clone(),
            ..EdgeOptions::new(chain.fp32.clone())
        };
        let display = PngDisplay::new(screen.clone(), (800, 480), Duration::from_millis(200)).unwrap();
        let stop = stop.clone();
        let link = Arc::new(SerialLink { path: link.clone(), baud: 115_200 });
        std::thread::spawn(move || run(&options, link, Box::new(display), stop))
    };
    let test = chain.data.join("test");
    let frames = Source::Files(test.clone()).frames(15).unwrap();
    let sim = SimOptions {
        frames: frames.clone(),
        rate_hz: 0.0,
        chunk: 1024,
        faults: Faults::default(),
        lockstep: true,
        reply_timeout: Duration::from_secs(10),
        unplug_after: None,
        seed: 0,
        verbose: false,
        wait_ready: Duration::from_secs(20),
    };
    let (mut probe, halves) = PtyProbe::create(&link).unwrap();
    let report = simulate(halves, &sim, Some(&mut probe)).unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let summary = edge.join().unwrap().unwrap();
    assert_eq!(report.results.len(), 15, "errors: {:?}", report.errors);
    assert_eq!(summary.results, 15);
    for result in &report.results {
        let frame = &frames[result.seq as usize];
        let host = burn_predict(&model, &info, &plane(frame, &info));
        assert_eq!(result.class, host.class, "{}: edge {} vs host {}", frame.id, result.class, host.class);
        assert!(max_abs(&result.probabilities, &host.probabilities) < 1e-4, "{}", frame.id);
    }
    // The accuracy the edge achieves over the link on the test split (true class = the image's
    // folder) is the one the card claims, and the model has learned: at least twice chance
    // (measured 8/15) and a macro AUC of 0.7 (measured 0.86; chance is 0.5).
    let card = Bundle::open(&chain.fp32).unwrap().card;
    let correct = report
        .results
        .iter()
        .filter(|r| {
            let folder = Path::new(&frames[r.seq as usize].id).parent().and_then(|p| p.file_name());
            folder.is_some_and(|f| f.to_string_lossy() == card.labels.names()[r.class])
        })
        .count();
    let accuracy = correct as f64 / 15.0;
    let claimed = card.metrics["fp32"]["accuracy"].as_f64().unwrap();
    assert!((accuracy - claimed).abs() < 1e-9, "edge accuracy {accuracy}, the card says {claimed}");
    assert!(accuracy >= 0.4, "the chain's model did not learn: edge accuracy {correct}/15 (chance 3/15)");
    let auc = card.metrics["fp32"]["macro_auc"].as_f64().unwrap();
    assert!(auc >= 0.7, "the chain's model did not learn: macro AUC {auc:.3} (chance 0.5)");

    // Link 5: the screen — a B-scan in the panel, a diagnosis beside it.
    let png = image::open(screen.join("latest.png")).unwrap().to_rgb8();
    assert_eq!((png.width(), png.height()), (800, 480));
    let panel: Vec<u8> = (20..460)
        .step_by(7)
        .flat_map(|y| (20..460).step_by(7).map(move |x| (x, y)))
        .map(|(x, y)| png.get_pixel(x, y)[0])
        .collect();
    let (lo, hi) = (panel.iter().min().unwrap(), panel.iter().max().unwrap());
    assert!(hi - lo > 40, "the image panel is flat ({lo}..{hi}): no frame shown");
    let title = (480..800)
        .flat_map(|x| (10..40).map(move |y| (x, y)))
        .filter(|&(x, y)| {
            let p = png.get_pixel(x, y).0;
            p == [TEXT.r(), TEXT.g(), TEXT.b()] || p == [AMBER.r(), AMBER.g(), AMBER.b()]
        })
        .count();
    assert!(title > 40, "no class name on the screen");
}

#[test]
fn burn_tract_and_onnxruntime_agree() {
    let chain = chain();
    let (model, info) = saved::load(&chain.run, &Device::flex()).unwrap();
    let pipeline = Pipeline::load(Bundle::open(&chain.fp32).unwrap(), Threads(1)).unwrap();
    let card = pipeline.bundle().card.clone();
    let n = card.preprocess.input_size;
    let mut frames = Source::Files(chain.data.join("test")).frames(15).unwrap();
    if let Some(busi) = data_dir("busi-mini") {
        frames.extend(Source::Files(busi.join("images")).frames(6).unwrap());
    }
    let mut cases = Vec::new();
    let mut expected = Vec::new();
    for frame in &frames {
        let plane = plane(frame, &info);
        let host = burn_predict(&model, &info, &plane);
        let edge = pipeline.infer_plane(&plane).unwrap();
        let name = &frame.id;
        assert!(max_abs(&host.probabilities, &edge.probabilities) <= 1e-4, "{name}: burn vs tract probabilities");
        assert!(max_abs(&host.attention, &edge.attention) <= 1e-4, "{name}: burn vs tract AttS");
        assert!(max_abs(&host.heatmap, &edge.heatmap) <= 1e-4, "{name}: burn vs tract heatmap");
        assert_eq!(host.zoom_box, edge.zoom_box, "{name}: zoom box");
        let rect = edge.zoom_box.expect("two-pass bundle");
        let mut zoom = vec![0.0; n * n];
        crop_and_resize(&plane, n, rect, &mut zoom).unwrap();
        cases.push(serde_json::json!({ "global": plane, "zoom": zoom }));
        expected.push(edge);
    }
    let Some(python) = python() else { return };
    let script = cdnet_integration::root().join("tools/ort_check.py");
    let ort = |bundle: &Path, cases: &[serde_json::Value]| -> serde_json::Value {
        let input = chain.dir.join("ort-cases.json");
        let output = chain.dir.join("ort-out.json");
        std::fs::write(&input, serde_json::to_vec(&serde_json::json!({ "n": n, "cases": cases })).unwrap()).unwrap();
        let status =
            std::process::Command::new(&python).arg(&script).arg(bundle).arg(&input).arg(&output).status().unwrap();
        assert!(status.success(), "onnxruntime failed on {}", bundle.display());
        serde_json::from_slice(&std::fs::read(&output).unwrap()).unwrap()
    };
    let floats = |v: &serde_json::Value| -> Vec<f32> {
        v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
    };
    let fp32 = ort(&chain.fp32, &cases);
    for ((frame, edge), case) in frames.iter().zip(&expected).zip(fp32["cases"].as_array().unwrap()) {
        let name = &frame.id;
        let probabilities = floats(&case["probabilities"]);
        let heatmap = floats(&case["heatmap"]);
        assert!(max_abs(&probabilities, &edge.probabilities) <= 1e-4, "{name}: onnxruntime vs tract probabilities");
        assert!(max_abs(&heatmap, &edge.heatmap) <= 1e-4, "{name}: onnxruntime vs tract heatmap");
        let attention = block_mean(&heatmap, case["heatmap_side"].as_u64().unwrap() as usize);
        let side = card.attention_side;
        assert_eq!(
            center_zoom_box(&attention, side, side, n, &card.center_zoom).ok(),
            edge.zoom_box,
            "{name}: zoom box"
        );
    }
    // The int8 graph is standard ONNX too: onnxruntime runs it and agrees with tract's integer kernels.
    let int8 = Pipeline::load(Bundle::open(&chain.int8).unwrap(), Threads(1)).unwrap();
    let mut int8_cases = Vec::new();
    let mut int8_expected = Vec::new();
    for frame in &frames {
        let plane = plane(frame, &info);
        let tract = int8.infer_plane(&plane).unwrap();
        let mut zoom = vec![0.0; n * n];
        crop_and_resize(&plane, n, tract.zoom_box.expect("two-pass bundle"), &mut zoom).unwrap();
        int8_cases.push(serde_json::json!({ "global": plane, "zoom": zoom }));
        int8_expected.push(tract);
    }
    let ort_int8 = ort(&chain.int8, &int8_cases);
    for (tract, got) in int8_expected.iter().zip(ort_int8["cases"].as_array().unwrap()) {
        let probabilities = floats(&got["probabilities"]);
        assert!((probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-4);
        assert!(
            max_abs(&probabilities, &tract.probabilities) < 1e-2,
            "int8: onnxruntime {probabilities:?} vs tract {:?}",
            tract.probabilities
        );
    }
}

/// `cdnet quantise` makes from the fp32 bundle alone the int8 bundle that `cdnet export
/// --calibrate` makes from the trained model (same quantiser, same calibration images), with the
/// card's metrics and its provenance, and refuses what it cannot quantise.
#[test]
fn quantise_makes_the_int8_bundle_from_the_fp32_bundle() {
    let chain = chain();
    let out = chain.dir.join("bundle-int8-quantised");
    let (fp32, out_arg) = (chain.fp32.to_str().unwrap(), out.to_str().unwrap());
    let (train, data) = (chain.data.join("train"), chain.data.to_str().unwrap());
    let quantise = |bundle: &str, out: &str| {
        cdnet_integration::cdnet(&[
            "quantise",
            "--bundle",
            bundle,
            "--out",
            out,
            "--calibrate",
            train.to_str().unwrap(),
            "--calibration-images",
            "16",
            "--data",
            data,
        ])
    };
    quantise(fp32, out_arg).unwrap();

    let made = Bundle::open(&out).unwrap().card;
    let exported = Bundle::open(&chain.int8).unwrap().card;
    assert_eq!(made.precision, cdnet_shared::bundle::Precision::Int8);
    let quantised = &made.export["quantisation"]["quantised_convs"];
    assert!(quantised.as_u64().is_some_and(|n| n > 0), "{}", made.export);
    assert_eq!(quantised, &exported.export["quantisation"]["quantised_convs"]);
    assert_eq!(made.export["backbone_ops"]["QLinearConv"], *quantised);
    assert_eq!(
        made.export["source_bundle_files"],
        serde_json::to_value(&Bundle::open(&chain.fp32).unwrap().card.files).unwrap()
    );
    for key in ["int8_same_class_as_fp32", "int8_same_heatmap_peak_as_fp32"] {
        assert!(made.metrics[key].as_f64().is_some_and(|v| (0.0..=1.0).contains(&v)), "{key}: {}", made.metrics);
    }
    assert!(made.metrics["int8"]["macro_f1"].is_number(), "{}", made.metrics);

    // Both int8 bundles answer alike: the graphs differ only in node names and in the last bit of
    // a few activation scales (calibrated through the written fp32 graph, not burn's capture).
    let a = Pipeline::load(Bundle::open(&out).unwrap(), Threads(1)).unwrap();
    let b = Pipeline::load(Bundle::open(&chain.int8).unwrap(), Threads(1)).unwrap();
    for plane in cdnet_host::export::phantom_planes(&made.preprocess, 10).unwrap() {
        let (x, y) = (a.infer_plane(&plane).unwrap(), b.infer_plane(&plane).unwrap());
        assert_eq!(x.class, y.class);
        assert!(max_abs(&x.probabilities, &y.probabilities) < 1e-2, "{:?} vs {:?}", x.probabilities, y.probabilities);
    }

    // Refusals: an int8 bundle, an output in use, the source folder itself.
    let other = chain.dir.join("bundle-int8-twice");
    let error = quantise(out_arg, other.to_str().unwrap()).unwrap_err().to_string();
    assert!(error.contains("already an int8 bundle"), "{error}");
    let error = quantise(fp32, out_arg).unwrap_err().to_string();
    assert!(error.contains("already exists") && error.contains("--force"), "{error}");
    let error = quantise(fp32, fp32).unwrap_err().to_string();
    assert!(error.contains("is the fp32 bundle itself"), "{error}");
    // A missing calibration folder is refused before --force replaces anything.
    let missing = chain.dir.join("no-such-folder");
    let error = cdnet_integration::cdnet(&[
        "quantise",
        "--bundle",
        fp32,
        "--out",
        out_arg,
        "--force",
        "--calibrate",
        missing.to_str().unwrap(),
    ])
    .unwrap_err()
    .to_string();
    assert!(error.contains("no-such-folder") && error.contains("does not exist"), "{error}");
    assert!(Bundle::open(&out).is_ok(), "the existing int8 bundle must survive a refused --force");
}
