//! The training loop: epochs of shuffled, augmented batches; validation; best-on-val model;
//! atomic per-epoch checkpoints and exact resume; the two-stage regime's head training; final
//! evaluation and reports.
//!
//! Determinism: everything random in epoch `e` (shuffle, augmentation, zoom crops, burn's device
//! RNG) is seeded from `(seed, stage, e)`. A checkpoint therefore needs only the weights, the
//! optimiser state and the epoch counter, and a resumed run repeats exactly what an uninterrupted
//! run does (on the CPU backend, which computes deterministically).

use super::augment::augment;
use super::config::{LrSchedule, Regime, TrainConfig};
use super::device::{Backend, device_for};
use super::eval::{Evaluation, evaluate, normalised, summary, write_reports};
use super::report::{EpochPoint, curves};
use super::step::{Batch, LossParts, head_loss, training_loss};
use crate::data::{Dataset, Sample, load};
use crate::model::infer::{planes_to_batch, to_vec};
use crate::model::saved::{ModelInfo, model_bytes, model_from_bytes, save, write_atomic};
use crate::model::{Cdnet, weights};
use anyhow::{Context, Result, bail};
use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use cdnet_shared::labels::LabelSet;
use cdnet_shared::zoom::zoom_view;
use cdnet_shared::{CenterZoomParams, Normalization, PreprocessConfig};
use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

/// How to run a training.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Data root.
    pub data: PathBuf,
    /// Run folder.
    pub out: PathBuf,
    /// Continue the run in `out`.
    pub resume: bool,
    /// Device.
    pub backend: Backend,
    /// Show progress bars.
    pub progress: bool,
    /// The command line, recorded in the model card.
    pub command: String,
}

/// What a finished training reports.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// The run folder.
    pub run: PathBuf,
    /// Split the final metrics are on ("test" or "val").
    pub eval_split: String,
    /// Final metrics of the best model.
    pub evaluation: Evaluation,
    /// Epoch (across stages, 1-based) of the best model.
    pub best_epoch: usize,
    /// Wall time of this invocation, seconds.
    pub seconds: f64,
    /// Mean training throughput, images per second (stage 1 / joint).
    pub images_per_second: f64,
}

/// Per-epoch record (in the checkpoint and `history.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1 (joint or representation) or 2 (heads).
    pub stage: u8,
    /// Epoch within the stage.
    pub epoch: usize,
    /// Mean loss parts over the epoch's steps.
    pub loss: LossParts,
    /// Learning rate used.
    pub lr: f64,
    /// Training throughput.
    pub images_per_second: f64,
    /// Wall time.
    pub seconds: f64,
    /// Validation accuracy.
    pub val_accuracy: Option<f64>,
    /// Validation macro F1.
    pub val_macro_f1: Option<f64>,
    /// Validation macro AUC.
    pub val_macro_auc: Option<f64>,
}

/// Checkpointed progress.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct TrainState {
    /// Stage of the last completed epoch (1 or 2).
    stage: u8,
    /// Epochs completed in that stage.
    epochs_done: usize,
    /// History of all epochs so far.
    history: Vec<EpochRecord>,
    /// Index in `history` of the best epoch so far, and its score.
    best: Option<(usize, f64)>,
}

const CHECKPOINT: &str = "checkpoint.ckpt";
const MAGIC: &[u8; 8] = b"CDNETCK1";

fn save_checkpoint(path: &Path, state: &TrainState, model: &[u8], optimizer: &[u8]) -> Result<()> {
    let json = serde_json::to_vec(state)?;
    let mut bytes = Vec::with_capacity(8 + 24 + json.len() + model.len() + optimizer.len());
    bytes.extend_from_slice(MAGIC);
    for part in [&json[..], model, optimizer] {
        bytes.extend_from_slice(&(part.len() as u64).to_le_bytes());
        bytes.extend_from_slice(part);
    }
    write_atomic(path, &bytes).with_context(|| format!("cannot write checkpoint {}", path.display()))
}

