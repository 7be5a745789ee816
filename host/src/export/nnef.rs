//! The bundle's graphs in NNEF: what the edge runs with tract-nnef alone, without the ONNX front
//! end (protobuf and the ONNX operator set are most of a tract binary; issue 16).
//!
//! tract reads each ONNX graph with the card's input shape, simplifies it ("declutter": the
//! operator-set-independent form, before any CPU-specific optimisation) and writes that typed model
//! as an NNEF archive. The edge loads the archive and optimises it for its own CPU, as it would the
//! ONNX graph, so both translations run the same kernels; [`agreement`] checks that they answer
//! alike before a bundle leaves the host.

use super::onnx::Graph;
use super::{largest_difference, phantom_planes};
use anyhow::{Context, Result, bail};
use cdnet_shared::bundle::{Bundle, ModelCard, NnefGraph, NnefGraphs, sha256_hex, write_atomically};
use cdnet_shared::runtime::{GraphFormat, Pipeline, Threads};
use std::path::Path;
use tract_onnx::prelude::*;

/// File of the backbone's NNEF archive inside a bundle.
pub const BACKBONE_FILE: &str = "backbone.nnef.tar";
/// File of the head's NNEF archive inside a bundle.
pub const HEAD_FILE: &str = "head.nnef.tar";
/// Largest probability difference allowed between a bundle's ONNX and NNEF graphs. Both are the
/// same typed model optimised the same way, so they agree to rounding; more means a translation
/// changed the arithmetic.
pub const MAX_DIFFERENCE: f32 = 1e-5;

/// Writes the NNEF archives of the ONNX graphs in `dir` and records them in `card`; the caller
/// then writes the card ([`Bundle::write_card`] with [`ModelCard::graph_files`]), which stamps the
/// ONNX graphs with a digest that covers the archives' hashes.
pub fn translate_graphs(dir: &Path, card: &mut ModelCard) -> Result<()> {
    let n = card.preprocess.input_size;
    let backbone = translate(&dir.join(&card.backbone), &[1, 3, n, n], &dir.join(BACKBONE_FILE))?;
    let head = translate(&dir.join(&card.head), &[1, card.head_width()], &dir.join(HEAD_FILE))?;
    card.nnef = Some(NnefGraphs {
        backbone: NnefGraph { file: BACKBONE_FILE.into(), sha256: backbone },
        head: NnefGraph { file: HEAD_FILE.into(), sha256: head },
        translator: concat!("cdnet ", env!("CARGO_PKG_VERSION"), " (tract-onnx → tract-nnef 0.23.9)").into(),
    });
    Ok(())
}

/// One ONNX graph → an NNEF archive at `out`; returns the archive's SHA-256.
fn translate(onnx: &Path, input: &[usize], out: &Path) -> Result<String> {
    let fail = |e: TractError| anyhow::anyhow!("cannot translate {} to NNEF: {e:#}", onnx.display());
    let mut model = tract_onnx::onnx()
        .model_for_path(onnx)
        .and_then(|m| m.with_input_fact(0, f32::fact(input).into()))
        .and_then(|m| m.into_typed())
        // Before decluttering, which would fold a dequantise → quantise pair into a lookup table
        // (no NNEF form either).
        .and_then(expand_quantisation)
        .and_then(|m| m.into_decluttered())
        .map_err(fail)?;
    // The ONNX metadata (the card-digest stamp among it) belongs to the ONNX file; copied into the
    // archive it would go stale at the next card change.
    model.properties.retain(|key, _| !key.starts_with("onnx.metadata_props"));
    let mut bytes = Vec::new();
    // Deterministic: the same graph gives the same archive (fixed timestamps), so re-exports and
    // `cdnet nnef` reproduce a bundle's hashes.
    tract_nnef::nnef().write_to_tar_with_config(&model, &mut bytes, false, true).map_err(fail)?;
    std::fs::write(out, &bytes).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(sha256_hex(&bytes))
}

/// tract-nnef 0.23.9 has no serialiser for tract-core's per-tensor `QuantizeLinearI8`/`U8` and
/// `DequantizeLinearF32` (what ONNX `QuantizeLinear`/`DequantizeLinear` become), so an int8 graph
/// cannot be written. Each is rewired here as the element-wise ops it computes, which NNEF has,
/// with the same arithmetic in the same order (so the same bits): quantise
/// `cast(min(max(round_half_to_even(x · (1/scale)) + zero_point, lo), hi))`, dequantise
/// `(cast_f32(x) − zero_point) · scale`. The int8 convolutions between them serialise as
/// `tract_core_qconv`. (Upstream issue text: docs/upstream/tract-nnef-quantize-linear.md.) The
/// runtime puts each i8 quantise back as the single op when it loads the graph
/// (`cdnet_shared::quantise_fusion`).
fn expand_quantisation(mut model: TypedModel) -> TractResult<TypedModel> {
    use tract_onnx::tract_core::ops::element_wise::ElementWiseOp;
    use tract_onnx::tract_core::ops::quant::{DequantizeLinearF32, QuantizeLinearI8, QuantizeLinearU8};
    for id in model.eval_order()? {
        let node = model.node(id);
        let expansion = if let Some(op) = node.op_as::<ElementWiseOp>() {
            if let Some(q) = op.0.downcast_ref::<QuantizeLinearI8>() {
                Some(Expansion::Quantise { scale: q.scale, zero_point: q.zero_point.into(), to: i8::datum_type() })
            } else {
                op.0.downcast_ref::<QuantizeLinearU8>().map(|q| Expansion::Quantise {
                    scale: q.scale,
                    zero_point: q.zero_point.into(),
                    to: u8::datum_type(),
                })
            }
        } else {
            node.op_as::<DequantizeLinearF32>()
                .map(|d| Expansion::Dequantise { scale: d.scale, zero_point: d.zero_point })
        };
        if let Some(expansion) = expansion {
            let patch = expansion.patch(&model, node)?;
            patch.apply(&mut model)?;
        }
    }
    model.into_compact()
}

