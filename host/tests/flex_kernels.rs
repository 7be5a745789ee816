//! The other two kernels of the burn-flex patch (`vendor/burn-flex`, see docs/upstream/), checked
//! through burn's public API on random tensors, to ≤ 1e-4 relative (the depthwise kernels have their
//! own test, `depthwise_grad.rs`):
//!
//! - the direct 1×1 convolution backward, against the same convolution written as a 3×3 one whose
//!   weight is zero outside the centre tap (burn's generic convolution path computes its gradients);
//! - the fused training batch norm and its backward, against the textbook formula composed of tensor
//!   operations (mean, biased variance, normalise, scale, shift), differentiated by burn-autodiff.

use burn::prelude::*;
use burn::tensor::module::{batch_norm_train, conv2d};
use burn::tensor::ops::ConvOptions;

fn tensor<const D: usize>(shape: [usize; D], seed: u64, device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(cdnet_testkit::uniform(shape.iter().product(), seed, -1.0, 3.0), shape), device)
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().try_to_vec::<f32>().expect("f32 tensor")
}

/// Asserts `got ≈ want` to 1e-4 of `want`'s largest magnitude.
fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let scale = want.iter().fold(0.0f32, |m, v| m.max(v.abs())).max(1e-12);
    let worst = got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0.0f32, f32::max);
    assert!(worst <= 1e-4 * scale, "{what}: max |difference| {worst:e} vs max |reference| {scale:e}");
}

/// Shapes `[n, c_in, h, w]`, output channels and stride of the 1×1 cases: stride 1 and 2, odd sizes,
/// and an EfficientNet-sized expansion.
const POINTWISE_CASES: [([usize; 4], usize, usize); 4] =
    [([2, 5, 9, 7], 6, 1), ([3, 4, 11, 13], 8, 2), ([2, 6, 8, 8], 3, 2), ([4, 40, 20, 20], 240, 1)];

/// (dx, dw, db, y) of a 1×1 convolution, written directly or as a centre-only 3×3 (padding 1, so the
/// centre tap of output i reads input stride·i, as the 1×1 does).
fn pointwise_grads(shape: [usize; 4], out: usize, stride: usize, as_3x3: bool) -> [Vec<f32>; 4] {
    let device = Device::flex().autodiff();
    let x = tensor(shape, 1, &device).require_grad();
    let w = tensor([out, shape[1], 1, 1], 2, &device).require_grad();
    let b = tensor([out], 3, &device).require_grad();
    let y = if as_3x3 {
        let mut centre = vec![0.0f32; 9];
        centre[4] = 1.0;
        let mask = Tensor::<4>::from_data(TensorData::new(centre, [1, 1, 3, 3]), &device);
        let w3 = w.clone() * mask;
        conv2d(x.clone(), w3, Some(b.clone()), ConvOptions::new([stride; 2], [1, 1], [1, 1], 1))
    } else {
        conv2d(x.clone(), w.clone(), Some(b.clone()), ConvOptions::new([stride; 2], [0, 0], [1, 1], 1))
    };
    let dims = y.dims();
    let g = tensor(dims, 4, &device);
    let grads = (y.clone() * g).sum().backward();
    let grad = |t: &Tensor<4>| values(t.grad(&grads).expect("tracked"));
    [grad(&x), grad(&w), values(b.grad(&grads).expect("tracked")), values(y.inner())]
}

#[test]
fn pointwise_conv_gradients_match_the_generic_path() {
    for (shape, out, stride) in POINTWISE_CASES {
        let direct = pointwise_grads(shape, out, stride, false);
        let generic = pointwise_grads(shape, out, stride, true);
        for (i, what) in ["dx", "dw", "db", "y"].iter().enumerate() {
            assert_close(&direct[i], &generic[i], &format!("{shape:?} → {out}, stride {stride}: {what}"));
        }
    }
}

/// The textbook training batch norm out of tensor operations: statistics over every axis but 1.
fn composed_batch_norm<const D: usize>(x: Tensor<D>, gamma: Tensor<1>, beta: Tensor<1>, eps: f64) -> Tensor<D> {
    let dims = x.dims();
    let channels = dims[1];
    let mut per_channel = [1usize; D];
    per_channel[1] = channels;
    let flat = x.clone().swap_dims(0, 1).reshape([channels as i64, -1]);
    let mean = flat.clone().mean_dim(1);
    let variance = (flat - mean.clone()).powi_scalar(2).mean_dim(1);
    let normalised = (x - mean.reshape(per_channel)) / (variance.reshape(per_channel) + eps).sqrt();
    normalised * gamma.reshape(per_channel) + beta.reshape(per_channel)
}

/// (y, dx, dgamma, dbeta) of a training batch norm, fused or composed.
fn batch_norm_grads<const D: usize>(shape: [usize; D], fused: bool) -> [Vec<f32>; 4] {
    let device = Device::flex().autodiff();
    let eps = 1e-3;
    let x = tensor(shape, 5, &device).require_grad();
    let gamma = tensor([shape[1]], 6, &device).require_grad();
    let beta = tensor([shape[1]], 7, &device).require_grad();
    let y = if fused {
        batch_norm_train(x.clone(), gamma.clone(), beta.clone(), eps).output
    } else {
        composed_batch_norm(x.clone(), gamma.clone(), beta.clone(), eps)
    };
    let g = tensor(shape, 8, &device);
    let grads = (y.clone() * g).sum().backward();
    [
        values(y.inner()),
        values(x.grad(&grads).expect("tracked")),
        values(gamma.grad(&grads).expect("tracked")),
        values(beta.grad(&grads).expect("tracked")),
    ]
}

#[test]
fn fused_batch_norm_matches_the_composed_formula() {
    let check = |got: [Vec<f32>; 4], want: [Vec<f32>; 4], case: &str| {
        for (i, what) in ["y", "dx", "dgamma", "dbeta"].iter().enumerate() {
            assert_close(&got[i], &want[i], &format!("{case}: {what}"));
        }
    };
    for shape in [[4, 3, 5, 7], [2, 6, 1, 1], [16, 24, 10, 10]] {
        check(batch_norm_grads(shape, true), batch_norm_grads(shape, false), &format!("{shape:?}"));
    }
    check(batch_norm_grads([8, 5], true), batch_norm_grads([8, 5], false), "[8, 5]");
}

#[test]
fn fused_batch_norm_returns_the_batch_statistics() {
    let device = Device::flex();
    let shape = [3, 4, 5, 6];
    let x = tensor(shape, 9, &device);
    let result = batch_norm_train(x.clone(), Tensor::ones([4], &device), Tensor::zeros([4], &device), 1e-5);
    let flat = x.swap_dims(0, 1).reshape([4, -1]);
    let mean = flat.clone().mean_dim(1);
    let variance = (flat - mean.clone()).powi_scalar(2).mean_dim(1);
    assert_close(&values(result.mean), &values(mean.reshape([4])), "mean");
    assert_close(&values(result.variance), &values(variance.reshape([4])), "biased variance");
}
