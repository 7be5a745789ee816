//! The frame gate of the shipped demo bundle, on the device's path (`Pipeline::classify_image`):
//! phantom B-scans it was not calibrated on and real ocular frames pass; blank, noise and tiny
//! frames are all refused; drawings made here and photographs (scikit-image's sample images, from
//! PyPI) are refused at least 95 % of the time. Every figure is printed, for docs/results.md.

use cdnet_edge::screen::Canvas;
use cdnet_integration::{data_dir, python, shipped_bundle};
use cdnet_shared::GrayImage;
use cdnet_shared::bundle::Bundle;
use cdnet_shared::imageio::{file_kind, read_gray_frames};
use cdnet_shared::runtime::{FrameVerdict, Inference, Pipeline, Threads};
use cdnet_testkit::uniform;
use embedded_graphics::mono_font::MonoTextStyle;
use embedded_graphics::mono_font::ascii::FONT_10X20;
use embedded_graphics::pixelcolor::Rgb888;
use embedded_graphics::prelude::*;
use embedded_graphics::primitives::{Circle, Ellipse, Line, PrimitiveStyle, Rectangle};
use embedded_graphics::text::Text;
use std::path::Path;

struct Frame {
    name: String,
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

fn pipeline() -> Pipeline {
    Pipeline::load(Bundle::open(&shipped_bundle("demo-phantom")).unwrap(), Threads(1)).unwrap()
}

/// Names of the frames the gate let through.
fn passed(pipeline: &Pipeline, frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .filter(|f| {
            let image = GrayImage::new(f.width, f.height, &f.pixels).unwrap();
            match pipeline.classify_image(&image).unwrap() {
                FrameVerdict::Classified(_) => true,
                FrameVerdict::NoEye { refusal, .. } => {
                    eprintln!("  {}: {refusal}", f.name);
                    false
                }
            }
        })
        .map(|f| f.name.clone())
        .collect()
}

/// Phantom B-scans from seeds the gate never saw (its fit and threshold used the demo's data set,
/// seed 1), at the three difficulties.
fn phantom_frames() -> Vec<Frame> {
    use cdnet_shared::phantom::{Difficulty, PhantomClass, PhantomConfig, image_seed, render};
    let mut frames = Vec::new();
    for (d, difficulty) in [Difficulty::Easy, Difficulty::Medium, Difficulty::Hard].into_iter().enumerate() {
        let config = PhantomConfig { size: 256, difficulty: difficulty.value() };
        for class in PhantomClass::ALL {
            for index in 0..20 {
                let image = render(class, image_seed(77 + d as u64, 0, class, index), &config);
                let name = format!("phantom {difficulty:?} {class:?} {index}");
                frames.push(Frame { name, width: image.size, height: image.size, pixels: image.pixels });
            }
        }
    }
    frames
}

/// Frames with nothing in them: blank at several levels, noise of several kinds, tiny frames.
fn empty_frames() -> Vec<Frame> {
    let n = 256;
    let mut frames: Vec<Frame> = [0u8, 12, 40, 128, 200, 255]
        .into_iter()
        .map(|level| Frame { name: format!("blank {level}"), width: n, height: n, pixels: vec![level; n * n] })
        .collect();
    for (seed, (lo, hi)) in [(0.0, 256.0), (0.0, 64.0), (100.0, 160.0), (0.0, 256.0)].into_iter().enumerate() {
        let pixels = uniform(n * n, seed as u64 + 1, lo, hi).into_iter().map(|v| v as u8).collect();
        frames.push(Frame { name: format!("uniform noise {lo}..{hi}"), width: n, height: n, pixels });
    }
    let salt: Vec<u8> = uniform(n * n, 9, 0.0, 1.0).into_iter().map(|v| if v < 0.5 { 0 } else { 255 }).collect();
    frames.push(Frame { name: "salt and pepper".into(), width: n, height: n, pixels: salt });
    // 34 px passes the size check but leaves fewer than 32 px after the device crop.
    for side in [1, 8, 31, 34] {
        let pixels = uniform(side * side, side as u64, 0.0, 256.0).into_iter().map(|v| v as u8).collect();
        frames.push(Frame { name: format!("{side}×{side}"), width: side, height: side, pixels });
    }
    frames
}

/// Drawings made here with embedded-graphics: shapes, lines and text on plain backgrounds.
fn drawings() -> Vec<Frame> {
    (0..24u64)
        .map(|i| {
            let (w, h) = (320, 240);
            let mut canvas = Canvas::new(w, h);
            let r = uniform(64, 1000 + i, 0.0, 1.0);
            let colour =
                |k: usize| Rgb888::new((r[k] * 255.0) as u8, (r[k + 1] * 255.0) as u8, (r[k + 2] * 255.0) as u8);
            let _ = Rectangle::new(Point::zero(), Size::new(w, h))
                .into_styled(PrimitiveStyle::with_fill(colour(0)))
                .draw(&mut canvas);
            let at = |k: usize| Point::new((r[k] * w as f32) as i32, (r[k + 1] * h as f32) as i32);
            for s in 0..6 {
                let k = 3 + s * 9;
                let style = if r[k + 8] < 0.5 {
                    PrimitiveStyle::with_fill(colour(k))
                } else {
                    PrimitiveStyle::with_stroke(colour(k), 1 + (r[k + 7] * 6.0) as u32)
                };
                let size = 20 + (r[k + 6] * 120.0) as u32;
                let _ = match s % 4 {
                    0 => Circle::new(at(k + 3), size).into_styled(style).draw(&mut canvas),
                    1 => Rectangle::new(at(k + 3), Size::new(size, size / 2 + 10)).into_styled(style).draw(&mut canvas),
                    // (Not triangles: embedded-graphics 0.8's triangle overflows an i32 in debug builds
                    // on some vertex sets.)
                    2 => Ellipse::new(at(k + 3), Size::new(size, size / 3 + 8)).into_styled(style).draw(&mut canvas),
                    _ => Line::new(at(k + 3), at(k + 5))
                        .into_styled(PrimitiveStyle::with_stroke(colour(k), 3))
                        .draw(&mut canvas),
                };
            }
            let _ = Text::new("CDNet test drawing", Point::new(10, 30), MonoTextStyle::new(&FONT_10X20, colour(60)))
                .draw(&mut canvas);
            let pixels = canvas
                .rgb()
                .chunks_exact(3)
                .map(|c| ((c[0] as u32 * 299 + c[1] as u32 * 587 + c[2] as u32 * 114) / 1000) as u8)
                .collect();
            Frame { name: format!("drawing {i}"), width: w as usize, height: h as usize, pixels }
        })
        .collect()
}

fn read_folder(dir: &Path) -> Vec<Frame> {
    let mut paths: Vec<_> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| file_kind(p).is_some()).collect();
    paths.sort();
    paths
        .iter()
        .filter_map(|p| {
            // A sample file the image decoder cannot read is not a frame; say which.
            let frame = read_gray_frames(p).map_err(|e| eprintln!("  not read: {e}")).ok()?.into_iter().next()?;
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            Some(Frame { name, width: frame.width as usize, height: frame.height as usize, pixels: frame.pixels })
        })
        .collect()
}

