//! `cdnet-edge --trust` (or `CDNET_TRUST`, as the service's environment file sets it): the device
//! serves only bundles signed by a trusted key, and refuses the rest before opening the probe. It
//! refuses, the same way, a bundle without the NNEF graphs it runs.

use cdnet_shared::signature::{SigningKey, key_id, key_pair_pem, sign};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn demo_copy(to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/demo-phantom");
    for entry in std::fs::read_dir(shipped).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

/// A fixed key (tests only) and its public PEM file.
fn key(dir: &Path, name: &str, seed: u8) -> (SigningKey, PathBuf) {
    let key = SigningKey::from_bytes(&[seed; 32]);
    let public = dir.join(format!("{name}.pub.pem"));
    std::fs::write(&public, key_pair_pem(&key).unwrap().1).unwrap();
    (key, public)
}

fn edge(args: &[&str], trust_env: Option<&Path>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cdnet-edge"));
    command.args(args).env("RUST_LOG", "error").env_remove("CDNET_TRUST");
    if let Some(keys) = trust_env {
        command.env("CDNET_TRUST", keys);
    }
    command.output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn check_and_run_serve_only_bundles_a_trusted_key_signed() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (clinic, clinic_pub) = key(d, "clinic", 7);
    let (_, other_pub) = key(d, "other", 9);
    let signed = d.join("signed");
    demo_copy(&signed);
    sign(&signed, &clinic).unwrap();
    let unsigned = d.join("unsigned");
    demo_copy(&unsigned);
    let (signed_arg, unsigned_arg) = (signed.to_str().unwrap(), unsigned.to_str().unwrap());
    let clinic_arg = clinic_pub.to_str().unwrap();

    let out = edge(&["check", "--model", signed_arg, "--trust", clinic_arg], None);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["signed_by"].as_str(), Some(key_id(&clinic.verifying_key()).as_str()));
    // The service's way: the key comes from CDNET_TRUST in its environment file.
    let out = edge(&["check", "--model", signed_arg], Some(&clinic_pub));
    assert!(out.status.success(), "{}", stderr(&out));
    let out = edge(&["check", "--model", signed_arg], Some(&other_pub));
    assert!(!out.status.success() && stderr(&out).contains("does not trust"), "{}", stderr(&out));
    let out = edge(&["check", "--model", unsigned_arg], Some(&clinic_pub));
    assert!(!out.status.success() && stderr(&out).contains("not signed"), "{}", stderr(&out));
    // No key configured (an empty CDNET_TRUST line too): binding alone decides.
    let out = edge(&["check", "--model", unsigned_arg], Some(Path::new("")));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"signed_by\":null"));
    let out = edge(&["check", "--model", signed_arg, "--trust", d.join("absent.pem").to_str().unwrap()], None);
    assert!(!out.status.success() && stderr(&out).contains("absent.pem"), "{}", stderr(&out));

    // `run` refuses before it opens the probe or the screen, and exits non-zero (systemd retries).
    let port = d.join("no-probe");
    let run = ["run", "--model", unsigned_arg, "--port", port.to_str().unwrap(), "--display", "none"];
    let out = edge(&[&run[..], &["--trust", clinic_arg, "--max-seconds", "20"]].concat(), None);
    assert!(!out.status.success() && stderr(&out).contains("not signed"), "{}", stderr(&out));
}

#[test]
fn check_and_run_refuse_a_bundle_without_nnef_graphs_naming_the_upgrade() {
    use cdnet_shared::bundle::{Bundle, CARD_FORMAT_ONNX_ONLY};
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("format3");
    demo_copy(&old);
    let mut card = Bundle::open(&old).unwrap().card;
    let nnef = card.nnef.take().unwrap();
    for file in [&nnef.backbone.file, &nnef.head.file] {
        std::fs::remove_file(old.join(file)).unwrap();
    }
    let graphs = card.graph_files();
    Bundle::write_card(&old, &mut card, &graphs.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
    assert_eq!(card.format, CARD_FORMAT_ONNX_ONLY);
    let old_arg = old.to_str().unwrap();

    let out = edge(&["check", "--model", old_arg], None);
    assert!(!out.status.success() && stderr(&out).contains("cdnet nnef --bundle"), "{}", stderr(&out));
    let port = dir.path().join("no-probe");
    let run = ["run", "--model", old_arg, "--port", port.to_str().unwrap(), "--display", "none", "--max-seconds", "20"];
    let out = edge(&run, None);
    assert!(!out.status.success() && stderr(&out).contains("cdnet nnef --bundle"), "{}", stderr(&out));
}
