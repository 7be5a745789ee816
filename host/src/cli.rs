//! The `cdnet` command line.

use crate::data::{self, DataConfig, Sample};
use crate::model::infer::predict;
use crate::model::saved;
use crate::phantom::{self, PhantomConfig, WriteOptions};
use crate::train::bench::{StepBenchRun, bench_step};
use crate::train::config::TrainConfig;
use crate::train::device::{Backend, device_for};
use crate::train::eval::{evaluate, summary, write_reports};
use crate::train::report::heatmap_panel;
use crate::train::trainer::{TrainOptions, train};
use anyhow::{Context, Result, bail};
use cdnet_shared::imageio::read_gray_frames;
use cdnet_shared::labels::LabelSet;
use cdnet_shared::preprocess::preprocess_plane;
use cdnet_shared::{GrayImage, PreprocessConfig};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

mod args;
mod signing;
pub use args::*;

/// Train, evaluate and export CDNet, the fine-grained ocular B-scan classifier.
#[derive(Debug, Parser)]
#[command(name = "cdnet", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Print only errors and final results (no progress bars, no info logs).
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// More log output (-v debug, -vv trace). `RUST_LOG` overrides.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a labelled ocular B-scan phantom data set (ImageFolder with masks and sidecars).
    Phantom(PhantomArgs),
    /// Train CDNet on an ImageFolder data set, then evaluate the best model.
    Train(TrainArgs),
    /// Evaluate a trained model on a data set (metrics.json and plots).
    Eval(EvalArgs),
    /// Classify images; print class and probabilities, write heatmap overlays.
    Predict(PredictArgs),
    /// Export a trained model as an ONNX bundle for the edge (fp32, or int8 with --calibrate).
    Export(ExportArgs),
    /// Quantise an fp32 bundle to int8 without its trained model (a bundle from elsewhere, or
    /// again after the quantiser changed): the same graphs, checks and card as `export --calibrate`.
    Quantise(QuantiseArgs),
    /// Bind a bundle's graphs to its card again: upgrade a bundle exported before card binding, or
    /// accept a deliberate, reviewed edit of its model.json. The graphs must be unchanged.
    Bind(BundleArgs),
    /// Bring a bundle's graphs up to this build: ReLU6 written as one Clip (exports before wrote it
    /// composed), NNEF graphs (what the edge runs) added or translated again, checked to answer
    /// like its ONNX graphs. Upgrades card format 3. Sign the bundle again afterwards.
    Nnef(BundleArgs),
    /// Make an ed25519 key pair for signing bundles (boards configured with `--trust` serve only
    /// bundles signed by a key they trust).
    Keygen(KeygenArgs),
    /// Sign a verified bundle (writes model.sig); needed again after any change to its card.
    Sign(SignArgs),
    /// Calibrate a bundle's frame gate (which frames show an eye at all) on the model's training
    /// data: after a change of scanner, or to give a format-2 bundle its gate.
    Gate(GateArgs),
    /// Score a bundle's exams on phantom sweeps (frames of one eye with uninformative frames mixed
    /// in): frame-level against exam-level accuracy, through the device's path.
    Sweeps(SweepsArgs),
    /// Time the configured training step on a fixed synthetic batch (images/s, loss per step);
    /// `tools/torch_step_bench.py` is the same step in PyTorch.
    BenchStep(BenchStepArgs),
}

/// Entry point of the `cdnet` binary: parses arguments, runs, and prints any error as one line.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.quiet, cli.verbose);
    crate::train::allocator::keep_freed_memory();
    default_device_follows(&cli.command);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// burn reads records from bytes (the optimiser state of a checkpoint) onto its default device,
/// which is CUDA in a build with `--features cuda`; make it the device the command runs on.
fn default_device_follows(command: &Command) {
    let backend = match command {
        Command::Train(a) => a.backend,
        Command::Eval(a) => a.backend,
        Command::Predict(a) => a.backend,
        Command::BenchStep(a) => a.backend,
        _ => Backend::Cpu,
    };
    if std::env::var_os("BURN_DEVICE").is_none() {
        let name = if backend == Backend::Cuda { "cuda" } else { "flex" };
        // SAFETY: called first thing in `main`, before any other thread exists.
        unsafe { std::env::set_var("BURN_DEVICE", name) };
    }
}

