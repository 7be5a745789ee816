//! The bedside screen: what it shows and how it is drawn (embedded-graphics).
//!
//! One renderer serves every display: it draws into a [`Canvas`] (an embedded-graphics
//! `DrawTarget` over an RGB buffer), which a [`crate::display::Display`] then shows on a Linux
//! framebuffer, writes as a PNG, or drops. Layouts exist for an 800×480 panel (7" HDMI/DSI) and a
//! 320×240 SPI TFT.

use crate::exam::KeyFrameShot;
use cdnet_shared::bundle::ModelCard;
use cdnet_shared::heatmap::heatmap_picture;
use cdnet_shared::postprocess::heat_colour;
use cdnet_shared::resize::resize_bilinear;
use cdnet_shared::runtime::FrameVerdict;
use embedded_graphics::mono_font::MonoFont;
use embedded_graphics::mono_font::MonoTextStyle;
use embedded_graphics::mono_font::ascii::{FONT_6X10, FONT_10X20};
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{Circle, PrimitiveStyle, Rectangle};
use embedded_graphics::text::{Baseline, Text};
use std::convert::Infallible;
use std::sync::Arc;

/// An RGB frame buffer that embedded-graphics draws into.
#[derive(Debug, Clone, PartialEq)]
pub struct Canvas {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
}

impl Canvas {
    /// A black canvas.
    pub fn new(width: u32, height: u32) -> Self {
        Canvas { width, height, rgb: vec![0; (width * height * 3) as usize] }
    }

    /// Width.
    pub fn width(&self) -> u32 {
        self.width
    }

    /// Height.
    pub fn height(&self) -> u32 {
        self.height
    }

    /// Row-major RGB bytes.
    pub fn rgb(&self) -> &[u8] {
        &self.rgb
    }

    /// The colour at `(x, y)`.
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        let o = ((y * self.width + x) * 3) as usize;
        [self.rgb[o], self.rgb[o + 1], self.rgb[o + 2]]
    }

    fn put(&mut self, x: i32, y: i32, c: [u8; 3]) {
        if x >= 0 && y >= 0 && (x as u32) < self.width && (y as u32) < self.height {
            let o = ((y as u32 * self.width + x as u32) * 3) as usize;
            self.rgb[o..o + 3].copy_from_slice(&c);
        }
    }
}

impl OriginDimensions for Canvas {
    fn size(&self) -> Size {
        Size::new(self.width, self.height)
    }
}

impl DrawTarget for Canvas {
    type Color = Rgb888;
    type Error = Infallible;

    fn draw_iter<I>(&mut self, pixels: I) -> Result<(), Infallible>
    where
        I: IntoIterator<Item = Pixel<Rgb888>>,
    {
        for Pixel(p, c) in pixels {
            self.put(p.x, p.y, [c.r(), c.g(), c.b()]);
        }
        Ok(())
    }
}

/// Screen geometry and fonts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// 800 × 480 (7" HDMI/DSI panel).
    Wide800x480,
    /// 320 × 240 (SPI TFT).
    Small320x240,
}

impl Layout {
    /// Canvas size.
    pub fn size(self) -> (u32, u32) {
        match self {
            Layout::Wide800x480 => (800, 480),
            Layout::Small320x240 => (320, 240),
        }
    }

    /// Parses `800x480` or `320x240`.
    pub fn parse(text: &str) -> Option<Layout> {
        match text {
            "800x480" => Some(Layout::Wide800x480),
            "320x240" => Some(Layout::Small320x240),
            _ => None,
        }
    }

    /// Where the B-scan goes: a square `(x, y, side)`.
    pub fn image_panel(self) -> (i32, i32, u32) {
        match self {
            Layout::Wide800x480 => (10, 10, 460),
            Layout::Small320x240 => (4, 22, 196),
        }
    }

    /// Where the exam's key frame goes, beside the live frame: under the class bars, above the exam
    /// line. The 320×240 layout has no room for it; its exam line still gives the verdict.
    pub fn key_frame_panel(self) -> Option<(i32, i32, u32)> {
        match self {
            Layout::Wide800x480 => Some((490, 270, 130)),
            Layout::Small320x240 => None,
        }
    }
}

