//! `cdnet-edge`: the bedside runtime. `run` serves a probe, `check` verifies a bundle and
//! classifies one frame (deployment health check), `render` draws one screen to a PNG.

use anyhow::{Context, Result, bail};
use cdnet_edge::display::{Display, FramebufferDisplay, NoDisplay, PngDisplay};
use cdnet_edge::link::SerialLink;
use cdnet_edge::runner::{EdgeOptions, SelfTest, run, self_test};
use cdnet_edge::screen::{Canvas, Layout, LinkStatus, ScreenState, ShownFrame, render};
use cdnet_edge::sim::Source;
use cdnet_shared::CropProfile;
use cdnet_shared::GrayImage;
use cdnet_shared::runtime::FrameVerdict;
use cdnet_shared::signature::TrustedKeys;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// CDNet at the bedside: probe frames in over serial, diagnosis and lesion heatmap on screen.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve a probe: receive frames, classify them, answer the probe and draw the screen.
    Run(RunArgs),
    /// Verify a model bundle and classify one frame; prints JSON (deployment health check).
    Check(CheckArgs),
    /// Classify one image and draw the screen into a PNG file.
    Render(RenderArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Model bundle folder (with model.json).
    #[arg(long)]
    model: PathBuf,
    /// Serial device of the probe (USB CDC, UART, a udev alias such as /dev/cdnet-probe, or a pty).
    #[arg(long)]
    port: PathBuf,
    /// Baud rate (UARTs only; USB CDC ignores it).
    #[arg(long, default_value_t = 921_600)]
    baud: u32,
    /// Where the screen goes: `fb0` (or a framebuffer path such as /dev/fb1), `png:DIR`, or `none`.
    #[arg(long, default_value = "fb0")]
    display: String,
    /// Screen layout: 800x480 (7" panel) or 320x240 (SPI TFT).
    #[arg(long, default_value = "800x480")]
    layout: String,
    /// Scanner crop as fractions `left,top,right,bottom` (or `full`); default: the bundle's.
    #[arg(long)]
    crop_profile: Option<String>,
    /// Below this top probability the screen says "uncertain — refer"; default: the bundle's.
    #[arg(long)]
    refer_threshold: Option<f32>,
    /// Heatmap opacity at the attention peak, 0…1.
    #[arg(long, default_value_t = 0.55)]
    heatmap_opacity: f32,
    /// Session log folder (append-only JSON lines, fsynced per result, rotated by size).
    #[arg(long)]
    log: Option<PathBuf>,
    /// Rotate the session log at this many MiB.
    #[arg(long, default_value_t = 16)]
    log_max_mib: u64,
    /// Also keep every classified frame (PNG) in the session log.
    #[arg(long)]
    log_frames: bool,
    /// tract threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Stop after this many results (tests, benchmarks).
    #[arg(long)]
    max_results: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    max_seconds: Option<f64>,
    /// Write the run's counters as JSON here on exit.
    #[arg(long)]
    summary: Option<PathBuf>,
    #[command(flatten)]
    trust: TrustArgs,
}

/// The bundle and the frame `check` and `render` classify.
#[derive(clap::Args, Debug)]
struct FrameArgs {
    /// Model bundle folder.
    #[arg(long)]
    model: PathBuf,
    /// Image (PNG/JPEG/DICOM) to classify; default: a phantom frame.
    #[arg(long)]
    image: Option<PathBuf>,
    /// Phantom frame seed when no image is given.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Which phantom frame when no image is given: classes come in turn (0 Normal, 1 IOT, 2 RD,
    /// 3 PSS, 4 VH, 5 Normal, …).
    #[arg(long, default_value_t = 0)]
    frame: usize,
}

#[derive(clap::Args, Debug)]
struct CheckArgs {
    #[command(flatten)]
    frame: FrameArgs,
    #[command(flatten)]
    trust: TrustArgs,
}

