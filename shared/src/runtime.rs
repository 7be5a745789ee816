//! The inference path on a bundle, with tract: global pass → AttS → centre-zoom box → crop →
//! local pass → fused head. The same code serves the edge (every frame) and the host (checking an
//! export, comparing int8 against fp32), so both run exactly the same arithmetic.
//!
//! The edge runs the bundle's NNEF graphs ([`Pipeline::load`]) with tract-core and tract-nnef only:
//! the ONNX front end (protobuf, the ONNX operator set) stays off the device. The host can also run
//! the ONNX graphs (feature `onnx`), to check a translation and for bundles from before NNEF.

use crate::bundle::Bundle;
use crate::gate::{FrameGate, Refusal, frame_statistics};
use crate::heatmap::block_mean;
use crate::postprocess::top_class;
use crate::preprocess::{MIN_CROP_SIDE, PreprocessError, crop_resize_plane, preprocess_plane};
use crate::zoom::zoom_view;
use crate::{GrayImage, Rect};
use std::string::{String, ToString};
use std::sync::Arc;
use std::vec;
use std::vec::Vec;
use tract_nnef::prelude::*;

pub use crate::frame_pool::FramePool;

/// Why the pipeline could not be built or run.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// tract could not load or optimise a graph.
    #[error("cannot load {file}: {reason}")]
    Load {
        /// The graph file.
        file: String,
        /// tract's error chain.
        reason: String,
    },
    /// A graph does not have the shape the card promises.
    #[error("{file} does not match its model card: {reason}")]
    Shape {
        /// The graph file.
        file: String,
        /// What differs.
        reason: String,
    },
    /// The frame could not be preprocessed.
    #[error(transparent)]
    Preprocess(#[from] PreprocessError),
    /// The bundle has no NNEF graphs (card format 3), which this runtime needs.
    #[error(
        "bundle {0} has ONNX graphs only (model card format 3), and this device runs NNEF graphs; \
         add them on the laptop with `cdnet nnef --bundle DIR`, copy the bundle again, and sign it again \
         if the device trusts keys"
    )]
    NoNnef(std::path::PathBuf),
    /// The ONNX graphs were asked for in a build without the ONNX front end.
    #[error("this build runs NNEF graphs only (cdnet-shared without its `onnx` feature)")]
    NoOnnx,
    /// Inference failed.
    #[error("inference failed: {0}")]
    Run(String),
}

/// Which of a bundle's two translations of its graphs to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFormat {
    /// The NNEF archives (what the edge runs).
    Nnef,
    /// The ONNX graphs (host only: feature `onnx`).
    Onnx,
}

impl GraphFormat {
    /// NNEF where the bundle has it, else ONNX (a format-3 bundle, on the host).
    pub fn preferred(card: &crate::bundle::ModelCard) -> GraphFormat {
        if card.nnef.is_some() { GraphFormat::Nnef } else { GraphFormat::Onnx }
    }
}

/// How many threads tract's matrix kernels may use (1 = tract's default single thread; more run
/// each frame on a [`FramePool`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Threads(pub usize);

/// What the network says about one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Inference {
    /// Probability per class.
    pub probabilities: Vec<f32>,
    /// Most probable class.
    pub class: usize,
    /// Its probability.
    pub confidence: f32,
    /// Top probability below the card's refer threshold.
    pub uncertain: bool,
    /// AttS of the global pass, row-major `attention_side²`: what the zoom box is taken from.
    pub attention: Vec<f32>,
    /// Side of the attention map.
    pub attention_side: usize,
    /// The heatmap of the global pass, row-major `heatmap_side²`: what the screen draws, the probe
    /// is sent and the pointing game scores (the stride-16 map; AttS for older bundles).
    pub heatmap: Vec<f32>,
    /// Side of the heatmap.
    pub heatmap_side: usize,
    /// Centre-zoom box in network-input pixels (two-pass models).
    pub zoom_box: Option<Rect>,
    /// The device crop in frame pixels (the full input for [`Pipeline::infer_plane`]).
    pub crop: Rect,
    /// The frame gate's distance of a frame that passed it ([`Pipeline::classify_image`]); `None`
    /// from the network-only paths.
    pub gate_distance: Option<f32>,
}