/// One quantisation node and the element-wise ops it computes.
enum Expansion {
    /// f32 → `to`: `saturate(round_half_to_even(x · scale) + zero_point)` (`scale` is 1/Δ).
    Quantise { scale: f32, zero_point: i32, to: DatumType },
    /// integer → f32: `(x − zero_point) · scale`.
    Dequantise { scale: f32, zero_point: i32 },
}

impl Expansion {
    /// The patch that replaces `node` by the expansion.
    fn patch(&self, model: &TypedModel, node: &TypedNode) -> TractResult<TypedModelPatch> {
        use tract_onnx::tract_core::ops::cast::cast;
        use tract_onnx::tract_core::ops::math::{add, max, min, mul, round_half_to_even, sub};
        let mut patch = TypedModelPatch::default();
        let name = &node.name;
        let input = patch.tap_model(model, node.inputs[0])?;
        let rank = model.outlet_fact(node.inputs[0])?.rank();
        let constant = |patch: &mut TypedModelPatch, suffix: &str, value: f32| {
            patch.add_const(format!("{name}.{suffix}"), tensor0(value).broadcast_into_rank(rank)?)
        };
        let output = match *self {
            Expansion::Quantise { scale, zero_point, to } => {
                let (lo, hi) = if to == i8::datum_type() { (-128.0, 127.0) } else { (0.0, 255.0) };
                let scale = constant(&mut patch, "scale", scale)?;
                let zero_point = constant(&mut patch, "zero_point", zero_point as f32)?;
                let (lo, hi) = (constant(&mut patch, "lo", lo)?, constant(&mut patch, "hi", hi)?);
                let mut wire = patch.wire_node(format!("{name}.scaled"), mul(), &[input, scale])?;
                wire = patch.wire_node(format!("{name}.round"), round_half_to_even(), &wire)?;
                wire = patch.wire_node(format!("{name}.shift"), add(), &[wire[0], zero_point])?;
                wire = patch.wire_node(format!("{name}.low"), max(), &[wire[0], lo])?;
                wire = patch.wire_node(format!("{name}.high"), min(), &[wire[0], hi])?;
                patch.wire_node(format!("{name}.cast"), cast(to), &wire)?
            }
            Expansion::Dequantise { scale, zero_point } => {
                let scale = constant(&mut patch, "scale", scale)?;
                let zero_point = constant(&mut patch, "zero_point", zero_point as f32)?;
                let mut wire = patch.wire_node(format!("{name}.float"), cast(f32::datum_type()), &[input])?;
                wire = patch.wire_node(format!("{name}.shift"), sub(), &[wire[0], zero_point])?;
                patch.wire_node(format!("{name}.scaled"), mul(), &[wire[0], scale])?
            }
        };
        patch.shunt_outside(model, OutletId::new(node.id, 0), output[0])?;
        Ok(patch)
    }
}

/// Largest |p_onnx − p_nnef| over `planes` between the bundle's two translations; over
/// [`MAX_DIFFERENCE`] is an error.
pub fn agreement(bundle: &Bundle, planes: &[Vec<f32>]) -> Result<f32> {
    let onnx = Pipeline::load_graphs(bundle.clone(), Threads(1), GraphFormat::Onnx)?;
    let nnef = Pipeline::load_graphs(bundle.clone(), Threads(1), GraphFormat::Nnef)?;
    let mut worst = 0.0f32;
    for plane in planes {
        let (a, b) = (onnx.infer_plane(plane)?, nnef.infer_plane(plane)?);
        worst = worst.max(largest_difference(&a.probabilities, &b.probabilities));
    }
    if worst > MAX_DIFFERENCE {
        bail!(
            "the NNEF graphs of {} disagree with its ONNX graphs by {worst} in probability (allowed \
             {MAX_DIFFERENCE}); the translation is wrong, do not ship this bundle",
            bundle.dir.display()
        );
    }
    Ok(worst)
}