/// Which bundle signatures the device accepts.
#[derive(clap::Args, Debug, Default)]
struct TrustArgs {
    /// Serve only bundles signed by this ed25519 public key (PEM, from `cdnet keygen`; repeatable).
    /// Default: the comma-separated files in the environment variable CDNET_TRUST, which the
    /// service's environment files set. Without either, any bundle that verifies is served.
    #[arg(long = "trust", value_name = "PUBKEY.pem")]
    keys: Vec<PathBuf>,
}

impl TrustArgs {
    /// The keys given, else those of CDNET_TRUST (empty entries ignored: `CDNET_TRUST=` is no key).
    fn read(&self) -> Result<TrustedKeys> {
        let from_env = || -> Vec<PathBuf> {
            let list = std::env::var_os("CDNET_TRUST").unwrap_or_default();
            let list = list.to_string_lossy();
            list.split(',').map(str::trim).filter(|p| !p.is_empty()).map(PathBuf::from).collect()
        };
        let paths = if self.keys.is_empty() { from_env() } else { self.keys.clone() };
        TrustedKeys::read(&paths).context("--trust / CDNET_TRUST")
    }
}

#[derive(clap::Args, Debug)]
struct RenderArgs {
    #[command(flatten)]
    frame: FrameArgs,
    /// Screen layout: 800x480 or 320x240.
    #[arg(long, default_value = "800x480")]
    layout: String,
    /// Heatmap opacity at the attention peak, 0…1.
    #[arg(long, default_value_t = 0.55)]
    heatmap_opacity: f32,
    /// Output PNG.
    #[arg(long)]
    out: PathBuf,
}

fn parse_layout(text: &str) -> Result<Layout> {
    Layout::parse(text).with_context(|| format!("unknown layout {text:?}: use 800x480 or 320x240"))
}

fn parse_crop(text: &str) -> Result<CropProfile> {
    if text == "full" {
        return Ok(CropProfile::FULL);
    }
    let parts: Vec<f32> =
        text.split(',').map(|p| p.trim().parse::<f32>()).collect::<Result<_, _>>().with_context(|| {
            format!("--crop-profile {text:?}: expected four fractions left,top,right,bottom or `full`")
        })?;
    let [left, top, right, bottom] = parts[..] else {
        bail!("--crop-profile {text:?}: expected four fractions left,top,right,bottom, got {}", parts.len());
    };
    let crop = CropProfile { left, top, right, bottom };
    crop.validate().with_context(|| format!("--crop-profile {text:?}"))?;
    Ok(crop)
}

fn open_display(spec: &str, layout: Layout) -> Result<Box<dyn Display>> {
    let size = layout.size();
    if spec == "none" {
        return Ok(Box::new(NoDisplay { size }));
    }
    if let Some(dir) = spec.strip_prefix("png:") {
        return Ok(Box::new(PngDisplay::new(PathBuf::from(dir), size, Duration::from_millis(500))?));
    }
    let path = if spec.starts_with('/') { PathBuf::from(spec) } else { PathBuf::from("/dev").join(spec) };
    if !spec.starts_with("fb") && !spec.starts_with('/') {
        bail!("--display {spec:?}: use fb0 (or a framebuffer path), png:DIR, or none");
    }
    Ok(Box::new(FramebufferDisplay::open(path, size)?))
}

/// Verifies and loads the bundle and classifies the frame (the given image's first, or a phantom).
fn classify(args: &FrameArgs, trusted: &TrustedKeys) -> Result<(SelfTest, String, u16, u16, Vec<u8>)> {
    let source = match &args.image {
        Some(path) => Source::Files(path.clone()),
        None => Source::Phantom { seed: args.seed, size: 256, difficulty: 0.5 },
    };
    let index = if args.image.is_some() { 0 } else { args.frame.min(10_000) };
    let frame = source.frames(index + 1)?.remove(index);
    let image = GrayImage::new(frame.width as usize, frame.height as usize, &frame.pixels)?;
    let checked = self_test(&args.model, trusted, &image)?;
    Ok((checked, frame.id, frame.width, frame.height, frame.pixels))
}

