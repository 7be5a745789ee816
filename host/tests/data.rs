//! Data set loading: layouts, splits, masks, DICOM, real data (via CDNET_DATA_DIR) and bad input.

use cdnet_host::data::{DataConfig, DataError, load};
use cdnet_host::phantom::{PhantomConfig, WriteOptions, write_image_folder};
use cdnet_shared::imageio::write_gray_dicom;
use std::path::{Path, PathBuf};

fn phantom_set(dir: &Path, per_class: usize, test_per_class: usize) -> PathBuf {
    let out = dir.join("phantom");
    write_image_folder(&WriteOptions {
        out: out.clone(),
        per_class,
        val_per_class: 0,
        test_per_class,
        seed: 5,
        config: PhantomConfig { size: 64, difficulty: 0.3 },
        progress: false,
    })
    .unwrap();
    out
}

fn config(n: usize) -> DataConfig {
    DataConfig { input_size: n, ..Default::default() }
}

/// A small ImageFolder of solid-gray PNGs: `classes` with `per_class` images each (80 × 72, so a
/// half-width crop keeps the 32-pixel minimum frame size).
fn png_folder(root: &Path, classes: &[&str], per_class: usize) {
    for (c, class) in classes.iter().enumerate() {
        std::fs::create_dir_all(root.join(class)).unwrap();
        for i in 0..per_class {
            let img = image::GrayImage::from_pixel(80, 72, image::Luma([(c * 40 + i) as u8]));
            img.save(root.join(class).join(format!("{i}.png"))).unwrap();
        }
    }
}

/// The real-data folder, or `None` with the reason printed.
fn data_dir() -> Option<PathBuf> {
    match std::env::var_os("CDNET_DATA_DIR") {
        Some(dir) => Some(PathBuf::from(dir)),
        None => {
            // Not required under CI: .ci/run sets CDNET_DATA_DIR only when the machine has the data
            // (and says so in its output when it does not).
            let reason = "CDNET_DATA_DIR is not set (point it at the shared data folder to run this test)";
            cdnet_testkit::skip("shared data", reason, false);
            None
        }
    }
}

#[test]
fn phantom_image_folder_with_drawn_split_and_masks() {
    let dir = tempfile::tempdir().unwrap();
    let root = phantom_set(dir.path(), 8, 0);
    let data = load(&root, &DataConfig { val_fraction: 0.25, ..config(32) }).unwrap();
    assert_eq!(data.labels.names(), ["Normal", "IOT", "RD", "PSS", "VH"], "ocular order, not sorted");
    assert!(!data.report.split_folders);
    assert_eq!(data.class_counts(&data.train), vec![6; 5]);
    assert_eq!(data.class_counts(&data.val), vec![2; 5]);
    assert!(data.test.is_empty());
    for s in data.train.iter().chain(&data.val) {
        assert_eq!(s.image.len(), 32 * 32);
        let mask = s.mask.as_ref().expect("phantom sets have masks");
        let lesion = mask.contains(&1);
        assert_eq!(lesion, s.label != 0, "{}: lesion mask vs class", s.id);
    }
    // Deterministic: the same split every time.
    let again = load(&root, &DataConfig { val_fraction: 0.25, ..config(32) }).unwrap();
    let ids = |d: &cdnet_host::data::Dataset| d.val.iter().map(|s| s.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&data), ids(&again));
    let other_seed = load(&root, &DataConfig { val_fraction: 0.25, split_seed: 9, ..config(32) }).unwrap();
    assert_ne!(ids(&data), ids(&other_seed));
}

#[test]
fn split_folders_are_used_as_given() {
    let dir = tempfile::tempdir().unwrap();
    let root = phantom_set(dir.path(), 3, 2);
    let data = load(&root, &config(32)).unwrap();
    assert!(data.report.split_folders);
    assert_eq!(data.test.len(), 10);
    // No val/ folder: 20 % of each class of train/ is held out for validation (1 of 3 per class).
    assert_eq!(data.class_counts(&data.train), vec![2; 5]);
    assert_eq!(data.class_counts(&data.val), vec![1; 5]);
    assert!(data.val.iter().all(|s| s.id.starts_with("train/")));
    assert_eq!(data.eval_split().0, "test");
    assert!(data.test.iter().all(|s| s.id.starts_with("test/")));
    let no_val = load(&root, &DataConfig { val_fraction: 0.0, ..config(32) }).unwrap();
    assert_eq!((no_val.train.len(), no_val.val.len()), (15, 0));
}

