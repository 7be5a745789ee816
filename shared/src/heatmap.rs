//! Where the cells of an attention map lie in the image: the one heatmap geometry that the zoom
//! box, the pointing game, the host's overlays and the edge screen all use.
//!
//! The backbone pads TF-style ("SAME", asymmetric for stride 2: nothing before, the rest after).
//! With every feature map even-sized (inputs are multiples of 32), a stride-2 layer's output `o`
//! is centred on input `2·o + 1`, so after `log2(S)` such layers cell `i` of a stride-`S` map is
//! centred on pixel `S·i + S − 1`: at continuous coordinate `S·i + S − ½` (pixel `p` spans
//! `[p, p + 1)`). Plain bilinear upsampling (`align_corners=False`) would put that centre at
//! `S·i + S/2`, `(S − 1)/2` pixels up and to the left of where the network looked (15.5 px at
//! stride 32). Values between cell centres are interpolated bilinearly; beyond the outer centres
//! they are held, as `align_corners=False` holds them.

use crate::geometry::Rect;
#[cfg(feature = "alloc")]
use crate::postprocess::quantize_heatmap;
#[cfg(feature = "alloc")]
use alloc::vec::Vec;

/// Why a heatmap geometry could not be set up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeatmapError {
    /// Zero cells, a zero input, or an input that is not a whole number of cells.
    #[error("a {cells}×{cells} attention map cannot cover a {input_size}² input (it must divide it)")]
    Size {
        /// Cells per side.
        cells: usize,
        /// Input side in pixels.
        input_size: usize,
    },
    /// The map buffer does not hold `cells²` values.
    #[error("attention map holds {len} values, expected {expected}")]
    Length {
        /// Values present.
        len: usize,
        /// `cells²`.
        expected: usize,
    },
}

/// A square `cells × cells` attention map over a square `input_size²` network input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeatmapGeometry {
    cells: usize,
    input_size: usize,
}

impl HeatmapGeometry {
    /// The geometry of a map from a TF-"SAME"-padded backbone whose total stride is
    /// `input_size / cells`.
    pub fn new(cells: usize, input_size: usize) -> Result<Self, HeatmapError> {
        if cells == 0 || input_size == 0 || !input_size.is_multiple_of(cells) {
            return Err(HeatmapError::Size { cells, input_size });
        }
        Ok(Self { cells, input_size })
    }

    /// Cells per side.
    pub const fn cells(&self) -> usize {
        self.cells
    }

    /// Input side in pixels.
    pub const fn input_size(&self) -> usize {
        self.input_size
    }

    /// Input pixels per cell (the total stride `S`).
    pub const fn stride(&self) -> usize {
        self.input_size / self.cells
    }

    /// Continuous input coordinate of cell `i`'s receptive-field centre along one axis.
    pub fn cell_centre(&self, i: usize) -> f32 {
        let s = self.stride() as f32;
        s * i as f32 + s - 0.5
    }

    /// The `S × S` input region centred on cell `(cx, cy)`, clipped to the image.
    pub fn cell_region(&self, cx: usize, cy: usize) -> Rect {
        let s = self.stride();
        let half = s / 2;
        let span = |i: usize| {
            let centre = s * i + s - 1; // the centre pixel
            let start = (centre + 1).saturating_sub(half);
            (start.min(self.input_size), (start + s).min(self.input_size))
        };
        let ((x0, x1), (y0, y1)) = (span(cx), span(cy));
        Rect { x0, y0, x1, y1 }
    }

    /// The map's value at continuous input coordinates `(x, y)`.
    pub fn value_at(&self, map: &[f32], x: f32, y: f32) -> Result<f32, HeatmapError> {
        self.check(map)?;
        Ok(self.sample(map, x, y))
    }

    /// [`value_at`](Self::value_at) on a map already checked to hold `cells²` values.
    fn sample(&self, map: &[f32], x: f32, y: f32) -> f32 {
        let (c0, c1, tx) = self.neighbours(x);
        let (r0, r1, ty) = self.neighbours(y);
        let at = |r: usize, c: usize| map[r * self.cells + c];
        let top = at(r0, c0) + (at(r0, c1) - at(r0, c0)) * tx;
        let bottom = at(r1, c0) + (at(r1, c1) - at(r1, c0)) * tx;
        top + (bottom - top) * ty
    }

    /// Calls `f(x, y, value)` for every pixel of a `width × height` picture of the whole input
    /// (the network input itself when both equal `input_size`; a screen panel otherwise).
    pub fn for_each_pixel(
        &self,
        map: &[f32],
        width: usize,
        height: usize,
        mut f: impl FnMut(usize, usize, f32),
    ) -> Result<(), HeatmapError> {
        self.check(map)?;
        let (sx, sy) = (self.input_size as f32 / width as f32, self.input_size as f32 / height as f32);
        for y in 0..height {
            let iy = (y as f32 + 0.5) * sy;
            for x in 0..width {
                f(x, y, self.sample(map, (x as f32 + 0.5) * sx, iy));
            }
        }
        Ok(())
    }

