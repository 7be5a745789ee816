//! The trainer end to end on tiny configurations: it learns, writes a complete run, resumes exactly
//! after being killed, and turns bad input into one clear error.

use cdnet_host::phantom::{PhantomConfig, WriteOptions, write_image_folder};
use cdnet_host::train::config::{ConfigError, TrainConfig};
use cdnet_host::train::device::Backend;
use cdnet_host::train::trainer::{TrainOptions, train};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const CDNET: &str = env!("CARGO_BIN_EXE_cdnet");

/// A tiny network so the whole suite stays fast.
const TINY: &str = r#"
[model]
backbone = "tiny"
input_size = 64
texture_channels = 32
feature_dim = 64
attention_maps = 8
projection_hidden = 32
projection_dim = 16
[training]
epochs = 3
batch_size = 8
eval_batch_size = 16
[optim]
lr = 3e-3
"#;

fn phantom(dir: &Path, per_class: usize) -> PathBuf {
    let out = dir.join("data");
    write_image_folder(&WriteOptions {
        out: out.clone(),
        per_class,
        val_per_class: 0,
        test_per_class: 2,
        seed: 3,
        config: PhantomConfig { size: 64, difficulty: 0.1 },
        progress: false,
    })
    .unwrap();
    out
}

fn config_file(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("tiny.toml");
    std::fs::write(&path, format!("{TINY}\n{extra}")).unwrap();
    path
}

fn options(data: &Path, out: &Path) -> TrainOptions {
    TrainOptions {
        data: data.to_path_buf(),
        out: out.to_path_buf(),
        resume: false,
        backend: Backend::Cpu,
        progress: false,
        command: "test".into(),
    }
}

#[test]
fn training_lowers_the_loss_and_writes_a_complete_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = phantom(dir.path(), 8);
    // CE with WSLL and the centre-zoom path; no augmentation so five short epochs show the trend.
    let overrides: Vec<String> =
        ["loss.kind=\"ce\"", "zoom.training=\"center\"", "training.epochs=5"].iter().map(|s| s.to_string()).collect();
    let no_augment = "[augment]\nrotation_p = 0.0\nflip_p = 0.0\naffine_p = 0.0\nclahe_p = 0.0\n";
    let config = TrainConfig::load(Some(&config_file(dir.path(), no_augment)), &overrides).unwrap();
    let run = dir.path().join("run");
    let outcome = train(config, &options(&data, &run)).unwrap();
    let history: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("history.json")).unwrap()).unwrap();
    let losses: Vec<f64> = history.as_array().unwrap().iter().map(|r| r["loss"]["total"].as_f64().unwrap()).collect();
    assert_eq!(losses.len(), 5);
    assert!(losses[4] < losses[0], "loss did not decrease: {losses:?}");
    for file in ["config.toml", "checkpoint.ckpt", "best.bpk", "best.json", "metrics.json", "history.json"] {
        assert!(run.join(file).is_file(), "missing {file}");
    }
    for plot in ["curves.png", "confusion.png", "roc.png", "heatmaps.png"] {
        let img = image::open(run.join("plots").join(plot)).unwrap();
        assert!(img.width() > 100 && img.height() > 100, "{plot}");
    }
    assert_eq!(outcome.eval_split, "test");
    assert_eq!(outcome.evaluation.metrics.count, 10);
    // The phantom's masks give a pointing-game score on the lesion images (8 of 10).
    let overall = outcome.evaluation.metrics.pointing_game.unwrap();
    assert_eq!(overall.total, 8);
    // … and per class: none for Normal (no lesion), 2 test images for each lesion class, adding up.
    let per_class: Vec<_> = outcome.evaluation.metrics.per_class.iter().map(|c| c.pointing_game).collect();
    assert!(per_class[0].is_none(), "Normal has no lesion to point at");
    assert!(per_class[1..].iter().all(|g| g.is_some_and(|g| g.total == 2)), "{per_class:?}");
    assert_eq!(per_class.iter().flatten().map(|g| g.hits).sum::<usize>(), overall.hits);
    // The saved model card records the data's crop (from its dataset.toml) and label set.
    let card: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("best.json")).unwrap()).unwrap();
    assert!((card["preprocess"]["crop"]["left"].as_f64().unwrap() - 0.06).abs() < 1e-6);
    assert_eq!(card["labels"].as_array().unwrap().len(), 5);
}

