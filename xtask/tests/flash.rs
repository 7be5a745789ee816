//! `cargo xtask dist` + `flash` against a real sshd on 127.0.0.1 (throwaway host and user keys, a
//! free port, a temp dir as the board): deploy, deploy a release that fails its health check and is
//! rolled back, deploy a broken tarball that never touches the running release, and, once the
//! board trusts a signing key, serve a signed release and roll back an unsigned one.
//!
//! The service steps run too: the ssh sessions find stand-ins for `sudo`, `systemctl`, `udevadm`
//! and `useradd` first on their PATH (`tests/board-standin/`, set by the test sshd's `SetEnv`).
//! They record every call, keep the board's /etc and /var in a sandbox, and run the installed unit
//! the way systemd would (unit + drop-ins, EnvironmentFile=, ExecStart=), so the deployed service
//! really serves a probe over a pty. What they leave out (users, sandboxing, Restart=) is listed in
//! `tests/board-standin/systemctl`.

use cdnet_shared::signature::{SIGNATURE_FILE, SigningKey, key_pair_pem, sign};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn sshd_binary() -> Option<PathBuf> {
    ["/usr/sbin/sshd", "/usr/bin/sshd"].iter().map(PathBuf::from).find(|p| p.is_file())
}

fn run(command: &mut Command) -> Output {
    let output = command.output().expect("cannot start command");
    if !output.status.success() {
        panic!(
            "{command:?} failed:\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output
}

struct Sshd(Child);

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Newest modification time of the files under `dir`.
fn newest(dir: &Path) -> std::time::SystemTime {
    let mut latest = std::time::SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        let time =
            if path.is_dir() { newest(&path) } else { entry.metadata().and_then(|m| m.modified()).unwrap_or(latest) };
        latest = latest.max(time);
    }
    latest
}

/// The edge binaries of the test profile. `cargo test --workspace` has just built them (for the
/// edge's own tests); building them again with `-p cdnet-edge` alone would resolve features
/// differently and recompile tract, so they are rebuilt only when missing or older than the source.
fn edge_binaries() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root().join("target"), PathBuf::from);
    let dir = target.join("debug");
    let source = newest(&root().join("edge/src")).max(newest(&root().join("shared/src")));
    let fresh = ["cdnet-edge", "cdnet-probe-sim"]
        .iter()
        .all(|b| std::fs::metadata(dir.join(b)).and_then(|m| m.modified()).is_ok_and(|built| built >= source));
    if !fresh {
        run(Command::new(env!("CARGO")).current_dir(root()).args(["build", "-p", "cdnet-edge", "--bins"]));
    }
    dir
}

fn standin_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/board-standin")
}

/// The board's /etc and /var for the stand-ins, with what an operator sets once per board: a
/// systemd drop-in pointing the service at this board's probe and screen (here a pty that
/// `cdnet-probe-sim` publishes, and PNG files), which survives every release.
fn board_system(d: &Path) -> PathBuf {
    let system = d.join("system");
    let drop_in = system.join("etc/systemd/system/cdnet-edge.service.d");
    std::fs::create_dir_all(&drop_in).unwrap();
    std::fs::create_dir_all(system.join("etc/udev/rules.d")).unwrap();
    std::fs::write(
        d.join("board.env"),
        format!("CDNET_PORT={0}/probe\nCDNET_DISPLAY=png:{0}/screen\nCDNET_THREADS=1\n", d.display()),
    )
    .unwrap();
    std::fs::write(drop_in.join("board.conf"), format!("[Service]\nEnvironmentFile={}/board.env\n", d.display()))
        .unwrap();
    system
}

/// Stops the service the stand-in `systemctl` started, however the test ends.
struct Service {
    system: PathBuf,
}

