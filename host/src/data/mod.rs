//! Data sets: ImageFolder (PNG/JPEG/BMP/DICOM) → preprocessed, labelled, split samples in memory.
//!
//! Layouts understood, at the data root or under `train/`, `val/`, `test/` split folders:
//!
//! ```text
//! ROOT/<class>/*.png           ImageFolder (masks, if any, in ROOT/masks/<class>/<same name>)
//! ROOT/images/<class>/*.png    images + masks side by side (ROOT/masks/<class>/<same name>), as BUSI
//! ```
//!
//! Class order: the configured list if given, else the data set's `dataset.toml` list, else the
//! ocular order (Normal, IOT, RD, PSS, VH) when the folders are exactly those five, else sorted
//! folder names. The device crop: configured, else `dataset.toml`'s, else the whole frame.
//!
//! `dataset.toml` (optional, at the data root) describes where the data came from:
//!
//! ```toml
//! classes = ["Normal", "IOT", "RD", "PSS", "VH"]   # output order
//! [crop]                                          # the scanner's image area, fractions of the frame
//! left = 0.06
//! top = 0.075
//! right = 0.94
//! bottom = 1.0
//! ``` Without split folders, a
//! deterministic stratified split (by file, so the frames of one DICOM never straddle splits) makes
//! validation and test sets. Images are cropped and resized to the network input with the `shared`
//! code the edge uses; masks are resized the same way and kept only for scoring.

use cdnet_shared::imageio::{FileKind, file_kind, read_gray_frames};
use cdnet_shared::labels::{LabelSet, OCULAR_CLASSES};
use cdnet_shared::preprocess::crop_resize_plane;
use cdnet_shared::{CropProfile, GrayImage, PreprocessConfig};
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

mod error;
pub use error::DataError;

/// How to read a data set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// Network input side `N`. Not a key of the training config's `[data]` section (which is this
    /// struct): there it is `model.input_size`, copied in by `TrainConfig::data_config`.
    #[serde(skip)]
    pub input_size: usize,
    /// Device crop applied before resizing; `None` = the data set's `dataset.toml`, else none.
    pub crop: Option<CropProfile>,
    /// Class names in output order; `None` = `dataset.toml`, else from the folders.
    pub classes: Option<Vec<String>>,
    /// Share of each class held out for validation when there is no `val/` folder.
    pub val_fraction: f32,
    /// Share of each class held out for testing when there is no `test/` folder and no split folders.
    pub test_fraction: f32,
    /// Seed of the stratified split.
    pub split_seed: u64,
    /// Skip unreadable images and empty class folders with a warning instead of stopping.
    pub skip_bad: bool,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            input_size: 224,
            crop: None,
            classes: None,
            val_fraction: 0.2,
            test_fraction: 0.0,
            split_seed: 0,
            skip_bad: false,
        }
    }
}

/// One preprocessed image.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Where it came from: path relative to the data root, plus `#frame` for DICOM frames.
    pub id: String,
    /// Class index.
    pub label: usize,
    /// `N × N` intensities (0…255) after device crop and resize, before normalisation.
    pub image: Vec<f32>,
    /// `N × N` lesion mask (1 = lesion) if the data set has one for this image.
    pub mask: Option<Vec<u8>>,
}

/// A loaded data set.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// Classes in output order.
    pub labels: LabelSet,
    /// Network input side.
    pub input_size: usize,
    /// The device crop that was applied.
    pub crop: CropProfile,
    /// Training samples.
    pub train: Vec<Sample>,
    /// Validation samples.
    pub val: Vec<Sample>,
    /// Test samples.
    pub test: Vec<Sample>,
    /// What happened while loading.
    pub report: LoadReport,
}

/// Warnings and facts gathered while loading.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadReport {
    /// One line per problem that did not stop loading.
    pub warnings: Vec<String>,
    /// Files skipped (unreadable, with `skip_bad`).
    pub skipped: usize,
    /// Smallest and largest source image size seen, `(width, height)`.
    pub size_range: Option<((u32, u32), (u32, u32))>,
    /// Whether the splits came from folders (`true`) or were drawn (`false`).
    pub split_folders: bool,
}

