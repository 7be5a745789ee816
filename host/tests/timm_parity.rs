//! The burn EfficientNet equals timm's `tf_efficientnet_b0`/`b3` (features_only) to ≤ 1e-4.
//!
//! `tools/timm_parity.py` recorded timm's names, shapes and outputs for weights drawn from a
//! counter-based PRNG. This test draws the same weights, writes them under timm's names to a
//! safetensors file, loads that file with the real loader (name mapping included), and compares the
//! stride-16 and stride-32 taps. That proves padding, BatchNorm, SE and the mapping exact.

use burn::prelude::*;
use cdnet_host::model::efficientnet::EfficientNetConfig;
use cdnet_host::model::weights::load_timm_backbone;
use safetensors::tensor::{Dtype, TensorView};
use serde_json::Value;
use std::path::Path;

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Same as `uniform` in tools/timm_parity.py, in the same float32 arithmetic.
fn uniform(seed: u64, n: usize, lo: f64, hi: f64) -> Vec<f32> {
    let (lo32, range32) = (lo as f32, (hi - lo) as f32);
    (0..n as u64)
        .map(|i| lo32 + range32 * ((splitmix64((seed << 32) + i) >> 40) as f32 / (1u32 << 24) as f32))
        .collect()
}

fn check(model: &str, config: EfficientNetConfig) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/parity");
    let info: Value = serde_json::from_slice(&std::fs::read(dir.join(format!("{model}.json"))).unwrap()).unwrap();
    // Weights under timm's names.
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = info["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let shape: Vec<usize> =
                t["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
            let n = shape.iter().product();
            let values = uniform(t["seed"].as_u64().unwrap(), n, t["lo"].as_f64().unwrap(), t["hi"].as_f64().unwrap());
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            (t["name"].as_str().unwrap().to_string(), shape, bytes)
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape, bytes)| (name.clone(), TensorView::new(Dtype::F32, shape.clone(), bytes).unwrap()))
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join(format!("{model}.safetensors"));
    std::fs::write(&file, safetensors::tensor::serialize(views, None).unwrap()).unwrap();

    let device = Device::flex();
    let backbone = load_timm_backbone(config.init(&device), &file).unwrap();
    let input = &info["input"];
    let x = uniform(input["seed"].as_u64().unwrap(), 3 * 224 * 224, -1.0, 1.0);
    let x = Tensor::<4>::from_data(TensorData::new(x, [1, 3, 224, 224]), &device);
    let taps = backbone.forward(x);

    let expected: Vec<f32> = std::fs::read(dir.join(format!("{model}.bin")))
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let shape =
        |key: &str| info[key].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect::<Vec<_>>();
    assert_eq!(taps.feat14.dims().to_vec(), shape("feat14_shape"), "{model} feat14 shape");
    assert_eq!(taps.feat7.dims().to_vec(), shape("feat7_shape"), "{model} feat7 shape");
    let got14 = taps.feat14.into_data().try_to_vec::<f32>().unwrap();
    let got7 = taps.feat7.into_data().try_to_vec::<f32>().unwrap();
    let max_err = |got: &[f32], want: &[f32]| got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
    let (want14, want7) = expected.split_at(got14.len());
    let (e14, e7) = (max_err(&got14, want14), max_err(&got7, want7));
    eprintln!("{model}: max abs error feat14 {e14:.2e}, feat7 {e7:.2e}");
    assert!(e14 <= 1e-4 && e7 <= 1e-4, "{model}: feat14 {e14}, feat7 {e7}");
}

#[test]
fn tf_efficientnet_b0_matches_timm() {
    check("tf_efficientnet_b0", EfficientNetConfig::b0());
}

#[test]
fn tf_efficientnet_b3_matches_timm() {
    let config = EfficientNetConfig::b3();
    assert_eq!(config.tap_channels(), (136, 384));
    check("tf_efficientnet_b3", config);
}

#[test]
fn wrong_variant_is_a_clear_error() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/parity");
    let info: Value = serde_json::from_slice(&std::fs::read(dir.join("tf_efficientnet_b0.json")).unwrap()).unwrap();
    let tensors: Vec<(String, Vec<usize>, Vec<u8>)> = info["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let shape: Vec<usize> =
                t["shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
            let n: usize = shape.iter().product();
            (t["name"].as_str().unwrap().to_string(), shape, vec![0u8; n * 4])
        })
        .collect();
    let views: Vec<(String, TensorView<'_>)> =
        tensors.iter().map(|(n, s, b)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), b).unwrap())).collect();
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("b0.safetensors");
    std::fs::write(&file, safetensors::tensor::serialize(views, None).unwrap()).unwrap();
    // b0 weights into a b3 network: shapes differ and blocks are missing.
    let err = load_timm_backbone(EfficientNetConfig::b3().init(&Device::flex()), &file).unwrap_err();
    assert!(err.to_string().contains("b0.safetensors"), "{err}");
    let err = load_timm_backbone(EfficientNetConfig::b0().init(&Device::flex()), &tmp.path().join("nope.safetensors"))
        .unwrap_err();
    assert!(err.to_string().contains("no such file"), "{err}");
}