#[test]
fn busi_mini_real_images_with_masks() {
    let Some(dir) = data_dir() else { return };
    let data = load(&dir.join("busi-mini"), &config(64)).unwrap();
    assert_eq!(data.labels.names(), ["benign", "malignant", "normal"]);
    assert_eq!(data.train.len() + data.val.len(), 24);
    assert!(data.val.len() >= 3, "every class contributes to validation");
    let lesion = |s: &cdnet_host::data::Sample| s.mask.as_ref().is_some_and(|m| m.contains(&1));
    let with_lesion = data.train.iter().chain(&data.val).filter(|s| lesion(s)).count();
    assert_eq!(with_lesion, 16, "benign and malignant images have lesion masks, normal ones do not");
}

#[test]
fn busi_train_val_split_folders() {
    let Some(dir) = data_dir() else { return };
    let data = load(&dir.join("busi"), &config(32)).unwrap();
    assert!(data.report.split_folders);
    assert_eq!(data.class_counts(&data.train), vec![226, 109, 67]);
    assert_eq!(data.class_counts(&data.val), vec![52, 24, 16]);
}

#[test]
fn dicom_frames_become_samples_and_stay_in_one_split() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("set");
    png_folder(&root, &["a", "b"], 3);
    let frames: Vec<Vec<u8>> = (0..4).map(|k| vec![k * 60; 40 * 36]).collect();
    let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    write_gray_dicom(&root.join("a").join("clip.dcm"), 40, 36, &refs).unwrap();
    let data = load(&root, &DataConfig { val_fraction: 0.5, ..config(8) }).unwrap();
    let all: Vec<_> = data.train.iter().chain(&data.val).collect();
    let clip: Vec<_> = all.iter().filter(|s| s.id.contains("clip.dcm#")).collect();
    assert_eq!(clip.len(), 4);
    let in_train = data.train.iter().filter(|s| s.id.contains("clip.dcm#")).count();
    assert!(in_train == 0 || in_train == 4, "frames of one file never straddle splits");
    // Frame k is a flat image of value 60k.
    let frame2 = clip.iter().find(|s| s.id.ends_with("#2")).unwrap();
    assert!(frame2.image.iter().all(|&v| (v - 120.0).abs() < 1e-4));
}

#[test]
fn missing_root_and_no_classes() {
    let dir = tempfile::tempdir().unwrap();
    let err = load(&dir.path().join("nope"), &config(8)).unwrap_err();
    assert!(matches!(err, DataError::NotFound(_)), "{err}");
    assert!(err.to_string().contains("nope"));
    let err = load(dir.path(), &config(8)).unwrap_err();
    assert!(matches!(err, DataError::NoClasses(_)), "{err}");
    // Only a test/ split: say that train/ is missing and how to evaluate the split itself.
    png_folder(&dir.path().join("test"), &["a", "b"], 2);
    let err = load(dir.path(), &config(8)).unwrap_err().to_string();
    assert!(err.contains("no train/") && err.contains("--data") && err.contains("test"), "{err}");
    assert!(load(&dir.path().join("test"), &config(8)).is_ok());
}

#[test]
fn corrupt_image_is_an_error_naming_the_file_unless_skipped() {
    let dir = tempfile::tempdir().unwrap();
    png_folder(dir.path(), &["a", "b"], 3);
    std::fs::write(dir.path().join("b").join("broken.png"), b"definitely not a png").unwrap();
    let err = load(dir.path(), &config(8)).unwrap_err();
    assert!(err.to_string().contains("broken.png") && err.to_string().contains("--skip-bad"), "{err}");
    let data = load(dir.path(), &DataConfig { skip_bad: true, ..config(8) }).unwrap();
    assert_eq!(data.train.len() + data.val.len(), 6);
    assert_eq!(data.report.skipped, 1);
    assert!(data.report.warnings.iter().any(|w| w.contains("broken.png")));
}

#[test]
fn a_thumbnail_is_refused_naming_the_file_unless_skipped() {
    let dir = tempfile::tempdir().unwrap();
    png_folder(dir.path(), &["a", "b"], 3);
    image::GrayImage::from_pixel(1, 1, image::Luma([128])).save(dir.path().join("a").join("icon.png")).unwrap();
    let err = load(dir.path(), &config(8)).unwrap_err().to_string();
    assert!(err.contains("icon.png") && err.contains("1×1") && err.contains("thumbnail"), "{err}");
    let data = load(dir.path(), &DataConfig { skip_bad: true, ..config(8) }).unwrap();
    assert_eq!(data.train.len() + data.val.len(), 6);
    assert_eq!(data.report.skipped, 1);
}

#[test]
fn empty_class_folder_is_an_error_unless_skipped() {
    let dir = tempfile::tempdir().unwrap();
    png_folder(dir.path(), &["a", "b", "c"], 3);
    std::fs::create_dir_all(dir.path().join("empty")).unwrap();
    let err = load(dir.path(), &config(8)).unwrap_err();
    assert!(matches!(err, DataError::EmptyClass(ref p) if p.ends_with("empty")), "{err}");
    // Skipping drops the class from the label set with a warning; the rest loads.
    let data = load(dir.path(), &DataConfig { skip_bad: true, ..config(8) }).unwrap();
    assert_eq!(data.labels.names(), ["a", "b", "c"]);
    assert!(data.report.warnings.iter().any(|w| w.contains("empty") && w.contains("not a class")));
}

