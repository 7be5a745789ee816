//! The depthwise convolution gradients that CPU training uses (burn-flex with the direct kernels
//! of `vendor/burn-flex`) against two references on random tensors, to ≤ 1e-4 relative:
//!
//! - burn's generic path: the same convolution written as a dense one with a block-diagonal weight
//!   (groups = 1), whose backward does not touch the depthwise kernels;
//! - PyTorch (`tools/depthwise_grad_ref.py`, in float64), when `CDNET_PYTHON` has torch; `.ci/run`
//!   installs it, so under `CI=true` its absence fails the test.
//!
//! Cases: stride 1 "same", TF-same stride 2 (padding (0, 1)) on even and odd sizes, 5×5 with
//! padding (1, 2), dilation 2, the narrow maps of EfficientNet's last stages (5 × 7 with a 5×5
//! kernel; 7 × 7 at stride 2 with TF-same padding), a map smaller than the kernel, and an
//! EfficientNet-sized layer.

use burn::prelude::*;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use std::path::Path;
use std::process::Command;

#[derive(Debug, Clone, Copy)]
struct Case {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    /// (top, bottom, left, right)
    pad: [usize; 4],
    dilation: usize,
}

const CASES: [Case; 9] = [
    Case { n: 2, c: 8, h: 16, w: 16, k: 3, stride: 1, pad: [1, 1, 1, 1], dilation: 1 },
    Case { n: 2, c: 8, h: 16, w: 16, k: 3, stride: 2, pad: [0, 1, 0, 1], dilation: 1 },
    Case { n: 3, c: 5, h: 15, w: 13, k: 3, stride: 2, pad: [1, 1, 1, 1], dilation: 1 },
    Case { n: 2, c: 6, h: 20, w: 20, k: 5, stride: 2, pad: [1, 2, 1, 2], dilation: 1 },
    Case { n: 2, c: 4, h: 11, w: 17, k: 3, stride: 1, pad: [2, 2, 2, 2], dilation: 2 },
    Case { n: 3, c: 7, h: 5, w: 7, k: 5, stride: 1, pad: [2, 2, 2, 2], dilation: 1 },
    Case { n: 2, c: 9, h: 7, w: 7, k: 3, stride: 2, pad: [0, 1, 0, 1], dilation: 1 },
    Case { n: 2, c: 3, h: 2, w: 3, k: 5, stride: 1, pad: [2, 2, 2, 2], dilation: 1 },
    Case { n: 4, c: 96, h: 28, w: 28, k: 5, stride: 1, pad: [2, 2, 2, 2], dilation: 1 },
];

fn random(shape: [usize; 4], seed: u64) -> Vec<f32> {
    cdnet_testkit::uniform(shape.iter().product(), seed, -1.0, 1.0)
}

fn options(case: &Case, groups: usize) -> ConvOptions<2> {
    let [top, bottom, left, right] = case.pad;
    ConvOptions::new_with_padding([case.stride; 2], [(top, bottom), (left, right)], [case.dilation; 2], groups)
}

/// (dx, dw, y shape) through burn-autodiff; `dense` uses the block-diagonal groups = 1 weight.
fn burn_grads(
    case: &Case,
    x: &[f32],
    w: &[f32],
    g: &dyn Fn([usize; 4]) -> Vec<f32>,
    dense: bool,
) -> (Vec<f32>, Vec<f32>) {
    let device = Device::flex().autodiff();
    let x =
        Tensor::<4>::from_data(TensorData::new(x.to_vec(), [case.n, case.c, case.h, case.w]), &device).require_grad();
    let w_depthwise =
        Tensor::<4>::from_data(TensorData::new(w.to_vec(), [case.c, 1, case.k, case.k]), &device).require_grad();
    let y = if dense {
        // weight[o, i] = w[o] when o == i, else 0: a mask times the depthwise weight broadcast.
        let eye = Tensor::<2>::eye(case.c, &device).reshape([case.c, case.c, 1, 1]);
        let dense_w = eye * w_depthwise.clone().reshape([case.c, 1, case.k, case.k]);
        conv2d(x.clone(), dense_w, None, options(case, 1))
    } else {
        conv2d(x.clone(), w_depthwise.clone(), None, options(case, case.c))
    };
    let dims = y.dims();
    let g = Tensor::<4>::from_data(TensorData::new(g(dims), dims), &device);
    let grads = (y * g).sum().backward();
    let dx = x.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap();
    let dw = w_depthwise.grad(&grads).unwrap().into_data().try_to_vec::<f32>().unwrap();
    (dx, dw)
}

