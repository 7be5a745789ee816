//! Static post-training int8 quantisation of the backbone graph, in the operator-oriented ONNX form
//! that tract runs with its integer kernels (and onnxruntime too):
//!
//! ```text
//! x (f32) → QuantizeLinear(s_x, 0: i8) → QLinearConv(w: i8, bias: i32) → DequantizeLinear(s_y, 0) → f32
//! ```
//!
//! Dense convolutions with reductions long enough to pay for the conversions (see [`dense_convs`])
//! are quantised; depthwise convolutions, short-reduction layers (the stem, the expansions of the
//! early stages), activations, SE gating and residual additions stay in float (tract has no integer
//! depthwise kernel). Activations are symmetric i8 per tensor
//! (zero point 0, so the integer matmul needs no zero-point corrections), their ranges the 0.01 %
//! and 99.99 % percentiles over the calibration set: the calibration images plus their centre-zoom
//! views, because the backbone sees both at inference. Weights are symmetric i8 with **one scale
//! per tensor**: tract fuses the requantisation into its kernel only for a scalar scale; with
//! per-output-channel scales (measured: b3 at 224, 370–400 ms/frame against 93 ms) the separate
//! requantisation passes cost far more than they save. The accuracy cost is reported in the card.

use super::onnx::{Graph, f32_tensor, node, read_f32};
use anyhow::{Context, Result, bail};
use cdnet_shared::imageio::{file_kind, read_gray_frames};
use cdnet_shared::preprocess::preprocess_plane;
use cdnet_shared::runtime::Pipeline;
use cdnet_shared::zoom::crop_and_resize;
use cdnet_shared::{GrayImage, PreprocessConfig};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use tract_onnx::pb::{TensorProto, ValueInfoProto, tensor_proto};
use tract_onnx::prelude::*;

/// What the quantiser did, for the model card.
#[derive(Debug, Clone, Serialize)]
pub struct QuantisationSummary {
    /// Convolutions quantised to int8.
    pub quantised_convs: usize,
    /// Convolutions left in float (depthwise, or reductions shorter than `min_reduction`).
    pub float_convs: usize,
    /// A dense convolution is quantised when each output sums at least this many products.
    pub min_reduction: usize,
    /// Calibration images (each also contributes its centre-zoom view).
    pub calibration_images: usize,
    /// Activation range percentiles.
    pub percentiles: [f64; 2],
    /// Scheme.
    pub scheme: &'static str,
}

/// The quantised backbone.
#[derive(Debug, Clone)]
pub struct Quantised {
    /// The graph.
    pub graph: Graph,
    /// What was done.
    pub summary: QuantisationSummary,
}

/// The shortest reduction (`C_in·kh·kw`) of a convolution quantised by default; see
/// [`dense_convs`].
pub const DEFAULT_MIN_REDUCTION: usize = 96;
const LOW: f64 = 0.0001;
const HIGH: f64 = 0.9999;
/// Values kept per tensor per image for the percentiles (evenly strided).
const SAMPLES_PER_IMAGE: usize = 8192;

/// Normalised input planes from the images under `dir` (any depth, any supported format), at most
/// `max`, preprocessed exactly as the model expects.
pub fn calibration_planes(dir: &Path, preprocess: &PreprocessConfig, max: usize) -> Result<Vec<Vec<f32>>> {
    if !dir.is_dir() {
        bail!("calibration folder {} does not exist", dir.display());
    }
    let mut files: Vec<_> = walkdir::WalkDir::new(dir)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file() && file_kind(e.path()).is_some())
        .map(|e| e.into_path())
        .filter(|p| !p.components().any(|c| c.as_os_str() == "masks"))
        .collect();
    if files.is_empty() {
        bail!("no images under {} to calibrate with", dir.display());
    }
    // Spread the selection over the whole folder (all classes), deterministically.
    let stride = files.len().div_ceil(max.max(1));
    files = files.into_iter().step_by(stride.max(1)).take(max).collect();
    let n = preprocess.input_size;
    let mut planes = Vec::new();
    for path in files {
        let frames = read_gray_frames(&path)?;
        let frame = &frames[0];
        let image = GrayImage::new(frame.width as usize, frame.height as usize, &frame.pixels)
            .with_context(|| path.display().to_string())?;
        let mut plane = vec![0.0; n * n];
        preprocess_plane(&image, preprocess, &mut plane).with_context(|| path.display().to_string())?;
        planes.push(plane);
    }
    Ok(planes)
}

