//! Test-time Center Zoom (reference §3.5): the box the second backbone pass looks at.
//!
//! `θ = threshold × max(AttS)` on the attention map *before* upsampling; the map is upsampled
//! bilinearly (`align_corners=False`) to the input size; the box is the min/max of all pixels
//! `≥ θ`, padded by `padding × N` on every side with Python `int()` truncation, clamped to
//! `[0, N − 1]`, end exclusive (so row/column `N − 1` is never included — as the reference slices).
//! An empty mask (NaN map, or a map whose maximum is ≤ 0 with negative values) falls back to the
//! image centre pixel, as the reference's exception branch does.

use crate::geometry::Rect;
use crate::resize::{ResizeError, for_each_resized, resize_bilinear};
use serde::{Deserialize, Serialize};

/// Parameters of the centre-zoom box.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CenterZoomParams {
    /// Fraction of the attention maximum a pixel must reach (0.5 in the reference).
    pub threshold: f32,
    /// Padding on every side as a fraction of the input side (0.1 in the reference).
    pub padding: f64,
}

impl Default for CenterZoomParams {
    fn default() -> Self {
        CenterZoomParams { threshold: 0.5, padding: 0.1 }
    }
}

/// Why no box could be computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ZoomError {
    /// The attention map buffer or sizes are inconsistent, or the input size is zero.
    #[error("attention map {width}×{height} with {len} values cannot be zoomed to a {input_size}² input")]
    Shape {
        /// Map width.
        width: usize,
        /// Map height.
        height: usize,
        /// Values present.
        len: usize,
        /// Network input side.
        input_size: usize,
    },
    /// The crop-and-resize failed (bad plane size).
    #[error(transparent)]
    Resize(#[from] ResizeError),
}

/// Computes the centre-zoom box, in input pixels, from a `att_w × att_h` attention map (AttS, the
/// channel mean of the attention maps) for an `input_size²` network input.
pub fn center_zoom_box(
    att: &[f32],
    att_w: usize,
    att_h: usize,
    input_size: usize,
    params: &CenterZoomParams,
) -> Result<Rect, ZoomError> {
    if att_w == 0 || att_h == 0 || att.len() != att_w * att_h || input_size == 0 {
        return Err(ZoomError::Shape { width: att_w, height: att_h, len: att.len(), input_size });
    }
    let centre = input_size / 2;
    let (mut rmin, mut rmax, mut cmin, mut cmax) = (centre, centre, centre, centre);
    if att.iter().all(|v| v.is_finite()) {
        let max = att.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let theta = params.threshold * max;
        let mut found = false;
        let (mut r0, mut r1, mut c0, mut c1) = (usize::MAX, 0, usize::MAX, 0);
        for_each_resized(att, att_w, att_h, Rect::full(att_w, att_h), input_size, input_size, |x, y, v| {
            if v >= theta {
                found = true;
                r0 = r0.min(y);
                r1 = r1.max(y);
                c0 = c0.min(x);
                c1 = c1.max(x);
            }
        })?;
        if found {
            (rmin, rmax, cmin, cmax) = (r0, r1, c0, c1);
        }
    }
    Ok(padded_box(rmin, rmax, cmin, cmax, input_size, params.padding))
}

/// `[int(min − pad), int(max + pad))` clamped to `[0, N − 1]` per axis, in f64 like the reference.
fn padded_box(rmin: usize, rmax: usize, cmin: usize, cmax: usize, n: usize, padding: f64) -> Rect {
    let pad = padding * n as f64;
    let last = n.saturating_sub(1) as i64;
    let lo = |v: usize| ((v as f64 - pad) as i64).max(0) as usize;
    let hi = |v: usize| ((v as f64 + pad) as i64).min(last) as usize;
    let (y0, x0) = (lo(rmin), lo(cmin));
    // Never empty, even for a tiny input where padding rounds to nothing.
    let y1 = hi(rmax).max(y0 + 1).min(n);
    let x1 = hi(cmax).max(x0 + 1).min(n);
    Rect { x0, y0, x1, y1 }
}

/// Crops `rect` out of an `n × n` plane and resizes it back to `n × n` (bilinear,
/// `align_corners=False`): the zoomed view fed to the second backbone pass.
pub fn crop_and_resize(plane: &[f32], n: usize, rect: Rect, out: &mut [f32]) -> Result<(), ZoomError> {
    Ok(resize_bilinear(plane, n, n, rect, out, n, n)?)
}

/// [`crop_and_resize`] into a new plane; the plane itself when the crop cannot be made (a plane
/// that is not `n × n`, or a box outside it — which the boxes of this module never are).
#[cfg(feature = "alloc")]
pub fn crop_view(plane: &[f32], n: usize, rect: Rect) -> alloc::vec::Vec<f32> {
    let mut view = alloc::vec![0.0; n * n];
    match crop_and_resize(plane, n, rect, &mut view) {
        Ok(()) => view,
        Err(_) => plane.to_vec(),
    }
}

/// One image's test-time centre zoom: the box and the view the second backbone pass sees.
#[cfg(feature = "alloc")]
#[derive(Debug, Clone, PartialEq)]
pub struct ZoomView {
    /// The box, in input pixels.
    pub rect: Rect,
    /// The box's content resized to `n × n`.
    pub view: alloc::vec::Vec<f32>,
}

