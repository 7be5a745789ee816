//! Frame → network input, exactly as the reference: device crop, grayscale, bilinear resize to
//! `N × N` (PyTorch `align_corners=False`), normalise `(x/255 − mean)/std` (0.5/0.5 by default),
//! and three identical channels.
//!
//! The resize works on the 8-bit values as floats (no intermediate rounding to 8 bits), so the same
//! numbers come out on the host and on the board.

use crate::geometry::Rect;
use crate::resize::{ResizeError, resize_bilinear};
use serde::{Deserialize, Serialize};

/// Why a frame could not be preprocessed.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum PreprocessError {
    /// Width or height is zero.
    #[error("the frame is empty ({width}×{height})")]
    EmptyImage {
        /// Declared width.
        width: usize,
        /// Declared height.
        height: usize,
    },
    /// The pixel buffer does not hold `width × height` bytes.
    #[error("the frame declares {width}×{height} = {expected} pixels but carries {len} bytes")]
    BufferSize {
        /// Declared width.
        width: usize,
        /// Declared height.
        height: usize,
        /// `width × height`.
        expected: usize,
        /// Bytes present.
        len: usize,
    },
    /// The crop profile's fractions are not `0 ≤ left < right ≤ 1`, `0 ≤ top < bottom ≤ 1`.
    #[error(
        "crop profile [{left}, {top}, {right}, {bottom}] is invalid: need 0 ≤ left < right ≤ 1 and 0 ≤ top < bottom ≤ 1"
    )]
    InvalidCrop {
        /// Left edge fraction.
        left: f32,
        /// Top edge fraction.
        top: f32,
        /// Right edge fraction.
        right: f32,
        /// Bottom edge fraction.
        bottom: f32,
    },
    /// The crop covers less than one pixel of this frame.
    #[error("the crop profile leaves no pixels of a {width}×{height} frame")]
    CropTooSmall {
        /// Frame width.
        width: usize,
        /// Frame height.
        height: usize,
    },
    /// Fewer than [`MIN_CROP_SIDE`] pixels a side are left after the device crop: a thumbnail or an
    /// icon, not a scan; upsampling it would give the network nothing to see, and it would still
    /// answer confidently.
    #[error(
        "the frame is {width}×{height} pixels; after the device crop {crop_width}×{crop_height} remain, fewer \
         than the {MIN_CROP_SIDE}×{MIN_CROP_SIDE} a scan needs. Use the original image, not a thumbnail"
    )]
    FrameTooSmall {
        /// Frame width.
        width: usize,
        /// Frame height.
        height: usize,
        /// Width of the crop.
        crop_width: usize,
        /// Height of the crop.
        crop_height: usize,
    },
    /// Input size zero, or the output buffer has the wrong length.
    #[error("output buffer holds {len} values, expected {expected} for a {size}×{size} input")]
    OutputSize {
        /// Network input side.
        size: usize,
        /// Expected buffer length.
        expected: usize,
        /// Actual buffer length.
        len: usize,
    },
    /// The resampler refused (cannot happen after the checks above; kept for completeness).
    #[error(transparent)]
    Resize(#[from] ResizeError),
}

/// Fewest pixels a side the device crop must leave of a frame (the stride of one attention cell).
pub const MIN_CROP_SIDE: usize = 32;

/// A borrowed 8-bit grayscale frame, row-major, validated on construction.
#[derive(Debug, Clone, Copy)]
pub struct GrayImage<'a> {
    width: usize,
    height: usize,
    pixels: &'a [u8],
}

impl<'a> GrayImage<'a> {
    /// Wraps `pixels` as a `width × height` frame; rejects empty frames and inconsistent buffers.
    pub fn new(width: usize, height: usize, pixels: &'a [u8]) -> Result<Self, PreprocessError> {
        if width == 0 || height == 0 {
            return Err(PreprocessError::EmptyImage { width, height });
        }
        let expected = width.saturating_mul(height);
        if pixels.len() != expected {
            return Err(PreprocessError::BufferSize { width, height, expected, len: pixels.len() });
        }
        Ok(GrayImage { width, height, pixels })
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The pixels, row-major.
    pub fn pixels(&self) -> &'a [u8] {
        self.pixels
    }
}

/// The part of a scanner's frame that holds the image, as fractions of the frame's width and
/// height, so one profile serves a device at any output resolution. Everything outside (patient
/// text, depth scale, icons) is cut away before the network sees the frame.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CropProfile {
    /// Left edge, fraction of the width.
    pub left: f32,
    /// Top edge, fraction of the height.
    pub top: f32,
    /// Right edge (exclusive), fraction of the width.
    pub right: f32,
    /// Bottom edge (exclusive), fraction of the height.
    pub bottom: f32,
}