impl Service {
    fn pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.system.join("run/cdnet-edge.pid")).ok()?.trim().parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let state = stat.rsplit_once(") ")?.1.chars().next()?;
        (state != 'Z').then_some(pid)
    }

    /// The system calls the deploys made, one per line.
    fn calls(&self) -> String {
        std::fs::read_to_string(self.system.join("calls.log")).unwrap_or_default()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.system.join("var/log/cdnet-edge.log")).unwrap_or_default()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = Command::new(standin_dir().join("systemctl"))
            .args(["stop", "cdnet-edge"])
            .env("STANDIN_ROOT", &self.system)
            .status();
    }
}

fn xtask() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_xtask"));
    command.current_dir(root());
    command
}

fn link_target(path: &Path) -> String {
    std::fs::read_link(path).unwrap().to_string_lossy().into_owned()
}

#[test]
fn flash_deploys_rolls_back_and_survives_a_broken_copy() {
    let (Some(sshd), true) = (sshd_binary(), which("ssh") && which("ssh-keygen")) else {
        let reason = "needs openssh-server and openssh-client (sudo apt install openssh-server openssh-client)";
        cdnet_testkit::skip("flash over ssh", reason, cdnet_testkit::in_ci());
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for key in ["host_key", "user_key"] {
        run(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", ""]).arg("-f").arg(d.join(key)));
    }
    std::fs::copy(d.join("user_key.pub"), d.join("authorized_keys")).unwrap();
    let system = board_system(d);
    let service = Service { system: system.clone() };
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::write(
        d.join("sshd_config"),
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {0}/host_key\nAuthorizedKeysFile {0}/authorized_keys\n\
             PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\n\
             UsePAM no\nSubsystem sftp internal-sftp\nPermitRootLogin prohibit-password\nPidFile {0}/sshd.pid\n\
             SetEnv PATH={1}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin STANDIN_ROOT={2}\n",
            d.display(),
            standin_dir().display(),
            system.display()
        ),
    )
    .unwrap();
    // sshd started as root wants its privilege-separation folder.
    let _ = std::fs::create_dir_all("/run/sshd");
    let _sshd = Sshd(
        Command::new(&sshd)
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(d.join("sshd_config"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("sshd.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    let host_key = std::fs::read_to_string(d.join("host_key.pub")).unwrap();
    let key_fields: Vec<&str> = host_key.split_whitespace().take(2).collect();
    std::fs::write(d.join("known_hosts"), format!("[127.0.0.1]:{port} {}\n", key_fields.join(" "))).unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "sshd did not start: {}",
            std::fs::read_to_string(d.join("sshd.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let user = String::from_utf8(run(Command::new("id").arg("-un")).stdout).unwrap().trim().to_string();
    let board = d.join("board");
    let bins = edge_binaries();

    let dist = |version: &str, model: &Path| -> PathBuf {
        let out = run(xtask()
            .args(["dist", "--board", "x86_64", "--version", version])
            .arg("--prebuilt")
            .arg(&bins)
            .arg("--model")
            .arg(model)
            .arg("--out")
            .arg(d.join("dist")));
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    };
    let flash = |tarball: &Path| -> Output {
        xtask()
            .args(["flash", "--board", "x86_64"])
            .args(["--host", &format!("{user}@127.0.0.1"), "--port", &port.to_string()])
            .arg("--identity")
            .arg(d.join("user_key"))
            .arg("--ssh-option")
            .arg(format!("UserKnownHostsFile={}", d.join("known_hosts").display()))
            .args(["--ssh-option", "IdentitiesOnly=yes"])
            .arg("--root")
            .arg(&board)
            .arg("--tarball")
            .arg(tarball)
            .output()
            .unwrap()
    };
    let demo = root().join("models/demo-phantom");

    // 1. A good release: unpacked, verified, live, healthy.
    let v1 = dist("v1", &demo);
    let out = flash(&v1);
    assert!(out.status.success(), "flash v1 failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"ok\":true"), "no health report: {out:?}");
    assert_eq!(link_target(&board.join("current")), "releases/cdnet-edge-v1-x86_64");
    let live = board.join("current");
    for file in [
        "bin/cdnet-edge",
        "bin/cdnet-probe-sim",
        "model/model.json",
        "model/backbone.onnx",
        "cdnet-edge.service",
        "99-cdnet-probe.rules",
        "manifest.json",
        "SHA256SUMS",
    ] {
        assert!(live.join(file).is_file(), "{file} missing on the board");
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(live.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["board"], "x86_64");
    assert!(manifest["files"]["model/backbone.onnx"]["sha256"].as_str().is_some_and(|s| s.len() == 64));
    let digest = cdnet_shared::bundle::Bundle::open(&demo).unwrap().card.digest().unwrap();
    assert_eq!(manifest["card_sha256"].as_str(), Some(digest.as_str()), "the manifest names another card");
    assert_eq!(std::fs::read_dir(board.join("incoming")).unwrap().count(), 0, "leftovers in incoming/");
    let v1_pid = check_service_installed_and_serving(&service, &board, &bins, d);

    // Lines of the stand-in systemctl itself (the sudo stand-in logs its own line first).
    let restarts = |service: &Service| service.calls().lines().filter(|l| *l == "systemctl restart cdnet-edge").count();

    // 2. A release whose model card no longer matches its graphs: it installs (its files match its
    //    manifest) but fails the health check, and the board goes back to v1.
    let broken_model = d.join("broken-model");
    copy_dir(&demo, &broken_model);
    let mut card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(broken_model.join("model.json")).unwrap()).unwrap();
    card["labels"].as_array_mut().unwrap().pop();
    std::fs::write(broken_model.join("model.json"), serde_json::to_vec_pretty(&card).unwrap()).unwrap();
    let v2 = dist("v2", &broken_model);
    let out = flash(&v2);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a release failing its health check was accepted");
    assert!(stderr.contains("rolled back"), "{stderr}");
    assert_eq!(link_target(&board.join("current")), "releases/cdnet-edge-v1-x86_64");
    assert!(board.join("releases/cdnet-edge-v2-x86_64").is_dir());
    assert_eq!(restarts(&service), 3, "expected restarts of v1, v2 and v1 again:\n{}", service.calls());
    let log = service.log();
    assert!(log.contains("model.json"), "v2's service did not refuse its card:\n{log}");
    let v1_again = service.pid().unwrap_or_else(|| panic!("v1 is not running after the roll-back:\n{log}"));
    assert_ne!(v1_again, v1_pid, "v1 was not restarted after the roll-back");

    // 3. A copy cut short (half a tarball): refused at unpack, the running release untouched.
    let v3 = d.join("dist/cdnet-edge-v3-x86_64.tar.gz");
    let bytes = std::fs::read(&v1).unwrap();
    std::fs::write(&v3, &bytes[..bytes.len() / 2]).unwrap();
    let out = flash(&v3);
    assert!(!out.status.success(), "a truncated tarball was deployed");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("unpack and verify failed"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(link_target(&board.join("current")), "releases/cdnet-edge-v1-x86_64");
    assert!(!board.join("releases/cdnet-edge-v3-x86_64").exists());
    assert_eq!(restarts(&service), 3, "a refused tarball restarted the service:\n{}", service.calls());
    assert_eq!(service.pid(), Some(v1_again), "a refused tarball disturbed the running service");
    let health = run(Command::new(live.join("bin/cdnet-edge")).arg("check").arg("--model").arg(live.join("model")));
    assert!(String::from_utf8_lossy(&health.stdout).contains("\"ok\":true"));

    // 4. The board is told to trust one signing key (its drop-in's environment file): a signed
    //    release is served, an unsigned one is refused by the service and rolled back.
    let key = SigningKey::from_bytes(&[5; 32]);
    std::fs::write(d.join("clinic.pub.pem"), key_pair_pem(&key).unwrap().1).unwrap();
    let env = std::fs::read_to_string(d.join("board.env")).unwrap();
    std::fs::write(d.join("board.env"), format!("{env}CDNET_TRUST={}/clinic.pub.pem\n", d.display())).unwrap();
    let signed_model = d.join("signed-model");
    copy_dir(&demo, &signed_model);
    sign(&signed_model, &key).unwrap();
    let out = flash(&dist("v4", &signed_model));
    assert!(
        out.status.success(),
        "a signed release was refused: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        service.log()
    );
    assert!(live.join("model").join(SIGNATURE_FILE).is_file(), "the tarball lost the signature");
    let out = flash(&dist("v5", &demo));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("rolled back"), "an unsigned release was served: {stderr}");
    assert!(service.log().contains("not signed"), "the service did not say why:\n{}", service.log());
    assert_eq!(link_target(&board.join("current")), "releases/cdnet-edge-v4-x86_64");
    assert!(service.pid().is_some(), "v4 is not running after the roll-back:\n{}", service.log());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

/// After the first deploy: the unit and udev rule are installed for this board's root, systemd was
/// reloaded, the service enabled and restarted, and it serves a probe; returns its pid.
fn check_service_installed_and_serving(service: &Service, board: &Path, bins: &Path, d: &Path) -> u32 {
    let unit = std::fs::read_to_string(service.system.join("etc/systemd/system/cdnet-edge.service")).unwrap();
    let exec = format!("ExecStart={}/current/bin/cdnet-edge run --model {0}/current/model", board.display());
    assert!(unit.contains(&exec) && !unit.contains("/opt/cdnet"), "the unit was not rewritten for the board:\n{unit}");
    assert!(service.system.join("etc/udev/rules.d/99-cdnet-probe.rules").is_file(), "no udev rule installed");
    let calls = service.calls();
    for call in [
        "udevadm control --reload-rules",
        "systemctl daemon-reload",
        "systemctl enable cdnet-edge",
        "systemctl restart cdnet-edge",
        "systemctl is-active --quiet cdnet-edge",
    ] {
        assert!(calls.contains(call), "the deploy did not run `{call}`:\n{calls}");
    }
    let pid =
        service.pid().unwrap_or_else(|| panic!("the service is not running after the deploy:\n{}", service.log()));
    let report = d.join("probe.json");
    run(Command::new(bins.join("cdnet-probe-sim"))
        .arg("--pty-link")
        .arg(d.join("probe"))
        .args(["--frames", "4", "--lockstep", "--quiet", "--json"])
        .arg(&report));
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let results = report["results"].as_array().map_or(0, Vec::len);
    assert_eq!(results, 4, "the deployed service answered {results} of 4 frames:\n{}", service.log());
    let session = std::fs::read_to_string(service.system.join("var/lib/cdnet/log/session.jsonl")).unwrap_or_default();
    assert!(session.lines().count() >= 4, "the service's session log has {} lines", session.lines().count());
    assert_eq!(service.pid(), Some(pid), "the service restarted while serving:\n{}", service.log());
    pid
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

#[test]
fn dry_run_prints_every_step_and_touches_nothing() {
    let out = run(xtask().args(["flash", "--board", "rpi4", "--host", "pi@192.0.2.1", "--dry-run"]));
    let text = String::from_utf8_lossy(&out.stdout);
    for step in
        ["# build", "# prepare", "# copy", "# unpack and verify", "# switch", "# restart service", "# health check"]
    {
        assert!(text.contains(step), "dry run lacks {step}:\n{text}");
    }
    assert!(text.contains("sha256sum -c") && text.contains("mv -Tf current.new current"));
    let out = run(xtask().args(["flash", "--board", "rpi4", "--host", "pi@192.0.2.1", "--dry-run", "--no-service"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("# health check") && !text.contains("# restart service"), "--no-service:\n{text}");
    assert!(!text.contains("systemctl"), "--no-service still checks the service:\n{text}");
}

#[test]
fn unknown_board_and_missing_tarball_are_one_line_errors() {
    let out = xtask().args(["dist", "--board", "rpi3"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown board \"rpi3\"") && stderr.contains("rpi4"), "{stderr}");
    let out = xtask()
        .args(["flash", "--board", "rpi4", "--host", "pi@x", "--tarball", "/nonexistent.tar.gz"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such file"));
}
