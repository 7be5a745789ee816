//! Training-mode batch normalisation and its backward pass as per-channel passes over NCHW data.
//!
//! burn-backend's defaults compute the statistics by swapping the batch and channel axes (a full
//! copy), reshaping and reducing, then normalise and differentiate with about a dozen broadcast
//! element-wise operations, two of which again copy a swapped tensor. Here:
//!
//! - forward: one pass per channel for the mean, one for the (biased) variance, both summed in
//!   f64, then one pass writing `(x − μ)·γ/σ + β`;
//! - backward: one pass per channel for `Σ dy` and `Σ dy·x̂`, then one pass writing
//!   `dx = γ/σ · (dy − Σdy/M − x̂·Σ(dy·x̂)/M)`, the same formula as the default.
//!
//! Statistics run over channels in parallel; the element-wise passes over `(n, c)` planes.

use alloc::vec;
use alloc::vec::Vec;
use burn_backend::DType;
use burn_std::{Bytes, Shape};
use num_traits::Float;

use crate::{FlexTensor, Layout};

/// A float element the kernels run on natively (f32, f64).
pub(crate) trait NormFloat:
    Float + bytemuck::Pod + burn_backend::Element + Send + Sync
{
    fn from_f64(v: f64) -> Self;
    fn widen(self) -> f64;
}

impl NormFloat for f32 {
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    fn widen(self) -> f64 {
        self as f64
    }
}

impl NormFloat for f64 {
    fn from_f64(v: f64) -> Self {
        v
    }
    fn widen(self) -> f64 {
        self
    }
}

/// `[N, C, …]` seen as `N` images of `C` planes of `plane` values.
#[derive(Debug, Clone, Copy)]
struct Planes {
    batch: usize,
    channels: usize,
    plane: usize,
}

impl Planes {
    fn of(shape: &Shape) -> Self {
        assert!(
            shape.num_dims() >= 2,
            "batch norm: input must be [batch, channels, ...]"
        );
        let plane = (2..shape.num_dims()).map(|d| shape[d]).product();
        Self {
            batch: shape[0],
            channels: shape[1],
            plane,
        }
    }

    fn count(&self) -> usize {
        self.batch * self.plane
    }

    /// The values of channel `c`, image by image.
    fn channel<'a, T>(&self, data: &'a [T], c: usize) -> impl Iterator<Item = &'a [T]> {
        (0..self.batch).map(move |n| &data[(n * self.channels + c) * self.plane..][..self.plane])
    }
}

/// Runs `f(c)` for every channel, in parallel where rayon is on.
fn per_channel<R: Send>(channels: usize, f: impl Fn(usize) -> R + Sync + Send) -> Vec<R> {
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        (0..channels).into_par_iter().map(f).collect()
    }
    #[cfg(not(feature = "rayon"))]
    {
        (0..channels).map(f).collect()
    }
}

/// Fills every `(n, c)` plane of `out` with `f(c, plane_index, out_plane)`.
fn per_plane<T: Send>(
    out: &mut [T],
    planes: Planes,
    f: impl Fn(usize, usize, &mut [T]) + Sync + Send,
) {
    if planes.plane == 0 {
        return;
    }
    #[cfg(feature = "rayon")]
    {
        use rayon::prelude::*;
        out.par_chunks_mut(planes.plane)
            .enumerate()
            .for_each(|(i, o)| f(i % planes.channels, i, o));
    }
    #[cfg(not(feature = "rayon"))]
    for (i, o) in out.chunks_mut(planes.plane).enumerate() {
        f(i % planes.channels, i, o);
    }
}

/// Independent f64 accumulators of [`lane_sum`]: a running sum is one long chain of dependent
/// additions, which cannot be vectorised; eight lanes can, and f64 keeps the statistics accurate.
const SUM_LANES: usize = 8;

/// `Σ term(v)` over `values`, in f64, in [`SUM_LANES`] interleaved partial sums.
#[inline]
fn lane_sum<T: NormFloat>(values: &[T], term: impl Fn(f64) -> f64) -> f64 {
    let mut lanes = [0.0f64; SUM_LANES];
    let chunks = values.chunks_exact(SUM_LANES);
    let tail: f64 = chunks.remainder().iter().map(|v| term(v.widen())).sum();
    for chunk in chunks {
        for (lane, v) in lanes.iter_mut().zip(chunk) {
            *lane += term(v.widen());
        }
    }
    lanes.iter().sum::<f64>() + tail
}

/// `(Σ first, Σ second)` of `terms(a[i], b[i])`, like [`lane_sum`] for two sums over two inputs.
#[inline]
fn lane_sum_pair<T: NormFloat>(
    a: &[T],
    b: &[T],
    terms: impl Fn(f64, f64) -> (f64, f64),
) -> (f64, f64) {
    let mut first = [0.0f64; SUM_LANES];
    let mut second = [0.0f64; SUM_LANES];
    let (chunks_a, chunks_b) = (a.chunks_exact(SUM_LANES), b.chunks_exact(SUM_LANES));
    let (mut tail_first, mut tail_second) = (0.0f64, 0.0f64);
    for (x, y) in chunks_a.remainder().iter().zip(chunks_b.remainder()) {
        let (t1, t2) = terms(x.widen(), y.widen());
        tail_first += t1;
        tail_second += t2;
    }
    for (ca, cb) in chunks_a.zip(chunks_b) {
        for i in 0..SUM_LANES {
            let (t1, t2) = terms(ca[i].widen(), cb[i].widen());
            first[i] += t1;
            second[i] += t2;
        }
    }
    (
        first.iter().sum::<f64>() + tail_first,
        second.iter().sum::<f64>() + tail_second,
    )
}

