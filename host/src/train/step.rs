//! One training step's forward pass and loss, for every regime and ablation.
//!
//! Joint regime (the released code), full CDNet:
//! ```text
//! global = f(x);  AttS = mean(att).detach()
//! views  = CMZ(x, AttS)                       two zoomed views, from the same normalised input
//! v1, v2 = f(view1), f(view2)                 shared weights: three backbone passes
//! L      = HCD([g(global), g(v1), g(v2)], y)  trains backbone, adapters, WSLL, projection
//!        + CE(en_fc(cat[global, v1 + v2]).detach-in, y) + CE(cls_head(·).detach-in, y) per view
//! ```
//! The classifier heads see detached features, so with a contrastive loss they cannot change the
//! backbone. With plain CE there is nothing to protect and the heads train everything. From scratch
//! (no pretrained backbone) the contrastive loss alone can settle with all projections alike
//! (`L_pp ≈ ln(V·B − 1)`); `heads_train_backbone` lets the heads' CE train the backbone as well. The
//! centre-zoom variant (the "vanilla zoom-in" ablation) uses one zoom view taken with the test-time
//! box. In the two-stage regime, stage 1 is the contrastive part alone, and stage 2
//! ([`head_loss`]) trains the heads with CE on the frozen inference path. With
//! `loss.lesion_evidence` the global view's heatmap adds the lesion-evidence term in every regime
//! (not in the reference; it keeps the attention off the place where lesions usually are).

use crate::model::cmz::{CmzConfig, contrastive_crop, gen_bbox};
use crate::model::infer::{planes_to_batch, to_vec};
use crate::model::loss::{HcdConfig, cross_entropy, hcd, lesion_evidence, supcon};
use crate::model::{Cdnet, Extracted};
use burn::prelude::*;
use cdnet_shared::CenterZoomParams;
use cdnet_shared::zoom::{crop_view, zoom_view};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Which loss trains the representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LossKind {
    /// L_pp + λ L_dc (CDNet).
    Hcd,
    /// L_pp only (plain supervised contrastive).
    Supcon,
    /// Cross-entropy only.
    Ce,
}

/// How the local views are made during training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ZoomKind {
    /// Contrastive multi-zoom: two random views near the attention box edges (CDNet).
    Cmz,
    /// One view from the test-time centre-zoom box ("vanilla zoom-in").
    Center,
    /// No local view (global branch only).
    None,
}

/// Everything the step needs besides the model and the batch.
#[derive(Debug, Clone)]
pub struct StepConfig {
    /// Representation loss.
    pub loss: LossKind,
    /// HCD parameters (temperature also used by SupCon).
    pub hcd: HcdConfig,
    /// Local views.
    pub zoom: ZoomKind,
    /// CMZ parameters.
    pub cmz: CmzConfig,
    /// Test-time centre-zoom parameters (also the `Center` training views).
    pub center: CenterZoomParams,
    /// Whether the classifier heads are trained in this pass (joint regime) or not (stage 1).
    pub train_heads: bool,
    /// Let the heads' cross-entropy train the backbone too (a contrastive + CE hybrid). `false` is
    /// the reference: heads see detached features, only the contrastive loss shapes the backbone.
    pub heads_train_backbone: bool,
    /// The lesion-evidence term on the heatmap ([`lesion_evidence`]); `None` leaves it out (the
    /// reference).
    pub lesion_evidence: Option<LesionEvidence>,
}

/// The lesion-evidence term's settings for a training run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LesionEvidence {
    /// Its weight in the loss.
    pub weight: f64,
    /// Sharpness of the soft peak, in units of the image's mean heatmap value.
    pub sharpness: f64,
    /// The class index of normal (lesion-free) images.
    pub normal_class: usize,
}

/// A batch: normalised `n × n` planes and their labels.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Images (normalised planes, augmented).
    pub planes: Vec<Vec<f32>>,
    /// Class indices.
    pub labels: Vec<usize>,
}

/// Scalar parts of the loss, for logging.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LossParts {
    /// The loss that was back-propagated.
    pub total: f32,
    /// Contrastive pull/push (0 without a contrastive loss).
    pub pull_push: f32,
    /// Decoupling (0 unless HCD).
    pub decouple: f32,
    /// Lesion evidence (0 without it, or in a batch without both normal and lesion images).
    #[serde(default)]
    pub evidence: f32,
    /// CE of the prediction head used at inference.
    pub ce: f32,
    /// Training accuracy of that head on this batch.
    pub accuracy: f32,
}

/// The step's loss tensor and its logged parts.
pub struct StepLoss {
    /// Scalar loss to back-propagate.
    pub loss: Tensor<1>,
    /// Logged parts (filled by [`StepLoss::parts`]).
    pub parts: LossParts,
}

fn batch_of(planes: &[Vec<f32>], n: usize, device: &Device) -> Tensor<4> {
    let refs: Vec<&[f32]> = planes.iter().map(Vec::as_slice).collect();
    planes_to_batch(&refs, n, device)
}

/// Zoomed views of every image: `views` lists, each with one plane per image.
fn zoom_views(
    global: &Extracted,
    batch: &Batch,
    n: usize,
    config: &StepConfig,
    rng: &mut impl Rng,
) -> Vec<Vec<Vec<f32>>> {
    let Some(att) = global.attention_mean() else { return Vec::new() };
    let [b, _, side, _] = att.dims();
    let att = to_vec(att.detach());
    let map = |i: usize| &att[i * side * side..(i + 1) * side * side];
    match config.zoom {
        ZoomKind::None => Vec::new(),
        ZoomKind::Center => {
            let views = (0..b).map(|i| zoom_view(map(i), side, &batch.planes[i], n, &config.center).view).collect();
            vec![views]
        }
        ZoomKind::Cmz => {
            let boxes: Vec<[f64; 4]> =
                (0..b).map(|i| gen_bbox(map(i), side, side, n, config.cmz.bbox_threshold)).collect();
            (0..config.cmz.views)
                .map(|_| {
                    (0..b)
                        .map(|i| crop_view(&batch.planes[i], n, contrastive_crop(boxes[i], n, &config.cmz, rng)))
                        .collect()
                })
                .collect()
        }
    }
}

