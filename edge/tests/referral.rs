//! The referral sheet, checked pixel by pixel (verdict banner, evidence bars, key frames with their
//! heatmaps) and as a file (a whole PNG, written atomically, named by the exam's time).

use cdnet_edge::exam::{ExamTracker, FinishedExam};
use cdnet_edge::referral::{
    ExamRecord, INCONCLUSIVE, PAPER, SHEET_SIZE, SheetContext, VERDICT, render_sheet, sheet_name, write_sheet,
};
use cdnet_edge::screen::{Canvas, ShownFrame};
use cdnet_shared::Rect;
use cdnet_shared::exam::ExamRule;
use cdnet_shared::postprocess::heat_colour;
use cdnet_shared::runtime::{FrameVerdict, Inference};
use embedded_graphics::pixelcolor::{Rgb888, RgbColor};
use std::sync::Arc;

const GRAY: u8 = 90;
const INPUT: usize = 64;

fn rgb(c: Rgb888) -> [u8; 3] {
    [c.r(), c.g(), c.b()]
}

fn context() -> SheetContext {
    SheetContext {
        model: "demo-phantom".into(),
        card_sha256: "ab".repeat(32),
        labels: ["Normal", "Intraocular tumour", "Retinal detachment"].map(String::from).to_vec(),
        short_labels: ["Normal", "IOT", "RD"].map(String::from).to_vec(),
        input_size: INPUT,
        rule: ExamRule { min_frames: 3, gap_ms: 1_000, min_confidence: 0.6 },
    }
}

/// A flat gray frame whose 2 × 2 attention peaks in cell `peak`.
fn frame(seq: u32, probabilities: [f32; 3], peak: usize) -> Arc<ShownFrame> {
    let class = (0..3).max_by(|&a, &b| probabilities[a].total_cmp(&probabilities[b])).unwrap();
    let mut attention = vec![0.0; 4];
    attention[peak] = 1.0;
    let inference = Inference {
        probabilities: probabilities.to_vec(),
        class,
        confidence: probabilities[class],
        uncertain: false,
        attention: attention.clone(),
        attention_side: 2,
        heatmap: attention,
        heatmap_side: 2,
        zoom_box: None,
        crop: Rect::full(128, 128),
        gate_distance: Some(1.0),
    };
    let verdict = FrameVerdict::Classified(inference);
    Arc::new(ShownFrame { seq, width: 128, height: 128, pixels: vec![GRAY; 128 * 128], verdict })
}

/// An exam of `frames` run through the device's own bookkeeping.
fn exam(frames: &[Arc<ShownFrame>]) -> FinishedExam {
    let mut tracker = ExamTracker::new(context().rule, 3);
    for (t, f) in frames.iter().enumerate() {
        tracker.record(false, f, t as u64 * 50, 1_795_938_621_000 + t as u128 * 50);
    }
    tracker.finish().expect("enough frames for a verdict")
}

fn count(canvas: &Canvas, y: std::ops::Range<u32>, colour: [u8; 3]) -> usize {
    y.flat_map(|y| (0..canvas.width()).map(move |x| (x, y))).filter(|&(x, y)| canvas.pixel(x, y) == colour).count()
}

/// Where the sheet draws the heat of a key frame: the first panel row holds pure heat colour at
/// the peak cell's centre, blended over the gray frame.
fn has_heat_peak(canvas: &Canvas) -> bool {
    let expected = heat_colour(255).map(|c| (GRAY as f32 * 0.45 + c as f32 * 0.55) as u8);
    let close = |p: [u8; 3]| p.iter().zip(expected).all(|(&a, b)| (a as i32 - b as i32).abs() <= 8);
    (0..canvas.height()).any(|y| (0..canvas.width()).any(|x| close(canvas.pixel(x, y))))
}

#[test]
fn a_conclusive_exam_shows_its_verdict_evidence_and_key_frames() {
    let frames: Vec<_> =
        (0..6).map(|seq| frame(seq, if seq == 2 { [0.02, 0.08, 0.9] } else { [0.1, 0.2, 0.7] }, 1)).collect();
    let exam = exam(&frames);
    let sheet = render_sheet(&exam, &context());
    assert_eq!((sheet.width(), sheet.height()), SHEET_SIZE);
    assert!(count(&sheet, 0..SHEET_SIZE.1, rgb(VERDICT)) > 20_000, "no verdict banner");
    assert_eq!(count(&sheet, 0..SHEET_SIZE.1, rgb(INCONCLUSIVE)), 0, "an inconclusive banner on a conclusive exam");
    assert!(count(&sheet, 0..SHEET_SIZE.1, rgb(PAPER)) > 500_000, "not a printable (white) page");
    assert!(has_heat_peak(&sheet), "no key frame with its heatmap");
    // Every class has some probability in every frame, so each has a key frame; the verdict's
    // (RD, frame 2, its most confident) comes first.
    let keys: Vec<(usize, u32)> = exam.key_frames.iter().map(|k| (k.class, k.frame.seq)).collect();
    assert_eq!(keys[0], (2, 2));
    let record = ExamRecord::new(&exam, &context(), Some("referrals/x.png".into()));
    let json = serde_json::to_value(&record).unwrap();
    assert_eq!((json["kind"].as_str(), json["verdict"].as_str()), (Some("exam"), Some("RD")));
    assert_eq!(json["frames"], 6);
    assert!((json["evidence"]["RD"].as_f64().unwrap() - 0.7333).abs() < 1e-3, "{json}");
    assert_eq!(json["key_frames"][0]["seq"], 2);
    assert_eq!(json["card_sha256"].as_str().map(str::len), Some(64));
}

