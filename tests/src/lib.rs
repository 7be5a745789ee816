//! Helpers of the cross-crate tests in `tests/tests/`: where things are, the optional Python
//! runtime and data sets.

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from(".."), Path::to_path_buf)
}

/// Runs the `cdnet` command line in-process. A command line that does not parse is a mistake in
/// the test, not a refusal to check: it panics.
pub fn cdnet(args: &[&str]) -> anyhow::Result<()> {
    let cli =
        <cdnet_host::cli::Cli as clap::Parser>::try_parse_from(std::iter::once("cdnet").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("cdnet {args:?}: {e}"));
    cdnet_host::cli::run(cli)
}

/// A committed model bundle, e.g. `demo-phantom`.
pub fn shipped_bundle(name: &str) -> PathBuf {
    root().join("models").join(name)
}

/// Copies the files of the bundle folder `from` into `to` (created), for tests that edit a copy.
pub fn copy_bundle(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

/// The Python with onnxruntime that `.ci/run` installs (`CDNET_PYTHON`); `None` prints why a check
/// is skipped.
pub fn python() -> Option<PathBuf> {
    match std::env::var_os("CDNET_PYTHON") {
        Some(path) if Path::new(&path).is_file() => Some(PathBuf::from(path)),
        _ => {
            let reason = "CDNET_PYTHON is unset (.ci/run sets it to a venv with onnxruntime)";
            cdnet_testkit::skip("onnxruntime check", reason, cdnet_testkit::in_ci());
            None
        }
    }
}

/// `$CDNET_DATA_DIR/NAME`, or `None` (printing why the check is skipped).
pub fn data_dir(name: &str) -> Option<PathBuf> {
    match std::env::var_os("CDNET_DATA_DIR") {
        Some(root) => {
            let dir = Path::new(&root).join(name);
            if !dir.is_dir() {
                // .ci/run sets the variable only when it has the data: then a missing set fails.
                let reason = format!("{} is not a folder", dir.display());
                cdnet_testkit::skip(&format!("{name} part"), &reason, cdnet_testkit::in_ci());
                return None;
            }
            Some(dir)
        }
        None => {
            cdnet_testkit::skip(&format!("{name} part"), "CDNET_DATA_DIR is unset", false);
            None
        }
    }
}
