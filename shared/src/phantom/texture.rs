//! The pixel-level building blocks of a phantom image: thin echoes splatted along curves, value
//! noise for tissue texture, Rayleigh speckle, and the marks a scanner burns into its frame.

use super::PHANTOM_CROP;
use crate::Rect;
use crate::resize::resize_bilinear;
use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use std::f32::consts::PI;
use std::vec;
use std::vec::Vec;

/// Adds a Gaussian line of width `sigma` along `points` (max-blended, so overlaps stay thin) and
/// marks its core in `mask`. Works only inside the curve's bounding box.
pub(super) fn splat(
    echo: &mut [f32],
    mut mask: Option<&mut Vec<u8>>,
    n: usize,
    points: &[(f32, f32)],
    sigma: f32,
    intensity: f32,
) {
    let radius = (2.5 * sigma).ceil() as i64;
    let clamp = |v: f32| (v.round() as i64).clamp(0, n as i64 - 1);
    let (mut bx0, mut by0, mut bx1, mut by1) = (i64::MAX, i64::MAX, i64::MIN, i64::MIN);
    for &(px, py) in points {
        bx0 = bx0.min(clamp(px) - radius);
        by0 = by0.min(clamp(py) - radius);
        bx1 = bx1.max(clamp(px) + radius);
        by1 = by1.max(clamp(py) + radius);
    }
    if points.is_empty() {
        return;
    }
    let (bx0, by0) = (bx0.max(0) as usize, by0.max(0) as usize);
    let (bx1, by1) = ((bx1 as usize).min(n - 1), (by1 as usize).min(n - 1));
    let bw = bx1 + 1 - bx0;
    let mut line = vec![0.0f32; bw * (by1 + 1 - by0)];
    for &(px, py) in points {
        let (cx, cy) = (px.round() as i64, py.round() as i64);
        for y in (cy - radius).max(by0 as i64)..=(cy + radius).min(by1 as i64) {
            for x in (cx - radius).max(bx0 as i64)..=(cx + radius).min(bx1 as i64) {
                let (dx, dy) = (x as f32 + 0.5 - px, y as f32 + 0.5 - py);
                let w = (-(dx * dx + dy * dy) / (2.0 * sigma * sigma)).exp();
                let i = (y as usize - by0) * bw + (x as usize - bx0);
                line[i] = line[i].max(w);
            }
        }
    }
    for (k, w) in line.iter().enumerate() {
        if *w > 0.0 {
            let i = (by0 + k / bw) * n + bx0 + k % bw;
            echo[i] = echo[i].max(echo[i] * (1.0 - w) + intensity * w);
            if let Some(mask) = mask.as_deref_mut()
                && *w > 0.3
            {
                mask[i] = 255;
            }
        }
    }
}

/// Smooth random texture in 0…1: a coarse random grid (`cell_x × cell_y` pixels per cell),
/// bilinearly upsampled.
pub(super) fn value_noise(rng: &mut ChaCha8Rng, n: usize, cell_x: f32, cell_y: f32) -> Vec<f32> {
    let cx = ((n as f32 / cell_x).ceil() as usize).max(2);
    let cy = ((n as f32 / cell_y).ceil() as usize).max(2);
    let grid: Vec<f32> = (0..cx * cy).map(|_| rng.random::<f32>()).collect();
    let mut out = vec![0.0; n * n];
    // Cannot fail: sizes are consistent by construction.
    let _ = resize_bilinear(&grid, cx, cy, Rect::full(cx, cy), &mut out, n, n);
    out
}

/// Fully developed speckle: the magnitude of a complex Gaussian field smoothed more along the
/// lateral axis than the axial one (grains are wider than tall), scaled to unit mean.
pub(super) fn rayleigh_speckle(rng: &mut ChaCha8Rng, n: usize) -> Vec<f32> {
    const H: [f32; 5] = [1.0, 2.0, 3.0, 2.0, 1.0];
    const V: [f32; 3] = [1.0, 2.0, 1.0];
    let (hs, vs): (f32, f32) = (H.iter().sum(), V.iter().sum());
    let mut re: Vec<f32> = (0..n * n).map(|_| StandardNormal.sample(rng)).collect();
    let mut im: Vec<f32> = (0..n * n).map(|_| StandardNormal.sample(rng)).collect();
    for field in [&mut re, &mut im] {
        let mut tmp = vec![0.0f32; n * n];
        blur_pass(field, &mut tmp, n, &H, hs, Axis::X);
        blur_pass(&tmp, field, n, &V, vs, Axis::Y);
    }
    // Std of each smoothed component, so E|z| = σ·√(π/2).
    let energy = |k: &[f32], s: f32| k.iter().map(|w| (w / s).powi(2)).sum::<f32>();
    let sigma = (energy(&H, hs) * energy(&V, vs)).sqrt();
    let mean = sigma * (PI / 2.0).sqrt();
    re.iter().zip(&im).map(|(a, b)| (a * a + b * b).sqrt() / mean).collect()
}

#[derive(Clone, Copy)]
enum Axis {
    X,
    Y,
}

/// One pass of a centred 1-D blur of `taps` (divided by their `sum`) along `axis` of an `n × n`
/// field, the border pixels repeated.
fn blur_pass(src: &[f32], dst: &mut [f32], n: usize, taps: &[f32], sum: f32, axis: Axis) {
    let half = taps.len() / 2;
    for y in 0..n {
        for x in 0..n {
            let mut acc = 0.0;
            for (k, w) in taps.iter().enumerate() {
                let at = match axis {
                    Axis::X => y * n + (x + k).saturating_sub(half).min(n - 1),
                    Axis::Y => (y + k).saturating_sub(half).min(n - 1) * n + x,
                };
                acc += w * src[at];
            }
            dst[y * n + x] = acc / sum;
        }
    }
}

/// Patient text, a logo and a depth scale, all outside [`PHANTOM_CROP`].
pub(super) fn scanner_marks(out: &mut [u8], n: usize, rng: &mut ChaCha8Rng) {
    let s = n as f32;
    let px = ((s / 256.0).round() as usize).max(1);
    let mut put = |x: usize, y: usize, v: u8| {
        for dy in 0..px {
            for dx in 0..px {
                if let Some(p) = out.get_mut((y + dy) * n + x + dx).filter(|_| x + dx < n) {
                    *p = v;
                }
            }
        }
    };
    // Two lines of glyph-like 3×5 patterns in the top band.
    let band = (PHANTOM_CROP.top * s) as usize;
    let rows = if band >= 14 * px { 2 } else { 1 };
    for row in 0..rows {
        let y0 = px + row * 7 * px;
        let glyphs = rng.random_range(6..=12);
        for g in 0..glyphs {
            let pattern: u16 = rng.random::<u16>() | 0b010_010_010_010_010;
            let x0 = 2 * px + g * 4 * px;
            for k in 0..15 {
                if pattern >> k & 1 == 1 {
                    put(x0 + (k % 3) * px, y0 + (k / 3) * px, 230);
                }
            }
        }
    }
    // Logo block top right.
    let logo = 4 * px;
    for y in px..px + logo {
        for x in n - 2 * px - 2 * logo..n - 2 * px - logo {
            put(x, y, 200);
        }
    }
    // Depth scale: ticks in the right band.
    let x0 = (PHANTOM_CROP.right * s) as usize + px;
    let mut y = band + 4 * px;
    let step = (s * 0.1) as usize;
    while y < n - px {
        for x in x0..(x0 + 3 * px).min(n - px) {
            put(x, y, 180);
        }
        y += step.max(px);
    }
}
