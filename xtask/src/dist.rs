//! `cargo xtask dist`: cross-build the edge runtime for a board and pack a versioned tarball.
//!
//! ```text
//! cdnet-edge-VERSION-BOARD/
//!   bin/cdnet-edge, bin/cdnet-probe-sim
//!   model/                 the model bundle (model.json, ONNX and NNEF graphs, model.sig if signed)
//!   cdnet-edge.service     systemd unit: restart on failure, unprivileged user, serial + framebuffer groups
//!   99-cdnet-probe.rules   udev rule: the probe appears as /dev/cdnet-probe
//!   cdnet-edge.env         settings the unit reads (port, display, layout, threads)
//!   manifest.json          version, board, target, the model card's digest, sha256 and size of every file
//!   SHA256SUMS             the same hashes for `sha256sum -c` on the board
//! ```

use crate::board::{self, Board};
use crate::util::{self, cargo, require, root, sha256_file, version};
use anyhow::{Context, Result, bail};
use cdnet_shared::bundle::{CARD_FILE, read_card};
use cdnet_shared::signature::SIGNATURE_FILE;
use clap::Args;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Options of `cargo xtask dist`.
#[derive(Args, Debug, Clone)]
pub struct DistArgs {
    /// Board: jetson-orin, jetson-nano, rpi4, rpi5 or x86_64.
    #[arg(long)]
    pub board: String,
    /// Model bundle to ship.
    #[arg(long, default_value = "models/demo-phantom")]
    pub model: PathBuf,
    /// Take cdnet-edge and cdnet-probe-sim from this folder instead of building them.
    #[arg(long)]
    pub prebuilt: Option<PathBuf>,
    /// USB vendor:product id of the probe's serial interface, for the udev rule.
    #[arg(long, default_value = "1209:c0de")]
    pub probe_usb_id: String,
    /// Where to put the tarball.
    #[arg(long, default_value = "target/dist")]
    pub out: PathBuf,
    /// Release name (default: the crate version and git commit).
    #[arg(long)]
    pub version: Option<String>,
}

const BINARIES: [&str; 2] = ["cdnet-edge", "cdnet-probe-sim"];

/// Builds `cdnet-edge` for the board; returns the folder holding the binaries.
fn build(board: &Board) -> Result<PathBuf> {
    let installed = util::output(std::process::Command::new("rustup").args(["target", "list", "--installed"]))?;
    if !String::from_utf8_lossy(&installed.stdout).lines().any(|l| l.trim() == board.target) {
        util::run(std::process::Command::new("rustup").args(["target", "add", board.target]))?;
    }
    let mut command = cargo();
    command.current_dir(root()).args([
        "build",
        "--profile",
        "dist",
        "--target",
        board.target,
        "-p",
        "cdnet-edge",
        "--bins",
    ]);
    // No unwind tables: `dist` aborts on panic (Cargo.toml), and they are 0.5 MB of the binary.
    // .ci/run builds the binary it checks with the same flag.
    command.env("RUSTFLAGS", format!("-C target-cpu={} -C force-unwind-tables=no", board.cpu));
    match board.target {
        "aarch64-unknown-linux-gnu" => {
            require("aarch64-linux-gnu-gcc")?;
            command.env("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER", "aarch64-linux-gnu-gcc");
        }
        "aarch64-unknown-linux-musl" => {
            // rust-lld links the static binary; the gcc cross compiler only assembles tract's NEON kernels.
            require("aarch64-linux-gnu-gcc")?;
            command.env("CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER", "rust-lld");
            command.env("CC_aarch64_unknown_linux_musl", "aarch64-linux-gnu-gcc");
        }
        _ => {}
    }
    util::run(&mut command)?;
    Ok(root().join("target").join(board.target).join("dist"))
}

