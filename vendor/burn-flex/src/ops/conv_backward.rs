//! Flex's 2D convolution backward pass: depthwise convolutions go to the direct kernels of
//! [`conv_depthwise_grad`](super::conv_depthwise_grad), pointwise (1×1) ones to the strided matrix
//! products of [`conv_pointwise_grad`](super::conv_pointwise_grad); everything else takes the same
//! route as
//! burn-backend's default `ModuleOps` implementation (a transposed convolution for the input
//! gradient, a convolution of the swapped input and output gradient for the weight gradient).
//!
//! The generic route is restated here because burn-backend keeps its helpers `pub(crate)`, and an
//! overriding trait method cannot call the default body it replaces.

use alloc::vec;
use alloc::vec::Vec;
use burn_backend::ops::conv::{calculate_padding_out, pad_asymmetric_conv_input};
use burn_backend::ops::{ConvOptions, ConvTransposeOptions, FloatTensorOps, ModuleOps};
use burn_backend::{TensorMetadata, tensor::FloatTensor};
use burn_std::{Shape, Slice};

use super::{conv_depthwise_grad, conv_pointwise_grad};
use crate::Flex;

/// Gradient of `conv2d(x, weight)` with respect to `x`.
pub(crate) fn conv2d_x_backward(
    x: FloatTensor<Flex>,
    weight: FloatTensor<Flex>,
    output_grad: FloatTensor<Flex>,
    options: ConvOptions<2>,
) -> FloatTensor<Flex> {
    if conv_depthwise_grad::applies(&x, &weight, &options) {
        return conv_depthwise_grad::input_grad_f32(&x, weight, output_grad, &options);
    }
    if conv_pointwise_grad::applies(&x, &weight, &options) {
        return conv_pointwise_grad::input_grad_f32(&x, weight, output_grad);
    }
    generic_x_backward(x, weight, output_grad, options)
}

/// burn-backend's default input gradient: a transposed convolution, on an explicitly padded input
/// when the padding is asymmetric.
fn generic_x_backward(
    x: FloatTensor<Flex>,
    weight: FloatTensor<Flex>,
    output_grad: FloatTensor<Flex>,
    options: ConvOptions<2>,
) -> FloatTensor<Flex> {
    if options.is_asymmetric() {
        let input_shape = x.shape();
        let padding = options.padding;
        let (x, options) = pad_asymmetric_conv_input::<Flex, 2>(x, options);
        let grad = x_backward_symmetric(x, weight, output_grad, options);
        let ranges: Vec<Slice> = (0..4)
            .map(|dim| {
                let begin = if dim >= 2 { padding[dim - 2].0 } else { 0 };
                Slice::from(begin..begin + input_shape[dim])
            })
            .collect();
        return Flex::float_slice(grad, &ranges);
    }
    x_backward_symmetric(x, weight, output_grad, options)
}

fn x_backward_symmetric(
    x: FloatTensor<Flex>,
    weight: FloatTensor<Flex>,
    output_grad: FloatTensor<Flex>,
    options: ConvOptions<2>,
) -> FloatTensor<Flex> {
    let [_, _, in_h, in_w] = x.shape().dims();
    let [_, _, out_h, out_w] = output_grad.shape().dims();
    let [_, _, kernel_h, kernel_w] = weight.shape().dims();
    let pad = options.padding_begin();
    let padding_out = [
        calculate_padding_out(
            kernel_h,
            options.stride[0],
            pad[0],
            options.dilation[0],
            in_h,
            out_h,
        ),
        calculate_padding_out(
            kernel_w,
            options.stride[1],
            pad[1],
            options.dilation[1],
            in_w,
            out_w,
        ),
    ];
    Flex::conv_transpose2d(
        output_grad,
        weight,
        None,
        ConvTransposeOptions::new(
            options.stride,
            pad,
            padding_out,
            options.dilation,
            options.groups,
        ),
    )
}

