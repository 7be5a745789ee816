//! Stage 2 of the two-stage regime: the classifier heads on the frozen backbone's inference path.

use super::checkpoint::{TrainState, epoch_seed, load_checkpoint, save_checkpoint};
use super::eval::normalised;
use super::step::head_loss;
use super::trainer::{EpochRecord, Run, log_epoch, mean_parts};
use crate::data::Sample;
use crate::model::Cdnet;
use crate::model::infer::{planes_to_batch, to_vec};
use crate::model::saved::model_bytes;
use anyhow::{Result, bail};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use cdnet_shared::zoom::zoom_view;
use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::time::Instant;

/// Inference-path features (global, centre-zoom local) of every sample, from the frozen model.
fn frozen_features(ctx: &Run<'_>, model: &Cdnet, samples: &[Sample]) -> (Vec<f32>, Vec<f32>, usize) {
    let n = ctx.n();
    let frozen = model.valid();
    let inner = ctx.device.clone().inner();
    let (mut global, mut local) = (Vec::new(), Vec::new());
    let mut dim = 0;
    for chunk in samples.chunks(ctx.config.training.eval_batch_size) {
        let planes: Vec<Vec<f32>> = chunk.iter().map(|s| normalised(s, &ctx.norm)).collect();
        let refs: Vec<&[f32]> = planes.iter().map(Vec::as_slice).collect();
        let g = frozen.extract(planes_to_batch(&refs, n, &inner));
        let att = g.attention_mean().map(to_vec).unwrap_or_default();
        let side = ((att.len() / chunk.len().max(1)) as f64).sqrt() as usize;
        let views: Vec<Vec<f32>> = planes
            .iter()
            .enumerate()
            .map(|(b, plane)| zoom_view(&att[b * side * side..(b + 1) * side * side], side, plane, n, &ctx.zoom).view)
            .collect();
        let view_refs: Vec<&[f32]> = views.iter().map(Vec::as_slice).collect();
        let l = frozen.extract(planes_to_batch(&view_refs, n, &inner));
        dim = g.feature.dims()[1];
        global.extend(to_vec(g.feature));
        local.extend(to_vec(l.feature));
    }
    (global, local, dim)
}

/// Stage 2 of the two-stage regime: the heads trained with CE on the frozen inference path's cached
/// features, checkpointed per epoch like stage 1.
pub(super) fn train_heads(
    ctx: &Run<'_>,
    model: &mut Cdnet,
    state: &mut TrainState,
    checkpoint_path: &Path,
    adam: &AdamConfig,
) -> Result<()> {
    let config = ctx.config;
    let data = ctx.data;
    tracing::info!("stage 2: caching frozen inference-path features of {} training images", data.train.len());
    let (global, local, dim) = frozen_features(ctx, model, &data.train);
    let labels: Vec<usize> = data.train.iter().map(|s| s.label).collect();
    let mut optimizer = adam.init();
    if state.epochs_done > 0 {
        let (_, _, optimizer_bytes) = load_checkpoint(checkpoint_path)?;
        optimizer = optimizer
            .from_bytes(burn::tensor::Bytes::from_bytes_vec(optimizer_bytes))
            .map_err(|e| anyhow::anyhow!("checkpoint optimiser state: {e}"))?;
    }
    let inner = ctx.device.clone().inner();
    let batch_size = config.training.batch_size;
    let epochs = config.training.head_epochs.max(1);
    for epoch in state.epochs_done + 1..=epochs {
        let epoch_start = Instant::now();
        let mut rng = ChaCha8Rng::seed_from_u64(epoch_seed(config.training.seed, 2, epoch));
        let mut order: Vec<usize> = (0..labels.len()).collect();
        order.shuffle(&mut rng);
        let mut parts = Vec::new();
        for indices in order.chunks_exact(batch_size) {
            let rows = |features: &[f32]| {
                let data: Vec<f32> =
                    indices.iter().flat_map(|&i| features[i * dim..(i + 1) * dim].iter().copied()).collect();
                Tensor::<2>::from_data(TensorData::new(data, [indices.len(), dim]), &inner)
            };
            let batch_labels: Vec<usize> = indices.iter().map(|&i| labels[i]).collect();
            let out = head_loss(model, rows(&global), Some(rows(&local)), &batch_labels, &ctx.device);
            if !out.parts.total.is_finite() {
                bail!("the head loss became {} in stage 2 epoch {epoch}; lower training.head_lr", out.parts.total);
            }
            let grads = GradientsParams::from_grads(out.loss.backward(), &*model);
            *model = optimizer.step(config.training.head_lr, model.clone(), grads);
            parts.push(out.parts);
        }
        let val = ctx.validate(model);
        let record = EpochRecord {
            stage: 2,
            epoch,
            loss: mean_parts(&parts),
            lr: config.training.head_lr,
            images_per_second: (parts.len() * batch_size) as f64 / epoch_start.elapsed().as_secs_f64().max(1e-9),
            seconds: epoch_start.elapsed().as_secs_f64(),
            val_accuracy: val.as_ref().map(|v| v.metrics.accuracy),
            val_macro_f1: val.as_ref().map(|v| v.metrics.macro_f1),
            val_macro_auc: val.as_ref().and_then(|v| v.metrics.macro_auc),
        };
        log_epoch(&record, epochs);
        ctx.finish_epoch(state, record, model, true)?;
        state.epochs_done = epoch;
        let optimizer_bytes = optimizer.into_bytes().map_err(|e| anyhow::anyhow!("{e}"))?.to_vec();
        save_checkpoint(
            checkpoint_path,
            state,
            &model_bytes(model).map_err(|e| anyhow::anyhow!(e))?,
            &optimizer_bytes,
        )?;
    }
    Ok(())
}
