//! `cargo xtask gpu-check`: builds the CUDA trainer and writes a self-contained folder that checks
//! it on a machine with one NVIDIA GPU, a CUDA 13 driver, PyTorch + timm and no network.
//!
//! ```text
//! target/gpu-check/
//!   run.sh                  ./run.sh OUT [--budget SECONDS]: decompresses cdnet, runs gpu_check.py
//!   gpu_check.py            the stages (tools/gpu_check.py): burn-cuda vs PyTorch training steps,
//!                           an end-to-end GPU training and export; writes OUT/gpu-check.json
//!   torch_step_bench.py     the same training step in PyTorch + timm
//!   cdnet.gz                the CUDA build of `cdnet`, stripped (kernels compile with NVRTC there)
//!   configs/                paper-b3.toml, field-lite0.toml (the step benchmarks), e2e.toml
//!   data/                   a phantom set at 224 px (train/ val/), for the end-to-end training
//!   SHA256SUMS              every file's hash
//! ```
//!
//! On a machine with `nvidia-smi` the task then runs the folder into `target/gpu-check-out`;
//! `--dry-run` only writes it and shows its files and size. The bundle the GPU run exports comes
//! back as `OUT/bundle.tar`; `cdnet-edge check --bundle` verifies it on the CPU.

use crate::util::{self, cargo, root, sha256_file};
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Options of `cargo xtask gpu-check`.
#[derive(Args, Debug, Clone)]
pub struct GpuCheckArgs {
    /// Folder to write (replaced).
    #[arg(long, default_value = "target/gpu-check")]
    pub out: PathBuf,
    /// Write the folder and show it; do not run it even where a GPU is present.
    #[arg(long)]
    pub dry_run: bool,
    /// Use this CUDA build of `cdnet` instead of building one.
    #[arg(long)]
    pub prebuilt: Option<PathBuf>,
    /// Seconds the stages may take together when it runs.
    #[arg(long, default_value_t = 2400)]
    pub budget: u32,
}

/// The folder may travel to a GPU machine with the repository; the issue's bound.
const MAX_FOLDER_BYTES: u64 = 60 * 1024 * 1024;

/// Phantom images per class in the folder's training and validation splits.
const TRAIN_PER_CLASS: usize = 24;
const VAL_PER_CLASS: usize = 8;

/// The end-to-end training: the field recipe (Lite0, WSLL, CMZ, HCD) at 224 px from scratch
/// (no ImageNet checkpoint travels), one epoch: enough to check that a GPU-trained model
/// exports and passes parity, not to be accurate.
const E2E_CONFIG: &str = r#"# The GPU check's end-to-end run: configs/field-lite0.toml at 224 px, from scratch, 1 epoch.
[model]
backbone = "lite0"
input_size = 224
texture_channels = 512
feature_dim = 1024

[loss]
kind = "hcd"
heads_train_backbone = false

[training]
epochs = 1
batch_size = 32
eval_batch_size = 32

[optim]
lr = 3e-4
schedule = "cosine"
"#;

const RUN_SH: &str = r#"#!/usr/bin/env bash
# The CDNet GPU check: ./run.sh OUT [--budget SECONDS]. See gpu_check.py.
set -euo pipefail
cd "$(dirname "$0")"
[ -x cdnet ] || { gzip -dc cdnet.gz > cdnet.tmp && chmod +x cdnet.tmp && mv cdnet.tmp cdnet; }
exec python3 gpu_check.py "$@"
"#;

/// Builds (or takes) the CUDA `cdnet`, writes the folder, and runs it where a GPU is present.
pub fn run(args: GpuCheckArgs) -> Result<()> {
    let binary = match &args.prebuilt {
        Some(path) => path.clone(),
        None => build()?,
    };
    let out = root().join(&args.out);
    write_folder(&binary, &out)?;
    let total = show(&out)?;
    if total > MAX_FOLDER_BYTES {
        bail!("{} is {total} bytes, over the {MAX_FOLDER_BYTES}-byte bound", out.display());
    }
    if args.dry_run {
        return Ok(());
    }
    if !util::have("nvidia-smi") {
        println!(
            "no NVIDIA GPU here (nvidia-smi not found): copy {} to a GPU machine and run `./run.sh OUT`",
            out.display()
        );
        return Ok(());
    }
    let results = root().join("target/gpu-check-out");
    util::run(Command::new(out.join("run.sh")).arg(&results).args(["--budget", &args.budget.to_string()]))?;
    println!("results: {}", results.join("gpu-check.json").display());
    Ok(())
}