impl Dataset {
    /// The split to report final metrics on: test if present, else validation.
    pub fn eval_split(&self) -> (&'static str, &[Sample]) {
        if self.test.is_empty() { ("val", &self.val) } else { ("test", &self.test) }
    }

    /// Samples per class in `samples`.
    pub fn class_counts(&self, samples: &[Sample]) -> Vec<usize> {
        let mut counts = vec![0; self.labels.len()];
        for s in samples {
            counts[s.label] += 1;
        }
        counts
    }
}

/// The optional `dataset.toml` at the root of a data set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetFile {
    /// Output class order.
    pub classes: Option<Vec<String>>,
    /// The scanner's image area.
    pub crop: Option<CropProfile>,
    /// Free-form provenance (e.g. how a phantom set was generated).
    pub source: Option<toml::Table>,
}

/// File name of the data set description.
pub const DATASET_FILE: &str = "dataset.toml";

/// Reads `root/dataset.toml` if it exists.
pub fn read_dataset_file(root: &Path) -> Result<Option<DatasetFile>, DataError> {
    let path = root.join(DATASET_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let bad = |message: String| DataError::DatasetFile { path: path.clone(), message };
    let text = std::fs::read_to_string(&path).map_err(|e| bad(e.to_string()))?;
    let file: DatasetFile = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    if let Some(crop) = &file.crop {
        crop.validate().map_err(|e| bad(e.to_string()))?;
    }
    Ok(Some(file))
}

/// A class folder found on disk, with its mask folder.
#[derive(Debug, Clone)]
struct ClassFolder {
    name: String,
    images: PathBuf,
    masks: PathBuf,
}

/// One image file to load.
#[derive(Debug, Clone)]
struct SourceFile {
    path: PathBuf,
    mask: Option<PathBuf>,
    label: usize,
}

const SPLITS: [&str; 3] = ["train", "val", "test"];

/// Loads a data set from `root`.
pub fn load(root: &Path, config: &DataConfig) -> Result<Dataset, DataError> {
    if !root.is_dir() {
        return Err(DataError::NotFound(root.to_path_buf()));
    }
    let described = read_dataset_file(root)?.unwrap_or_default();
    let config = &DataConfig {
        crop: config.crop.or(described.crop),
        classes: config.classes.clone().or(described.classes),
        ..config.clone()
    };
    let crop = config.crop.unwrap_or(CropProfile::FULL);
    let mut report = LoadReport::default();
    let split_roots: Vec<(&'static str, PathBuf)> =
        SPLITS.iter().map(|s| (*s, root.join(s))).filter(|(_, p)| p.is_dir()).collect();
    report.split_folders = split_roots.iter().any(|(s, _)| *s == "train");
    if let (false, Some((found, _))) = (report.split_folders, split_roots.first()) {
        return Err(DataError::NoTrainSplit { root: root.to_path_buf(), found });
    }
    let (labels, files_by_split) = if report.split_folders {
        let train = non_empty(
            list_files(root, &class_folders(&root.join("train"))?, config, &mut report)?,
            config,
            &mut report,
        )?;
        let labels = label_set(root, &train, config)?;
        let train = labelled(train, &labels, "train", config, &mut report)?;
        let mut by_split = Vec::new();
        if split_roots.iter().any(|(s, _)| *s == "val") {
            by_split.push(("train", train));
        } else {
            // No val/ folder: hold out `val_fraction` of train/, stratified, for model selection.
            let drawn = DataConfig { test_fraction: 0.0, ..config.clone() };
            by_split.extend(
                stratified_split(train, &labels, &drawn, &mut report).into_iter().filter(|(s, _)| *s != "test"),
            );
        }
        for (split, path) in split_roots.iter().filter(|(s, _)| *s != "train") {
            let listed = list_files(root, &class_folders(path)?, config, &mut report)?;
            by_split.push((*split, labelled(listed, &labels, split, config, &mut report)?));
        }
        (labels, by_split)
    } else {
        let listed = non_empty(list_files(root, &class_folders(root)?, config, &mut report)?, config, &mut report)?;
        let labels = label_set(root, &listed, config)?;
        let files = labelled(listed, &labels, "train", config, &mut report)?;
        (labels.clone(), stratified_split(files, &labels, config, &mut report))
    };
    let preprocess = PreprocessConfig { input_size: config.input_size, crop, ..Default::default() };
    let mut dataset = Dataset {
        labels,
        input_size: config.input_size,
        crop,
        train: Vec::new(),
        val: Vec::new(),
        test: Vec::new(),
        report: LoadReport::default(),
    };
    let mut sizes: Vec<(u32, u32)> = Vec::new();
    for (split, files) in files_by_split {
        let loaded: Vec<Result<Loaded, DataError>> =
            files.par_iter().map(|f| load_file(root, f, &preprocess)).collect();
        let mut samples = Vec::new();
        for (file, result) in files.iter().zip(loaded) {
            match result {
                Ok(loaded) => {
                    report.warnings.extend(loaded.warning);
                    for (sample, size) in loaded.samples {
                        sizes.push(size);
                        samples.push(sample);
                    }
                }
                Err(error) if config.skip_bad => {
                    report.skipped += 1;
                    report.warnings.push(format!("skipped {}: {error}", file.path.display()));
                }
                Err(error) => return Err(error),
            }
        }
        match split {
            "train" => dataset.train = samples,
            "val" => dataset.val = samples,
            _ => dataset.test = samples,
        }
    }
    if dataset.train.is_empty() {
        return Err(DataError::EmptySplit("train"));
    }
    if let (Some(min), Some(max)) = (sizes.iter().min_by_key(|s| s.0 * s.1), sizes.iter().max_by_key(|s| s.0 * s.1)) {
        report.size_range = Some((*min, *max));
        if min != max {
            report.warnings.push(format!(
                "image sizes vary from {}×{} to {}×{}; all are cropped and resized to {n}×{n}",
                min.0,
                min.1,
                max.0,
                max.1,
                n = config.input_size
            ));
        }
    }
    for (index, count) in dataset.class_counts(&dataset.train).iter().enumerate() {
        if *count < 2 {
            report.warnings.push(format!(
                "class {:?} has only {count} training image(s); its metrics will be unreliable",
                dataset.labels.name(index).unwrap_or("?")
            ));
        }
    }
    for warning in &report.warnings {
        tracing::warn!("{warning}");
    }
    dataset.report = report;
    Ok(dataset)
}

/// Class folders under a split root (or the data root): `images/<class>` if an `images` folder
/// exists, else `<class>`; `masks` is reserved for masks.
fn class_folders(split_root: &Path) -> Result<Vec<ClassFolder>, DataError> {
    let images = if split_root.join("images").is_dir() { split_root.join("images") } else { split_root.to_path_buf() };
    let masks = split_root.join("masks");
    let entries =
        std::fs::read_dir(&images).map_err(|e| DataError::Walk { path: images.clone(), reason: e.to_string() })?;
    let mut classes = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| DataError::Walk { path: images.clone(), reason: e.to_string() })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if !path.is_dir() || name.starts_with('.') || name == "masks" || SPLITS.contains(&name.as_str()) {
            continue;
        }
        classes.push(ClassFolder { masks: masks.join(&name), name, images: path });
    }
    classes.sort_by(|a, b| a.name.cmp(&b.name));
    if classes.is_empty() {
        return Err(DataError::NoClasses(split_root.to_path_buf()));
    }
    Ok(classes)
}

