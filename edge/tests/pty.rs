//! The probe simulator and the edge runtime over a real pseudo-terminal pair, with the shipped demo
//! bundle: every intact frame answered with what tract says about it, corrupted frames counted and
//! never answered, a wrong-size frame refused without stopping the stream, an unplugged probe
//! reconnected, every result in the session log.

use cdnet_edge::display::NoDisplay;
use cdnet_edge::link::SerialLink;
use cdnet_edge::runner::{EdgeOptions, EdgeSummary, run};
use cdnet_edge::sim::{Faults, PtyProbe, SimOptions, SimReport, Source, SourceFrame, resized, simulate};
use cdnet_shared::GrayImage;
use cdnet_shared::bundle::Bundle;
use cdnet_shared::runtime::{Pipeline, Threads};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

fn bundle() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/demo-phantom")
}

fn options(log: Option<PathBuf>) -> EdgeOptions {
    EdgeOptions { heatmap_opacity: 0.5, log: log.map(|dir| (dir, 1 << 20, false)), ..EdgeOptions::new(bundle()) }
}

fn sim_options(frames: Vec<SourceFrame>) -> SimOptions {
    SimOptions {
        frames,
        rate_hz: 0.0,
        chunk: 512,
        faults: Faults::default(),
        lockstep: true,
        reply_timeout: Duration::from_secs(10),
        unplug_after: None,
        seed: 11,
        verbose: false,
        wait_ready: Duration::from_secs(20),
    }
}

type EdgeThread = thread::JoinHandle<anyhow::Result<EdgeSummary>>;

/// Starts the edge on the serial device `link` (the probe's pty is published there later); setting
/// the flag stops it.
fn start_edge(edge: EdgeOptions, link: &Path) -> (Arc<AtomicBool>, EdgeThread) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let link = Arc::new(SerialLink { path: link.to_path_buf(), baud: 115_200 });
    (stop, thread::spawn(move || run(&edge, link, Box::new(NoDisplay { size: (800, 480) }), flag)))
}

/// Starts the edge on `dir/probe`, streams `sim` from a pty published there, stops the edge.
fn session(dir: &Path, edge: EdgeOptions, sim: &SimOptions) -> (SimReport, EdgeSummary) {
    let link = dir.join("probe");
    let (stop, edge_thread) = start_edge(edge, &link);
    let (mut probe, halves) = PtyProbe::create(&link).expect("pty");
    let report = simulate(halves, sim, Some(&mut probe)).expect("simulator");
    stop.store(true, Ordering::Relaxed);
    let summary = edge_thread.join().expect("edge thread panicked").expect("edge run failed");
    (report, summary)
}

fn phantom_frames(count: usize, side: u16) -> Vec<SourceFrame> {
    let frames = Source::Phantom { seed: 5, size: 256, difficulty: 0.5 }.frames(count).unwrap();
    if side == 256 { frames } else { frames.iter().map(|f| resized(f, side, side)).collect() }
}

fn direct(pipeline: &Pipeline, frame: &SourceFrame) -> (usize, Vec<f32>) {
    let image = GrayImage::new(frame.width as usize, frame.height as usize, &frame.pixels).unwrap();
    let inference = pipeline.infer_image(&image).unwrap();
    (inference.class, inference.probabilities)
}