/// The centre zoom of one image, as every caller (edge runtime, host evaluation, training) does it:
/// [`center_zoom_box`] on its `side × side` attention map, falling back to the whole image when the
/// map cannot give a box (an empty or inconsistent map), then [`crop_view`].
#[cfg(feature = "alloc")]
pub fn zoom_view(attention: &[f32], side: usize, plane: &[f32], n: usize, params: &CenterZoomParams) -> ZoomView {
    let rect = center_zoom_box(attention, side, side, n, params).unwrap_or(Rect::full(n, n));
    ZoomView { rect, view: crop_view(plane, n, rect) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: CenterZoomParams = CenterZoomParams { threshold: 0.5, padding: 0.1 };

    #[test]
    fn zoom_view_is_the_box_and_its_crop_and_falls_back_to_the_whole_image() {
        let plane: alloc::vec::Vec<f32> = (0..64).map(|v| v as f32).collect();
        let mut att = [0.0f32; 4];
        att[3] = 1.0;
        let zoomed = zoom_view(&att, 2, &plane, 8, &P);
        assert_eq!(zoomed.rect, center_zoom_box(&att, 2, 2, 8, &P).unwrap());
        let mut expected = alloc::vec![0.0; 64];
        crop_and_resize(&plane, 8, zoomed.rect, &mut expected).unwrap();
        assert_eq!(zoomed.view, expected);
        // No map (a model without attention): the whole image, unchanged.
        let whole = zoom_view(&[], 0, &plane, 8, &P);
        assert_eq!((whole.rect, whole.view), (Rect::full(8, 8), plane.clone()));
        // A plane of the wrong size cannot be cropped: the plane itself.
        assert_eq!(crop_view(&plane[..10], 8, Rect::full(8, 8)), plane[..10].to_vec());
    }

    #[test]
    fn single_peak_hand_computed() {
        // 7×7 map, one hot cell at (row 1, col 5). Upsampled 7→224, scale 1/32: output d samples
        // src = (d + 0.5)/32 − 0.5. Values ≥ 0.5 need |src − 1| ≤ 0.5 → src ∈ [0.5, 1.5]
        // → d + 0.5 ∈ [32, 64] → d ∈ [31.5, 63.5] → rows 32..=63. Cols: src ∈ [4.5, 5.5] → 160..=191.
        // Padding 22.4: rows [int(9.6), int(85.4)) = [9, 85); cols [int(137.6), int(213.4)) = [137, 213).
        let mut att = [0.0f32; 49];
        att[7 + 5] = 2.0;
        let b = center_zoom_box(&att, 7, 7, 224, &P).unwrap();
        assert_eq!(b, Rect { y0: 9, y1: 85, x0: 137, x1: 213 });
    }

    #[test]
    fn corner_peak_clamps_to_the_image() {
        // Hot cell (0, 0): src ≤ 0.5 → d + 0.5 ≤ 32 → rows/cols 0..=31 (src clamps at 0 for d < 16).
        // Box: [max(int(0 − 22.4), 0), int(31 + 22.4)) = [0, 53).
        let mut att = [0.0f32; 49];
        att[0] = 1.0;
        let b = center_zoom_box(&att, 7, 7, 224, &P).unwrap();
        assert_eq!(b, Rect { y0: 0, y1: 53, x0: 0, x1: 53 });
        // Hot cell (6, 6): rows from d + 0.5 ≥ 6.5*32 − ... → 192..=223; end clamps at N − 1 = 223.
        let mut att = [0.0f32; 49];
        att[48] = 1.0;
        let b = center_zoom_box(&att, 7, 7, 224, &P).unwrap();
        assert_eq!(b, Rect { y0: 169, y1: 223, x0: 169, x1: 223 });
    }

    #[test]
    fn uniform_map_covers_the_image_except_last_row_and_column() {
        let att = [0.3f32; 49];
        let b = center_zoom_box(&att, 7, 7, 224, &P).unwrap();
        assert_eq!(b, Rect { y0: 0, y1: 223, x0: 0, x1: 223 });
        // All zeros: θ = 0 and every pixel passes `≥ 0`, as in the reference.
        let b = center_zoom_box(&[0.0; 49], 7, 7, 224, &P).unwrap();
        assert_eq!(b, Rect { y0: 0, y1: 223, x0: 0, x1: 223 });
    }

    #[test]
    fn nan_or_empty_mask_falls_back_to_the_centre() {
        // Centre pixel 112: [int(112 − 22.4), int(112 + 22.4)) = [89, 134).
        let centre = Rect { y0: 89, y1: 134, x0: 89, x1: 134 };
        let mut att = [0.1f32; 49];
        att[3] = f32::NAN;
        assert_eq!(center_zoom_box(&att, 7, 7, 224, &P).unwrap(), centre);
        assert_eq!(center_zoom_box(&[f32::INFINITY; 49], 7, 7, 224, &P).unwrap(), centre);
        // Negative map: θ = 0.5 × max > max, nothing passes.
        assert_eq!(center_zoom_box(&[-1.0; 49], 7, 7, 224, &P).unwrap(), centre);
    }

    #[test]
    fn shape_errors() {
        assert!(center_zoom_box(&[0.0; 48], 7, 7, 224, &P).is_err());
        assert!(center_zoom_box(&[0.0; 49], 7, 7, 0, &P).is_err());
        assert!(center_zoom_box(&[], 0, 0, 224, &P).is_err());
    }

    #[test]
    fn tiny_inputs_still_give_a_non_empty_box() {
        let b = center_zoom_box(&[1.0], 1, 1, 2, &CenterZoomParams { threshold: 0.5, padding: 0.0 }).unwrap();
        assert!(!b.is_empty() && b.fits_in(2, 2));
    }

    #[test]
    fn crop_and_resize_of_the_full_plane_is_identity() {
        let plane: [f32; 16] = core::array::from_fn(|i| i as f32);
        let mut out = [0.0; 16];
        crop_and_resize(&plane, 4, Rect::full(4, 4), &mut out).unwrap();
        assert_eq!(out, plane);
    }
}
