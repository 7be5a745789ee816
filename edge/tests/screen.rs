//! The screen, checked pixel by pixel: the heatmap colour at the attention peak, the zoom box where
//! the network put it, the class name and "refer" banner, the link dot; and the PNG display target.

use cdnet_edge::display::{Display, PngDisplay};
use cdnet_edge::exam::KeyFrameShot;
use cdnet_edge::screen::{
    AMBER, BOX, Canvas, ExamLine, GREEN, Layout, LinkStatus, RED, ScreenState, ShownFrame, TEXT, render,
};
use cdnet_shared::Rect;
use cdnet_shared::gate::Refusal;
use cdnet_shared::heatmap::HeatmapGeometry;
use cdnet_shared::postprocess::heat_colour;
use cdnet_shared::runtime::{FrameVerdict, Inference};
use embedded_graphics::pixelcolor::{Rgb888, RgbColor};
use std::sync::Arc;
use std::time::Duration;

const GRAY: u8 = 100;
const INPUT: usize = 96;
const OPACITY: f32 = 0.6;

fn rgb(c: Rgb888) -> [u8; 3] {
    [c.r(), c.g(), c.b()]
}

/// A flat gray 256² frame whose 4×4 attention peaks in the top-right cell.
fn state(class: usize, confidence: f32, uncertain: bool, link: LinkStatus) -> ScreenState {
    let mut probabilities = vec![(1.0 - confidence) / 4.0; 5];
    probabilities[class] = confidence;
    let mut attention = vec![0.0; 16];
    attention[3] = 1.0;
    let inference = Inference {
        probabilities,
        class,
        confidence,
        uncertain,
        attention: attention.clone(),
        attention_side: 4,
        heatmap: attention,
        heatmap_side: 4,
        zoom_box: Some(Rect { x0: 24, y0: 24, x1: 72, y1: 72 }),
        crop: Rect::full(256, 256),
        gate_distance: Some(1.0),
    };
    ScreenState {
        model: "test".into(),
        labels: ["Normal", "Intraocular tumour", "Retinal detachment", "Posterior staphyloma", "Vitreous haemorrhage"]
            .map(String::from)
            .to_vec(),
        short_labels: ["Normal", "IOT", "RD", "PSS", "VH"].map(String::from).to_vec(),
        input_size: INPUT,
        link,
        frame: Some(Arc::new(ShownFrame {
            seq: 1,
            width: 256,
            height: 256,
            pixels: vec![GRAY; 256 * 256],
            verdict: FrameVerdict::Classified(inference),
        })),
        exam: None,
        key_frame: None,
        fps: 3.0,
        latency_ms: 80.0,
        dropped: 0,
        errors: 0,
        heatmap_opacity: OPACITY,
    }
}

fn draw(state: &ScreenState, layout: Layout) -> Canvas {
    let (w, h) = layout.size();
    let mut canvas = Canvas::new(w, h);
    render(&mut canvas, state, layout);
    canvas
}

fn count(canvas: &Canvas, x: std::ops::Range<u32>, y: std::ops::Range<u32>, colour: [u8; 3]) -> usize {
    y.flat_map(|y| x.clone().map(move |x| (x, y))).filter(|&(x, y)| canvas.pixel(x, y) == colour).count()
}

fn close(a: [u8; 3], b: [u8; 3], tolerance: i32) -> bool {
    a.iter().zip(b).all(|(&a, b)| (a as i32 - b as i32).abs() <= tolerance)
}