fn init_logging(quiet: bool, verbose: u8) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},burn=warn,cubecl=warn")));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Phantom(args) => run_phantom(args, cli.quiet),
        Command::Train(args) => run_train(args, cli.quiet),
        Command::Eval(args) => run_eval(args),
        Command::Predict(args) => run_predict(args),
        Command::Export(args) => run_export(args),
        Command::Quantise(args) => run_quantise(args),
        Command::Bind(args) => run_bind(args),
        Command::Nnef(args) => run_nnef(args),
        Command::Keygen(args) => signing::run_keygen(args),
        Command::Sign(args) => signing::run_sign(&args.bundle, &args.key),
        Command::Gate(args) => run_gate(args),
        Command::Sweeps(args) => run_sweeps(args),
        Command::BenchStep(args) => run_bench_step(args),
    }
}

fn run_bench_step(args: BenchStepArgs) -> Result<()> {
    let config = TrainConfig::load(args.config.as_deref(), &args.overrides)?;
    let run = StepBenchRun {
        batch: args.batch.unwrap_or(config.training.batch_size),
        warmup: args.warmup,
        steps: args.steps,
    };
    let mut show = |step: usize, seconds: f64, loss: f32| eprintln!("step {step}: {seconds:.3} s, loss {loss:.4}");
    let report = bench_step(&config, run, &device_for(args.backend)?, &mut show)?;
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    let losses: Vec<String> = report.losses.iter().map(|l| format!("{l:.4}")).collect();
    println!(
        "train_step {} batch {} {}x{} on {:?}: {:.3} s/step, {:.2} images/s, peak RSS {:.0} MiB; loss per step {}",
        report.backbone,
        report.batch,
        report.size,
        report.size,
        args.backend,
        report.seconds_per_step,
        report.images_per_second,
        report.peak_rss_mib,
        losses.join(" ")
    );
    Ok(())
}

fn run_sweeps(args: SweepsArgs) -> Result<()> {
    use cdnet_shared::phantom::{PhantomConfig, SweepConfig};
    if args.frames == 0 || args.per_class == 0 || !(0.0..=1.0).contains(&args.uninformative) {
        bail!("--frames and --per-class must be positive and --uninformative a fraction (0…1)");
    }
    let bundle = cdnet_shared::bundle::Bundle::open(&args.model)?;
    let pipeline = crate::export::nnef::load_preferred(bundle)?;
    let config = SweepConfig {
        frames: args.frames,
        uninformative: args.uninformative,
        phantom: PhantomConfig { size: 256, difficulty: args.difficulty },
    };
    let report = crate::sweeps::score_sweeps(&pipeline, args.per_class, args.seed, &config)?;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    println!("{report}");
    Ok(())
}

fn run_gate(args: GateArgs) -> Result<()> {
    let settings =
        cdnet_shared::gate::GateSettings { quantile: args.quantile, margin: args.margin, ..Default::default() };
    let gate = crate::export::gate::recalibrate_bundle(&args.model, &args.data, &settings)?;
    let c = &gate.calibration;
    println!(
        "calibrated the frame gate of {}: {} {} frames fitted, threshold {:.3} = {:.3} ({} quantile of {} {} frames) x {}",
        args.model.display(),
        c.fit_frames,
        c.fit_split,
        gate.threshold,
        c.distance_at_quantile,
        c.quantile,
        c.threshold_frames,
        c.threshold_split,
        c.margin
    );
    Ok(())
}

fn run_bind(args: BundleArgs) -> Result<()> {
    let bundle = cdnet_shared::bundle::Bundle::bind(&args.bundle)?;
    // The edge's own check: the graphs load in tract and agree with the card's shapes.
    crate::export::nnef::load_preferred(bundle.clone())?;
    let digest = bundle.card.digest().map_err(anyhow::Error::msg)?;
    println!("bound {} to its card (card sha256 {digest})", args.bundle.display());
    if !bundle.dir.join(cdnet_shared::signature::SIGNATURE_FILE).exists() {
        println!("any signature of the old card was removed; sign the bundle again with `cdnet sign`");
    }
    Ok(())
}

fn run_nnef(args: BundleArgs) -> Result<()> {
    let report = crate::export::nnef::add_to_bundle(&args.bundle)?;
    let nnef = report.bundle.card.nnef.as_ref().context("the card lists no NNEF graphs")?;
    if report.relu6_rewritten > 0 {
        println!("rewrote {} composed ReLU6 as Clip in the ONNX graphs", report.relu6_rewritten);
    }
    println!(
        "added NNEF graphs to {} ({}, {}): they agree with its ONNX graphs within {:.1e} in probability on phantom frames",
        args.bundle.display(),
        nnef.backbone.file,
        nnef.head.file,
        report.max_difference
    );
    if report.signature_removed {
        println!("the card changed, so its signature was removed; sign the bundle again with `cdnet sign`");
    }
    Ok(())
}