fn load_checkpoint(path: &Path) -> Result<(TrainState, Vec<u8>, Vec<u8>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read checkpoint {}", path.display()))?;
    let corrupt = || anyhow::anyhow!("checkpoint {} is damaged or not a cdnet checkpoint", path.display());
    let mut rest = bytes.strip_prefix(MAGIC).ok_or_else(corrupt)?;
    let mut parts = Vec::new();
    for _ in 0..3 {
        let (len, tail) = rest.split_first_chunk::<8>().ok_or_else(corrupt)?;
        let len = u64::from_le_bytes(*len) as usize;
        let (part, tail) = tail.split_at_checked(len).ok_or_else(corrupt)?;
        parts.push(part.to_vec());
        rest = tail;
    }
    let optimizer = parts.pop().ok_or_else(corrupt)?;
    let model = parts.pop().ok_or_else(corrupt)?;
    let state = serde_json::from_slice(&parts[0]).map_err(|_| corrupt())?;
    Ok((state, model, optimizer))
}

/// SplitMix-style mixing of the seed with stage and epoch.
fn epoch_seed(seed: u64, stage: u8, epoch: usize) -> u64 {
    let mut z = seed ^ ((stage as u64) << 56) ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn learning_rate(config: &TrainConfig, epoch: usize) -> f64 {
    match config.optim.schedule {
        LrSchedule::Constant => config.optim.lr,
        LrSchedule::Cosine => {
            let t = (epoch - 1) as f64 / config.training.epochs.max(1) as f64;
            config.optim.lr * 0.5 * (1.0 + (std::f64::consts::PI * t).cos())
        }
    }
}

fn progress_bar(len: usize, prefix: String, enabled: bool) -> ProgressBar {
    let bar = if enabled { ProgressBar::new(len as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} eta {eta}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix);
    bar
}

/// The index of the class of normal images, which the lesion-evidence term needs.
fn normal_class(config: &TrainConfig, labels: &LabelSet) -> Result<Option<usize>> {
    let normal = labels.names().iter().position(|name| name.eq_ignore_ascii_case("normal"));
    if config.loss.lesion_evidence > 0.0 && normal.is_none() {
        bail!(
            "loss.lesion_evidence ranks lesion images against normal ones, but no class is named \"normal\" \
             (classes: {}); rename the class folder of lesion-free images to normal, or set loss.lesion_evidence = 0",
            labels.names().join(", ")
        );
    }
    Ok(normal)
}

/// Mean of the loss parts over steps.
fn mean_parts(parts: &[LossParts]) -> LossParts {
    let n = parts.len().max(1) as f32;
    let sum = |f: fn(&LossParts) -> f32| parts.iter().map(f).sum::<f32>() / n;
    LossParts {
        total: sum(|p| p.total),
        pull_push: sum(|p| p.pull_push),
        decouple: sum(|p| p.decouple),
        evidence: sum(|p| p.evidence),
        ce: sum(|p| p.ce),
        accuracy: sum(|p| p.accuracy),
    }
}

/// Everything the epochs share.
struct Run<'a> {
    config: &'a TrainConfig,
    data: &'a Dataset,
    run: &'a Path,
    device: Device,
    info: ModelInfo,
    norm: Normalization,
    zoom: CenterZoomParams,
    progress: bool,
}

