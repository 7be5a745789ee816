//! Model bundles: the shipped demo bundles verify and are reproducible from their cards, int8
//! agrees with fp32, damaged bundles are refused with the problem named, and the full-size b3
//! graph exports and runs in tract.

use burn::prelude::Device;
use cdnet_edge::sim::Source;
use cdnet_host::export::{ExportOptions, export};
use cdnet_host::model::cdnet::{CdnetConfig, NetworkConfig};
use cdnet_host::model::efficientnet::EfficientNetConfig;
use cdnet_host::model::saved::{ModelInfo, save};
use cdnet_integration::{copy_bundle, shipped_bundle};
use cdnet_shared::bundle::{Bundle, Precision};
use cdnet_shared::labels::LabelSet;
use cdnet_shared::runtime::{Pipeline, Threads};
use cdnet_shared::{GrayImage, PreprocessConfig};
use std::path::Path;

#[test]
fn shipped_demo_bundles_match_their_cards() {
    for (name, precision) in [("demo-phantom", Precision::Fp32), ("demo-phantom-int8", Precision::Int8)] {
        let bundle = Bundle::open(&shipped_bundle(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        let card = &bundle.card;
        assert_eq!(card.precision, precision);
        assert_eq!(card.labels.names(), ["Normal", "IOT", "RD", "PSS", "VH"]);
        // Reproducible: the card records the command, config and seed that trained it.
        let command = card.training["command"].as_str().unwrap_or_default();
        assert!(command.contains("train") && command.contains("configs/demo-lite0.toml"), "{command}");
        assert!(card.training["config"]["training"]["seed"].is_u64(), "no seed in {name}'s card");
    }
}

/// The phantom test split `cargo xtask demo` evaluated the demo bundles on (`cdnet phantom
/// --per-class 200 --test-per-class 50 --seed 1`, 256 px, medium), rendered again in memory: the
/// phantom is a pure function of (seed, split, class, index), and split 2 is `test`.
fn demo_test_split() -> Vec<(usize, cdnet_shared::phantom::PhantomImage)> {
    use cdnet_shared::phantom::{Difficulty, PhantomClass, PhantomConfig, image_seed, render};
    let config = PhantomConfig { size: 256, difficulty: Difficulty::Medium.value() };
    PhantomClass::ALL
        .iter()
        .flat_map(|&class| (0..50).map(move |index| (class, index)))
        .map(|(class, index)| (class.index(), render(class, image_seed(1, 2, class, index), &config)))
        .collect()
}

/// Accuracy and macro-F1 of `bundle` on the demo's test split, through the board's path.
fn measured_on_demo_test_split(bundle: &str) -> cdnet_host::train::metrics::Metrics {
    let pipeline = Pipeline::load(Bundle::open(&shipped_bundle(bundle)).unwrap(), Threads(1)).unwrap();
    let names = pipeline.bundle().card.labels.names().to_vec();
    let (mut labels, mut predicted, mut probabilities) = (Vec::new(), Vec::new(), Vec::new());
    for (label, image) in demo_test_split() {
        let inference = pipeline.infer_image(&GrayImage::new(image.size, image.size, &image.pixels).unwrap()).unwrap();
        labels.push(label);
        predicted.push(inference.class);
        probabilities.push(inference.probabilities);
    }
    cdnet_host::train::metrics::compute(&names, &labels, &predicted, &probabilities)
}

/// The demo bundles' figures are measured here, not read from their cards: accuracy and macro-F1
/// on the 250-image phantom test split equal what each card claims, the fp32 bundle clears the
/// demo's 95 % floor, and int8 costs at most one point of macro-F1.
#[test]
fn demo_bundles_score_on_the_phantom_test_split_what_their_cards_say() {
    let mut f1 = Vec::new();
    for (name, precision) in [("demo-phantom", "fp32"), ("demo-phantom-int8", "int8")] {
        let measured = measured_on_demo_test_split(name);
        let card = Bundle::open(&shipped_bundle(name)).unwrap().card.metrics;
        assert_eq!(measured.count as u64, card["images"].as_u64().unwrap(), "{name}");
        for (key, got) in [("accuracy", measured.accuracy), ("macro_f1", measured.macro_f1)] {
            let claimed = card[precision][key].as_f64().unwrap();
            assert!((got - claimed).abs() < 1e-6, "{name} {key}: measured {got}, the card says {claimed}");
        }
        f1.push(measured.macro_f1);
        if precision == "fp32" {
            assert!(measured.accuracy >= 0.95, "{name}: accuracy {}", measured.accuracy);
        }
    }
    assert!(f1[0] - f1[1] <= 0.01, "int8 loses {:.3} macro F1 (fp32 {:.3})", f1[0] - f1[1], f1[0]);
}

#[test]
fn int8_bundle_gives_the_fp32_class() {
    let fp32 = Pipeline::load(Bundle::open(&shipped_bundle("demo-phantom")).unwrap(), Threads(1)).unwrap();
    let int8 = Pipeline::load(Bundle::open(&shipped_bundle("demo-phantom-int8")).unwrap(), Threads(1)).unwrap();
    let frames = Source::Phantom { seed: 202, size: 256, difficulty: 0.5 }.frames(100).unwrap();
    let mut same = 0;
    for frame in &frames {
        let image = GrayImage::new(frame.width as usize, frame.height as usize, &frame.pixels).unwrap();
        let (a, b) = (fp32.infer_image(&image).unwrap(), int8.infer_image(&image).unwrap());
        same += usize::from(a.class == b.class);
    }
    assert!(same >= 98, "int8 gave the fp32 class on only {same}/100 frames");
}

#[test]
fn damaged_bundles_are_refused_with_the_problem_named() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = shipped_bundle("demo-phantom");

    let flipped = dir.path().join("flipped");
    copy_bundle(&shipped, &flipped);
    let mut bytes = std::fs::read(flipped.join("backbone.onnx")).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(flipped.join("backbone.onnx"), bytes).unwrap();
    let error = Bundle::open(&flipped).unwrap_err().to_string();
    assert!(error.contains("backbone.onnx") && error.contains("sha256"), "{error}");

    let missing = dir.path().join("missing");
    copy_bundle(&shipped, &missing);
    std::fs::remove_file(missing.join("head.onnx")).unwrap();
    let error = Bundle::open(&missing).unwrap_err().to_string();
    assert!(error.contains("head.onnx") && error.contains("missing"), "{error}");

    let labels = dir.path().join("labels");
    copy_bundle(&shipped, &labels);
    let mut card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(labels.join("model.json")).unwrap()).unwrap();
    card["labels"].as_array_mut().unwrap().pop();
    std::fs::write(labels.join("model.json"), serde_json::to_vec(&card).unwrap()).unwrap();
    let error = Bundle::open(&labels).unwrap_err().to_string();
    assert!(error.contains("does not match its graph"), "{error}");
    // Bound again on purpose, the head's shape still disagrees with four labels.
    let error = Pipeline::load(Bundle::bind(&labels).unwrap(), Threads(1)).unwrap_err().to_string();
    assert!(error.contains("head.nnef.tar") && error.contains("4 labels"), "{error}");

    let no_card = dir.path().join("no-card");
    std::fs::create_dir_all(&no_card).unwrap();
    assert!(Bundle::open(&no_card).unwrap_err().to_string().contains("no model.json"));
}