/// What the device makes of one frame: a diagnosis, or the frame gate's refusal to give one.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameVerdict {
    /// The frame passed the gate and the network classified it.
    Classified(Inference),
    /// The gate refused the frame ("no eye in view"); the network did not run.
    NoEye {
        /// Why.
        refusal: Refusal,
        /// The device crop in frame pixels (the whole frame when it was too small to crop).
        crop: Rect,
    },
}

type Plan = Arc<TypedRunnableModel>;

/// A loaded bundle, ready to run frames.
pub struct Pipeline {
    bundle: Bundle,
    gate: FrameGate,
    backbone: Plan,
    head: Plan,
    n: usize,
    /// The threads frames run on, when more than one.
    pool: Option<FramePool>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline").field("bundle", &self.bundle.dir).field("input", &self.n).finish()
    }
}

/// The typed model of one graph file, with a concrete input shape.
fn read_graph(path: &std::path::Path, input: &[usize], format: GraphFormat) -> TractResult<TypedModel> {
    let model = match format {
        // Written with concrete shapes (host `export::nnef`); the input is checked after loading.
        GraphFormat::Nnef => tract_nnef::nnef().model_for_path(path)?,
        #[cfg(feature = "onnx")]
        GraphFormat::Onnx => {
            use tract_onnx::prelude::{Framework, InferenceModelExt};
            tract_onnx::onnx().model_for_path(path)?.with_input_fact(0, f32::fact(input).into())?.into_typed()?
        }
        #[cfg(not(feature = "onnx"))]
        GraphFormat::Onnx => tract_nnef::internal::bail!("{}", RuntimeError::NoOnnx),
    };
    let got = model.input_fact(0)?.shape.as_concrete().map(|s| s.to_vec());
    if got.as_deref() != Some(input) {
        tract_nnef::internal::bail!("its input is {got:?}, the card needs {input:?}");
    }
    Ok(model)
}

/// Re-declares a model's `[N, C, H, W]` input channel-last, `[N, H, W, C]`, moved back to
/// channels-first inside the graph, so callers feed it channel-last.
///
/// tract's layout pass moves the network to channel-last where its kernels want that, but never
/// changes a model input, so behind a channels-first input the stem convolution and the first
/// depthwise stayed channels-first: the stem stored its output one float at a time and the first
/// ReLU6 ran as a pass of its own. Behind the move, tract carries channel-last up to the input and
/// the move itself optimises away (field model: 0.83 → 0.62 ms for those layers; docs/performance.md,
/// stop 26).
fn feed_channel_last(model: &mut TypedModel) -> TractResult<()> {
    let input = model.input_outlets()?[0];
    let fact = model.outlet_fact(input)?.clone();
    let &[n, c, h, w] = fact.shape.as_concrete().unwrap_or(&[]) else {
        tract_nnef::internal::bail!("a channel-last input needs a concrete [N, C, H, W] input, not {:?}", fact.shape);
    };
    let source = model.add_source("cdnet_input_channel_last", fact.datum_type.fact([n, h, w, c]))?;
    let channels_first =
        model.wire_node("cdnet_input_channels_first", tract_nnef::internal::AxisOp::Move(3, 1), &[source])?[0];
    for successor in model.outlet_successors(input).to_vec() {
        model.add_edge(channels_first, successor)?;
    }
    model.set_input_outlets(&[source])
}

/// One graph file as the pipeline runs it: read with a concrete input, an image input fed
/// channel-last, optimised. (The `op_profile` bench profiles exactly this model.)
pub fn optimized_graph(path: &std::path::Path, input: &[usize], format: GraphFormat) -> TractResult<TypedModel> {
    let mut model = read_graph(path, input, format)?;
    // The image input (the backbone's); the head's is a feature vector.
    if input.len() == 4 {
        feed_channel_last(&mut model)?;
    }
    // Fused between the two halves of `into_optimized`: after decluttering (the loader's identity
    // casts gone, the chains in their plain form), before codegen.
    model.declutter()?;
    let (mut model, _) = crate::quantise_fusion::fuse_quantise_chains(model)?;
    model.optimize()?;
    Ok(model)
}

fn load_plan(
    bundle: &Bundle,
    file: &str,
    input: &[usize],
    pool: Option<&FramePool>,
    format: GraphFormat,
) -> Result<Plan, RuntimeError> {
    let fail = |e: TractError| RuntimeError::Load { file: file.to_string(), reason: std::format!("{e:#}") };
    let model = optimized_graph(&bundle.file(file), input, format).map_err(fail)?;
    let options = RunOptions { executor: pool.map(FramePool::executor), ..RunOptions::default() };
    model.into_runnable_with_options(&options).map_err(fail)
}