impl Run<'_> {
    fn n(&self) -> usize {
        self.config.model.input_size
    }

    /// Validation metrics of `model` (eval mode), if there is a validation split.
    fn validate(&self, model: &Cdnet) -> Option<Evaluation> {
        (!self.data.val.is_empty()).then(|| {
            evaluate(
                &model.valid(),
                &self.data.val,
                self.data.labels.names(),
                self.n(),
                &self.norm,
                &self.zoom,
                self.config.training.eval_batch_size,
                &self.device.clone(),
            )
        })
    }

    /// Records an epoch, keeps the best model (by validation macro F1, else the latest).
    fn finish_epoch(&self, state: &mut TrainState, record: EpochRecord, model: &Cdnet, eligible: bool) -> Result<()> {
        let score = record.val_macro_f1.unwrap_or(f64::from(record.epoch as u32));
        state.history.push(record);
        if eligible && state.best.is_none_or(|(_, best)| score > best) {
            state.best = Some((state.history.len() - 1, score));
            let mut info = self.info.clone();
            info.training["best_epoch"] = serde_json::json!(state.history.len());
            info.training["best_val"] = serde_json::to_value(state.history.last())?;
            save(&model.valid(), &info, &self.run.join("best")).context("cannot save the best model")?;
        }
        std::fs::write(self.run.join("history.json"), serde_json::to_vec_pretty(&state.history)?)
            .context("cannot write history.json")?;
        Ok(())
    }
}