/// Runs `cdnet train` to the end.
fn train_uninterrupted(data: &Path, config: &Path, out: &Path) {
    let status = Command::new(CDNET)
        .args(["-q", "train", "--data"])
        .arg(data)
        .arg("--config")
        .arg(config)
        .arg("--out")
        .arg(out)
        .status();
    assert!(status.unwrap().success());
}

/// Runs `cdnet train` and kills it as soon as its log prints `marker`.
fn train_and_kill_at(data: &Path, config: &Path, out: &Path, marker: &str) {
    let mut child = Command::new(CDNET)
        .args(["train", "--data"])
        .arg(data)
        .arg("--config")
        .arg(config)
        .arg("--out")
        .arg(out)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    for line in stderr.lines() {
        if line.unwrap().contains(marker) {
            child.kill().unwrap();
            break;
        }
    }
    let status = child.wait().unwrap();
    assert!(!status.success(), "training was supposed to be killed mid-run");
    assert!(out.join("checkpoint.ckpt").is_file());
    assert!(!out.join("metrics.json").exists(), "killed before the end");
}

#[test]
fn a_killed_run_resumes_to_exactly_the_uninterrupted_result() {
    let dir = tempfile::tempdir().unwrap();
    let data = phantom(dir.path(), 10);
    // Full CDNet: CE warm-up epoch, then HCD with CMZ views (random crops, augmentation).
    let config = dir.path().join("resume.toml");
    let toml = format!("{TINY}\n[loss]\nheads_train_backbone = true\n")
        .replace("epochs = 3\n", "epochs = 3\nwarmup_epochs = 1\n");
    std::fs::write(&config, toml).unwrap();

    let straight = dir.path().join("straight");
    train_uninterrupted(&data, &config, &straight);

    let resumed = dir.path().join("resumed");
    // Killed as epoch 2 starts: epoch 1's checkpoint is on disk.
    train_and_kill_at(&data, &config, &resumed, "epoch 2/3 started");
    assert_resumes_to(&data, &straight, &resumed);
}

/// The two-stage regime (what `cpu-small` trains) resumes exactly too when it is killed in stage
/// 2, where the heads are refitted on features the resumed process must recompute from the
/// restored backbone (BatchNorm running statistics included), with the stage-2 optimiser state
/// from the checkpoint.
#[test]
fn a_run_killed_in_stage_two_resumes_to_exactly_the_uninterrupted_result() {
    let dir = tempfile::tempdir().unwrap();
    let data = phantom(dir.path(), 10);
    let config = dir.path().join("two-stage.toml");
    let toml = format!("{TINY}\n[loss]\nheads_train_backbone = true\n")
        .replace("epochs = 3\n", "epochs = 2\nregime = \"two-stage\"\nhead_epochs = 3\nwarmup_epochs = 1\n");
    std::fs::write(&config, toml).unwrap();
    let straight = dir.path().join("straight");
    train_uninterrupted(&data, &config, &straight);
    let history: serde_json::Value =
        serde_json::from_slice(&std::fs::read(straight.join("history.json")).unwrap()).unwrap();
    let stages: Vec<u64> = history.as_array().unwrap().iter().map(|r| r["stage"].as_u64().unwrap()).collect();
    assert_eq!(stages, [1, 1, 2, 2, 2]);

    // Killed as stage 2 starts: resumed from the last stage-1 checkpoint (the case that lost the
    // last step's BatchNorm statistics); killed after a stage-2 epoch: resumed with the heads'
    // optimiser state.
    for (name, marker) in [("at-stage-2", "stage 2: caching"), ("in-stage-2", "stage 2 epoch 2/3")] {
        let resumed = dir.path().join(name);
        train_and_kill_at(&data, &config, &resumed, marker);
        assert_resumes_to(&data, &straight, &resumed);
    }
}

