//! Network output → what the clinician and the probe see: probabilities, top class, heatmap bytes.

/// Numerically stable softmax of `logits` into `out` (same length). Non-finite logits give NaN
/// probabilities, which [`top_class`] then rejects.
pub fn softmax(logits: &[f32], out: &mut [f32]) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for (o, &l) in out.iter_mut().zip(logits) {
        *o = expf(l - max);
        sum += *o;
    }
    for o in out.iter_mut() {
        *o /= sum;
    }
}

/// Index and value of the largest probability; `None` if empty or any value is NaN.
pub fn top_class(probabilities: &[f32]) -> Option<(usize, f32)> {
    if probabilities.iter().any(|p| p.is_nan()) {
        return None;
    }
    probabilities.iter().copied().enumerate().fold(None, |best: Option<(usize, f32)>, (i, p)| match best {
        Some((_, bp)) if bp >= p => best,
        _ => Some((i, p)),
    })
}

/// Scales an attention map to bytes, 255 at its maximum. A map with no positive finite maximum
/// gives all zeros (nothing to highlight).
pub fn quantize_heatmap(att: &[f32], out: &mut [u8]) {
    let max = att.iter().copied().filter(|v| v.is_finite()).fold(0.0f32, f32::max);
    for (o, &v) in out.iter_mut().zip(att) {
        *o = if max > 0.0 && v.is_finite() { (v.max(0.0) / max * 255.0 + 0.5) as u8 } else { 0 };
    }
}

/// The heatmap colour for an attention byte (0 = none … 255 = strongest): a jet-like ramp from dark
/// blue through cyan, green and yellow to red. The host's report and the device screen both use it,
/// so a clinician sees the same colours as the engineer who trained the model.
pub fn heat_colour(value: u8) -> [u8; 3] {
    let t = value as f32 / 255.0;
    let channel = |centre: f32| ((1.5 - (4.0 * t - centre).abs()).clamp(0.0, 1.0) * 255.0 + 0.5) as u8;
    [channel(3.0), channel(2.0), channel(1.0)]
}

/// `e^x` for `no_std` builds (core has no `exp`): range reduction by ln 2 plus a degree-7
/// polynomial, relative error < 2e-7 over the range softmax uses (x ≤ 0).
fn expf(x: f32) -> f32 {
    if x < -87.0 {
        return 0.0;
    }
    if x.is_nan() {
        return f32::NAN;
    }
    if x > 88.0 {
        return f32::INFINITY;
    }
    const LN2: f64 = core::f64::consts::LN_2;
    let x = x as f64;
    let k = (x / LN2 + if x < 0.0 { -0.5 } else { 0.5 }) as i64;
    let r = x - k as f64 * LN2; // |r| ≤ ln2/2
    let mut p = 1.0 / 5040.0;
    for c in [1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = p * r + c;
    }
    (p * f64::from_bits(((k + 1023) as u64) << 52)) as f32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std() {
        for i in -870..=40 {
            let x = i as f32 * 0.1;
            let want = (x as f64).exp();
            let got = expf(x) as f64;
            assert!(((got - want) / want).abs() < 3e-7, "x={x} got={got} want={want}");
        }
    }

    #[test]
    fn softmax_sums_to_one_and_orders() {
        let mut p = [0.0; 3];
        softmax(&[1.0, 2.0, 3.0], &mut p);
        let sum: f32 = p.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6);
        // Known values: e^-2, e^-1, 1 normalised.
        assert!((p[2] - 0.665_240_9).abs() < 1e-6);
        assert_eq!(top_class(&p), Some((2, p[2])));
        softmax(&[1000.0, 0.0], &mut p[..2]);
        assert_eq!(p[..2], [1.0, 0.0]);
    }

    #[test]
    fn top_class_rejects_nan_and_empty() {
        assert_eq!(top_class(&[]), None);
        assert_eq!(top_class(&[0.2, f32::NAN]), None);
        assert_eq!(top_class(&[0.5, 0.5]), Some((0, 0.5)));
    }

    #[test]
    fn heat_colours_run_blue_to_red() {
        assert_eq!(heat_colour(0), [0, 0, 128]);
        assert_eq!(heat_colour(255), [128, 0, 0]);
        let mid = heat_colour(128);
        assert!(mid[1] == 255 && mid[0] > 100 && mid[2] > 100, "{mid:?}");
    }

    #[test]
    fn heatmap_bytes() {
        let mut out = [0u8; 4];
        quantize_heatmap(&[0.0, 1.0, 2.0, f32::NAN], &mut out);
        assert_eq!(out, [0, 128, 255, 0]);
        quantize_heatmap(&[0.0; 4], &mut out);
        assert_eq!(out, [0; 4]);
    }
}
