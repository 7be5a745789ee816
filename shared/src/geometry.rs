//! Pixel rectangles.

use serde::{Deserialize, Serialize};

/// An axis-aligned pixel rectangle, start inclusive and end exclusive (`x0..x1`, `y0..y1`), like a
/// Rust range or a NumPy slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rect {
    /// First column.
    pub x0: usize,
    /// First row.
    pub y0: usize,
    /// One past the last column.
    pub x1: usize,
    /// One past the last row.
    pub y1: usize,
}

impl Rect {
    /// The whole `width × height` image.
    pub const fn full(width: usize, height: usize) -> Self {
        Rect { x0: 0, y0: 0, x1: width, y1: height }
    }

    /// Width in pixels (0 for an inverted rectangle).
    pub const fn width(&self) -> usize {
        self.x1.saturating_sub(self.x0)
    }

    /// Height in pixels (0 for an inverted rectangle).
    pub const fn height(&self) -> usize {
        self.y1.saturating_sub(self.y0)
    }

    /// True when the rectangle covers no pixel.
    pub const fn is_empty(&self) -> bool {
        self.width() == 0 || self.height() == 0
    }

    /// True when the rectangle is non-empty and lies inside a `width × height` image.
    pub const fn fits_in(&self, width: usize, height: usize) -> bool {
        !self.is_empty() && self.x1 <= width && self.y1 <= height
    }

    /// Whether the pixel `(x, y)` lies inside.
    pub const fn contains(&self, x: usize, y: usize) -> bool {
        x >= self.x0 && x < self.x1 && y >= self.y0 && y < self.y1
    }
}