#[test]
fn non_image_files_mixed_sizes_and_single_image_classes_are_warnings() {
    let dir = tempfile::tempdir().unwrap();
    png_folder(dir.path(), &["a", "b"], 3);
    std::fs::create_dir_all(dir.path().join("solo")).unwrap();
    image::GrayImage::new(40, 36).save(dir.path().join("solo").join("only.png")).unwrap();
    std::fs::write(dir.path().join("a").join("notes.txt"), b"scanner settings").unwrap();
    let data = load(dir.path(), &config(8)).unwrap();
    let warnings = data.report.warnings.join("\n");
    assert!(warnings.contains("notes.txt") && warnings.contains("not an image"), "{warnings}");
    assert!(warnings.contains("sizes vary from"), "{warnings}");
    assert!(warnings.contains("\"solo\" has 1 image(s): none left for validation"), "{warnings}");
    assert_eq!(data.labels.names(), ["a", "b", "solo"]);
}

#[cfg(unix)]
#[test]
fn symlink_loop_is_an_error_naming_the_path_unless_skipped() {
    let dir = tempfile::tempdir().unwrap();
    png_folder(dir.path(), &["a", "b"], 3);
    std::os::unix::fs::symlink(dir.path().join("a"), dir.path().join("a").join("loop")).unwrap();
    let err = load(dir.path(), &config(8)).unwrap_err();
    assert!(matches!(err, DataError::Walk { .. }), "{err}");
    assert!(err.to_string().contains("loop"), "{err}");
    let data = load(dir.path(), &DataConfig { skip_bad: true, ..config(8) }).unwrap();
    assert_eq!(data.train.len() + data.val.len(), 6);
}

#[test]
fn a_val_class_missing_from_train_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    png_folder(&dir.path().join("train"), &["a", "b"], 2);
    png_folder(&dir.path().join("val"), &["a", "c"], 2);
    let err = load(dir.path(), &config(8)).unwrap_err();
    assert!(matches!(err, DataError::UnknownClass { ref class, .. } if class == "c"), "{err}");
}

#[test]
fn dataset_toml_sets_crop_and_class_order_unless_configured() {
    let dir = tempfile::tempdir().unwrap();
    png_folder(dir.path(), &["a", "b"], 2);
    std::fs::write(
        dir.path().join("dataset.toml"),
        "classes = [\"b\", \"a\"]\n[crop]\nleft = 0.5\ntop = 0.0\nright = 1.0\nbottom = 1.0\n",
    )
    .unwrap();
    let data = load(dir.path(), &config(8)).unwrap();
    assert_eq!(data.labels.names(), ["b", "a"]);
    assert_eq!(data.crop.left, 0.5);
    let configured = DataConfig { crop: Some(cdnet_shared::CropProfile::FULL), ..config(8) };
    assert_eq!(load(dir.path(), &configured).unwrap().crop, cdnet_shared::CropProfile::FULL);
    // With a class list, --skip-bad skips an empty folder outside the list; an empty listed class is
    // an error that does not suggest --skip-bad.
    std::fs::create_dir_all(dir.path().join("c")).unwrap();
    let skipping = DataConfig { skip_bad: true, ..config(8) };
    assert_eq!(load(dir.path(), &skipping).unwrap().labels.names(), ["b", "a"]);
    std::fs::write(dir.path().join("dataset.toml"), "classes = [\"b\", \"a\", \"c\"]\n").unwrap();
    let err = load(dir.path(), &skipping).unwrap_err().to_string();
    assert!(err.contains("names it") && !err.contains("--skip-bad"), "{err}");
    std::fs::write(dir.path().join("dataset.toml"), "clases = [\"a\"]\n").unwrap();
    let err = load(dir.path(), &config(8)).unwrap_err().to_string();
    assert!(err.contains("dataset.toml") && err.contains("clases"), "{err}");
}

#[test]
fn configured_class_order_is_used_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    png_folder(dir.path(), &["a", "b", "c"], 2);
    let ordered = DataConfig { classes: Some(vec!["c".into(), "a".into(), "b".into()]), ..config(8) };
    assert_eq!(load(dir.path(), &ordered).unwrap().labels.names(), ["c", "a", "b"]);
    let wrong = DataConfig { classes: Some(vec!["a".into(), "x".into()]), ..config(8) };
    let err = load(dir.path(), &wrong).unwrap_err();
    assert!(matches!(err, DataError::ClassMismatch { .. }), "{err}");
}
