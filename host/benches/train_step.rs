//! Time of one CDNet training step (global + two CMZ views = 3 backbone passes, forward and
//! backward, HCD + heads, Adam update) on the CPU backend, and the process's peak RSS.
//!
//! `cargo bench -p cdnet-host --bench train_step -- [b0|b3|lite0|small|tiny] [batch] [size] [steps]`
//! Compare with `tools/torch_step_bench.py` (PyTorch + timm, same step). Figures: docs/performance.md.

use burn::optim::{AdamConfig, GradientsParams};
use burn::prelude::*;
use cdnet_host::model::cmz::CmzConfig;
use cdnet_host::model::loss::HcdConfig;
use cdnet_host::model::{CdnetConfig, EfficientNetConfig};
use cdnet_host::train::step::{Batch, LossKind, StepConfig, ZoomKind, training_loss};
use cdnet_shared::CenterZoomParams;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::time::Instant;

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| l.to_string()))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let variant = args.first().map_or("b0", String::as_str);
    let batch: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(8);
    let size: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(224);
    let steps: usize = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(3);
    let backbone = match variant {
        "b3" => EfficientNetConfig::b3(),
        "lite0" => EfficientNetConfig::lite0(),
        "small" => EfficientNetConfig::small(),
        "tiny" => EfficientNetConfig::tiny(),
        _ => EfficientNetConfig::b0(),
    };
    let device = Device::flex().autodiff();
    device.seed(0);
    let mut model = CdnetConfig::new(backbone, 5).with_input_size(size).init(&device);
    let mut optim = AdamConfig::new().with_beta_1(0.97).with_epsilon(1e-8).init();
    let config = StepConfig {
        loss: LossKind::Hcd,
        hcd: HcdConfig::new(),
        zoom: ZoomKind::Cmz,
        cmz: CmzConfig::new(),
        center: CenterZoomParams::default(),
        train_heads: true,
        heads_train_backbone: false,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let planes =
        (0..batch).map(|i| (0..size * size).map(|p| ((p * 7 + i * 13) % 255) as f32 / 127.5 - 1.0).collect()).collect();
    let batch_data = Batch { planes, labels: (0..batch).map(|i| i % 5).collect() };
    let mut times = Vec::new();
    for step in 0..steps + 1 {
        let start = Instant::now();
        let out = training_loss(&model, &batch_data, size, &config, &mut rng, &device);
        let grads = GradientsParams::from_grads(out.loss.backward(), &model);
        model = optim.step(1e-3, model, grads);
        let seconds = start.elapsed().as_secs_f64();
        if step > 0 {
            times.push(seconds); // the first step includes one-off allocation warm-up
        }
        eprintln!("step {step}: {seconds:.2} s, loss {:.4}", out.parts.total);
    }
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    println!(
        "train_step {variant} batch {batch} {size}x{size}: {mean:.2} s/step, {:.2} images/s, peak RSS {:.0} MiB ({} threads)",
        batch as f64 / mean,
        peak_rss_mib(),
        rayon::current_num_threads()
    );
}
