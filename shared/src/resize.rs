//! Bilinear resampling with PyTorch `F.interpolate(mode="bilinear", align_corners=False)` semantics.
//!
//! One routine serves every resize in the system: frame → network input, the centre-zoom crop, the
//! host's contrastive-zoom crops, and attention map → heatmap, so host and edge compute identical
//! numbers. No antialiasing, as in PyTorch's default.

use crate::geometry::Rect;

/// Why a resize was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResizeError {
    /// `src.len()` is not `width × height`.
    #[error("source buffer holds {len} values but the image is {width}×{height}")]
    SourceSize {
        /// Buffer length.
        len: usize,
        /// Declared width.
        width: usize,
        /// Declared height.
        height: usize,
    },
    /// The region is empty or does not lie inside the source image.
    #[error("region {x0}..{x1} × {y0}..{y1} is empty or outside the {width}×{height} source")]
    Region {
        /// Region start column.
        x0: usize,
        /// Region end column (exclusive).
        x1: usize,
        /// Region start row.
        y0: usize,
        /// Region end row (exclusive).
        y1: usize,
        /// Source width.
        width: usize,
        /// Source height.
        height: usize,
    },
    /// The destination size is zero or the destination buffer has the wrong length.
    #[error("destination buffer holds {len} values but the output is {width}×{height}")]
    DestinationSize {
        /// Buffer length.
        len: usize,
        /// Output width.
        width: usize,
        /// Output height.
        height: usize,
    },
}

/// Source coordinate and blend weights along one axis for output index `d`.
///
/// Mirrors ATen's `area_pixel_compute_source_index` (align_corners = false) followed by the
/// `upsample_bilinear2d` neighbour/lambda computation, in `f32` as ATen does for float tensors.
#[inline(always)]
fn axis_sample(d: usize, scale: f32, in_len: usize) -> (usize, usize, f32) {
    let src = (scale * (d as f32 + 0.5) - 0.5).max(0.0);
    let i0 = src as usize; // src ≥ 0, so truncation is floor
    let i0 = i0.min(in_len - 1);
    let i1 = if i0 + 1 < in_len { i0 + 1 } else { i0 };
    (i0, i1, src - i0 as f32)
}

/// Calls `visit(x, y, value)` for every pixel of the `dst_w × dst_h` bilinear resize of the `roi` of
/// the `src_w × src_h` row-major `src` image, in row-major order.
///
/// This is the single resampling kernel; [`resize_bilinear`] writes the values into a buffer and the
/// centre-zoom box reads them on the fly without allocating the upsampled map.
pub fn for_each_resized<T, F>(
    src: &[T],
    src_w: usize,
    src_h: usize,
    roi: Rect,
    dst_w: usize,
    dst_h: usize,
    mut visit: F,
) -> Result<(), ResizeError>
where
    T: Copy + Into<f32>,
    F: FnMut(usize, usize, f32),
{
    if src.len() != src_w * src_h || src_w == 0 || src_h == 0 {
        return Err(ResizeError::SourceSize { len: src.len(), width: src_w, height: src_h });
    }
    if !roi.fits_in(src_w, src_h) {
        return Err(ResizeError::Region {
            x0: roi.x0,
            x1: roi.x1,
            y0: roi.y0,
            y1: roi.y1,
            width: src_w,
            height: src_h,
        });
    }
    if dst_w == 0 || dst_h == 0 {
        return Err(ResizeError::DestinationSize { len: 0, width: dst_w, height: dst_h });
    }
    let (in_w, in_h) = (roi.width(), roi.height());
    let scale_x = in_w as f32 / dst_w as f32;
    let scale_y = in_h as f32 / dst_h as f32;
    for y in 0..dst_h {
        let (y0, y1, ly1) = axis_sample(y, scale_y, in_h);
        let ly0 = 1.0 - ly1;
        let row0 = &src[(roi.y0 + y0) * src_w + roi.x0..][..in_w];
        let row1 = &src[(roi.y0 + y1) * src_w + roi.x0..][..in_w];
        for x in 0..dst_w {
            let (x0, x1, lx1) = axis_sample(x, scale_x, in_w);
            let lx0 = 1.0 - lx1;
            let top = lx0 * row0[x0].into() + lx1 * row0[x1].into();
            let bottom = lx0 * row1[x0].into() + lx1 * row1[x1].into();
            visit(x, y, ly0 * top + ly1 * bottom);
        }
    }
    Ok(())
}

