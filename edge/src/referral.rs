//! The referral sheet: one printable page per finished exam, and its JSON record.
//!
//! When an exam ends with a verdict (`crate::exam`), the edge writes `referrals/exam-<UTC time>-<n>.png`
//! in the session-log folder — an A4 page at 100 dpi with the verdict (or "inconclusive"), the
//! per-class evidence, the key frames with their heatmaps (the verdict class's, and those of up to
//! two more classes with real evidence), the exam's times, the model and the digest of its card —
//! and then one `"kind": "exam"` line in the session log naming that file.
//! The page is written to a temporary file, flushed, renamed and its folder flushed, so after a
//! power cut a sheet is either whole or absent, and a log record never names a missing sheet.

use crate::exam::FinishedExam;
use crate::screen::{Canvas, draw_scan, fill, text};
use crate::session_log::{SessionLog, write_durably};
use anyhow::{Context, Result};
use cdnet_shared::exam::ExamRule;
use embedded_graphics::mono_font::MonoTextStyle;
use embedded_graphics::mono_font::ascii::{FONT_6X10, FONT_10X20};
use embedded_graphics::pixelcolor::Rgb888;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Page size: A4 at 100 dpi.
pub const SHEET_SIZE: (u32, u32) = (827, 1169);
/// The page.
pub const PAPER: Rgb888 = Rgb888::new(255, 255, 255);
/// Body text.
pub const INK: Rgb888 = Rgb888::new(20, 20, 24);
/// The banner of a conclusive verdict.
pub const VERDICT: Rgb888 = Rgb888::new(205, 225, 250);
/// The banner of an inconclusive exam.
pub const INCONCLUSIVE: Rgb888 = Rgb888::new(255, 176, 0);
const GREY: Rgb888 = Rgb888::new(110, 112, 120);
const BAR: Rgb888 = Rgb888::new(70, 140, 230);
const TRACK: Rgb888 = Rgb888::new(228, 230, 236);
const MARGIN: i32 = 40;
/// Key frames on a sheet (the most evident classes').
pub const SHEET_KEY_FRAMES: usize = 3;
/// A class other than the verdict's shows its key frame on the sheet only with at least this much
/// evidence: the most confident frame of a class the exam all but ruled out is usually a poor frame
/// (the lid, the globe's edge), and printed under that class's name it would mislead.
pub const SHEET_MIN_EVIDENCE: f32 = 0.1;

/// What the sheet says about the model and how an exam is decided, from the card.
#[derive(Debug, Clone)]
pub struct SheetContext {
    /// Bundle name.
    pub model: String,
    /// `ModelCard::digest` of the card the device runs.
    pub card_sha256: String,
    /// Display names of the classes.
    pub labels: Vec<String>,
    /// Short class names.
    pub short_labels: Vec<String>,
    /// Network input side (heatmap geometry).
    pub input_size: usize,
    /// The card's exam rule.
    pub rule: ExamRule,
}

impl SheetContext {
    /// What the sheets of a bundle say: from its card (the digest is the one the graphs carry).
    pub fn from_card(card: &cdnet_shared::bundle::ModelCard) -> Result<Self> {
        Ok(SheetContext {
            model: card.name.clone(),
            card_sha256: card.digest().map_err(|e| anyhow::anyhow!("the card's digest: {e}"))?,
            labels: card.labels.display_names(),
            short_labels: card.labels.names().to_vec(),
            input_size: card.preprocess.input_size,
            rule: card.exam,
        })
    }
}

/// One key frame in the record.
#[derive(Debug, Clone, Serialize)]
pub struct KeyFrameRecord {
    /// Class it is the key frame of.
    pub class: String,
    /// Frame sequence number.
    pub seq: u32,
    /// Its probability of that class.
    pub probability: f32,
}

/// The session-log line of a finished exam.
#[derive(Debug, Clone, Serialize)]
pub struct ExamRecord {
    /// Always `"exam"` (frame records have no `kind`).
    pub kind: &'static str,
    /// Exams started in this run, counting this one.
    pub exam: u64,
    /// Wall clock of the first and last frame, milliseconds since the Unix epoch.
    pub started_ms: u128,
    /// See `started_ms`.
    pub ended_ms: u128,
    /// The verdict class's short name, or `"inconclusive"`.
    pub verdict: String,
    /// The most evident class (also when inconclusive).
    pub class: String,
    /// Whether the verdict is conclusive.
    pub conclusive: bool,
    /// Mean probability of that class over the exam's gated frames.
    pub confidence: f32,
    /// Mean probability of every class.
    pub evidence: BTreeMap<String, f32>,
    /// Gated frames.
    pub frames: usize,
    /// Frames the frame gate refused.
    pub refused: usize,
    /// Key frames, most evident class first.
    pub key_frames: Vec<KeyFrameRecord>,
    /// Bundle name.
    pub model: String,
    /// Digest of its card.
    pub card_sha256: String,
    /// The sheet, relative to the log folder (absent if it could not be written).
    pub referral: Option<String>,
}