impl CropProfile {
    /// No crop: the whole frame.
    pub const FULL: CropProfile = CropProfile { left: 0.0, top: 0.0, right: 1.0, bottom: 1.0 };

    /// Checks `0 ≤ left < right ≤ 1` and `0 ≤ top < bottom ≤ 1` (NaN fails).
    pub fn validate(&self) -> Result<(), PreprocessError> {
        let ok = |lo: f32, hi: f32| lo >= 0.0 && hi <= 1.0 && lo < hi;
        if ok(self.left, self.right) && ok(self.top, self.bottom) {
            Ok(())
        } else {
            Err(PreprocessError::InvalidCrop { left: self.left, top: self.top, right: self.right, bottom: self.bottom })
        }
    }

    /// The crop in pixels for a `width × height` frame (edges rounded to the nearest pixel).
    pub fn pixel_rect(&self, width: usize, height: usize) -> Result<Rect, PreprocessError> {
        self.validate()?;
        // Fractions are validated non-negative, so `+ 0.5` then truncation rounds to nearest.
        let at = |f: f32, n: usize| ((f as f64 * n as f64 + 0.5) as usize).min(n);
        let rect = Rect {
            x0: at(self.left, width),
            y0: at(self.top, height),
            x1: at(self.right, width),
            y1: at(self.bottom, height),
        };
        if rect.is_empty() {
            return Err(PreprocessError::CropTooSmall { width, height });
        }
        Ok(rect)
    }
}

impl Default for CropProfile {
    fn default() -> Self {
        CropProfile::FULL
    }
}

/// Per-channel normalisation `(x/255 − mean)/std`; the reference uses mean = std = 0.5 (range −1…1).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Normalization {
    /// Subtracted after scaling to 0…1.
    pub mean: f32,
    /// Divisor after subtracting the mean.
    pub std: f32,
}

impl Default for Normalization {
    fn default() -> Self {
        Normalization { mean: 0.5, std: 0.5 }
    }
}

impl Normalization {
    /// Maps an 8-bit intensity (as float) to the network's input range.
    #[inline(always)]
    pub fn apply(&self, value: f32) -> f32 {
        (value / 255.0 - self.mean) / self.std
    }

    /// [`apply`](Self::apply) to every value in place.
    pub fn apply_all(&self, values: &mut [f32]) {
        for v in values {
            *v = self.apply(*v);
        }
    }

    /// Inverse of [`apply`](Self::apply): network value → 8-bit intensity (unclamped).
    #[inline(always)]
    pub fn invert(&self, value: f32) -> f32 {
        (value * self.std + self.mean) * 255.0
    }
}

/// Everything that turns a frame into a network input.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreprocessConfig {
    /// Side `N` of the square network input (224 in the paper).
    pub input_size: usize,
    /// Device crop.
    #[serde(default)]
    pub crop: CropProfile,
    /// Intensity normalisation.
    #[serde(default)]
    pub normalization: Normalization,
}

impl Default for PreprocessConfig {
    fn default() -> Self {
        PreprocessConfig { input_size: 224, crop: CropProfile::FULL, normalization: Normalization::default() }
    }
}

impl PreprocessConfig {
    /// Length of one input plane, `N × N`.
    pub fn plane_len(&self) -> usize {
        self.input_size * self.input_size
    }
}

/// Crops and resizes `image` into one `N × N` plane of intensities (0…255, not yet normalised) and
/// returns the crop rectangle used, in frame pixels. The host stores training images this way so
/// augmentation works on intensities; [`preprocess_plane`] is this plus normalisation.
pub fn crop_resize_plane(
    image: &GrayImage<'_>,
    config: &PreprocessConfig,
    out: &mut [f32],
) -> Result<Rect, PreprocessError> {
    let n = config.input_size;
    if n == 0 || out.len() != n * n {
        return Err(PreprocessError::OutputSize { size: n, expected: n * n, len: out.len() });
    }
    usable_crop(image.width(), image.height(), &config.crop)?;
    resample_crop(image, config, out)
}

/// The device crop of a `width × height` frame, refused when it leaves fewer than
/// [`MIN_CROP_SIDE`] pixels a side. The edge asks this of a probe's announced frame size too.
pub fn usable_crop(width: usize, height: usize, crop: &CropProfile) -> Result<Rect, PreprocessError> {
    let rect = crop.pixel_rect(width, height)?;
    if rect.width() < MIN_CROP_SIDE || rect.height() < MIN_CROP_SIDE {
        return Err(PreprocessError::FrameTooSmall {
            width,
            height,
            crop_width: rect.width(),
            crop_height: rect.height(),
        });
    }
    Ok(rect)
}