/// Trains (or resumes) a run and evaluates the best model.
pub fn train(config: TrainConfig, options: &TrainOptions) -> Result<TrainOutcome> {
    let started = Instant::now();
    let run = &options.out;
    let checkpoint_path = run.join(CHECKPOINT);
    if options.resume {
        if !checkpoint_path.is_file() {
            bail!("nothing to resume: {} has no {CHECKPOINT}; start a new run without --resume", run.display());
        }
    } else if run.exists() && run.read_dir().with_context(|| format!("cannot read {}", run.display()))?.next().is_some()
    {
        bail!(
            "run folder {} already exists and is not empty; pass --resume to continue it or choose a new --out",
            run.display()
        );
    }
    std::fs::create_dir_all(run).with_context(|| format!("cannot create {}", run.display()))?;
    std::fs::write(run.join("config.toml"), config.to_toml()).context("cannot write config.toml")?;
    // The card must name the command that started the run, not the one that resumed it.
    let command_path = run.join("command.txt");
    let (command, resumed_with) = match (options.resume, std::fs::read_to_string(&command_path)) {
        (true, Ok(original)) => (original.trim().to_string(), Some(options.command.clone())),
        _ => {
            std::fs::write(&command_path, &options.command).context("cannot write command.txt")?;
            (options.command.clone(), None)
        }
    };

    let data = load(&options.data, &config.data_config())?;
    let batch_size = config.training.batch_size;
    if batch_size > data.train.len() {
        bail!(
            "training.batch_size {batch_size} is larger than the {} training images; lower it (e.g. --batch-size {})",
            data.train.len(),
            data.train.len().clamp(2, 32)
        );
    }
    let normal_class = normal_class(&config, &data.labels)?;
    let n = config.model.input_size;
    let base = device_for(options.backend)?;
    let device = base.clone().autodiff();
    device.seed(config.training.seed);
    let cdnet = config.cdnet(data.labels.len())?;
    let mut model = cdnet.init(&device);
    if let Some(path) = &config.model.backbone_weights {
        let expected = config.model.backbone_weights_sha256.as_deref();
        let backbone = weights::load_backbone(cdnet.backbone.init(&device), &cdnet.backbone, path, expected)?;
        model = model.with_backbone(backbone);
    }
    let counts = |s: &[Sample]| data.class_counts(s);
    let info = ModelInfo {
        format: 1,
        cdnet: cdnet.clone(),
        labels: data.labels.clone(),
        preprocess: PreprocessConfig { input_size: n, crop: data.crop, ..Default::default() },
        center_zoom: config.center_zoom(),
        training: serde_json::json!({
            "command": command,
            "resumed_with": resumed_with,
            "config": config,
            "data": {
                "root": options.data.display().to_string(),
                "split_folders": data.report.split_folders,
                "train": counts(&data.train),
                "val": counts(&data.val),
                "test": counts(&data.test),
            },
            "trainer": concat!("cdnet ", env!("CARGO_PKG_VERSION")),
        }),
    };
    let ctx = Run {
        config: &config,
        data: &data,
        run,
        device: device.clone(),
        info,
        norm: Normalization::default(),
        zoom: config.center_zoom(),
        progress: options.progress,
    };
    let two_stage = config.training.regime == Regime::TwoStage;
    let mut optimizer = config.adam(true).init();
    let mut state = TrainState { stage: 1, ..Default::default() };
    if options.resume {
        let (saved, model_bytes_saved, optimizer_bytes) = load_checkpoint(&checkpoint_path)?;
        model = model_from_bytes(model, model_bytes_saved)
            .map_err(|e| anyhow::anyhow!("checkpoint does not fit the configured model: {e}"))?;
        if saved.stage == 1 {
            optimizer = optimizer
                .from_bytes(burn::tensor::Bytes::from_bytes_vec(optimizer_bytes))
                .map_err(|e| anyhow::anyhow!("checkpoint optimiser state: {e}"))?;
        }
        tracing::info!("resuming {} after stage {} epoch {}", run.display(), saved.stage, saved.epochs_done);
        state = saved;
    }

    // Stage 1 (or the whole joint training).
    let mut throughput = Vec::new();
    if state.stage == 1 {
        for epoch in state.epochs_done + 1..=config.training.epochs {
            // Stage 1 trains the heads too when their CE is meant to shape the backbone (hybrid);
            // stage 2 then refits them on the inference path.
            let step_config = config.step(!two_stage || config.loss.heads_train_backbone, epoch, normal_class);
            let epoch_start = Instant::now();
            let seed = epoch_seed(config.training.seed, 1, epoch);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            device.seed(seed);
            let lr = learning_rate(&config, epoch);
            let mut order: Vec<usize> = (0..data.train.len()).collect();
            order.shuffle(&mut rng);
            let steps = order.len() / batch_size;
            tracing::info!("epoch {epoch}/{} started ({steps} steps, lr {lr:.2e})", config.training.epochs);
            let bar = progress_bar(steps, format!("epoch {epoch}/{}", config.training.epochs), ctx.progress);
            let mut parts = Vec::with_capacity(steps);
            for (step, indices) in order.chunks_exact(batch_size).enumerate() {
                let batch = make_batch(&data.train, indices, n, &config, &mut rng);
                let out = training_loss(&model, &batch, n, &step_config, &mut rng, &device);
                if !out.parts.total.is_finite() {
                    bar.abandon();
                    bail!(
                        "the loss became {} at epoch {epoch} step {} — training stopped; the last good checkpoint \
                         (after epoch {}) is {}; lower optim.lr or check the data",
                        out.parts.total,
                        step + 1,
                        epoch - 1,
                        checkpoint_path.display()
                    );
                }
                let grads = GradientsParams::from_grads(out.loss.backward(), &model);
                model = optimizer.step(lr, model, grads);
                parts.push(out.parts);
                let seconds = epoch_start.elapsed().as_secs_f64();
                bar.set_message(format!(
                    "loss {:.4} lr {lr:.1e} {:.1} img/s",
                    out.parts.total,
                    ((step + 1) * batch_size) as f64 / seconds.max(1e-9)
                ));
                bar.inc(1);
            }
            bar.finish_and_clear();
            let seconds = epoch_start.elapsed().as_secs_f64();
            let images_per_second = (steps * batch_size) as f64 / seconds.max(1e-9);
            throughput.push(images_per_second);
            let val = if two_stage { None } else { ctx.validate(&model) };
            let record = EpochRecord {
                stage: 1,
                epoch,
                loss: mean_parts(&parts),
                lr,
                images_per_second,
                seconds,
                val_accuracy: val.as_ref().map(|v| v.metrics.accuracy),
                val_macro_f1: val.as_ref().map(|v| v.metrics.macro_f1),
                val_macro_auc: val.as_ref().and_then(|v| v.metrics.macro_auc),
            };
            log_epoch(&record, config.training.epochs);
            ctx.finish_epoch(&mut state, record, &model, !two_stage)?;
            state.epochs_done = epoch;
            let optimizer_bytes = optimizer.into_bytes().map_err(|e| anyhow::anyhow!("{e}"))?.to_vec();
            save_checkpoint(
                &checkpoint_path,
                &state,
                &model_bytes(&model).map_err(|e| anyhow::anyhow!(e))?,
                &optimizer_bytes,
            )?;
        }
        if two_stage {
            state.stage = 2;
            state.epochs_done = 0;
        }
    }

    // Stage 2 of the two-stage regime: heads on the frozen inference path.
    if state.stage == 2 {
        train_heads(&ctx, &mut model, &mut state, &checkpoint_path, &config.adam(false))?;
    }

    // Final evaluation of the best model.
    let (best_model, _) = crate::model::saved::load(&run.join("best"), &base)?;
    let (split, samples) = match data.eval_split() {
        (_, []) => {
            tracing::warn!("no validation or test images: the final metrics are on the training images");
            ("train", &data.train[..])
        }
        other => other,
    };
    let evaluation = evaluate(
        &best_model,
        samples,
        data.labels.names(),
        n,
        &ctx.norm,
        &ctx.zoom,
        config.training.eval_batch_size,
        &base,
    );
    let plots = run.join("plots");
    write_reports(&evaluation, samples, split, n, &ctx.norm, &plots)?;
    std::fs::copy(plots.join("metrics.json"), run.join("metrics.json")).context("cannot write metrics.json")?;
    let points: Vec<EpochPoint> = state
        .history
        .iter()
        .enumerate()
        .map(|(i, r)| EpochPoint {
            epoch: i + 1,
            loss: r.loss.total as f64,
            val_accuracy: r.val_accuracy,
            val_f1: r.val_macro_f1,
        })
        .collect();
    curves(&points, &plots.join("curves.png"))?;
    tracing::info!(
        "{split} metrics of the best model (epoch {}):\n{}",
        state.best.map_or(0, |b| b.0 + 1),
        summary(&evaluation.metrics)
    );
    Ok(TrainOutcome {
        run: run.clone(),
        eval_split: split.to_string(),
        best_epoch: state.best.map_or(0, |b| b.0 + 1),
        evaluation,
        seconds: started.elapsed().as_secs_f64(),
        images_per_second: if throughput.is_empty() {
            0.0
        } else {
            throughput.iter().sum::<f64>() / throughput.len() as f64
        },
    })
}

