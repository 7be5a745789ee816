//! Time of one CDNet training step (global + two CMZ views = 3 backbone passes, forward and
//! backward, HCD + heads, Adam update) on the CPU backend, and the process's peak RSS.
//!
//! `cargo bench -p cdnet-host --bench train_step -- [b0|b3|lite0|small|tiny] [batch] [size] [steps]`
//! The model is the paper's configuration (`configs/paper-b3.toml`'s defaults) with the backbone
//! and input size given; `cdnet bench-step` runs the same step from any config and on CUDA.
//! Compare with `tools/torch_step_bench.py` (PyTorch + timm, same step). Figures: docs/performance.md.

use burn::prelude::*;
use cdnet_host::train::bench::{StepBenchRun, bench_step};
use cdnet_host::train::config::TrainConfig;

fn main() -> anyhow::Result<()> {
    cdnet_host::train::allocator::keep_freed_memory();
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let variant = args.first().map_or("b0", String::as_str);
    let batch: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(8);
    let size: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(224);
    let steps: usize = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(3);
    let overrides = [format!("model.backbone=\"{variant}\""), format!("model.input_size={size}")];
    let config = TrainConfig::load(None, &overrides)?;
    // One untimed step: the first includes one-off allocation warm-up.
    let mut show = |step: usize, seconds: f64, loss: f32| eprintln!("step {step}: {seconds:.2} s, loss {loss:.4}");
    let report = bench_step(&config, StepBenchRun { batch, warmup: 1, steps }, &Device::flex(), &mut show)?;
    println!(
        "train_step {variant} batch {batch} {size}x{size}: {:.2} s/step, {:.2} images/s, peak RSS {:.0} MiB ({} threads)",
        report.seconds_per_step, report.images_per_second, report.peak_rss_mib, report.threads
    );
    Ok(())
}
