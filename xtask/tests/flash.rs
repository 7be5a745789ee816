//! `cargo xtask dist` + `flash` against a real sshd on 127.0.0.1 (throwaway host and user keys, a
//! free port, a temp dir as the board): deploy, deploy a release that fails its health check and is
//! rolled back, deploy a broken tarball that never touches the running release.

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
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    std::fs::write(
        d.join("sshd_config"),
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {0}/host_key\nAuthorizedKeysFile {0}/authorized_keys\n\
             PubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\n\
             UsePAM no\nSubsystem sftp internal-sftp\nPermitRootLogin prohibit-password\nPidFile {0}/sshd.pid\n",
            d.display()
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
            .args(["flash", "--board", "x86_64", "--no-service"])
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

    // 2. A release whose model card no longer matches its graphs: it installs (its files match its
    //    manifest) but fails the health check, and the board goes back to v1.
    let broken_model = d.join("broken-model");
    std::fs::create_dir_all(&broken_model).unwrap();
    for entry in std::fs::read_dir(&demo).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, broken_model.join(path.file_name().unwrap())).unwrap();
    }
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
    let health = run(Command::new(live.join("bin/cdnet-edge")).arg("check").arg("--model").arg(live.join("model")));
    assert!(String::from_utf8_lossy(&health.stdout).contains("\"ok\":true"));
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
