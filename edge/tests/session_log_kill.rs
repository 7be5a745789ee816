//! The session log after `SIGKILL`: a writer process (this test binary, re-run with
//! `CDNET_LOG_WRITER` set) appends records as fast as it can and reports each one `append`
//! acknowledged; the test kills it at different points, reopens the log as the next run of the edge
//! would, and checks that no acknowledged record is lost or damaged, that each kill costs at most
//! one torn line, that rotation happened along the way, and that writing resumes cleanly — also
//! after a half-written line, as a power cut leaves it.
//!
//! `harness = false`: the same binary is the test and the writer it kills.

use cdnet_edge::session_log::{LogRecord, SessionLog};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

/// Small enough that every run rotates several times.
const MAX_BYTES: u64 = 4096;
const WRITER: &str = "CDNET_LOG_WRITER";

fn record(seq: u32) -> LogRecord<'static> {
    LogRecord {
        time_ms: cdnet_edge::session_log::now_ms(),
        seq,
        class: "RD",
        probabilities: &[0.05, 0.05, 0.8, 0.05, 0.05],
        uncertain: false,
        zoom_box: Some([10, 20, 110, 120]),
        no_eye: None,
        latency_ms: 12.5,
        model: "kill-test",
    }
}

/// The writer: appends forever from `first`, printing each acknowledged sequence number.
fn write_until_killed(dir: &Path, first: u32) -> ! {
    let mut log = SessionLog::open(dir, MAX_BYTES, false).expect("open the log");
    let stdout = std::io::stdout();
    for seq in first.. {
        log.append(&record(seq), None).expect("append");
        use std::io::Write;
        let mut out = stdout.lock();
        writeln!(out, "{seq}").and_then(|()| out.flush()).expect("report");
    }
    unreachable!("u32 sequence exhausted")
}

/// Every sequence number in every log file, and the lines that do not parse.
fn read_logs(dir: &Path) -> (BTreeSet<u32>, usize, usize) {
    let (mut seqs, mut torn, mut files) = (BTreeSet::new(), 0, 0);
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if !(name.starts_with("session") && name.ends_with(".jsonl")) {
            continue;
        }
        files += 1;
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            match serde_json::from_str::<serde_json::Value>(line) {
                Ok(value) => assert!(seqs.insert(value["seq"].as_u64().unwrap() as u32), "{name}: duplicate {line}"),
                Err(_) => torn += 1,
            }
        }
    }
    (seqs, torn, files)
}

fn main() {
    if let Some(dir) = std::env::var_os(WRITER) {
        let first = std::env::var("CDNET_LOG_FIRST").unwrap().parse().unwrap();
        write_until_killed(Path::new(&dir), first);
    }
    let dir = tempfile::tempdir().unwrap();
    let mut acknowledged = BTreeSet::new();
    let kills = 6;
    for round in 0..kills {
        let first = round * 100_000;
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(WRITER, dir.path())
            .env("CDNET_LOG_FIRST", first.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the writer");
        // Kill after a different number of acknowledgements each round, so the kill lands at
        // different points of a record and of a rotation.
        let wanted = 40 + 23 * round as usize;
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        for _ in 0..wanted {
            let seq: u32 = lines.next().expect("writer ended early").unwrap().parse().unwrap();
            acknowledged.insert(seq);
        }
        child.kill().expect("SIGKILL the writer");
        child.wait().unwrap();
        // What the edge does at its next start: open (repairing a torn last line) and go on.
        let mut log = SessionLog::open(dir.path(), MAX_BYTES, false).expect("reopen after the kill");
        log.append(&record(first + 99_999), None).expect("append after the kill");
        acknowledged.insert(first + 99_999);
    }
    // A power cut mid-write (which SIGKILL cannot cause: a record is one `write`) leaves half a
    // line; the next open ends it, so the record after it is intact.
    let current = dir.path().join("session.jsonl");
    let mut half = serde_json::to_vec(&record(7_777_777)).unwrap();
    half.truncate(half.len() / 2);
    let mut bytes = std::fs::read(&current).unwrap();
    bytes.extend_from_slice(&half);
    std::fs::write(&current, bytes).unwrap();
    let mut log = SessionLog::open(dir.path(), MAX_BYTES, false).expect("reopen after a torn line");
    log.append(&record(8_888_888), None).unwrap();
    acknowledged.insert(8_888_888);
    let (logged, torn, files) = read_logs(dir.path());
    assert!(torn >= 1, "the torn line was not kept as one unparsable line");
    let lost: Vec<_> = acknowledged.difference(&logged).collect();
    assert!(lost.is_empty(), "acknowledged records lost: {lost:?}");
    assert!(torn <= kills as usize + 1, "{torn} unparsable lines after {kills} kills and one torn write");
    assert!(files > kills as usize, "expected rotation: only {files} log files");
    println!(
        "session_log_kill: {kills} kills, {} acknowledged records all present, {torn} torn lines, {files} files",
        acknowledged.len()
    );
}
