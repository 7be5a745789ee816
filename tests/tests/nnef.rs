//! NNEF graphs: bundles carry tract's NNEF translation of their ONNX graphs, which the edge runs
//! with tract-nnef alone. The translations must answer alike, be bound to the card like the ONNX
//! graphs, and a bundle from before them must be refused by the device with the command that
//! upgrades it (`cdnet nnef`), which must reproduce the shipped translation byte for byte.

use cdnet_host::export::nnef::{BACKBONE_FILE, HEAD_FILE, MAX_DIFFERENCE, agreement};
use cdnet_integration::{cdnet, copy_bundle, shipped_bundle};
use cdnet_shared::bundle::{Bundle, BundleError, CARD_FILE, CARD_FORMAT, CARD_FORMAT_ONNX_ONLY, ModelCard, read_card};
use cdnet_shared::runtime::{GraphFormat, Pipeline, RuntimeError, Threads};
use std::path::Path;

/// Normalised input planes of phantom B-scans, one per class.
fn planes(card: &ModelCard) -> Vec<Vec<f32>> {
    cdnet_host::export::phantom_planes(&card.preprocess, 5).unwrap()
}

fn probabilities(pipeline: &Pipeline, planes: &[Vec<f32>]) -> Vec<Vec<f32>> {
    planes.iter().map(|plane| pipeline.infer_plane(plane).unwrap().probabilities).collect()
}

/// Rewrites `model.json` as given, without restamping or rehashing: what a person editing the file
/// (or mixing files of two bundles) leaves behind.
fn edit_card(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join(CARD_FILE);
    let mut card: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut card);
    std::fs::write(&path, serde_json::to_vec_pretty(&card).unwrap()).unwrap();
}

#[test]
fn every_shipped_bundle_runs_its_nnef_graphs_like_its_onnx_graphs() {
    for name in ["demo-phantom", "demo-phantom-int8", "busi-lite0"] {
        let bundle = Bundle::open(&shipped_bundle(name)).unwrap();
        assert_eq!(bundle.card.format, CARD_FORMAT, "{name}");
        let nnef = bundle.card.nnef.as_ref().unwrap();
        assert_eq!((nnef.backbone.file.as_str(), nnef.head.file.as_str()), (BACKBONE_FILE, HEAD_FILE));
        let planes = planes(&bundle.card);
        let worst = agreement(&bundle, &planes).unwrap();
        println!("{name}: ONNX vs NNEF max |Δp| {worst:.2e} over {} frames", planes.len());
        assert!(worst <= MAX_DIFFERENCE, "{name}: {worst}");
        // The device's default path is the NNEF one, and it answers something (not a constant).
        let answers = probabilities(&Pipeline::load(bundle, Threads(1)).unwrap(), &planes);
        assert!(answers.windows(2).any(|pair| pair[0] != pair[1]), "{name}: the same answer for every class");
    }
}

#[test]
fn a_bundle_without_nnef_is_refused_by_the_device_and_upgraded_by_cdnet_nnef() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("format3");
    copy_bundle(&shipped_bundle("demo-phantom"), &old);
    // A format-3 bundle as exports before NNEF wrote it: the ONNX graphs and their card.
    let mut card = Bundle::open(&old).unwrap().card;
    card.nnef = None;
    for file in [BACKBONE_FILE, HEAD_FILE] {
        std::fs::remove_file(old.join(file)).unwrap();
    }
    let graphs = card.graph_files();
    Bundle::write_card(&old, &mut card, &graphs.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
    let bundle = Bundle::open(&old).unwrap();
    assert_eq!(bundle.card.format, CARD_FORMAT_ONNX_ONLY);

    let refusal = Pipeline::load(bundle.clone(), Threads(1)).unwrap_err();
    assert!(matches!(refusal, RuntimeError::NoNnef(_)), "{refusal}");
    assert!(refusal.to_string().contains("cdnet nnef --bundle"), "{refusal}");
    let planes = planes(&bundle.card);
    let before = probabilities(&Pipeline::load_graphs(bundle, Threads(1), GraphFormat::Onnx).unwrap(), &planes);

    cdnet(&["nnef", "--bundle", old.to_str().unwrap()]).unwrap();
    let upgraded = Bundle::open(&old).unwrap();
    assert_eq!(upgraded.card.format, CARD_FORMAT);
    let after = probabilities(&Pipeline::load(upgraded, Threads(1)).unwrap(), &planes);
    for (a, b) in before.iter().flatten().zip(after.iter().flatten()) {
        assert!((a - b).abs() <= MAX_DIFFERENCE, "{a} vs {b}");
    }
    // The translation is deterministic: the archives are the shipped ones, byte for byte.
    for file in [BACKBONE_FILE, HEAD_FILE] {
        let shipped = std::fs::read(shipped_bundle("demo-phantom").join(file)).unwrap();
        assert!(std::fs::read(old.join(file)).unwrap() == shipped, "{file} differs from the shipped one");
    }
}

