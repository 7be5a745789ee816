//! Backward pass of canonical depthwise 2D convolutions (f32, NCHW).
//!
//! A depthwise convolution (`groups == channels_in == channels_out`, one `kh × kw` filter per
//! channel) mixes no channels, and neither does its backward pass. burn-backend's default
//! computes the weight gradient of a grouped convolution with one `conv2d` (plus a slice and a
//! slice-assign) per group, and the input gradient with a grouped transposed convolution. For
//! MobileNet/EfficientNet-style networks, whose depthwise layers have hundreds of channels, that
//! per-group loop dominates a CPU training step.
//!
//! The kernels here work on one `(batch, channel)` plane at a time, through a `PhaseLayout`:
//! the zero-padded input split by stride phase, and the output gradient laid out at the same
//! width, so that each kernel tap is one contiguous run:
//!
//! - weight gradient: `dW[c, kh, kw] = Σ_n Σ_oh Σ_ow dY[n, c, oh, ow] · X[n, c, ih, iw]` with
//!   `ih = oh·sh + kh·dh − ph`, `iw = ow·sw + kw·dw − pw`: one dot product per tap and plane;
//!   channels run in parallel;
//! - input gradient: `dX[n, c, ih, iw] += W[c, kh, kw] · dY[n, c, oh, ow]` over the same index
//!   map: one AXPY per tap into the phase planes, which are then added onto `dX`; planes run in
//!   parallel.
//!
//! Padding is per side (`begin` places the input in the padded plane; the output size, taken
//! from `dY`, already reflects `end`), so TF-style asymmetric "same" padding is handled exactly.
//! Stride and dilation are general. The dot products and AXPYs use macerator's run-time SIMD
//! dispatch when the `simd` feature is on.

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
}

/// The zero-padded input plane of one `(n, c)` pair split by stride phase, so that every kernel
/// tap reads one contiguous run of one phase plane.
///
/// Phase `(pr, pc)` holds the padded input at rows `i·sh + pr` and columns `j·sw + pc`, as a
/// `rows × width` plane. Tap `(kh, kw)` at output `(oh, ow)` reads padded row
/// `oh·sh + kh·dh` and column `ow·sw + kw·dw`, i.e. phase `(kh·dh mod sh, kw·dw mod sw)` at
/// `(oh + ⌊kh·dh/sh⌋, ow + ⌊kw·dw/sw⌋)`. With the output gradient laid out at the same `width`
/// (zeros in the columns past `out_w`), the whole `Σ_oh Σ_ow` of one tap is a single dot product
/// (weight gradient) or AXPY (input gradient) of `run_len` elements at a fixed offset: vector
/// work even for 7×7 or 5×5 maps, where row-by-row loops are mostly overhead. The columns past
/// `out_w` only ever meet zeros of the gradient, so they add nothing.
#[derive(Debug, Clone)]
struct PhaseLayout {
    geometry: Geometry,
    /// Rows of one phase plane.
    rows: usize,
    /// Columns of one phase plane and of the laid-out output gradient.
    width: usize,
    /// Elements of one phase plane: `rows × width` plus the slack the last tap's run reads.
    plane_len: usize,
    /// Elements of one tap's run: `out_h × width`.
    run_len: usize,
    taps: Vec<PhaseTap>,
}

/// One kernel tap: its index in the `kh × kw` filter, its phase plane and its run's offset.
#[derive(Debug, Clone, Copy)]
struct PhaseTap {
    index: usize,
    phase: usize,
    offset: usize,
}

