//! Training augmentation on `N × N` intensity planes (0…255): rotation, horizontal flip, affine
//! (scale, translation, shear) and CLAHE, each with its own probability, all drawn from the
//! caller's seeded RNG so an epoch is reproducible.
//!
//! The geometric transforms are composed into one matrix and applied once with bilinear
//! sampling; pixels that come from outside the image are black, as outside an ultrasound sector.

use super::config::AugmentSection;
use rand::{Rng, RngExt};

/// A 2×3 affine map from output pixel centre to source pixel centre (inverse mapping).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Affine([f64; 6]);

impl Affine {
    const IDENTITY: Affine = Affine([1.0, 0.0, 0.0, 0.0, 1.0, 0.0]);

    /// `self ∘ other` (apply `other` first).
    fn then(self, other: Affine) -> Affine {
        let [a, b, c, d, e, f] = self.0;
        let [g, h, i, j, k, l] = other.0;
        Affine([a * g + b * j, a * h + b * k, a * i + b * l + c, d * g + e * j, d * h + e * k, d * i + e * l + f])
    }

    fn apply(&self, x: f64, y: f64) -> (f64, f64) {
        let [a, b, c, d, e, f] = self.0;
        (a * x + b * y + c, d * x + e * y + f)
    }
}

/// Augments one plane in place.
pub fn augment(plane: &mut [f32], n: usize, config: &AugmentSection, rng: &mut impl Rng) {
    // Forward transform about the image centre; sampling uses its inverse.
    let c = n as f64 / 2.0;
    let mut forward = Affine::IDENTITY;
    let mut geometric = false;
    if rng.random::<f64>() < config.flip_p {
        forward = Affine([-1.0, 0.0, 0.0, 0.0, 1.0, 0.0]).then(forward);
        geometric = true;
    }
    if rng.random::<f64>() < config.rotation_p {
        let t = rng.random_range(-config.rotation_degrees..=config.rotation_degrees).to_radians();
        forward = Affine([t.cos(), -t.sin(), 0.0, t.sin(), t.cos(), 0.0]).then(forward);
        geometric = true;
    }
    if rng.random::<f64>() < config.affine_p {
        let s = rng.random_range(config.scale[0]..=config.scale[1]);
        let shear = rng.random_range(-config.shear_degrees..=config.shear_degrees).to_radians().tan();
        let tx = rng.random_range(-config.translate..=config.translate) * n as f64;
        let ty = rng.random_range(-config.translate..=config.translate) * n as f64;
        forward = Affine([s, s * shear, tx, 0.0, s, ty]).then(forward);
        geometric = true;
    }
    if geometric {
        let inverse = invert(forward);
        let source = plane.to_vec();
        for y in 0..n {
            for x in 0..n {
                let (sx, sy) = inverse.apply(x as f64 + 0.5 - c, y as f64 + 0.5 - c);
                plane[y * n + x] = sample_bilinear(&source, n, sx + c - 0.5, sy + c - 0.5);
            }
        }
    }
    if rng.random::<f64>() < config.clahe_p {
        clahe(plane, n, config.clahe_tiles.max(1), config.clahe_clip);
    }
}

fn invert(m: Affine) -> Affine {
    let [a, b, c, d, e, f] = m.0;
    let det = a * e - b * d;
    let (ia, ib, id, ie) = (e / det, -b / det, -d / det, a / det);
    Affine([ia, ib, -(ia * c + ib * f), id, ie, -(id * c + ie * f)])
}

/// Bilinear sample at pixel coordinates `(x, y)` (pixel centres at integers); 0 outside.
fn sample_bilinear(src: &[f32], n: usize, x: f64, y: f64) -> f32 {
    if x < -0.5 || y < -0.5 || x > n as f64 - 0.5 || y > n as f64 - 0.5 {
        return 0.0;
    }
    let (x, y) = (x.clamp(0.0, (n - 1) as f64), y.clamp(0.0, (n - 1) as f64));
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(n - 1), (y0 + 1).min(n - 1));
    let (fx, fy) = ((x - x0 as f64) as f32, (y - y0 as f64) as f32);
    let top = src[y0 * n + x0] * (1.0 - fx) + src[y0 * n + x1] * fx;
    let bottom = src[y1 * n + x0] * (1.0 - fx) + src[y1 * n + x1] * fx;
    top * (1.0 - fy) + bottom * fy
}