/// Refuses a `min_reduction` that would leave no convolution of `graph` to quantise (before any
/// output is written or replaced).
pub fn check_min_reduction(graph: &Graph, min_reduction: usize) -> Result<()> {
    dense_convs(graph, min_reduction).map(|_| ())
}

/// A convolution to quantise: its node's index in the graph, its input and output tensors.
struct DenseConv {
    node: usize,
    input: String,
    output: String,
}

/// The convolutions worth quantising, and how many stay float. A dense convolution is quantised
/// when each of its outputs sums at least `min_reduction` products (`C_in · kh · kw`): an integer
/// product's gain grows with the reduction, while what it adds (quantising its input,
/// dequantising its output) is a pass over each map whatever the reduction, so short reductions
/// do not pay. Where that line falls moved as those passes got cheaper: at stop 31 (tract's int8
/// packing and dequantise casts as separate passes) 112 → 672 expansions did not pay and the line
/// was 192; once the activation packing and the dequantise cast folded into the product and the
/// chain after it (stop 33), 96 was the fastest of 80, 96, 112, 144 and 192 (field model, Lite0 at
/// 160; docs/performance.md, stop 34), with the same pointing game and macro-F1 within 0.4 point
/// of fp32 on BUSI `val`, where 80 lost a pointing hit. Depthwise convolutions always stay float.
fn dense_convs(graph: &Graph, min_reduction: usize) -> Result<(Vec<DenseConv>, usize)> {
    let mut dense = Vec::new();
    let mut float = 0;
    let mut longest = 0;
    let initializers: std::collections::HashSet<&str> =
        graph.graph().initializer.iter().map(|t| t.name.as_str()).collect();
    for (i, n) in graph.graph().node.iter().enumerate() {
        if n.op_type != "Conv" {
            continue;
        }
        let group = n.attribute.iter().find(|a| a.name == "group").map_or(1, |a| a.i);
        let Some(weight) = graph.graph().initializer.iter().find(|t| t.name == n.input[1]) else {
            float += 1;
            continue;
        };
        let reduction = weight.dims[1..].iter().product::<i64>().max(0) as usize;
        if group == 1 {
            longest = longest.max(reduction);
        }
        if group != 1 || !initializers.contains(n.input[1].as_str()) || reduction < min_reduction {
            float += 1;
            continue;
        }
        dense.push(DenseConv { node: i, input: n.input[0].clone(), output: n.output[0].clone() });
    }
    if dense.is_empty() {
        bail!(
            "no dense convolution sums {min_reduction} or more products (the longest reduction, C_in·kh·kw, is \
             {longest}), so nothing would be quantised; pass a --min-reduction of at most {longest}"
        );
    }
    Ok((dense, float))
}

/// Runs the float graph with extra outputs on every calibration input and returns the
/// `[low, high]` percentile range of each requested tensor.
fn calibrate(graph: &Graph, tensors: &[String], inputs: &[Vec<f32>], n: usize) -> Result<HashMap<String, (f32, f32)>> {
    let mut probe = graph.clone();
    for name in tensors {
        probe.graph_mut().output.push(ValueInfoProto { name: name.clone(), ..Default::default() });
    }
    let plan = tract_onnx::onnx()
        .model_for_read(&mut &probe.encode()[..])
        .and_then(|m| m.with_input_fact(0, f32::fact([1, 3, n, n]).into()))
        .and_then(|m| m.into_optimized())
        .and_then(|m| m.into_runnable())
        .map_err(|e| anyhow::anyhow!("cannot run the calibration graph: {e:#}"))?;
    let mut samples: Vec<Vec<f32>> = vec![Vec::new(); tensors.len()];
    let mut extremes = vec![(f32::INFINITY, f32::NEG_INFINITY); tensors.len()];
    for plane in inputs {
        let mut input = Vec::with_capacity(3 * n * n);
        for _ in 0..3 {
            input.extend_from_slice(plane);
        }
        let tensor = Tensor::from_shape(&[1, 3, n, n], &input)?;
        let outputs =
            plan.run(tvec!(tensor.into_tvalue())).map_err(|e| anyhow::anyhow!("calibration run failed: {e:#}"))?;
        for (k, output) in outputs.iter().skip(2).enumerate() {
            let view = output.to_plain_array_view::<f32>()?;
            let values = view.as_slice().map(<[f32]>::to_vec).unwrap_or_else(|| view.iter().copied().collect());
            let stride = values.len().div_ceil(SAMPLES_PER_IMAGE).max(1);
            samples[k].extend(values.iter().step_by(stride));
            for v in &values {
                extremes[k].0 = extremes[k].0.min(*v);
                extremes[k].1 = extremes[k].1.max(*v);
            }
        }
    }
    let mut ranges = HashMap::new();
    for ((name, mut values), (min, max)) in tensors.iter().zip(samples).zip(extremes) {
        values.sort_by(f32::total_cmp);
        let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
        let (lo, hi) = if values.is_empty() { (0.0, 0.0) } else { (at(LOW).max(min), at(HIGH).min(max)) };
        ranges.insert(name.clone(), (lo, hi));
    }
    Ok(ranges)
}