impl PhaseLayout {
    fn new(geometry: Geometry) -> Self {
        let [sh, sw] = geometry.stride;
        let [dh, dw] = geometry.dilation;
        let row_shift = ((geometry.kernel_h - 1) * dh) / sh;
        let col_shift = ((geometry.kernel_w - 1) * dw) / sw;
        let rows = geometry.out_h + row_shift;
        let width = geometry.out_w + col_shift;
        let run_len = geometry.out_h * width;
        let plane_len = row_shift * width + col_shift + run_len;
        let mut taps = Vec::with_capacity(geometry.kernel_h * geometry.kernel_w);
        for kh in 0..geometry.kernel_h {
            for kw in 0..geometry.kernel_w {
                let (rq, cq) = (kh * dh, kw * dw);
                taps.push(PhaseTap {
                    index: kh * geometry.kernel_w + kw,
                    phase: (rq % sh) * sw + cq % sw,
                    offset: (rq / sh) * width + cq / sw,
                });
            }
        }
        Self {
            geometry,
            rows,
            width,
            plane_len,
            run_len,
            taps,
        }
    }

    fn phases(&self) -> usize {
        self.geometry.stride[0] * self.geometry.stride[1]
    }

    /// Where padded row `i` of phase row `pr` lies in the input (`None` in the padding).
    fn input_row(&self, i: usize, pr: usize) -> Option<usize> {
        let padded = i * self.geometry.stride[0] + pr;
        padded
            .checked_sub(self.geometry.pad_begin[0])
            .filter(|&r| r < self.geometry.in_h)
    }

    /// The phase columns `[start, end)` of phase column `pc` that lie inside the input, and the
    /// input column of `start`.
    fn input_cols(&self, pc: usize) -> (usize, usize, usize) {
        let (sw, pad) = (self.geometry.stride[1], self.geometry.pad_begin[1]);
        // Column j maps to input column j·sw + pc − pad.
        let start = pad.saturating_sub(pc).div_ceil(sw);
        let end = (self.geometry.in_w + pad)
            .saturating_sub(pc)
            .div_ceil(sw)
            .min(self.width);
        let start = start.min(end);
        (start, end, (start * sw + pc).saturating_sub(pad))
    }

    /// Zeroed buffers for one plane's phase planes and laid-out output gradient.
    fn scratch(&self) -> Scratch {
        Scratch {
            phases: vec![0.0; self.phases() * self.plane_len],
            run: vec![0.0; self.run_len],
        }
    }

    /// Copies one input plane into its phase planes. Only the positions inside the input are
    /// written, the same ones on every call, so the padding stays as `scratch` zeroed it.
    fn split(&self, x_plane: &[f32], phases: &mut [f32]) {
        let sw = self.geometry.stride[1];
        let in_w = self.geometry.in_w;
        for (phase, plane) in phases.chunks_exact_mut(self.plane_len).enumerate() {
            let (pr, pc) = (phase / sw, phase % sw);
            let (start, end, iw0) = self.input_cols(pc);
            for i in 0..self.rows {
                let Some(ih) = self.input_row(i, pr) else {
                    continue;
                };
                let src = &x_plane[ih * in_w + iw0..];
                let dst = &mut plane[i * self.width + start..i * self.width + end];
                for (j, d) in dst.iter_mut().enumerate() {
                    *d = src[j * sw];
                }
            }
        }
    }

    /// Adds the phase planes back onto one input-gradient plane (the inverse of `split`).
    fn merge(&self, phases: &[f32], dx_plane: &mut [f32]) {
        let sw = self.geometry.stride[1];
        let in_w = self.geometry.in_w;
        for (phase, plane) in phases.chunks_exact(self.plane_len).enumerate() {
            let (pr, pc) = (phase / sw, phase % sw);
            let (start, end, iw0) = self.input_cols(pc);
            for i in 0..self.rows {
                let Some(ih) = self.input_row(i, pr) else {
                    continue;
                };
                let src = &plane[i * self.width + start..i * self.width + end];
                let dst = &mut dx_plane[ih * in_w + iw0..];
                for (j, s) in src.iter().enumerate() {
                    dst[j * sw] += s;
                }
            }
        }
    }

