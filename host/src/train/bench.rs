//! The training-step benchmark: one configured CDNet training step (global view + its zoom views
//! through the backbone, forward and backward, the configured loss, an Adam update) repeated on a
//! fixed synthetic batch. `cargo bench --bench train_step` (CPU) and `cdnet bench-step` (any
//! backend, for the GPU check) both report it; `tools/torch_step_bench.py` is the same step in
//! PyTorch + timm.
//!
//! The batch is fixed, so the loss falling over the steps shows the step learns (it memorises the
//! batch); it says nothing about generalisation.

use super::config::TrainConfig;
use super::step::{Batch, training_loss};
use crate::model::BackboneKind;
use anyhow::{Result, bail};
use burn::optim::GradientsParams;
use burn::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::time::Instant;

/// Classes of the benchmark model: the five ocular classes.
const CLASSES: usize = 5;

/// How long to run the benchmark.
#[derive(Debug, Clone, Copy)]
pub struct StepBenchRun {
    /// Images per step.
    pub batch: usize,
    /// Untimed steps first (allocation, kernel compilation, autotuning on GPU).
    pub warmup: usize,
    /// Timed steps.
    pub steps: usize,
}

/// What the benchmark measured.
#[derive(Debug, Clone, Serialize)]
pub struct StepBenchReport {
    /// Backbone variant.
    pub backbone: BackboneKind,
    /// Input side in pixels.
    pub size: usize,
    /// Images per step.
    pub batch: usize,
    /// Untimed steps.
    pub warmup: usize,
    /// Timed steps.
    pub steps: usize,
    /// Mean seconds of a timed step.
    pub seconds_per_step: f64,
    /// `batch / seconds_per_step`.
    pub images_per_second: f64,
    /// Seconds of each step, warm-up included (the first ones show compilation and tuning).
    pub step_seconds: Vec<f64>,
    /// The loss of every step, warm-up included.
    pub losses: Vec<f32>,
    /// Peak resident memory of this process (host memory; GPU memory is read outside).
    pub peak_rss_mib: f64,
    /// CPU worker threads (rayon).
    pub threads: usize,
}

/// Runs `run.warmup + run.steps` training steps of the model and loss `config` describes, on
/// `device`, from a seeded random initialisation (no pretrained weights: they do not change the
/// time of a step). `progress` hears each step's index, seconds and loss as it ends.
pub fn bench_step(
    config: &TrainConfig,
    run: StepBenchRun,
    device: &Device,
    progress: &mut dyn FnMut(usize, f64, f32),
) -> Result<StepBenchReport> {
    if run.batch < 2 || run.steps == 0 {
        bail!("the step benchmark needs a batch of at least 2 and at least 1 timed step");
    }
    let size = config.model.network.input_size;
    let device = device.clone().autodiff();
    device.seed(config.training.seed);
    let mut model = config.cdnet(CLASSES)?.init(&device);
    let mut optimizer = config.adam(true).init();
    // The step after any cross-entropy warm-up: the configured loss and views.
    let step = config.step(true, config.training.warmup_epochs + 1, None);
    let mut rng = ChaCha8Rng::seed_from_u64(config.training.seed);
    let batch = synthetic_batch(run.batch, size);
    let mut step_seconds = Vec::new();
    let mut losses = Vec::new();
    for index in 0..run.warmup + run.steps {
        let start = Instant::now();
        let out = training_loss(&model, &batch, size, &step, &mut rng, &device);
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        model = optimizer.step(config.optim.lr, model, grads);
        // `training_loss` read its scalars back, so the forward has finished; the backward and
        // update run before the next step's forward on every backend (one stream), so each
        // timed step carries exactly one backward and update.
        step_seconds.push(start.elapsed().as_secs_f64());
        losses.push(out.parts.total);
        progress(index, step_seconds[index], out.parts.total);
    }
    let timed = &step_seconds[run.warmup..];
    let seconds_per_step = timed.iter().sum::<f64>() / timed.len() as f64;
    Ok(StepBenchReport {
        backbone: config.model.backbone,
        size,
        batch: run.batch,
        warmup: run.warmup,
        steps: run.steps,
        seconds_per_step,
        images_per_second: run.batch as f64 / seconds_per_step,
        step_seconds,
        losses,
        peak_rss_mib: peak_rss_mib(),
        threads: rayon::current_num_threads(),
    })
}

/// A deterministic batch of normalised planes in [-1, 1] with balanced labels.
fn synthetic_batch(batch: usize, size: usize) -> Batch {
    let planes =
        (0..batch).map(|i| (0..size * size).map(|p| ((p * 7 + i * 13) % 255) as f32 / 127.5 - 1.0).collect()).collect();
    Batch { planes, labels: (0..batch).map(|i| i % CLASSES).collect() }
}

/// Peak resident set size of this process in MiB (`VmHWM`), NaN where /proc is absent.
pub fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or(f64::NAN, |kb| kb / 1024.0)
}
