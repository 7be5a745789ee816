//! Why a data set could not be loaded.

use cdnet_shared::PreprocessError;
use cdnet_shared::imageio::ImageReadError;
use cdnet_shared::labels::LabelError;
use std::path::PathBuf;

/// Why a data set could not be loaded. Every message names the file or folder and what to do.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The root is missing.
    #[error("data folder {0} does not exist; pass a folder with one sub-folder per class (or train/ and val/ splits)")]
    NotFound(PathBuf),
    /// No class folders found.
    #[error("{0} has no class folders; expected <class>/*.png (ImageFolder) or images/<class>/*.png")]
    NoClasses(PathBuf),
    /// Split folders without `train/`, which the label set is read from.
    #[error(
        "{root} has {found}/ but no train/ split, which the class list is read from; pass the split folder \
         itself (--data {root}/{found}) or add train/"
    )]
    NoTrainSplit {
        /// The data root.
        root: PathBuf,
        /// The split folder that is there.
        found: &'static str,
    },
    /// A class folder that the configured class list names has no images.
    #[error(
        "class folder {0} has no images, and the class list (data.classes or dataset.toml) names it; add images \
         or remove the class from the list"
    )]
    EmptyListedClass(PathBuf),
    /// A class folder has no images.
    #[error("class folder {0} has no images; add images or remove the folder (or pass --skip-bad to ignore it)")]
    EmptyClass(PathBuf),
    /// An image could not be read.
    #[error("{0}; fix or remove the file, or pass --skip-bad to skip unreadable files")]
    BadImage(#[source] ImageReadError),
    /// The image could not be preprocessed (e.g. the crop leaves nothing).
    #[error("cannot preprocess {path}: {source}")]
    Preprocess {
        /// The file.
        path: PathBuf,
        /// Why.
        source: PreprocessError,
    },
    /// Directory walking failed (permissions, symlink loop).
    #[error("cannot read {path}: {reason}; fix the folder (a symlink loop?) or pass --skip-bad")]
    Walk {
        /// Where.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A split has a class the training split does not.
    #[error("class {class:?} in {split}/ is not a training class ({known}); every split must use the training classes")]
    UnknownClass {
        /// The class.
        class: String,
        /// The split.
        split: String,
        /// The training classes.
        known: String,
    },
    /// The configured class list does not match the folders.
    #[error("configured classes [{configured}] do not match the class folders [{found}] in {root}")]
    ClassMismatch {
        /// From the config.
        configured: String,
        /// On disk.
        found: String,
        /// Where.
        root: PathBuf,
    },
    /// A split ended up with no samples.
    #[error("the {0} split has no images; add images or change val_fraction/test_fraction")]
    EmptySplit(&'static str),
    /// Bad class names.
    #[error("invalid class list: {0}")]
    Labels(#[from] LabelError),
    /// `dataset.toml` is malformed.
    #[error("invalid {path}: {message}")]
    DatasetFile {
        /// The file.
        path: PathBuf,
        /// What is wrong (key and position).
        message: String,
    },
}