/// The bundle's pipeline for host tools: its NNEF graphs (what the edge runs) or, in a format-3
/// bundle, its ONNX graphs.
pub fn load_preferred(bundle: Bundle) -> Result<Pipeline> {
    let format = GraphFormat::preferred(&bundle.card);
    Ok(Pipeline::load_graphs(bundle, Threads(1), format)?)
}

/// What `cdnet nnef` did to a bundle.
#[derive(Debug, Clone)]
pub struct NnefReport {
    /// The upgraded bundle.
    pub bundle: Bundle,
    /// How many composed ReLU6 its ONNX graphs had, now `Clip` ([`clip_relu6`]).
    pub relu6_rewritten: usize,
    /// [`agreement`] on phantom frames.
    pub max_difference: f32,
    /// Whether a signature of the old card was removed.
    pub signature_removed: bool,
}

/// `cdnet nnef`: brings a verified bundle's graphs up to this build. A ReLU6 that an earlier export
/// wrote composed becomes `Clip` in its ONNX graphs ([`clip_relu6`]); the NNEF graphs are
/// translated by this build's tract (the upgrade of a format-3 bundle, or a new translation); the
/// card is rewritten and the two translations checked to agree on phantom frames. The card
/// changes, so a signature is removed (sign the bundle again).
pub fn add_to_bundle(dir: &Path) -> Result<NnefReport> {
    let mut card = Bundle::open(dir)?.card;
    let signed = dir.join(cdnet_shared::signature::SIGNATURE_FILE).exists();
    let relu6_rewritten = clip_relu6(dir, &mut card)?;
    translate_graphs(dir, &mut card)?;
    let mut files: Vec<String> = card.files.keys().cloned().collect();
    files.extend(card.graph_files().into_iter().filter(|file| !card.files.contains_key(file)));
    let names: Vec<&str> = files.iter().map(String::as_str).collect();
    Bundle::write_card(dir, &mut card, &names)?;
    let bundle = Bundle::open(dir)?;
    let max_difference = agreement(&bundle, &phantom_planes(&bundle.card.preprocess, 8)?)?;
    Ok(NnefReport { bundle, relu6_rewritten, max_difference, signature_removed: signed })
}

/// Rewrites the composed ReLU6 of a bundle's ONNX graphs as `Clip` ([`Graph::fuse_relu6`]; exports
/// before it wrote `Relu(x) − Relu(x − 6)`, which costs tract two passes over every expanded
/// feature map) and records the graphs' new operator counts on the card. Returns how many.
fn clip_relu6(dir: &Path, card: &mut ModelCard) -> Result<usize> {
    let mut total = 0;
    for (file, ops) in [(card.backbone.clone(), "backbone_ops"), (card.head.clone(), "head_ops")] {
        let path = dir.join(&file);
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let mut graph = Graph::decode(&bytes).with_context(|| format!("{} is not an ONNX graph", path.display()))?;
        let rewritten = graph.fuse_relu6().with_context(|| format!("cannot rewrite {}", path.display()))?;
        if rewritten > 0 {
            write_atomically(&path, &graph.encode())?;
            card.export[ops] = serde_json::json!(graph.op_counts());
            total += rewritten;
        }
    }
    if total > 0 {
        card.export["relu6_as_clip"] = serde_json::json!(format!(
            "{total} composed ReLU6 rewritten as Clip by {} (identical for inputs up to 12)",
            concat!("cdnet nnef ", env!("CARGO_PKG_VERSION"))
        ));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cdnet nnef`'s first step on a bundle whose backbone has one composed ReLU6 (and a head
    /// without): the graph file is rewritten, the card records the new operator counts and the
    /// rewrite, and a second run finds nothing left to do.
    #[test]
    fn clip_relu6_rewrites_the_graph_file_and_records_it_on_the_card() {
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/demo-phantom/model.json");
        let mut card: ModelCard = serde_json::from_slice(&std::fs::read(shipped).unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(&card.backbone), super::super::onnx::tests::composed().encode()).unwrap();
        let mut head = super::super::onnx::tests::composed();
        head.fuse_relu6().unwrap();
        std::fs::write(dir.path().join(&card.head), head.encode()).unwrap();
        let head_before = std::fs::read(dir.path().join(&card.head)).unwrap();
        let head_ops = card.export["head_ops"].clone();

        assert_eq!(clip_relu6(dir.path(), &mut card).unwrap(), 1);
        let written = Graph::decode(&std::fs::read(dir.path().join(&card.backbone)).unwrap()).unwrap();
        assert_eq!(written.op_counts().get("Clip"), Some(&1));
        assert_eq!(card.export["backbone_ops"]["Clip"], 1);
        assert_eq!(card.export["head_ops"], head_ops, "an unchanged graph keeps its counts");
        assert_eq!(std::fs::read(dir.path().join(&card.head)).unwrap(), head_before, "and its bytes");
        assert!(card.export["relu6_as_clip"].as_str().is_some_and(|s| s.starts_with("1 composed ReLU6")));
        assert_eq!(clip_relu6(dir.path(), &mut card).unwrap(), 0);
    }
}
