//! Helpers of the cross-crate tests in `tests/tests/`: where things are, the optional Python
//! runtime and data sets.

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