fn unit_file() -> String {
    "[Unit]
Description=CDNet bedside B-scan classifier
After=local-fs.target

[Service]
Type=simple
User=cdnet
Group=cdnet
# Serial port of the probe (dialout) and the framebuffer (video).
SupplementaryGroups=dialout video
EnvironmentFile=/opt/cdnet/current/cdnet-edge.env
ExecStart=/opt/cdnet/current/bin/cdnet-edge run --model /opt/cdnet/current/model --port ${CDNET_PORT} --baud ${CDNET_BAUD} --display ${CDNET_DISPLAY} --layout ${CDNET_LAYOUT} --threads ${CDNET_THREADS} --log /var/lib/cdnet/log
Restart=on-failure
RestartSec=2
StateDirectory=cdnet
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
ReadWritePaths=/var/lib/cdnet

[Install]
WantedBy=multi-user.target
"
    .to_string()
}

fn udev_rule(usb_id: &str) -> Result<String> {
    let (vendor, product) = usb_id
        .split_once(':')
        .filter(|(v, p)| v.len() == 4 && p.len() == 4 && v.chars().chain(p.chars()).all(|c| c.is_ascii_hexdigit()))
        .with_context(|| format!("--probe-usb-id {usb_id:?}: expected VID:PID in hex, e.g. 1209:c0de"))?;
    Ok(format!(
        "# The probe's USB serial interface appears as /dev/cdnet-probe, usable by the dialout group.\n\
         SUBSYSTEM==\"tty\", ATTRS{{idVendor}}==\"{vendor}\", ATTRS{{idProduct}}==\"{product}\", SYMLINK+=\"cdnet-probe\", GROUP=\"dialout\", MODE=\"0660\"\n"
    ))
}

fn env_file(board: &Board) -> String {
    let threads = if board.name == "jetson-nano" { 2 } else { 4 };
    format!(
        "# Settings of the cdnet-edge service (see `cdnet-edge run --help`).\n\
         CDNET_PORT=/dev/cdnet-probe\n\
         CDNET_BAUD=921600\n\
         # fb0 (HDMI/DSI panel), fb1 (SPI TFT), png:/var/lib/cdnet/screen, or none\n\
         CDNET_DISPLAY=fb0\n\
         # 800x480 or 320x240\n\
         CDNET_LAYOUT=800x480\n\
         CDNET_THREADS={threads}\n\
         # Serve only bundles signed by these public keys (comma-separated PEM files). Set it in the\n\
         # board's drop-in (docs/deployment.md), not here: this file is replaced by every release.\n\
         # CDNET_TRUST=/etc/cdnet/clinic.pub.pem\n"
    )
}

/// Checks the bundle's file hashes before shipping it; returns its files (the card first) and the
/// card's digest (`ModelCard::digest`, the one its graphs must carry), which the manifest records.
/// Whether the graphs carry it is the board's health check (`cdnet-edge check`) after a flash, so a
/// release whose card was edited installs and is then rolled back.
fn check_bundle(model: &Path) -> Result<(Vec<String>, String)> {
    let (card_path, card) = read_card(model).with_context(|| format!("{} is not a model bundle", model.display()))?;
    if card.nnef.is_none() {
        bail!(
            "{}: the bundle has no NNEF graphs (card format {}), which the board runs; add them with \
             `cdnet nnef --bundle {}`",
            model.display(),
            card.format,
            model.display()
        );
    }
    let mut names = vec![CARD_FILE.to_string()];
    for (name, entry) in &card.files {
        if sha256_file(&model.join(name))? != entry.sha256 {
            bail!("{}: {name} does not match its sha256 in model.json; re-export the bundle", model.display());
        }
        names.push(name.clone());
    }
    // A signature travels with the bundle; the board checks it when it is given trusted keys.
    if model.join(SIGNATURE_FILE).is_file() {
        names.push(SIGNATURE_FILE.to_string());
    }
    let digest = card.digest().map_err(|e| anyhow::anyhow!("{}: the card's digest: {e}", card_path.display()))?;
    Ok((names, digest))
}