/// The arithmetic of [`crop_resize_plane`], without the minimum frame size (so tests can check it
/// by hand on a few pixels).
fn resample_crop(image: &GrayImage<'_>, config: &PreprocessConfig, out: &mut [f32]) -> Result<Rect, PreprocessError> {
    let n = config.input_size;
    if n == 0 || out.len() != n * n {
        return Err(PreprocessError::OutputSize { size: n, expected: n * n, len: out.len() });
    }
    let crop = config.crop.pixel_rect(image.width(), image.height())?;
    resize_bilinear(image.pixels(), image.width(), image.height(), crop, out, n, n)?;
    Ok(crop)
}

/// Preprocesses `image` into one normalised `N × N` plane (`out.len() == N²`) and returns the crop
/// rectangle used, in frame pixels (needed to map boxes back onto the frame).
pub fn preprocess_plane(
    image: &GrayImage<'_>,
    config: &PreprocessConfig,
    out: &mut [f32],
) -> Result<Rect, PreprocessError> {
    let crop = crop_resize_plane(image, config, out)?;
    config.normalization.apply_all(out);
    Ok(crop)
}

/// Writes `channels` copies of `plane` into `out` (CHW layout): grayscale → 3 identical channels.
pub fn replicate_channels(plane: &[f32], channels: usize, out: &mut [f32]) -> Result<(), PreprocessError> {
    if out.len() != plane.len() * channels {
        return Err(PreprocessError::OutputSize {
            size: plane.len(),
            expected: plane.len() * channels,
            len: out.len(),
        });
    }
    for chunk in out.chunks_exact_mut(plane.len()) {
        chunk.copy_from_slice(plane);
    }
    Ok(())
}

/// Preprocesses `image` into the `3 × N × N` network input (`out.len() == 3N²`).
pub fn preprocess_chw(
    image: &GrayImage<'_>,
    config: &PreprocessConfig,
    out: &mut [f32],
) -> Result<Rect, PreprocessError> {
    let plane = config.plane_len();
    if out.len() != 3 * plane {
        return Err(PreprocessError::OutputSize { size: config.input_size, expected: 3 * plane, len: out.len() });
    }
    let (first, rest) = out.split_at_mut(plane);
    let crop = preprocess_plane(image, config, first)?;
    for chunk in rest.chunks_exact_mut(plane) {
        chunk.copy_from_slice(first);
    }
    Ok(crop)
}

