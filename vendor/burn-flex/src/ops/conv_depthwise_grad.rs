//! Backward pass of canonical depthwise 2D convolutions (f32, NCHW).
//!
//! A depthwise convolution (`groups == channels_in == channels_out`, one `kh × kw` filter per
//! channel) mixes no channels, and neither does its backward pass. burn-backend's default
//! computes the weight gradient of a grouped convolution with one `conv2d` (plus a slice and a
//! slice-assign) per group, and the input gradient with a grouped transposed convolution. For
//! MobileNet/EfficientNet-style networks, whose depthwise layers have hundreds of channels, that
//! per-group loop dominates a CPU training step.
//!
//! The kernels here walk each `(batch, channel)` plane once per kernel tap:
//!
//! - weight gradient: `dW[c, kh, kw] = Σ_n Σ_oh Σ_ow dY[n, c, oh, ow] · X[n, c, ih, iw]` with
//!   `ih = oh·sh + kh·dh − ph`, `iw = ow·sw + kw·dw − pw`: `kh·kw` dot products over shifted
//!   (and, for stride > 1, strided) rows; channels run in parallel;
//! - input gradient: `dX[n, c, ih, iw] += W[c, kh, kw] · dY[n, c, oh, ow]` over the same index
//!   map: `kh·kw` row-wise AXPYs per plane; planes run in parallel.
//!
//! Padding is per side (`begin` is what locates a tap; the output size, taken from `dY`, already
//! reflects `end`), so TF-style asymmetric "same" padding needs no padded copy of the input.

use alloc::vec;
use alloc::vec::Vec;
use burn_backend::DType;
use burn_backend::ops::ConvOptions;
use burn_std::{Bytes, Shape};

use crate::{FlexTensor, Layout};

/// True when `conv2d(x, weight, options)` is a canonical depthwise convolution on f32 tensors,
/// the case the kernels of this module handle.
pub(crate) fn applies(x: &FlexTensor, weight: &FlexTensor, options: &ConvOptions<2>) -> bool {
    let x_shape = x.layout().shape();
    let w_shape = weight.layout().shape();
    x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && x_shape.num_dims() == 4
        && w_shape.num_dims() == 4
        && w_shape[1] == 1
        && options.groups == x_shape[1]
        && w_shape[0] == x_shape[1]
}

/// Sizes shared by both gradients.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    batch: usize,
    channels: usize,
    in_h: usize,
    in_w: usize,
    out_h: usize,
    out_w: usize,
    kernel_h: usize,
    kernel_w: usize,
    stride: [usize; 2],
    pad_begin: [usize; 2],
    dilation: [usize; 2],
}

impl Geometry {
    fn new(x_shape: &Shape, w_shape: &Shape, grad_shape: &Shape, options: &ConvOptions<2>) -> Self {
        assert_eq!(
            grad_shape[1], x_shape[1],
            "depthwise conv backward: output gradient has {} channels, input {}",
            grad_shape[1], x_shape[1]
        );
        Self {
            batch: x_shape[0],
            channels: x_shape[1],
            in_h: x_shape[2],
            in_w: x_shape[3],
            out_h: grad_shape[2],
            out_w: grad_shape[3],
            kernel_h: w_shape[2],
            kernel_w: w_shape[3],
            stride: options.stride,
            pad_begin: options.padding_begin(),
            dilation: options.dilation,
        }
    }

    /// Every kernel tap with its valid output rows and columns, and where those land in the input.
    fn taps(&self) -> Vec<Tap> {
        let mut taps = Vec::with_capacity(self.kernel_h * self.kernel_w);
        for kh in 0..self.kernel_h {
            let rows = valid_out_range(
                kh,
                self.dilation[0],
                self.pad_begin[0],
                self.stride[0],
                self.in_h,
                self.out_h,
            );
            for kw in 0..self.kernel_w {
                let cols = valid_out_range(
                    kw,
                    self.dilation[1],
                    self.pad_begin[1],
                    self.stride[1],
                    self.in_w,
                    self.out_w,
                );
                taps.push(Tap {
                    index: kh * self.kernel_w + kw,
                    kh,
                    kw,
                    rows,
                    cols,
                });
            }
        }
        taps
    }