/// Checks a layout: heatmap at the peak, plain frame away from it, box edges, class text.
fn check_layout(layout: Layout) {
    let canvas = draw(&state(2, 0.9, false, LinkStatus::Receiving), layout);
    let (px, py, side) = layout.image_panel();
    let (px, py, side) = (px as f32, py as f32, side as f32);
    // Receptive-field centre of attention cell (3, 0), where shared::heatmap places it (TF padding:
    // pixel S·i + S − 1, not the middle of the cell's square): full heat, blended at the configured
    // opacity over the gray.
    let at = |cx: f32, cy: f32| canvas.pixel((px + side * cx) as u32, (py + side * cy) as u32);
    let geometry = HeatmapGeometry::new(4, INPUT).unwrap();
    let peak = at(geometry.cell_centre(3) / INPUT as f32, geometry.cell_centre(0) / INPUT as f32);
    let hot = heat_colour(255);
    let expected = hot.map(|c| (GRAY as f32 * (1.0 - OPACITY) + c as f32 * OPACITY) as u8);
    assert!(close(peak, expected, 8), "{layout:?}: peak pixel {peak:?}, expected about {expected:?}");
    // Far from the peak (bottom-left cell) the frame shows through untouched.
    assert_eq!(at(0.5 / 4.0, 3.5 / 4.0), [GRAY; 3], "{layout:?}: heatmap leaks where the attention is zero");
    // The zoom box (input pixels 24..72 of 96) is drawn at 1/4 and 3/4 of the panel.
    let scale = side / INPUT as f32;
    let left = (px + 24.0 * scale) as u32;
    let right = (px + 72.0 * scale) as u32;
    let middle_y = (py + 48.0 * scale) as u32;
    let on_edge = |x: u32| (x.saturating_sub(2)..=x + 2).any(|x| canvas.pixel(x, middle_y) == rgb(BOX));
    assert!(on_edge(left), "{layout:?}: no box edge near x = {left}");
    assert!(on_edge(right), "{layout:?}: no box edge near x = {right}");
    assert_ne!(canvas.pixel((px + 48.0 * scale) as u32, middle_y), rgb(BOX), "{layout:?}: box is filled");
    // The class name, in confident colour, right of the panel.
    let text_x = (px + side) as u32 + 4..canvas.width();
    let title = count(&canvas, text_x.clone(), py as u32..py as u32 + 30, rgb(TEXT));
    assert!(title > 40, "{layout:?}: class name not drawn ({title} text pixels)");
    assert_eq!(
        count(&canvas, text_x, 0..canvas.height(), rgb(AMBER)),
        0,
        "{layout:?}: refer banner on a confident result"
    );
}

#[test]
fn wide_layout_shows_heatmap_box_and_class() {
    check_layout(Layout::Wide800x480);
}

#[test]
fn small_layout_shows_heatmap_box_and_class() {
    check_layout(Layout::Small320x240);
}

#[test]
fn uncertain_result_shows_refer_banner() {
    let layout = Layout::Wide800x480;
    let canvas = draw(&state(1, 0.35, true, LinkStatus::Receiving), layout);
    let amber = count(&canvas, 480..800, 0..200, rgb(AMBER));
    assert!(amber > 5000, "refer banner missing ({amber} amber pixels)");
}

#[test]
fn different_classes_draw_different_titles() {
    let layout = Layout::Wide800x480;
    let a = draw(&state(0, 0.9, false, LinkStatus::Receiving), layout);
    let b = draw(&state(4, 0.9, false, LinkStatus::Receiving), layout);
    let differing =
        (480..800).flat_map(|x| (10..40).map(move |y| (x, y))).filter(|&(x, y)| a.pixel(x, y) != b.pixel(x, y)).count();
    assert!(differing > 100, "class title does not depend on the class ({differing} pixels differ)");
}

#[test]
fn every_class_name_fits_on_the_screen() {
    for layout in [Layout::Wide800x480, Layout::Small320x240] {
        let (px, py, side) = layout.image_panel();
        for class in 0..5 {
            let canvas = draw(&state(class, 0.9, false, LinkStatus::Receiving), layout);
            let (title_x, title_y) = ((px + side as i32) as u32 + 4, py as u32..py as u32 + 30);
            let drawn = count(&canvas, title_x..canvas.width(), title_y.clone(), rgb(TEXT));
            let margin = count(&canvas, canvas.width() - 6..canvas.width(), title_y, rgb(TEXT));
            assert!(drawn > 40, "{layout:?}, class {class}: title not drawn");
            assert_eq!(margin, 0, "{layout:?}, class {class}: the class name runs into the screen edge");
        }
    }
}

#[test]
fn link_status_dot_follows_the_link() {
    let layout = Layout::Wide800x480;
    let dot = |link| {
        let canvas = draw(&state(0, 0.9, false, link), layout);
        count(&canvas, 480..520, 440..480, rgb(GREEN)) as i64 - count(&canvas, 480..520, 440..480, rgb(RED)) as i64
    };
    assert!(dot(LinkStatus::Receiving) > 20);
    assert!(dot(LinkStatus::Lost("port closed".into())) < -20);
}