/// A copy of the shipped fp32 bundle with `edit` applied to its card.
fn edited_copy(dir: &Path, name: &str, edit: impl FnOnce(&mut serde_json::Value)) -> std::path::PathBuf {
    let bundle = dir.join(name);
    copy_bundle(&shipped_bundle("demo-phantom"), &bundle);
    let path = bundle.join("model.json");
    let mut card: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut card);
    std::fs::write(&path, serde_json::to_vec_pretty(&card).unwrap()).unwrap();
    bundle
}

/// Every edit of a card that would change an answer is refused before a frame is served: out of
/// range with the field named, in range by the card binding (the graphs carry the card's digest).
#[test]
fn edited_cards_are_refused_with_the_field_named() {
    let dir = tempfile::tempdir().unwrap();
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit, &str); 10] = [
        ("swapped-labels", |c| c["labels"].as_array_mut().unwrap().swap(0, 4), "does not match its graph"),
        ("std-zero", |c| c["preprocess"]["normalization"]["std"] = 0.0.into(), "preprocess.normalization.std"),
        ("mean-0.9", |c| c["preprocess"]["normalization"]["mean"] = 0.9.into(), "does not match its graph"),
        ("mean-2", |c| c["preprocess"]["normalization"]["mean"] = 2.0.into(), "preprocess.normalization.mean"),
        ("metrics", |c| c["metrics"]["fp32"]["accuracy"] = 1.0.into(), "does not match its graph"),
        ("threshold", |c| c["center_zoom"]["threshold"] = (-0.5).into(), "center_zoom.threshold"),
        ("padding", |c| c["center_zoom"]["padding"] = (-0.1).into(), "center_zoom.padding"),
        ("zoom-flipped", |c| c["zoom_inference"] = (c["zoom_inference"] != true).into(), "does not match its graph"),
        ("side", |c| c["attention_side"] = 4.into(), "attention_side"),
        ("format-1", |c| c["format"] = 1.into(), "format 1 is not supported"),
    ];
    for (name, edit, expected) in cases {
        let bundle = edited_copy(dir.path(), name, edit);
        let error = Bundle::open(&bundle).expect_err(name).to_string();
        assert!(error.contains(expected) && error.contains("model.json"), "{name}: {error}");
    }
}

