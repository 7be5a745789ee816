//! The writer thread: sends what the other threads queue (results, refusals, errors) and a
//! heartbeat every second, stamps each result with its latency (last byte received → result sent),
//! appends every answer to the session log, and turns each finished exam into its referral sheet
//! and record (`crate::referral`).

use crate::referral::{SheetContext, record_exam};
use crate::runner::{Outgoing, Shared, lock, send};
use crate::session_log::{LogRecord, SessionLog, now_ms};
use cdnet_shared::protocol::frames::Frame;
use cdnet_shared::protocol::{Heartbeat, Message};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

/// Runs until every sender of `inbox` is gone.
pub(crate) fn write_out(
    shared: &Shared,
    inbox: Receiver<Outgoing>,
    log: &mut Option<SessionLog>,
    sheet: &SheetContext,
) {
    let (model, names) = (sheet.model.as_str(), &sheet.short_labels);
    let started = Instant::now();
    let mut last_heartbeat = Instant::now();
    loop {
        if last_heartbeat.elapsed() >= Duration::from_secs(1) {
            last_heartbeat = Instant::now();
            send(shared, &Message::Heartbeat(Heartbeat { uptime_ms: started.elapsed().as_millis() as u32 }));
        }
        let item = match inbox.recv_timeout(Duration::from_millis(200)) {
            Ok(item) => item,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        };
        match item {
            Outgoing::Plain(message) => {
                send(shared, &message);
            }
            Outgoing::Result { mut result, received, frame } => {
                let latency = received.elapsed();
                result.latency_us = latency.as_micros().min(u32::MAX as u128) as u32;
                send(shared, &Message::Result(result.clone()));
                let c = &shared.counters;
                c.results.fetch_add(1, Ordering::Relaxed);
                c.latency_us_total.fetch_add(result.latency_us as u64, Ordering::Relaxed);
                {
                    let fps = answer_rate(shared);
                    let mut screen = lock(&shared.screen);
                    screen.latency_ms = latency.as_secs_f32() * 1000.0;
                    screen.fps = fps;
                }
                let record = LogRecord {
                    time_ms: now_ms(),
                    seq: result.seq,
                    class: names.get(result.class_index as usize).map_or("?", String::as_str),
                    probabilities: &result.probabilities,
                    uncertain: result.uncertain,
                    zoom_box: Some([result.zoom_box.x0, result.zoom_box.y0, result.zoom_box.x1, result.zoom_box.y1]),
                    no_eye: None,
                    latency_ms: latency.as_secs_f32() * 1000.0,
                    model,
                };
                append_log(log, &record, frame.as_deref());
                stop_when_enough(shared);
            }
            Outgoing::NoEye { reply, detail } => {
                send(shared, &Message::NoEye(reply));
                shared.counters.no_eye.fetch_add(1, Ordering::Relaxed);
                let fps = answer_rate(shared);
                lock(&shared.screen).fps = fps;
                let record = LogRecord {
                    time_ms: now_ms(),
                    seq: reply.seq,
                    class: NO_EYE,
                    probabilities: &[],
                    uncertain: true,
                    zoom_box: None,
                    no_eye: Some(&detail),
                    latency_ms: 0.0,
                    model,
                };
                append_log(log, &record, None);
                stop_when_enough(shared);
            }
            Outgoing::Exam(exam) => record_exam(log.as_mut(), &exam, sheet),
        }
    }
}

/// The class name a refused frame has in the session log.
pub const NO_EYE: &str = "no eye in view";

/// Answered frames per second over the last few seconds (the new answer included).
fn answer_rate(shared: &Shared) -> f32 {
    let mut recent = lock(&shared.recent);
    recent.push_back(Instant::now());
    while recent.len() > 20 || recent.front().is_some_and(|t| t.elapsed() > Duration::from_secs(5)) {
        recent.pop_front();
    }
    match (recent.front(), recent.back()) {
        (Some(a), Some(b)) if recent.len() > 1 => (recent.len() - 1) as f32 / (*b - *a).as_secs_f32().max(1e-3),
        _ => 0.0,
    }
}

fn append_log(log: &mut Option<SessionLog>, record: &LogRecord<'_>, frame: Option<&Frame>) {
    if let Some(log) = log.as_mut() {
        let pixels = frame.map(|f| (&f.pixels[..], f.width as u32, f.height as u32));
        if let Err(e) = log.append(record, pixels) {
            tracing::error!("session log: {e:#}");
        }
    }
}

/// Ends the run once `max_results` frames have been answered (a `Result` or a `NoEye`).
fn stop_when_enough(shared: &Shared) {
    let c = &shared.counters;
    let answered = c.results.load(Ordering::Relaxed) + c.no_eye.load(Ordering::Relaxed);
    if shared.max_results.is_some_and(|max| answered >= max) {
        shared.stop.store(true, Ordering::Relaxed);
    }
}