/// Gradient of `conv2d(x, weight)` with respect to `weight`.
pub(crate) fn conv2d_weight_backward(
    x: FloatTensor<Flex>,
    weight: FloatTensor<Flex>,
    output_grad: FloatTensor<Flex>,
    options: ConvOptions<2>,
) -> FloatTensor<Flex> {
    if conv_depthwise_grad::applies(&x, &weight, &options) {
        return conv_depthwise_grad::weight_grad_f32(x, &weight, output_grad, &options);
    }
    if conv_pointwise_grad::applies(&x, &weight, &options) {
        return conv_pointwise_grad::weight_grad_f32(x, &weight, output_grad);
    }
    generic_weight_backward(x, weight, output_grad, options)
}

/// burn-backend's default weight gradient: per group, the input correlated with the output
/// gradient.
fn generic_weight_backward(
    x: FloatTensor<Flex>,
    weight: FloatTensor<Flex>,
    output_grad: FloatTensor<Flex>,
    options: ConvOptions<2>,
) -> FloatTensor<Flex> {
    let (x, options) = pad_asymmetric_conv_input::<Flex, 2>(x, options);
    let weight_shape = weight.shape();
    let [channels_out, channels_in_per_group, kernel_h, kernel_w] = weight_shape.dims();
    let out_per_group = channels_out / options.groups;
    let x_swapped = Flex::float_swap_dims(x, 0, 1);
    let grad_swapped = Flex::float_swap_dims(output_grad, 0, 1);
    // Correlating the input with the output gradient: stride and dilation swap roles.
    let correlate = ConvOptions::new(options.dilation, options.padding_begin(), options.stride, 1);
    let group_grads: Vec<FloatTensor<Flex>> = (0..options.groups)
        .map(|g| {
            let x_group = Flex::float_slice(
                x_swapped.clone(),
                &[Slice::from(
                    g * channels_in_per_group..(g + 1) * channels_in_per_group,
                )],
            );
            let grad_group = Flex::float_slice(
                grad_swapped.clone(),
                &[Slice::from(g * out_per_group..(g + 1) * out_per_group)],
            );
            let grad = Flex::float_swap_dims(
                Flex::conv2d(x_group, grad_group, None, correlate.clone()),
                0,
                1,
            );
            // The correlation can overhang the kernel by up to stride − 1 taps; those are not weights.
            Flex::float_slice(
                grad,
                &[
                    Slice::from(0..out_per_group),
                    Slice::from(0..channels_in_per_group),
                    Slice::from(0..kernel_h),
                    Slice::from(0..kernel_w),
                ],
            )
        })
        .collect();
    let grad = if group_grads.len() == 1 {
        group_grads.into_iter().next().unwrap()
    } else {
        Flex::float_cat(group_grads, 0)
    };
    debug_assert_eq!(
        grad.shape(),
        Shape::from(vec![
            channels_out,
            channels_in_per_group,
            kernel_h,
            kernel_w
        ])
    );
    grad
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{FlexTensor, Layout};
    use burn_backend::DType;
    use burn_std::Bytes;

    fn tensor(shape: [usize; 4], seed: u64) -> FlexTensor {
        // A small LCG: deterministic values in [-1, 1) without a rand dependency.
        let mut state = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let values: Vec<f32> = (0..shape.iter().product::<usize>())
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect();
        FlexTensor::new(
            Bytes::from_elems(values),
            Layout::contiguous(Shape::from(shape.to_vec())),
            DType::F32,
        )
    }

    fn values(t: FlexTensor) -> Vec<f32> {
        t.to_contiguous().storage::<f32>().to_vec()
    }

    fn assert_close(fast: &[f32], reference: &[f32], what: &str) {
        assert_eq!(fast.len(), reference.len(), "{what}: length");
        let scale = reference
            .iter()
            .fold(0.0f32, |m, v| m.max(v.abs()))
            .max(1e-6);
        for (i, (a, b)) in fast.iter().zip(reference).enumerate() {
            assert!(
                (a - b).abs() <= 1e-5 * scale,
                "{what}[{i}]: fast {a} vs reference {b} (scale {scale})"
            );
        }
    }

    /// Depthwise kernels against burn's generic grouped path on one geometry.
    fn check(
        batch: usize,
        channels: usize,
        size: [usize; 2],
        kernel: usize,
        stride: usize,
        padding: [(usize, usize); 2],
        dilation: usize,
    ) {
        let options = ConvOptions::new_with_padding([stride; 2], padding, [dilation; 2], channels);
        let x = tensor([batch, channels, size[0], size[1]], 1);
        let weight = tensor([channels, 1, kernel, kernel], 2);
        let out = Flex::conv2d(x.clone(), weight.clone(), None, options.clone());
        let grad = tensor(out.shape().dims(), 3);
        assert!(conv_depthwise_grad::applies(&x, &weight, &options));
        let what =
            format!("b{batch} c{channels} {size:?} k{kernel} s{stride} p{padding:?} d{dilation}");
        assert_close(
            &values(conv2d_weight_backward(
                x.clone(),
                weight.clone(),
                grad.clone(),
                options.clone(),
            )),
            &values(generic_weight_backward(
                x.clone(),
                weight.clone(),
                grad.clone(),
                options.clone(),
            )),
            &format!("weight grad {what}"),
        );
        assert_close(
            &values(conv2d_x_backward(
                x.clone(),
                weight.clone(),
                grad.clone(),
                options.clone(),
            )),
            &values(generic_x_backward(x, weight, grad, options)),
            &format!("input grad {what}"),
        );
    }

    #[test]
    fn pointwise_backward_matches_generic_path() {
        for (batch, c_in, c_out, size) in [
            (1, 3, 5, [4, 4]),
            (3, 16, 8, [7, 9]),
            (4, 24, 144, [10, 10]),
        ] {
            let options = ConvOptions::new([1, 1], [0, 0], [1, 1], 1);
            let x = tensor([batch, c_in, size[0], size[1]], 4);
            let weight = tensor([c_out, c_in, 1, 1], 5);
            let grad = tensor([batch, c_out, size[0], size[1]], 6);
            assert!(conv_pointwise_grad::applies(&x, &weight, &options));
            let what = format!("b{batch} {c_in}→{c_out} {size:?}");
            assert_close(
                &values(conv2d_weight_backward(
                    x.clone(),
                    weight.clone(),
                    grad.clone(),
                    options.clone(),
                )),
                &values(generic_weight_backward(
                    x.clone(),
                    weight.clone(),
                    grad.clone(),
                    options.clone(),
                )),
                &format!("1×1 weight grad {what}"),
            );
            assert_close(
                &values(conv2d_x_backward(
                    x.clone(),
                    weight.clone(),
                    grad.clone(),
                    options.clone(),
                )),
                &values(generic_x_backward(x, weight, grad, options)),
                &format!("1×1 input grad {what}"),
            );
        }
    }

    #[test]
    fn depthwise_backward_matches_generic_path() {
        // stride 1 "same", TF-same stride 2 (pad 0 before, 1 after) on even and odd sizes, a 5×5
        // kernel with asymmetric padding, no padding, dilation, one channel, narrow maps (5×7 with a
        // 5×5 kernel, 7×7 at stride 2), a map smaller than the kernel, and padding on one side only.
        check(2, 3, [8, 8], 3, 1, [(1, 1), (1, 1)], 1);
        check(2, 4, [8, 8], 3, 2, [(0, 1), (0, 1)], 1);
        check(3, 5, [9, 7], 3, 2, [(1, 1), (1, 1)], 1);
        check(2, 6, [10, 10], 5, 2, [(1, 2), (1, 2)], 1);
        check(2, 6, [11, 13], 5, 1, [(2, 2), (2, 2)], 1);
        check(1, 7, [12, 12], 3, 1, [(0, 0), (0, 0)], 1);
        check(2, 3, [12, 12], 3, 1, [(2, 2), (2, 2)], 2);
        check(2, 1, [6, 6], 3, 1, [(1, 1), (1, 1)], 1);
        check(4, 32, [17, 17], 3, 1, [(1, 1), (1, 1)], 1);
        check(3, 4, [5, 7], 5, 1, [(2, 2), (2, 2)], 1);
        check(2, 5, [7, 7], 3, 2, [(0, 1), (0, 1)], 1);
        check(2, 3, [2, 3], 5, 1, [(2, 2), (2, 2)], 1);
        check(2, 3, [9, 8], 3, 2, [(2, 0), (0, 3)], 1);
    }
}