/// A graph from another export, listed with its correct hash, is refused: it is stamped with the
/// other card's digest.
#[test]
fn a_graph_from_another_export_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mixed = edited_copy(dir.path(), "mixed", |_| {});
    let other = std::fs::read(shipped_bundle("demo-phantom-int8").join("head.onnx")).unwrap();
    std::fs::write(mixed.join("head.onnx"), &other).unwrap();
    let path = mixed.join("model.json");
    let mut card: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    card["files"]["head.onnx"] =
        serde_json::json!({ "sha256": cdnet_shared::bundle::sha256_hex(&other), "bytes": other.len() });
    std::fs::write(&path, serde_json::to_vec_pretty(&card).unwrap()).unwrap();
    let error = Bundle::open(&mixed).unwrap_err().to_string();
    assert!(error.contains("head.onnx") && error.contains("exported with card"), "{error}");
}

/// `cdnet bind` accepts a reviewed edit of a field (here the refer threshold) and nothing else:
/// the bundle opens again with the new value, and its graphs are otherwise byte-identical.
#[test]
fn bind_accepts_a_reviewed_card_edit() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = edited_copy(dir.path(), "reviewed", |c| c["refer_threshold"] = 0.75.into());
    assert!(Bundle::open(&bundle).is_err());
    let command = ["cdnet", "bind", "--bundle", bundle.to_str().unwrap()];
    cdnet_host::cli::run(<cdnet_host::cli::Cli as clap::Parser>::try_parse_from(command).unwrap()).unwrap();
    let card = Bundle::open(&bundle).unwrap().card;
    assert_eq!(card.refer_threshold, 0.75);
    let out_of_range = edited_copy(dir.path(), "out-of-range", |c| c["refer_threshold"] = 1.5.into());
    let error = Bundle::bind(&out_of_range).unwrap_err().to_string();
    assert!(error.contains("refer_threshold"), "{error}");
}

