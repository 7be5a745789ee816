//! CMZ, contrastive multi-zoom (Algorithm 1): attention box → random zoomed views near its edges.
//!
//! * [`gen_bbox`]: θ = 0.6 × max(AttS) on the map before upsampling; bilinear upsample to `N`
//!   (`align_corners=False`); the min/max box of every pixel `≥ θ`, with the image centre pixel forced
//!   in (which keeps the crop arithmetic in range); returned normalised, `[h0, w0, h1, w1]`, in f64.
//! * [`contrastive_crop`]: the initial-commit ContrastiveCrop `get_params`. The area is a fraction in
//!   `[0.3, 0.5]` of `N²`, the aspect ratio is log-uniform in `[0.6, 1.4]`, both rounded half to even
//!   like Python's `round`. The crop centre on each axis is placed between the box edges with
//!   Beta(0.1, 0.1), which is U-shaped, so views land near the box edges, away from the attention
//!   centre. The exact f64 divide-multiply-truncate of the reference is kept (`int(224 · (61/224))`
//!   is 60).
//! * The crops are cut from the same normalised input the global pass saw, and resized back to `N`
//!   with the `shared` bilinear kernel that the test-time centre zoom uses.

use burn::prelude::*;
use cdnet_shared::Rect;
use cdnet_shared::resize::for_each_resized;
use rand::{Rng, RngExt};
use rand_distr::{Beta, Distribution};

/// CMZ hyper-parameters (reference values by default).
#[derive(Config, Debug, PartialEq)]
pub struct CmzConfig {
    /// GenBBox threshold as a fraction of the attention maximum.
    #[config(default = 0.6)]
    pub bbox_threshold: f32,
    /// Zoomed views per image, `Zn`.
    #[config(default = 2)]
    pub views: usize,
    /// α of the Beta(α, α) placement.
    #[config(default = 0.1)]
    pub beta_alpha: f64,
    /// Crop area range as fractions of `N²`.
    #[config(default = "[0.3, 0.5]")]
    pub scale: [f64; 2],
    /// Crop aspect-ratio (w/h) range, sampled log-uniformly.
    #[config(default = "[0.6, 1.4]")]
    pub ratio: [f64; 2],
}

/// GenBBox: the normalised `[h0, w0, h1, w1]` box of the attention map `att` (`aw × ah`) for an
/// `n × n` input.
pub fn gen_bbox(att: &[f32], aw: usize, ah: usize, n: usize, threshold: f32) -> [f64; 4] {
    let max = att.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let theta = threshold * max;
    let centre = n / 2;
    let (mut r0, mut r1, mut c0, mut c1) = (centre, centre, centre, centre);
    // A malformed map (cannot happen: sizes come from the network) leaves just the centre.
    let _ = for_each_resized(att, aw, ah, Rect::full(aw, ah), n, n, |x, y, v| {
        if v >= theta {
            r0 = r0.min(y);
            r1 = r1.max(y);
            c0 = c0.min(x);
            c1 = c1.max(x);
        }
    });
    let n = n as f64;
    [r0 as f64 / n, c0 as f64 / n, r1 as f64 / n, c1 as f64 / n]
}

/// One ContrastiveCrop: the crop rectangle (end exclusive) inside the `n × n` image.
pub fn contrastive_crop(bbox: [f64; 4], n: usize, config: &CmzConfig, rng: &mut impl Rng) -> Rect {
    let s = n as f64;
    let beta = Beta::new(config.beta_alpha, config.beta_alpha).expect("validated Beta parameters");
    let [h0, w0, h1, w1] = bbox;
    for _ in 0..10 {
        // torch draws these in float32.
        let area_fraction = config.scale[0] as f32 + (config.scale[1] - config.scale[0]) as f32 * rng.random::<f32>();
        let target_area = s * s * area_fraction as f64;
        let (lo, hi) = (config.ratio[0].ln() as f32, config.ratio[1].ln() as f32);
        let aspect = (lo + (hi - lo) * rng.random::<f32>()).exp() as f64;
        let w = (target_area * aspect).sqrt().round_ties_even() as i64;
        let h = (target_area / aspect).sqrt().round_ties_even() as i64;
        if 0 < w && w <= n as i64 && 0 < h && h <= n as i64 {
            let limit_h = n as i64 - h;
            let limit_w = n as i64 - w;
            let ch0 = ((s * h0) as i64 - h / 2).max(0);
            let ch1 = ((s * h1) as i64 - h / 2).min(limit_h);
            let cw0 = ((s * w0) as i64 - w / 2).max(0);
            let cw1 = ((s * w1) as i64 - w / 2).min(limit_w);
            // With the centre forced into the box these are already ordered and in range; the clamp
            // only guards unusual configurations.
            let (ch0, ch1) = (ch0.min(limit_h), ch1.max(ch0.min(limit_h)));
            let (cw0, cw1) = (cw0.min(limit_w), cw1.max(cw0.min(limit_w)));
            let i = ch0 + ((ch1 - ch0) as f64 * beta.sample(rng)) as i64;
            let j = cw0 + ((cw1 - cw0) as f64 * beta.sample(rng)) as i64;
            let (i, j) = (i as usize, j as usize);
            return Rect { x0: j, y0: i, x1: j + w as usize, y1: i + h as usize };
        }
    }
    Rect::full(n, n) // central-crop fallback (unreachable for the reference ranges)
}

impl CmzConfig {
    /// Checks the ranges.
    pub fn validate(&self) -> Result<(), String> {
        let ordered = |r: [f64; 2]| r[0] > 0.0 && r[0] <= r[1];
        if self.beta_alpha.is_nan()
            || self.beta_alpha <= 0.0
            || !ordered(self.scale)
            || self.scale[1] > 1.0
            || !ordered(self.ratio)
        {
            return Err("cmz: need beta_alpha > 0, 0 < scale[0] ≤ scale[1] ≤ 1 and 0 < ratio[0] ≤ ratio[1]".into());
        }
        if self.views < 2 {
            return Err("cmz: at least two zoomed views are needed for the decoupling loss".into());
        }
        Ok(())
    }
}
