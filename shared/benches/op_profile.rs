//! Where a frame's time goes, operation by operation: the bundle's NNEF backbone, optimised as the
//! edge optimises it, run `frames` times with every node timed. Prints the time per operation kind
//! and the slowest nodes with their shapes, the evidence behind a kernel or layout change.
//! `cargo bench -p cdnet-shared --features runtime --bench op_profile -- BUNDLE [threads] [frames] [top]`

use cdnet_shared::bundle::Bundle;
use cdnet_shared::runtime::{FramePool, GraphFormat, optimized_graph};
use std::collections::HashMap;
use std::time::Instant;
use tract_nnef::internal::*;

struct NodeTime {
    name: String,
    op: String,
    detail: String,
    total: f64,
}

fn describe(model: &TypedModel, node: &TypedNode) -> String {
    let input = node
        .inputs
        .first()
        .and_then(|i| model.outlet_fact(*i).ok())
        .map(|f| format!("{:?}", f.shape))
        .unwrap_or_default();
    let info = node.op().info().unwrap_or_default().join(" ");

    format!("in {input} {info}")
}

fn main() -> TractResult<()> {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let Some(dir) = args.first() else {
        eprintln!("usage: op_profile BUNDLE [threads] [frames] [top]");
        std::process::exit(2);
    };
    let threads: usize = args.get(1).and_then(|v| v.parse().ok()).unwrap_or(1);
    let frames: usize = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(50);
    let top: usize = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(25);
    let bundle = Bundle::open(std::path::Path::new(dir)).map_err(|e| format_err!("{e}"))?;
    let nnef = bundle.card.nnef.clone().ok_or_else(|| format_err!("{dir}: the bundle has no NNEF graphs"))?;
    let n = bundle.card.preprocess.input_size;
    let model = optimized_graph(&bundle.file(&nnef.backbone.file), &[1, 3, n, n], GraphFormat::Nnef)?;
    // As the pipeline loads it: a pool only for more than one thread.
    let pool = if threads > 1 { Some(FramePool::new(threads)?) } else { None };
    let options = RunOptions { executor: pool.as_ref().map(FramePool::executor), ..RunOptions::default() };
    let plan = model.into_runnable_with_options(&options)?;
    let mut state = SimpleState::new(&plan)?;
    let shape: Vec<usize> = plan.model().input_fact(0)?.shape.as_concrete().unwrap_or(&[]).to_vec();
    let input = Tensor::from_shape(&shape, &vec![0.1f32; shape.iter().product()])?.into_tvalue();
    state.run(tvec!(input.clone()))?;
    let model = plan.model();
    let mut times: Vec<NodeTime> = model
        .nodes()
        .iter()
        .map(|n| NodeTime {
            name: n.name.clone(),
            op: n.op().name().to_string(),
            detail: describe(model, n),
            total: 0.0,
        })
        .collect();
    let wall = Instant::now();
    for _ in 0..frames {
        let mut frame = || {
            state.run_plan_with_eval(tvec!(input.clone()), |ctx, op_state, node, inputs| {
                let start = Instant::now();
                let out = tract_nnef::tract_core::plan::eval(ctx, op_state, node, inputs);
                times[node.id].total += start.elapsed().as_secs_f64();
                out
            })
        };
        // As the pipeline runs a frame: on the pool, the other threads kept awake.
        match &pool {
            Some(pool) => pool.run(frame)?,
            None => frame()?,
        };
    }
    let per_frame = |s: f64| s * 1000.0 / frames as f64;
    let wall = per_frame(wall.elapsed().as_secs_f64());
    let mut by_op: HashMap<&str, (f64, usize)> = HashMap::new();
    for t in &times {
        let e = by_op.entry(t.op.as_str()).or_default();
        e.0 += t.total;
        e.1 += 1;
    }
    let mut by_op: Vec<_> = by_op.into_iter().collect();
    by_op.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
    println!("{dir}: backbone {shape:?}, {threads} thread(s), {frames} frames: {wall:.2} ms/frame");
    println!("{:>8} {:>6} {:>5}  op", "ms", "%", "nodes");
    for (op, (total, count)) in &by_op {
        println!("{:>8.3} {:>5.1}% {:>5}  {op}", per_frame(*total), 100.0 * per_frame(*total) / wall, count);
    }
    times.sort_by(|a, b| b.total.total_cmp(&a.total));
    println!("\nslowest {top} nodes:");
    for t in times.iter().take(top) {
        println!("{:>8.3}  {:<18} {:<40} {}", per_frame(t.total), t.op, t.name, t.detail);
    }
    Ok(())
}
