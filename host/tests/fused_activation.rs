//! The fused SiLU and ReLU6 of `cdnet_host::model::activation` (one Flex kernel each way) against
//! two references on random tensors, forward values and input gradients to ≤ 1e-5 relative:
//!
//! - burn's composed forms on the same device (`x · sigmoid(x)`, `relu(x) − relu(x − 6)`), whose
//!   backward passes are burn-autodiff's own;
//! - PyTorch's `F.silu` and `F.relu6` in float64 (`tools/activation_grad_ref.py`), when
//!   `CDNET_PYTHON` has torch; `.ci/run` installs it, so under `CI=true` its absence fails.
//!
//! Inputs span [−9, 11] so both of ReLU6's bounds and SiLU's tails are crossed; one case is a
//! permuted (non-contiguous) view, as the model's reshapes produce.

use burn::backend::Dispatch;
use burn::prelude::*;
use burn::tensor::activation::{relu, silu as composed_silu};
use cdnet_host::model::activation::{FusedActivations, relu6};
use std::path::Path;
use std::process::Command;

const SHAPES: [[usize; 4]; 3] = [[2, 8, 16, 16], [3, 5, 15, 13], [1, 1, 1, 7]];

type Activation = fn(Tensor<4>) -> Tensor<4>;

/// The fused kernel itself, called through the extension (as `activation::silu` does on Flex).
fn silu(x: Tensor<4>) -> Tensor<4> {
    Tensor::from_dispatch(<Dispatch as FusedActivations>::silu(x.into_dispatch()))
}

fn composed_relu6(x: Tensor<4>) -> Tensor<4> {
    relu(x.clone()) - relu(x - 6.0)
}

/// (f(x), d(sum(f(x) · g))/dx) through burn-autodiff on Flex; `permuted` feeds the same values
/// through a swapped-axes view.
fn forward_backward(f: Activation, shape: [usize; 4], x: &[f32], g: &[f32], permuted: bool) -> (Vec<f32>, Vec<f32>) {
    let device = Device::flex().autodiff();
    let leaf = Tensor::<4>::from_data(TensorData::new(x.to_vec(), shape), &device).require_grad();
    let y = if permuted { f(leaf.clone().swap_dims(2, 3)).swap_dims(2, 3) } else { f(leaf.clone()) };
    let g = Tensor::<4>::from_data(TensorData::new(g.to_vec(), shape), &device);
    let grads = (y.clone() * g).sum().backward();
    let dx = leaf.grad(&grads).expect("x takes part in the graph");
    (y.into_data().try_to_vec::<f32>().unwrap(), dx.into_data().try_to_vec::<f32>().unwrap())
}

fn relative_error(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
    got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max) / scale
}

fn inputs(shape: [usize; 4], seed: u64) -> (Vec<f32>, Vec<f32>) {
    let len = shape.iter().product();
    (cdnet_testkit::uniform(len, seed, -9.0, 11.0), cdnet_testkit::uniform(len, seed + 1, -1.0, 1.0))
}

#[test]
fn fused_activations_match_burns_composed_forms() {
    let pairs: [(&str, Activation, Activation); 2] = [("silu", silu, composed_silu), ("relu6", relu6, composed_relu6)];
    for (i, shape) in SHAPES.iter().enumerate() {
        let (x, g) = inputs(*shape, 10 * i as u64 + 1);
        for (name, fused, composed) in pairs {
            let (y_ref, dx_ref) = forward_backward(composed, *shape, &x, &g, false);
            for permuted in [false, true] {
                let (y, dx) = forward_backward(fused, *shape, &x, &g, permuted);
                let (ey, ex) = (relative_error(&y, &y_ref), relative_error(&dx, &dx_ref));
                assert!(ey <= 1e-5 && ex <= 1e-5, "{name} {shape:?} permuted {permuted}: y {ey:.2e}, dx {ex:.2e}");
            }
        }
    }
}

#[test]
fn fused_relu6_passes_nan_through_as_pytorch_does() {
    let x = Tensor::<1>::from_floats([f32::NAN, -1.0, 3.0, 7.0], &Device::flex());
    let y: Vec<f32> = relu6(x).into_data().try_to_vec::<f32>().unwrap();
    assert!(y[0].is_nan());
    assert_eq!(&y[1..], &[0.0, 3.0, 6.0]);
}

/// Says why the test is skipped where a person sees it; under CI (which installs torch) fails.
fn skip(reason: &str) {
    cdnet_testkit::skip("fused activations vs PyTorch", reason, cdnet_testkit::in_ci());
}

fn write_f32(path: &Path, values: &[f32]) {
    std::fs::write(path, values.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()).unwrap();
}

fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path).unwrap().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

#[test]
fn fused_activations_match_pytorch() {
    let Some(python) = std::env::var_os("CDNET_PYTHON") else {
        return skip("CDNET_PYTHON is unset (a Python with torch)");
    };
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/activation_grad_ref.py");
    let shape = SHAPES[1];
    let (x, g) = inputs(shape, 7);
    let dir = tempfile::tempdir().unwrap();
    write_f32(&dir.path().join("x.bin"), &x);
    write_f32(&dir.path().join("g.bin"), &g);
    let result = Command::new(&python).arg(&script).arg(dir.path()).output().expect("run Python");
    let stderr = String::from_utf8_lossy(&result.stderr);
    if result.status.code() == Some(3) {
        return skip(&stderr);
    }
    assert!(result.status.success(), "tools/activation_grad_ref.py: {stderr}");
    for (name, fused) in [("silu", silu as Activation), ("relu6", relu6)] {
        let (y, dx) = forward_backward(fused, shape, &x, &g, false);
        let y_ref = read_f32(&dir.path().join(format!("{name}_y.bin")));
        let dx_ref = read_f32(&dir.path().join(format!("{name}_dx.bin")));
        let (ey, ex) = (relative_error(&y, &y_ref), relative_error(&dx, &dx_ref));
        assert!(ey <= 1e-5 && ex <= 1e-5, "{name} vs PyTorch: y {ey:.2e}, dx {ex:.2e}");
    }
}