    /// Input row hit by output row `oh` at kernel row `kh` (only called inside the valid range).
    #[inline]
    fn in_row(&self, oh: usize, kh: usize) -> usize {
        oh * self.stride[0] + kh * self.dilation[0] - self.pad_begin[0]
    }

    /// Input column hit by output column `ow` at kernel column `kw` (inside the valid range).
    #[inline]
    fn in_col(&self, ow: usize, kw: usize) -> usize {
        ow * self.stride[1] + kw * self.dilation[1] - self.pad_begin[1]
    }
}

/// One kernel position and the output rectangle whose inputs it reads inside the image.
#[derive(Debug, Clone, Copy)]
struct Tap {
    index: usize,
    kh: usize,
    kw: usize,
    rows: (usize, usize),
    cols: (usize, usize),
}

/// Output positions `o` in `[start, end)` whose input `o·stride + k·dilation − pad` is in
/// `[0, in_size)`.
fn valid_out_range(
    k: usize,
    dilation: usize,
    pad: usize,
    stride: usize,
    in_size: usize,
    out_size: usize,
) -> (usize, usize) {
    let offset = k * dilation;
    let start = if offset >= pad {
        0
    } else {
        (pad - offset).div_ceil(stride)
    };
    let limit = in_size + pad;
    let end = if offset >= limit {
        0
    } else {
        (limit - offset).div_ceil(stride)
    };
    let end = end.min(out_size);
    (start.min(end), end)
}

/// Gradient of a depthwise convolution with respect to its weight, `[C, 1, kh, kw]`.
pub(crate) fn weight_grad_f32(
    x: FlexTensor,
    weight: &FlexTensor,
    output_grad: FlexTensor,
    options: &ConvOptions<2>,
) -> FlexTensor {
    let x = x.to_contiguous();
    let output_grad = output_grad.to_contiguous();
    let w_shape = weight.layout().shape().clone();
    let geometry = Geometry::new(
        x.layout().shape(),
        &w_shape,
        output_grad.layout().shape(),
        options,
    );
    let x_data: &[f32] = x.storage();
    let grad_data: &[f32] = output_grad.storage();
    let taps = geometry.taps();
    let k_spatial = geometry.kernel_h * geometry.kernel_w;
    let mut result = vec![0.0f32; geometry.channels * k_spatial];

    let channel_work = |c: usize, out: &mut [f32]| {
        let mut sums = vec![0.0f64; k_spatial];
        for n in 0..geometry.batch {
            let plane = n * geometry.channels + c;
            let x_plane =
                &x_data[plane * geometry.in_h * geometry.in_w..][..geometry.in_h * geometry.in_w];
            let g_plane = &grad_data[plane * geometry.out_h * geometry.out_w..]
                [..geometry.out_h * geometry.out_w];
            for tap in &taps {
                sums[tap.index] += tap_dot(&geometry, tap, x_plane, g_plane);
            }
        }
        for (o, s) in out.iter_mut().zip(&sums) {
            *o = *s as f32;
        }
    };

    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        result
            .par_chunks_mut(k_spatial)
            .enumerate()
            .for_each(|(c, out)| channel_work(c, out));
    }
    #[cfg(not(feature = "rayon"))]
    for (c, out) in result.chunks_mut(k_spatial).enumerate() {
        channel_work(c, out);
    }

    FlexTensor::new(
        Bytes::from_elems(result),
        Layout::contiguous(w_shape),
        DType::F32,
    )
}

/// `Σ dY[oh, ow] · X[ih, iw]` over one tap's valid rectangle of one plane; rows are summed in f64
/// so that large planes and batches do not lose the small contributions.
fn tap_dot(geometry: &Geometry, tap: &Tap, x_plane: &[f32], g_plane: &[f32]) -> f64 {
    let (ow_start, ow_end) = tap.cols;
    if ow_start >= ow_end {
        return 0.0;
    }
    let iw_start = geometry.in_col(ow_start, tap.kw);
    let len = ow_end - ow_start;
    let step = geometry.stride[1];
    let mut total = 0.0f64;
    for oh in tap.rows.0..tap.rows.1 {
        let ih = geometry.in_row(oh, tap.kh);
        let g_row = &g_plane[oh * geometry.out_w + ow_start..][..len];
        let x_row = &x_plane[ih * geometry.in_w + iw_start..];
        total += if step == 1 {
            dot(g_row, &x_row[..len])
        } else {
            dot_strided(g_row, x_row, step)
        } as f64;
    }
    total
}

