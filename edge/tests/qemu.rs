//! The aarch64 build of `cdnet-edge` (what ships to the boards), run under `qemu-aarch64`, must
//! classify a phantom frame with the shipped demo bundles, fp32 and int8, as the x86 build does
//! (the int8 graph runs other kernels and fused ops on each architecture).
//! It runs the `dist` build (what ships; `.ci/run` builds it) or the profile `CDNET_BOARD_PROFILE`
//! names; without that build or qemu the test says so and skips (and fails under `CI=true`). The
//! `dist` binary must also fit its budget: at most 15 MB (issue 16; docs/performance.md).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Largest the stripped `dist` board binary may be, in bytes.
const DIST_BINARY_BUDGET: u64 = 15_000_000;

fn check(command: &mut Command, bundle: &str) -> serde_json::Value {
    let bundle = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models").join(bundle);
    let output =
        command.args(["check", "--seed", "11", "--model"]).arg(bundle).env("RUST_LOG", "error").output().unwrap();
    assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn aarch64_build_under_qemu_matches_x86() {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"), PathBuf::from);
    let profile = std::env::var("CDNET_BOARD_PROFILE").unwrap_or_else(|_| "dist".into());
    let arm_binary = target.join("aarch64-unknown-linux-gnu").join(&profile).join("cdnet-edge");
    let qemu = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).map(|d| d.join("qemu-aarch64")).find(|q| q.is_file()));
    let (true, Some(qemu)) = (arm_binary.is_file(), qemu) else {
        let reason = format!(
            "needs {} (RUSTFLAGS=\"-C force-unwind-tables=no\" cargo build --profile {profile} --target aarch64-unknown-linux-gnu -p cdnet-edge) and qemu-aarch64 (apt install qemu-user)",
            arm_binary.display()
        );
        // .ci/run installs qemu-user and builds the dist binary first.
        cdnet_testkit::skip("aarch64 under qemu", &reason, cdnet_testkit::in_ci());
        return;
    };
    let size = std::fs::metadata(&arm_binary).unwrap().len();
    eprintln!("{}: {size} bytes", arm_binary.display());
    if profile == "dist" {
        assert!(size <= DIST_BINARY_BUDGET, "the board binary is {size} bytes, over {DIST_BINARY_BUDGET}");
    }
    let probabilities = |v: &serde_json::Value| -> Vec<f64> {
        v["probabilities"].as_array().unwrap().iter().map(|p| p.as_f64().unwrap()).collect()
    };
    for bundle in ["demo-phantom", "demo-phantom-int8"] {
        let x86 = check(&mut Command::new(env!("CARGO_BIN_EXE_cdnet-edge")), bundle);
        let mut under_qemu = Command::new(&qemu);
        under_qemu.args(["-L", "/usr/aarch64-linux-gnu"]).arg(&arm_binary);
        let aarch64 = check(&mut under_qemu, bundle);
        assert_eq!(aarch64["class"], x86["class"], "{bundle}");
        assert_eq!(aarch64["zoom_box"], x86["zoom_box"], "{bundle}");
        let worst =
            probabilities(&aarch64).iter().zip(probabilities(&x86)).map(|(a, b)| (a - b).abs()).fold(0.0, f64::max);
        assert!(worst <= 1e-4, "{bundle}: aarch64 and x86 probabilities differ by {worst}");
    }
}