fn run_export(args: ExportArgs) -> Result<()> {
    // Read the key before the (long) export, so a wrong path fails at once.
    let signing_key = args.sign.as_deref().map(cdnet_shared::signature::read_signing_key).transpose()?;
    let report = crate::export::export(&crate::export::ExportOptions {
        model: args.model,
        out: args.out,
        name: args.name,
        calibrate: args.calibrate,
        calibration_images: args.calibration_images,
        min_reduction: args.min_reduction,
        data: args.data,
        refer_threshold: args.refer_threshold,
        force: args.force,
        command: std::env::args().collect::<Vec<_>>().join(" "),
    })?;
    let card = &report.card;
    let metrics = metrics_summary(&report);
    let parity = report.parity_max_abs.map_or(String::new(), |p| format!(", burn vs tract max |Δp| {p:.1e}"));
    println!(
        "exported {:?} {} bundle to {}{metrics}{parity}",
        card.name,
        format!("{:?}", card.precision).to_lowercase(),
        report.bundle.display()
    );
    warn_of_int8_loss(&card.metrics);
    if let (Some(key), Some(path)) = (signing_key, &args.sign) {
        signing::sign_with(&report.bundle, &key, path)?;
    }
    Ok(())
}

/// The most macro F1 an int8 bundle may lose against its fp32 source without a warning.
const INT8_MACRO_F1_LOSS_WARNING: f64 = 0.01;

/// How much macro F1 an int8 card's metrics lose against fp32 beyond
/// [`INT8_MACRO_F1_LOSS_WARNING`] (`None` within it, or without both figures).
fn int8_macro_f1_loss(metrics: &serde_json::Value) -> Option<f64> {
    let loss = metrics["fp32"]["macro_f1"].as_f64()? - metrics["int8"]["macro_f1"].as_f64()?;
    (loss > INT8_MACRO_F1_LOSS_WARNING).then_some(loss)
}

/// Says on stderr when quantisation cost more than a point of macro F1: the bundle is written (the
/// figures are on its card), but it should not ship without a look.
fn warn_of_int8_loss(metrics: &serde_json::Value) {
    if let Some(loss) = int8_macro_f1_loss(metrics) {
        let split = metrics["split"].as_str().unwrap_or("evaluation");
        eprintln!(
            "warning: int8 macro F1 is {:.1} points below fp32's on the {split} split; compare --min-reduction values \
             (`cdnet quantise`, then `cdnet eval` on val) before shipping this bundle",
            100.0 * loss
        );
    }
}

/// ", test accuracy … macro F1 …" for a bundle's card, and for an int8 bundle how it compares
/// with fp32 (macro F1, heatmap peak); empty without evaluation data.
fn metrics_summary(report: &crate::export::ExportReport) -> String {
    let Some(m) = &report.metrics else { return String::new() };
    let card = &report.card.metrics;
    let mut line =
        format!(", {} accuracy {:.4} macro F1 {:.4}", card["split"].as_str().unwrap_or("?"), m.accuracy, m.macro_f1);
    if let Some(peaks) = card["int8_same_heatmap_peak_as_fp32"].as_f64() {
        let fp32 = card["fp32"]["macro_f1"].as_f64().unwrap_or(f64::NAN);
        line += &format!(" (fp32 {fp32:.4}), heatmap peak as fp32's on {:.1} % of images", 100.0 * peaks);
    }
    line
}

fn run_quantise(args: QuantiseArgs) -> Result<()> {
    let signing_key = args.sign.as_deref().map(cdnet_shared::signature::read_signing_key).transpose()?;
    let report = crate::export::from_bundle::quantise_bundle(&crate::export::from_bundle::QuantiseOptions {
        bundle: args.bundle,
        out: args.out,
        name: args.name,
        calibrate: args.calibrate,
        calibration_images: args.calibration_images,
        min_reduction: args.min_reduction,
        data: args.data,
        force: args.force,
        command: std::env::args().collect::<Vec<_>>().join(" "),
    })?;
    let card = &report.card;
    let metrics = metrics_summary(&report);
    let quantised = card.export["quantisation"]["quantised_convs"].as_u64().unwrap_or(0);
    println!("quantised {:?} to {} ({quantised} int8 convolutions){metrics}", card.name, report.bundle.display());
    warn_of_int8_loss(&card.metrics);
    if let (Some(key), Some(path)) = (signing_key, &args.sign) {
        signing::sign_with(&report.bundle, &key, path)?;
    }
    Ok(())
}