/// Symmetric i8 quantisation parameters covering `[lo, hi]`: zero point 0, so tract needs no
/// zero-point corrections around its integer matmul.
fn i8_params(lo: f32, hi: f32) -> (f32, u8) {
    let scale = (lo.abs().max(hi.abs()) / 127.0).max(1e-8);
    (scale, 0)
}

fn scalar_f32(name: &str, value: f32) -> TensorProto {
    f32_tensor(name, &[], &[value])
}

fn scalar_i8(name: &str, value: u8) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        data_type: tensor_proto::DataType::Int8 as i32,
        raw_data: vec![value],
        ..Default::default()
    }
}

/// Quantises the dense convolutions of the fp32 backbone `graph`; `fp32` supplies the centre-zoom
/// views of the calibration images.
pub fn quantize(graph: &Graph, fp32: &Pipeline, images: &[Vec<f32>], min_reduction: usize) -> Result<Quantised> {
    let n = fp32.bundle().card.preprocess.input_size;
    let (dense, float_convs) = dense_convs(graph, min_reduction)?;
    // Calibration inputs: each image and its centre-zoom view.
    let mut inputs = Vec::with_capacity(2 * images.len());
    for plane in images {
        inputs.push(plane.clone());
        if let Some(rect) = fp32.infer_plane(plane)?.zoom_box {
            let mut view = vec![0.0; n * n];
            crop_and_resize(plane, n, rect, &mut view)?;
            inputs.push(view);
        }
    }
    let mut tensors: Vec<String> = dense.iter().flat_map(|c| [c.input.clone(), c.output.clone()]).collect();
    tensors.sort();
    tensors.dedup();
    let ranges = calibrate(graph, &tensors, &inputs, n)?;

    let mut out = graph.clone();
    let g = out.graph_mut();
    let initializer_index: HashMap<String, usize> =
        g.initializer.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
    let mut replacements: HashMap<usize, Vec<tract_onnx::pb::NodeProto>> = HashMap::new();
    let mut new_initializers = Vec::new();
    for DenseConv { node: index, input, output } in &dense {
        let conv = &g.node[*index];
        let prefix = format!("q{index}");
        let weight = &g.initializer[initializer_index[&conv.input[1]]];
        let dims = weight.dims.clone();
        let w = read_f32(weight)?;
        let bias = match conv.input.get(2).filter(|s| !s.is_empty()) {
            Some(name) => read_f32(&g.initializer[initializer_index[name]])?,
            None => vec![0.0; dims[0] as usize],
        };
        let (x_scale, x_zero) = i8_params(ranges[input].0, ranges[input].1);
        let (y_scale, y_zero) = i8_params(ranges[output].0, ranges[output].1);
        let channels = dims[0] as usize;
        let per_channel = w.len() / channels;
        let mut w_q = Vec::with_capacity(w.len());
        let mut b_q = Vec::with_capacity(channels);
        // One scale per tensor: tract fuses the requantisation into its integer kernel only then
        // (a per-channel scale costs separate passes that undo the gain).
        let tensor_max = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let scale = if tensor_max > 0.0 { tensor_max / 127.0 } else { 1.0 };
        for c in 0..channels {
            let row = &w[c * per_channel..(c + 1) * per_channel];
            w_q.extend(row.iter().map(|v| (v / scale).round().clamp(-127.0, 127.0) as i8 as u8));
            b_q.push((bias[c] as f64 / (x_scale as f64 * scale as f64)).round() as i32);
        }
        let names = |suffix: &str| format!("{prefix}.{suffix}");
        new_initializers.push(scalar_f32(&names("x_scale"), x_scale));
        new_initializers.push(scalar_i8(&names("x_zero"), x_zero));
        new_initializers.push(scalar_f32(&names("y_scale"), y_scale));
        new_initializers.push(scalar_i8(&names("y_zero"), y_zero));
        new_initializers.push(TensorProto {
            name: names("w"),
            dims: dims.clone(),
            data_type: tensor_proto::DataType::Int8 as i32,
            raw_data: w_q,
            ..Default::default()
        });
        new_initializers.push(f32_tensor(&names("w_scale"), &[], &[scale]));
        new_initializers.push(TensorProto {
            name: names("w_zero"),
            dims: vec![],
            data_type: tensor_proto::DataType::Int8 as i32,
            raw_data: vec![0],
            ..Default::default()
        });
        new_initializers.push(TensorProto {
            name: names("bias"),
            dims: vec![channels as i64],
            data_type: tensor_proto::DataType::Int32 as i32,
            raw_data: b_q.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        });
        let x_q = names("x_q");
        let y_q = names("y_q");
        let mut qconv = node(
            "QLinearConv",
            &names("conv"),
            &[
                input,
                &names("x_scale"),
                &names("x_zero"),
                &names("w"),
                &names("w_scale"),
                &names("w_zero"),
                &names("y_scale"),
                &names("y_zero"),
                &names("bias"),
            ],
            &[&y_q],
            conv.attribute.clone(),
        );
        qconv.input[0] = x_q.clone();
        replacements.insert(
            *index,
            vec![
                node(
                    "QuantizeLinear",
                    &names("quantize"),
                    &[input, &names("x_scale"), &names("x_zero")],
                    &[&x_q],
                    vec![],
                ),
                qconv,
                node(
                    "DequantizeLinear",
                    &names("dequantize"),
                    &[&y_q, &names("y_scale"), &names("y_zero")],
                    &[output],
                    vec![],
                ),
            ],
        );
    }
    let nodes = std::mem::take(&mut g.node);
    for (i, n) in nodes.into_iter().enumerate() {
        match replacements.remove(&i) {
            Some(nodes) => g.node.extend(nodes),
            None => g.node.push(n),
        }
    }
    g.initializer.extend(new_initializers);
    out.prune_initializers();
    Ok(Quantised {
        graph: out,
        summary: QuantisationSummary {
            quantised_convs: dense.len(),
            float_convs,
            min_reduction,
            calibration_images: images.len(),
            percentiles: [LOW, HIGH],
            scheme: "QLinearConv, i8 symmetric activations per tensor (percentiles), i8 symmetric weights per tensor, i32 bias",
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped_backbone() -> Graph {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/demo-phantom/backbone.onnx");
        Graph::decode(&std::fs::read(&path).unwrap()).unwrap()
    }

    /// `C_in·kh·kw` of each convolution with one group (dense), by node index.
    fn dense_reductions(graph: &Graph) -> HashMap<usize, usize> {
        let g = graph.graph();
        let weights: HashMap<&str, &[i64]> = g.initializer.iter().map(|t| (t.name.as_str(), &t.dims[..])).collect();
        g.node
            .iter()
            .enumerate()
            .filter(|(_, n)| n.op_type == "Conv" && n.attribute.iter().all(|a| a.name != "group" || a.i == 1))
            .map(|(i, n)| (i, weights[n.input[1].as_str()][1..].iter().product::<i64>() as usize))
            .collect()
    }

    /// On the field model, the line takes exactly the dense convolutions at or over it, the others
    /// stay float, and a line over the longest reduction is refused rather than quantising nothing.
    #[test]
    fn the_reduction_line_picks_the_long_dense_convolutions() {
        let graph = shipped_backbone();
        let reductions = dense_reductions(&graph);
        let longest = *reductions.values().max().unwrap();
        let (all, float_at_one) = dense_convs(&graph, 1).unwrap();
        assert_eq!(all.len(), reductions.len());
        for line in [DEFAULT_MIN_REDUCTION, 192, longest] {
            let (picked, float) = dense_convs(&graph, line).unwrap();
            let expected: Vec<usize> = all.iter().map(|c| c.node).filter(|i| reductions[i] >= line).collect();
            assert_eq!(picked.iter().map(|c| c.node).collect::<Vec<_>>(), expected, "line {line}");
            assert_eq!(float, float_at_one + all.len() - picked.len(), "line {line}");
        }
        assert!(dense_convs(&graph, DEFAULT_MIN_REDUCTION).unwrap().0.len() < all.len());
        let error = check_min_reduction(&graph, longest + 1).unwrap_err().to_string();
        assert!(error.contains("--min-reduction") && error.contains(&longest.to_string()), "{error}");
    }
}