/// Augments and normalises the images of one batch. Each image gets its own RNG seeded from the
/// epoch's RNG, so the work can run in parallel and still be reproducible.
fn make_batch(samples: &[Sample], indices: &[usize], n: usize, config: &TrainConfig, rng: &mut ChaCha8Rng) -> Batch {
    let seeds: Vec<u64> = indices.iter().map(|_| rng.random()).collect();
    let norm = Normalization::default();
    let planes = indices
        .par_iter()
        .zip(seeds)
        .map(|(&i, seed)| {
            let mut plane = samples[i].image.clone();
            augment(&mut plane, n, &config.augment, &mut ChaCha8Rng::seed_from_u64(seed));
            norm.apply_all(&mut plane);
            plane
        })
        .collect();
    Batch { planes, labels: indices.iter().map(|&i| samples[i].label).collect() }
}

fn log_epoch(r: &EpochRecord, epochs: usize) {
    let val = match (r.val_accuracy, r.val_macro_f1) {
        (Some(a), Some(f)) => {
            format!(" | val acc {a:.4} F1 {f:.4} AUC {}", r.val_macro_auc.map_or("n/a".into(), |x| format!("{x:.4}")))
        }
        _ => String::new(),
    };
    tracing::info!(
        "stage {} epoch {}/{epochs}: loss {:.4} (pull/push {:.4}, decouple {:.4}, ce {:.4}, train acc {:.3}){val} | {:.1} img/s, {:.1} s",
        r.stage,
        r.epoch,
        r.loss.total,
        r.loss.pull_push,
        r.loss.decouple,
        r.loss.ce,
        r.loss.accuracy,
        r.images_per_second,
        r.seconds
    );
}

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

fn train_heads(
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