fn run_train(args: TrainArgs, quiet: bool) -> Result<()> {
    let mut overrides = args.overrides.clone();
    for (key, value) in [
        ("training.epochs", args.epochs.map(|v| v.to_string())),
        ("training.batch_size", args.batch_size.map(|v| v.to_string())),
        ("optim.lr", args.lr.map(|v| format!("{v:e}"))),
        ("training.seed", args.seed.map(|v| v.to_string())),
        ("data.skip_bad", args.skip_bad.then(|| "true".to_string())),
    ] {
        if let Some(value) = value {
            overrides.push(format!("{key}={value}"));
        }
    }
    let out = match &args.out {
        Some(out) => out.clone(),
        None => {
            let stem = args
                .config
                .as_ref()
                .and_then(|c| c.file_stem())
                .map_or("default".into(), |s| s.to_string_lossy().into_owned());
            let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
            PathBuf::from("runs").join(format!("{stem}-{secs}"))
        }
    };
    let config = if args.resume {
        if args.config.is_some() || !overrides.is_empty() {
            bail!("--resume continues {} with its saved config.toml; do not pass --config or overrides", out.display());
        }
        TrainConfig::load(Some(&out.join("config.toml")), &[])?
    } else {
        TrainConfig::load(args.config.as_deref(), &overrides)?
    };
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let outcome = train(
        config,
        &TrainOptions { data: args.data, out, resume: args.resume, backend: args.backend, progress: !quiet, command },
    )?;
    let m = &outcome.evaluation.metrics;
    println!(
        "{}: best epoch {}, {} accuracy {:.4}, macro F1 {:.4}, AUC {}{} ({:.1} min, {:.1} img/s)",
        outcome.run.display(),
        outcome.best_epoch,
        outcome.eval_split,
        m.accuracy,
        m.macro_f1,
        m.macro_auc.map_or("n/a".into(), |a| format!("{a:.4}")),
        m.pointing_game.map_or(String::new(), |p| format!(
            ", pointing game {:.4} ({}/{}), cell level {:.4}, centre baseline {:.4}",
            p.score, p.hits, p.total, p.cell_score, p.centre_score
        )),
        outcome.seconds / 60.0,
        outcome.images_per_second
    );
    Ok(())
}

/// The samples of `args.split` (`auto`: test, else val) of `args.data`, loaded for a model with
/// this preprocessing and label set.
fn eval_samples(args: &EvalArgs, preprocess: &PreprocessConfig, labels: &LabelSet) -> Result<Vec<Sample>> {
    let config = DataConfig {
        input_size: preprocess.input_size,
        crop: Some(preprocess.crop),
        classes: Some(labels.names().to_vec()),
        skip_bad: args.skip_bad,
        ..Default::default()
    };
    let data = data::load(&args.data, &config)?;
    let samples: Vec<Sample> = match args.split.as_str() {
        "train" => data.train.clone(),
        "val" => data.val.clone(),
        "test" => data.test.clone(),
        "all" => data.train.iter().chain(&data.val).chain(&data.test).cloned().collect(),
        _ => data.eval_split().1.to_vec(),
    };
    if samples.is_empty() {
        bail!("the {} split of {} has no images; pick another with --split", args.split, args.data.display());
    }
    Ok(samples)
}