/// State of the probe link as the screen reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkStatus {
    /// No probe on the port (or it has gone quiet).
    Waiting,
    /// Frames are arriving.
    Receiving,
    /// The port failed; retrying.
    Lost(String),
}

/// The frame on screen with what the network said about it.
#[derive(Debug, Clone)]
pub struct ShownFrame {
    /// Frame sequence number.
    pub seq: u32,
    /// Frame width.
    pub width: usize,
    /// Frame height.
    pub height: usize,
    /// The frame's 8-bit pixels.
    pub pixels: Vec<u8>,
    /// The diagnosis, or the frame gate's refusal.
    pub verdict: FrameVerdict,
}

/// The exam so far, as the screen shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExamLine {
    /// Verdict class and confidence once there are enough frames; `conclusive` false shows
    /// "inconclusive".
    pub verdict: Option<(usize, f32, bool)>,
    /// Gated frames in the exam.
    pub frames: usize,
    /// Frames the gate refused in the exam.
    pub refused: usize,
    /// Gated frames needed for a verdict.
    pub min_frames: usize,
}

impl ExamLine {
    /// The exam's line of text, e.g. `EXAM RD 82 % (34 frames)`.
    pub fn text(&self, short_labels: &[String]) -> String {
        match self.verdict {
            Some((class, confidence, true)) => format!(
                "EXAM {} {:.0} % ({} frames)",
                short_labels.get(class).map_or("?", String::as_str),
                100.0 * confidence,
                self.frames
            ),
            Some(_) => format!("EXAM inconclusive ({} frames)", self.frames),
            None => format!("EXAM collecting {}/{} frames", self.frames, self.min_frames),
        }
    }
}

/// Everything the screen shows.
#[derive(Debug, Clone)]
pub struct ScreenState {
    /// Model bundle name.
    pub model: String,
    /// Display names of the classes.
    pub labels: Vec<String>,
    /// Short class names for the per-class bars (`IOT`, `RD`, …).
    pub short_labels: Vec<String>,
    /// Network input side (zoom box coordinates).
    pub input_size: usize,
    /// Probe link.
    pub link: LinkStatus,
    /// Latest diagnosed frame.
    pub frame: Option<Arc<ShownFrame>>,
    /// The exam of the current probe session.
    pub exam: Option<ExamLine>,
    /// The exam's key frame (the most confident frame of a conclusive verdict's class).
    pub key_frame: Option<KeyFrameShot>,
    /// Results per second over the last few seconds.
    pub fps: f32,
    /// Latency of the latest result, last byte in → result out, milliseconds.
    pub latency_ms: f32,
    /// Frames skipped because newer ones arrived while busy.
    pub dropped: u64,
    /// Rejected packets and frames.
    pub errors: u64,
    /// Heatmap opacity at the attention peak (0…1).
    pub heatmap_opacity: f32,
}

impl ScreenState {
    /// Whether `other` draws the same picture: frames by identity (every received frame is a new
    /// `Arc`), everything else by value. The display thread does not redraw an unchanged screen.
    pub fn draws_like(&self, other: &ScreenState) -> bool {
        let same_frame = |a: &Option<Arc<ShownFrame>>, b: &Option<Arc<ShownFrame>>| match (a, b) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (a, b) => a.is_none() && b.is_none(),
        };
        let same_key_frame = match (&self.key_frame, &other.key_frame) {
            (Some(a), Some(b)) => {
                a.class == b.class && a.probability == b.probability && Arc::ptr_eq(&a.frame, &b.frame)
            }
            (a, b) => a.is_none() && b.is_none(),
        };
        same_frame(&self.frame, &other.frame)
            && same_key_frame
            && self.link == other.link
            && self.exam == other.exam
            && (self.fps, self.latency_ms, self.dropped, self.errors)
                == (other.fps, other.latency_ms, other.dropped, other.errors)
            && (self.model == other.model && self.labels == other.labels && self.short_labels == other.short_labels)
            && (self.input_size, self.heatmap_opacity) == (other.input_size, other.heatmap_opacity)
    }

    /// The screen for a model card before any frame: the card's name, labels and input size, the
    /// link still waiting, every counter zero.
    pub fn for_card(card: &ModelCard, heatmap_opacity: f32) -> Self {
        ScreenState {
            model: card.name.clone(),
            labels: card.labels.display_names(),
            short_labels: card.labels.names().to_vec(),
            input_size: card.preprocess.input_size,
            link: LinkStatus::Waiting,
            frame: None,
            exam: None,
            key_frame: None,
            fps: 0.0,
            latency_ms: 0.0,
            dropped: 0,
            errors: 0,
            heatmap_opacity: heatmap_opacity.clamp(0.0, 1.0),
        }
    }
}