/// The label set: configured, else the ocular order when the folders are the five ocular classes,
/// else sorted folder names.
fn label_set(root: &Path, classes: &[ListedClass], config: &DataConfig) -> Result<LabelSet, DataError> {
    let found: BTreeSet<&str> = classes.iter().map(|c| c.folder.name.as_str()).collect();
    if let Some(configured) = &config.classes {
        let wanted: BTreeSet<&str> = configured.iter().map(String::as_str).collect();
        let missing = wanted.difference(&found).count();
        let extra = found.difference(&wanted).count();
        if missing > 0 || (extra > 0 && !config.skip_bad) {
            return Err(DataError::ClassMismatch {
                configured: configured.join(", "),
                found: found.into_iter().collect::<Vec<_>>().join(", "),
                root: root.to_path_buf(),
            });
        }
        return Ok(LabelSet::new(configured.iter().cloned())?);
    }
    let ocular: BTreeSet<&str> = OCULAR_CLASSES.iter().map(|(code, _)| *code).collect();
    if found == ocular {
        return Ok(LabelSet::ocular());
    }
    Ok(LabelSet::new(found.into_iter().map(str::to_string))?)
}

/// A class folder and its image files (sorted), each with its mask if one exists.
struct ListedClass {
    folder: ClassFolder,
    files: Vec<(PathBuf, Option<PathBuf>)>,
}