/// Builds (or takes) the binaries and packs the tarball; returns its path.
pub fn run(args: DistArgs) -> Result<PathBuf> {
    let board = board::find(&args.board)?;
    let model = if args.model.is_absolute() { args.model.clone() } else { root().join(&args.model) };
    let (model_files, card_sha256) = check_bundle(&model)?;
    let bin_dir = match &args.prebuilt {
        Some(dir) => dir.clone(),
        None => build(&board)?,
    };
    let version = args.version.clone().unwrap_or_else(version);
    let name = format!("cdnet-edge-{version}-{}", board.name);
    let out = if args.out.is_absolute() { args.out.clone() } else { root().join(&args.out) };
    let stage = out.join(&name);
    if stage.exists() {
        std::fs::remove_dir_all(&stage).with_context(|| format!("cannot clear {}", stage.display()))?;
    }
    std::fs::create_dir_all(stage.join("bin"))?;
    std::fs::create_dir_all(stage.join("model"))?;
    for binary in BINARIES {
        let from = bin_dir.join(binary);
        std::fs::copy(&from, stage.join("bin").join(binary)).with_context(|| {
            format!("cannot copy {} (build it, or point --prebuilt at the folder holding it)", from.display())
        })?;
    }
    for file in &model_files {
        std::fs::copy(model.join(file), stage.join("model").join(file))?;
    }
    std::fs::write(stage.join("cdnet-edge.service"), unit_file())?;
    std::fs::write(stage.join("99-cdnet-probe.rules"), udev_rule(&args.probe_usb_id)?)?;
    std::fs::write(stage.join("cdnet-edge.env"), env_file(&board))?;

    // Every file but the manifest and the sums themselves, sorted, with its hash.
    let mut files: Vec<String> =
        BINARIES.iter().map(|b| format!("bin/{b}")).chain(model_files.iter().map(|f| format!("model/{f}"))).collect();
    files.extend(["cdnet-edge.service", "99-cdnet-probe.rules", "cdnet-edge.env"].map(String::from));
    files.sort();
    let mut hashes = BTreeMap::new();
    let mut sums = String::new();
    for file in &files {
        let path = stage.join(file);
        let sha = sha256_file(&path)?;
        sums.push_str(&format!("{sha}  {file}\n"));
        hashes.insert(file.clone(), serde_json::json!({ "sha256": sha, "bytes": std::fs::metadata(&path)?.len() }));
    }
    let manifest = serde_json::json!({
        "name": name,
        "version": version,
        "board": board.name,
        "board_description": board.about,
        "target": board.target,
        "target_cpu": board.cpu,
        "model": model.file_name().map(|n| n.to_string_lossy().into_owned()),
        "card_sha256": card_sha256,
        "files": hashes,
    });
    std::fs::write(stage.join("manifest.json"), serde_json::to_string_pretty(&manifest)?)?;
    std::fs::write(stage.join("SHA256SUMS"), sums)?;

    let tarball = out.join(format!("{name}.tar.gz"));
    pack(&stage, &name, &tarball)?;
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
    eprintln!(
        "packed {} ({:.1} MB; cdnet-edge {:.1} MB)",
        tarball.display(),
        size(&tarball) as f64 / 1e6,
        size(&stage.join("bin/cdnet-edge")) as f64 / 1e6
    );
    println!("{}", tarball.display());
    Ok(tarball)
}

/// A gzip tarball with one top folder, sorted entries and fixed times (same inputs, same bytes).
fn pack(stage: &Path, name: &str, tarball: &Path) -> Result<()> {
    let partial = tarball.with_extension("gz.part");
    let file = std::fs::File::create(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(file, flate2::Compression::default()));
    let mut entries = Vec::new();
    collect(stage, stage, &mut entries)?;
    entries.sort();
    for relative in entries {
        let path = stage.join(&relative);
        let bytes = std::fs::read(&path)?;
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(if relative.starts_with("bin/") { 0o755 } else { 0o644 });
        header.set_mtime(0);
        header.set_cksum();
        builder.append_data(&mut header, format!("{name}/{relative}"), bytes.as_slice())?;
    }
    builder.into_inner()?.finish()?.sync_all()?;
    std::fs::rename(&partial, tarball).with_context(|| format!("cannot write {}", tarball.display()))?;
    Ok(())
}

fn collect(base: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(base, &path, out)?;
        } else if let Ok(relative) = path.strip_prefix(base) {
            out.push(relative.to_string_lossy().into_owned());
        }
    }
    Ok(())
}
