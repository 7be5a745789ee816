//! `cdnet-probe-sim`: a B-scan probe in software. It speaks the whole protocol over a serial port
//! (or a pseudo-terminal it creates), streams frames from the phantom generator, an image folder or
//! a DICOM file, prints the results it gets back, and can inject faults: bit flips, dropped bytes,
//! and an unplug.

use crate::link::{LinkHalves, LinkOpener};
use anyhow::{Context, Result, bail};
use cdnet_shared::Rect;
use cdnet_shared::gate::headline_of_code;
use cdnet_shared::imageio::{file_kind, read_gray_frames};
use cdnet_shared::phantom::{Difficulty, PhantomClass, PhantomConfig, SweepConfig, image_seed, render, sweep};
use cdnet_shared::protocol::frames::frame_chunks;
use cdnet_shared::protocol::{
    ErrorReport, FrameDecoder, Hello, InferenceResult, Message, NoEye, PixelFormat, Ready, Skipped, encode_packet_vec,
    truncated,
};
use cdnet_shared::resize::resize_bilinear;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, channel};
use std::thread;
use std::time::{Duration, Instant};

/// Where frames come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// The phantom generator: classes in turn, from `seed`.
    Phantom {
        /// Base seed.
        seed: u64,
        /// Image side.
        size: usize,
        /// Difficulty 0…1.
        difficulty: f32,
    },
    /// Phantom sweeps (`shared::phantom::sweep`): 24 frames over one eye, 35 % of them
    /// uninformative (air, lid, globe at the edge), classes in turn, hard difficulty. Stream one
    /// sweep (`--frames 24`) to see the edge's exam verdict for one eye.
    Sweeps {
        /// Base seed.
        seed: u64,
        /// The first eye streamed (its class is `PhantomClass::ALL[first_eye % 5]`: 2 = RD).
        first_eye: usize,
    },
    /// Image files (a folder, searched recursively, or one file; DICOM frames are all used).
    Files(PathBuf),
}

/// Frames per sweep of [`Source::Sweeps`].
pub const SWEEP_FRAMES: usize = 24;

/// One frame to send: its pixels and where it came from.
#[derive(Debug, Clone)]
pub struct SourceFrame {
    /// Name (file, or phantom class and index).
    pub id: String,
    /// Width.
    pub width: u16,
    /// Height.
    pub height: u16,
    /// 8-bit gray pixels.
    pub pixels: Vec<u8>,
    /// Class index of a phantom frame.
    pub class: Option<usize>,
}

impl Source {
    /// Parses `phantom`, `phantom:SEED`, `sweeps`, `sweeps:SEED`, `sweeps:SEED:FIRST_EYE` or a path.
    pub fn parse(text: &str) -> Source {
        if let Some(rest) = text.strip_prefix("sweeps")
            && (rest.is_empty() || rest.starts_with(':'))
        {
            let mut fields = rest.split(':').skip(1).map(|f| f.parse::<u64>().ok());
            let seed = fields.next().flatten().unwrap_or(0);
            let first_eye = fields.next().flatten().unwrap_or(0) as usize;
            return Source::Sweeps { seed, first_eye };
        }
        match text.strip_prefix("phantom") {
            Some("") => Source::Phantom { seed: 0, size: 256, difficulty: 0.5 },
            Some(rest) if rest.starts_with(':') => {
                Source::Phantom { seed: rest[1..].parse().unwrap_or(0), size: 256, difficulty: 0.5 }
            }
            _ => Source::Files(PathBuf::from(text)),
        }
    }