const BACKGROUND: [u8; 3] = [18, 20, 26];
/// Text of a confident diagnosis.
pub const TEXT: Rgb888 = Rgb888::new(235, 235, 235);
const DIM: Rgb888 = Rgb888::new(150, 155, 165);
/// Uncertain diagnosis, "refer" banner, waiting link.
pub const AMBER: Rgb888 = Rgb888::new(255, 176, 0);
/// Link up.
pub const GREEN: Rgb888 = Rgb888::new(60, 200, 90);
/// Link lost.
pub const RED: Rgb888 = Rgb888::new(230, 60, 50);
/// The zoom-box colour.
pub const BOX: Rgb888 = Rgb888::new(255, 230, 40);
const BAR: Rgb888 = Rgb888::new(70, 140, 230);

pub(crate) fn text(canvas: &mut Canvas, s: &str, x: i32, y: i32, style: MonoTextStyle<'_, Rgb888>) {
    // Drawing into a canvas cannot fail (Infallible).
    let _ = Text::with_baseline(s, Point::new(x, y), style, Baseline::Top).draw(canvas);
}

/// Whether `s` in `font` is at most `width` pixels wide.
fn fits(s: &str, font: &MonoFont<'_>, width: i32) -> bool {
    let glyphs = s.chars().count() as i32;
    let advance = (font.character_size.width + font.character_spacing) as i32;
    glyphs * advance <= width
}

pub(crate) fn fill(canvas: &mut Canvas, x: i32, y: i32, w: u32, h: u32, c: Rgb888) {
    let _ = Rectangle::new(Point::new(x, y), Size::new(w, h)).into_styled(PrimitiveStyle::with_fill(c)).draw(canvas);
}

/// Draws the B-scan (the device-crop area the network saw) into the square `panel` and, for a
/// classified frame, the heatmap (at `opacity` where it peaks) and the zoom box; a refused frame is
/// drawn plain, so the operator can find the eye. `input_size` is the network's input side.
pub(crate) fn draw_scan(
    canvas: &mut Canvas,
    frame: &ShownFrame,
    panel: (i32, i32, u32),
    input_size: usize,
    opacity: f32,
) {
    let (px, py, side) = panel;
    let side = side as usize;
    let crop = match &frame.verdict {
        FrameVerdict::Classified(inference) => inference.crop,
        FrameVerdict::NoEye { crop, .. } => *crop,
    };
    let mut gray = vec![0.0f32; side * side];
    // Shapes come from a frame the pipeline accepted; a failure leaves the panel black.
    let _ = resize_bilinear(&frame.pixels, frame.width, frame.height, crop, &mut gray, side, side);
    let FrameVerdict::Classified(inference) = &frame.verdict else {
        for (i, g) in gray.iter().enumerate() {
            let g = g.clamp(0.0, 255.0) as u8;
            canvas.put(px + (i % side) as i32, py + (i / side) as i32, [g, g, g]);
        }
        return;
    };
    let heat = heatmap_picture(&inference.heatmap, inference.heatmap_side, input_size, side, side);
    for y in 0..side {
        for x in 0..side {
            let g = gray[y * side + x].clamp(0.0, 255.0);
            let h = heat[y * side + x];
            let colour = heat_colour(h);
            // Opacity follows the attention, so quiet regions stay readable.
            let alpha = opacity * h as f32 / 255.0;
            let blend = |c: u8| (g * (1.0 - alpha) + c as f32 * alpha) as u8;
            canvas.put(px + x as i32, py + y as i32, [blend(colour[0]), blend(colour[1]), blend(colour[2])]);
        }
    }
    if let Some(b) = inference.zoom_box {
        let scale = side as f32 / input_size as f32;
        let (x0, y0) = (px + (b.x0 as f32 * scale) as i32, py + (b.y0 as f32 * scale) as i32);
        let (w, h) = ((b.width() as f32 * scale) as u32, (b.height() as f32 * scale) as u32);
        let _ = Rectangle::new(Point::new(x0, y0), Size::new(w.max(1), h.max(1)))
            .into_styled(PrimitiveStyle::with_stroke(BOX, 2))
            .draw(canvas);
    }
}