    /// The heatmap as a `width × height` picture of the whole input, written into `out`.
    pub fn render(&self, map: &[f32], width: usize, height: usize, out: &mut [f32]) -> Result<(), HeatmapError> {
        if out.len() != width * height {
            return Err(HeatmapError::Length { len: out.len(), expected: width * height });
        }
        self.for_each_pixel(map, width, height, |x, y, v| out[y * width + x] = v)
    }

    /// The input pixel `(x, y)` where the heatmap is largest: the centre pixel of the peak cell.
    ///
    /// The bilinear heatmap takes its maximum at a cell centre, but it also holds the edge cells'
    /// values flat out to the image border, so a row-major search would report the plateau's
    /// first pixel (the image's left or top edge) for a peak in the first row or column, up to
    /// `S − 1` pixels from where the network looked. The peak cell's centre is the point it names.
    pub fn peak_pixel(&self, map: &[f32]) -> Result<(usize, usize), HeatmapError> {
        let (cx, cy) = self.peak_cell(map)?;
        let centre_pixel = |i: usize| (self.stride() * i + self.stride() - 1).min(self.input_size - 1);
        Ok((centre_pixel(cx), centre_pixel(cy)))
    }

    /// The cell `(cx, cy)` with the largest value (the first one on ties); NaN values never win.
    pub fn peak_cell(&self, map: &[f32]) -> Result<(usize, usize), HeatmapError> {
        self.check(map)?;
        let mut best = (0, f32::NEG_INFINITY);
        for (i, &v) in map.iter().enumerate() {
            if v > best.1 {
                best = (i, v);
            }
        }
        Ok((best.0 % self.cells, best.0 / self.cells))
    }

    fn check(&self, map: &[f32]) -> Result<(), HeatmapError> {
        let expected = self.cells * self.cells;
        if map.len() != expected {
            return Err(HeatmapError::Length { len: map.len(), expected });
        }
        Ok(())
    }

    /// The two cells around continuous coordinate `v` and the weight of the second.
    fn neighbours(&self, v: f32) -> (usize, usize, f32) {
        let s = self.stride() as f32;
        let u = ((v - (s - 0.5)) / s).clamp(0.0, (self.cells - 1) as f32);
        let i0 = u as usize; // u ≥ 0, so this is floor
        let i1 = (i0 + 1).min(self.cells - 1);
        (i0, i1, u - i0 as f32)
    }
}

/// A `cells × cells` attention map over an `input_size²` input as a `width × height` picture of
/// heatmap bytes (255 at the peak), placed by [`HeatmapGeometry`]: what the edge screen and the
/// host's report panels draw. All zero (nothing highlighted) when there is no map (`cells == 0`)
/// or it does not fit the input.
#[cfg(feature = "alloc")]
pub fn heatmap_picture(map: &[f32], cells: usize, input_size: usize, width: usize, height: usize) -> Vec<u8> {
    let mut picture = alloc::vec![0u8; width * height];
    let mut values = alloc::vec![0.0f32; width * height];
    let placed = HeatmapGeometry::new(cells, input_size).and_then(|g| g.render(map, width, height, &mut values));
    if cells > 0 && placed.is_ok() {
        quantize_heatmap(&values, &mut picture);
    }
    picture
}

/// The attention map as the probe protocol carries it: at most `max_side × max_side` cells (a
/// larger map is resized down bilinearly), as bytes with 255 at the peak. Returns the side and the
/// bytes.
#[cfg(feature = "alloc")]
pub fn wire_cells(map: &[f32], side: usize, max_side: usize) -> (usize, Vec<u8>) {
    let cells = side.min(max_side);
    let mut values = map.to_vec();
    if cells != side {
        let mut small = alloc::vec![0.0; cells * cells];
        let full = Rect::full(side, side);
        if crate::resize::resize_bilinear(map, side, side, full, &mut small, cells, cells).is_ok() {
            values = small;
        }
    }
    let mut bytes = alloc::vec![0u8; values.len()];
    quantize_heatmap(&values, &mut bytes);
    (cells, bytes)
}