#[test]
fn an_nnef_archive_of_another_bundle_is_refused_even_with_the_hashes_edited() {
    let dir = tempfile::tempdir().unwrap();
    let mixed = dir.path().join("mixed");
    copy_bundle(&shipped_bundle("demo-phantom"), &mixed);
    let other = shipped_bundle("demo-phantom-int8").join(BACKBONE_FILE);
    std::fs::copy(&other, mixed.join(BACKBONE_FILE)).unwrap();
    assert!(matches!(Bundle::open(&mixed), Err(BundleError::Tampered { .. })));

    // Whoever swapped it also fixes the listed hash and size …
    let (_, card) = read_card(&shipped_bundle("demo-phantom-int8")).unwrap();
    let listed = serde_json::to_value(&card.files[BACKBONE_FILE]).unwrap();
    edit_card(&mixed, |card| card["files"][BACKBONE_FILE] = listed.clone());
    let error = Bundle::open(&mixed).unwrap_err().to_string();
    assert!(error.contains("nnef.backbone.sha256"), "{error}");

    // … and the card's own record of it: the card no longer matches its ONNX graphs' stamps.
    edit_card(&mixed, |card| card["nnef"]["backbone"]["sha256"] = listed["sha256"].clone());
    let error = Bundle::open(&mixed).unwrap_err();
    assert!(matches!(error, BundleError::Unbound { .. }), "{error}");
}

#[test]
fn a_card_that_claims_the_wrong_format_for_its_graphs_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bundle = dir.path().join("b");
    copy_bundle(&shipped_bundle("demo-phantom"), &bundle);
    edit_card(&bundle, |card| card["format"] = CARD_FORMAT_ONNX_ONLY.into());
    let error = Bundle::open(&bundle).unwrap_err().to_string();
    assert!(error.contains("format-3 card has no NNEF graphs"), "{error}");
    edit_card(&bundle, |card| {
        card["format"] = CARD_FORMAT.into();
        card.as_object_mut().unwrap().remove("nnef");
    });
    let error = Bundle::open(&bundle).unwrap_err().to_string();
    assert!(error.contains("nnef is missing"), "{error}");
}

/// `cdnet eval --model BUNDLE` measures a bundle on labelled images through the board's path: its
/// accuracy equals the one counted here frame by frame from the PNG files (`infer_image`: the
/// device's preprocessing, tract on the NNEF graphs).
#[test]
fn cdnet_eval_on_a_bundle_counts_what_the_device_answers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("phantom");
    let data_arg = data.to_str().unwrap();
    cdnet(&["--quiet", "phantom", "--out", data_arg, "--per-class", "2", "--test-per-class", "4", "--seed", "5"])
        .unwrap();
    let report = dir.path().join("eval.json");
    let bundle = shipped_bundle("demo-phantom-int8");
    let args = ["eval", "--model", bundle.to_str().unwrap(), "--data", data_arg, "--split", "test"];
    cdnet(&[&args[..], &["--out", report.to_str().unwrap()]].concat()).unwrap();
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(report["precision"], "int8");

    let pipeline = Pipeline::load(Bundle::open(&bundle).unwrap(), Threads(1)).unwrap();
    let labels = pipeline.bundle().card.labels.names().to_vec();
    let (mut images, mut correct) = (0, 0);
    for (label, name) in labels.iter().enumerate() {
        for entry in std::fs::read_dir(data.join("test").join(name)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "png") {
                continue;
            }
            let frame = cdnet_shared::imageio::read_gray_frames(&path).unwrap().remove(0);
            let image =
                cdnet_shared::GrayImage::new(frame.width as usize, frame.height as usize, &frame.pixels).unwrap();
            images += 1;
            correct += usize::from(pipeline.infer_image(&image).unwrap().class == label);
        }
    }
    assert_eq!(report["images"], images);
    let accuracy = report["metrics"]["accuracy"].as_f64().unwrap();
    assert!((accuracy - correct as f64 / images as f64).abs() < 1e-9, "{accuracy} vs {correct}/{images}");

    // The phantom's lesion masks make it score the heatmap too: every lesion image of each class
    // counted, none for a class without lesions, and the heatmap nearer the lesion than the centre.
    let lesion_images = |class: &str| {
        let dir = data.join("test").join("masks").join(class);
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| {
                let frame = cdnet_shared::imageio::read_gray_frames(&e.as_ref().unwrap().path()).unwrap().remove(0);
                frame.pixels.iter().any(|&p| p > 0)
            })
            .count()
    };
    let game = &report["metrics"]["pointing_game"];
    let mut lesions = 0;
    for (c, name) in labels.iter().enumerate() {
        let expected = lesion_images(name);
        let class_game = &report["metrics"]["per_class"][c]["pointing_game"];
        match expected {
            0 => assert!(class_game.is_null(), "{name}: {class_game}"),
            _ => assert_eq!(class_game["total"], expected, "{name}: {class_game}"),
        }
        lesions += expected;
    }
    assert!(lesions > 0, "the phantom wrote no lesion masks");
    assert_eq!(game["total"], lesions, "{game}");
    assert!(game["score"].as_f64().unwrap() > game["centre_score"].as_f64().unwrap(), "{game}");
}