#[test]
fn waiting_screen_has_no_diagnosis() {
    let layout = Layout::Wide800x480;
    let mut waiting = state(0, 0.9, false, LinkStatus::Waiting);
    waiting.frame = None;
    let canvas = draw(&waiting, layout);
    assert_eq!(count(&canvas, 0..800, 0..480, rgb(BOX)), 0, "a zoom box without a frame");
    assert!(count(&canvas, 10..470, 10..470, rgb(AMBER)) > 100, "no waiting message in the image panel");
}

#[test]
fn refused_frame_shows_no_eye_and_no_diagnosis() {
    for layout in [Layout::Wide800x480, Layout::Small320x240] {
        let mut refused = state(2, 0.99, false, LinkStatus::Receiving);
        if let Some(frame) = refused.frame.as_mut() {
            let refusal = Refusal::Unfamiliar { distance: 9.0, threshold: 4.3 };
            Arc::make_mut(frame).verdict = FrameVerdict::NoEye { refusal, crop: Rect::full(256, 256) };
        }
        let canvas = draw(&refused, layout);
        let (px, py, side) = layout.image_panel();
        let (px, py, side) = (px as u32, py as u32, side);
        // The frame is drawn plain (the operator needs it to find the eye): no heatmap, no box.
        let plain = count(&canvas, px..px + side, py..py + side, [GRAY; 3]);
        assert_eq!(plain as u32, side * side, "{layout:?}: heatmap or box drawn on a refused frame");
        // The amber "NO EYE IN VIEW" banner, and no class title or probability bars in text colour.
        let right = px + side + 4..canvas.width();
        let banner = count(&canvas, right.clone(), py..py + 30, rgb(AMBER));
        assert!(banner > 1000, "{layout:?}: no banner ({banner} amber pixels)");
        let status_top = canvas.height() - 60;
        let text = count(&canvas, right, 0..status_top, rgb(TEXT));
        assert_eq!(text, 0, "{layout:?}: {text} pixels of diagnosis text on a refused frame");
    }
}

#[test]
fn exam_line_shows_the_verdict_or_that_there_is_none() {
    let layout = Layout::Wide800x480;
    let mut with_exam = state(2, 0.9, false, LinkStatus::Receiving);
    let band = |canvas: &Canvas, colour| count(canvas, 480..800, 380..440, colour);
    let without = draw(&with_exam, layout);
    with_exam.exam = Some(ExamLine { verdict: Some((2, 0.82, true)), frames: 34, refused: 5, min_frames: 8 });
    let conclusive = draw(&with_exam, layout);
    assert!(band(&conclusive, rgb(TEXT)) > band(&without, rgb(TEXT)) + 100, "no exam verdict drawn");
    assert_eq!(band(&conclusive, rgb(AMBER)), 0);
    with_exam.exam = Some(ExamLine { verdict: Some((2, 0.4, false)), frames: 34, refused: 5, min_frames: 8 });
    let inconclusive = draw(&with_exam, layout);
    assert!(band(&inconclusive, rgb(AMBER)) > 100, "an inconclusive exam is not flagged");
    let short: Vec<String> = ["Normal", "IOT", "RD", "PSS", "VH"].map(String::from).to_vec();
    assert_eq!(with_exam.exam.as_ref().unwrap().text(&short), "EXAM inconclusive (34 frames)");
    let collecting = ExamLine { verdict: None, frames: 3, refused: 0, min_frames: 8 };
    assert_eq!(collecting.text(&short), "EXAM collecting 3/8 frames");
}