/// Resumes the killed run in `resumed` and checks it ends exactly where `straight` did: metrics,
/// loss history and every weight.
fn assert_resumes_to(data: &Path, straight: &Path, resumed: &Path) {
    let output = Command::new(CDNET)
        .args(["-q", "train", "--resume", "--data"])
        .arg(data)
        .arg("--out")
        .arg(resumed)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));

    let metrics = |run: &Path| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(run.join("metrics.json")).unwrap()).unwrap()
    };
    assert_eq!(metrics(straight), metrics(resumed), "resumed metrics differ from the uninterrupted run");
    let history = |run: &Path| -> Vec<f64> {
        let h: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("history.json")).unwrap()).unwrap();
        h.as_array().unwrap().iter().map(|r| r["loss"]["total"].as_f64().unwrap()).collect()
    };
    assert_eq!(history(straight), history(resumed));
    // Bit-identical weights (the files themselves differ only in burn's per-process parameter ids).
    assert_eq!(weights(straight), weights(resumed));
}

/// Every float parameter of a run's best model, in module order.
fn weights(run: &Path) -> Vec<Vec<f32>> {
    struct Collect(Vec<Vec<f32>>);
    impl burn::module::ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<burn::prelude::Tensor<D>>) {
            self.0.push(cdnet_host::model::infer::to_vec(param.val()));
        }
    }
    let (model, _) = cdnet_host::model::saved::load(run, &burn::prelude::Device::flex()).unwrap();
    let mut collect = Collect(Vec::new());
    burn::module::Module::visit(&model, &mut collect);
    collect.0
}

#[test]
fn a_nan_loss_stops_training_names_the_step_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = phantom(dir.path(), 6);
    // Epoch 1 is a CE warm-up and fine; the HCD epochs divide by a temperature of 1e-45 → inf − inf.
    let mut toml = format!("{TINY}\n[loss]\ntemperature = 1e-45\n");
    toml = toml.replace("epochs = 3\n", "epochs = 3\nwarmup_epochs = 1\n");
    let config_path = dir.path().join("nan.toml");
    std::fs::write(&config_path, toml).unwrap();
    let config = TrainConfig::load(Some(&config_path), &[]).unwrap();
    let run = dir.path().join("run");
    let error = train(config, &options(&data, &run)).unwrap_err().to_string();
    assert!(error.contains("NaN") && error.contains("epoch 2 step 1"), "{error}");
    assert!(error.contains("after epoch 1") && error.contains("checkpoint.ckpt"), "{error}");
    assert!(run.join("checkpoint.ckpt").is_file());
    assert!(run.join("best.bpk").is_file(), "the model of the good epoch is kept");
}

