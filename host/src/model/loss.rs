//! The HCD loss and its parts, plus cross-entropy.
//!
//! * `L_pp` (pull/push) is supervised contrastive loss over all views (global + zoom views): every
//!   view is an anchor; positives are the other views of the same class; the denominator is every
//!   other view; temperature 0.07; mean over anchors (the reference's `SupConLoss(contrast_mode='all')`).
//! * `L_dc` (decoupling) is the Barlow-Twins loss between the two zoom views' projections:
//!   BatchNorm without affine (batch statistics, biased variance, ε = 1e-5), `c = bn(z1)ᵀ bn(z2) / B`
//!   with the *actual* batch size, `Σ (c_ii − 1)² + d · Σ_{i≠j} c_ij²`, d = 0.005.
//! * `L_HCD = L_pp + λ · L_dc`, λ = 0.1 (paper). λ = 1 reproduces the released loss class, which has
//!   no λ.

use burn::prelude::*;
use burn::tensor::activation::log_softmax;

/// Hyper-parameters of the HCD loss.
#[derive(Config, Debug, PartialEq)]
pub struct HcdConfig {
    /// Temperature τ of the contrastive logits.
    #[config(default = 0.07)]
    pub temperature: f64,
    /// λ, the weight of the decoupling term (paper 0.1; 1.0 = the released code).
    #[config(default = 0.1)]
    pub lambda: f64,
    /// d, the weight of the off-diagonal decoupling terms.
    #[config(default = 0.005)]
    pub off_diagonal: f64,
}

/// The HCD loss and its parts (for logging).
#[derive(Debug, Clone)]
pub struct HcdLoss {
    /// `L_pp + λ L_dc`.
    pub total: Tensor<1>,
    /// `L_pp`.
    pub pull_push: Tensor<1>,
    /// `L_dc`.
    pub decouple: Tensor<1>,
}

/// Masks over the `V·B` stacked views (view-major): positives and "every other view".
fn view_masks(labels: &[usize], views: usize, device: &Device) -> (Tensor<2>, Tensor<2>, Tensor<2>) {
    let b = labels.len();
    let n = views * b;
    let mut positive = vec![0.0f32; n * n];
    let mut others = vec![1.0f32; n * n];
    let mut counts = vec![0.0f32; n];
    for i in 0..n {
        others[i * n + i] = 0.0;
        for j in 0..n {
            if i != j && labels[i % b] == labels[j % b] {
                positive[i * n + j] = 1.0;
                counts[i] += 1.0;
            }
        }
    }
    (
        Tensor::from_data(TensorData::new(positive, [n, n]), device),
        Tensor::from_data(TensorData::new(others, [n, n]), device),
        Tensor::from_data(TensorData::new(counts, [n, 1]), device),
    )
}

/// Supervised contrastive loss over `views` (each `[B, P]`, L2-normalised) with class `labels`.
/// Needs at least two views so every anchor has a positive.
pub fn supcon(views: &[Tensor<2>], labels: &[usize], temperature: f64) -> Tensor<1> {
    assert!(views.len() >= 2, "supervised contrastive loss needs at least two views");
    let device = views[0].device();
    let z = Tensor::cat(views.to_vec(), 0); // [V·B, P], view-major
    let logits = z.clone().matmul(z.transpose()) / temperature;
    let row_max = logits.clone().detach().max_dim(1);
    let logits = logits - row_max;
    let (positive, others, counts) = view_masks(labels, views.len(), &device);
    let log_denominator = (logits.clone().exp() * others).sum_dim(1).log();
    let log_prob = logits - log_denominator;
    let mean_log_prob_positive = (log_prob * positive).sum_dim(1) / counts;
    -mean_log_prob_positive.mean()
}

/// BatchNorm1d without affine, training mode: batch mean, biased variance, ε = 1e-5.
fn batch_standardise(z: Tensor<2>) -> Tensor<2> {
    let mean = z.clone().mean_dim(0);
    let centred = z - mean;
    let var = centred.clone().powi_scalar(2).mean_dim(0);
    centred / (var + 1e-5).sqrt()
}

