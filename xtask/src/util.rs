//! Running tools, with errors that name the missing tool and how to get it.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The cargo that runs us (`$CARGO`), or `cargo`.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// How to install a tool, for error messages.
fn install_hint(tool: &str) -> &'static str {
    match tool {
        "ssh" | "scp" => "install the OpenSSH client (Debian/Ubuntu: sudo apt install openssh-client)",
        "aarch64-linux-gnu-gcc" => {
            "install the cross toolchain (Debian/Ubuntu: sudo apt install gcc-aarch64-linux-gnu libc6-dev-arm64-cross)"
        }
        "qemu-aarch64" => "install qemu user emulation (Debian/Ubuntu: sudo apt install qemu-user)",
        "rustup" => "install rustup from https://rustup.rs",
        "git" => "install git",
        _ => "install it and make sure it is on PATH",
    }
}

/// Whether `tool` is on `PATH`.
pub fn have(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

/// Fails with the fix when `tool` is missing.
pub fn require(tool: &str) -> Result<()> {
    if have(tool) { Ok(()) } else { bail!("`{tool}` not found: {}", install_hint(tool)) }
}

fn describe(command: &Command) -> String {
    let mut text = command.get_program().to_string_lossy().into_owned();
    for arg in command.get_args() {
        let arg = arg.to_string_lossy();
        if arg.contains(' ') || arg.is_empty() {
            text.push_str(&format!(" '{arg}'"));
        } else {
            text.push(' ');
            text.push_str(&arg);
        }
    }
    text
}

/// Runs `command` with inherited output; fails unless it succeeds.
pub fn run(command: &mut Command) -> Result<()> {
    let text = describe(command);
    eprintln!("$ {text}");
    let status = command.status().map_err(|e| spawn_error(command, e))?;
    if !status.success() {
        bail!("`{text}` failed ({status})");
    }
    Ok(())
}

/// Runs `command` and returns its output (stdout and stderr captured), whatever its exit status.
pub fn output(command: &mut Command) -> Result<Output> {
    command.stdin(Stdio::null()).output().map_err(|e| spawn_error(command, e))
}

fn spawn_error(command: &Command, error: std::io::Error) -> anyhow::Error {
    let tool = command.get_program().to_string_lossy().into_owned();
    if error.kind() == std::io::ErrorKind::NotFound {
        anyhow::anyhow!("`{tool}` not found: {}", install_hint(&tool))
    } else {
        anyhow::anyhow!("cannot start `{tool}`: {error}")
    }
}

/// Lower-case hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(cdnet_shared::bundle::sha256_hex(&bytes))
}

/// `0.1.0+g1234abc` (`-dirty` with uncommitted changes): names the release on the board.
pub fn version() -> String {
    let base = env!("CARGO_PKG_VERSION");
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["rev-parse", "--short=8", "HEAD"]) {
        Some(sha) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
            format!("{base}+g{sha}{}", if dirty { ".dirty" } else { "" })
        }
        None => base.to_string(),
    }
}