fn command_run(args: RunArgs) -> Result<()> {
    let layout = parse_layout(&args.layout)?;
    let crop = args.crop_profile.as_deref().map(parse_crop).transpose()?;
    let display = open_display(&args.display, layout)?;
    let options = EdgeOptions {
        threads: args.threads,
        crop,
        refer_threshold: args.refer_threshold,
        layout,
        heatmap_opacity: args.heatmap_opacity,
        log: args.log.clone().map(|dir| (dir, args.log_max_mib.max(1) * 1024 * 1024, args.log_frames)),
        max_results: args.max_results,
        trusted: args.trust.read()?,
        ..EdgeOptions::new(args.model.clone())
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        // SIGINT/SIGTERM end the run cleanly; the session log is already on disk record by record.
        ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed)).context("cannot install the signal handler")?;
    }
    if let Some(seconds) = args.max_seconds {
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs_f64(seconds.max(0.0)));
            stop.store(true, Ordering::Relaxed);
        });
    }
    let link = Arc::new(SerialLink { path: args.port.clone(), baud: args.baud });
    tracing::info!("loading {} for the probe on {}", args.model.display(), args.port.display());
    let summary = run(&options, link, display, stop)?;
    let json = serde_json::to_string_pretty(&summary)?;
    if let Some(path) = &args.summary {
        std::fs::write(path, &json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    eprintln!(
        "{} frames, {} results, {} dropped for newer frames, {} packet errors, {} frame errors, {} reconnects, mean latency {:.1} ms, mean draw {:.1} ms",
        summary.frames,
        summary.results,
        summary.dropped,
        summary.packet_errors,
        summary.frame_errors,
        summary.reconnects,
        summary.mean_latency_ms,
        summary.mean_draw_ms
    );
    Ok(())
}

fn command_check(args: CheckArgs) -> Result<()> {
    let start = Instant::now();
    let (SelfTest { pipeline, verdict, signer }, id, _, _, _) = classify(&args.frame, &args.trust.read()?)?;
    let card = &pipeline.bundle().card;
    let mut report = serde_json::json!({
        "ok": true,
        "model": card.name,
        "precision": card.precision,
        "graphs": card.nnef.as_ref().map(|nnef| [&nnef.backbone.file, &nnef.head.file]),
        "signed_by": signer,
        "frame": id,
    });
    let answer = match &verdict {
        FrameVerdict::Classified(inference) => serde_json::json!({
            "classified": true,
            "class": inference.class,
            "label": card.labels.names().get(inference.class),
            "probabilities": inference.probabilities,
            "uncertain": inference.uncertain,
            "zoom_box": inference.zoom_box.map(|b| [b.x0, b.y0, b.x1, b.y1]),
        }),
        FrameVerdict::NoEye { refusal, .. } => serde_json::json!({
            "classified": false,
            "no_eye": refusal.to_string(),
            "gate_reason": refusal.code(),
            "gate_score": refusal.score(),
        }),
    };
    for (key, value) in answer.as_object().into_iter().flatten() {
        report[key] = value.clone();
    }
    report["seconds"] = serde_json::json!(start.elapsed().as_secs_f64());
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

fn command_render(args: RenderArgs) -> Result<()> {
    let layout = parse_layout(&args.layout)?;
    let (SelfTest { pipeline, verdict, .. }, _, width, height, pixels) =
        classify(&args.frame, &TrustedKeys::default())?;
    let card = &pipeline.bundle().card;
    let state = ScreenState {
        link: LinkStatus::Receiving,
        frame: Some(Arc::new(ShownFrame { seq: 0, width: width as usize, height: height as usize, pixels, verdict })),
        ..ScreenState::for_card(card, args.heatmap_opacity)
    };
    let (w, h) = layout.size();
    let mut canvas = Canvas::new(w, h);
    render(&mut canvas, &state, layout);
    PngDisplay::save(&canvas, &args.out)?;
    println!("wrote {}", args.out.display());
    Ok(())
}

fn main() {
    cdnet_edge::memory::map_large_blocks_while_loading();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Run(args) => command_run(args),
        Command::Check(args) => command_check(args),
        Command::Render(args) => command_render(args),
    };
    if let Err(error) = outcome {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}
