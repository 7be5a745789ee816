//! The element loops of the fused activations on Flex tensors, and the scalar math they apply.
//!
//! Each loop is compiled twice on x86-64: for the baseline target (SSE2) and for AVX2 + FMA,
//! chosen at run time; the scalar functions are branch-free and call-free so that both
//! vectorise (8 lanes with AVX2). aarch64's baseline NEON vectorises the one loop.

use burn::backend::Flex;
use burn::backend::tensor::FloatTensor;
use burn::tensor::{Bytes, DType};
use burn_flex::ops::binary::binary_op;
use burn_flex::ops::unary::unary_op;
use burn_flex::{FlexTensor, Layout};

/// `f(x)` element-wise. float32 runs the vectorised loop (in place when `x` is not shared); other
/// float types go through Flex's generic element loop.
pub(super) fn map<F32, F64>(x: FloatTensor<Flex>, f32_op: F32, f64_op: F64) -> FloatTensor<Flex>
where
    F32: Fn(f32) -> f32 + Copy,
    F64: Fn(f64) -> f64 + Copy,
{
    if x.dtype() != DType::F32 {
        return unary_op(x, f32_op, f64_op);
    }
    let mut x = contiguous(x);
    let len = x.layout().num_elements();
    if let Some(values) = x.try_storage_mut::<f32>() {
        apply_in_place(&mut values[..len], f32_op);
        return x;
    }
    let out = apply_to_copy(&x.storage::<f32>()[..len], f32_op);
    FlexTensor::new(Bytes::from_elems(out), Layout::contiguous(x.layout().shape().clone()), DType::F32)
}

/// `f(x, grad)` element-wise, written into `grad`'s buffer when it is not shared.
pub(super) fn map_with_grad<F32, F64>(
    x: FloatTensor<Flex>,
    grad: FloatTensor<Flex>,
    f32_op: F32,
    f64_op: F64,
) -> FloatTensor<Flex>
where
    F32: Fn(f32, f32) -> f32 + Copy,
    F64: Fn(f64, f64) -> f64 + Copy,
{
    if x.dtype() != DType::F32 || grad.dtype() != DType::F32 || x.layout().shape() != grad.layout().shape() {
        return binary_op(x, grad, f32_op, f64_op, None);
    }
    let (x, mut grad) = (contiguous(x), contiguous(grad));
    let len = x.layout().num_elements();
    let x_values = &x.storage::<f32>()[..len];
    let grad_values = &mut grad.storage_mut::<f32>()[..len];
    apply_with_grad(x_values, grad_values, f32_op);
    grad
}

/// The tensor with its elements in row-major order from offset 0 (a copy only when they are not).
fn contiguous(x: FlexTensor) -> FlexTensor {
    if x.layout().is_contiguous() && x.layout().start_offset() == 0 { x } else { x.to_contiguous() }
}

fn apply_in_place(values: &mut [f32], op: impl Fn(f32) -> f32) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for (checked above).
        return unsafe { avx2::apply_in_place(values, op) };
    }
    values.iter_mut().for_each(|v| *v = op(*v));
}

fn apply_to_copy(values: &[f32], op: impl Fn(f32) -> f32) -> Vec<f32> {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: as in `apply_in_place`.
        return unsafe { avx2::apply_to_copy(values, op) };
    }
    values.iter().map(|&v| op(v)).collect()
}

fn apply_with_grad(x: &[f32], grad: &mut [f32], op: impl Fn(f32, f32) -> f32) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: as in `apply_in_place`.
        return unsafe { avx2::apply_with_grad(x, grad, op) };
    }
    grad.iter_mut().zip(x).for_each(|(g, &x)| *g = op(x, *g));
}

/// The same loops compiled for AVX2 + FMA; each is instantiated per operation, whose
/// `#[inline(always)]` math is then compiled with these features too.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn apply_in_place(values: &mut [f32], op: impl Fn(f32) -> f32) {
        values.iter_mut().for_each(|v| *v = op(*v));
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn apply_to_copy(values: &[f32], op: impl Fn(f32) -> f32) -> Vec<f32> {
        values.iter().map(|&v| op(v)).collect()
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn apply_with_grad(x: &[f32], grad: &mut [f32], op: impl Fn(f32, f32) -> f32) {
        grad.iter_mut().zip(x).for_each(|(g, &x)| *g = op(x, *g));
    }
}

