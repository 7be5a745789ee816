//! Edge benchmark: per-frame latency over a real pseudo-terminal against pure tract inference on
//! the same bundle, sustained frame rate when the probe streams as fast as it can, and the time to
//! draw one 800×480 screen.
//!
//! `cargo bench -p cdnet-edge --bench edge -- [BUNDLE] [FRAMES] [FRAME_SIDE]`
//! (defaults: models/demo-phantom, 60 frames, 256). Peak memory of the edge process is measured on
//! the binary instead (see docs/performance.md), because this process also hosts the simulator.

use cdnet_edge::display::NoDisplay;
use cdnet_edge::link::SerialLink;
use cdnet_edge::runner::{EdgeOptions, run};
use cdnet_edge::screen::{Canvas, Layout, LinkStatus, ScreenState, ShownFrame, render};
use cdnet_edge::sim::{Faults, PtyProbe, SimOptions, Source, resized, simulate};
use cdnet_shared::GrayImage;
use cdnet_shared::bundle::Bundle;
use cdnet_shared::runtime::{FrameVerdict, Pipeline, Threads};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let bundle = args
        .first()
        .map_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/demo-phantom")), PathBuf::from);
    let count: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(60);
    let side: u16 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(256);
    let mut frames = Source::Phantom { seed: 9, size: 256, difficulty: 0.5 }.frames(count).expect("phantom frames");
    if side != 256 {
        frames = frames.iter().map(|f| resized(f, side, side)).collect();
    }
    println!("bundle {}, {count} frames of {side}×{side}", bundle.display());

    // Pure tract: preprocessing + two backbone passes + head, no link.
    let pipeline = Pipeline::load(Bundle::open(&bundle).expect("bundle"), Threads(1)).expect("pipeline");
    let infer = |f: &cdnet_edge::sim::SourceFrame| {
        pipeline
            .infer_image(&GrayImage::new(f.width as usize, f.height as usize, &f.pixels).expect("frame"))
            .expect("inference")
    };
    infer(&frames[0]);
    let start = Instant::now();
    for frame in &frames {
        infer(frame);
    }
    let tract_ms = start.elapsed().as_secs_f64() * 1000.0 / count as f64;
    println!("pure tract inference:                {tract_ms:8.2} ms/frame");

    let session = |lockstep: bool| {
        let dir = tempfile::tempdir().expect("temp dir");
        let link = dir.path().join("probe");
        let stop = Arc::new(AtomicBool::new(false));
        let edge = {
            let options = EdgeOptions::new(bundle.clone());
            let stop = stop.clone();
            let link = Arc::new(SerialLink { path: link.clone(), baud: 921_600 });
            std::thread::spawn(move || run(&options, link, Box::new(NoDisplay { size: (800, 480) }), stop))
        };
        let (mut probe, halves) = PtyProbe::create(&link).expect("pty");
        let sim = SimOptions {
            frames: frames.clone(),
            rate_hz: 0.0,
            chunk: 4096,
            faults: Faults::default(),
            lockstep,
            reply_timeout: Duration::from_secs(30),
            unplug_after: None,
            seed: 0,
            verbose: false,
            wait_ready: Duration::from_secs(20),
        };
        let started = Instant::now();
        let report = simulate(halves, &sim, Some(&mut probe)).expect("simulator");
        let seconds = started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        let summary = edge.join().expect("edge thread").expect("edge run");
        (report, summary, seconds)
    };

    let (report, summary, seconds) = session(true);
    let latency = report.results.iter().map(|r| r.latency_ms).sum::<f64>() / report.results.len().max(1) as f64;
    // The simulator spends 0.3 s waiting for the greeting's answer and 0.2 s for late replies.
    let streaming = (seconds - 0.5).max(1e-3);
    println!(
        "edge over a pty, lockstep:           {latency:8.2} ms/frame (last byte in → result out), {:.2}× pure tract; {} results, {:.1} frames/s round trip",
        latency / tract_ms,
        summary.results,
        summary.results as f64 / streaming
    );
    let (_, summary, _) = session(false);
    println!(
        "edge over a pty, flood:              {} of {} frames answered, {} dropped for newer ones, mean latency {:.2} ms",
        summary.results,
        frames.len(),
        summary.dropped,
        summary.mean_latency_ms
    );

    // Drawing: one full 800×480 screen with a diagnosis and heatmap.
    let frame = &frames[0];
    let inference = infer(frame);
    let card = &pipeline.bundle().card;
    let state = ScreenState {
        link: LinkStatus::Receiving,
        frame: Some(Arc::new(ShownFrame {
            seq: 0,
            width: frame.width as usize,
            height: frame.height as usize,
            pixels: frame.pixels.clone(),
            verdict: FrameVerdict::Classified(inference),
        })),
        fps: 10.0,
        latency_ms: 10.0,
        ..ScreenState::for_card(card, 0.5)
    };
    for layout in [Layout::Wide800x480, Layout::Small320x240] {
        let (w, h) = layout.size();
        let mut canvas = Canvas::new(w, h);
        render(&mut canvas, &state, layout);
        let reps = 100;
        let start = Instant::now();
        for _ in 0..reps {
            render(&mut canvas, &state, layout);
        }
        println!("draw one {w}×{h} screen:            {:8.2} ms", start.elapsed().as_secs_f64() * 1000.0 / reps as f64);
    }
}