    /// The first `count` frames (files repeat when there are fewer).
    pub fn frames(&self, count: usize) -> Result<Vec<SourceFrame>> {
        match self {
            Source::Phantom { seed, size, difficulty } => Ok((0..count)
                .map(|i| {
                    let class = PhantomClass::ALL[i % PhantomClass::ALL.len()];
                    let index = i / PhantomClass::ALL.len();
                    let image = render(
                        class,
                        image_seed(*seed, 2, class, index),
                        &PhantomConfig { size: *size, difficulty: *difficulty },
                    );
                    SourceFrame {
                        id: format!("phantom {} #{index}", class.label()),
                        width: *size as u16,
                        height: *size as u16,
                        pixels: image.pixels,
                        class: Some(class.index()),
                    }
                })
                .collect()),
            Source::Sweeps { seed, first_eye } => Ok(sweep_frames(*seed, *first_eye, count)),
            Source::Files(path) => {
                let files: Vec<PathBuf> = if path.is_dir() {
                    let mut files: Vec<PathBuf> = walk(path)?.into_iter().filter(|p| file_kind(p).is_some()).collect();
                    files.sort();
                    files
                } else {
                    vec![path.clone()]
                };
                let mut frames = Vec::new();
                for file in &files {
                    for (k, frame) in read_gray_frames(file)?.into_iter().enumerate() {
                        frames.push(SourceFrame {
                            id: format!("{}#{k}", file.display()),
                            width: u16::try_from(frame.width).context("frame too wide")?,
                            height: u16::try_from(frame.height).context("frame too tall")?,
                            pixels: frame.pixels,
                            class: None,
                        });
                    }
                }
                if frames.is_empty() {
                    bail!("no images found in {}", path.display());
                }
                Ok((0..count).map(|i| frames[i % frames.len()].clone()).collect())
            }
        }
    }
}

/// The first `count` frames of consecutive sweeps, classes in turn.
fn sweep_frames(seed: u64, first_eye: usize, count: usize) -> Vec<SourceFrame> {
    let config = SweepConfig {
        frames: SWEEP_FRAMES,
        uninformative: 0.35,
        phantom: PhantomConfig { size: 256, difficulty: Difficulty::Hard.value() },
    };
    let mut frames = Vec::with_capacity(count);
    for eye in first_eye.. {
        if frames.len() >= count {
            break;
        }
        let class = PhantomClass::ALL[eye % PhantomClass::ALL.len()];
        for (i, frame) in sweep(class, seed.wrapping_mul(1_000_003) + eye as u64, &config).into_iter().enumerate() {
            frames.push(SourceFrame {
                id: format!("sweep {eye} ({}) frame {i} ({:?})", class.label(), frame.kind),
                width: frame.size as u16,
                height: frame.size as u16,
                pixels: frame.pixels,
                class: Some(class.index()),
            });
        }
    }
    frames.truncate(count);
    frames
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n == "masks") {
                continue;
            }
            out.extend(walk(&path)?);
        } else {
            out.push(path);
        }
    }
    Ok(out)
}

/// Resizes a frame to `width × height` (the probe's output resolution).
pub fn resized(frame: &SourceFrame, width: u16, height: u16) -> SourceFrame {
    let (w, h) = (frame.width as usize, frame.height as usize);
    let mut out = vec![0.0f32; width as usize * height as usize];
    // Both sizes are non-zero, so the resize cannot fail.
    let _ = resize_bilinear(&frame.pixels, w, h, Rect::full(w, h), &mut out, width as usize, height as usize);
    SourceFrame {
        pixels: out.iter().map(|v| v.round().clamp(0.0, 255.0) as u8).collect(),
        width,
        height,
        ..frame.clone()
    }
}

/// Fault injection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    /// Probability that any given bit is flipped.
    pub bit_error_rate: f64,
    /// Probability that any given byte is lost.
    pub drop_rate: f64,
}

/// How to stream.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Frames to send.
    pub frames: Vec<SourceFrame>,
    /// Frames per second (0 = as fast as the link takes them).
    pub rate_hz: f64,
    /// Chunk payload size.
    pub chunk: usize,
    /// Faults.
    pub faults: Faults,
    /// Wait for each frame's result (or error) before sending the next.
    pub lockstep: bool,
    /// How long to wait for a reply in lockstep mode.
    pub reply_timeout: Duration,
    /// After this many frames, unplug (see [`Unplug`]).
    pub unplug_after: Option<usize>,
    /// Seed of the fault injection.
    pub seed: u64,
    /// Print each result.
    pub verbose: bool,
    /// Repeat the greeting until the edge answers `Ready`, for at most this long.
    pub wait_ready: Duration,
}

/// What happened to one frame.
#[derive(Debug, Clone, Serialize)]
pub struct SentFrame {
    /// Sequence number.
    pub seq: u32,
    /// Source name.
    pub id: String,
    /// No byte of it was corrupted or dropped.
    pub intact: bool,
    /// Phantom class, when known.
    pub class: Option<usize>,
}

