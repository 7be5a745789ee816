//! The training loop: epochs of shuffled, augmented batches; validation; best-on-val model;
//! per-epoch checkpoints and exact resume (the file: `checkpoint`); the two-stage regime's head
//! training (`heads`); final evaluation and reports.
//!
//! Determinism: everything random in epoch `e` (shuffle, augmentation, zoom crops, burn's device
//! RNG) is seeded from `(seed, stage, e)`. A checkpoint therefore needs only the weights, the
//! optimiser state and the epoch counter, and a resumed run repeats exactly what an uninterrupted
//! run does (on the CPU backend, which computes deterministically).

use super::augment::augment;
use super::checkpoint::{CHECKPOINT, TrainState, epoch_seed, load_checkpoint, save_checkpoint};
use super::config::{LrSchedule, Regime, TrainConfig};
use super::device::{Backend, device_for};
use super::eval::{Evaluation, evaluate, summary, write_reports};
use super::heads::train_heads;
use super::report::{EpochPoint, curves};
use super::step::{Batch, LossParts, training_loss};
use crate::data::{Dataset, Sample, load};
use crate::model::saved::{ModelInfo, model_bytes, model_from_bytes, save};
use crate::model::{Cdnet, CdnetConfig, weights};
use anyhow::{Context, Result, bail};
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::prelude::*;
use cdnet_shared::labels::LabelSet;
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
pub(super) fn mean_parts(parts: &[LossParts]) -> LossParts {
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
pub(super) struct Run<'a> {
    pub(super) config: &'a TrainConfig,
    pub(super) data: &'a Dataset,
    run: &'a Path,
    pub(super) device: Device,
    info: ModelInfo,
    pub(super) norm: Normalization,
    pub(super) zoom: CenterZoomParams,
    progress: bool,
}