fn relative_error(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
    got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max) / scale
}

fn write_f32(path: &Path, values: &[f32]) {
    std::fs::write(path, values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path).unwrap().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

fn inputs(case: &Case, seed: u64) -> (Vec<f32>, Vec<f32>, impl Fn([usize; 4]) -> Vec<f32>) {
    let x = random([case.n, case.c, case.h, case.w], seed);
    let w = random([case.c, 1, case.k, case.k], seed + 1);
    (x, w, move |dims: [usize; 4]| random(dims, seed + 2))
}

#[test]
fn depthwise_gradients_match_burns_dense_path() {
    for (i, case) in CASES.iter().enumerate() {
        let (x, w, g) = inputs(case, 10 * i as u64 + 1);
        let (dx, dw) = burn_grads(case, &x, &w, &g, false);
        let (dx_ref, dw_ref) = burn_grads(case, &x, &w, &g, true);
        let (ex, ew) = (relative_error(&dx, &dx_ref), relative_error(&dw, &dw_ref));
        assert!(ex <= 1e-4 && ew <= 1e-4, "{case:?}: dx {ex:.2e}, dw {ew:.2e}");
    }
}

/// Says why the test is skipped where a person sees it; under CI (which installs torch) fails.
fn skip(reason: &str) {
    cdnet_testkit::skip("depthwise gradients vs PyTorch", reason, cdnet_testkit::in_ci());
}

#[test]
fn depthwise_gradients_match_pytorch() {
    let Some(python) = std::env::var_os("CDNET_PYTHON") else {
        return skip("CDNET_PYTHON is unset (a Python with torch)");
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/depthwise_grad_ref.py");
    for (i, case) in CASES.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let (x, w, g) = inputs(case, 10 * i as u64 + 1);
        let (dx, dw) = burn_grads(case, &x, &w, &g, false);
        let json = format!(
            r#"{{"n":{},"c":{},"h":{},"w":{},"k":{},"stride":{},"pad":[{},{},{},{}],"dilation":{}}}"#,
            case.n,
            case.c,
            case.h,
            case.w,
            case.k,
            case.stride,
            case.pad[0],
            case.pad[1],
            case.pad[2],
            case.pad[3],
            case.dilation
        );
        std::fs::write(dir.path().join("case.json"), json).unwrap();
        write_f32(&dir.path().join("x.bin"), &x);
        write_f32(&dir.path().join("w.bin"), &w);
        // The output gradient in the shape burn produced (PyTorch checks it has the same).
        let y_dims = {
            let out = |size: usize, before: usize, after: usize| {
                (size + before + after - case.dilation * (case.k - 1) - 1) / case.stride + 1
            };
            [case.n, case.c, out(case.h, case.pad[0], case.pad[1]), out(case.w, case.pad[2], case.pad[3])]
        };
        write_f32(&dir.path().join("g.bin"), &g(y_dims));
        let result = Command::new(&python).arg(&script).arg(dir.path()).output().expect("run Python");
        let stderr = String::from_utf8_lossy(&result.stderr);
        if result.status.code() == Some(3) {
            return skip(&stderr);
        }
        assert!(result.status.success(), "tools/depthwise_grad_ref.py: {stderr}");
        let (ex, ew) = (
            relative_error(&dx, &read_f32(&dir.path().join("dx.bin"))),
            relative_error(&dw, &read_f32(&dir.path().join("dw.bin"))),
        );
        assert!(ex <= 1e-4 && ew <= 1e-4, "{case:?} vs PyTorch: dx {ex:.2e}, dw {ew:.2e}");
    }
}
