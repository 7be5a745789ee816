//! The phantom generator (from `cdnet_shared::phantom`) and the writer of phantom data sets.
//!
//! Writes a phantom data set as an ImageFolder, with masks and per-image JSON sidecars.
//!
//! ```text
//! OUT/dataset.toml                     class order, the crop profile, how the set was made
//! OUT/<class>/<class>_00000.png        the image (8-bit gray)
//! OUT/<class>/<class>_00000.json       sidecar: lesion box, globe box, seed
//! OUT/masks/<class>/<class>_00000.png  lesion mask (255 = lesion)
//! ```
//!
//! With validation or test images requested, the same layout sits under `OUT/train`, `OUT/val` and
//! `OUT/test`. Every image's seed comes from `(seed, split, class, index)`, so a set is identical
//! however many threads wrote it, and the first `N` images of a larger set equal a set of `N`.

pub use cdnet_shared::phantom::*;

use crate::data::{DATASET_FILE, DatasetFile};
use anyhow::{Context, Result, bail};
use cdnet_shared::Rect;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What to write.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// Output folder (created; must be empty or absent).
    pub out: PathBuf,
    /// Training images per class.
    pub per_class: usize,
    /// Validation images per class (0 = none).
    pub val_per_class: usize,
    /// Test images per class (0 = none).
    pub test_per_class: usize,
    /// Base seed.
    pub seed: u64,
    /// Size and difficulty.
    pub config: PhantomConfig,
    /// Show a progress bar.
    pub progress: bool,
}

/// What was written.
#[derive(Debug, Clone, Serialize)]
pub struct PhantomSetSummary {
    /// Images written, all splits.
    pub images: usize,
    /// Images per split.
    pub splits: Vec<(String, usize)>,
    /// Wall time.
    pub seconds: f64,
}

#[derive(Serialize)]
struct Sidecar<'a> {
    class: &'a str,
    seed: u64,
    size: usize,
    difficulty: f32,
    /// `[x0, y0, x1, y1]`, end exclusive; null for Normal.
    lesion_box: Option<[usize; 4]>,
    globe_box: [usize; 4],
}

fn rect_array(r: Rect) -> [usize; 4] {
    [r.x0, r.y0, r.x1, r.y1]
}

/// Phantom frames are 48 to 4096 pixels square: the device crop must leave the preprocessing its
/// minimum (`MIN_CROP_SIDE`), and the probe link takes at most 4096.
pub fn check_size(size: usize) -> Result<()> {
    if size < 48 {
        bail!("--size {size} is too small; use at least 48 pixels (the device crop must leave 32)");
    }
    if size > 4096 {
        bail!("--size {size} is larger than the 4096-pixel frames the system handles");
    }
    Ok(())
}

/// Writes the data set; refuses to write into a non-empty folder.
pub fn write_image_folder(options: &WriteOptions) -> Result<PhantomSetSummary> {
    let out = &options.out;
    if out.exists() && out.read_dir().with_context(|| format!("cannot read {}", out.display()))?.next().is_some() {
        bail!("{} is not empty; choose a new folder (the phantom never overwrites files)", out.display());
    }
    check_size(options.config.size)?;
    if options.per_class == 0 {
        bail!("--per-class must be at least 1");
    }
    let split_counts = [("train", options.per_class), ("val", options.val_per_class), ("test", options.test_per_class)];
    let with_splits = options.val_per_class > 0 || options.test_per_class > 0;
    let mut jobs = Vec::new();
    let mut splits = Vec::new();
    for (split_id, (name, count)) in split_counts.iter().enumerate() {
        if *count == 0 {
            continue;
        }
        let root = if with_splits { out.join(name) } else { out.clone() };
        for class in PhantomClass::ALL {
            std::fs::create_dir_all(root.join(class.label()))
                .and_then(|_| std::fs::create_dir_all(root.join("masks").join(class.label())))
                .with_context(|| format!("cannot create folders under {}", root.display()))?;
            for index in 0..*count {
                jobs.push((root.clone(), split_id as u64, class, index));
            }
        }
        splits.push((name.to_string(), count * PhantomClass::ALL.len()));
    }
    let bar = if options.progress { ProgressBar::new(jobs.len() as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} images, {per_sec}, eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message("phantom");
    let start = Instant::now();
    jobs.par_iter().try_for_each(|(root, split, class, index)| -> Result<()> {
        let seed = image_seed(options.seed, *split, *class, *index);
        let image = render(*class, seed, &options.config);
        let name = format!("{}_{index:05}", class.label());
        let n = image.size as u32;
        let png = root.join(class.label()).join(format!("{name}.png"));
        save_gray(&png, &image.pixels, n)?;
        save_gray(&root.join("masks").join(class.label()).join(format!("{name}.png")), &image.lesion_mask, n)?;
        let sidecar = Sidecar {
            class: class.label(),
            seed,
            size: image.size,
            difficulty: options.config.difficulty,
            lesion_box: image.lesion_box.map(rect_array),
            globe_box: rect_array(image.globe_box),
        };
        let json_path = png.with_extension("json");
        std::fs::write(&json_path, serde_json::to_vec_pretty(&sidecar)?)
            .with_context(|| format!("cannot write {}", json_path.display()))?;
        bar.inc(1);
        Ok(())
    })?;
    bar.finish_and_clear();
    let described = DatasetFile {
        classes: Some(PhantomClass::ALL.iter().map(|c| c.label().to_string()).collect()),
        crop: Some(PHANTOM_CROP),
        source: Some(toml::toml! {
            generator = (concat!("cdnet phantom ", env!("CARGO_PKG_VERSION")))
            seed = (options.seed as i64)
            size = (options.config.size as i64)
            difficulty = (options.config.difficulty as f64)
        }),
    };
    let record_path = out.join(DATASET_FILE);
    let text = format!(
        "# Written by `cdnet phantom`; read by `cdnet train`/`eval` for the crop and class order.\n{}",
        toml::to_string_pretty(&described)?
    );
    std::fs::write(&record_path, text).with_context(|| format!("cannot write {}", record_path.display()))?;
    Ok(PhantomSetSummary { images: jobs.len(), splits, seconds: start.elapsed().as_secs_f64() })
}

fn save_gray(path: &Path, pixels: &[u8], side: u32) -> Result<()> {
    image::save_buffer(path, pixels, side, side, image::ExtendedColorType::L8)
        .with_context(|| format!("cannot write {}", path.display()))
}