fn output_shape(plan: &Plan, index: usize) -> Option<Vec<usize>> {
    plan.model().output_fact(index).ok()?.shape.as_concrete().map(|s| s.to_vec())
}

impl Pipeline {
    /// Loads and optimises the bundle's NNEF graphs (what the edge runs) and checks their shapes
    /// against the card. A bundle without them is refused, naming the command that adds them.
    pub fn load(bundle: Bundle, threads: Threads) -> Result<Pipeline, RuntimeError> {
        Pipeline::load_graphs(bundle, threads, GraphFormat::Nnef)
    }

    /// [`load`](Self::load) with the translation chosen: the host checks the ONNX graphs against
    /// the NNEF ones, and runs format-3 bundles.
    pub fn load_graphs(bundle: Bundle, threads: Threads, format: GraphFormat) -> Result<Pipeline, RuntimeError> {
        let card = &bundle.card;
        let (backbone_file, head_file) = match (format, &card.nnef) {
            (GraphFormat::Nnef, Some(nnef)) => (nnef.backbone.file.clone(), nnef.head.file.clone()),
            (GraphFormat::Nnef, None) => return Err(RuntimeError::NoNnef(bundle.dir.clone())),
            // Without the `onnx` feature, read_graph refuses these.
            (GraphFormat::Onnx, _) => (card.backbone.clone(), card.head.clone()),
        };
        let n = card.preprocess.input_size;
        let pool = match threads.0 {
            0 | 1 => None,
            threads => Some(FramePool::new(threads).map_err(|e| RuntimeError::Load {
                file: backbone_file.clone(),
                reason: std::format!("cannot start {threads} threads: {e}"),
            })?),
        };
        let backbone = load_plan(&bundle, &backbone_file, &[1, 3, n, n], pool.as_ref(), format)?;
        let head = load_plan(&bundle, &head_file, &[1, card.head_width()], pool.as_ref(), format)?;
        let shape_err = |file: &str, reason: String| RuntimeError::Shape { file: file.to_string(), reason };
        let side = card.heatmap_side();
        for (index, want) in [(0, vec![1, card.feature_dim]), (1, vec![1, 1, side, side])] {
            let got = output_shape(&backbone, index);
            if got.as_deref() != Some(&want[..]) {
                return Err(shape_err(&backbone_file, std::format!("output {index} is {got:?}, expected {want:?}")));
            }
        }
        let k = card.labels.len();
        if output_shape(&head, 0).as_deref() != Some(&[1, k][..]) {
            return Err(shape_err(
                &head_file,
                std::format!("it outputs {:?} but the card lists {k} labels", output_shape(&head, 0)),
            ));
        }
        let gate = card.gate.clone().ok_or_else(|| RuntimeError::Shape {
            file: crate::bundle::CARD_FILE.to_string(),
            reason: "the card has no frame gate".to_string(),
        })?;
        Ok(Pipeline { bundle, gate, backbone, head, n, pool })
    }

    /// The bundle.
    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// Runs one backbone pass on a normalised `n × n` plane: (feature, heatmap).
    fn backbone_pass(&self, plane: &[f32]) -> Result<(Vec<f32>, Vec<f32>), RuntimeError> {
        let n = self.n;
        // The gray plane in all three channels, channel-last (see `feed_channel_last`).
        let input: Vec<f32> = plane.iter().flat_map(|&v| [v; 3]).collect();
        let tensor = Tensor::from_shape(&[1, n, n, 3], &input).map_err(|e| RuntimeError::Run(e.to_string()))?;
        let outputs =
            self.backbone.run(tvec!(tensor.into_tvalue())).map_err(|e| RuntimeError::Run(std::format!("{e:#}")))?;
        let read = |i: usize| -> Result<Vec<f32>, RuntimeError> {
            Ok(outputs[i]
                .to_plain_array_view::<f32>()
                .map_err(|e| RuntimeError::Run(e.to_string()))?
                .iter()
                .copied()
                .collect())
        };
        Ok((read(0)?, read(1)?))
    }

    /// The inference path on a normalised `n × n` plane.
    pub fn infer_plane(&self, plane: &[f32]) -> Result<Inference, RuntimeError> {
        match &self.pool {
            Some(pool) => pool.run(|| self.infer_plane_here(plane)),
            None => self.infer_plane_here(plane),
        }
    }