#[test]
fn every_frame_answered_with_the_tract_result_and_logged() {
    let dir = tempfile::tempdir().unwrap();
    let frames = phantom_frames(10, 256);
    let (report, summary) = session(dir.path(), options(Some(dir.path().join("log"))), &sim_options(frames.clone()));
    assert!(report.ready.as_deref().is_some_and(|r| r.contains("demo-phantom")), "no Ready: {:?}", report.ready);
    assert_eq!(report.results.len(), 10, "errors: {:?}", report.errors);
    assert_eq!(summary.results, 10);
    assert_eq!((summary.packet_errors, summary.frame_errors), (0, 0));
    let pipeline = Pipeline::load(Bundle::open(&bundle()).unwrap(), Threads(1)).unwrap();
    for result in &report.results {
        let (class, probabilities) = direct(&pipeline, &frames[result.seq as usize]);
        assert_eq!(result.class, class, "frame {}", result.seq);
        let diff = result.probabilities.iter().zip(&probabilities).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(diff < 1e-6, "frame {}: probabilities differ by {diff}", result.seq);
        assert!(result.latency_ms > 0.0);
    }
    // The demo model knows its phantoms: most frames get their true class.
    let correct = report.results.iter().filter(|r| Some(r.class) == frames[r.seq as usize].class).count();
    assert!(correct >= 8, "only {correct}/10 phantom frames classified correctly");
    // One durable JSON line per result.
    let log = std::fs::read_to_string(dir.path().join("log/session.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (exams, results): (Vec<_>, Vec<_>) = lines.iter().partition(|l| l["kind"] == "exam");
    assert_eq!(results.len(), 10);
    assert_eq!(results[3]["seq"], 3);
    assert_eq!(results[3]["model"], "demo-phantom");
    // Ten frames of different eyes are still one probe session: one exam, ended with the run.
    assert_eq!(exams.len(), 1, "{exams:?}");
    assert_eq!(exams[0]["frames"], 10);
}

#[test]
fn bit_errors_are_counted_and_never_answered() {
    let dir = tempfile::tempdir().unwrap();
    // Small frames, so that at 1e-4 bit-error rate a fair share still arrives intact.
    let frames = phantom_frames(40, 40);
    let mut sim = sim_options(frames.clone());
    sim.faults = Faults { bit_error_rate: 1e-4, drop_rate: 0.0 };
    sim.lockstep = false;
    sim.rate_hz = 20.0;
    let (report, summary) = session(dir.path(), options(None), &sim);
    let intact: Vec<u32> = report.sent.iter().filter(|f| f.intact).map(|f| f.seq).collect();
    assert!(intact.len() >= 5 && intact.len() < 40, "fault injection did not bite: {} intact", intact.len());
    assert!(summary.packet_errors > 0, "no packet errors counted: {summary:?}");
    assert!(!report.results.is_empty());
    let pipeline = Pipeline::load(Bundle::open(&bundle()).unwrap(), Threads(1)).unwrap();
    for result in &report.results {
        assert!(intact.contains(&result.seq), "a result for corrupted frame {}", result.seq);
        assert_eq!(result.class, direct(&pipeline, &frames[result.seq as usize]).0);
    }
    // Every intact frame is answered (a `Result`, or `NoEye` where the frame gate refused one of
    // these 40-px frames), or reported skipped because a newer frame overtook it: the probe can tell
    // a skipped frame from a lost one.
    let skipped: Vec<u32> = report.skipped.iter().map(|&(seq, _)| seq).collect();
    let refused: Vec<u32> = report.no_eye.iter().map(|&(seq, _)| seq).collect();
    for seq in &refused {
        assert!(intact.contains(seq), "a NoEye for corrupted frame {seq}");
    }
    for seq in &intact {
        let answered = report.results.iter().any(|r| r.seq == *seq) || refused.contains(seq);
        assert!(answered || skipped.contains(seq), "intact frame {seq} neither answered nor reported skipped");
    }
    assert_eq!(skipped.len() as u64, summary.dropped, "{summary:?}");
    for &(seq, newer) in &report.skipped {
        assert!(newer > seq && intact.contains(&newer), "frame {seq} skipped for {newer}");
    }
}

#[test]
fn wrong_size_frame_is_refused_and_the_next_one_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut frames = phantom_frames(3, 64);
    frames[1] = resized(&frames[1], 80, 64);
    let (report, summary) = session(dir.path(), options(None), &sim_options(frames));
    let answered: Vec<u32> = report.results.iter().map(|r| r.seq).collect();
    assert_eq!(answered, vec![0, 2]);
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(report.errors[0].contains("BadFrameGeometry") && report.errors[0].contains("80x64"), "{:?}", report.errors);
    assert_eq!(summary.frame_errors, 1);
}

#[test]
fn unplugged_probe_is_reconnected() {
    let dir = tempfile::tempdir().unwrap();
    let mut sim = sim_options(phantom_frames(6, 64));
    sim.unplug_after = Some(3);
    let (report, summary) = session(dir.path(), options(None), &sim);
    let answered: Vec<u32> = report.results.iter().map(|r| r.seq).collect();
    assert_eq!(answered, vec![0, 1, 2, 3, 4, 5], "errors {:?}", report.errors);
    assert!(summary.reconnects >= 1, "{summary:?}");
}

#[test]
fn missing_model_is_refused_before_serving() {
    let dir = tempfile::tempdir().unwrap();
    let mut edge = options(None);
    edge.bundle = dir.path().join("no-such-bundle");
    let link = Arc::new(SerialLink { path: dir.path().join("probe"), baud: 115_200 });
    let error =
        run(&edge, link, Box::new(NoDisplay { size: (800, 480) }), Arc::new(AtomicBool::new(false))).unwrap_err();
    assert!(format!("{error:#}").contains("no-such-bundle"), "{error:#}");
}

/// An intact packet of another protocol version is answered with `Error(VersionMismatch)`
/// (docs/protocol.md §3.5), not only counted.
#[test]
fn another_protocol_version_is_answered_with_version_mismatch() {
    use cdnet_shared::protocol::{ErrorCode, FrameDecoder, MAX_WIRE_PACKET, Message, PacketError, decode_packet};
    use std::io::{Read, Write};
    // A Heartbeat with version byte 2 and a valid CRC: the decoder sees the CRC hold, then the version.
    let raw = [0x02, 0x04, 0x01, 0xee, 0xf8, 0xae, 0xef];
    assert!(matches!(decode_packet(&raw), Err(PacketError::Version(2))));
    let wire = [0x00, 0x08, 0x02, 0x04, 0x01, 0xee, 0xf8, 0xae, 0xef, 0x00]; // COBS-framed

    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("probe");
    let (stop, edge_thread) = start_edge(options(None), &link);
    let (_probe, mut halves) = PtyProbe::create(&link).expect("pty");
    let mut decoder = FrameDecoder::<MAX_WIRE_PACKET>::new();
    let mut buffer = [0u8; 4096];
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut answer = None;
    while answer.is_none() && std::time::Instant::now() < deadline {
        halves.writer.write_all(&wire).and_then(|()| halves.writer.flush()).expect("write");
        let Ok(n) = halves.reader.read(&mut buffer) else { continue };
        let mut rest = &buffer[..n];
        while !rest.is_empty() {
            let (used, event) = decoder.feed(rest);
            rest = &rest[used..];
            if let Some(Ok(Message::Error(report))) = event
                && report.code == ErrorCode::VersionMismatch
            {
                answer = Some(report.detail.to_string());
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    drop(halves);
    edge_thread.join().expect("edge thread panicked").expect("edge run failed");
    let detail = answer.expect("no Error(VersionMismatch) within 30 s");
    assert!(detail.contains("version 2"), "{detail}");
}

/// A Hello announcing frames that could never be served (0×0, wider than the protocol allows,
/// smaller than the preprocessing minimum after the crop, a chunk limit of 0) gets
/// `Error(BadFrameGeometry)` and no `Ready`, an unknown pixel format `Error(UnsupportedPixelFormat)`;
/// a sensible one gets `Ready`.
#[test]
fn a_hello_with_impossible_dimensions_is_refused() {
    use cdnet_shared::protocol::{ErrorCode, FrameDecoder, Hello, MAX_WIRE_PACKET, Message, PixelFormat};
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("probe");
    let (stop, edge_thread) = start_edge(options(None), &link);
    let (_probe, mut halves) = PtyProbe::create(&link).expect("pty");
    let mut decoder = FrameDecoder::<MAX_WIRE_PACKET>::new();
    let mut buffer = [0u8; 4096];
    // The reply to one Hello: "ready" or the error code's name, retrying while the edge starts.
    let mut ask = |width: u16, height: u16, pixel_format: PixelFormat, max_chunk: u32| -> String {
        let hello = Message::Hello(Hello {
            probe_id: "test".try_into().unwrap(),
            frame_width: width,
            frame_height: height,
            pixel_format,
            max_chunk,
        });
        let mut wire = vec![0u8];
        wire.extend(cdnet_shared::protocol::encode_packet_vec(&hello).unwrap());
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            halves.writer.write_all(&wire).and_then(|()| halves.writer.flush()).expect("write");
            let Ok(n) = halves.reader.read(&mut buffer) else { continue };
            let mut rest = &buffer[..n];
            while !rest.is_empty() {
                let (used, event) = decoder.feed(rest);
                rest = &rest[used..];
                let answer = match event {
                    Some(Ok(Message::Ready(_))) => "ready".to_string(),
                    Some(Ok(Message::Error(report))) => format!("{:?}", report.code),
                    _ => continue,
                };
                // Hellos resent while the edge was starting have replies in flight: read until quiet.
                thread::sleep(Duration::from_millis(300));
                while halves.reader.read(&mut buffer).is_ok_and(|n| n > 0) {}
                decoder.reset();
                return answer;
            }
        }
        "no answer".into()
    };
    assert_eq!(ask(256, 256, PixelFormat::Gray8, 512), "ready");
    let refused = format!("{:?}", ErrorCode::BadFrameGeometry);
    for (w, h, max_chunk) in [(0, 0, 512), (65535, 65535, 512), (4097, 100, 512), (20, 20, 512), (256, 256, 0)] {
        assert_eq!(ask(w, h, PixelFormat::Gray8, max_chunk), refused, "{w}x{h}, max_chunk {max_chunk}");
    }
    for code in [1, 255] {
        let answer = ask(256, 256, PixelFormat::Unknown(code), 512);
        assert_eq!(answer, format!("{:?}", ErrorCode::UnsupportedPixelFormat), "pixel_format {code}");
    }
    stop.store(true, Ordering::Relaxed);
    drop(halves);
    edge_thread.join().expect("edge thread panicked").expect("edge run failed");
}

/// One phantom sweep over the serial link: every frame answered (`Result` or `NoEye`), and the
/// edge's exam over the session rests on exactly the classified frames, with the refused ones
/// counted apart and the key frame one of the classified frames.
#[test]
fn a_sweep_over_the_link_becomes_one_exam() {
    let dir = tempfile::tempdir().unwrap();
    let frames = Source::Sweeps { seed: 3, first_eye: 0 }.frames(cdnet_edge::sim::SWEEP_FRAMES).unwrap();
    let log = dir.path().join("log");
    let (report, summary) = session(dir.path(), options(Some(log.clone())), &sim_options(frames.clone()));
    assert_eq!(report.results.len() + report.no_eye.len(), frames.len(), "errors: {:?}", report.errors);
    assert!(!report.no_eye.is_empty(), "no frame of the sweep was refused (its air frames are blank)");
    let exam = summary.exam.expect("no exam verdict after a whole sweep");
    assert_eq!((exam.frames, exam.refused), (report.results.len(), report.no_eye.len()), "{exam:?}");
    assert!(report.results.iter().any(|r| r.seq == exam.key_frame), "key frame {} was not classified", exam.key_frame);
    assert!(exam.class < 5 && (0.0..=1.0).contains(&exam.confidence), "{exam:?}");
    // The end of the run ended the exam: one record in the session log, naming its referral sheet.
    assert_eq!(summary.exams, 1);
    let text = std::fs::read_to_string(log.join("session.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), frames.len() + 1, "one line per frame and one for the exam");
    let record = lines.last().unwrap();
    assert_eq!(record["kind"], "exam");
    assert_eq!(
        (record["frames"].as_u64(), record["refused"].as_u64()),
        (Some(exam.frames as u64), Some(exam.refused as u64))
    );
    assert_eq!(record["key_frames"][0]["seq"], exam.key_frame);
    assert_eq!(record["card_sha256"].as_str(), Bundle::open(&bundle()).unwrap().card.digest().ok().as_deref());
    let sheet = log.join(record["referral"].as_str().expect("no referral sheet named"));
    let png = image::open(&sheet).unwrap_or_else(|e| panic!("{}: {e}", sheet.display())).to_rgb8();
    assert_eq!((png.width(), png.height()), cdnet_edge::referral::SHEET_SIZE);
}
