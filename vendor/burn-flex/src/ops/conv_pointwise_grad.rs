//! Backward pass of pointwise (1×1, stride 1, unpadded, ungrouped) 2D convolutions (f32, NCHW).
//!
//! In NCHW every image of a 1×1 convolution is a matrix product, `Y_b = W · X_b` with `X_b` the
//! `[C_in, H·W]` block of image `b`. Its gradients are two more products that read the same
//! blocks through strides, with no transposed copies:
//!
//! - `dW = Σ_b dY_b · X_bᵀ` (`[C_out, C_in]`): images are split between threads, each summing its
//!   share into its own buffer, and the buffers are added;
//! - `dX_b = Wᵀ · dY_b` (`[C_in, H·W]`): one product per image, images in parallel.
//!
//! burn-backend's default computes the weight gradient as a convolution of the swapped input with
//! the swapped output gradient (an `H × W` kernel, i.e. im2col of the whole activation) and the
//! input gradient as a transposed convolution; MBConv blocks have two 1×1 convolutions each.

use alloc::vec;
use alloc::vec::Vec;
use burn_backend::DType;
use burn_backend::ops::ConvOptions;
use burn_std::{Bytes, Shape};

use crate::{FlexTensor, Layout};

/// True for an f32 1×1 convolution with stride 1, no padding and one group.
pub(crate) fn applies(x: &FlexTensor, weight: &FlexTensor, options: &ConvOptions<2>) -> bool {
    let x_shape = x.layout().shape();
    let w_shape = weight.layout().shape();
    x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && x_shape.num_dims() == 4
        && w_shape.num_dims() == 4
        && w_shape[2] == 1
        && w_shape[3] == 1
        && w_shape[1] == x_shape[1]
        && options.groups == 1
        && options.stride == [1, 1]
        && options.padding == [(0, 0), (0, 0)]
}

/// `C[m×n] = A[m×k] · B[k×n]` (`accumulate`: `C += …`) with explicit row/column strides.
#[allow(clippy::too_many_arguments)]
unsafe fn product(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const f32,
    lhs_cs: usize,
    lhs_rs: usize,
    rhs: *const f32,
    rhs_cs: usize,
    rhs_rs: usize,
) {
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            if accumulate { 1.0 } else { 0.0 },
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Gradient with respect to the weight, `[C_out, C_in, 1, 1]`.
pub(crate) fn weight_grad_f32(
    x: FlexTensor,
    weight: &FlexTensor,
    output_grad: FlexTensor,
) -> FlexTensor {
    let x = x.to_contiguous();
    let output_grad = output_grad.to_contiguous();
    let w_shape = weight.layout().shape().clone();
    let x_shape = x.layout().shape();
    let (batch, c_in, spatial) = (x_shape[0], x_shape[1], x_shape[2] * x_shape[3]);
    let c_out = w_shape[0];
    let x_data: &[f32] = x.storage();
    let g_data: &[f32] = output_grad.storage();
    assert_eq!(
        g_data.len(),
        batch * c_out * spatial,
        "1×1 conv backward: output gradient size"
    );

    // Sum over the images in `range` into `acc` ([C_out, C_in] row-major).
    let partial = |range: core::ops::Range<usize>, acc: &mut [f32]| {
        for (i, b) in range.enumerate() {
            // SAFETY: the blocks are in bounds (sizes checked above) and `acc` is C_out × C_in.
            unsafe {
                product(
                    c_out,
                    c_in,
                    spatial,
                    acc.as_mut_ptr(),
                    c_in,
                    i > 0,
                    g_data.as_ptr().add(b * c_out * spatial),
                    1,
                    spatial,
                    x_data.as_ptr().add(b * c_in * spatial),
                    spatial,
                    1,
                );
            }
        }
    };

    #[cfg(feature = "rayon")]
    let result = {
        use rayon::prelude::*;
        let shares = rayon::current_num_threads().clamp(1, batch.max(1));
        let per_share = batch.div_ceil(shares);
        let partials: Vec<Vec<f32>> = (0..shares)
            .into_par_iter()
            .filter(|s| s * per_share < batch)
            .map(|s| {
                let mut acc = vec![0.0f32; c_out * c_in];
                partial(s * per_share..((s + 1) * per_share).min(batch), &mut acc);
                acc
            })
            .collect();
        let mut partials = partials.into_iter();
        let mut total = partials
            .next()
            .unwrap_or_else(|| vec![0.0f32; c_out * c_in]);
        for p in partials {
            for (t, v) in total.iter_mut().zip(&p) {
                *t += v;
            }
        }
        total
    };
    #[cfg(not(feature = "rayon"))]
    let result = {
        let mut acc = vec![0.0f32; c_out * c_in];
        partial(0..batch, &mut acc);
        acc
    };

    FlexTensor::new(
        Bytes::from_elems(result),
        Layout::contiguous(w_shape),
        DType::F32,
    )
}

/// Gradient with respect to the input, `[N, C_in, H, W]`.
pub(crate) fn input_grad_f32(
    x: &FlexTensor,
    weight: FlexTensor,
    output_grad: FlexTensor,
) -> FlexTensor {
    let weight = weight.to_contiguous();
    let output_grad = output_grad.to_contiguous();
    let x_shape: Shape = x.layout().shape().clone();
    let (batch, c_in, spatial) = (x_shape[0], x_shape[1], x_shape[2] * x_shape[3]);
    let c_out = weight.layout().shape()[0];
    let w_data: &[f32] = weight.storage();
    let g_data: &[f32] = output_grad.storage();
    assert_eq!(
        g_data.len(),
        batch * c_out * spatial,
        "1×1 conv backward: output gradient size"
    );
    let mut result = vec![0.0f32; batch * c_in * spatial];

    let image = |b: usize, dx: &mut [f32]| {
        // SAFETY: `dx` is image b's [C_in, H·W] block; W is [C_out, C_in]; dY_b is [C_out, H·W].
        unsafe {
            product(
                c_in,
                spatial,
                c_out,
                dx.as_mut_ptr(),
                spatial,
                false,
                w_data.as_ptr(),
                c_in,
                1,
                g_data.as_ptr().add(b * c_out * spatial),
                1,
                spatial,
            );
        }
    };

    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        if c_in * spatial > 0 {
            result
                .par_chunks_mut(c_in * spatial)
                .enumerate()
                .for_each(|(b, dx)| image(b, dx));
        }
    }
    #[cfg(not(feature = "rayon"))]
    if c_in * spatial > 0 {
        for (b, dx) in result.chunks_mut(c_in * spatial).enumerate() {
            image(b, dx);
        }
    }

    FlexTensor::new(
        Bytes::from_elems(result),
        Layout::contiguous(x_shape),
        DType::F32,
    )
}