/// The means of the 2 × 2 blocks of a `side × side` map (`side` even): AttS from the stride-16
/// heatmap, exactly as the network forms it (the texture branch is 2 × 2 average-pooled, the
/// semantic branch is constant over each block). An odd side has no such blocks: empty.
#[cfg(feature = "alloc")]
pub fn block_mean(map: &[f32], side: usize) -> Vec<f32> {
    if !side.is_multiple_of(2) || map.len() != side * side {
        return Vec::new();
    }
    let half = side / 2;
    let at = |r: usize, c: usize| map[r * side + c];
    (0..half * half)
        .map(|i| {
            let (r, c) = (2 * (i / half), 2 * (i % half));
            (at(r, c) + at(r, c + 1) + at(r + 1, c) + at(r + 1, c + 1)) / 4.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_means_are_attention_cells() {
        let map = [1.0, 3.0, 0.0, 0.0, 5.0, 7.0, 0.0, 4.0, 0.0, 0.0, 2.0, 2.0, 0.0, 8.0, 2.0, 2.0];
        assert_eq!(block_mean(&map, 4), alloc::vec![4.0, 1.0, 2.0, 2.0]);
        assert!(block_mean(&map[..9], 3).is_empty() && block_mean(&map, 2).is_empty());
    }

    #[test]
    fn pictures_and_wire_cells_are_the_map_quantised() {
        // One hot cell of a 2 × 2 map over a 64-px input: the picture peaks (255) at its centre pixel.
        let map = [0.0, 0.0, 0.0, 1.0];
        let picture = heatmap_picture(&map, 2, 64, 64, 64);
        let (x, y) = HeatmapGeometry::new(2, 64).unwrap().peak_pixel(&map).unwrap();
        assert_eq!(picture[y * 64 + x], 255);
        assert_eq!(picture[0], 0);
        assert!(heatmap_picture(&map, 0, 64, 8, 8).iter().all(|&v| v == 0), "no map, no highlight");
        assert!(heatmap_picture(&map, 3, 64, 8, 8).iter().all(|&v| v == 0), "a map that does not fit");
        assert_eq!(wire_cells(&map, 2, 16), (2, alloc::vec![0, 0, 0, 255]));
        let big = alloc::vec![1.0f32; 20 * 20];
        let (side, bytes) = wire_cells(&big, 20, 16);
        assert_eq!((side, bytes.len()), (16, 256));
    }

    #[test]
    fn cell_centres_follow_tf_same_padding() {
        // Stride 32: cell 0 is centred on pixel 31, cell 6 on pixel 223 of a 224 input.
        let g = HeatmapGeometry::new(7, 224).unwrap();
        assert_eq!(g.cell_centre(0), 31.5);
        assert_eq!(g.cell_centre(6), 223.5);
        // The value at a cell centre is that cell's value exactly.
        let mut map = [0.0f32; 49];
        map[2 * 7 + 3] = 1.0;
        assert_eq!(g.value_at(&map, g.cell_centre(3), g.cell_centre(2)).unwrap(), 1.0);
        assert_eq!(g.peak_pixel(&map).unwrap(), (3 * 32 + 31, 2 * 32 + 31));
        assert_eq!(g.peak_cell(&map).unwrap(), (3, 2));
        // A peak in the first column sits at its centre, not on the plateau's left edge.
        let mut edge = [0.0f32; 49];
        edge[4 * 7] = 1.0;
        assert_eq!(g.peak_pixel(&edge).unwrap(), (31, 4 * 32 + 31));
        let rendered = {
            let mut out = std::vec![0.0f32; 224 * 224];
            g.render(&edge, 224, 224, &mut out).unwrap();
            out
        };
        assert_eq!(rendered[(4 * 32 + 31) * 224 + 31], 1.0, "the peak pixel carries the maximum");
    }

    #[test]
    fn a_stride_two_conv_stack_centres_cells_where_the_formula_says() {
        // Track the centre of output index o through five TF-SAME stride-2 layers of kernel 3
        // (pad before 0) and kernel 5 (pad before 1): input centre = 2·o + (k − 1)/2 − pad_before.
        for kernel_and_pad in [(3usize, 0usize), (5, 1)] {
            for o in 0..7usize {
                let mut c = o;
                for _ in 0..5 {
                    c = 2 * c + (kernel_and_pad.0 - 1) / 2 - kernel_and_pad.1;
                }
                let g = HeatmapGeometry::new(7, 224).unwrap();
                assert_eq!(c as f32 + 0.5, g.cell_centre(o));
            }
        }
    }

    #[test]
    fn regions_tile_the_image_around_the_centres() {
        let g = HeatmapGeometry::new(5, 160).unwrap();
        let r = g.cell_region(0, 4);
        // Centre pixel 31 (x) and 159 (y): the region [16, 48) × [144, 160) after clipping.
        assert_eq!(r, Rect { x0: 16, x1: 48, y0: 144, y1: 160 });
        assert!(r.contains(31, 159));
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(HeatmapGeometry::new(0, 224).is_err());
        assert!(HeatmapGeometry::new(5, 224).is_err());
        let g = HeatmapGeometry::new(3, 96).unwrap();
        assert_eq!(g.value_at(&[0.0; 8], 1.0, 1.0), Err(HeatmapError::Length { len: 8, expected: 9 }));
    }

    #[test]
    fn values_between_centres_interpolate_and_edges_hold() {
        let g = HeatmapGeometry::new(2, 64).unwrap();
        let map = [0.0, 1.0, 0.0, 1.0];
        // Centres at 31.5 and 63.5; halfway is 47.5.
        assert!((g.value_at(&map, 47.5, 10.0).unwrap() - 0.5).abs() < 1e-6);
        assert_eq!(g.value_at(&map, 0.0, 0.0).unwrap(), 0.0);
        assert_eq!(g.value_at(&map, 64.0, 64.0).unwrap(), 1.0);
    }
}
