//! Sweeps: the frames a probe gives while it moves over one phantom eye, with the uninformative
//! frames of a real sweep mixed in (the probe in the air, the lid only, the globe at the edge of
//! the view). The probe simulator streams them and `cdnet sweeps` scores exams on them.

use super::{PhantomClass, PhantomConfig, render};
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::vec::Vec;

/// What a sweep frame shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SweepFrameKind {
    /// The globe in view, the probe somewhere along its sweep.
    View,
    /// The probe in the air: almost black.
    Air,
    /// Only the near field (lid and orbit tissue), the globe not yet in view.
    Lid,
    /// The globe at the edge of the view, less than half of it visible.
    Edge,
}

impl SweepFrameKind {
    /// Whether the frame shows the eye well enough to diagnose.
    pub fn is_informative(self) -> bool {
        self == SweepFrameKind::View
    }
}

/// One frame of a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepFrame {
    /// What it shows.
    pub kind: SweepFrameKind,
    /// Side in pixels.
    pub size: usize,
    /// 8-bit pixels, row-major.
    pub pixels: Vec<u8>,
}

/// How a sweep is made.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SweepConfig {
    /// Frames in the sweep.
    pub frames: usize,
    /// Fraction of them that are uninformative (air, lid, edge in turn), placed at random.
    pub uninformative: f32,
    /// The eye.
    pub phantom: PhantomConfig,
}

/// The frames of a sweep over the eye of `class` drawn from `seed`: the probe moves from one side
/// of the globe to the other (the view shifts by ±15 % of the side), each frame with fresh
/// speckle-like noise.
pub fn sweep(class: PhantomClass, seed: u64, config: &SweepConfig) -> Vec<SweepFrame> {
    let eye = render(class, seed, &config.phantom);
    let n = eye.size;
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5EE9_5EE9);
    let bad = ((config.frames as f32 * config.uninformative.clamp(0.0, 1.0)).round() as usize).min(config.frames);
    let mut order: Vec<bool> = (0..config.frames).map(|i| i < bad).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    let kinds = [SweepFrameKind::Air, SweepFrameKind::Lid, SweepFrameKind::Edge];
    let mut next_bad = 0;
    (0..config.frames)
        .map(|i| {
            let along = if config.frames > 1 { i as f32 / (config.frames - 1) as f32 } else { 0.5 };
            let kind = if order[i] {
                next_bad += 1;
                kinds[(next_bad - 1) % kinds.len()]
            } else {
                SweepFrameKind::View
            };
            let shift = match kind {
                SweepFrameKind::Edge => {
                    let side = if rng.random::<bool>() { 1.0 } else { -1.0 };
                    side * rng.random_range(0.55..0.7) * n as f32
                }
                _ => (along - 0.5) * 0.3 * n as f32,
            };
            let mut pixels = shifted(&eye.pixels, n, shift.round() as isize);
            match kind {
                SweepFrameKind::Air => pixels.iter_mut().for_each(|p| *p = 0),
                SweepFrameKind::Lid => pixels[n * n / 5..].iter_mut().for_each(|p| *p = 0),
                _ => {}
            }
            for p in &mut pixels {
                let noise: i16 = rng.random_range(-6..=6);
                *p = (*p as i16 + noise).clamp(0, 255) as u8;
            }
            SweepFrame { kind, size: n, pixels }
        })
        .collect()
}

/// `pixels` moved `dx` columns right (left when negative), black where nothing is in view.
fn shifted(pixels: &[u8], n: usize, dx: isize) -> Vec<u8> {
    let mut out = std::vec![0u8; n * n];
    for y in 0..n {
        for x in 0..n {
            let from = x as isize - dx;
            if (0..n as isize).contains(&from) {
                out[y * n + x] = pixels[y * n + from as usize];
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_has_the_asked_mix_and_is_reproducible() {
        let config =
            SweepConfig { frames: 20, uninformative: 0.35, phantom: PhantomConfig { size: 96, difficulty: 0.5 } };
        let frames = sweep(PhantomClass::Rd, 3, &config);
        assert_eq!(frames.len(), 20);
        let bad = frames.iter().filter(|f| !f.kind.is_informative()).count();
        assert_eq!(bad, 7);
        assert_eq!(frames, sweep(PhantomClass::Rd, 3, &config));
        let air = frames.iter().find(|f| f.kind == SweepFrameKind::Air).unwrap();
        assert!(air.pixels.iter().all(|&p| p <= 6), "air is near black");
        let views: Vec<_> = frames.iter().filter(|f| f.kind == SweepFrameKind::View).collect();
        assert_ne!(views[0].pixels, views[views.len() - 1].pixels, "the probe moves");
        let all_bad = sweep(PhantomClass::Rd, 3, &SweepConfig { uninformative: 1.0, ..config });
        assert!(all_bad.iter().all(|f| !f.kind.is_informative()));
    }
}