#[test]
fn an_inconclusive_exam_says_refer_and_names_no_class() {
    let frames: Vec<_> =
        (0..6).map(|seq| frame(seq, if seq % 2 == 0 { [0.45, 0.1, 0.45] } else { [0.4, 0.2, 0.4] }, 3)).collect();
    let exam = exam(&frames);
    assert!(!exam.verdict.conclusive);
    let sheet = render_sheet(&exam, &context());
    assert!(count(&sheet, 0..SHEET_SIZE.1, rgb(INCONCLUSIVE)) > 20_000, "no 'inconclusive' banner");
    assert_eq!(count(&sheet, 0..SHEET_SIZE.1, rgb(VERDICT)), 0, "a verdict banner on an inconclusive exam");
    let record = ExamRecord::new(&exam, &context(), None);
    assert_eq!(serde_json::to_value(&record).unwrap()["verdict"], "inconclusive");
}

#[test]
fn the_sheet_is_written_whole_under_its_exam_time() {
    let dir = tempfile::tempdir().unwrap();
    let frames: Vec<_> = (0..4).map(|seq| frame(seq, [0.1, 0.8, 0.1], 0)).collect();
    let exam = exam(&frames);
    let path = write_sheet(&dir.path().join("referrals"), &exam, &context()).unwrap();
    assert_eq!(path.file_name().unwrap().to_str(), Some("exam-20261129-075021-1.png"));
    assert_eq!(sheet_name(&exam), "exam-20261129-075021-1.png");
    let png = image::open(&path).unwrap().to_rgb8();
    assert_eq!((png.width(), png.height()), SHEET_SIZE);
    assert_eq!(png.as_raw(), render_sheet(&exam, &context()).rgb(), "the file is not the rendered sheet");
    let names: Vec<String> = std::fs::read_dir(dir.path().join("referrals"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["exam-20261129-075021-1.png"], "a temporary file was left behind");
}

/// The documentation's pictures (`cargo xtask screenshots`) are what the code draws: a whole sheet
/// with a verdict banner and coloured heatmaps on its key frames, and an 800×480 screen with the
/// key frame beside the live frame.
#[test]
fn the_documented_sheet_and_exam_screen_are_current() {
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/img");
    let colourful = |p: &image::Rgb<u8>| {
        let [r, g, b] = p.0.map(i32::from);
        (r - g).abs().max((g - b).abs()).max((r - b).abs()) > 60
    };
    let sheet = image::open(docs.join("referral-sheet.png")).expect("docs/img/referral-sheet.png").to_rgb8();
    assert_eq!((sheet.width(), sheet.height()), SHEET_SIZE);
    let banner = sheet.pixels().filter(|p| p.0 == rgb(VERDICT) || p.0 == rgb(INCONCLUSIVE)).count();
    assert!(banner > 20_000, "no verdict banner on the documented sheet");
    let heat =
        (500..760).flat_map(|y| (40..280).map(move |x| (x, y))).filter(|&(x, y)| colourful(sheet.get_pixel(x, y)));
    // A grey B-scan has no colourful pixel; a heatmap focused on one lesion colours a few hundred
    // (649 for the stop-21 demo's RD key frame; a diffuse map colours thousands).
    assert!(heat.count() > 300, "the documented sheet's first key frame has no heatmap");
    let screen = image::open(docs.join("edge-800x480-exam.png")).expect("docs/img/edge-800x480-exam.png").to_rgb8();
    assert_eq!((screen.width(), screen.height()), (800, 480));
    let (x, y, side) = cdnet_edge::screen::Layout::Wide800x480.key_frame_panel().unwrap();
    let (x, y, side) = (x as u32, y as u32, side);
    let key = (y..y + side).flat_map(|yy| (x..x + side).map(move |xx| (xx, yy)));
    // The key frame is a grey B-scan with its heatmap: 192 colourful pixels in the 130-px panel for
    // the stop-21 demo's focused map; an empty panel has none.
    assert!(
        key.filter(|&(xx, yy)| colourful(screen.get_pixel(xx, yy))).count() > 60,
        "no key frame on the documented screen"
    );
}
