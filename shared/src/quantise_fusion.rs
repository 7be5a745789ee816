//! The int8 bundle's quantise steps, one operation again at load time.
//!
//! tract-nnef has no serialiser for tract's fused `QuantizeLinearI8`, so the exporter
//! (`host/src/export/nnef.rs`, `expand_quantisation`) writes each one as the element-wise ops it
//! computes: `cast_i8(min(max(round_half_to_even(x · scale) [+ zero_point], -128), 127))`. Run as
//! written, that is four or five passes over every quantised activation, ahead of each int8
//! convolution (field model: 0.3 ms of a 4.6 ms backbone pass at one thread). This finds each such
//! chain in a loaded graph and puts back the single operation it expands, which computes the same
//! values (tract's `quantize_linear_f32_i8`: the same rounding, shift and clamp, in one pass).
//! Put back before codegen, where a quantise step follows a channel-last depthwise conv (the
//! projection after each depthwise layer), tract's codegen then takes it into the conv, which
//! writes the i8 map directly (vendored tract-core, `docs/upstream/tract-core-depthwise-quantize.md`).
//! The dequantise side (`cast_f32`, then the scale) needs nothing here: tract's codegen runs the cast
//! as the first step of the element-wise chain after it, chunk by chunk in cache (vendored
//! tract-core, `docs/upstream/tract-core-dequantise-chain.md`).

use std::format;
use tract_nnef::internal::*;
use tract_nnef::tract_core::ops::binary::{BinMiniOp, TypedBinOp};
use tract_nnef::tract_core::ops::cast::Cast;
use tract_nnef::tract_core::ops::element_wise::ElementWiseOp;
use tract_nnef::tract_core::ops::math::{Add, Max, Min, Mul, RoundHalfToEven};
use tract_nnef::tract_core::ops::quant::quantize_linear_i8;

/// `model` with every expanded i8 quantise chain replaced by one `QuantizeLinearI8`, and how many
/// were replaced. Chains whose intermediate values are used elsewhere are left as they are.
pub fn fuse_quantise_chains(mut model: TypedModel) -> TractResult<(TypedModel, usize)> {
    let mut fused = 0;
    for id in model.eval_order()? {
        let Some(chain) = QuantiseChain::ending_at(&model, id)? else { continue };
        let mut patch = TypedModelPatch::default();
        let input = patch.tap_model(&model, chain.input)?;
        let op = quantize_linear_i8(chain.scale, chain.zero_point);
        let fused_wire = patch.wire_node(format!("{}.fused", model.node(id).name), op, &[input])?[0];
        patch.shunt_outside(&model, OutletId::new(id, 0), fused_wire)?;
        patch.apply(&mut model)?;
        fused += 1;
    }
    Ok((model.into_compact()?, fused))
}

/// Matches one step of a chain at a node: the step's input and its constant.
type StepMatcher = fn(&TypedModel, usize) -> TractResult<Option<(OutletId, f32)>>;

/// An expanded quantise chain: where it starts and the parameters of the op it expands.
#[derive(Debug, PartialEq)]
struct QuantiseChain {
    input: OutletId,
    scale: f32,
    zero_point: i8,
}

impl QuantiseChain {
    /// The chain whose last step, an f32 → i8 cast, is node `cast`, if it is one.
    fn ending_at(model: &TypedModel, cast: usize) -> TractResult<Option<QuantiseChain>> {
        let node = model.node(cast);
        let is_i8_cast = node.op_as::<Cast>().is_some_and(|c| c.to == i8::datum_type());
        if !is_i8_cast || model.outlet_fact(node.inputs[0])?.datum_type != f32::datum_type() {
            return Ok(None);
        }
        let step =
            |outlet: OutletId, op: StepMatcher| sole_producer(model, outlet).map_or(Ok(None), |id| op(model, id));
        let Some((low, 127.0)) = step(node.inputs[0], binop_by_constant::<Min>)? else { return Ok(None) };
        let Some((mut rounded, -128.0)) = step(low, binop_by_constant::<Max>)? else { return Ok(None) };
        let mut zero_point = 0.0;
        if let Some((unshifted, shift)) = step(rounded, binop_by_constant::<Add>)? {
            (rounded, zero_point) = (unshifted, shift);
        }
        if zero_point.fract() != 0.0 || !(-128.0..=127.0).contains(&zero_point) {
            return Ok(None);
        }
        let Some(round) = sole_producer(model, rounded).map(|id| model.node(id)) else { return Ok(None) };
        let is_round =
            round.op_as::<ElementWiseOp>().is_some_and(|op| op.0.downcast_ref::<RoundHalfToEven>().is_some());
        if !is_round {
            return Ok(None);
        }
        // No scaling step where tract folded it away: a scale of 1 (between two convolutions with
        // one scale, the dequantise and quantise multiplications cancel).
        let (input, scale) = step(round.inputs[0], binop_by_constant::<Mul>)?.unwrap_or((round.inputs[0], 1.0));
        Ok(Some(QuantiseChain { input, scale, zero_point: zero_point as i8 }))
    }
}