/// Forward pass and loss of one training step (joint regime, or stage 1 with `train_heads = false`).
pub fn training_loss(
    model: &Cdnet,
    batch: &Batch,
    n: usize,
    config: &StepConfig,
    rng: &mut impl Rng,
    device: &Device,
) -> StepLoss {
    let labels = &batch.labels;
    let global = model.extract(batch_of(&batch.planes, n, device));
    let views: Vec<Extracted> = zoom_views(&global, batch, n, config, rng)
        .iter()
        .map(|planes| model.extract(batch_of(planes, n, device)))
        .collect();
    let contrastive = config.loss != LossKind::Ce;
    // Heads see detached features whenever a contrastive loss alone trains the representation.
    let detach = contrastive && !config.heads_train_backbone;
    let head_input = |f: &Tensor<2>| if detach { f.clone().detach() } else { f.clone() };

    let mut loss: Option<Tensor<1>> = None;
    let mut add = |term: Tensor<1>| {
        loss = Some(match loss.take() {
            Some(l) => l + term,
            None => term,
        })
    };
    let (mut pull_push, mut decouple) = (None, None);
    if contrastive {
        let mut projected = vec![model.project(global.feature.clone())];
        projected.extend(views.iter().map(|v| model.project(v.feature.clone())));
        if config.loss == LossKind::Hcd {
            let parts = hcd(&projected, labels, &config.hcd);
            pull_push = Some(parts.pull_push);
            decouple = Some(parts.decouple);
            add(parts.total);
        } else {
            let l = supcon(&projected, labels, config.hcd.temperature);
            pull_push = Some(l.clone());
            add(l);
        }
    }
    let mut prediction = None;
    if config.train_heads || !contrastive {
        // Auxiliary per-view heads, and the head used at inference.
        add(cross_entropy(model.classify(head_input(&global.feature)), labels));
        for view in &views {
            add(cross_entropy(model.classify(head_input(&view.feature)), labels));
        }
        let logits = if views.is_empty() {
            model.classify(head_input(&global.feature))
        } else {
            // The reference sums the local features of all zoom views for the fused head.
            let local = views.iter().map(|v| head_input(&v.feature)).reduce(|a, b| a + b).expect("non-empty");
            let fused = model.fuse(head_input(&global.feature), local);
            add(cross_entropy(fused.clone(), labels));
            fused
        };
        prediction = Some(logits);
    }
    let mut evidence = None;
    if let (Some(settings), Some(heatmap)) = (config.lesion_evidence, global.heatmap.clone())
        && let Some(term) = lesion_evidence(heatmap, labels, settings.normal_class, settings.sharpness)
    {
        evidence = Some(term.clone());
        add(term * settings.weight);
    }
    let loss = loss.expect("at least one loss term");
    let mut parts = LossParts::default();
    let scalar = |t: &Tensor<1>| to_vec(t.clone().detach()).first().copied().unwrap_or(f32::NAN);
    parts.total = scalar(&loss);
    parts.pull_push = pull_push.as_ref().map_or(0.0, scalar);
    parts.decouple = decouple.as_ref().map_or(0.0, scalar);
    parts.evidence = evidence.as_ref().map_or(0.0, scalar);
    if let Some(logits) = prediction {
        parts.ce = scalar(&cross_entropy(logits.clone().detach(), labels));
        parts.accuracy = accuracy(&to_vec(logits.detach()), labels);
    }
    StepLoss { loss, parts }
}

/// Stage 2 of the two-stage regime: CE on the heads over the inference path of a frozen backbone.
/// `global` and `local` are features from the frozen model (any device); only the heads train.
pub fn head_loss(
    model: &Cdnet,
    global: Tensor<2>,
    local: Option<Tensor<2>>,
    labels: &[usize],
    device: &Device,
) -> StepLoss {
    let move_to = |t: Tensor<2>| Tensor::<2>::from_data(t.into_data(), device);
    let global = move_to(global);
    let logits = match local {
        Some(local) => model.fuse(global.clone(), move_to(local)),
        None => model.classify(global.clone()),
    };
    let loss = cross_entropy(logits.clone(), labels) + cross_entropy(model.classify(global), labels);
    let total = to_vec(loss.clone().detach()).first().copied().unwrap_or(f32::NAN);
    let parts = LossParts {
        total,
        ce: to_vec(cross_entropy(logits.clone().detach(), labels)).first().copied().unwrap_or(f32::NAN),
        accuracy: accuracy(&to_vec(logits.detach()), labels),
        ..Default::default()
    };
    StepLoss { loss, parts }
}

/// Fraction of rows of row-major `logits` whose argmax is the label.
pub fn accuracy(logits: &[f32], labels: &[usize]) -> f32 {
    if labels.is_empty() {
        return 0.0;
    }
    let k = logits.len() / labels.len();
    let correct = labels
        .iter()
        .enumerate()
        .filter(|(i, label)| {
            let row = &logits[i * k..(i + 1) * k];
            let best = row.iter().enumerate().fold(0, |best, (j, v)| if *v > row[best] { j } else { best });
            best == **label
        })
        .count();
    correct as f32 / labels.len() as f32
}