/// Dot product with eight independent accumulators, so the compiler can keep it in SIMD lanes.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let chunks_a = a.chunks_exact(8);
    let chunks_b = b.chunks_exact(8);
    let tail: f32 = chunks_a
        .remainder()
        .iter()
        .zip(chunks_b.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for i in 0..8 {
            lanes[i] += ca[i] * cb[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

/// `Σ a[i] · b[i·step]`.
#[inline]
fn dot_strided(a: &[f32], b: &[f32], step: usize) -> f32 {
    let mut lanes = [0.0f32; 4];
    for (i, &value) in a.iter().enumerate() {
        lanes[i % 4] += value * b[i * step];
    }
    lanes.iter().sum()
}

/// Gradient of a depthwise convolution with respect to its input, `[N, C, H, W]`.
pub(crate) fn input_grad_f32(
    x: &FlexTensor,
    weight: FlexTensor,
    output_grad: FlexTensor,
    options: &ConvOptions<2>,
) -> FlexTensor {
    let weight = weight.to_contiguous();
    let output_grad = output_grad.to_contiguous();
    let x_shape = x.layout().shape().clone();
    let geometry = Geometry::new(
        &x_shape,
        weight.layout().shape(),
        output_grad.layout().shape(),
        options,
    );
    let w_data: &[f32] = weight.storage();
    let grad_data: &[f32] = output_grad.storage();
    let taps = geometry.taps();
    let k_spatial = geometry.kernel_h * geometry.kernel_w;
    let in_spatial = geometry.in_h * geometry.in_w;
    let out_spatial = geometry.out_h * geometry.out_w;
    let mut result = vec![0.0f32; geometry.batch * geometry.channels * in_spatial];

    let plane_work = |plane: usize, dx: &mut [f32]| {
        let c = plane % geometry.channels;
        let filter = &w_data[c * k_spatial..][..k_spatial];
        let g_plane = &grad_data[plane * out_spatial..][..out_spatial];
        for tap in &taps {
            tap_scatter(&geometry, tap, filter[tap.index], g_plane, dx);
        }
    };

    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        result
            .par_chunks_mut(in_spatial)
            .enumerate()
            .for_each(|(plane, dx)| plane_work(plane, dx));
    }
    #[cfg(not(feature = "rayon"))]
    for (plane, dx) in result.chunks_mut(in_spatial).enumerate() {
        plane_work(plane, dx);
    }

    FlexTensor::new(
        Bytes::from_elems(result),
        Layout::contiguous(x_shape),
        DType::F32,
    )
}

/// `dX[ih, iw] += w · dY[oh, ow]` over one tap's valid rectangle of one plane.
fn tap_scatter(geometry: &Geometry, tap: &Tap, w: f32, g_plane: &[f32], dx: &mut [f32]) {
    let (ow_start, ow_end) = tap.cols;
    if ow_start >= ow_end {
        return;
    }
    let iw_start = geometry.in_col(ow_start, tap.kw);
    let len = ow_end - ow_start;
    let step = geometry.stride[1];
    for oh in tap.rows.0..tap.rows.1 {
        let ih = geometry.in_row(oh, tap.kh);
        let g_row = &g_plane[oh * geometry.out_w + ow_start..][..len];
        let dx_row = &mut dx[ih * geometry.in_w + iw_start..];
        if step == 1 {
            for (d, g) in dx_row[..len].iter_mut().zip(g_row) {
                *d += w * g;
            }
        } else {
            for (i, g) in g_row.iter().enumerate() {
                dx_row[i * step] += w * g;
            }
        }
    }
}