#[test]
fn the_key_frame_is_drawn_beside_the_live_frame_with_its_heatmap() {
    let layout = Layout::Wide800x480;
    let mut screen = state(2, 0.9, false, LinkStatus::Receiving);
    let without = draw(&screen, layout);
    let key = state(2, 0.97, false, LinkStatus::Receiving).frame.unwrap();
    screen.key_frame = Some(KeyFrameShot { class: 2, probability: 0.97, frame: key });
    let with = draw(&screen, layout);
    let (x, y, side) = layout.key_frame_panel().expect("the wide layout has a key-frame panel");
    let (x, y, side) = (x as f32, y as f32, side as f32);
    // Its heatmap peaks where the key frame's attention does (top-right cell), as on the live panel.
    let geometry = HeatmapGeometry::new(4, INPUT).unwrap();
    let at = |cx: f32, cy: f32| with.pixel((x + side * cx) as u32, (y + side * cy) as u32);
    let peak = at(geometry.cell_centre(3) / INPUT as f32, geometry.cell_centre(0) / INPUT as f32);
    let expected = heat_colour(255).map(|c| (GRAY as f32 * (1.0 - OPACITY) + c as f32 * OPACITY) as u8);
    assert!(close(peak, expected, 8), "key-frame peak pixel {peak:?}, expected about {expected:?}");
    assert_eq!(at(0.5 / 4.0, 3.5 / 4.0), [GRAY; 3], "the key frame is not drawn plain away from its peak");
    // Its caption ("KEY FRAME", "RD 97 %", the frame number) right of it.
    let caption = (x + side) as u32 + 4..800;
    let (y0, y1) = (y as u32, (y + 60.0) as u32);
    let text = |canvas: &Canvas| count(canvas, caption.clone(), y0..y1, rgb(TEXT));
    assert!(text(&with) > text(&without) + 80, "no key-frame caption drawn");
    // The live frame is untouched by it.
    let (px, py, live) = layout.image_panel();
    for probe in [(px + 5, py + 5), (px + live as i32 / 2, py + live as i32 / 2)] {
        assert_eq!(with.pixel(probe.0 as u32, probe.1 as u32), without.pixel(probe.0 as u32, probe.1 as u32));
    }
    // The 320×240 layout has no room: nothing changes there.
    assert_eq!(Layout::Small320x240.key_frame_panel(), None);
    let mut small = state(2, 0.9, false, LinkStatus::Receiving);
    let plain = draw(&small, Layout::Small320x240);
    small.key_frame = screen.key_frame.clone();
    assert_eq!(draw(&small, Layout::Small320x240).rgb(), plain.rgb());
}

#[test]
fn png_display_writes_the_last_screen() {
    let dir = tempfile::tempdir().unwrap();
    let layout = Layout::Wide800x480;
    let mut display = PngDisplay::new(dir.path().to_path_buf(), layout.size(), Duration::from_secs(3600)).unwrap();
    let first = draw(&state(0, 0.9, false, LinkStatus::Receiving), layout);
    display.show(&first).unwrap();
    // Throttled: a second show within the interval is skipped, but the run's last screen is not.
    let last = draw(&state(3, 0.9, false, LinkStatus::Receiving), layout);
    display.show(&last).unwrap();
    let read = |path: &std::path::Path| image::open(path).unwrap().to_rgb8();
    assert_eq!(read(&dir.path().join("latest.png")).as_raw(), first.rgb());
    display.finish(&last).unwrap();
    let png = read(&dir.path().join("latest.png"));
    assert_eq!((png.width(), png.height()), (800, 480));
    assert_eq!(png.as_raw(), last.rgb());
}

/// The display thread redraws only a screen that would look different: a clone draws alike; a new
/// frame (even with the same pixels), another link status, counter, exam or key frame does not.
#[test]
fn only_a_changed_screen_counts_as_changed() {
    let shown = state(2, 0.9, false, LinkStatus::Receiving);
    assert!(shown.draws_like(&shown.clone()));
    let same_pixels_new_frame = ScreenState { frame: shown.frame.as_deref().cloned().map(Arc::new), ..shown.clone() };
    assert!(!shown.draws_like(&same_pixels_new_frame), "a new frame must be drawn");
    assert!(!shown.draws_like(&ScreenState { link: LinkStatus::Waiting, ..shown.clone() }));
    assert!(!shown.draws_like(&ScreenState { fps: 4.0, ..shown.clone() }));
    assert!(!shown.draws_like(&ScreenState { errors: 1, ..shown.clone() }));
    assert!(!shown.draws_like(&ScreenState { frame: None, ..shown.clone() }));
    let exam = ExamLine { verdict: None, frames: 3, refused: 0, min_frames: 8 };
    assert!(!shown.draws_like(&ScreenState { exam: Some(exam), ..shown.clone() }));
    let key = KeyFrameShot { class: 2, probability: 0.9, frame: shown.frame.clone().unwrap() };
    let with_key = ScreenState { key_frame: Some(key.clone()), ..shown.clone() };
    assert!(!shown.draws_like(&with_key));
    assert!(with_key.draws_like(&with_key.clone()));
    let other_key = KeyFrameShot { probability: 0.95, ..key };
    assert!(!with_key.draws_like(&ScreenState { key_frame: Some(other_key), ..shown.clone() }));
}