#[test]
fn b3_at_224_exports_and_runs_in_tract() {
    let dir = tempfile::tempdir().unwrap();
    let config = CdnetConfig::new(EfficientNetConfig::b3(), 5).with_network(NetworkConfig::new().with_input_size(224));
    let device = Device::flex();
    let model = config.init(&device);
    let info = ModelInfo {
        format: 1,
        cdnet: config,
        labels: LabelSet::ocular(),
        preprocess: PreprocessConfig { input_size: 224, ..Default::default() },
        center_zoom: Default::default(),
        training: serde_json::json!({ "note": "untrained b3, export test" }),
    };
    save(&model, &info, &dir.path().join("b3")).unwrap();
    let bundle = dir.path().join("bundle");
    let report = export(&ExportOptions {
        model: dir.path().join("b3.bpk"),
        out: bundle.clone(),
        name: Some("b3-untrained".into()),
        calibrate: None,
        calibration_images: 0,
        min_reduction: cdnet_host::export::quantize::DEFAULT_MIN_REDUCTION,
        data: None,
        refer_threshold: 0.6,
        force: false,
        command: "b3 export test".into(),
    })
    .unwrap();
    assert!(report.parity_max_abs.is_some_and(|d| d <= 1e-4), "burn vs tract: {:?}", report.parity_max_abs);
    let pipeline = Pipeline::load(Bundle::open(&bundle).unwrap(), Threads(1)).unwrap();
    let card = &pipeline.bundle().card;
    assert_eq!((card.preprocess.input_size, card.attention_side, card.feature_dim), (224, 7, 2048));
    let frame = Source::Phantom { seed: 1, size: 256, difficulty: 0.5 }.frames(1).unwrap().remove(0);
    let image = GrayImage::new(256, 256, &frame.pixels).unwrap();
    let inference = pipeline.infer_image(&image).unwrap();
    assert_eq!(inference.probabilities.len(), 5);
    assert!((inference.probabilities.iter().sum::<f32>() - 1.0).abs() < 1e-4);
    assert_eq!(inference.attention.len(), 49);
    assert!(inference.zoom_box.is_some());
    // Benchmarks want this bundle and model (docs/performance.md): keep copies when asked.
    if let Some(keep) = std::env::var_os("CDNET_KEEP_B3_BUNDLE") {
        let keep = std::path::PathBuf::from(keep);
        copy_bundle(&bundle, &keep.join("bundle"));
        std::fs::copy(dir.path().join("b3.bpk"), keep.join("b3.bpk")).unwrap();
        std::fs::copy(dir.path().join("b3.json"), keep.join("b3.json")).unwrap();
    }
}

/// The shipped real-ultrasound bundle answers on BUSI `val` as its card says: accuracy and macro-F1
/// recomputed through the board's path (full PNG → shared preprocessing → tract, two graphs), so the
/// card's figures are measured here, not trusted. Needs the shared data (`CDNET_DATA_DIR`).
#[test]
fn busi_lite0_bundle_scores_on_busi_val_what_its_card_says() {
    let Some(busi) = cdnet_integration::data_dir("busi") else { return };
    let pipeline = Pipeline::load(Bundle::open(&shipped_bundle("busi-lite0")).unwrap(), Threads(1)).unwrap();
    let names = pipeline.bundle().card.labels.names().to_vec();
    let (mut labels, mut predicted, mut probabilities) = (Vec::new(), Vec::new(), Vec::new());
    for (label, class) in names.iter().enumerate() {
        let mut files: Vec<_> = std::fs::read_dir(busi.join("val/images").join(class))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "png"))
            .collect();
        files.sort();
        for file in files {
            for frame in cdnet_shared::imageio::read_gray_frames(&file).unwrap() {
                let image = GrayImage::new(frame.width as usize, frame.height as usize, &frame.pixels).unwrap();
                let inference = pipeline.infer_image(&image).unwrap();
                labels.push(label);
                predicted.push(inference.class);
                probabilities.push(inference.probabilities);
            }
        }
    }
    let measured = cdnet_host::train::metrics::compute(&names, &labels, &predicted, &probabilities);
    let card = &pipeline.bundle().card.metrics;
    assert_eq!(measured.count as u64, card["images"].as_u64().unwrap());
    for key in ["accuracy", "macro_f1"] {
        let claimed = card["fp32"][key].as_f64().unwrap();
        let got = if key == "accuracy" { measured.accuracy } else { measured.macro_f1 };
        assert!((got - claimed).abs() < 1e-6, "{key}: measured {got}, the card says {claimed}");
    }
    // Better than always answering the largest class (52 / 92 benign), by a margin.
    assert!(measured.macro_f1 > 0.7, "macro F1 {}", measured.macro_f1);
}
