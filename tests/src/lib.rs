//! Helpers of the cross-crate tests in `tests/tests/`: where things are, the optional Python
//! runtime, and frames read the way the edge reads them.

use cdnet_shared::imageio::{file_kind, read_gray_frames};
use std::path::{Path, PathBuf};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// A committed model bundle, e.g. `demo-phantom`.
pub fn shipped_bundle(name: &str) -> PathBuf {
    root().join("models").join(name)
}

/// The Python with onnxruntime that `.ci/run` installs (`CDNET_PYTHON`); `None` prints why a check
/// is skipped.
pub fn python() -> Option<PathBuf> {
    match std::env::var_os("CDNET_PYTHON") {
        Some(path) if Path::new(&path).is_file() => Some(PathBuf::from(path)),
        _ => {
            eprintln!("onnxruntime check skipped: CDNET_PYTHON is unset (.ci/run sets it to a venv with onnxruntime)");
            None
        }
    }
}

/// `$CDNET_DATA_DIR/NAME`, or `None` (printing why the check is skipped).
pub fn data_dir(name: &str) -> Option<PathBuf> {
    match std::env::var_os("CDNET_DATA_DIR") {
        Some(root) => {
            let dir = Path::new(&root).join(name);
            dir.is_dir().then_some(dir)
        }
        None => {
            eprintln!("{name} part skipped: CDNET_DATA_DIR is unset");
            None
        }
    }
}

/// One 8-bit frame from disk.
#[derive(Debug, Clone)]
pub struct DiskFrame {
    /// File.
    pub path: PathBuf,
    /// Width.
    pub width: usize,
    /// Height.
    pub height: usize,
    /// Gray pixels.
    pub pixels: Vec<u8>,
}

/// The first frame of every image under `dir` (recursively, skipping `masks/` folders), sorted by
/// path, at most `limit`.
pub fn frames_under(dir: &Path, limit: usize) -> Vec<DiskFrame> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n != "masks") {
                    walk(&path, out);
                }
            } else if file_kind(&path).is_some() && !path.to_string_lossy().contains("_mask") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(dir, &mut files);
    files.sort();
    files
        .into_iter()
        .take(limit)
        .filter_map(|path| {
            let frame = read_gray_frames(&path).ok()?.into_iter().next()?;
            Some(DiskFrame { width: frame.width as usize, height: frame.height as usize, pixels: frame.pixels, path })
        })
        .collect()
}