/// The node computing `outlet` when that node has one output, used by nothing else and not a
/// model output (so that replacing the chain removes it).
fn sole_producer(model: &TypedModel, outlet: OutletId) -> Option<usize> {
    let node = model.node(outlet.node);
    let single_use = node.outputs.len() == 1 && model.outlet_successors(outlet).len() == 1;
    let is_output = model.output_outlets().is_ok_and(|outputs| outputs.contains(&outlet));
    (single_use && !is_output).then_some(outlet.node)
}

/// For node `id` computing `op(x, c)` with `c` a one-element f32 constant: `x` and `c`.
fn binop_by_constant<Op: BinMiniOp>(model: &TypedModel, id: usize) -> TractResult<Option<(OutletId, f32)>> {
    let node = model.node(id);
    let Some(binop) = node.op_as::<TypedBinOp>() else { return Ok(None) };
    if binop.0.downcast_ref::<Op>().is_none() || node.inputs.len() != 2 {
        return Ok(None);
    }
    let constant = model.outlet_fact(node.inputs[1])?.konst.clone();
    let Some(constant) = constant.filter(|c| c.len() == 1 && c.datum_type() == f32::datum_type()) else {
        return Ok(None);
    };
    Ok(Some((node.inputs[0], constant.cast_to_scalar::<f32>()?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::vec;
    use std::vec::Vec;

    fn i8_casts(model: &TypedModel) -> usize {
        model.nodes().iter().filter(|n| n.op_as::<Cast>().is_some_and(|c| c.to == i8::datum_type())).count()
    }

    fn run(model: TypedModel, input: &Tensor) -> Tensor {
        let plan = model.into_optimized().unwrap().into_runnable().unwrap();
        plan.run(tvec!(input.clone().into_tvalue())).unwrap().remove(0).into_tensor()
    }

    /// The shipped int8 bundle's backbone: every expanded quantise chain fuses, and the fused
    /// graph answers bit for bit as the expanded one.
    #[test]
    fn the_int8_bundles_quantise_chains_fuse_and_answer_alike() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/demo-phantom-int8/backbone.nnef.tar");
        let expanded = tract_nnef::nnef().model_for_path(&path).unwrap().into_decluttered().unwrap();
        let chains = i8_casts(&expanded);
        assert!(chains > 0, "{}: no quantise chain to fuse", path.display());
        let (fused, count) = fuse_quantise_chains(expanded.clone()).unwrap();
        assert_eq!((count, i8_casts(&fused)), (chains, 0));
        let shape: Vec<usize> = expanded.input_fact(0).unwrap().shape.as_concrete().unwrap().to_vec();
        let volume: usize = shape.iter().product();
        let values: Vec<f32> = (0..volume).map(|i| 2.0 * ((i as f32) * 0.0137).sin()).collect();
        let input = Tensor::from_shape(&shape, &values).unwrap();
        let (found, expected) = (run(fused, &input), run(expanded, &input));
        let bits = |t: &Tensor| -> Vec<u32> {
            t.try_as_plain_ram().unwrap().as_slice::<f32>().unwrap().iter().map(|v| v.to_bits()).collect()
        };
        assert_eq!(bits(&found), bits(&expected));
    }

    /// A chain whose rounded value is also used elsewhere stays as it is.
    #[test]
    fn a_chain_with_a_shared_step_is_left_alone() {
        use tract_nnef::tract_core::ops::math::{max, min, mul, round_half_to_even};
        let mut model = TypedModel::default();
        let x = model.add_source("x", f32::fact([4])).unwrap();
        let constant = |model: &mut TypedModel, name: &str, v: f32| model.add_const(name, tensor1(&[v])).unwrap();
        let (scale, lo, hi) =
            (constant(&mut model, "s", 3.0), constant(&mut model, "lo", -128.0), constant(&mut model, "hi", 127.0));
        let scaled = model.wire_node("scaled", mul(), &[x, scale]).unwrap();
        let rounded = model.wire_node("round", round_half_to_even(), &scaled).unwrap();
        let low = model.wire_node("low", max(), &[rounded[0], lo]).unwrap();
        let high = model.wire_node("high", min(), &[low[0], hi]).unwrap();
        let cast = model.wire_node("cast", tract_nnef::tract_core::ops::cast::cast(i8::datum_type()), &high).unwrap();
        model.select_output_outlets(&[cast[0], rounded[0]]).unwrap();
        let (kept, count) = fuse_quantise_chains(model.clone()).unwrap();
        assert_eq!((count, i8_casts(&kept)), (0, 1));
        // Used once, the same chain fuses.
        model.select_output_outlets(&cast).unwrap();
        assert_eq!(fuse_quantise_chains(model).unwrap().1, 1);
    }
}