fn tensor<T: NormFloat>(values: Vec<T>, shape: Shape, dtype: DType) -> FlexTensor {
    FlexTensor::new(Bytes::from_elems(values), Layout::contiguous(shape), dtype)
}

/// Batch statistics and the normalised output: `(output, mean [C], biased variance [C])`.
pub(crate) fn train_forward<T: NormFloat>(
    x: FlexTensor,
    gamma: FlexTensor,
    beta: FlexTensor,
    epsilon: f64,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let dtype = x.dtype();
    let x = x.to_contiguous();
    let (gamma, beta) = (gamma.to_contiguous(), beta.to_contiguous());
    let shape = x.layout().shape().clone();
    let planes = Planes::of(&shape);
    let data: &[T] = x.storage();
    let (gamma, beta): (&[T], &[T]) = (gamma.storage(), beta.storage());
    let count = planes.count().max(1) as f64;

    let stats: Vec<(f64, f64)> = per_channel(planes.channels, |c| {
        let sum: f64 = planes.channel(data, c).map(|p| lane_sum(p, |v| v)).sum();
        let mean = sum / count;
        let squares: f64 = planes
            .channel(data, c)
            .map(|p| lane_sum(p, |v| (v - mean) * (v - mean)))
            .sum();
        (mean, squares / count)
    });
    let affine: Vec<(T, T)> = stats
        .iter()
        .enumerate()
        .map(|(c, &(mean, variance))| {
            let scale = gamma[c].widen() / (variance + epsilon).sqrt();
            (
                T::from_f64(scale),
                T::from_f64(beta[c].widen() - mean * scale),
            )
        })
        .collect();

    let mut output = vec![T::zero(); data.len()];
    per_plane(&mut output, planes, |c, i, out| {
        let (scale, shift) = affine[c];
        for (o, &v) in out
            .iter_mut()
            .zip(&data[i * planes.plane..][..planes.plane])
        {
            *o = v * scale + shift;
        }
    });
    let channels = Shape::from(vec![planes.channels]);
    (
        tensor(output, shape, dtype),
        tensor(
            stats.iter().map(|s| T::from_f64(s.0)).collect(),
            channels.clone(),
            dtype,
        ),
        tensor(
            stats.iter().map(|s| T::from_f64(s.1)).collect(),
            channels,
            dtype,
        ),
    )
}