/// Everything the simulator saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SimReport {
    /// Frames sent.
    pub sent: Vec<SentFrame>,
    /// Results received.
    pub results: Vec<ResultLine>,
    /// Errors received.
    pub errors: Vec<String>,
    /// Frames the edge reported skipped for a newer one: (skipped, newer).
    pub skipped: Vec<(u32, u32)>,
    /// Frames the edge's frame gate refused: (frame, reason code).
    pub no_eye: Vec<(u32, u8)>,
    /// The edge's `Ready`, if any.
    pub ready: Option<String>,
    /// Packets the simulator could not decode (bad CRC etc.).
    pub decode_errors: u64,
    /// Wall time.
    pub seconds: f64,
}

/// One result, flattened for reports.
#[derive(Debug, Clone, Serialize)]
pub struct ResultLine {
    /// Frame.
    pub seq: u32,
    /// Class index.
    pub class: usize,
    /// Probabilities.
    pub probabilities: Vec<f32>,
    /// Uncertain flag.
    pub uncertain: bool,
    /// Latency reported by the edge, ms.
    pub latency_ms: f64,
}

/// What to do on unplug: close the link, wait, reopen.
pub trait Unplug {
    /// Closes the current link and opens a new one after `pause`.
    fn replug(&mut self, pause: Duration) -> Result<LinkHalves>;
}

enum Reply {
    Ready(Ready),
    Result(Box<InferenceResult>),
    Error(ErrorReport),
    Skipped(Skipped),
    NoEye(NoEye),
    DecodeErrors(u64),
}

/// Reads replies until the link closes or `stop` is set (which releases the port).
fn spawn_reader(mut reader: Box<dyn Read + Send>, stop: Arc<AtomicBool>) -> Receiver<Reply> {
    let (tx, rx) = channel();
    thread::spawn(move || {
        let mut decoder = Box::new(FrameDecoder::<4096>::new());
        let mut buffer = [0u8; 4096];
        let mut reported = 0;
        while !stop.load(Ordering::Relaxed) {
            let n = match reader.read(&mut buffer) {
                Ok(0) => return,
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                    continue;
                }
                Err(_) => return,
            };
            let mut rest = &buffer[..n];
            while !rest.is_empty() {
                let (used, event) = decoder.feed(rest);
                rest = &rest[used..];
                let reply = match event {
                    Some(Ok(Message::Ready(r))) => Some(Reply::Ready(r)),
                    Some(Ok(Message::Result(r))) => Some(Reply::Result(Box::new(r))),
                    Some(Ok(Message::Error(e))) => Some(Reply::Error(e)),
                    Some(Ok(Message::Skipped(s))) => Some(Reply::Skipped(s)),
                    Some(Ok(Message::NoEye(n))) => Some(Reply::NoEye(n)),
                    _ => None,
                };
                if let Some(reply) = reply
                    && tx.send(reply).is_err()
                {
                    return;
                }
            }
            let errors = decoder.stats().errors();
            if errors > reported {
                reported = errors;
                let _ = tx.send(Reply::DecodeErrors(errors));
            }
        }
    });
    rx
}

/// Applies faults to wire bytes; returns whether they came through intact.
fn corrupt(bytes: &mut Vec<u8>, faults: Faults, rng: &mut ChaCha8Rng) -> bool {
    if faults.bit_error_rate <= 0.0 && faults.drop_rate <= 0.0 {
        return true;
    }
    let mut intact = true;
    let mut out = Vec::with_capacity(bytes.len());
    for &b in bytes.iter() {
        if faults.drop_rate > 0.0 && rng.random::<f64>() < faults.drop_rate {
            intact = false;
            continue;
        }
        let mut v = b;
        if faults.bit_error_rate > 0.0 {
            for bit in 0..8 {
                if rng.random::<f64>() < faults.bit_error_rate {
                    v ^= 1 << bit;
                    intact = false;
                }
            }
        }
        out.push(v);
    }
    *bytes = out;
    intact
}

