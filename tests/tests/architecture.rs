//! ARCHITECTURE.md stays true: its crate table names every workspace crate with its folder, its
//! "may depend on" column covers every direct dependency (`cargo metadata`), and its layering rules
//! hold (host and edge depend on shared, never on each other; only the integration tests depend on
//! host or edge).

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A crate's row: its folder and the words of its "may depend on" cell.
struct Row {
    folder: String,
    allowed: BTreeSet<String>,
}

fn words(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// The crate table and the plumbing list of ARCHITECTURE.md.
fn architecture() -> (BTreeMap<String, Row>, BTreeSet<String>) {
    let text = std::fs::read_to_string(repo().join("ARCHITECTURE.md")).unwrap();
    let mut rows = BTreeMap::new();
    for line in text.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        assert_eq!(cells.len(), 3, "a crate row needs 3 cells: {line}");
        let names: Vec<&str> = cells[0].split('`').collect();
        assert!(names.len() >= 4, "expected `crate` (`folder/`): {}", cells[0]);
        rows.insert(names[1].to_string(), Row { folder: names[3].to_string(), allowed: words(cells[2]) });
    }
    let plumbing = text
        .lines()
        .find_map(|l| l.strip_prefix("Plumbing any crate may use without listing it:"))
        .map(words)
        .expect("ARCHITECTURE.md lost its plumbing line");
    (rows, plumbing)
}

/// A workspace crate as `cargo metadata` sees it.
struct Member {
    name: String,
    /// Its folder, relative to the workspace root, with a trailing `/`.
    folder: String,
    /// Direct dependencies as (name, kind: "normal", "build" or "dev").
    dependencies: Vec<(String, String)>,
}

fn workspace() -> Vec<Member> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .args(["metadata", "--no-deps", "--offline", "--format-version", "1"])
        .current_dir(repo())
        .output()
        .expect("run cargo metadata");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    let root = metadata["workspace_root"].as_str().unwrap().to_string();
    metadata["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let manifest = Path::new(p["manifest_path"].as_str().unwrap());
            let folder = manifest.parent().unwrap().strip_prefix(&root).unwrap().to_string_lossy().to_string();
            let dependencies = p["dependencies"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| (d["name"].as_str().unwrap().to_string(), d["kind"].as_str().unwrap_or("normal").to_string()))
                .collect();
            Member { name: p["name"].as_str().unwrap().to_string(), folder: format!("{folder}/"), dependencies }
        })
        .collect()
}

/// Whether `allowed` names `dependency`, directly or as its family (`dicom` → `dicom-core`); the
/// workspace crates may be named short (`shared` → `cdnet-shared`).
fn covers(allowed: &BTreeSet<String>, dependency: &str) -> bool {
    let short = dependency.strip_prefix("cdnet-").unwrap_or(dependency);
    allowed.iter().any(|a| {
        a == dependency
            || a == short
            || dependency.strip_prefix(a.as_str()).is_some_and(|rest| rest.starts_with('-') || rest.starts_with('_'))
    })
}

#[test]
fn architecture_md_names_every_crate_and_every_dependency() {
    let (rows, plumbing) = architecture();
    let crates = workspace();
    let names: BTreeSet<&str> = crates.iter().map(|m| m.name.as_str()).collect();
    for listed in rows.keys() {
        assert!(names.contains(listed.as_str()), "ARCHITECTURE.md lists `{listed}`, which is not a workspace crate");
    }
    let mut missing = Vec::new();
    for Member { name, folder, dependencies } in &crates {
        let row = rows.get(name).unwrap_or_else(|| panic!("ARCHITECTURE.md has no row for `{name}`"));
        assert_eq!(&row.folder, folder, "`{name}`: ARCHITECTURE.md says folder {}", row.folder);
        for (dependency, kind) in dependencies.iter().filter(|(_, kind)| kind != "dev") {
            if !covers(&row.allowed, dependency) && !plumbing.contains(dependency) {
                missing.push(format!("{name} → {dependency} ({kind})"));
            }
        }
    }
    assert!(missing.is_empty(), "dependencies ARCHITECTURE.md does not list: {missing:?}");
}

#[test]
fn layering_rules_hold() {
    for Member { name, dependencies, .. } in workspace() {
        for (dependency, _) in &dependencies {
            let upper = dependency == "cdnet-host" || dependency == "cdnet-edge";
            assert!(!upper || name == "cdnet-integration", "{name} depends on {dependency}");
        }
        if name == "cdnet-host" || name == "cdnet-edge" {
            let names: Vec<&str> = dependencies.iter().map(|(d, _)| d.as_str()).collect();
            assert!(names.contains(&"cdnet-shared"), "{name} must use shared");
        }
    }
}

/// The check itself can fail: an unlisted dependency and a row for a crate that does not exist.
#[test]
fn the_check_notices_drift() {
    let allowed = words("`cdnet-shared` (with `runtime`), burn, dicom");
    assert!(covers(&allowed, "burn-onnx") && covers(&allowed, "dicom-core") && covers(&allowed, "cdnet-shared"));
    assert!(!covers(&allowed, "tract-onnx") && !covers(&allowed, "burnish") && !covers(&allowed, "cdnet-edge"));
}

/// Longest a source file of a workspace crate may be (ARCHITECTURE.md's rules): a file past it
/// holds more than one job.
const MAX_SOURCE_LINES: usize = 600;

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_source_file_is_longer_than_the_limit() {
    let mut files = Vec::new();
    for member in workspace() {
        rust_files(&repo().join(&member.folder), &mut files);
    }
    assert!(files.len() > 50, "found only {} source files: is the workspace walk broken?", files.len());
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = std::fs::read_to_string(f).ok()?.lines().count();
            (lines > MAX_SOURCE_LINES).then(|| format!("{} ({lines} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "source files over {MAX_SOURCE_LINES} lines (split them by job): {long:?}");
}

/// Crates of tract's ONNX front end (and the protobuf code under it): most of a tract binary.
const ONNX_FRONT_END: [&str; 5] = ["tract-onnx", "tract-onnx-opl", "tract-hir", "prost", "prost-derive"];

/// The crates a package links for `target`, from `cargo tree` (normal dependencies only).
fn linked_crates(package: &str, target: &str) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = Command::new(cargo)
        .current_dir(repo())
        .args(["tree", "--offline", "-p", package, "--target", target, "-e", "normal", "--prefix", "none"])
        .args(["-f", "{p}"])
        .output()
        .unwrap();
    assert!(output.status.success(), "cargo tree: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split(' ').next())
        .map(str::to_string)
        .collect()
}

/// The board runs NNEF graphs with tract-nnef alone (issue 16: the binary's size); the ONNX front
/// end is the host's.
#[test]
fn the_board_binary_links_no_onnx_front_end() {
    let board = linked_crates("cdnet-edge", "aarch64-unknown-linux-gnu");
    assert!(board.contains("tract-nnef") && board.contains("tract-core"), "the parse lost crates: {board:?}");
    let linked: Vec<&str> = ONNX_FRONT_END.iter().copied().filter(|c| board.contains(*c)).collect();
    assert!(linked.is_empty(), "the aarch64 cdnet-edge links {linked:?}; keep tract-onnx in the host");
    // The check can fail: the host links them.
    let host = linked_crates("cdnet-host", "x86_64-unknown-linux-gnu");
    assert!(ONNX_FRONT_END.iter().all(|c| host.contains(*c)), "{host:?}");
}
