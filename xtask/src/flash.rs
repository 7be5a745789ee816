//! `cargo xtask flash`: deploy a dist tarball to a board over ssh.
//!
//! On the board (`ROOT`, default `/opt/cdnet`):
//!
//! ```text
//! ROOT/incoming/NAME.tar.gz.part   the copy in flight (an interrupted copy leaves only this)
//! ROOT/releases/NAME/              unpacked and verified against SHA256SUMS before anything switches
//! ROOT/current -> releases/NAME    switched with rename(2), so it is always one release or the other
//! ```
//!
//! After the switch the service is restarted and checked: it must be active and `cdnet-edge check`
//! must verify and run the bundled model. If not, `current` goes back to the previous release and
//! that is restarted. Uses the system `ssh`/`scp`, so the developer's keys and agent apply and no
//! credential lives in the repository.

use crate::dist::{self, DistArgs};
use crate::util::{self, require};
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Options of `cargo xtask flash`.
#[derive(Args, Debug, Clone)]
pub struct FlashArgs {
    /// Board: jetson-orin, jetson-nano, rpi4, rpi5 or x86_64.
    #[arg(long)]
    pub board: String,
    /// The board, as `user@address`.
    #[arg(long)]
    pub host: String,
    /// ssh port.
    #[arg(long, default_value_t = 22)]
    pub port: u16,
    /// ssh private key (default: your ssh configuration and agent).
    #[arg(long)]
    pub identity: Option<PathBuf>,
    /// Extra `ssh -o` options (repeatable), e.g. `UserKnownHostsFile=/path`.
    #[arg(long = "ssh-option")]
    pub ssh_options: Vec<String>,
    /// Deploy this tarball instead of building one with `dist`.
    #[arg(long)]
    pub tarball: Option<PathBuf>,
    /// Model bundle, when building the tarball.
    #[arg(long, default_value = "models/demo-phantom")]
    pub model: PathBuf,
    /// Install folder on the board.
    #[arg(long, default_value = "/opt/cdnet")]
    pub root: String,
    /// Do not install or restart the systemd service (boards without systemd; tests).
    #[arg(long)]
    pub no_service: bool,
    /// Print every step without running it.
    #[arg(long)]
    pub dry_run: bool,
}

/// Single-quotes `text` for a POSIX shell.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

struct Remote<'a> {
    args: &'a FlashArgs,
}