/// Renders the whole screen.
pub fn render(canvas: &mut Canvas, state: &ScreenState, layout: Layout) {
    for chunk in canvas.rgb.chunks_exact_mut(3) {
        chunk.copy_from_slice(&BACKGROUND);
    }
    let (px, py, side) = layout.image_panel();
    let (big_font, mid_font) = match layout {
        Layout::Wide800x480 => (&profont::PROFONT_24_POINT, &FONT_10X20),
        Layout::Small320x240 => (&FONT_10X20, &FONT_6X10),
    };
    fill(canvas, px - 1, py - 1, side + 2, side + 2, Rgb888::new(45, 48, 58));
    fill(canvas, px, py, side, side, Rgb888::BLACK);
    let x = px
        + side as i32
        + match layout {
            Layout::Wide800x480 => 20,
            Layout::Small320x240 => 6,
        };
    let right = canvas.width as i32 - 8;
    match &state.frame {
        None => {
            let msg = match &state.link {
                LinkStatus::Lost(_) => "probe disconnected",
                _ => "waiting for probe...",
            };
            text(canvas, msg, px + 10, py + side as i32 / 2 - 10, MonoTextStyle::new(mid_font, AMBER));
        }
        Some(frame) => {
            draw_scan(canvas, frame, layout.image_panel(), state.input_size, state.heatmap_opacity);
            let inference = match &frame.verdict {
                FrameVerdict::Classified(inference) => inference,
                FrameVerdict::NoEye { refusal, .. } => {
                    // No class, no confidence, no bars: nothing that could be read as a diagnosis.
                    let h = mid_font.character_size.height + 8;
                    fill(canvas, x, py, (right - x) as u32, h, AMBER);
                    text(canvas, "NO EYE IN VIEW", x + 4, py + 4, MonoTextStyle::new(mid_font, Rgb888::BLACK));
                    let why = MonoTextStyle::new(&FONT_6X10, AMBER);
                    text(canvas, refusal.headline(), x, py + h as i32 + 8, why);
                    text(canvas, "place the probe on the eye", x, py + h as i32 + 22, why);
                    draw_status(canvas, state, layout, x);
                    return;
                }
            };
            let class = state.labels.get(inference.class).map_or("?", String::as_str);
            let colour = if inference.uncertain { AMBER } else { TEXT };
            let mut y = py;
            // A long class name ("Vitreous haemorrhage") steps down a font size rather than run off
            // the screen; where none fits (the 320-px layout), the short label is shown instead.
            let short = state.short_labels.get(inference.class).map_or(class, String::as_str);
            let (title, title_font) = [big_font, mid_font]
                .into_iter()
                .find(|f| fits(class, f, right - x))
                .map_or((short, big_font), |f| (class, f));
            text(canvas, title, x, y, MonoTextStyle::new(title_font, colour));
            y += big_font.character_size.height as i32 + 4;
            text(canvas, &format!("{:.0} %", 100.0 * inference.confidence), x, y, MonoTextStyle::new(mid_font, colour));
            y += mid_font.character_size.height as i32 + 6;
            if inference.uncertain {
                let h = mid_font.character_size.height + 8;
                fill(canvas, x, y, (right - x) as u32, h, AMBER);
                text(canvas, "UNCERTAIN - REFER", x + 4, y + 4, MonoTextStyle::new(mid_font, Rgb888::BLACK));
                y += h as i32 + 8;
            }
            // One bar per class.
            let row = match layout {
                Layout::Wide800x480 => 30,
                Layout::Small320x240 => 16,
            };
            let label_font = match layout {
                Layout::Wide800x480 => &FONT_10X20,
                Layout::Small320x240 => &FONT_6X10,
            };
            let label_width = label_font.character_size.width as i32 * 7;
            for (i, p) in inference.probabilities.iter().enumerate() {
                let name: String = state.short_labels.get(i).map_or("?".into(), |l| l.chars().take(6).collect());
                let style = MonoTextStyle::new(label_font, if i == inference.class { TEXT } else { DIM });
                text(canvas, &name, x, y, style);
                let bar_x = x + label_width;
                let bar_w = (right - bar_x - label_font.character_size.width as i32 * 5).max(10);
                fill(canvas, bar_x, y + 2, bar_w as u32, (row - 8) as u32, Rgb888::new(40, 44, 54));
                fill(canvas, bar_x, y + 2, ((bar_w as f32 * p.clamp(0.0, 1.0)) as u32).max(1), (row - 8) as u32, BAR);
                text(canvas, &format!("{:>3.0}%", 100.0 * p), bar_x + bar_w + 4, y, style);
                y += row;
            }
        }
    }
    draw_status(canvas, state, layout, x);
}