#[test]
fn config_errors_name_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[loss]\nlamda = 0.2\n").unwrap();
    let err = TrainConfig::load(Some(&path), &[]).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }));
    assert!(err.to_string().contains("lamda") && err.to_string().contains("bad.toml"), "{err}");

    // The sections that nest a module's config (loss: HcdConfig, zoom: CmzConfig) refuse typos too,
    // and list their keys.
    std::fs::write(&path, "[zoom]\nview = 3\n").unwrap();
    let err = TrainConfig::load(Some(&path), &[]).unwrap_err().to_string();
    assert!(err.contains("zoom.view") && err.contains("views") && err.contains("bad.toml"), "{err}");
    let err = TrainConfig::load(None, &["zoom=3".into()]).unwrap_err().to_string();
    assert!(err.contains("[zoom]"), "{err}");
    // A run's config.toml reads back as the same config, nested values included.
    let set = ["zoom.views=3", "loss.lambda=0.25", "zoom.scale=[0.2, 0.6]", "loss.kind=\"supcon\""];
    let custom = TrainConfig::load(None, &set.map(String::from)).unwrap();
    assert_eq!((custom.zoom.cmz.views, custom.loss.hcd.lambda, custom.zoom.cmz.scale), (3, 0.25, [0.2, 0.6]));
    std::fs::write(&path, custom.to_toml()).unwrap();
    assert_eq!(TrainConfig::load(Some(&path), &[]).unwrap(), custom);

    std::fs::write(&path, "[trainig]\nepochs = 2\n").unwrap();
    assert!(TrainConfig::load(Some(&path), &[]).unwrap_err().to_string().contains("trainig"));

    std::fs::write(&path, "[training]\nepochs = \"many\"\n").unwrap();
    assert!(TrainConfig::load(Some(&path), &[]).unwrap_err().to_string().contains("epochs"));

    let err = TrainConfig::load(None, &["model.backbone=\"b9\"".into()]).unwrap_err().to_string();
    assert!(err.contains("b9"), "{err}");
    let err = TrainConfig::load(None, &["zoom.training=\"none\"".into()]).unwrap_err().to_string();
    assert!(err.contains("needs zoom views"), "{err}");
    let err = TrainConfig::load(None, &["model.input_size=100".into()]).unwrap_err().to_string();
    assert!(err.contains("multiple of 32"), "{err}");
    let no_map = ["model.wsll=false".into(), "loss.kind=\"ce\"".into(), "zoom.training=\"none\"".into()];
    let err = TrainConfig::load(None, &[&no_map[..], &["loss.lesion_evidence=1".into()]].concat()).unwrap_err();
    assert!(err.to_string().contains("loss.lesion_evidence") && err.to_string().contains("wsll"), "{err}");
    let err = TrainConfig::load(None, &["nonsense".into()]).unwrap_err().to_string();
    assert!(err.contains("key=value"), "{err}");
    let err = TrainConfig::load(None, &["augment.flip_p=3".into()]).unwrap_err().to_string();
    assert!(err.contains("augment.flip_p"), "{err}");
    // Every real-valued hyper-parameter is range-checked by name (negative, zero or NaN).
    for (set, key) in [
        ("loss.temperature=-1", "loss.temperature"),
        ("loss.lambda=-3", "loss.lambda"),
        ("loss.lambda=nan", "loss.lambda"),
        ("optim.weight_decay=-5", "optim.weight_decay"),
        ("optim.lr=-0.01", "optim.lr"),
        ("optim.epsilon=0", "optim.epsilon"),
        ("training.head_lr=inf", "training.head_lr"),
        ("zoom.test_threshold=1.5", "zoom.test_threshold"),
        ("zoom.test_padding=-0.1", "zoom.test_padding"),
        ("zoom.bbox_threshold=0", "zoom.bbox_threshold"),
        ("loss.lesion_evidence=-1", "loss.lesion_evidence"),
        ("loss.evidence_sharpness=0", "loss.evidence_sharpness"),
    ] {
        let err = TrainConfig::load(None, &[set.into()]).unwrap_err().to_string();
        assert!(err.contains(key), "{set}: {err}");
    }
    // The defaults are the paper's setup and valid.
    let paper =
        TrainConfig::load(Some(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/paper-b3.toml"))), &[])
            .unwrap();
    assert_eq!(paper, TrainConfig::default());
    TrainConfig::load(Some(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/cpu-small.toml"))), &[]).unwrap();
}

#[test]
fn batch_larger_than_the_data_set_and_missing_data_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = phantom(dir.path(), 2);
    let config = TrainConfig::load(Some(&config_file(dir.path(), "")), &["training.batch_size=64".into()]).unwrap();
    let err = train(config.clone(), &options(&data, &dir.path().join("r1"))).unwrap_err().to_string();
    assert!(err.contains("batch_size 64") && err.contains("training images"), "{err}");
    let err = train(config, &options(&dir.path().join("missing"), &dir.path().join("r2"))).unwrap_err().to_string();
    assert!(err.contains("does not exist"), "{err}");
    // The lesion-evidence term ranks lesion images against normal ones: without a normal class it
    // is refused before any training, naming the classes it found.
    for split in ["train", "test"] {
        for folder in [data.join(split).join("Normal"), data.join(split).join("masks").join("Normal")] {
            if folder.exists() {
                std::fs::remove_dir_all(folder).unwrap();
            }
        }
    }
    let manifest = data.join("dataset.toml");
    let text = std::fs::read_to_string(&manifest).unwrap().replace("\"Normal\",", "");
    std::fs::write(&manifest, text).unwrap();
    let sets = ["loss.lesion_evidence=1".into(), "training.batch_size=2".into()];
    let config = TrainConfig::load(Some(&config_file(dir.path(), "")), &sets).unwrap();
    let err = train(config, &options(&data, &dir.path().join("r3"))).unwrap_err().to_string();
    assert!(err.contains("no class is named \"normal\"") && err.contains("IOT, RD, PSS, VH"), "{err}");
}

#[test]
fn cli_eval_predict_and_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let data = phantom(dir.path(), 6);
    let config = config_file(dir.path(), "");
    let run = dir.path().join("run");
    let out = Command::new(CDNET)
        .args(["-q", "train", "--epochs", "1", "--set", "loss.kind=\"ce\"", "--data"])
        .arg(&data)
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(&run)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("test accuracy"));

    let out = Command::new(CDNET)
        .args(["eval", "--split", "all", "--model"])
        .arg(&run)
        .arg("--data")
        .arg(&data)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("macro F1") && text.contains("PSS"), "{text}");
    assert!(run.join("eval-data").join("metrics.json").is_file());

    let image = data.join("train").join("RD").join("RD_00000.png");
    let predictions = dir.path().join("pred");
    let out = Command::new(CDNET)
        .args(["predict", "--model"])
        .arg(&run)
        .arg("--out")
        .arg(&predictions)
        .arg(&image)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(line.contains("RD_00000.png:") && line.contains("Normal") && line.contains("VH"), "{line}");
    assert!(predictions.join("RD_00000.png").is_file());

    // Errors: one line, naming the problem, non-zero exit.
    for args in [
        vec!["train", "--data", "/definitely/not/here", "--out"],
        vec!["eval", "--data", "/definitely/not/here", "--model"],
    ] {
        let out = Command::new(CDNET).args(&args).arg(dir.path().join("nowhere")).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
    }
    let out = Command::new(CDNET).args(["train", "--data"]).arg(&data).arg("--out").arg(&run).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--resume"), "an existing run is never overwritten");
}