impl Remote<'_> {
    fn common(&self, command: &mut Command) {
        command.args(["-o", "BatchMode=yes", "-o", "ConnectTimeout=15"]);
        if let Some(key) = &self.args.identity {
            command.arg("-i").arg(key);
        }
        for option in &self.args.ssh_options {
            command.args(["-o", option]);
        }
    }

    fn ssh_command(&self, script: &str) -> Command {
        let mut command = Command::new("ssh");
        command.args(["-p", &self.args.port.to_string()]);
        self.common(&mut command);
        command.arg(&self.args.host).arg(format!("sh -c {}", quote(script)));
        command
    }

    /// Runs `script` on the board; returns its stdout, or fails with its stderr.
    fn ssh(&self, step: &str, script: &str) -> Result<String> {
        let mut command = self.ssh_command(script);
        if self.args.dry_run {
            println!("# {step}\nssh -p {} {} <<'EOF'\n{}\nEOF", self.args.port, self.args.host, script.trim());
            return Ok(String::new());
        }
        eprintln!("flash: {step}");
        let output = util::output(&mut command)?;
        if !output.status.success() {
            bail!("{step} failed on {}: {}", self.args.host, String::from_utf8_lossy(&output.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    fn scp(&self, local: &Path, remote: &str) -> Result<()> {
        let mut command = Command::new("scp");
        command.args(["-q", "-P", &self.args.port.to_string()]);
        self.common(&mut command);
        command.arg(local).arg(format!("{}:{remote}", self.args.host));
        if self.args.dry_run {
            println!("# copy\nscp -P {} {} {}:{remote}", self.args.port, local.display(), self.args.host);
            return Ok(());
        }
        eprintln!(
            "flash: copy {} ({:.1} MB)",
            local.display(),
            std::fs::metadata(local).map_or(0, |m| m.len()) as f64 / 1e6
        );
        let output = util::output(&mut command)?;
        if !output.status.success() {
            bail!("copying to {} failed: {}", self.args.host, String::from_utf8_lossy(&output.stderr).trim());
        }
        Ok(())
    }
}

fn restart_script(root: &str) -> String {
    let root = quote(root);
    format!(
        "set -eu
sudo -n true 2>/dev/null || {{ echo 'passwordless sudo is needed to install the service (or pass --no-service)' >&2; exit 1; }}
id cdnet >/dev/null 2>&1 || sudo useradd --system --no-create-home --shell /usr/sbin/nologin cdnet
sed \"s#/opt/cdnet#\"{root}\"#g\" {root}/current/cdnet-edge.service | sudo tee /etc/systemd/system/cdnet-edge.service >/dev/null
sudo install -m 644 {root}/current/99-cdnet-probe.rules /etc/udev/rules.d/99-cdnet-probe.rules
sudo udevadm control --reload-rules 2>/dev/null && sudo udevadm trigger --subsystem-match=tty 2>/dev/null || true
sudo systemctl daemon-reload
sudo systemctl enable cdnet-edge >/dev/null 2>&1
sudo systemctl restart cdnet-edge"
    )
}

fn health_script(root: &str, service: bool) -> String {
    let root = quote(root);
    let service_check = if service {
        "sleep 3\nsystemctl is-active --quiet cdnet-edge || { echo 'the cdnet-edge service is not active' >&2; exit 1; }\n"
    } else {
        ""
    };
    format!("set -eu\n{service_check}{root}/current/bin/cdnet-edge check --model {root}/current/model")
}

fn switch_script(root: &str, target: &str) -> String {
    let root = quote(root);
    // rename(2) over the old link: `current` is always a whole release.
    format!("set -eu\ncd {root}\nln -sfn {} current.new\nmv -Tf current.new current", quote(target))
}

/// Deploys; on a failed health check rolls back and fails.
pub fn run(args: FlashArgs) -> Result<()> {
    if !args.dry_run {
        require("ssh")?;
        require("scp")?;
    }
    if !args.root.starts_with('/') {
        bail!("--root {:?} must be an absolute path on the board", args.root);
    }
    let tarball = match (&args.tarball, args.dry_run) {
        (Some(path), _) => {
            if !path.is_file() {
                bail!(
                    "--tarball {}: no such file; build one with `cargo xtask dist --board {}`",
                    path.display(),
                    args.board
                );
            }
            path.clone()
        }
        (None, true) => {
            println!("# build\ncargo xtask dist --board {} --model {}", args.board, args.model.display());
            PathBuf::from(format!("target/dist/cdnet-edge-{}-{}.tar.gz", util::version(), args.board))
        }
        (None, false) => dist::run(DistArgs {
            board: args.board.clone(),
            model: args.model.clone(),
            prebuilt: None,
            probe_usb_id: "1209:c0de".into(),
            out: PathBuf::from("target/dist"),
            version: None,
        })?,
    };
    let file_name = tarball.file_name().and_then(|n| n.to_str()).context("the tarball has no file name")?;
    let name = file_name
        .strip_suffix(".tar.gz")
        .with_context(|| format!("{file_name}: expected a .tar.gz from `cargo xtask dist`"))?;
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c)) {
        bail!("{file_name}: unexpected characters in the release name");
    }
    let remote = Remote { args: &args };
    let root = quote(&args.root);
    let release = format!("releases/{name}");

    let previous = remote.ssh(
        "prepare",
        &format!(
            "set -eu
[ -d {root} ] || mkdir -p {root} 2>/dev/null || sudo -n install -d -o \"$(id -un)\" -g \"$(id -gn)\" {root}
mkdir -p {root}/releases {root}/incoming
readlink {root}/current || true"
        ),
    )?;
    let previous = previous.trim().to_string();
    if previous == release {
        bail!("{name} is already the running release on {}; build a new version to deploy", args.host);
    }
    remote.scp(&tarball, &format!("{}/incoming/{name}.tar.gz.part", args.root))?;
    let name_q = quote(name);
    remote.ssh(
        "unpack and verify",
        &format!(
            "set -eu
cd {root}
mv incoming/{name_q}.tar.gz.part incoming/{name_q}.tar.gz
rm -rf releases/{name_q}.tmp
mkdir releases/{name_q}.tmp
tar -xzf incoming/{name_q}.tar.gz -C releases/{name_q}.tmp --strip-components=1
(cd releases/{name_q}.tmp && sha256sum -c --quiet SHA256SUMS)
rm -rf releases/{name_q}
mv releases/{name_q}.tmp releases/{name_q}
rm -f incoming/{name_q}.tar.gz"
        ),
    )?;
    remote.ssh("switch", &switch_script(&args.root, &release))?;
    let service = !args.no_service;
    let activate = |what: &str| -> Result<String> {
        if service {
            remote.ssh(&format!("restart service ({what})"), &restart_script(&args.root))?;
        }
        remote.ssh(&format!("health check ({what})"), &health_script(&args.root, service))
    };
    match activate(name) {
        Ok(report) => {
            if !args.dry_run {
                println!("deployed {name} to {}: {}", args.host, report.trim());
            }
            Ok(())
        }
        Err(error) if !previous.is_empty() => {
            eprintln!("flash: {error:#}");
            remote.ssh("roll back", &switch_script(&args.root, &previous))?;
            let again = activate(&previous).context("the previous release failed its health check too")?;
            eprintln!("flash: previous release healthy: {}", again.trim());
            bail!("{name} failed its health check and was rolled back to {previous} ({error:#})")
        }
        Err(error) => {
            bail!("{name} failed its health check and there is no previous release to roll back to: {error:#}")
        }
    }
}