/// Lists the image files of every class folder.
fn list_files(
    root: &Path,
    classes: &[ClassFolder],
    config: &DataConfig,
    report: &mut LoadReport,
) -> Result<Vec<ListedClass>, DataError> {
    let mut listed = Vec::new();
    for class in classes {
        let mut files = Vec::new();
        for entry in walkdir::WalkDir::new(&class.images).follow_links(true).sort_by_file_name() {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    let path = error.path().unwrap_or(&class.images).to_path_buf();
                    let walk = DataError::Walk { path, reason: error.to_string() };
                    if config.skip_bad {
                        report.warnings.push(walk.to_string());
                        continue;
                    }
                    return Err(walk);
                }
            };
            if !entry.file_type().is_file() {
                continue;
            }
            let path = entry.path();
            let name = entry.file_name().to_string_lossy();
            if name.starts_with('.') || path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json")) {
                continue; // hidden files and phantom sidecars
            }
            if file_kind(path).is_none() {
                report.warnings.push(format!(
                    "ignored {}: not an image (png, jpg, jpeg, bmp, dcm)",
                    path.strip_prefix(root).unwrap_or(path).display()
                ));
                continue;
            }
            let relative = path.strip_prefix(&class.images).unwrap_or(path);
            let mask = [class.masks.join(relative), class.masks.join(relative).with_extension("png")]
                .into_iter()
                .find(|m| m.is_file());
            files.push((path.to_path_buf(), mask));
        }
        listed.push(ListedClass { folder: class.clone(), files });
    }
    Ok(listed)
}

/// Training classes must have images: an empty folder is an error, or with `skip_bad` (and no
/// configured class list) it is dropped from the label set with a warning.
fn non_empty(
    listed: Vec<ListedClass>,
    config: &DataConfig,
    report: &mut LoadReport,
) -> Result<Vec<ListedClass>, DataError> {
    let mut kept = Vec::new();
    for class in listed {
        let listed_class = config.classes.as_ref().is_some_and(|c| c.contains(&class.folder.name));
        if !class.files.is_empty() {
            kept.push(class);
        } else if listed_class {
            // --skip-bad cannot help: the class list (config or dataset.toml) names this class.
            return Err(DataError::EmptyListedClass(class.folder.images));
        } else if config.skip_bad {
            report.warnings.push(format!("ignored empty class folder {} (not a class)", class.folder.images.display()));
        } else {
            return Err(DataError::EmptyClass(class.folder.images));
        }
    }
    Ok(kept)
}

/// Attaches class indices; a folder whose class is not in `labels` is an error (or, for folders
/// outside a configured list, a warning with `skip_bad`).
fn labelled(
    listed: Vec<ListedClass>,
    labels: &LabelSet,
    split: &str,
    config: &DataConfig,
    report: &mut LoadReport,
) -> Result<Vec<SourceFile>, DataError> {
    let mut files = Vec::new();
    for class in listed {
        match labels.index_of(&class.folder.name) {
            Some(label) => files.extend(class.files.into_iter().map(|(path, mask)| SourceFile { path, mask, label })),
            None if split == "train" || (config.skip_bad && class.files.is_empty()) => {
                report.warnings.push(format!("ignored folder {}: not a class", class.folder.images.display()));
            }
            None => {
                return Err(DataError::UnknownClass {
                    class: class.folder.name,
                    split: split.to_string(),
                    known: labels.names().join(", "),
                });
            }
        }
    }
    Ok(files)
}