/// The exam's key frame with its heatmap, and what it is: class, probability, frame number.
fn draw_key_frame(canvas: &mut Canvas, state: &ScreenState, layout: Layout) {
    let (Some(shot), Some(panel)) = (&state.key_frame, layout.key_frame_panel()) else { return };
    let (x, y, side) = panel;
    fill(canvas, x - 1, y - 1, side + 2, side + 2, Rgb888::new(45, 48, 58));
    draw_scan(canvas, &shot.frame, panel, state.input_size, state.heatmap_opacity);
    let caption_x = x + side as i32 + 10;
    let label = MonoTextStyle::new(&FONT_6X10, DIM);
    let value = MonoTextStyle::new(&FONT_10X20, TEXT);
    text(canvas, "KEY FRAME", caption_x, y, label);
    let class = state.short_labels.get(shot.class).map_or("?", String::as_str);
    text(canvas, &format!("{class} {:.0} %", 100.0 * shot.probability), caption_x, y + 14, value);
    text(canvas, &format!("frame {}", shot.frame.seq), caption_x, y + 38, label);
}

/// The status lines: link, rate, latency, counters, model; and the exam's key frame.
fn draw_status(canvas: &mut Canvas, state: &ScreenState, layout: Layout, x: i32) {
    draw_key_frame(canvas, state, layout);
    let (px, _, _) = layout.image_panel();
    let small = MonoTextStyle::new(&FONT_6X10, DIM);
    let status_y = canvas.height as i32 - 16;
    let (dot, status) = match &state.link {
        LinkStatus::Receiving => (GREEN, "receiving".to_string()),
        LinkStatus::Waiting => (AMBER, "waiting for probe".to_string()),
        LinkStatus::Lost(why) => (RED, format!("link lost: {why}")),
    };
    let _ = Circle::new(Point::new(x, status_y), 9).into_styled(PrimitiveStyle::with_fill(dot)).draw(canvas);
    text(canvas, &status, x + 14, status_y, MonoTextStyle::new(&FONT_6X10, TEXT));
    let stats =
        format!("{:.1} fps  {:.0} ms  drop {}  err {}", state.fps, state.latency_ms, state.dropped, state.errors);
    let stats_y = status_y - 14;
    text(canvas, &stats, x, stats_y, small);
    if let Some(exam) = &state.exam {
        let colour = if exam.verdict.is_some_and(|(_, _, conclusive)| conclusive) { TEXT } else { AMBER };
        // Above the stats line, and above the model line where the wide layout puts it there.
        let (font, above) = match layout {
            Layout::Wide800x480 => (&FONT_10X20, 14 + 4),
            Layout::Small320x240 => (&FONT_6X10, 4),
        };
        let exam_y = stats_y - above - font.character_size.height as i32;
        text(canvas, &exam.text(&state.short_labels), x, exam_y, MonoTextStyle::new(font, colour));
    }
    let model_y = match layout {
        Layout::Wide800x480 => stats_y - 14,
        Layout::Small320x240 => 4,
    };
    let model_x = match layout {
        Layout::Wide800x480 => x,
        Layout::Small320x240 => px,
    };
    text(canvas, &format!("model {}", state.model), model_x, model_y, small);
}