#[test]
fn two_stage_regime_trains_the_heads_on_the_frozen_inference_path() {
    let dir = tempfile::tempdir().unwrap();
    let data = phantom(dir.path(), 6);
    let overrides: Vec<String> = ["training.regime=\"two-stage\"", "training.epochs=2", "training.head_epochs=3"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let config = TrainConfig::load(Some(&config_file(dir.path(), "")), &overrides).unwrap();
    let run = dir.path().join("run");
    let outcome = train(config, &options(&data, &run)).unwrap();
    let history: serde_json::Value = serde_json::from_slice(&std::fs::read(run.join("history.json")).unwrap()).unwrap();
    let stages: Vec<u64> = history.as_array().unwrap().iter().map(|r| r["stage"].as_u64().unwrap()).collect();
    assert_eq!(stages, [1, 1, 2, 2, 2]);
    // Stage 1 is representation only (no validation of untrained heads); stage 2 is validated.
    let rows = history.as_array().unwrap();
    assert!(rows[0]["val_accuracy"].is_null() && rows[4]["val_accuracy"].is_number());
    assert_eq!(rows[0]["loss"]["ce"].as_f64(), Some(0.0));
    assert!(outcome.best_epoch >= 3, "the best model comes from stage 2");
}

/// Command-line values the parser used to misread, and checks that used to come too late.
#[test]
fn cli_refuses_bad_numbers_with_the_key_named_and_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = phantom(dir.path(), 2);
    let out = Command::new(CDNET)
        .args(["-q", "train", "--lr", "-0.01", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(dir.path().join("r"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("optim.lr") && err.contains("-0.01"), "{err}");

    // The size is checked before the contact sheet is drawn (which took minutes at 5000 px).
    let out = Command::new(CDNET)
        .args(["phantom", "--size", "5000", "--sheet"])
        .arg(dir.path().join("sheet.png"))
        .arg("--out")
        .arg(dir.path().join("big"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--size 5000"), "{err}");
    assert!(!dir.path().join("sheet.png").exists(), "no sheet is drawn for a refused size");
}

/// `cdnet bench-step` (what the GPU check times against PyTorch) runs the configured step: its
/// report has every step's time and loss, the loss falls on the fixed batch, and a bad request is
/// one clear error.
#[test]
fn bench_step_reports_every_step_and_the_loss_falls() {
    let dir = tempfile::tempdir().unwrap();
    // Cross-entropy on the global view: on a fixed batch its loss falls step by step (the random
    // CMZ crops of the contrastive configs make a five-step curve noisy).
    let config = config_file(dir.path(), "[loss]\nkind = \"ce\"\n[zoom]\ntraining = \"none\"\n");
    let json = dir.path().join("bench.json");
    let out = Command::new(CDNET)
        .args(["-q", "bench-step", "--config"])
        .arg(&config)
        .args(["--batch", "8", "--warmup", "1", "--steps", "4", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let losses: Vec<f64> = report["losses"].as_array().unwrap().iter().map(|l| l.as_f64().unwrap()).collect();
    let seconds = report["step_seconds"].as_array().unwrap();
    assert_eq!((losses.len(), seconds.len()), (5, 5), "{report}");
    assert!(losses.iter().all(|l| l.is_finite()), "{losses:?}");
    assert!(losses[4] < losses[0], "the fixed batch's loss did not fall: {losses:?}");
    let per_step = report["seconds_per_step"].as_f64().unwrap();
    let mean: f64 = seconds[1..].iter().map(|s| s.as_f64().unwrap()).sum::<f64>() / 4.0;
    assert!((per_step - mean).abs() < 1e-9, "seconds_per_step {per_step} is not the mean of the timed steps {mean}");
    assert_eq!(report["size"], 64);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("images/s") && stdout.contains("loss per step"), "{stdout}");

    // Without a GPU stack (or in a build without CUDA) `--backend cuda` is one clear line, not a
    // panic on burn-cuda's device thread; where a GPU is present the step simply runs.
    let cuda = Command::new(CDNET)
        .args(["-q", "bench-step", "--config"])
        .arg(&config)
        .args(["--batch", "2", "--warmup", "0", "--steps", "1", "--backend", "cuda"])
        .output()
        .unwrap();
    if !cuda.status.success() {
        let stderr = String::from_utf8_lossy(&cuda.stderr);
        assert!(
            stderr.starts_with("error: ")
                && stderr.trim_end().lines().count() == 1
                && (stderr.to_lowercase().contains("cuda") || stderr.contains("--backend cpu")),
            "{stderr}"
        );
    }

    let bad = Command::new(CDNET).args(["-q", "bench-step", "--batch", "1"]).output().unwrap();
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.starts_with("error: ") && stderr.contains("batch of at least 2"), "{stderr}");
}