    /// [`infer_plane`](Self::infer_plane) on the calling thread.
    fn infer_plane_here(&self, plane: &[f32]) -> Result<Inference, RuntimeError> {
        let n = self.n;
        if plane.len() != n * n {
            return Err(RuntimeError::Run(std::format!("plane of {} values for a {n}×{n} input", plane.len())));
        }
        let card = &self.bundle.card;
        let side = card.attention_side;
        let (global, heatmap) = self.backbone_pass(plane)?;
        let heatmap_side = card.heatmap_side();
        // AttS is the heatmap's 2 × 2 block means (the graph computes it that way), or the heatmap
        // itself in bundles whose graph outputs AttS.
        let attention = if heatmap_side == side { heatmap.clone() } else { block_mean(&heatmap, heatmap_side) };
        let (head_input, zoom_box) = if card.zoom_inference {
            // Shapes were checked at load, so the box and crop cannot fall back.
            let zoomed = zoom_view(&attention, side, plane, n, &card.center_zoom);
            let (local, _) = self.backbone_pass(&zoomed.view)?;
            ([global, local].concat(), Some(zoomed.rect))
        } else {
            (global, None)
        };
        let width = head_input.len();
        let tensor = Tensor::from_shape(&[1, width], &head_input).map_err(|e| RuntimeError::Run(e.to_string()))?;
        let outputs =
            self.head.run(tvec!(tensor.into_tvalue())).map_err(|e| RuntimeError::Run(std::format!("{e:#}")))?;
        let probabilities: Vec<f32> = outputs[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| RuntimeError::Run(e.to_string()))?
            .iter()
            .copied()
            .collect();
        let (class, confidence) = top_class(&probabilities)
            .ok_or_else(|| RuntimeError::Run("the network returned non-finite probabilities".into()))?;
        Ok(Inference {
            uncertain: confidence < card.refer_threshold,
            probabilities,
            class,
            confidence,
            attention,
            attention_side: side,
            heatmap,
            heatmap_side,
            zoom_box,
            crop: Rect::full(n, n),
            gate_distance: None,
        })
    }

    /// Preprocesses a frame with the card's settings and runs the inference path: the network's
    /// answer on any frame, without the frame gate (export checks, parity tests). The device's
    /// path is [`classify_image`](Self::classify_image).
    pub fn infer_image(&self, image: &GrayImage<'_>) -> Result<Inference, RuntimeError> {
        let mut plane = vec![0.0; self.n * self.n];
        let crop = preprocess_plane(image, &self.bundle.card.preprocess, &mut plane)?;
        let mut inference = self.infer_plane(&plane)?;
        inference.crop = crop;
        Ok(inference)
    }

    /// The device's path for one frame: the frame gate, then (for a frame that passes) the
    /// preprocessing and the inference path. A refused frame costs no network pass.
    pub fn classify_image(&self, image: &GrayImage<'_>) -> Result<FrameVerdict, RuntimeError> {
        let whole = Rect::full(image.width(), image.height());
        if let Err(refusal) = self.gate.check_size(image.width(), image.height()) {
            return Ok(FrameVerdict::NoEye { refusal, crop: whole });
        }
        let mut plane = vec![0.0; self.n * self.n];
        let crop = match crop_resize_plane(image, &self.bundle.card.preprocess, &mut plane) {
            Ok(crop) => crop,
            // Too little left after the device crop is a frame too small to show an eye, not a fault.
            Err(PreprocessError::FrameTooSmall { width, height, .. }) => {
                let min_side = self.gate.min_side.max(MIN_CROP_SIDE);
                return Ok(FrameVerdict::NoEye { refusal: Refusal::TooSmall { width, height, min_side }, crop: whole });
            }
            Err(other) => return Err(other.into()),
        };
        let distance = match self.gate.check(&frame_statistics(&plane, self.n)) {
            Ok(distance) => distance,
            Err(refusal) => return Ok(FrameVerdict::NoEye { refusal, crop }),
        };
        self.bundle.card.preprocess.normalization.apply_all(&mut plane);
        let mut inference = self.infer_plane(&plane)?;
        inference.crop = crop;
        inference.gate_distance = Some(distance);
        Ok(FrameVerdict::Classified(inference))
    }
}
