//! `cdnet-probe-sim`: a B-scan probe in software, for bench tests, demos and CI.

use anyhow::{Context, Result, bail};
use cdnet_edge::link::SerialLink;
use cdnet_edge::sim::{Faults, PtyProbe, SimOptions, Source, open_device, resized, simulate};
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

/// Streams B-scan frames to a CDNet edge over a serial link, speaking the full probe protocol,
/// prints the results it gets back, and can inject faults (bit flips, dropped bytes, unplug).
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// Serial device to stream over (e.g. /dev/ttyUSB0 wired to the board).
    #[arg(long, conflicts_with = "pty_link", required_unless_present = "pty_link")]
    port: Option<PathBuf>,
    /// Create a pseudo-terminal and publish its device under this symlink; point `cdnet-edge --port` at it.
    #[arg(long)]
    pty_link: Option<PathBuf>,
    /// Baud rate (UARTs only).
    #[arg(long, default_value_t = 921_600)]
    baud: u32,
    /// Frames from `phantom`, `phantom:SEED`, `sweeps`, `sweeps:SEED[:EYE]` (24-frame sweeps over one eye each, from eye EYE, with
    /// uninformative frames mixed in), an image folder (searched recursively), or one image/DICOM file.
    #[arg(long, default_value = "phantom")]
    source: String,
    /// Number of frames to send (files repeat when there are fewer).
    #[arg(long, default_value_t = 25)]
    frames: usize,
    /// Frames per second; 0 sends as fast as the link takes them.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// Probe output resolution WIDTHxHEIGHT (frames are resized); default: the source's size.
    #[arg(long)]
    size: Option<String>,
    /// Payload bytes per frame chunk.
    #[arg(long, default_value_t = 1024)]
    chunk: usize,
    /// Probability that any bit on the wire is flipped.
    #[arg(long, default_value_t = 0.0)]
    bit_error_rate: f64,
    /// Probability that any byte on the wire is lost.
    #[arg(long, default_value_t = 0.0)]
    drop_rate: f64,
    /// Wait for each frame's answer before sending the next.
    #[arg(long)]
    lockstep: bool,
    /// How long to wait for an answer in --lockstep mode, milliseconds.
    #[arg(long, default_value_t = 10_000)]
    reply_timeout_ms: u64,
    /// Unplug (close the pty, remove the link, recreate it 1.5 s later) before this frame; needs --pty-link.
    #[arg(long, requires = "pty_link")]
    unplug_after: Option<usize>,
    /// Wait this many seconds for the edge to answer the greeting before streaming.
    #[arg(long, default_value_t = 30.0)]
    wait_ready: f64,
    /// Seed of the fault injection.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Write the full report (frames sent, results, errors) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Do not print each result.
    #[arg(long, short)]
    quiet: bool,
}

fn parse_size(text: &str) -> Result<(u16, u16)> {
    let (w, h) =
        text.split_once('x').with_context(|| format!("--size {text:?}: expected WIDTHxHEIGHT, e.g. 640x480"))?;
    let parse = |v: &str| v.trim().parse::<u16>().ok().filter(|v| *v > 0);
    match (parse(w), parse(h)) {
        (Some(w), Some(h)) => Ok((w, h)),
        _ => bail!("--size {text:?}: width and height must be whole numbers from 1 to 65535"),
    }
}

fn main() {
    if let Err(error) = run(Cli::parse()) {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    if !(0.0..=1.0).contains(&cli.bit_error_rate) || !(0.0..=1.0).contains(&cli.drop_rate) {
        bail!("--bit-error-rate and --drop-rate are probabilities between 0 and 1");
    }
    if cli.chunk == 0 || cli.chunk > cdnet_shared::protocol::MAX_CHUNK_BYTES {
        bail!("--chunk must be between 1 and {} bytes", cdnet_shared::protocol::MAX_CHUNK_BYTES);
    }
    let mut frames = Source::parse(&cli.source).frames(cli.frames.max(1))?;
    if let Some(size) = &cli.size {
        let (w, h) = parse_size(size)?;
        frames = frames.iter().map(|f| resized(f, w, h)).collect();
    }
    let options = SimOptions {
        frames,
        rate_hz: cli.rate.max(0.0),
        chunk: cli.chunk,
        faults: Faults { bit_error_rate: cli.bit_error_rate, drop_rate: cli.drop_rate },
        lockstep: cli.lockstep,
        reply_timeout: Duration::from_millis(cli.reply_timeout_ms),
        unplug_after: cli.unplug_after,
        seed: cli.seed,
        verbose: !cli.quiet,
        wait_ready: Duration::from_secs_f64(cli.wait_ready.max(0.0)),
    };
    let report = match (&cli.port, &cli.pty_link) {
        (_, Some(link)) => {
            let (mut probe, halves) = PtyProbe::create(link)?;
            eprintln!("probe on {} (pseudo-terminal)", link.display());
            simulate(halves, &options, Some(&mut probe))?
        }
        (Some(port), None) => {
            let halves = open_device(&SerialLink { path: port.clone(), baud: cli.baud })?;
            simulate(halves, &options, None)?
        }
        (None, None) => bail!("give --port DEVICE or --pty-link PATH"),
    };
    let intact = report.sent.iter().filter(|f| f.intact).count();
    let latency: Vec<f64> = report.results.iter().map(|r| r.latency_ms).collect();
    let mean = if latency.is_empty() { 0.0 } else { latency.iter().sum::<f64>() / latency.len() as f64 };
    eprintln!(
        "sent {} frames ({intact} intact), {} results, {} errors, {} undecodable packets, edge latency mean {mean:.1} ms, {:.1} s{}",
        report.sent.len(),
        report.results.len(),
        report.errors.len(),
        report.decode_errors,
        report.seconds,
        report
            .ready
            .as_ref()
            .map(|r| format!(", model {r}"))
            .unwrap_or_else(|| ", the edge never answered the greeting".into()),
    );
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}