/// Splits files per class: a deterministic shuffle, then the first `val_fraction` to validation
/// and the next `test_fraction` to test, keeping at least one file per class in training.
fn stratified_split(
    files: Vec<SourceFile>,
    labels: &LabelSet,
    config: &DataConfig,
    report: &mut LoadReport,
) -> Vec<(&'static str, Vec<SourceFile>)> {
    let (mut train, mut val, mut test) = (Vec::new(), Vec::new(), Vec::new());
    for label in 0..labels.len() {
        let mut class: Vec<SourceFile> = files.iter().filter(|f| f.label == label).cloned().collect();
        let mut rng = ChaCha8Rng::seed_from_u64(config.split_seed ^ (label as u64).wrapping_mul(0x9E37_79B9));
        class.shuffle(&mut rng);
        let n = class.len();
        let take = |fraction: f32| ((n as f32 * fraction).round() as usize).max((fraction > 0.0 && n >= 2) as usize);
        let n_val = take(config.val_fraction).min(n.saturating_sub(1));
        let n_test = take(config.test_fraction).min(n.saturating_sub(1 + n_val));
        if config.val_fraction > 0.0 && n_val == 0 {
            report.warnings.push(format!(
                "class {:?} has {n} image(s): none left for validation",
                labels.name(label).unwrap_or("?")
            ));
        }
        let mut rest = class.into_iter();
        val.extend(rest.by_ref().take(n_val));
        test.extend(rest.by_ref().take(n_test));
        train.extend(rest);
    }
    vec![("train", train), ("val", val), ("test", test)]
}

/// The samples of one file with their source sizes, and a warning about its mask if any.
struct Loaded {
    samples: Vec<(Sample, (u32, u32))>,
    warning: Option<String>,
}

/// Reads one file (several samples for a multi-frame DICOM) and preprocesses it.
fn load_file(root: &Path, file: &SourceFile, config: &PreprocessConfig) -> Result<Loaded, DataError> {
    let frames = read_gray_frames(&file.path).map_err(DataError::BadImage)?;
    let mask_frame = match &file.mask {
        Some(path) => read_gray_frames(path).map_err(DataError::BadImage)?.into_iter().next(),
        None => None,
    };
    let n = config.input_size;
    let relative = file.path.strip_prefix(root).unwrap_or(&file.path).display().to_string();
    let dicom = file_kind(&file.path) == Some(FileKind::Dicom);
    let preprocess_error = |source| DataError::Preprocess { path: file.path.clone(), source };
    let mut warning = None;
    if let (Some(m), Some(f), Some(path)) = (&mask_frame, frames.first(), &file.mask)
        && (m.width, m.height) != (f.width, f.height)
    {
        warning = Some(format!(
            "ignored mask {}: {}×{} but the image is {}×{}",
            path.display(),
            m.width,
            m.height,
            f.width,
            f.height
        ));
    }
    let samples = frames
        .iter()
        .enumerate()
        .map(|(index, frame)| {
            let image =
                GrayImage::new(frame.width as usize, frame.height as usize, &frame.pixels).map_err(preprocess_error)?;
            let mut plane = vec![0.0; n * n];
            crop_resize_plane(&image, config, &mut plane).map_err(preprocess_error)?;
            let mask = match &mask_frame {
                Some(m) if (m.width, m.height) == (frame.width, frame.height) => {
                    let gray =
                        GrayImage::new(m.width as usize, m.height as usize, &m.pixels).map_err(preprocess_error)?;
                    let mut resized = vec![0.0; n * n];
                    crop_resize_plane(&gray, config, &mut resized).map_err(preprocess_error)?;
                    Some(resized.iter().map(|&v| u8::from(v >= 127.5)).collect())
                }
                _ => None,
            };
            let id = if dicom { format!("{relative}#{index}") } else { relative.clone() };
            Ok((Sample { id, label: file.label, image: plane, mask }, (frame.width, frame.height)))
        })
        .collect::<Result<Vec<_>, DataError>>()?;
    Ok(Loaded { samples, warning })
}