/// `cdnet eval --model BUNDLE`: the bundle's metrics through the board's path (tract, its NNEF
/// graphs), e.g. int8 against fp32 on a labelled set.
fn run_eval_bundle(args: EvalArgs) -> Result<()> {
    let bundle = cdnet_shared::bundle::Bundle::open(&args.model)?;
    let card = bundle.card.clone();
    let samples = eval_samples(&args, &card.preprocess, &card.labels)?;
    let pipeline = crate::export::nnef::load_preferred(bundle)?;
    let metrics = crate::export::evaluate_bundle(&pipeline, &samples)?;
    print!("{}", summary(&metrics));
    // A bundle folder holds only what its card lists: the report goes where asked, or nowhere.
    let Some(out) = args.out else { return Ok(()) };
    let report = serde_json::json!({
        "bundle": args.model.display().to_string(),
        "precision": card.precision,
        "data": args.data.display().to_string(),
        "split": args.split,
        "images": samples.len(),
        "metrics": metrics,
    });
    std::fs::write(&out, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", out.display()))?;
    println!("metrics: {}", out.display());
    Ok(())
}

fn run_eval(args: EvalArgs) -> Result<()> {
    if args.model.join(cdnet_shared::bundle::CARD_FILE).is_file() {
        return run_eval_bundle(args);
    }
    let device = device_for(args.backend)?;
    let (model, info) = saved::load(&args.model, &device)?;
    let samples = eval_samples(&args, &info.preprocess, &info.labels)?;
    let n = info.preprocess.input_size;
    let norm = info.preprocess.normalization;
    let evaluation = evaluate(&model, &samples, info.labels.names(), n, &norm, &info.center_zoom, 16, &device);
    let out = args.out.unwrap_or_else(|| {
        let base = if args.model.is_dir() {
            args.model.clone()
        } else {
            args.model.parent().map(PathBuf::from).unwrap_or_default()
        };
        let name = args.data.file_name().map_or("data".into(), |n| n.to_string_lossy().into_owned());
        base.join(format!("eval-{name}"))
    });
    write_reports(&evaluation, &samples, &args.split, n, &norm, &out)?;
    print!("{}", summary(&evaluation.metrics));
    println!("metrics and plots: {}", out.display());
    Ok(())
}

fn run_predict(args: PredictArgs) -> Result<()> {
    let device = device_for(args.backend)?;
    let (model, info) = saved::load(&args.model, &device)?;
    let n = info.preprocess.input_size;
    std::fs::create_dir_all(&args.out).with_context(|| format!("cannot create {}", args.out.display()))?;
    for path in &args.images {
        let frames = read_gray_frames(path)?;
        for (index, frame) in frames.iter().enumerate() {
            let image = GrayImage::new(frame.width as usize, frame.height as usize, &frame.pixels)
                .with_context(|| format!("{}", path.display()))?;
            let mut plane = vec![0.0; n * n];
            preprocess_plane(&image, &info.preprocess, &mut plane).with_context(|| format!("{}", path.display()))?;
            let prediction = predict(&model, &[&plane], n, &info.center_zoom, &device).remove(0);
            let name =
                if frames.len() > 1 { format!("{}#{index}", path.display()) } else { path.display().to_string() };
            let probabilities: Vec<String> = info
                .labels
                .names()
                .iter()
                .zip(&prediction.probabilities)
                .map(|(label, p)| format!("{label} {p:.4}"))
                .collect();
            println!(
                "{name}: {} ({:.4})  [{}]",
                info.labels.name(prediction.class).unwrap_or("?"),
                prediction.probabilities[prediction.class],
                probabilities.join(", ")
            );
            let stem = path.file_stem().map_or("image".into(), |s| s.to_string_lossy().into_owned());
            let file = if frames.len() > 1 { format!("{stem}-{index}.png") } else { format!("{stem}.png") };
            let caption = format!("{name}: {}", info.labels.display_name(prediction.class).unwrap_or("?"));
            heatmap_panel(&[(&plane, &prediction, caption)], n, &info.preprocess.normalization, &args.out.join(file))?;
        }
    }
    Ok(())
}

fn run_phantom(args: PhantomArgs, quiet: bool) -> Result<()> {
    let config = PhantomConfig { size: args.size, difficulty: args.difficulty };
    // Before the contact sheet, which would otherwise draw 25 frames of any size first.
    phantom::check_size(args.size)?;
    if let Some(sheet) = &args.sheet {
        let (rgb, w, h) = phantom::contact_sheet(5, args.seed, &config);
        if let Some(parent) = sheet.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        image::save_buffer(sheet, &rgb, w, h, image::ExtendedColorType::Rgb8)
            .with_context(|| format!("cannot write {}", sheet.display()))?;
    }
    let summary = phantom::write_image_folder(&WriteOptions {
        out: args.out.clone(),
        per_class: args.per_class,
        val_per_class: args.val_per_class,
        test_per_class: args.test_per_class,
        seed: args.seed,
        config,
        progress: !quiet,
    })?;
    let splits: Vec<String> = summary.splits.iter().map(|(name, n)| format!("{name} {n}")).collect();
    println!(
        "wrote {} phantom images ({}) to {} in {:.1} s ({:.0} images/s)",
        summary.images,
        splits.join(", "),
        args.out.display(),
        summary.seconds,
        summary.images as f64 / summary.seconds.max(1e-9)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_int8_loss_over_a_point_of_macro_f1_is_flagged() {
        let card = |fp32: f64, int8: f64| serde_json::json!({"fp32": {"macro_f1": fp32}, "int8": {"macro_f1": int8}});
        let loss = int8_macro_f1_loss(&card(0.9881, 0.5288)).unwrap();
        assert!((loss - 0.4593).abs() < 1e-9, "{loss}");
        assert_eq!(int8_macro_f1_loss(&card(0.9881, 0.9802)), None);
        assert_eq!(int8_macro_f1_loss(&card(0.90, 0.95)), None);
        assert_eq!(int8_macro_f1_loss(&serde_json::json!({"fp32": {"macro_f1": 0.9}})), None);
    }
}