/// scikit-image's sample photographs (they ship inside its PyPI wheel; nothing is downloaded),
/// copied out by the venv's Python.
fn photographs(out: &Path) -> Option<Vec<Frame>> {
    let python = python()?;
    let script = "import os, shutil, sys, skimage\n\
                  d = os.path.join(os.path.dirname(skimage.__file__), 'data')\n\
                  for f in sorted(os.listdir(d)):\n\
                  \x20   if f.rsplit('.', 1)[-1].lower() in ('png', 'jpg', 'jpeg', 'bmp'):\n\
                  \x20       shutil.copy(os.path.join(d, f), sys.argv[1])\n";
    let status = std::process::Command::new(python).arg("-c").arg(script).arg(out).status().unwrap();
    if !status.success() {
        let reason = "scikit-image is not installed in CDNET_PYTHON (tools/requirements-ci.txt has it)";
        cdnet_testkit::skip("frame gate on photographs", reason, cdnet_testkit::in_ci());
        return None;
    }
    Some(read_folder(out))
}

#[test]
fn frames_with_an_eye_pass() {
    let pipeline = pipeline();
    let phantom = phantom_frames();
    let through = passed(&pipeline, &phantom).len();
    eprintln!("frame gate: {through}/{} unseen phantom frames pass", phantom.len());
    assert!(through as f64 >= 0.99 * phantom.len() as f64, "{through}/{} phantom frames passed", phantom.len());
    if let Some(dir) = data_dir("erdes-sample") {
        let real = read_folder(&dir);
        assert!(!real.is_empty(), "no frames in {}", dir.display());
        let through = passed(&pipeline, &real).len();
        eprintln!("frame gate: {through}/{} ERDES ocular frames pass", real.len());
        assert!(through as f64 >= 0.99 * real.len() as f64, "{through}/{} ERDES frames passed", real.len());
    }
}

#[test]
fn frames_without_an_eye_are_refused() {
    let pipeline = pipeline();
    let empty = empty_frames();
    let through = passed(&pipeline, &empty);
    eprintln!("frame gate: {}/{} blank, noise and tiny frames refused", empty.len() - through.len(), empty.len());
    assert!(through.is_empty(), "passed the gate: {through:?}");

    let scratch = tempfile::tempdir().unwrap();
    let mut other = drawings();
    let drawn = other.len();
    let drawings_through = passed(&pipeline, &other).len();
    eprintln!("frame gate: {}/{drawn} drawings refused", drawn - drawings_through);
    if let Some(photos) = photographs(scratch.path()) {
        assert!(photos.len() >= 20, "only {} sample photographs found", photos.len());
        let photos_through = passed(&pipeline, &photos);
        eprintln!(
            "frame gate: {}/{} photographs refused; passed: {photos_through:?}",
            photos.len() - photos_through.len(),
            photos.len()
        );
        other.extend(photos);
    }
    let through = passed(&pipeline, &other);
    let refused = other.len() - through.len();
    eprintln!("frame gate: {refused}/{} non-ultrasound images refused", other.len());
    assert!(refused as f64 >= 0.95 * other.len() as f64, "only {refused}/{} refused; passed: {through:?}", other.len());
}

#[test]
fn a_refused_frame_is_not_classified_and_a_passing_one_is_classified_as_before() {
    let pipeline = pipeline();
    let tiny = GrayImage::new(1, 1, &[7]).unwrap();
    match pipeline.classify_image(&tiny).unwrap() {
        FrameVerdict::NoEye { refusal, .. } => assert_eq!(refusal.code(), 0, "{refusal}"),
        other => panic!("a 1×1 frame was classified: {other:?}"),
    }
    let frame = &phantom_frames()[25];
    let image = GrayImage::new(frame.width, frame.height, &frame.pixels).unwrap();
    let FrameVerdict::Classified(gated) = pipeline.classify_image(&image).unwrap() else {
        panic!("{} was refused", frame.name)
    };
    let ungated = pipeline.infer_image(&image).unwrap();
    assert!(gated.gate_distance.is_some_and(|d| d.is_finite()) && ungated.gate_distance.is_none());
    assert_eq!(Inference { gate_distance: None, ..gated }, ungated, "the gate changed the network's answer");
}