impl Run<'_> {
    pub(super) fn n(&self) -> usize {
        self.config.model.network.input_size
    }

    /// Validation metrics of `model` (eval mode), if there is a validation split.
    pub(super) fn validate(&self, model: &Cdnet) -> Option<Evaluation> {
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
    pub(super) fn finish_epoch(
        &self,
        state: &mut TrainState,
        record: EpochRecord,
        model: &Cdnet,
        eligible: bool,
    ) -> Result<()> {
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
///
/// Stages: the run folder (and the command the card will name), the data, the model (ImageNet
/// backbone or checkpoint), stage 1 epochs (the whole joint training), stage 2 (heads of the
/// two-stage regime), and the final evaluation of the best model.
pub fn train(config: TrainConfig, options: &TrainOptions) -> Result<TrainOutcome> {
    let started = Instant::now();
    let run = &options.out;
    let checkpoint_path = run.join(CHECKPOINT);
    let (command, resumed_with) = prepare_run_folder(&config, options)?;
    let data = load_training_data(&config, options)?;
    let normal_class = normal_class(&config, &data.labels)?;
    let base = device_for(options.backend)?;
    let device = base.clone().autodiff();
    device.seed(config.training.seed);
    let cdnet = config.cdnet(data.labels.len())?;
    let mut model = initial_model(&config, &cdnet, &device)?;
    let info = model_info(&config, options, &data, &cdnet, command, resumed_with);
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
        (model, optimizer, state) = resume(&checkpoint_path, model, optimizer)?;
    }

    // Stage 1 (or the whole joint training).
    let mut throughput = Vec::new();
    if state.stage == 1 {
        for epoch in state.epochs_done + 1..=config.training.epochs {
            let (trained, record) = train_epoch(&ctx, model, &mut optimizer, epoch, normal_class, &checkpoint_path)?;
            model = trained;
            throughput.push(record.images_per_second);
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

    let (split, evaluation) = evaluate_best(&ctx, &state, &base)?;
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

/// Checks the run folder (new and empty, or holding a checkpoint to resume), writes the config,
/// and returns the command that started the run (the card names it, not the one that resumed it)
/// and, when resuming, the one that resumed it.
fn prepare_run_folder(config: &TrainConfig, options: &TrainOptions) -> Result<(String, Option<String>)> {
    let run = &options.out;
    if options.resume {
        if !run.join(CHECKPOINT).is_file() {
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
    let command_path = run.join("command.txt");
    Ok(match (options.resume, std::fs::read_to_string(&command_path)) {
        (true, Ok(original)) => (original.trim().to_string(), Some(options.command.clone())),
        _ => {
            std::fs::write(&command_path, &options.command).context("cannot write command.txt")?;
            (options.command.clone(), None)
        }
    })
}

/// The data set, checked against the batch size.
fn load_training_data(config: &TrainConfig, options: &TrainOptions) -> Result<Dataset> {
    let data = load(&options.data, &config.data_config())?;
    let batch_size = config.training.batch_size;
    if batch_size > data.train.len() {
        bail!(
            "training.batch_size {batch_size} is larger than the {} training images; lower it (e.g. --batch-size {})",
            data.train.len(),
            data.train.len().clamp(2, 32)
        );
    }
    Ok(data)
}

/// A freshly initialised network, with the configured pretrained backbone loaded (sha256-checked).
fn initial_model(config: &TrainConfig, cdnet: &CdnetConfig, device: &Device) -> Result<Cdnet> {
    let model = cdnet.init(device);
    let Some(path) = &config.model.backbone_weights else { return Ok(model) };
    let expected = config.model.backbone_weights_sha256.as_deref();
    let backbone = weights::load_backbone(cdnet.backbone.init(device), &cdnet.backbone, path, expected)?;
    Ok(model.with_backbone(backbone))
}

/// What the saved model records about itself and its training.
fn model_info(
    config: &TrainConfig,
    options: &TrainOptions,
    data: &Dataset,
    cdnet: &CdnetConfig,
    command: String,
    resumed_with: Option<String>,
) -> ModelInfo {
    let counts = |s: &[Sample]| data.class_counts(s);
    ModelInfo {
        format: 1,
        cdnet: cdnet.clone(),
        labels: data.labels.clone(),
        preprocess: PreprocessConfig {
            input_size: config.model.network.input_size,
            crop: data.crop,
            ..Default::default()
        },
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
    }
}

/// The model, optimiser and training state saved in the checkpoint. Stage 2 starts a fresh head
/// optimiser, so only a stage-1 checkpoint's optimiser state is restored.
fn resume(
    checkpoint_path: &Path,
    model: Cdnet,
    optimizer: ModuleOptimizer,
) -> Result<(Cdnet, ModuleOptimizer, TrainState)> {
    let (saved, model_bytes_saved, optimizer_bytes) = load_checkpoint(checkpoint_path)?;
    let model = model_from_bytes(model, model_bytes_saved)
        .map_err(|e| anyhow::anyhow!("checkpoint does not fit the configured model: {e}"))?;
    let optimizer = if saved.stage == 1 {
        optimizer
            .from_bytes(burn::tensor::Bytes::from_bytes_vec(optimizer_bytes))
            .map_err(|e| anyhow::anyhow!("checkpoint optimiser state: {e}"))?
    } else {
        optimizer
    };
    tracing::info!(
        "resuming from {} after stage {} epoch {}",
        checkpoint_path.display(),
        saved.stage,
        saved.epochs_done
    );
    Ok((model, optimizer, saved))
}

/// One stage-1 epoch: shuffled batches, a step each, then validation (joint regime). A non-finite
/// loss stops training with the checkpoint to go back to.
fn train_epoch(
    ctx: &Run<'_>,
    mut model: Cdnet,
    optimizer: &mut ModuleOptimizer,
    epoch: usize,
    normal_class: Option<usize>,
    checkpoint_path: &Path,
) -> Result<(Cdnet, EpochRecord)> {
    let config = ctx.config;
    let (n, batch_size) = (ctx.n(), config.training.batch_size);
    let two_stage = config.training.regime == Regime::TwoStage;
    // Stage 1 trains the heads too when their CE is meant to shape the backbone (hybrid); stage 2
    // then refits them on the inference path.
    let step_config = config.step(!two_stage || config.loss.heads_train_backbone, epoch, normal_class);
    let epoch_start = Instant::now();
    let seed = epoch_seed(config.training.seed, 1, epoch);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    ctx.device.seed(seed);
    let lr = learning_rate(config, epoch);
    let mut order: Vec<usize> = (0..ctx.data.train.len()).collect();
    order.shuffle(&mut rng);
    let steps = order.len() / batch_size;
    tracing::info!("epoch {epoch}/{} started ({steps} steps, lr {lr:.2e})", config.training.epochs);
    let bar = progress_bar(steps, format!("epoch {epoch}/{}", config.training.epochs), ctx.progress);
    let mut parts = Vec::with_capacity(steps);
    for (step, indices) in order.chunks_exact(batch_size).enumerate() {
        let batch = make_batch(&ctx.data.train, indices, n, config, &mut rng);
        let out = training_loss(&model, &batch, n, &step_config, &mut rng, &ctx.device);
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
        let rate = ((step + 1) * batch_size) as f64 / seconds.max(1e-9);
        bar.set_message(format!("loss {:.4} lr {lr:.1e} {rate:.1} img/s", out.parts.total));
        bar.inc(1);
    }
    bar.finish_and_clear();
    let seconds = epoch_start.elapsed().as_secs_f64();
    let val = if two_stage { None } else { ctx.validate(&model) };
    let record = EpochRecord {
        stage: 1,
        epoch,
        loss: mean_parts(&parts),
        lr,
        images_per_second: (steps * batch_size) as f64 / seconds.max(1e-9),
        seconds,
        val_accuracy: val.as_ref().map(|v| v.metrics.accuracy),
        val_macro_f1: val.as_ref().map(|v| v.metrics.macro_f1),
        val_macro_auc: val.as_ref().and_then(|v| v.metrics.macro_auc),
    };
    Ok((model, record))
}

/// Evaluates the best saved model on the held-out split (test, else val, else train with a
/// warning) and writes metrics.json, the plots and the training curves.
fn evaluate_best(ctx: &Run<'_>, state: &TrainState, base: &Device) -> Result<(&'static str, Evaluation)> {
    let (best_model, _) = crate::model::saved::load(&ctx.run.join("best"), base)?;
    let data = ctx.data;
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
        ctx.n(),
        &ctx.norm,
        &ctx.zoom,
        ctx.config.training.eval_batch_size,
        base,
    );
    let plots = ctx.run.join("plots");
    write_reports(&evaluation, samples, split, ctx.n(), &ctx.norm, &plots)?;
    std::fs::copy(plots.join("metrics.json"), ctx.run.join("metrics.json")).context("cannot write metrics.json")?;
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
    Ok((split, evaluation))
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

pub(super) fn log_epoch(r: &EpochRecord, epochs: usize) {
    let val = match (r.val_accuracy, r.val_macro_f1) {
        (Some(a), Some(f)) => {
            format!(" | val acc {a:.4} F1 {f:.4} AUC {}", r.val_macro_auc.map_or("n/a".into(), |x| format!("{x:.4}")))
        }
        _ => String::new(),
    };
    tracing::info!(
        "stage {} epoch {}/{epochs}: loss {:.4} (pull/push {:.4}, decouple {:.4}, lesion evidence {:.4}, ce {:.4}, train acc {:.3}){val} | {:.1} img/s, {:.1} s",
        r.stage,
        r.epoch,
        r.loss.total,
        r.loss.pull_push,
        r.loss.decouple,
        r.loss.evidence,
        r.loss.ce,
        r.loss.accuracy,
        r.images_per_second,
        r.seconds
    );
}