/// SiLU, `x · σ(x)`.
#[inline(always)]
pub(super) fn silu_f32(x: f32) -> f32 {
    x * sigmoid_f32(x)
}

#[inline(always)]
pub(super) fn silu_f64(x: f64) -> f64 {
    x * sigmoid_f64(x)
}

/// `grad · d silu/dx = grad · σ(x)(1 + x(1 − σ(x)))`.
#[inline(always)]
pub(super) fn silu_grad_f32(x: f32, grad: f32) -> f32 {
    let s = sigmoid_f32(x);
    grad * s * (1.0 + x * (1.0 - s))
}

#[inline(always)]
pub(super) fn silu_grad_f64(x: f64, grad: f64) -> f64 {
    let s = sigmoid_f64(x);
    grad * s * (1.0 + x * (1.0 - s))
}

/// ReLU6, `min(max(x, 0), 6)`; `clamp` lets NaN through, as PyTorch's ReLU6 does.
#[inline(always)]
pub(super) fn relu6_f32(x: f32) -> f32 {
    x.clamp(0.0, 6.0)
}

#[inline(always)]
pub(super) fn relu6_f64(x: f64) -> f64 {
    x.clamp(0.0, 6.0)
}

/// `grad` where `0 < x < 6` (and for NaN, which the forward pass lets through), zero elsewhere.
#[inline(always)]
pub(super) fn relu6_grad_f32(x: f32, grad: f32) -> f32 {
    if x > 0.0 && x < 6.0 || x.is_nan() { grad } else { 0.0 }
}

#[inline(always)]
pub(super) fn relu6_grad_f64(x: f64, grad: f64) -> f64 {
    if x > 0.0 && x < 6.0 || x.is_nan() { grad } else { 0.0 }
}

/// σ(x), branch-free so that the element loops around it vectorise: `1 / (1 + e)` for x ≥ 0 and
/// `e / (1 + e)` below, with `e = exp(−|x|) ≤ 1`, so neither side overflows or cancels.
#[inline(always)]
fn sigmoid_f32(x: f32) -> f32 {
    let e = exp_f32(-x.abs());
    let inverse = 1.0 / (1.0 + e);
    if x >= 0.0 { inverse } else { e * inverse }
}

#[inline(always)]
fn sigmoid_f64(x: f64) -> f64 {
    let e = (-x.abs()).exp();
    let inverse = 1.0 / (1.0 + e);
    if x >= 0.0 { inverse } else { e * inverse }
}

/// `exp(x)` for x ≤ 0 in float32 to about 2 ulp, written without calls or branches (libm's
/// `expf` is a call per element, which no loop can vectorise; it was 19 % of an EfficientNet-B0
/// training step). Range reduction `x = n·ln 2 + r`, |r| ≤ ln 2 / 2, then a degree-6 minimax
/// polynomial for `exp(r)` (Cephes' `expf` coefficients) scaled by `2ⁿ` through the exponent bits.
/// Inputs below −87 flush to `exp(−87)` ≈ 1.6e-38, which σ and SiLU cannot tell from zero.
#[inline(always)]
fn exp_f32(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that `n · LN2_HI` is exact for the |n| ≤ 126 used here.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 · 2²³ rounds to the nearest integer without a call.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 0.0);
    let n = (x * LOG2_E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_2e-4;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let exp_r = p * r * r + r + 1.0;
    exp_r * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

#[cfg(test)]
mod tests {
    use super::exp_f32;

    #[test]
    fn the_branch_free_exp_is_within_3_ulp_of_libm_where_sigmoid_uses_it() {
        let mut worst = 0.0f32;
        for i in 0..=870_000 {
            let x = -(i as f32) * 1e-4;
            let (got, want) = (exp_f32(x), (x as f64).exp() as f32);
            worst = worst.max((got - want).abs() / (want * f32::EPSILON));
        }
        assert!(worst <= 3.0, "worst error {worst} ulp");
    }
}