/// Streams the frames over `link` and collects what comes back.
pub fn simulate(link: LinkHalves, options: &SimOptions, mut unplug: Option<&mut dyn Unplug>) -> Result<SimReport> {
    let start = Instant::now();
    let mut report = SimReport::default();
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let first = options.frames.first().context("no frames to send")?;
    let hello = hello(options, first.width, first.height)?;
    let mut probe = ProbeEnd::open(link);
    probe.await_ready(&hello, options, &mut report)?;
    let period = (options.rate_hz > 0.0).then(|| Duration::from_secs_f64(1.0 / options.rate_hz));
    for (i, frame) in options.frames.iter().enumerate() {
        if options.unplug_after == Some(i)
            && let Some(unplug) = unplug.as_deref_mut()
        {
            // Close every handle on the old port so the edge sees the hang-up.
            probe.close();
            thread::sleep(Duration::from_millis(200));
            probe = ProbeEnd::open(unplug.replug(Duration::from_millis(1500))?);
            probe.await_ready(&hello, options, &mut report)?;
        }
        let tick = Instant::now();
        let seq = i as u32;
        let (bytes, intact) = frame_bytes(seq, start.elapsed().as_micros() as u64, frame, options, &mut rng)?;
        if probe.writer.write_all(&bytes).and_then(|_| probe.writer.flush()).is_err() {
            bail!("the link closed while sending frame {seq}");
        }
        report.sent.push(SentFrame { seq, id: frame.id.clone(), intact, class: frame.class });
        let (until, want) = match (options.lockstep, period) {
            (true, _) => (Instant::now() + options.reply_timeout, Some(seq)),
            (false, period) => (period.map_or(Instant::now(), |p| tick + p), None),
        };
        probe.collect(&mut report, until, want, options.verbose);
    }
    // Late replies.
    let late = Duration::from_millis(if options.lockstep { 200 } else { 2000 });
    probe.collect(&mut report, Instant::now() + late, None, options.verbose);
    probe.close();
    report.seconds = start.elapsed().as_secs_f64();
    Ok(report)
}

/// The probe's greeting for frames of `width` × `height`, as bytes: a sync zero, then the packet.
fn hello(options: &SimOptions, width: u16, height: u16) -> Result<Vec<u8>> {
    let hello = Message::Hello(Hello {
        probe_id: truncated("cdnet-probe-sim"),
        frame_width: width,
        frame_height: height,
        pixel_format: PixelFormat::Gray8,
        max_chunk: options.chunk as u32,
    });
    Ok([vec![0u8], encode_packet_vec(&hello)?].concat())
}

/// One frame on the wire: a sync zero (so a corrupted previous frame cannot swallow this one),
/// then its chunks, each possibly corrupted by the fault model; and whether it went out intact.
fn frame_bytes(
    seq: u32,
    timestamp_us: u64,
    frame: &SourceFrame,
    options: &SimOptions,
    rng: &mut ChaCha8Rng,
) -> Result<(Vec<u8>, bool)> {
    let mut intact = true;
    let mut bytes = vec![0u8];
    for chunk in frame_chunks(seq, timestamp_us, frame.width, frame.height, &frame.pixels, options.chunk) {
        let mut packet = encode_packet_vec(&Message::FrameChunk(chunk))?;
        intact &= corrupt(&mut packet, options.faults, rng);
        bytes.extend(packet);
    }
    Ok((bytes, intact))
}

/// The probe's end of one plugged-in link: what it writes, and the replies its reader thread
/// decodes.
struct ProbeEnd {
    writer: Box<dyn Write + Send>,
    replies: Receiver<Reply>,
    reader_stop: Arc<AtomicBool>,
}

impl ProbeEnd {
    fn open(link: LinkHalves) -> ProbeEnd {
        let reader_stop = Arc::new(AtomicBool::new(false));
        ProbeEnd { writer: link.writer, replies: spawn_reader(link.reader, reader_stop.clone()), reader_stop }
    }

    /// Stops the reader and drops the writer: no handle on the port is left.
    fn close(self) {
        self.reader_stop.store(true, Ordering::Relaxed);
    }

    /// Greets until `Ready`: the edge may attach after a greeting was sent. After `wait_ready` it
    /// streams anyway; the edge then refuses each frame with `NotReady`, which the report shows.
    fn await_ready(&mut self, hello: &[u8], options: &SimOptions, report: &mut SimReport) -> Result<()> {
        report.ready = None;
        let deadline = Instant::now() + options.wait_ready;
        loop {
            self.writer.write_all(hello)?;
            self.writer.flush()?;
            self.collect(report, Instant::now() + Duration::from_millis(300), None, options.verbose);
            if report.ready.is_some() || Instant::now() >= deadline {
                return Ok(());
            }
        }
    }