fn short(context: &SheetContext, class: usize) -> String {
    context.short_labels.get(class).cloned().unwrap_or_else(|| format!("class {class}"))
}

impl ExamRecord {
    /// The record of `exam`; `referral` is where its sheet was written.
    pub fn new(exam: &FinishedExam, context: &SheetContext, referral: Option<String>) -> Self {
        let v = &exam.verdict;
        ExamRecord {
            kind: "exam",
            exam: exam.number,
            started_ms: exam.started_ms,
            ended_ms: exam.ended_ms,
            verdict: if v.conclusive { short(context, v.class) } else { "inconclusive".into() },
            class: short(context, v.class),
            conclusive: v.conclusive,
            confidence: v.confidence,
            evidence: v.evidence.iter().enumerate().map(|(c, p)| (short(context, c), *p)).collect(),
            frames: v.frames,
            refused: v.refused,
            key_frames: exam
                .key_frames
                .iter()
                .map(|k| KeyFrameRecord {
                    class: short(context, k.class),
                    seq: k.frame.seq,
                    probability: k.probability,
                })
                .collect(),
            model: context.model.clone(),
            card_sha256: context.card_sha256.clone(),
            referral,
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` for milliseconds since the Unix epoch (proleptic Gregorian calendar).
pub fn utc_time(ms: u128) -> String {
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Year, month, day of the day `days` after 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// The sheet's file name: `exam-YYYYMMDD-HHMMSS-<n>.png` (UTC of the exam's start).
pub fn sheet_name(exam: &FinishedExam) -> String {
    let stamp: String = utc_time(exam.started_ms).chars().filter(char::is_ascii_digit).take(14).collect();
    format!("exam-{}-{}-{}.png", &stamp[..8], &stamp[8..], exam.number)
}

/// Draws the sheet of `exam`.
pub fn render_sheet(exam: &FinishedExam, context: &SheetContext) -> Canvas {
    let (w, h) = SHEET_SIZE;
    let mut canvas = Canvas::new(w, h);
    fill(&mut canvas, 0, 0, w, h, PAPER);
    let mut y = draw_header(&mut canvas, exam, context);
    y = draw_verdict(&mut canvas, exam, context, y);
    y = draw_evidence(&mut canvas, exam, context, y);
    draw_key_frames(&mut canvas, exam, context, y);
    draw_footer(&mut canvas, context);
    canvas
}

fn draw_header(canvas: &mut Canvas, exam: &FinishedExam, context: &SheetContext) -> i32 {
    let title = MonoTextStyle::new(&profont::PROFONT_24_POINT, INK);
    let body = MonoTextStyle::new(&FONT_10X20, INK);
    let small = MonoTextStyle::new(&FONT_6X10, GREY);
    text(canvas, "Ocular B-scan exam: referral sheet", MARGIN, 36, title);
    let seconds = exam.ended_ms.saturating_sub(exam.started_ms) as f64 / 1000.0;
    text(canvas, &format!("Exam {}, started {}", exam.number, utc_time(exam.started_ms)), MARGIN, 84, body);
    text(canvas, &format!("ended {} ({seconds:.0} s)", utc_time(exam.ended_ms)), MARGIN + 120, 106, small);
    text(canvas, &format!("Model {}", context.model), MARGIN, 124, body);
    text(canvas, &format!("card sha256 {}", context.card_sha256), MARGIN, 146, small);
    170
}

fn draw_verdict(canvas: &mut Canvas, exam: &FinishedExam, context: &SheetContext, y: i32) -> i32 {
    let v = &exam.verdict;
    let width = SHEET_SIZE.0 - 2 * MARGIN as u32;
    let banner = if v.conclusive { VERDICT } else { INCONCLUSIVE };
    fill(canvas, MARGIN, y, width, 56, banner);
    let big = MonoTextStyle::new(&profont::PROFONT_24_POINT, INK);
    let name = context.labels.get(v.class).map_or("?", String::as_str);
    let headline = if v.conclusive {
        format!("{name}  {:.0} %", 100.0 * v.confidence)
    } else {
        "INCONCLUSIVE: refer for a full examination".to_string()
    };
    text(canvas, &headline, MARGIN + 14, y + 12, big);
    let body = MonoTextStyle::new(&FONT_10X20, INK);
    let rests = format!("{} frames classified, {} refused by the frame gate", v.frames, v.refused);
    text(canvas, &rests, MARGIN, y + 68, body);
    let rule = format!(
        "Rule: mean probability over the classified frames; a verdict needs {} frames and {:.0} %.",
        context.rule.min_frames,
        100.0 * context.rule.min_confidence
    );
    text(canvas, &rule, MARGIN, y + 92, MonoTextStyle::new(&FONT_6X10, GREY));
    y + 120
}

fn draw_evidence(canvas: &mut Canvas, exam: &FinishedExam, context: &SheetContext, mut y: i32) -> i32 {
    let body = MonoTextStyle::new(&FONT_10X20, INK);
    text(canvas, "Evidence per class (mean probability)", MARGIN, y, body);
    y += 30;
    let name_width = 10 * 29;
    let bar_x = MARGIN + name_width;
    let bar_w = SHEET_SIZE.0 as i32 - MARGIN - bar_x - 70;
    for (class, p) in exam.verdict.evidence.iter().enumerate() {
        let name = context.labels.get(class).map_or("?", String::as_str);
        let style = MonoTextStyle::new(&FONT_10X20, if class == exam.verdict.class { INK } else { GREY });
        text(canvas, name, MARGIN, y, style);
        fill(canvas, bar_x, y + 2, bar_w as u32, 16, TRACK);
        fill(canvas, bar_x, y + 2, ((bar_w as f32 * p.clamp(0.0, 1.0)) as u32).max(1), 16, BAR);
        text(canvas, &format!("{:>3.0} %", 100.0 * p), bar_x + bar_w + 8, y, style);
        y += 28;
    }
    y + 16
}

fn draw_key_frames(canvas: &mut Canvas, exam: &FinishedExam, context: &SheetContext, y: i32) {
    let body = MonoTextStyle::new(&FONT_10X20, INK);
    let small = MonoTextStyle::new(&FONT_6X10, GREY);
    text(canvas, "Key frames (most confident frame per class) and where the model looked", MARGIN, y, body);
    let side = 240u32;
    let gap = (SHEET_SIZE.0 as i32 - 2 * MARGIN - SHEET_KEY_FRAMES as i32 * side as i32) / 2;
    let top = y + 30;
    let v = &exam.verdict;
    let shown = exam.key_frames.iter().filter(|k| k.class == v.class || v.evidence[k.class] >= SHEET_MIN_EVIDENCE);
    for (i, shot) in shown.take(SHEET_KEY_FRAMES).enumerate() {
        let x = MARGIN + i as i32 * (side as i32 + gap);
        fill(canvas, x - 1, top - 1, side + 2, side + 2, GREY);
        draw_scan(canvas, &shot.frame, (x, top, side), context.input_size, 0.55);
        let name = context.short_labels.get(shot.class).map_or("?", String::as_str);
        text(canvas, &format!("{name} {:.0} %", 100.0 * shot.probability), x, top + side as i32 + 8, body);
        text(canvas, &format!("frame {}", shot.frame.seq), x, top + side as i32 + 30, small);
    }
}

fn draw_footer(canvas: &mut Canvas, context: &SheetContext) {
    let small = MonoTextStyle::new(&FONT_6X10, GREY);
    let bottom = SHEET_SIZE.1 as i32 - MARGIN;
    let lines = [
        "Decision support from an automated classifier (CDNet on the device). It is not a diagnosis:",
        "a clinician must review the images. Heatmap: red where the model's attention was highest.",
        &format!("Written by cdnet-edge {} with model {}.", env!("CARGO_PKG_VERSION"), context.model),
    ];
    for (i, line) in lines.iter().enumerate() {
        text(canvas, line, MARGIN, bottom - 14 * (lines.len() - i) as i32, small);
    }
}

/// The referral sheets' folder inside the session-log folder.
pub const REFERRALS: &str = "referrals";

/// Writes a finished exam's referral sheet, then its record in the session log (so a record never
/// names a sheet that is not on disk). Without a session log there is nowhere to keep either.
/// Failures are logged: a full disk must not stop the device answering frames.
pub fn record_exam(log: Option<&mut SessionLog>, exam: &FinishedExam, sheet: &SheetContext) {
    let Some(log) = log else { return };
    let referral = match write_sheet(&log.dir().join(REFERRALS), exam, sheet) {
        Ok(path) => path.file_name().map(|name| format!("{REFERRALS}/{}", name.to_string_lossy())),
        Err(e) => {
            tracing::error!("referral sheet of exam {}: {e:#}", exam.number);
            None
        }
    };
    if let Some(path) = &referral {
        tracing::info!("exam {} ended: referral sheet {path}", exam.number);
    }
    if let Err(e) = log.append_line(&ExamRecord::new(exam, sheet, referral)) {
        tracing::error!("session log: {e:#}");
    }
}

/// Renders the sheet and writes it into `dir` atomically (temporary file, flush, rename, flush the
/// folder); returns its path.
pub fn write_sheet(dir: &Path, exam: &FinishedExam, context: &SheetContext) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create the referral folder {}", dir.display()))?;
    let canvas = render_sheet(exam, context);
    let mut png = Vec::new();
    image::write_buffer_with_format(
        &mut std::io::Cursor::new(&mut png),
        canvas.rgb(),
        canvas.width(),
        canvas.height(),
        image::ExtendedColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .context("cannot encode the referral sheet")?;
    let path = dir.join(sheet_name(exam));
    write_durably(&path, &png)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times_match_the_calendar() {
        assert_eq!(utc_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_time(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc_time(1_795_938_621_999), "2026-11-29 07:50:21 UTC");
        assert_eq!(utc_time(4_107_542_400_000), "2100-03-01 00:00:00 UTC");
    }
}