/// Maps a rectangle in network-input pixels (`input_size`²) back to frame pixels through `crop`.
pub fn input_rect_to_frame(rect: Rect, crop: Rect, input_size: usize) -> Rect {
    let map = |v: usize, offset: usize, extent: usize| offset + (v * extent + input_size / 2) / input_size.max(1);
    Rect {
        x0: map(rect.x0, crop.x0, crop.width()),
        y0: map(rect.y0, crop.y0, crop.height()),
        x1: map(rect.x1, crop.x0, crop.width()),
        y1: map(rect.y1, crop.y0, crop.height()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(n: usize) -> PreprocessConfig {
        PreprocessConfig { input_size: n, ..Default::default() }
    }

    /// [`preprocess_plane`] without the minimum frame size, for frames of a few pixels.
    fn plane_of_tiny(image: &GrayImage<'_>, config: &PreprocessConfig, out: &mut [f32]) -> Rect {
        let crop = resample_crop(image, config, out).unwrap();
        config.normalization.apply_all(out);
        crop
    }

    #[test]
    fn frames_smaller_than_a_cell_after_the_crop_are_refused() {
        let px = std::vec![128u8; 64 * 64];
        for (w, h) in [(1, 1), (31, 64), (64, 20)] {
            let img = GrayImage::new(w, h, &px[..w * h]).unwrap();
            let mut out = [0.0; 4];
            let err = preprocess_plane(&img, &cfg(2), &mut out).unwrap_err();
            assert!(matches!(err, PreprocessError::FrameTooSmall { .. }), "{w}×{h}: {err}");
            assert!(std::format!("{err}").contains("thumbnail"));
        }
        // The crop counts: 36 px wide frames lose 12 % to the default device crop.
        let cropped = PreprocessConfig { crop: CropProfile { left: 0.1, top: 0.0, right: 0.9, bottom: 1.0 }, ..cfg(2) };
        let img = GrayImage::new(36, 36, &px[..36 * 36]).unwrap();
        assert!(matches!(preprocess_plane(&img, &cropped, &mut [0.0; 4]), Err(PreprocessError::FrameTooSmall { .. })));
        let img = GrayImage::new(32, 32, &px[..32 * 32]).unwrap();
        assert!(preprocess_plane(&img, &cfg(2), &mut [0.0; 4]).is_ok());
    }

    #[test]
    fn normalisation_maps_0_255_to_minus1_plus1() {
        let px = [0u8, 255, 0, 255];
        let img = GrayImage::new(2, 2, &px).unwrap();
        let mut out = [0.0; 4];
        plane_of_tiny(&img, &cfg(2), &mut out);
        assert_eq!(out, [-1.0, 1.0, -1.0, 1.0]);
        let n = Normalization::default();
        assert!((n.invert(n.apply(77.0)) - 77.0).abs() < 1e-4);
    }

    #[test]
    fn hand_computed_downsample_and_normalise() {
        // 4×2 → 2×1: src x = 0.5, 2.5 ; src y = (0 + 0.5) * 2 - 0.5 = 0.5 → mean of both rows.
        let px = [0u8, 50, 100, 150, 50, 100, 150, 200];
        let img = GrayImage::new(4, 2, &px).unwrap();
        let mut out = [0.0; 1];
        let config = PreprocessConfig { input_size: 1, ..Default::default() };
        plane_of_tiny(&img, &config, &mut out);
        // 1×1 from 4×2: src x = 0.5*4-0.5 = 1.5 → (50+100)/2 & (100+150)/2; y = 0.5 → average = 100.
        assert!((out[0] - ((100.0 / 255.0) - 0.5) / 0.5).abs() < 1e-6);
    }

    #[test]
    fn crop_profile_selects_the_image_area() {
        // 4×4 frame, crop the middle 2×2 (fractions 0.25..0.75).
        let mut px = [0u8; 16];
        px[5] = 255;
        px[6] = 255;
        px[9] = 255;
        px[10] = 255;
        let img = GrayImage::new(4, 4, &px).unwrap();
        let config = PreprocessConfig {
            input_size: 2,
            crop: CropProfile { left: 0.25, top: 0.25, right: 0.75, bottom: 0.75 },
            ..Default::default()
        };
        let mut out = [0.0; 4];
        let crop = plane_of_tiny(&img, &config, &mut out);
        assert_eq!(crop, Rect { x0: 1, y0: 1, x1: 3, y1: 3 });
        assert_eq!(out, [1.0; 4]);
    }

    #[test]
    fn three_identical_channels() {
        let px: std::vec::Vec<u8> = (0..32 * 32).map(|i| (i % 251) as u8).collect();
        let img = GrayImage::new(32, 32, &px).unwrap();
        let mut out = [0.0; 12];
        preprocess_chw(&img, &cfg(2), &mut out).unwrap();
        assert_eq!(out[0..4], out[4..8]);
        assert_eq!(out[0..4], out[8..12]);
    }

    #[test]
    fn bad_frames_are_errors() {
        assert!(matches!(GrayImage::new(0, 3, &[]), Err(PreprocessError::EmptyImage { .. })));
        assert!(matches!(GrayImage::new(2, 2, &[0; 3]), Err(PreprocessError::BufferSize { .. })));
        assert!(matches!(GrayImage::new(usize::MAX, 2, &[0; 3]), Err(PreprocessError::BufferSize { .. })));
        let px = [0u8; 4];
        let img = GrayImage::new(2, 2, &px).unwrap();
        let mut out = [0.0; 3];
        assert!(matches!(preprocess_plane(&img, &cfg(2), &mut out), Err(PreprocessError::OutputSize { .. })));
        let bad = PreprocessConfig { crop: CropProfile { left: 0.6, top: 0.0, right: 0.4, bottom: 1.0 }, ..cfg(2) };
        let mut out = [0.0; 4];
        assert!(matches!(preprocess_plane(&img, &bad, &mut out), Err(PreprocessError::InvalidCrop { .. })));
        let nan = PreprocessConfig { crop: CropProfile { left: f32::NAN, ..CropProfile::FULL }, ..cfg(2) };
        assert!(matches!(preprocess_plane(&img, &nan, &mut out), Err(PreprocessError::InvalidCrop { .. })));
        let sliver = PreprocessConfig { crop: CropProfile { left: 0.0, top: 0.0, right: 0.1, bottom: 1.0 }, ..cfg(2) };
        assert!(matches!(preprocess_plane(&img, &sliver, &mut out), Err(PreprocessError::CropTooSmall { .. })));
    }

    #[test]
    fn boxes_map_back_to_frame_pixels() {
        let crop = Rect { x0: 100, y0: 50, x1: 548, y1: 498 }; // 448×448 region
        let r = input_rect_to_frame(Rect { x0: 0, y0: 112, x1: 224, y1: 224 }, crop, 224);
        assert_eq!(r, Rect { x0: 100, y0: 274, x1: 548, y1: 498 });
    }
}
