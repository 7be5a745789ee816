//! The bedside pipeline: receive → infer → send + draw, on separate threads so none blocks another.
//!
//! * **receiver**: reads the link, decodes packets, reassembles frames. Each complete frame goes
//!   into a one-frame slot. If the slot still holds an unprocessed frame, that older frame is
//!   dropped and counted: when frames arrive faster than inference, the newest wins and no backlog
//!   builds up, and the probe is told which frame was skipped. What each packet means for the
//!   session (`Hello` → `Ready`, refusals) is decided by [`EdgeSession`], a pure state machine in
//!   `shared`; the receiver only carries it out, and reopens the port whenever it fails (probe
//!   unplugged).
//! * **inference**: takes the newest frame, runs the bundle with tract, and queues the `Result` (or
//!   an `Error`).
//! * **writer** (`crate::writer`): sends queued messages and a heartbeat every second. It stamps
//!   each result with its latency (last byte received → result sent), appends it to the session
//!   log, and writes each finished exam's referral sheet.
//! * **display**: redraws the screen about 30 times a second from a copy of the state, so a slow
//!   panel never holds up the link.

use crate::display::Display;
use crate::exam::{ExamReport, ExamTracker, FinishedExam};
use crate::link::{LinkHalves, LinkOpener};
use crate::referral::SheetContext;
use crate::screen::{Canvas, Layout, LinkStatus, ScreenState, ShownFrame, render};
use crate::session_log::{SessionLog, now_ms};
use crate::writer::write_out;
use anyhow::{Context, Result};
use cdnet_shared::bundle::Bundle;
use cdnet_shared::heatmap::wire_cells;
use cdnet_shared::preprocess::input_rect_to_frame;
use cdnet_shared::protocol::frames::Frame;
use cdnet_shared::protocol::session::{EdgeSession, Reaction};
use cdnet_shared::protocol::{
    ErrorCode, ErrorReport, FrameDecoder, InferenceResult, MAX_HEATMAP_CELLS, MAX_WIRE_PACKET, Message, NoEye, Ready,
    Skipped, ZoomBox, encode_packet_vec, truncated,
};
use cdnet_shared::runtime::{FrameVerdict, Inference, Pipeline, Threads};
use cdnet_shared::signature::TrustedKeys;
use cdnet_shared::{CropProfile, GrayImage};
use std::collections::VecDeque;
use std::io::{ErrorKind, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// How to run.
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    /// Model bundle folder.
    pub bundle: PathBuf,
    /// tract threads.
    pub threads: usize,
    /// Override the card's device crop (a different scanner).
    pub crop: Option<CropProfile>,
    /// Override the card's refer threshold.
    pub refer_threshold: Option<f32>,
    /// Screen layout.
    pub layout: Layout,
    /// Heatmap opacity at the attention peak.
    pub heatmap_opacity: f32,
    /// Session log folder, size limit per file, and whether to keep frames.
    pub log: Option<(PathBuf, u64, bool)>,
    /// Stop after this many results (tests, benchmarks); `None` runs until stopped.
    pub max_results: Option<u64>,
    /// Silence after which the probe counts as gone.
    pub quiet_after: Duration,
    /// Keys whose signature a bundle must carry; empty: any bundle that verifies is served.
    pub trusted: TrustedKeys,
}

impl EdgeOptions {
    /// Defaults for `bundle`: one tract thread, the card's crop and refer threshold, the 800×480
    /// layout, heatmap opacity 0.55, no session log, run until stopped, probe gone after 3 s silence.
    pub fn new(bundle: PathBuf) -> Self {
        EdgeOptions {
            bundle,
            threads: 1,
            crop: None,
            refer_threshold: None,
            layout: Layout::Wide800x480,
            heatmap_opacity: 0.55,
            log: None,
            max_results: None,
            quiet_after: Duration::from_secs(3),
            trusted: TrustedKeys::default(),
        }
    }
}

/// Counters of a run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct EdgeSummary {
    /// Complete frames received.
    pub frames: u64,
    /// Results sent.
    pub results: u64,
    /// Frames the frame gate refused (`NoEye` sent, not classified).
    pub no_eye: u64,
    /// Frames skipped for a newer one.
    pub dropped: u64,
    /// Packets rejected (CRC, framing, version, …).
    pub packet_errors: u64,
    /// Frames rejected (lost chunk, bad size).
    pub frame_errors: u64,
    /// Times the link was reopened.
    pub reconnects: u64,
    /// Mean latency, last byte in → result out, milliseconds.
    pub mean_latency_ms: f64,
    /// Mean time to render and show one screen, milliseconds.
    pub mean_draw_ms: f64,
    /// The last exam's verdict, once it had enough gated frames.
    pub exam: Option<ExamReport>,
    /// Exams that ended with a verdict (each has a referral sheet when a session log is kept).
    pub exams: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) frames: AtomicU64,
    pub(crate) results: AtomicU64,
    pub(crate) no_eye: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) packet_errors: AtomicU64,
    pub(crate) frame_errors: AtomicU64,
    pub(crate) reconnects: AtomicU64,
    pub(crate) latency_us_total: AtomicU64,
    pub(crate) draw_us_total: AtomicU64,
    pub(crate) draws: AtomicU64,
}

