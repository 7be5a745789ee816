//! Where the rendered screen goes: a Linux framebuffer on the board, PNG snapshots for tests and
//! docs, or nowhere.

use crate::screen::Canvas;
use anyhow::{Context, Result, bail};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A screen the renderer's canvas can be shown on.
pub trait Display: Send {
    /// Pixel size of the screen.
    fn size(&self) -> (u32, u32);
    /// Shows a canvas of exactly [`size`](Self::size). May skip a frame (a throttled target).
    fn show(&mut self, canvas: &Canvas) -> Result<()>;
    /// Shows the last screen of a run; never skipped.
    fn finish(&mut self, canvas: &Canvas) -> Result<()> {
        self.show(canvas)
    }
}

/// No screen (headless service, benchmarks).
#[derive(Debug)]
pub struct NoDisplay {
    /// Canvas size to render at anyway.
    pub size: (u32, u32),
}

impl Display for NoDisplay {
    fn size(&self) -> (u32, u32) {
        self.size
    }
    fn show(&mut self, _canvas: &Canvas) -> Result<()> {
        Ok(())
    }
}

/// Writes `latest.png` at most every `interval` (and always the last screen of a run).
#[derive(Debug)]
pub struct PngDisplay {
    dir: PathBuf,
    size: (u32, u32),
    interval: Duration,
    last: Option<Instant>,
}

impl PngDisplay {
    /// Creates the folder.
    pub fn new(dir: PathBuf, size: (u32, u32), interval: Duration) -> Result<Self> {
        std::fs::create_dir_all(&dir).with_context(|| format!("cannot create display folder {}", dir.display()))?;
        Ok(PngDisplay { dir, size, interval, last: None })
    }

    /// Writes `canvas` as a PNG file.
    pub fn save(canvas: &Canvas, path: &std::path::Path) -> Result<()> {
        image::save_buffer(path, canvas.rgb(), canvas.width(), canvas.height(), image::ExtendedColorType::Rgb8)
            .with_context(|| format!("cannot write {}", path.display()))
    }
}

impl Display for PngDisplay {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn show(&mut self, canvas: &Canvas) -> Result<()> {
        if self.last.is_some_and(|t| t.elapsed() < self.interval) {
            return Ok(());
        }
        self.finish(canvas)
    }

    fn finish(&mut self, canvas: &Canvas) -> Result<()> {
        self.last = Some(Instant::now());
        // Write then rename, so a viewer never reads half a PNG.
        let tmp = self.dir.join(".latest.png.tmp");
        image::save_buffer_with_format(
            &tmp,
            canvas.rgb(),
            canvas.width(),
            canvas.height(),
            image::ExtendedColorType::Rgb8,
            image::ImageFormat::Png,
        )
        .with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, self.dir.join("latest.png")).context("cannot publish latest.png")?;
        Ok(())
    }
}

/// A Linux framebuffer device (`/dev/fb0`), 16-bit RGB565 or 32-bit XRGB8888. The canvas is drawn at
/// the top-left corner; a larger screen keeps its border.
pub struct FramebufferDisplay {
    fb: framebuffer::Framebuffer,
    path: PathBuf,
    size: (u32, u32),
    bytes_per_pixel: usize,
    line_length: usize,
    red: (u32, u32),
    green: (u32, u32),
    blue: (u32, u32),
}

impl std::fmt::Debug for FramebufferDisplay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FramebufferDisplay").field("path", &self.path).field("size", &self.size).finish()
    }
}

impl FramebufferDisplay {
    /// Opens the device and checks it can hold a `size` canvas.
    pub fn open(path: PathBuf, size: (u32, u32)) -> Result<Self> {
        let fb = framebuffer::Framebuffer::new(&path).map_err(|e| {
            anyhow::anyhow!("cannot open framebuffer {}: {e:?} (is this a board with a screen?)", path.display())
        })?;
        let var = &fb.var_screen_info;
        let bytes_per_pixel = var.bits_per_pixel as usize / 8;
        if !matches!(bytes_per_pixel, 2 | 4) {
            bail!(
                "framebuffer {} has {} bits per pixel; RGB565 and XRGB8888 are supported",
                path.display(),
                var.bits_per_pixel
            );
        }
        if var.xres < size.0 || var.yres < size.1 {
            bail!(
                "framebuffer {} is {}×{}, smaller than the {}×{} layout; pick --layout 320x240",
                path.display(),
                var.xres,
                var.yres,
                size.0,
                size.1
            );
        }
        let line_length = fb.fix_screen_info.line_length as usize;
        let field = |b: &framebuffer::Bitfield| (b.offset, b.length);
        let (red, green, blue) = (field(&var.red), field(&var.green), field(&var.blue));
        Ok(FramebufferDisplay { fb, path, size, bytes_per_pixel, line_length, red, green, blue })
    }
}

impl Display for FramebufferDisplay {
    fn size(&self) -> (u32, u32) {
        self.size
    }

    fn show(&mut self, canvas: &Canvas) -> Result<()> {
        let pack = |c: u8, (offset, length): (u32, u32)| ((c as u32) >> (8 - length.min(8))) << offset;
        for y in 0..canvas.height() as usize {
            let row = &mut self.fb.frame[y * self.line_length..][..canvas.width() as usize * self.bytes_per_pixel];
            for x in 0..canvas.width() as usize {
                let [r, g, b] = canvas.pixel(x as u32, y as u32);
                let v = pack(r, self.red) | pack(g, self.green) | pack(b, self.blue);
                let o = x * self.bytes_per_pixel;
                row[o..o + self.bytes_per_pixel].copy_from_slice(&v.to_le_bytes()[..self.bytes_per_pixel]);
            }
        }
        Ok(())
    }
}