/// Gradients `(dx, dγ, dβ)` of [`train_forward`] given `dy` and the statistics it returned.
pub(crate) fn train_backward<T: NormFloat>(
    x: FlexTensor,
    gamma: FlexTensor,
    mean: FlexTensor,
    variance: FlexTensor,
    epsilon: f64,
    output_grad: FlexTensor,
) -> (FlexTensor, FlexTensor, FlexTensor) {
    let dtype = x.dtype();
    let x = x.to_contiguous();
    let output_grad = output_grad.to_contiguous();
    let (gamma, mean, variance) = (
        gamma.to_contiguous(),
        mean.to_contiguous(),
        variance.to_contiguous(),
    );
    let shape = x.layout().shape().clone();
    let planes = Planes::of(&shape);
    let data: &[T] = x.storage();
    let grad: &[T] = output_grad.storage();
    assert_eq!(
        grad.len(),
        data.len(),
        "batch norm backward: output gradient shape"
    );
    let to64 = |v: &T| v.widen();
    let (gamma, mean, variance): (&[T], &[T], &[T]) =
        (gamma.storage(), mean.storage(), variance.storage());
    let inv_std: Vec<f64> = variance
        .iter()
        .map(|v| 1.0 / (to64(v) + epsilon).sqrt())
        .collect();
    let count = planes.count().max(1) as f64;

    // (Σ dy, Σ dy·x̂) per channel.
    let sums: Vec<(f64, f64)> = per_channel(planes.channels, |c| {
        let mu = to64(&mean[c]);
        let (mut sum_grad, mut sum_grad_centered) = (0.0f64, 0.0f64);
        for (g_plane, x_plane) in planes.channel(grad, c).zip(planes.channel(data, c)) {
            let (g, gx) = lane_sum_pair(g_plane, x_plane, |g, v| (g, g * (v - mu)));
            sum_grad += g;
            sum_grad_centered += gx;
        }
        (sum_grad, sum_grad_centered * inv_std[c])
    });

    let mut x_grad = vec![T::zero(); data.len()];
    per_plane(&mut x_grad, planes, |c, i, out| {
        let (mu, is) = (to64(&mean[c]), inv_std[c]);
        let scale = T::from_f64(to64(&gamma[c]) * is);
        let mean_grad = T::from_f64(sums[c].0 / count);
        let mean_grad_norm = T::from_f64(sums[c].1 / count);
        let (mu, is) = (T::from_f64(mu), T::from_f64(is));
        let range = i * planes.plane..(i + 1) * planes.plane;
        for ((o, &g), &v) in out.iter_mut().zip(&grad[range.clone()]).zip(&data[range]) {
            let normalized = (v - mu) * is;
            *o = scale * (g - mean_grad - normalized * mean_grad_norm);
        }
    });
    let channels = Shape::from(vec![planes.channels]);
    (
        tensor(x_grad, shape, dtype),
        tensor(
            sums.iter().map(|s| T::from_f64(s.1)).collect(),
            channels.clone(),
            dtype,
        ),
        tensor(
            sums.iter().map(|s| T::from_f64(s.0)).collect(),
            channels,
            dtype,
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(shape: &[usize], seed: u64) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..shape.iter().product::<usize>())
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 1.0
            })
            .collect()
    }

    fn flex(values: &[f32], shape: &[usize]) -> FlexTensor {
        tensor(values.to_vec(), Shape::from(shape.to_vec()), DType::F32)
    }

    fn values(t: &FlexTensor) -> Vec<f32> {
        t.to_contiguous().storage::<f32>().to_vec()
    }

    /// The textbook formulas in f64, element by element.
    fn reference(
        x: &[f32],
        shape: &[usize],
        gamma: &[f32],
        beta: &[f32],
        dy: &[f32],
        eps: f64,
    ) -> [Vec<f64>; 5] {
        let (n, c) = (shape[0], shape[1]);
        let plane: usize = shape[2..].iter().product();
        let m = (n * plane) as f64;
        let at = |b: usize, ch: usize, i: usize| (b * c + ch) * plane + i;
        let mut out = vec![0.0; x.len()];
        let mut dx = vec![0.0; x.len()];
        let (mut means, mut vars, mut dgamma) = (vec![0.0; c], vec![0.0; c], vec![0.0; c]);
        for ch in 0..c {
            let idx: Vec<usize> = (0..n)
                .flat_map(|b| (0..plane).map(move |i| at(b, ch, i)))
                .collect();
            let mean = idx.iter().map(|&k| x[k] as f64).sum::<f64>() / m;
            let var = idx
                .iter()
                .map(|&k| (x[k] as f64 - mean).powi(2))
                .sum::<f64>()
                / m;
            let inv = 1.0 / (var + eps).sqrt();
            let xhat = |k: usize| (x[k] as f64 - mean) * inv;
            let sum_dy: f64 = idx.iter().map(|&k| dy[k] as f64).sum();
            let sum_dy_xhat: f64 = idx.iter().map(|&k| dy[k] as f64 * xhat(k)).sum();
            for &k in &idx {
                out[k] = xhat(k) * gamma[ch] as f64 + beta[ch] as f64;
                dx[k] = gamma[ch] as f64
                    * inv
                    * (dy[k] as f64 - sum_dy / m - xhat(k) * sum_dy_xhat / m);
            }
            (means[ch], vars[ch], dgamma[ch]) = (mean, var, sum_dy_xhat);
        }
        [out, means, vars, dx, dgamma]
    }

    fn assert_close(got: &[f32], want: &[f64], what: &str) {
        let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-12);
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                ((*g as f64) - w).abs() <= 1e-5 * scale,
                "{what}[{i}]: {g} vs {w}"
            );
        }
    }

    #[test]
    fn forward_and_backward_match_the_formulas() {
        for shape in [
            vec![4, 3, 5, 7],
            vec![2, 6, 1, 1],
            vec![8, 5],
            vec![3, 4, 2, 3, 2],
        ] {
            let c = shape[1];
            let x = input(&shape, 1);
            let dy = input(&shape, 2);
            let gamma = input(&[c], 3);
            let beta = input(&[c], 4);
            let [out, means, vars, dx, dgamma] = reference(&x, &shape, &gamma, &beta, &dy, 1e-3);
            let (y, mean, var) = train_forward::<f32>(
                flex(&x, &shape),
                flex(&gamma, &[c]),
                flex(&beta, &[c]),
                1e-3,
            );
            assert_close(&values(&y), &out, "output");
            assert_close(&values(&mean), &means, "mean");
            assert_close(&values(&var), &vars, "variance");
            let (gx, gg, gb) = train_backward::<f32>(
                flex(&x, &shape),
                flex(&gamma, &[c]),
                mean,
                var,
                1e-3,
                flex(&dy, &shape),
            );
            assert_close(&values(&gx), &dx, "x grad");
            assert_close(&values(&gg), &dgamma, "gamma grad");
            let dbeta: Vec<f64> = (0..c)
                .map(|ch| {
                    let plane: usize = shape[2..].iter().product();
                    (0..shape[0])
                        .flat_map(|b| (0..plane).map(move |i| (b * c + ch) * plane + i))
                        .map(|k| dy[k] as f64)
                        .sum()
                })
                .collect();
            assert_close(&values(&gb), &dbeta, "beta grad");
        }
    }
}