struct Pending {
    frame: Frame,
    received: Instant,
}

/// What the inference and receiver threads hand the writer thread (`crate::writer`).
pub(crate) enum Outgoing {
    /// A message to send as it is.
    Plain(Message<'static>),
    /// A result, stamped with its latency when sent, and logged (with the frame if frames are kept).
    Result { result: InferenceResult, received: Instant, frame: Option<Arc<Frame>> },
    /// A frame the gate refused, with the reason for the log.
    NoEye { reply: NoEye, detail: String },
    /// An exam that ended: its referral sheet and record.
    Exam(Box<FinishedExam>),
}

/// What the threads share.
pub(crate) struct Shared {
    slot: Mutex<Option<Pending>>,
    wake: Condvar,
    pub(crate) screen: Mutex<ScreenState>,
    pub(crate) counters: Counters,
    pub(crate) stop: Arc<AtomicBool>,
    writer: Mutex<Option<Box<dyn Write + Send>>>,
    pub(crate) recent: Mutex<VecDeque<Instant>>,
    pub(crate) max_results: Option<u64>,
    /// Set when a `Hello` is accepted: the inference thread starts a new exam.
    new_session: AtomicBool,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicked thread must not take the whole device down with a poisoned lock.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How long an unchanged screen stays without a redraw.
const REDRAW_ANYWAY: Duration = Duration::from_secs(1);

/// Loads and verifies the bundle (a missing or tampered model is an error here, before anything
/// starts), then runs until `stop` is set or `max_results` results were sent.
pub fn run(
    options: &EdgeOptions,
    link: Arc<dyn LinkOpener>,
    mut display: Box<dyn Display>,
    stop: Arc<AtomicBool>,
) -> Result<EdgeSummary> {
    let (mut bundle, signer) = Bundle::open_trusted(&options.bundle, &options.trusted)?;
    if let Some(key) = signer {
        tracing::info!("{} is signed by trusted key {key}", options.bundle.display());
    }
    if let Some(crop) = options.crop {
        crop.validate()?;
        bundle.card.preprocess.crop = crop;
    }
    if let Some(threshold) = options.refer_threshold {
        bundle.card.refer_threshold = threshold;
    }
    let pipeline = Pipeline::load(bundle, Threads(options.threads.max(1)))?;
    crate::memory::loading_done();
    let card = pipeline.bundle().card.clone();
    let mut log = match &options.log {
        Some((dir, max, frames)) => Some(SessionLog::open(dir, *max, *frames)?),
        None => None,
    };
    let shared = Arc::new(Shared {
        slot: Mutex::new(None),
        wake: Condvar::new(),
        screen: Mutex::new(ScreenState::for_card(&card, options.heatmap_opacity)),
        counters: Counters::default(),
        stop: stop.clone(),
        writer: Mutex::new(None),
        recent: Mutex::new(VecDeque::new()),
        max_results: options.max_results,
        new_session: AtomicBool::new(false),
    });
    let (outbox, inbox) = channel::<Outgoing>();
    let ready =
        Ready { model: truncated(&card.name), classes: card.labels.len() as u8, max_packet: MAX_WIRE_PACKET as u32 };
    let session = EdgeSession::new(ready, card.preprocess.crop);

    let receiver = {
        let shared = shared.clone();
        let outbox = outbox.clone();
        let quiet = options.quiet_after;
        thread::Builder::new()
            .name("receiver".into())
            .spawn(move || receive(&shared, link.as_ref(), &outbox, session, quiet))?
    };
    let writer = {
        let shared = shared.clone();
        let sheet = SheetContext::from_card(&card)?;
        thread::Builder::new().name("writer".into()).spawn(move || write_out(&shared, inbox, &mut log, &sheet))?
    };
    let drawer = {
        let shared = shared.clone();
        let layout = options.layout;
        thread::Builder::new().name("display".into()).spawn(move || {
            let (w, h) = display.size();
            let mut canvas = Canvas::new(w, h);
            let mut drawn: Option<(ScreenState, Instant)> = None;
            while !shared.stop.load(Ordering::Relaxed) {
                let state = lock(&shared.screen).clone();
                // An unchanged screen is not drawn again (a full redraw of a frame is several ms,
                // 30 times a second: a fifth of a core on an idle device), except once a second,
                // in case something else wrote to the framebuffer.
                let fresh =
                    drawn.as_ref().is_some_and(|(last, at)| last.draws_like(&state) && at.elapsed() < REDRAW_ANYWAY);
                if !fresh {
                    let start = Instant::now();
                    render(&mut canvas, &state, layout);
                    if let Err(e) = display.show(&canvas) {
                        tracing::warn!("display: {e:#}");
                    }
                    shared.counters.draw_us_total.fetch_add(start.elapsed().as_micros() as u64, Ordering::Relaxed);
                    shared.counters.draws.fetch_add(1, Ordering::Relaxed);
                    drawn = Some((state, start));
                }
                thread::sleep(Duration::from_millis(33));
            }
            // Leave the last state on screen.
            let state = lock(&shared.screen).clone();
            render(&mut canvas, &state, layout);
            if let Err(e) = display.finish(&canvas) {
                tracing::warn!("display: {e:#}");
            }
        })?
    };

    let (last_exam, exams_done) = serve_frames(&shared, &stop, &pipeline, options, &outbox);
    stop.store(true, Ordering::Relaxed);
    drop(outbox);
    let _ = receiver.join();
    let _ = writer.join();
    let _ = drawer.join();
    let c = &shared.counters;
    let results = c.results.load(Ordering::Relaxed);
    let draws = c.draws.load(Ordering::Relaxed);
    Ok(EdgeSummary {
        frames: c.frames.load(Ordering::Relaxed),
        results,
        no_eye: c.no_eye.load(Ordering::Relaxed),
        dropped: c.dropped.load(Ordering::Relaxed),
        packet_errors: c.packet_errors.load(Ordering::Relaxed),
        frame_errors: c.frame_errors.load(Ordering::Relaxed),
        reconnects: c.reconnects.load(Ordering::Relaxed),
        mean_latency_ms: if results == 0 {
            0.0
        } else {
            c.latency_us_total.load(Ordering::Relaxed) as f64 / results as f64 / 1000.0
        },
        exam: last_exam,
        exams: exams_done,
        mean_draw_ms: if draws == 0 {
            0.0
        } else {
            c.draw_us_total.load(Ordering::Relaxed) as f64 / draws as f64 / 1000.0
        },
    })
}

/// The inference loop, on the caller's thread: each newest frame through the gate and the network,
/// its answer queued for the writer, the screen and the exam (one per probe session, crate::exam)
/// updated. Returns the last exam's verdict and how many exams ended with one.
fn serve_frames(
    shared: &Shared,
    stop: &AtomicBool,
    pipeline: &Pipeline,
    options: &EdgeOptions,
    outbox: &Sender<Outgoing>,
) -> (Option<ExamReport>, u64) {
    let card = &pipeline.bundle().card;
    let logging_frames = options.log.as_ref().is_some_and(|(_, _, frames)| *frames);
    let mut exams = ExamTracker::new(card.exam, card.labels.len());
    let mut last_exam: Option<ExamReport> = None;
    let mut exams_done = 0;
    let mut finished = |exam: Option<FinishedExam>| {
        if let Some(exam) = exam {
            last_exam = Some(ExamReport::from(&exam.verdict));
            exams_done += 1;
            let _ = outbox.send(Outgoing::Exam(Box::new(exam)));
        }
    };
    let started = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let Some(Pending { frame, received }) = next_frame(shared, stop, &mut || {
            finished(exams.finish_if_idle(started.elapsed().as_millis() as u64));
        }) else {
            break;
        };
        let seq = frame.seq;
        let outcome = GrayImage::new(frame.width as usize, frame.height as usize, &frame.pixels)
            .map_err(|e| (ErrorCode::BadFrameGeometry, e.to_string()))
            .and_then(|image| pipeline.classify_image(&image).map_err(|e| (ErrorCode::InferenceFailed, e.to_string())));
        let verdict = match outcome {
            Ok(verdict) => verdict,
            Err((code, detail)) => {
                tracing::warn!("frame {seq}: {detail}");
                shared.counters.frame_errors.fetch_add(1, Ordering::Relaxed);
                let _ = outbox.send(Outgoing::Plain(Message::Error(ErrorReport::new(Some(seq), code, &detail))));
                continue;
            }
        };
        let frame = Arc::new(frame);
        let reply = match &verdict {
            FrameVerdict::Classified(inference) => Outgoing::Result {
                result: to_message(seq, inference, card.preprocess.input_size),
                received,
                frame: logging_frames.then(|| frame.clone()),
            },
            FrameVerdict::NoEye { refusal, .. } => Outgoing::NoEye {
                reply: NoEye { seq, reason: refusal.code(), score: refusal.score() },
                detail: refusal.to_string(),
            },
        };
        let shown = Arc::new(ShownFrame {
            seq,
            width: frame.width as usize,
            height: frame.height as usize,
            pixels: frame.pixels.clone(),
            verdict,
        });
        let _ = outbox.send(reply);
        let new_session = shared.new_session.swap(false, Ordering::Relaxed);
        finished(exams.record(new_session, &shown, started.elapsed().as_millis() as u64, now_ms()));
        let mut screen = lock(&shared.screen);
        screen.exam = Some(exams.line());
        screen.key_frame = exams.shown_key_frame();
        screen.frame = Some(shown);
    }
    finished(exams.finish());
    (last_exam, exams_done)
}

/// Waits for the next frame (`None` once `stop` is set), calling `idle` every 100 ms while none comes.
fn next_frame(shared: &Shared, stop: &AtomicBool, idle: &mut dyn FnMut()) -> Option<Pending> {
    loop {
        let mut slot = lock(&shared.slot);
        if let Some(pending) = slot.take() {
            return Some(pending);
        }
        if stop.load(Ordering::Relaxed) {
            return None;
        }
        slot = shared.wake.wait_timeout(slot, Duration::from_millis(100)).unwrap_or_else(|p| p.into_inner()).0;
        if let Some(pending) = slot.take() {
            return Some(pending);
        }
        drop(slot);
        idle();
    }
}

/// Largest heatmap side a `Result` carries (`MAX_HEATMAP_CELLS` = 16²).
const MAX_HEATMAP_SIDE: usize = 16;

/// The protocol message for an inference: the zoom box mapped back onto the frame, the attention
/// as heatmap bytes (at most 16 × 16).
pub fn to_message(seq: u32, inference: &Inference, input_size: usize) -> InferenceResult {
    let (cells, heat) = wire_cells(&inference.heatmap, inference.heatmap_side, MAX_HEATMAP_SIDE);
    let zoom_box =
        inference.zoom_box.map(|b| input_rect_to_frame(b, inference.crop, input_size)).unwrap_or(inference.crop);
    let clamp = |v: usize| v.min(u16::MAX as usize) as u16;
    InferenceResult {
        seq,
        class_index: inference.class as u8,
        // A label set has at most MAX_CLASSES entries, so this always fits.
        probabilities: heapless::Vec::from_slice(&inference.probabilities).unwrap_or_default(),
        uncertain: inference.uncertain,
        zoom_box: ZoomBox {
            x0: clamp(zoom_box.x0),
            y0: clamp(zoom_box.y0),
            x1: clamp(zoom_box.x1),
            y1: clamp(zoom_box.y1),
        },
        heatmap_width: cells as u8,
        heatmap_height: cells as u8,
        heatmap: heapless::Vec::from_slice(&heat[..heat.len().min(MAX_HEATMAP_CELLS)]).unwrap_or_default(),
        latency_us: 0,
    }
}

fn set_link(shared: &Shared, status: LinkStatus) {
    let mut screen = lock(&shared.screen);
    if screen.link != status {
        tracing::info!("probe link: {status:?}");
        screen.link = status;
    }
}

fn receive(
    shared: &Shared,
    link: &dyn LinkOpener,
    outbox: &Sender<Outgoing>,
    mut session: EdgeSession,
    quiet: Duration,
) {
    let mut decoder = Box::new(FrameDecoder::<MAX_WIRE_PACKET>::new());
    let mut buffer = vec![0u8; 16 * 1024];
    let mut opened_before = false;
    let mut last_open_error: Option<String> = None;
    let mut counted_packet_errors = 0;
    while !shared.stop.load(Ordering::Relaxed) {
        let LinkHalves { mut reader, writer } = match link.open() {
            Ok(halves) => halves,
            Err(e) => {
                let message = e.to_string();
                if last_open_error.as_deref() != Some(message.as_str()) {
                    tracing::warn!("cannot open the probe link ({message}); retrying every 250 ms");
                    last_open_error = Some(message);
                }
                set_link(shared, if opened_before { LinkStatus::Lost(e.to_string()) } else { LinkStatus::Waiting });
                thread::sleep(Duration::from_millis(250));
                continue;
            }
        };
        if opened_before {
            shared.counters.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        opened_before = true;
        last_open_error = None;
        tracing::info!("probe link open: {}", link.describe());
        *lock(&shared.writer) = Some(writer);
        decoder.reset();
        session.reset();
        let mut last_heard: Option<Instant> = None;
        set_link(shared, LinkStatus::Waiting);
        while !shared.stop.load(Ordering::Relaxed) {
            let n = match reader.read(&mut buffer) {
                Ok(0) => {
                    set_link(shared, LinkStatus::Lost("port closed".into()));
                    break;
                }
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                    if last_heard.is_some_and(|t| t.elapsed() > quiet) {
                        set_link(shared, LinkStatus::Waiting);
                    }
                    continue;
                }
                Err(e) => {
                    set_link(shared, LinkStatus::Lost(e.to_string()));
                    break;
                }
            };
            last_heard = Some(Instant::now());
            let mut rest = &buffer[..n];
            while !rest.is_empty() {
                let (used, event) = decoder.feed(rest);
                rest = &rest[used..];
                if let Some(packet) = event {
                    react(shared, outbox, session.on_packet(packet));
                }
            }
            let errors = decoder.stats().errors();
            if errors > counted_packet_errors {
                shared.counters.packet_errors.fetch_add(errors - counted_packet_errors, Ordering::Relaxed);
                counted_packet_errors = errors;
            }
            let mut screen = lock(&shared.screen);
            screen.errors = shared.counters.packet_errors.load(Ordering::Relaxed)
                + shared.counters.frame_errors.load(Ordering::Relaxed);
            screen.dropped = shared.counters.dropped.load(Ordering::Relaxed);
        }
        *lock(&shared.writer) = None;
    }
}

/// Carries out what the session decided about one packet.
fn react(shared: &Shared, outbox: &Sender<Outgoing>, reaction: Reaction) {
    let reply = |message| {
        let _ = outbox.send(Outgoing::Plain(message));
    };
    match reaction {
        Reaction::Quiet => {}
        Reaction::Ready(ready) => {
            shared.new_session.store(true, Ordering::Relaxed);
            reply(Message::Ready(ready));
            set_link(shared, LinkStatus::Receiving);
        }
        Reaction::Frame(frame) => {
            shared.counters.frames.fetch_add(1, Ordering::Relaxed);
            set_link(shared, LinkStatus::Receiving);
            let newer = frame.seq;
            let replaced = lock(&shared.slot).replace(Pending { frame, received: Instant::now() });
            shared.wake.notify_one();
            if let Some(old) = replaced {
                // The newest frame wins; say which one was not classified (docs/protocol.md §3).
                shared.counters.dropped.fetch_add(1, Ordering::Relaxed);
                reply(Message::Skipped(Skipped { seq: old.frame.seq, newer }));
            }
        }
        Reaction::Refuse(report) => {
            if let Some(seq) = report.seq {
                tracing::warn!("frame {seq} refused ({:?}): {}", report.code, report.detail);
                shared.counters.frame_errors.fetch_add(1, Ordering::Relaxed);
            } else {
                tracing::warn!("probe packet refused ({:?}): {}", report.code, report.detail);
            }
            reply(Message::Error(report));
        }
        Reaction::ProbeError(report) => tracing::warn!("probe reports {:?}: {}", report.code, report.detail),
    }
}

/// Sends one message to the probe; `false` when there is no probe or the write failed.
pub(crate) fn send(shared: &Shared, message: &Message<'_>) -> bool {
    let Ok(bytes) = encode_packet_vec(message) else { return false };
    match lock(&shared.writer).as_mut() {
        // A failed write means the probe is gone; the receiver notices and reconnects.
        Some(writer) => writer.write_all(&bytes).and_then(|_| writer.flush()).is_ok(),
        None => false,
    }
}

/// What `check` found: the verified, loaded bundle and one frame through the device's path.
pub struct SelfTest {
    /// The loaded bundle.
    pub pipeline: Pipeline,
    /// The frame's answer (gate, network).
    pub verdict: FrameVerdict,
    /// The trusted key that signed the bundle (`None` when no key is trusted).
    pub signer: Option<String>,
}

/// `check`: the bundle verified (and its signature, when keys are trusted) and one frame through
/// the device's path.
pub fn self_test(bundle: &std::path::Path, trusted: &TrustedKeys, image: &GrayImage<'_>) -> Result<SelfTest> {
    let (bundle, signer) = Bundle::open_trusted(bundle, trusted)?;
    let pipeline = Pipeline::load(bundle, Threads(1)).context("the bundle does not load")?;
    let verdict = pipeline.classify_image(image)?;
    Ok(SelfTest { pipeline, verdict, signer })
}