/// Contrast-limited adaptive histogram equalisation (as OpenCV's CLAHE): per-tile 256-bin
/// histograms clipped at `clip × mean bin count` with the excess spread evenly, mapped through their
/// CDFs, and blended bilinearly between tile centres.
pub fn clahe(plane: &mut [f32], n: usize, tiles: usize, clip: f64) {
    let tiles = tiles.min(n).max(1);
    let tile = n.div_ceil(tiles);
    let mut maps = vec![[0.0f32; 256]; tiles * tiles];
    for ty in 0..tiles {
        for tx in 0..tiles {
            let mut hist = [0u32; 256];
            let (y0, x0) = (ty * tile, tx * tile);
            let (y1, x1) = ((y0 + tile).min(n), (x0 + tile).min(n));
            let mut count = 0u32;
            for y in y0..y1 {
                for x in x0..x1 {
                    hist[plane[y * n + x].clamp(0.0, 255.0) as usize] += 1;
                    count += 1;
                }
            }
            if count == 0 {
                maps[ty * tiles + tx] = std::array::from_fn(|v| v as f32);
                continue;
            }
            let limit = ((clip * count as f64 / 256.0) as u32).max(1);
            let mut excess = 0;
            for h in hist.iter_mut() {
                if *h > limit {
                    excess += *h - limit;
                    *h = limit;
                }
            }
            let (share, rest) = (excess / 256, excess % 256);
            let mut cdf = 0u32;
            let map = &mut maps[ty * tiles + tx];
            for (v, h) in hist.iter().enumerate() {
                cdf += h + share + u32::from((v as u32) < rest);
                map[v] = 255.0 * cdf as f32 / count as f32;
            }
        }
    }
    // Bilinear blend of the four nearest tile maps.
    for y in 0..n {
        let fy = ((y as f32 + 0.5) / tile as f32 - 0.5).clamp(0.0, (tiles - 1) as f32);
        let (ty0, ty1) = (fy.floor() as usize, (fy.floor() as usize + 1).min(tiles - 1));
        let wy = fy - ty0 as f32;
        for x in 0..n {
            let fx = ((x as f32 + 0.5) / tile as f32 - 0.5).clamp(0.0, (tiles - 1) as f32);
            let (tx0, tx1) = (fx.floor() as usize, (fx.floor() as usize + 1).min(tiles - 1));
            let wx = fx - tx0 as f32;
            let v = plane[y * n + x].clamp(0.0, 255.0) as usize;
            let m = |ty: usize, tx: usize| maps[ty * tiles + tx][v];
            let top = m(ty0, tx0) * (1.0 - wx) + m(ty0, tx1) * wx;
            let bottom = m(ty1, tx0) * (1.0 - wx) + m(ty1, tx1) * wx;
            plane[y * n + x] = top * (1.0 - wy) + bottom * wy;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn off() -> AugmentSection {
        AugmentSection { rotation_p: 0.0, flip_p: 0.0, affine_p: 0.0, clahe_p: 0.0, ..Default::default() }
    }

    #[test]
    fn nothing_enabled_is_identity() {
        let mut plane: Vec<f32> = (0..64).map(|v| v as f32).collect();
        let before = plane.clone();
        augment(&mut plane, 8, &off(), &mut ChaCha8Rng::seed_from_u64(0));
        assert_eq!(plane, before);
    }

    #[test]
    fn flip_mirrors_exactly() {
        let mut plane: Vec<f32> = (0..16).map(|v| v as f32).collect();
        augment(&mut plane, 4, &AugmentSection { flip_p: 1.0, ..off() }, &mut ChaCha8Rng::seed_from_u64(0));
        assert_eq!(&plane[..4], &[3.0, 2.0, 1.0, 0.0]);
    }

    #[test]
    fn rotation_keeps_the_centre_and_blackens_corners() {
        let n = 32;
        let mut plane = vec![100.0f32; n * n];
        let config = AugmentSection { rotation_p: 1.0, rotation_degrees: 45.0, ..off() };
        // Find a seed that rotates by a large angle; the corner then samples outside → black.
        augment(&mut plane, n, &config, &mut ChaCha8Rng::seed_from_u64(1));
        assert!((plane[(n / 2) * n + n / 2] - 100.0).abs() < 1e-3);
        assert!(plane[0] < 100.0);
    }

    #[test]
    fn same_seed_same_result() {
        let config = AugmentSection { rotation_p: 1.0, flip_p: 0.5, affine_p: 1.0, clahe_p: 1.0, ..Default::default() };
        let base: Vec<f32> = (0..32 * 32).map(|v| (v % 251) as f32).collect();
        let (mut a, mut b) = (base.clone(), base.clone());
        augment(&mut a, 32, &config, &mut ChaCha8Rng::seed_from_u64(9));
        augment(&mut b, 32, &config, &mut ChaCha8Rng::seed_from_u64(9));
        assert_eq!(a, b);
        assert_ne!(a, base);
    }

    #[test]
    fn clahe_spreads_a_narrow_histogram() {
        let n = 32;
        let mut plane: Vec<f32> = (0..n * n).map(|i| 100.0 + (i % 8) as f32).collect();
        clahe(&mut plane, n, 4, 40.0);
        let (lo, hi) = plane.iter().fold((255.0f32, 0.0f32), |(l, h), v| (l.min(*v), h.max(*v)));
        assert!(hi - lo > 100.0, "range {lo}..{hi}");
    }
}
