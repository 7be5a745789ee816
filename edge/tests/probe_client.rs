//! `tools/probe_client.py`, the Python probe written from docs/protocol.md alone, against the edge
//! over a pseudo-terminal: what a probe vendor reads first must work as written. It streams phantom
//! frames and must get tract's answer for each; a frame before `Hello` and an unknown pixel format
//! must be refused as the document says.

use cdnet_edge::display::NoDisplay;
use cdnet_edge::link::SerialLink;
use cdnet_edge::runner::{EdgeOptions, run};
use cdnet_edge::sim::{Source, SourceFrame};
use cdnet_shared::GrayImage;
use cdnet_shared::bundle::Bundle;
use cdnet_shared::runtime::{Pipeline, Threads};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The Python to run the client with (standard library only): `CDNET_PYTHON`, else `python3`.
fn python(test: &str) -> Option<PathBuf> {
    let python = std::env::var_os("CDNET_PYTHON").map_or_else(|| PathBuf::from("python3"), PathBuf::from);
    if Command::new(&python).arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Some(python);
    }
    let reason = format!("no Python at {} (set CDNET_PYTHON or install python3)", python.display());
    cdnet_testkit::skip(test, &reason, cdnet_testkit::in_ci());
    None
}

/// Runs the edge on `dir/probe` and the client (which publishes its pty there) with `args` and the
/// frames written as raw files; returns the client's exit code and its JSON lines.
fn client_session(python: &Path, dir: &Path, frames: &[SourceFrame], args: &[&str]) -> (i32, Vec<Value>) {
    let link = dir.join("probe");
    let stop = Arc::new(AtomicBool::new(false));
    let edge = {
        let stop = stop.clone();
        let options = EdgeOptions::new(repo().join("models/demo-phantom"));
        let link = Arc::new(SerialLink { path: link.clone(), baud: 921_600 });
        thread::spawn(move || run(&options, link, Box::new(NoDisplay { size: (800, 480) }), stop))
    };
    let mut command = Command::new(python);
    command.arg(repo().join("tools/probe_client.py")).arg("--pty-link").arg(&link);
    command.args(["--width", &frames[0].width.to_string(), "--height", &frames[0].height.to_string()]);
    command.args(["--chunk", "4096", "--wait-ready", "30"]).args(args);
    for (i, frame) in frames.iter().enumerate() {
        let path = dir.join(format!("frame{i}.raw"));
        std::fs::write(&path, &frame.pixels).unwrap();
        command.arg(path);
    }
    let output = command.output().expect("run the probe client");
    stop.store(true, Ordering::Relaxed);
    edge.join().expect("edge thread panicked").expect("edge run failed");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let lines = stdout.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.trim().is_empty() || output.status.code() == Some(1), "client stderr: {stderr}");
    (output.status.code().unwrap_or(-1), lines)
}

fn of_type<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["type"] == kind).collect()
}

#[test]
fn the_documented_client_gets_tracts_answer_for_every_frame() {
    let Some(python) = python("the_documented_client_gets_tracts_answer_for_every_frame") else { return };
    let dir = tempfile::tempdir().unwrap();
    let frames = Source::Phantom { seed: 3, size: 256, difficulty: 0.5 }.frames(5).unwrap();
    let (code, lines) = client_session(&python, dir.path(), &frames, &[]);
    assert_eq!(code, 0, "{lines:?}");
    let ready = of_type(&lines, "ready");
    assert!(!ready.is_empty() && ready[0]["model"] == "demo-phantom" && ready[0]["classes"] == 5, "{lines:?}");
    let results = of_type(&lines, "result");
    assert_eq!(results.len(), 5, "{lines:?}");
    let pipeline = Pipeline::load(Bundle::open(&repo().join("models/demo-phantom")).unwrap(), Threads(1)).unwrap();
    for (seq, result) in results.iter().enumerate() {
        assert_eq!(result["seq"], seq);
        let frame = &frames[seq];
        let image = GrayImage::new(frame.width as usize, frame.height as usize, &frame.pixels).unwrap();
        let direct = pipeline.infer_image(&image).unwrap();
        assert_eq!(result["class_index"], direct.class, "frame {seq}");
        let sent: Vec<f64> = result["probabilities"].as_array().unwrap().iter().map(|p| p.as_f64().unwrap()).collect();
        let diff = sent.iter().zip(&direct.probabilities).map(|(a, b)| (a - *b as f64).abs()).fold(0.0, f64::max);
        assert!(diff < 1e-6, "frame {seq}: probabilities differ by {diff}");
        let cells = result["heatmap_width"].as_u64().unwrap() * result["heatmap_height"].as_u64().unwrap();
        assert_eq!(result["heatmap"].as_array().unwrap().len() as u64, cells);
    }
    let summary = of_type(&lines, "summary");
    assert_eq!(summary[0]["decode_errors"], 0, "{lines:?}");
}

#[test]
fn the_documented_client_is_refused_as_documented() {
    let Some(python) = python("the_documented_client_is_refused_as_documented") else { return };
    let frames = Source::Phantom { seed: 3, size: 64, difficulty: 0.5 }.frames(1).unwrap();
    // A frame before any Hello: Error(NotReady) with the frame's seq (docs/protocol.md §3.1).
    let dir = tempfile::tempdir().unwrap();
    let (_, lines) = client_session(&python, dir.path(), &frames, &["--no-hello", "--timeout", "30"]);
    let errors = of_type(&lines, "error");
    assert!(errors.iter().any(|e| e["code"] == "NotReady" && e["seq"] == 0), "{lines:?}");
    assert!(of_type(&lines, "result").is_empty(), "{lines:?}");
    // An unknown pixel format: Error(UnsupportedPixelFormat), no Ready.
    let dir = tempfile::tempdir().unwrap();
    let (code, lines) = client_session(&python, dir.path(), &frames, &["--pixel-format", "1"]);
    assert_eq!(code, 1);
    let errors = of_type(&lines, "error");
    assert!(errors.iter().any(|e| e["code"] == "UnsupportedPixelFormat" && e["seq"].is_null()), "{lines:?}");
    assert!(of_type(&lines, "ready").is_empty() && !of_type(&lines, "no_ready").is_empty(), "{lines:?}");
}