/// `cargo build --release -p cdnet-host --features cuda`; the binary's path.
fn build() -> Result<PathBuf> {
    util::run(cargo().current_dir(root()).args(["build", "--release", "-p", "cdnet-host", "--features", "cuda"]))?;
    Ok(root().join("target/release/cdnet"))
}

/// Writes every file of the folder, replacing what was there.
fn write_folder(binary: &Path, out: &Path) -> Result<()> {
    if out.exists() {
        std::fs::remove_dir_all(out).with_context(|| format!("cannot clear {}", out.display()))?;
    }
    std::fs::create_dir_all(out.join("configs")).with_context(|| format!("cannot create {}", out.display()))?;
    pack_binary(binary, &out.join("cdnet.gz"))?;
    let copy = |from: &str, to: &str| {
        std::fs::copy(root().join(from), out.join(to)).with_context(|| format!("cannot copy {from}")).map(|_| ())
    };
    copy("tools/gpu_check.py", "gpu_check.py")?;
    copy("tools/torch_step_bench.py", "torch_step_bench.py")?;
    copy("configs/paper-b3.toml", "configs/paper-b3.toml")?;
    // The step benchmark initialises at random; the ImageNet checkpoint the config names stays here.
    let field = std::fs::read_to_string(root().join("configs/field-lite0.toml")).context("cannot read field-lite0")?;
    let field: String =
        field.lines().filter(|l| !l.trim_start().starts_with("backbone_weights")).map(|l| format!("{l}\n")).collect();
    std::fs::write(out.join("configs/field-lite0.toml"), field)?;
    std::fs::write(out.join("configs/e2e.toml"), E2E_CONFIG)?;
    write_executable(&out.join("run.sh"), RUN_SH)?;
    util::run(Command::new(binary).args(["-q", "phantom", "--out"]).arg(out.join("data")).args([
        "--per-class",
        &TRAIN_PER_CLASS.to_string(),
        "--val-per-class",
        &VAL_PER_CLASS.to_string(),
        "--size",
        "224",
        "--seed",
        "7",
    ]))?;
    write_sums(out)
}

/// A stripped, gzip-compressed copy of `binary`.
fn pack_binary(binary: &Path, to: &Path) -> Result<()> {
    let stripped = to.with_extension("stripped");
    std::fs::copy(binary, &stripped).with_context(|| format!("cannot read {}", binary.display()))?;
    util::run(Command::new("strip").arg(&stripped))?;
    let file = std::fs::File::create(to).with_context(|| format!("cannot create {}", to.display()))?;
    let status = Command::new("gzip").args(["-9", "-c"]).arg(&stripped).stdout(file).status().context("gzip")?;
    std::fs::remove_file(&stripped)?;
    if !status.success() {
        bail!("gzip failed on {}", binary.display());
    }
    Ok(())
}

fn write_executable(path: &Path, text: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    Ok(())
}

/// Every file below `dir`, relative, sorted.
fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).with_context(|| format!("cannot list {}", next.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path.strip_prefix(dir)?.to_path_buf());
            }
        }
    }
    found.sort();
    Ok(found)
}

fn write_sums(out: &Path) -> Result<()> {
    let mut sums = String::new();
    for file in files(out)? {
        sums.push_str(&format!("{}  {}\n", sha256_file(&out.join(&file))?, file.display()));
    }
    std::fs::write(out.join("SHA256SUMS"), sums).context("cannot write SHA256SUMS")
}

/// Prints the folder's top-level entries with their sizes; returns the total.
fn show(out: &Path) -> Result<u64> {
    let mut total = 0;
    let mut by_entry = std::collections::BTreeMap::<String, (u64, usize)>::new();
    for file in files(out)? {
        let bytes = std::fs::metadata(out.join(&file))?.len();
        total += bytes;
        let top = file.components().next().map_or(String::new(), |c| c.as_os_str().to_string_lossy().into_owned());
        let entry = by_entry.entry(top).or_default();
        entry.0 += bytes;
        entry.1 += 1;
    }
    println!("{}:", out.display());
    for (name, (bytes, count)) in &by_entry {
        let files = if *count > 1 { format!(" ({count} files)") } else { String::new() };
        println!("  {name:<24} {:>8.1} MiB{files}", *bytes as f64 / 1048576.0);
    }
    println!("  total                    {:>8.1} MiB (bound {} MiB)", total as f64 / 1048576.0, MAX_FOLDER_BYTES >> 20);
    Ok(total)
}