/// Barlow-Twins decoupling between two views `[B, P]`; returns (on-diagonal, off-diagonal).
pub fn decoupling_terms(z1: Tensor<2>, z2: Tensor<2>) -> (Tensor<1>, Tensor<1>) {
    let [batch, dim] = z1.dims();
    let device = z1.device();
    let c = batch_standardise(z1).transpose().matmul(batch_standardise(z2)) / batch as f64; // [P, P]
    let eye = Tensor::<2>::eye(dim, &device);
    let diagonal = (c.clone() * eye).sum_dim(1); // [P, 1]
    let on = (diagonal.clone() - 1.0).powi_scalar(2).sum();
    let off = c.powi_scalar(2).sum() - diagonal.powi_scalar(2).sum();
    (on, off)
}

/// `L_pp` over all views plus `λ (on + d · off)` between the two zoom views (`views[1]`, `views[2]`).
pub fn hcd(views: &[Tensor<2>], labels: &[usize], config: &HcdConfig) -> HcdLoss {
    let pull_push = supcon(views, labels, config.temperature);
    let decouple = match views {
        [_, z1, z2, ..] => {
            let (on, off) = decoupling_terms(z1.clone(), z2.clone());
            on + off * config.off_diagonal
        }
        _ => Tensor::zeros([1], &pull_push.device()),
    };
    HcdLoss { total: pull_push.clone() + decouple.clone() * config.lambda, pull_push, decouple }
}

/// Mean cross-entropy of `logits` `[B, K]` against class indices.
pub fn cross_entropy(logits: Tensor<2>, labels: &[usize]) -> Tensor<1> {
    let [b, k] = logits.dims();
    let mut one_hot = vec![0.0f32; b * k];
    for (i, &label) in labels.iter().enumerate() {
        one_hot[i * k + label] = 1.0;
    }
    let one_hot = Tensor::<2>::from_data(TensorData::new(one_hot, [b, k]), &logits.device());
    -(log_softmax(logits, 1) * one_hot).sum_dim(1).mean()
}

/// The heatmap's peak-to-mean ratio per image, in logs: `log(softpeak(H)) − log(mean(H))`, `[B]`.
///
/// The peak is a log-sum-exp over cells at `sharpness` times the image's mean, so it follows the
/// largest cells without passing all the gradient through one. Both parts scale with the map, so
/// the ratio says how concentrated the map is, not how large.
pub fn peak_to_mean(heatmap: Tensor<4>, sharpness: f64) -> Tensor<1> {
    let [b, _, h, w] = heatmap.dims();
    let cells = heatmap.reshape([b, h * w]);
    let mean = cells.clone().mean_dim(1) + 1e-6; // [B, 1]
    let scaled = cells / mean.clone() * sharpness;
    let max = scaled.clone().detach().max_dim(1);
    let peak = ((scaled - max.clone()).exp().mean_dim(1).log() + max) / sharpness; // softpeak / mean
    (peak + 1e-6).log().reshape([b])
}

/// Lesion evidence: every abnormal image's heatmap should be more concentrated than every normal
/// image's, `mean over (abnormal a, normal n) of softplus(c_n − c_a)` with `c` = [`peak_to_mean`].
///
/// Why: cross-entropy alone is satisfied by attention on the place where lesions usually are (the
/// posterior pole), which normal eyes have too. Ranking the concentration of lesion images above
/// that of normal ones makes a peak on an anatomical landmark cost, and one on the lesion pay. A
/// flat map cannot satisfy it, nor can a map that is merely larger in lesion images (the ratio
/// ignores scale). `None` when the batch lacks either kind of image.
pub fn lesion_evidence(heatmap: Tensor<4>, labels: &[usize], normal: usize, sharpness: f64) -> Option<Tensor<1>> {
    let abnormal: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] != normal).collect();
    let normals: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == normal).collect();
    if abnormal.is_empty() || normals.is_empty() {
        return None;
    }
    let device = heatmap.device();
    let concentration = peak_to_mean(heatmap, sharpness);
    let pick = |rows: &[usize]| {
        let rows: Vec<i64> = rows.iter().map(|&i| i as i64).collect();
        let index = Tensor::<1, Int>::from_data(TensorData::new(rows.clone(), [rows.len()]), &device);
        concentration.clone().select(0, index)
    };
    let (a, n) = (pick(&abnormal), pick(&normals));
    let margins = n.reshape([1, normals.len()]) - a.reshape([abnormal.len(), 1]); // [A, N]
    Some(softplus(margins).mean())
}

/// `log(1 + eˣ)`, computed stably.
fn softplus(x: Tensor<2>) -> Tensor<2> {
    x.clone().clamp_min(0.0) + (-x.abs()).exp().log1p()
}