    /// Records replies until `until`, or until the one that answers frame `want`; whether it came.
    fn collect(&self, report: &mut SimReport, until: Instant, want: Option<u32>, verbose: bool) -> bool {
        loop {
            match self.replies.recv_timeout(until.saturating_duration_since(Instant::now())) {
                Ok(reply) => {
                    if record(reply, report, verbose).is_some_and(|seq| Some(seq) == want) {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
    }
}

/// Adds `reply` to the report; returns the frame it answers, if it answers one.
fn record(reply: Reply, report: &mut SimReport, verbose: bool) -> Option<u32> {
    match reply {
        Reply::Ready(r) => report.ready = Some(format!("{} ({} classes)", r.model, r.classes)),
        Reply::Result(r) => {
            let (class, latency_ms) = (r.class_index as usize, r.latency_us as f64 / 1000.0);
            if verbose {
                let p = r.probabilities.get(class).copied().unwrap_or(0.0);
                println!("seq {}: class {class} p {p:.3} latency {latency_ms:.1} ms", r.seq);
            }
            let probabilities = r.probabilities.to_vec();
            report.results.push(ResultLine { seq: r.seq, class, probabilities, uncertain: r.uncertain, latency_ms });
            return Some(r.seq);
        }
        Reply::Error(e) => {
            if verbose {
                println!("error {:?} (seq {:?}): {}", e.code, e.seq, e.detail);
            }
            report.errors.push(format!("{:?} {:?}: {}", e.code, e.seq, e.detail));
            return e.seq;
        }
        Reply::Skipped(skipped) => {
            report.skipped.push((skipped.seq, skipped.newer));
            return Some(skipped.seq);
        }
        Reply::NoEye(refused) => {
            if verbose {
                println!("frame {}: no eye in view ({})", refused.seq, headline_of_code(refused.reason));
            }
            report.no_eye.push((refused.seq, refused.reason));
            return Some(refused.seq);
        }
        Reply::DecodeErrors(n) => report.decode_errors = n,
    }
    None
}

/// A pseudo-terminal the simulator owns, published under a stable symlink (as udev would publish
/// `/dev/cdnet-probe`): the edge opens the symlink. Unplugging closes the pty and removes the link;
/// replugging makes a new pty and points the link at it.
pub struct PtyProbe {
    link: PathBuf,
    slave: Option<std::fs::File>,
}

impl PtyProbe {
    /// Creates the pty and the symlink; returns the simulator's side of the link.
    pub fn create(link: &Path) -> Result<(PtyProbe, LinkHalves)> {
        let mut probe = PtyProbe { link: link.to_path_buf(), slave: None };
        let halves = probe.plug()?;
        Ok((probe, halves))
    }

    fn plug(&mut self) -> Result<LinkHalves> {
        let (master, mut slave) = serialport::TTYPort::pair().context("cannot create a pseudo-terminal")?;
        let _ = slave.set_exclusive(false);
        let name = slave.name().context("the pty has no name")?;
        let _ = std::fs::remove_file(&self.link);
        std::os::unix::fs::symlink(&name, &self.link)
            .with_context(|| format!("cannot create {}", self.link.display()))?;
        let mut reader = master.try_clone_native().context("cannot clone the pty")?;
        use serialport::SerialPort;
        let _ = reader.set_timeout(Duration::from_millis(100));
        // Keep a slave handle open so the master never reads EIO before the edge attaches. A plain
        // file handle, not the `TTYPort` (which holds an flock that would keep the edge's exclusive
        // open out, as it would on a board).
        use std::os::unix::fs::OpenOptionsExt;
        let keeper = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY)
            .open(&name)
            .with_context(|| format!("cannot open {name}"))?;
        drop(slave);
        self.slave = Some(keeper);
        Ok(LinkHalves { reader: Box::new(reader), writer: Box::new(master) })
    }
}

impl Unplug for PtyProbe {
    fn replug(&mut self, pause: Duration) -> Result<LinkHalves> {
        self.slave = None;
        let _ = std::fs::remove_file(&self.link);
        thread::sleep(pause);
        self.plug()
    }
}

impl Drop for PtyProbe {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.link);
    }
}

/// Opens an existing serial device for the simulator.
pub fn open_device(link: &dyn LinkOpener) -> Result<LinkHalves> {
    link.open().with_context(|| format!("cannot open {}", link.describe()))
}