    /// Lays one output-gradient plane out at `width` columns (zeros past `out_w`).
    fn spread(&self, g_plane: &[f32], run: &mut [f32]) {
        let out_w = self.geometry.out_w;
        for (row, src) in run
            .chunks_exact_mut(self.width)
            .zip(g_plane.chunks_exact(out_w))
        {
            row[..out_w].copy_from_slice(src);
            row[out_w..].fill(0.0);
        }
    }
}

/// One worker's buffers (see `PhaseLayout::scratch`).
struct Scratch {
    phases: Vec<f32>,
    run: Vec<f32>,
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
    let layout = PhaseLayout::new(geometry);
    let x_data: &[f32] = x.storage();
    let grad_data: &[f32] = output_grad.storage();
    let k_spatial = geometry.kernel_h * geometry.kernel_w;
    let (in_spatial, out_spatial) = (
        geometry.in_h * geometry.in_w,
        geometry.out_h * geometry.out_w,
    );
    let mut result = vec![0.0f32; geometry.channels * k_spatial];
    if result.is_empty() || out_spatial == 0 {
        // Nothing to sum (an empty batch or output): the gradient is zero.
        return FlexTensor::new(
            Bytes::from_elems(result),
            Layout::contiguous(w_shape),
            DType::F32,
        );
    }

    let channel_work = |scratch: &mut Scratch, c: usize, out: &mut [f32]| {
        let Scratch { phases, run } = scratch;
        // Each plane's dot products are f32 (many independent lanes); planes add up in f64 so
        // that large batches do not lose the small contributions.
        let mut sums = vec![0.0f64; k_spatial];
        for n in 0..geometry.batch {
            let plane = n * geometry.channels + c;
            layout.split(&x_data[plane * in_spatial..][..in_spatial], phases);
            layout.spread(&grad_data[plane * out_spatial..][..out_spatial], run);
            for tap in &layout.taps {
                let source = &phases[tap.phase * layout.plane_len + tap.offset..][..layout.run_len];
                sums[tap.index] += dot(run, source) as f64;
            }
        }
        for (o, s) in out.iter_mut().zip(&sums) {
            *o = *s as f32;
        }
    };

    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        result.par_chunks_mut(k_spatial).enumerate().for_each_init(
            || layout.scratch(),
            |scratch, (c, out)| channel_work(scratch, c, out),
        );
    }
    #[cfg(not(feature = "rayon"))]
    {
        let mut scratch = layout.scratch();
        for (c, out) in result.chunks_mut(k_spatial).enumerate() {
            channel_work(&mut scratch, c, out);
        }
    }

    FlexTensor::new(
        Bytes::from_elems(result),
        Layout::contiguous(w_shape),
        DType::F32,
    )
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
    let layout = PhaseLayout::new(geometry);
    let w_data: &[f32] = weight.storage();
    let grad_data: &[f32] = output_grad.storage();
    let k_spatial = geometry.kernel_h * geometry.kernel_w;
    let in_spatial = geometry.in_h * geometry.in_w;
    let out_spatial = geometry.out_h * geometry.out_w;
    let mut result = vec![0.0f32; geometry.batch * geometry.channels * in_spatial];
    if result.is_empty() || out_spatial == 0 {
        // An empty input, or an output no input reaches: the gradient is zero.
        return FlexTensor::new(
            Bytes::from_elems(result),
            Layout::contiguous(x_shape),
            DType::F32,
        );
    }

    let plane_work = |scratch: &mut Scratch, plane: usize, dx: &mut [f32]| {
        let c = plane % geometry.channels;
        let filter = &w_data[c * k_spatial..][..k_spatial];
        let Scratch { phases, run } = scratch;
        phases.fill(0.0);
        layout.spread(&grad_data[plane * out_spatial..][..out_spatial], run);
        for tap in &layout.taps {
            let target = &mut phases[tap.phase * layout.plane_len + tap.offset..][..layout.run_len];
            axpy(filter[tap.index], run, target);
        }
        layout.merge(phases, dx);
    };

    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        result.par_chunks_mut(in_spatial).enumerate().for_each_init(
            || layout.scratch(),
            |scratch, (plane, dx)| plane_work(scratch, plane, dx),
        );
    }
    #[cfg(not(feature = "rayon"))]
    {
        let mut scratch = layout.scratch();
        for (plane, dx) in result.chunks_mut(in_spatial).enumerate() {
            plane_work(&mut scratch, plane, dx);
        }
    }

    FlexTensor::new(
        Bytes::from_elems(result),
        Layout::contiguous(x_shape),
        DType::F32,
    )
}