/// Resizes the `roi` of `src` (`src_w × src_h`, row-major) to `dst_w × dst_h` into `dst`.
pub fn resize_bilinear<T: Copy + Into<f32>>(
    src: &[T],
    src_w: usize,
    src_h: usize,
    roi: Rect,
    dst: &mut [f32],
    dst_w: usize,
    dst_h: usize,
) -> Result<(), ResizeError> {
    if dst.len() != dst_w * dst_h {
        return Err(ResizeError::DestinationSize { len: dst.len(), width: dst_w, height: dst_h });
    }
    for_each_resized(src, src_w, src_h, roi, dst_w, dst_h, |x, y, v| dst[y * dst_w + x] = v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_resize_is_exact() {
        let src: [f32; 6] = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let mut dst = [0.0; 6];
        resize_bilinear(&src, 3, 2, Rect::full(3, 2), &mut dst, 3, 2).unwrap();
        assert_eq!(dst, src);
    }

    #[test]
    fn upsample_2_to_4_matches_hand_computation() {
        // Output d maps to src = (d + 0.5) / 2 - 0.5 = [-0.25→0, 0.25, 0.75, 1.25→clamped neighbour].
        let src: [u8; 2] = [0, 100];
        let mut dst = [0.0; 4];
        resize_bilinear(&src, 2, 1, Rect::full(2, 1), &mut dst, 4, 1).unwrap();
        assert_eq!(dst, [0.0, 25.0, 75.0, 100.0]);
    }

    #[test]
    fn downsample_4_to_2_averages_pairs() {
        // src = (d + 0.5) * 2 - 0.5 = 0.5, 2.5: midpoints of each pair.
        let src: [u8; 4] = [10, 20, 30, 50];
        let mut dst = [0.0; 2];
        resize_bilinear(&src, 4, 1, Rect::full(4, 1), &mut dst, 2, 1).unwrap();
        assert_eq!(dst, [15.0, 40.0]);
    }

    #[test]
    fn region_is_resampled_in_its_own_coordinates() {
        #[rustfmt::skip]
        let src: [f32; 16] = [
            0.0, 0.0, 0.0, 0.0,
            0.0, 1.0, 2.0, 0.0,
            0.0, 3.0, 4.0, 0.0,
            0.0, 0.0, 0.0, 0.0,
        ];
        let mut dst = [0.0; 4];
        resize_bilinear(&src, 4, 4, Rect { x0: 1, y0: 1, x1: 3, y1: 3 }, &mut dst, 2, 2).unwrap();
        assert_eq!(dst, [1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn bad_buffers_are_errors_not_panics() {
        let src = [0u8; 5];
        let mut dst = [0.0; 4];
        assert!(matches!(
            resize_bilinear(&src, 3, 2, Rect::full(3, 2), &mut dst, 2, 2),
            Err(ResizeError::SourceSize { .. })
        ));
        let src = [0u8; 6];
        assert!(matches!(
            resize_bilinear(&src, 3, 2, Rect { x0: 2, y0: 0, x1: 4, y1: 2 }, &mut dst, 2, 2),
            Err(ResizeError::Region { .. })
        ));
        assert!(matches!(
            resize_bilinear(&src, 3, 2, Rect::full(3, 2), &mut dst, 3, 2),
            Err(ResizeError::DestinationSize { .. })
        ));
        assert!(matches!(
            resize_bilinear(&src, 0, 0, Rect::full(0, 0), &mut dst, 2, 2),
            Err(ResizeError::SourceSize { .. })
        ));
    }
}
