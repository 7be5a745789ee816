//! Time of the full inference path (two backbone passes + head) on a bundle with tract, and the
//! process's peak RSS. `cargo bench -p cdnet-shared --features runtime --bench pipeline -- BUNDLE [threads] [frames]
//! [nnef|onnx]` (the bundle's NNEF graphs, what the edge runs, by default; `onnx` needs `--features onnx`).

use cdnet_shared::bundle::Bundle;
use cdnet_shared::runtime::{GraphFormat, Pipeline, Threads};
use std::time::Instant;

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let Some(dir) = args.first() else {
        eprintln!("usage: pipeline BUNDLE [threads] [frames] [nnef|onnx]");
        std::process::exit(2);
    };
    let threads: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(1);
    let frames: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(20);
    let format = if args.get(3).is_some_and(|f| f == "onnx") { GraphFormat::Onnx } else { GraphFormat::Nnef };
    let start = Instant::now();
    let bundle = Bundle::open(std::path::Path::new(dir)).expect("bundle");
    let pipeline = Pipeline::load_graphs(bundle, Threads(threads), format).expect("load");
    let load = start.elapsed().as_secs_f64();
    let n = pipeline.bundle().card.preprocess.input_size;
    let plane: Vec<f32> = (0..n * n).map(|i| ((i * 37) % 255) as f32 / 127.5 - 1.0).collect();
    let answer = pipeline.infer_plane(&plane).expect("warm-up");
    let mut times = Vec::with_capacity(frames);
    for _ in 0..frames {
        let t = Instant::now();
        std::hint::black_box(pipeline.infer_plane(&plane).expect("inference"));
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    println!(
        "pipeline {dir} ({:?} {format:?}, {n}x{n}, {threads} thread(s)): median {median:.2} ms/frame, mean {mean:.2} ms, load {load:.2} s, peak RSS {:.0} MiB",
        pipeline.bundle().card.precision,
        peak_rss_mib()
    );
    // Equal digests across builds: the same answer to the bit (a kernel change that claims to
    // reorder no arithmetic is checked this way).
    println!("answer digest {:016x} (probabilities and heatmap of the warm-up frame)", digest(&answer));
}

/// FNV-1a over the bits of the answer's probabilities and heatmap.
fn digest(answer: &cdnet_shared::runtime::Inference) -> u64 {
    let values = answer.probabilities.iter().chain(&answer.heatmap);
    values
        .flat_map(|v| v.to_bits().to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3))
}