/// `Σ a[i] · b[i]` over equally long slices.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    #[cfg(feature = "simd")]
    {
        simd::dot(a, b)
    }
    #[cfg(not(feature = "simd"))]
    {
        // Eight independent accumulators, so the compiler can keep them in vector lanes.
        let mut lanes = [0.0f32; 8];
        let (chunks_a, chunks_b) = (a.chunks_exact(8), b.chunks_exact(8));
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
}

/// `y[i] += alpha · x[i]` over equally long slices.
fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    assert_eq!(x.len(), y.len());
    #[cfg(feature = "simd")]
    simd::axpy(alpha, x, y);
    #[cfg(not(feature = "simd"))]
    for (y, x) in y.iter_mut().zip(x) {
        *y += alpha * x;
    }
}

/// The two inner loops with macerator's run-time SIMD dispatch (AVX2 + FMA, AVX-512, NEON, …):
/// the baseline x86-64 build would otherwise run them on 128-bit SSE without FMA.
#[cfg(feature = "simd")]
mod simd {
    use macerator::{Scalar, Simd, vload_unaligned, vstore_unaligned};

    #[macerator::with_simd]
    pub fn dot<S: Simd>(a: &[f32], b: &[f32]) -> f32 {
        let lanes = S::lanes32();
        let len = a.len().min(b.len());
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let zero = 0.0f32.splat::<S>();
        // Four accumulators hide the latency of the multiply-add.
        let mut acc = [zero; 4];
        let mut i = 0;
        // SAFETY: every load reads `lanes` elements starting at `i`, with `i + lanes ≤ len`.
        unsafe {
            while i + 4 * lanes <= len {
                for (k, acc) in acc.iter_mut().enumerate() {
                    let offset = i + k * lanes;
                    *acc = vload_unaligned::<S, f32>(pa.add(offset))
                        .mul_add(vload_unaligned::<S, f32>(pb.add(offset)), *acc);
                }
                i += 4 * lanes;
            }
            while i + lanes <= len {
                acc[0] = vload_unaligned::<S, f32>(pa.add(i))
                    .mul_add(vload_unaligned::<S, f32>(pb.add(i)), acc[0]);
                i += lanes;
            }
        }
        let total = (acc[0] + acc[1]) + (acc[2] + acc[3]);
        let tail: f32 = a[i..len].iter().zip(&b[i..len]).map(|(x, y)| x * y).sum();
        total.reduce_add() + tail
    }

    #[macerator::with_simd]
    pub fn axpy<S: Simd>(alpha: f32, x: &[f32], y: &mut [f32]) {
        let lanes = S::lanes32();
        let len = x.len().min(y.len());
        let (px, py) = (x.as_ptr(), y.as_mut_ptr());
        let alpha_v = alpha.splat::<S>();
        let mut i = 0;
        // SAFETY: every load and store touches `lanes` elements starting at `i`, `i + lanes ≤ len`.
        unsafe {
            while i + lanes <= len {
                let updated = vload_unaligned::<S, f32>(px.add(i))
                    .mul_add(alpha_v, vload_unaligned::<S, f32>(py.add(i)));
                vstore_unaligned::<S, f32>(py.add(i), updated);
                i += lanes;
            }
        }
        for (y, x) in y[i..len].iter_mut().zip(&x[i..len]) {
            *y += alpha * x;
        }
    }
}
