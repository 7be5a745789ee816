use crate::internal::*;
use crate::ops::cnn::Patch;
use crate::ops::cnn::patches::{Zone, ZoneScanner};
use crate::ops::nn::DataShape;
use num_traits::Zero;
use std::ops::Range;

/// Largest zone `process_zone_any` hands to the vectorised kernel; 9x9 is 81 taps and 11x11
/// is 121. The taps live in stack arrays of this size, two per call.
const MAX_VECTORISED_TAPS: usize = 128;

#[derive(Debug, Clone, new, Hash, PartialEq, Eq)]
pub struct DepthWise {
    patch: Patch,
    input_shape: DataShape,
    output_shape: DataShape,
    /// A `max(lo)` then `min(hi)` on every output, fused from the scalar `Max`/`Min` that follow
    /// (ReLU, ReLU6, clip): applied to each block of outputs while it is still in cache, instead
    /// of another pass over the whole map. f32 channel-last only.
    #[new(default)]
    clamp: Option<Clamp>,
    /// A `QuantizeLinearI8` fused from the op that follows (the quantise step ahead of an int8
    /// convolution): the output is i8, each block of outputs quantised from a scratch run while
    /// it is in cache, instead of an f32 map written whole and read again by another pass. f32
    /// channel-last only; applied after the clamp.
    #[new(default)]
    quantize: Option<OutputQuantize>,
}

/// The parameters of a fused `QuantizeLinearI8`, the scale as f32 bits (the op is hashed).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
struct OutputQuantize {
    scale: u32,
    zero_point: i8,
}

impl OutputQuantize {
    /// `values` quantised into `out`, as `QuantizeLinearI8` computes them.
    fn apply(&self, values: &[f32], out: &mut [i8]) {
        let scale = f32::from_bits(self.scale);
        crate::ops::quant::quantize_linear_f32_i8_slice(values, out, scale, self.zero_point as i32)
    }
}

/// Bounds of a fused clamp, as f32 bits (the op is hashed and compared).
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq)]
struct Clamp {
    lo: u32,
    hi: u32,
}

impl Clamp {
    fn bounds(&self) -> (f32, f32) {
        (f32::from_bits(self.lo), f32::from_bits(self.hi))
    }

    /// `max(x, lo)` then `min(x, hi)` on every value, the scalar `Max` and `Min` this replaces
    /// (a NaN becomes `lo`, as with `f32::max`), written as selects so they vectorise to one
    /// max and one min instruction.
    ///
    /// Compiled for the widest vectors the CPU has (the x86-64 baseline gives this loop four
    /// lanes, and it runs over every output of every clamped depthwise layer).
    #[inline]
    fn apply(&self, values: &mut [f32]) {
        let (lo, hi) = self.bounds();
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                // Safety: the CPU has the feature the function is compiled for.
                return unsafe { clamp_avx512(values, lo, hi) };
            }
            if std::is_x86_feature_detected!("avx2") {
                // Safety: as above.
                return unsafe { clamp_avx2(values, lo, hi) };
            }
        }
        clamp_loop(values, lo, hi)
    }

    /// This clamp followed by `max(c)` (`is_max`) or `min(c)`, where that is still one clamp:
    /// always for `min`, and for `max` while `c` does not exceed the upper bound.
    fn then(self, is_max: bool, c: f32) -> Option<Clamp> {
        let (lo, hi) = self.bounds();
        let (lo, hi) = if is_max { (lo.max(c), hi) } else { (lo, hi.min(c)) };
        (!is_max || c <= self.bounds().1).then_some(Clamp { lo: lo.to_bits(), hi: hi.to_bits() })
    }
}

#[inline(always)]
fn clamp_loop(values: &mut [f32], lo: f32, hi: f32) {
    for v in values {
        let x = if *v > lo { *v } else { lo };
        *v = if x < hi { x } else { hi };
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn clamp_avx512(values: &mut [f32], lo: f32, hi: f32) {
    clamp_loop(values, lo, hi)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn clamp_avx2(values: &mut [f32], lo: f32, hi: f32) {
    clamp_loop(values, lo, hi)
}

impl Op for DepthWise {
    fn name(&self) -> StaticName {
        "DepthWiseConv".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        let mut info = vec![format!("{:?}", self.patch)];
        if let Some(clamp) = self.clamp {
            info.push(format!("clamp: {:?}", clamp.bounds()));
        }
        if let Some(q) = self.quantize {
            let scale = f32::from_bits(q.scale);
            info.push(format!("quantize to i8: scale {scale} zero_point {}", q.zero_point));
        }
        Ok(info)
    }

    fn validation(&self) -> Validation {
        Validation::Rounding
    }

    op_as_typed_op!();
}

impl EvalOp for DepthWise {
    op_out_of_plan!();

    fn eval(&self, ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let outputs = self.eval_unclamped(ctx, inputs)?;
        match self.clamp {
            // the channel-last path clamps block by block, as it writes
            Some(clamp) if !self.input_shape.fmt.c_is_last() => {
                let mut output = outputs.into_iter().next().context("no output")?.into_tensor();
                output.to_plain_array_view_mut::<f32>()?.iter_mut().for_each(|v| {
                    clamp.apply(std::slice::from_mut(v));
                });
                Ok(tvec!(output.into_tvalue()))
            }
            _ => Ok(outputs),
        }
    }
}

impl DepthWise {
    fn eval_unclamped(
        &self,
        _ctx: &EvalContext,
        inputs: TVec<TValue>,
    ) -> TractResult<TVec<TValue>> {
        let dt = inputs[0].datum_type();
        #[cfg(target_arch = "aarch64")]
        if dt == f16::datum_type() && tract_linalg::arm64::has_fp16() {
            return unsafe {
                eval_t_aarch64fp16::<f16>(
                    self,
                    inputs,
                    |a, b| tract_linalg::arm64::add_f16(a, b),
                    |a, b| tract_linalg::arm64::mul_f16(a, b),
                )
            };
        }
        dispatch_floatlike!(Self::eval_gen(dt)(self, inputs))
    }
}

impl DepthWise {
    fn eval_gen<T: Datum + Copy + num_traits::Zero + ndarray::LinalgScalar>(
        &self,
        inputs: TVec<TValue>,
    ) -> TractResult<TVec<TValue>> {
        unsafe { eval_t_generic::<T>(self, inputs, |a, b| a + b, |a, b| a * b) }
    }

    fn zone_scanners(&self) -> Vec<ZoneScanner<'_>> {
        self.patch.zones.iter().map(|zone| ZoneScanner::new(zone, &self.patch)).collect()
    }
}

impl TypedOp for DepthWise {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        anyhow::ensure!(inputs.len() == 3);
        anyhow::ensure!(
            self.input_shape.c() == self.output_shape.c(),
            "DepthWiseConv must have same input and output channels"
        );
        anyhow::ensure!(
            self.input_shape.c().to_dim() == inputs[2].shape.volume(),
            "DepthWiseConv data has {} channels, bias has {}",
            self.input_shape.c(),
            inputs[2].shape.len()
        );
        let dt = if self.quantize.is_some() { i8::datum_type() } else { inputs[0].datum_type };
        Ok(tvec!(dt.fact(&self.output_shape.shape)))
    }

    fn cost(&self, inputs: &[&TypedFact]) -> TractResult<TVec<(Cost, TDim)>> {
        let [_input, kernel, _bias] = inputs else {
            bail!("Depthwise expects three inputs");
        };
        let n_output_points = self.patch.output_shape.iter().cloned().product::<usize>();
        Ok(tvec!((
            Cost::FMA(inputs[0].datum_type),
            kernel.shape.volume() * self.input_shape.n().unwrap_or(&1) * n_output_points
        )))
    }

    /// Takes in a following scalar `Max` or `Min` (one at a time: a ReLU6 is two fuses) on the
    /// f32 channel-last path.
    fn fuse(&self, model: &TypedModel, node: &TypedNode) -> TractResult<Option<TypedModelPatch>> {
        use crate::ops::binary::{OptBinByScalar, TypedBinOp};
        rule_if!(self.input_shape.fmt.c_is_last());
        rule_if!(node.outputs.len() == 1 && node.outputs[0].successors.len() == 1);
        rule_if!(model.outlet_fact(node.id.into())?.datum_type == f32::datum_type());
        rule_if!(!model.output_outlets()?.contains(&node.id.into()));
        let succ = model.node(node.outputs[0].successors[0].node);
        if let Some(patch) = self.fuse_quantize(model, node, succ)? {
            return Ok(Some(patch));
        }
        let binop = if let Some(op) = succ.op_as::<TypedBinOp>() {
            op.0.as_linalg_binop()
        } else if let Some(op) = succ.op_as::<OptBinByScalar>() {
            op.binop.as_linalg_binop()
        } else {
            None
        };
        let is_max = match binop {
            Some(tract_linalg::BinOp::Max) => true,
            Some(tract_linalg::BinOp::Min) => false,
            _ => return Ok(None),
        };
        rule_if!(succ.inputs.len() == 2);
        let other = succ.inputs[(succ.inputs[0].node == node.id) as usize];
        rule_if_some!(konst = model.outlet_fact(other)?.konst.clone());
        rule_if!(konst.len() == 1 && konst.datum_type() == f32::datum_type());
        rule_if!(
            model.outlet_fact(succ.id.into())?.shape == model.outlet_fact(node.id.into())?.shape
        );
        let c = konst.cast_to_scalar::<f32>()?;
        rule_if!(!c.is_nan());
        let open = Clamp { lo: f32::NEG_INFINITY.to_bits(), hi: f32::INFINITY.to_bits() };
        rule_if_some!(clamp = self.clamp.unwrap_or(open).then(is_max, c));
        let mut patch = TypedModelPatch::new(format!("fusing {succ}"));
        let inputs = patch.taps(model, &node.inputs)?;
        let op = DepthWise { clamp: Some(clamp), ..self.clone() };
        let output = patch.wire_node(&succ.name, op, &inputs)?;
        patch.shunt_outside(model, succ.id.into(), output[0])?;
        Ok(Some(patch))
    }

    as_op!();
}

impl DepthWise {
    /// Takes in `succ` when it is an f32 → i8 `QuantizeLinearI8` (after any clamp: a clamp
    /// following the quantise step is not this op's to take, and once quantised the output is no
    /// longer f32, so the clamp rule stops).
    fn fuse_quantize(
        &self,
        model: &TypedModel,
        node: &TypedNode,
        succ: &TypedNode,
    ) -> TractResult<Option<TypedModelPatch>> {
        use crate::ops::element_wise::ElementWiseOp;
        use crate::ops::quant::QuantizeLinearI8;
        rule_if_some!(op = succ.op_as::<ElementWiseOp>());
        rule_if_some!(q = op.0.downcast_ref::<QuantizeLinearI8>());
        rule_if!(model.outlet_fact(succ.id.into())?.datum_type == i8::datum_type());
        let quantize = OutputQuantize { scale: q.scale.to_bits(), zero_point: q.zero_point };
        let mut patch = TypedModelPatch::new(format!("fusing {succ}"));
        let inputs = patch.taps(model, &node.inputs)?;
        let op = DepthWise { quantize: Some(quantize), ..self.clone() };
        let output = patch.wire_node(&succ.name, op, &inputs)?;
        patch.shunt_outside(model, succ.id.into(), output[0])?;
        Ok(Some(patch))
    }
}

/// How a channel-last depthwise is shared over the executor's threads: one chunk per thread,
/// each a band of output rows (the first spatial axis) over all channels, or, on maps too short
/// to band evenly, a range of channels over all rows.
///
/// Rows first, because the 1x1 convolution before a depthwise splits its product over output
/// positions: banding the rows the same way leaves each thread reading mostly what it wrote,
/// where a channel split has each thread read half its input from the other core's cache (the
/// stride-2 80x80x96 layer after the widest expansion ran 1.7x slower on two threads than on
/// one). And one chunk a thread, not `par_chunks_mut`'s four: a chunk's walk over the zones costs
/// about the same whatever its width, so 16-channel chunks made every layer slower.
struct ChannelLastSplit {
    chunks: usize,
    by_rows: bool,
    rows: usize,
    channels: usize,
    /// Channels a chunk of a channel split takes: whole cache lines of them.
    chunk_channels: usize,
}

impl ChannelLastSplit {
    /// Shortest band of rows worth a chunk of its own.
    const MIN_BAND_ROWS: usize = 4;

    fn new(dw: &DepthWise, channels: usize, datum_size: usize) -> ChannelLastSplit {
        let rows = dw.output_shape.hw_dims().first().copied().unwrap_or(1);
        let threads = tract_linalg::multithread::current_tract_thread_count().max(1);
        let block = (64 / datum_size).max(16);
        let blocks = channels.div_ceil(block).max(1);
        let by_rows = rows >= threads * Self::MIN_BAND_ROWS;
        let chunks = if by_rows { threads } else { threads.min(blocks) };
        let chunk_channels = blocks.div_ceil(chunks) * block;
        ChannelLastSplit { chunks, by_rows, rows, channels, chunk_channels }
    }

    /// The channels and output rows of chunks `chunks`.
    fn chunk(&self, chunks: Range<usize>) -> (Range<usize>, Range<usize>) {
        if self.by_rows {
            let edge = |c: usize| c * self.rows / self.chunks;
            (0..self.channels, edge(chunks.start)..edge(chunks.end))
        } else {
            let edge = |c: usize| self.channels.min(c * self.chunk_channels);
            (edge(chunks.start)..edge(chunks.end), 0..self.rows)
        }
    }
}

/// The part of `zone` whose outputs lie in `rows` of the first spatial axis: the zone itself when
/// it lies inside them, `None` when it lies outside.
fn zone_in_rows<'z>(zone: &'z Zone, rows: &Range<usize>) -> Option<std::borrow::Cow<'z, Zone>> {
    let own = zone.output_ranges.first()?;
    let (start, end) = (own.start.max(rows.start), own.end.min(rows.end));
    if start >= end {
        return None;
    }
    if start == own.start && end == own.end {
        return Some(std::borrow::Cow::Borrowed(zone));
    }
    let mut band = zone.clone();
    band.output_ranges[0] = start..end;
    band.output_shape[0] = end - start;
    Some(std::borrow::Cow::Owned(band))
}

/// The outputs of one inner loop, `len` points of `width` values `stride` apart from `base`: one
/// slice when the points are contiguous (the chunk spans every channel), else one slice a point.
/// `f` gets each slice with the index of its first point.
///
/// # Safety
/// `base` must be valid for those `len` points.
unsafe fn output_runs<U>(
    base: *mut U,
    len: usize,
    width: usize,
    stride: isize,
    mut f: impl FnMut(usize, &mut [U]),
) {
    unsafe {
        if stride == width as isize {
            f(0, std::slice::from_raw_parts_mut(base, len * width));
        } else {
            for i in 0..len {
                f(i, std::slice::from_raw_parts_mut(base.offset(stride * i as isize), width));
            }
        }
    }
}

macro_rules! impl_eval {
    ($(#[$meta: meta])* $suffix: ident ) => {
        pastey::paste! {
            $(#[$meta])*
            unsafe fn [<eval_t_ $suffix>]<T: Datum + Copy + num_traits::Zero + ndarray::LinalgScalar>(
                dw: &DepthWise,
                inputs: TVec<TValue>,
                add: impl Fn(T, T) -> T + Copy + Send + Sync + 'static,
                mul: impl Fn(T, T) -> T + Copy + Send + Sync + 'static,
            ) -> TractResult<TVec<TValue>> {
                let (img, kernel, bias) = args_3!(inputs);
                // A fused quantise step (f32 channel-last only) makes the output i8.
                let quantize = dw.quantize.filter(|_| T::datum_type() == f32::datum_type());
                let mut output = unsafe {
                    match quantize {
                        Some(_) => Tensor::uninitialized::<i8>(&dw.output_shape.shape)?,
                        None => Tensor::uninitialized::<T>(&dw.output_shape.shape)?,
                    }
                };
                let iptr = img.as_ptr::<T>()?;
                let optr = unsafe { output.as_ptr_mut_unchecked::<T>() };
                let k_stride_i = kernel.strides()[1];
                let n = *dw.input_shape.n().unwrap_or(&1);
                let n_stride_i = *dw.input_shape.n_stride().unwrap_or(&0) as isize;
                let n_stride_o = *dw.output_shape.n_stride().unwrap_or(&0) as isize;
                let c_stride_i = *dw.input_shape.c_stride() as isize;
                let c_stride_o = *dw.output_shape.c_stride() as isize;
                let bias = bias.as_ptr::<T>()?;
                let kptr = kernel.as_ptr::<T>()?;
                let c = *dw.input_shape.c() as isize;
                if dw.input_shape.fmt.c_is_last() {
                    // Every output position holds all channels contiguously, so channel blocks
                    // are disjoint across the whole image: each chunk of blocks runs the full zone
                    // walk on its own channel range. A block spans at least one cache line.
                    let channels = *dw.input_shape.c();
                    let (i_base, k_base, b_base, o_base) =
                        (iptr as usize, kptr as usize, bias as usize, optr as usize);
                    let split = ChannelLastSplit::new(dw, channels, T::datum_type().size_of());
                    // The threshold weighs work, and each output sums the kernel's taps: a 5x5
                    // kernel on a 5x5x1152 map (28 800 outputs, 720 000 multiply-adds) is worth
                    // sharing, though its output alone is under the threshold.
                    let taps: usize = dw.patch.spec.kernel_shape.iter().product();
                    tract_linalg::multithread::par_chunks_mut(
                        &mut vec![(); split.chunks],
                        1,
                        output.len().saturating_mul(taps),
                        |first, slots| {
                            let (channel_range, rows) = split.chunk(first..first + slots.len());
                            unsafe {
                                [<eval_c_inner_ $suffix>](
                                    dw,
                                    n,
                                    n_stride_i,
                                    n_stride_o,
                                    k_stride_i,
                                    i_base as *const T,
                                    k_base as *const T,
                                    b_base as *const T,
                                    o_base as *mut T,
                                    add,
                                    mul,
                                    channel_range,
                                    rows,
                                )
                            };
                            Ok(())
                        },
                    )?;
                    return Ok(tvec!(output.into_tvalue()));
                }
                // The (n, c) planes are disjoint and each is contiguous, so when the output is
                // laid out that way the channels split across the executor with no other
                // change: every output element keeps the arithmetic it has serially, and the
                // value it has serially. Small planes stay on the inline path -- the
                // element threshold in `par_chunks_mut` is what decides, not this call site.
                let total = output.len();
                let planes = n * c as usize;
                let plane = if planes > 0 { total / planes } else { 0 };
                if plane == 0
                    || total % plane != 0
                    || *dw.output_shape.w_stride() != 1
                    || c_stride_o != plane as isize
                {
                    unsafe {
                        let mut scanners = dw.zone_scanners();
                        for n in 0..n as isize {
                            let iptr = iptr.offset(n_stride_i * n);
                            let optr = optr.offset(n_stride_o * n);
                            for scanner in &mut scanners {
                                [<process_zone_ $suffix>](
                                    scanner, c_stride_i, c_stride_o, k_stride_i, iptr, kptr, bias,
                                    optr, add, mul, 0, c,
                                )
                            }
                        }
                    }
                    return Ok(tvec!(output.into_tvalue()));
                }
                let i_base = iptr as usize;
                let k_base = kptr as usize;
                let b_base = bias as usize;
                let c_us = c as usize;
                tract_linalg::multithread::par_chunks_mut(
                    unsafe { output.as_slice_mut_unchecked::<T>() },
                    plane,
                    total,
                    |first, chunk| {
                        // `par_chunks_mut` calls the body inline, with the whole slice, when the
                        // executor is single-threaded (a one-thread pool included) or the work is
                        // under its element threshold. Keep the per-zone shape there: the channels
                        // loop inside it, so one `ZoneScanner` covers a whole zone rather than one
                        // channel of it -- the difference was a 63% tax on small planes, which is
                        // a third of the frame on the streaming models.
                        if first == 0 && chunk.len() == total {
                            let mut scanners = dw.zone_scanners();
                            unsafe {
                                for ni in 0..n as isize {
                                    let iptr = (i_base as *const T).offset(n_stride_i * ni);
                                    let optr = chunk.as_mut_ptr().offset(n_stride_o * ni);
                                    for scanner in &mut scanners {
                                        [<process_zone_ $suffix>](
                                            scanner,
                                            c_stride_i,
                                            c_stride_o,
                                            k_stride_i,
                                            iptr,
                                            k_base as *const T,
                                            b_base as *const T,
                                            optr,
                                            add,
                                            mul,
                                            0,
                                            c,
                                        )
                                    }
                                }
                            }
                            return Ok(());
                        }
                        let mut scanners = dw.zone_scanners();
                        for (ix, out) in chunk.chunks_mut(plane).enumerate() {
                            let row = first + ix;
                            let (ni, ci) = (row / c_us, row % c_us);
                            unsafe {
                                let iptr = (i_base as *const T)
                                    .offset(n_stride_i * ni as isize + c_stride_i * ci as isize);
                                let optr = out.as_mut_ptr();
                                for scanner in &mut scanners {
                                    [<process_zone_ $suffix>](
                                        scanner,
                                        0,
                                        0,
                                        k_stride_i,
                                        iptr,
                                        k_base as *const T,
                                        b_base as *const T,
                                        optr,
                                        add,
                                        mul,
                                        ci as isize,
                                        ci as isize + 1,
                                    )
                                }
                            }
                        }
                        Ok(())
                    },
                )?;
                Ok(tvec!(output.into_tvalue()))
            }

            /// Channel-last eval of channels `c0..c1`: the channel is the contiguous dim on both
            /// input and output, so one output position is a run of channel values and the tap
            /// offsets of `zone.values_offsets` already step over whole channel vectors. `kptr`
            /// is a `[1, HW, C]` kernel, `k_stride_i` (`C`) its per-tap stride.
            #[inline(never)]
            #[allow(clippy::too_many_arguments)]
            $(#[$meta])*
            unsafe fn [<eval_c_inner_ $suffix>]<T: Datum + Copy + Zero>(
                dw: &DepthWise,
                n: usize,
                n_stride_i: isize,
                n_stride_o: isize,
                k_stride_i: isize,
                iptr: *const T,
                kptr: *const T,
                bias: *const T,
                optr: *mut T,
                add: impl Fn(T, T) -> T + Copy + 'static,
                mul: impl Fn(T, T) -> T + Copy + 'static,
                channel_range: std::ops::Range<usize>,
                rows: std::ops::Range<usize>,
                ) { unsafe {
                let (c0, c1) = (channel_range.start, channel_range.end);
                let ker = if T::datum_type() == f32::datum_type() {
                    tract_linalg::routines::depthwise_c_f32()
                } else {
                    None
                };
                // With a fused quantise step the output is i8 (`optr` is its base): each inner
                // loop's f32 outputs go to a scratch run, are clamped and quantised from there.
                let quantize = dw.quantize.filter(|_| T::datum_type() == f32::datum_type());
                let qptr = (optr as *mut i8).add(c0);
                let width = c1 - c0;
                let longest_run = dw.output_shape.hw_dims().last().copied().unwrap_or(1);
                let mut scratch: Vec<T> =
                    if quantize.is_some() { vec![T::zero(); longest_run * width] } else { vec![] };
                let (iptr, kptr, bias, optr) =
                    (iptr.add(c0), kptr.add(c0), bias.add(c0), optr.add(c0));
                for ni in 0..n as isize {
                    let iptr = iptr.offset(n_stride_i * ni);
                    let optr = optr.offset(n_stride_o * ni);
                    let qptr = qptr.offset(n_stride_o * ni);
                    for zone in &dw.patch.zones {
                        let Some(zone) = zone_in_rows(zone, &rows) else { continue };
                        let zone = &*zone;
                        let tap_indices: TVec<usize> =
                            zone.values_offsets.iter().map(|pair| pair.0).collect();
                        let offsets: TVec<isize> =
                            zone.values_offsets.iter().map(|pair| pair.1).collect();
                        let mut visitor = ZoneScanner::new(zone, &dw.patch);
                        while !visitor.done {
                            let iptr = iptr.offset(visitor.input_center_offset);
                            let (len, stride) =
                                (visitor.inner_loop_len, visitor.inner_loop_output_stride);
                            // Where this inner loop's outputs are computed, and their stride.
                            let (dst, dst_stride) = if quantize.is_some() {
                                debug_assert!(len <= longest_run);
                                (scratch.as_mut_ptr(), width as isize)
                            } else {
                                (optr.offset(visitor.output_offset), stride)
                            };
                            if let Some(ker) = ker {
                                ker(
                                    iptr as *const f32,
                                    dst as *mut f32,
                                    kptr as *const f32,
                                    &tap_indices,
                                    &offsets,
                                    bias as *const f32,
                                    width,
                                    k_stride_i as usize,
                                    len,
                                    visitor.inner_loop_input_full_stride,
                                    dst_stride,
                                );
                            } else {
                                // Taps outer, channels inner: every inner loop is contiguous.
                                for i in 0..len as isize {
                                    let iptr =
                                        iptr.offset(visitor.inner_loop_input_full_stride * i);
                                    let out = std::slice::from_raw_parts_mut(
                                        dst.offset(dst_stride * i),
                                        width,
                                    );
                                    out.copy_from_slice(std::slice::from_raw_parts(bias, width));
                                    for (&kix, &off) in tap_indices.iter().zip(&offsets) {
                                        let k = std::slice::from_raw_parts(
                                            kptr.offset(k_stride_i * kix as isize),
                                            width,
                                        );
                                        let x = std::slice::from_raw_parts(iptr.offset(off), width);
                                        for c in 0..width {
                                            out[c] = add(out[c], mul(k[c], x[c]));
                                        }
                                    }
                                }
                            }
                            if let Some(clamp) = dw.clamp.filter(|_| T::datum_type() == f32::datum_type()) {
                                output_runs(dst as *mut f32, len, width, dst_stride, |_, run| {
                                    clamp.apply(run)
                                });
                            }
                            if let Some(quantize) = quantize {
                                // The scratch run holds the points contiguously.
                                let run = dst as *const f32;
                                let run = std::slice::from_raw_parts(run, len * width);
                                let qout = qptr.offset(visitor.output_offset);
                                output_runs(qout, len, width, stride, |first, out| {
                                    quantize.apply(&run[first * width..][..out.len()], out)
                                });
                            }
                            visitor.next_non_inner_axis()
                        }
                    }
                }
            }}

            #[inline(never)]
            #[allow(clippy::too_many_arguments)]
            $(#[$meta])*
            unsafe fn [<process_zone_ $suffix>]<T: Datum + Copy + Zero>(
                visitor: &mut ZoneScanner,
                c_stride_i: isize,
                c_stride_o: isize,
                k_stride_i: isize,
                iptr: *const T,
                kptr: *const T,
                bias: *const T,
                optr: *mut T,
                add: impl Fn(T, T) -> T + Copy + 'static,
                mul: impl Fn(T, T) -> T + Copy + 'static,
                c_start: isize,
                c_end: isize,
                ) { unsafe {
                /*
                   if zone.values_offsets.len() == 2 {
                   self.process_zone_n::<T, 2, 4>(
                   zone, c_stride_i, c_stride_o, k_stride_i, iptr, kptr, bias, optr,
                   )
                   } else if zone.values_offsets.len() == 3 {
                   dw.process_zone_n::<T, 3, 4>(
                   zone, c_stride_i, c_stride_o, k_stride_i, iptr, kptr, bias, optr,
                   )
                   } else */
                match visitor.zone.values_offsets.len() {
                    1 => [<process_zone_n_ $suffix>]::<T, 1, 4>(
                        visitor, c_stride_i, c_stride_o, k_stride_i, iptr, kptr, bias, optr, add,
                        mul, c_start, c_end,
                    ),
                    2 => [<process_zone_n_ $suffix>]::<T, 2, 4>(
                        visitor, c_stride_i, c_stride_o, k_stride_i, iptr, kptr, bias, optr, add,
                        mul, c_start, c_end,
                    ),
                    3 => [<process_zone_n_ $suffix>]::<T, 3, 4>(
                        visitor, c_stride_i, c_stride_o, k_stride_i, iptr, kptr, bias, optr, add,
                        mul, c_start, c_end,
                    ),
                    4 => [<process_zone_n_ $suffix>]::<T, 4, 4>(
                        visitor, c_stride_i, c_stride_o, k_stride_i, iptr, kptr, bias, optr, add,
                        mul, c_start, c_end,
                    ),
                    // Without a vectorised kernel the zone keeps the plain inline walk:
                    // routed through `process_zone_any` it runs measurably slower on wasm.
                    _ if T::datum_type() == f32::datum_type()
                        && tract_linalg::routines::depthwise_w_f32().is_some()
                        && c_stride_o != 1 =>
                    {
                        [<process_zone_any_ $suffix>](
                            visitor, c_stride_i, c_stride_o, k_stride_i, iptr, kptr, bias, optr,
                            add, mul, c_start, c_end,
                        )
                    }
                    // A call covering many channels amortises a fresh scanner. A single-channel
                    // call (the parallel path, one per plane) reuses the caller's allocation, but
                    // walks it as a local: through `&mut` the inner loop runs measurably slower.
                    _ if c_end - c_start > 1 => visitor.zone.visit_output(visitor.patch, |visitor| {
                        for c in c_start..c_end {
                            let iptr = iptr.offset(c_stride_i * c);
                            let optr = optr.offset(c_stride_o * c);
                            let kptr = kptr.offset(k_stride_i * c);
                            [<inner_loop_ $suffix>]::<T>(iptr, kptr, bias, optr, c, visitor, add, mul)
                        }
                    }),
                    _ => [<process_zone_one_channel_ $suffix>](
                        visitor, c_stride_i, c_stride_o, k_stride_i, iptr, kptr, bias, optr, add,
                        mul, c_start,
                    ),
                }
            }}

            /// One channel of a generic (more than four taps) zone, the parallel path's per-plane
            /// call. The caller's scanner is walked as a local, its buffer moved out and back:
            /// through `&mut` the inner loop runs measurably slower.
            #[inline(never)]
            #[allow(clippy::too_many_arguments)]
            $(#[$meta])*
            unsafe fn [<process_zone_one_channel_ $suffix>]<T: Datum + Copy + Zero>(
                visitor: &mut ZoneScanner,
                c_stride_i: isize,
                c_stride_o: isize,
                k_stride_i: isize,
                iptr: *const T,
                kptr: *const T,
                bias: *const T,
                optr: *mut T,
                add: impl Fn(T, T) -> T + Copy + 'static,
                mul: impl Fn(T, T) -> T + Copy + 'static,
                c: isize,
                ) { unsafe {
                let mut local = ZoneScanner {
                    output_coords: std::mem::take(&mut visitor.output_coords),
                    inner_loop_output_range: visitor.inner_loop_output_range.clone(),
                    ..*visitor
                };
                local.reset();
                while !local.done() {
                    let iptr = iptr.offset(c_stride_i * c);
                    let optr = optr.offset(c_stride_o * c);
                    let kptr = kptr.offset(k_stride_i * c);
                    [<inner_loop_ $suffix>]::<T>(iptr, kptr, bias, optr, c, &local, add, mul);
                    local.next();
                }
                visitor.output_coords = local.output_coords;
            }}

            #[inline(never)]
            #[allow(clippy::too_many_arguments)]
            $(#[$meta])*
            unsafe fn [<process_zone_n_ $suffix>]<T: Datum + Copy + Zero, const N: usize, const UNROLL: usize>(
                visitor: &mut ZoneScanner,
                c_stride_i: isize,
                c_stride_o: isize,
                k_stride_i: isize,
                iptr: *const T,
                kptr: *const T,
                bias: *const T,
                optr: *mut T,
                add: impl Fn(T, T) -> T,
                mul: impl Fn(T, T) -> T,
                c_start: isize,
                c_end: isize,
                ) { unsafe {
                let zone = visitor.zone;
                let mut ioffset = [0isize; N];
                for i in 0..N {
                    ioffset[i] = zone.values_offsets[i].1;
                }
                let mut k = [T::zero(); N];
                let ker = if T::datum_type() == f32::datum_type() {
                    tract_linalg::routines::depthwise_w_f32()
                } else {
                    None
                };
                for c in c_start..c_end {
                    visitor.reset();
                    let iptr = iptr.offset(c_stride_i * c);
                    let optr = optr.offset(c_stride_o * c);
                    for n in 0..N {
                        k[n] = *kptr.offset(k_stride_i * c).add(zone.values_offsets[n].0);
                    }
                    let bias = *bias.offset(c);
                    while !visitor.done {
                        let iptr = iptr.offset(visitor.input_center_offset);
                        let optr = optr.offset(visitor.output_offset);
                        if let Some(ker) = ker
                            && visitor.inner_loop_output_stride == 1
                            && visitor.inner_loop_input_full_stride >= 1
                        {
                            let k_f32 = *(&k as *const [T; N] as *const [f32; N]);
                            ker(
                                iptr as *const f32,
                                optr as *mut f32,
                                &k_f32,
                                &ioffset,
                                *(&bias as *const T as *const f32),
                                visitor.inner_loop_len,
                                visitor.inner_loop_input_full_stride,
                            );
                            visitor.next_non_inner_axis();
                            continue;
                        }
                        let mut i = 0isize;
                        while i + (UNROLL as isize) < visitor.inner_loop_len as isize {
                            let iptr = iptr.offset(visitor.inner_loop_input_full_stride * i);
                            let optr = optr.offset(visitor.inner_loop_output_stride * i);
                            let mut iptrs = [std::ptr::null(); UNROLL];
                            for u in 0..UNROLL {
                                iptrs[u] = iptr.offset(visitor.inner_loop_input_full_stride * u as isize);
                            }
                            let mut optrs = [std::ptr::null_mut(); UNROLL];
                            for u in 0..UNROLL {
                                optrs[u] = optr.offset(visitor.inner_loop_output_stride * u as isize);
                            }
                            let mut is = [[T::zero(); N]; UNROLL];
                            for u in 0..UNROLL {
                                for n in 0..N {
                                    is[u][n] = *iptrs[u].offset(ioffset[n]);
                                }
                            }
                            let mut ps = [[T::zero(); N]; UNROLL];
                            for u in 0..UNROLL {
                                for n in 0..N {
                                    ps[u][n] = mul(is[u][n], k[n]);
                                }
                            }
                            for u in 0..UNROLL {
                                let mut sum = bias;
                                for n in 0..N {
                                    sum = add(sum, ps[u][n]);
                                }
                                *optrs[u] = sum;
                            }
                            i += UNROLL as isize;
                        }
                        while i < visitor.inner_loop_len as isize {
                            let iptr = iptr.offset(visitor.inner_loop_input_full_stride * i);
                            let optr = optr.offset(visitor.inner_loop_output_stride * i);
                            let mut is = [T::zero(); N];
                            for n in 0..N {
                                is[n] = *iptr.offset(ioffset[n]);
                            }
                            let mut p = [T::zero(); N];
                            for n in 0..N {
                                p[n] = mul(is[n], k[n]);
                            }
                            let mut sum = bias;
                            for n in 0..N {
                                sum = add(sum, p[n]);
                            }
                            *optr = sum;
                            i += 1;
                        }
                        visitor.next_non_inner_axis()
                    }
                }
            }}

            #[inline(never)]
            #[allow(clippy::too_many_arguments)]
            $(#[$meta])*
            unsafe fn [<process_zone_any_ $suffix>]<T: Datum + Copy + Zero>(
                scanner: &mut ZoneScanner,
                c_stride_i: isize,
                c_stride_o: isize,
                k_stride_i: isize,
                iptr: *const T,
                kptr: *const T,
                bias: *const T,
                optr: *mut T,
                add: impl Fn(T, T) -> T + Copy,
                mul: impl Fn(T, T) -> T + Copy,
                c_start: isize,
                c_end: isize,
                ) { unsafe {
                // A zone whose tap count the const-generic paths cannot name -- which is every
                // 3x3 and 5x5 convolution, at nine and twenty-five taps -- still walks the same
                // inner loop, so hand it the whole tap list. The kernel takes the count at
                // runtime; it was the compile-time count that kept this on the scalar path.
                let ker = if T::datum_type() == f32::datum_type() {
                    tract_linalg::routines::depthwise_w_f32()
                } else {
                    None
                };
                let zone = scanner.zone;
                let taps = zone.values_offsets.len();
                let Some(ker) = ker.filter(|_| taps <= MAX_VECTORISED_TAPS) else {
                    zone.visit_output(scanner.patch, |visitor| {
                        for c in c_start..c_end {
                            let iptr = iptr.offset(c_stride_i * c);
                            let optr = optr.offset(c_stride_o * c);
                            let kptr = kptr.offset(k_stride_i * c);
                            [<inner_loop_ $suffix>]::<T>(iptr, kptr, bias, optr, c, visitor, add, mul)
                        }
                    });
                    return;
                };
                let mut k = [T::zero(); MAX_VECTORISED_TAPS];
                let mut ioffset = [0isize; MAX_VECTORISED_TAPS];
                for (ix, (_, offset)) in zone.values_offsets.iter().enumerate() {
                    ioffset[ix] = *offset;
                }
                let ioffset = &ioffset[..taps];
                // Walked as a local, as in `process_zone`'s single-channel arm.
                let mut visitor = ZoneScanner {
                    output_coords: std::mem::take(&mut scanner.output_coords),
                    inner_loop_output_range: scanner.inner_loop_output_range.clone(),
                    ..*scanner
                };
                for c in c_start..c_end {
                    let iptr = iptr.offset(c_stride_i * c);
                    let optr = optr.offset(c_stride_o * c);
                    let kptr = kptr.offset(k_stride_i * c);
                    for (ix, (ker_ix, _)) in zone.values_offsets.iter().enumerate() {
                        k[ix] = *kptr.add(*ker_ix);
                    }
                    // `T` is f32 on the only path that gets here, checked above: the kernel reads
                    // the taps and the bias as f32, so re-read the buffers rather than convert.
                    let k_f32 = std::slice::from_raw_parts(k.as_ptr() as *const f32, taps);
                    let bias_t = *bias.offset(c);
                    let bias_f32 = *(bias as *const T as *const f32).offset(c);
                    visitor.reset();
                    while !visitor.done {
                        let iptr = iptr.offset(visitor.input_center_offset);
                        let optr = optr.offset(visitor.output_offset);
                        if visitor.inner_loop_output_stride == 1
                            && visitor.inner_loop_input_full_stride >= 1
                        {
                            ker(
                                iptr as *const f32,
                                optr as *mut f32,
                                k_f32,
                                ioffset,
                                bias_f32,
                                visitor.inner_loop_len,
                                visitor.inner_loop_input_full_stride,
                            );
                            visitor.next_non_inner_axis();
                            continue;
                        }
                        let mut i = 0isize;
                        while i < visitor.inner_loop_len as isize {
                            let iptr = iptr.offset(visitor.inner_loop_input_full_stride * i);
                            let optr = optr.offset(visitor.inner_loop_output_stride * i);
                            let mut sum = bias_t;
                            for n in 0..taps {
                                sum = add(sum, mul(k[n], *iptr.offset(ioffset[n])));
                            }
                            *optr = sum;
                            i += 1;
                        }
                        visitor.next_non_inner_axis()
                    }
                }
                scanner.output_coords = visitor.output_coords;
            }}

            #[inline(never)]
            #[allow(clippy::too_many_arguments)]
            $(#[$meta])*
            unsafe fn [<inner_loop_ $suffix>]<T: Datum + Copy>(
                iptr: *const T,
                kptr: *const T,
                bias: *const T,
                optr: *mut T,
                c: isize,
                visitor: &ZoneScanner,
                add: impl Fn(T, T) -> T,
                mul: impl Fn(T, T) -> T,
                ) { unsafe {
                let mut sum = *bias.offset(c);
                let mut iter = visitor.valid_offsets_ker_in();
                if iter.size_hint() == (3, Some(3)) {
                    let (ix, v) = iter.next().unwrap();
                    let k0 = *kptr.add(ix);
                    let i0 = *iptr.offset(v);
                    let (ix, v) = iter.next().unwrap();
                    let k1 = *kptr.add(ix);
                    let i1 = *iptr.offset(v);
                    let (ix, v) = iter.next().unwrap();
                    let k2 = *kptr.add(ix);
                    let i2 = *iptr.offset(v);
                    sum = add(add(add(sum, mul(k0, i0)), mul(k1, i1)), mul(k2, i2));
                } else {
                    for (ix, v) in iter {
                        let k = *kptr.add(ix);
                        let i = *iptr.offset(v);
                        sum = add(sum, mul(k, i));
                    }
                }
                let optr = optr.offset(visitor.output_offset);
                *optr = sum;
            }}
        }
    }
}

impl_eval!(generic);
impl_eval! {
#[target_feature(enable = "fp16")]
#[cfg(target_arch = "aarch64")]
aarch64fp16
}

//#[target_feature(enable = "fp16")] impl_eval!(aarch64fp16);

/* partial alternative impl that may be relevant when simd gets better */

/*
#[inline(never)]
unsafe fn process_zone_4_f32(
&self,
zone: &Zone,
c_stride_i: isize,
c_stride_o: isize,
k_stride_i: isize,
iptr: *const f32,
kptr: *const f32,
bias: *const f32,
optr: *mut f32,
) {
use std::simd::*;
let mut visitor = ZoneScanner::new(zone, &self.patch);
let ioffset0 = zone.values_offsets[0].1;
let ioffset1 = zone.values_offsets[1].1;
let ioffset2 = zone.values_offsets[2].1;
let ioffset3 = zone.values_offsets[3].1;
for c in 0..*self.input_shape.c() as isize {
visitor.reset();
let kptr = kptr.offset(k_stride_i * c);
let iptr = iptr.offset(c_stride_i * c);
let optr = optr.offset(c_stride_o * c);
let k0 = *kptr.offset(zone.values_offsets[0].0 as isize);
let k1 = *kptr.offset(zone.values_offsets[1].0 as isize);
let k2 = *kptr.offset(zone.values_offsets[2].0 as isize);
let k3 = *kptr.offset(zone.values_offsets[3].0 as isize);
let k0 = f32x4::splat(k0);
let k1 = f32x4::splat(k1);
let k2 = f32x4::splat(k2);
let k3 = f32x4::splat(k3);
let bias = f32x4::splat(*bias.offset(c));
while !visitor.done {
let iptr = iptr.offset(visitor.input_center_offset);
let optr = optr.offset(visitor.output_offset);
let mut i  = 0;
while i + 4 <
for i in 0..visitor.inner_loop_len as isize {
let iptr = iptr.offset(visitor.inner_loop_input_full_stride * i);
let optr = optr.offset(visitor.inner_loop_output_stride * i);
let i0 = *iptr.offset(ioffset0);
let i1 = *iptr.offset(ioffset1);
let i2 = *iptr.offset(ioffset2);
let i3 = *iptr.offset(ioffset3);
let i = f32x4::from_array([i0, i1, i2, i3]);
let p = (i * k).reduce_sum();
let sum = bias + p;
     *optr = sum
     }
     visitor.next_non_inner_axis()
     }
     }
     }
     */

/*
#[inline(never)]
unsafe fn process_zone_4_f32(
&self,
zone: &Zone,
c_stride_i: isize,
c_stride_o: isize,
k_stride_i: isize,
iptr: *const f32,
kptr: *const f32,
bias: *const f32,
optr: *mut f32,
) {
use std::simd::*;
let mut visitor = ZoneScanner::new(zone, &self.patch);
let ioffset0 = zone.values_offsets[0].1;
let ioffset1 = zone.values_offsets[1].1;
let ioffset2 = zone.values_offsets[2].1;
let ioffset3 = zone.values_offsets[3].1;
for c in 0..*self.input_shape.c() as isize {
visitor.reset();
let kptr = kptr.offset(k_stride_i * c);
let iptr = iptr.offset(c_stride_i * c);
let optr = optr.offset(c_stride_o * c);
let k0 = *kptr.offset(zone.values_offsets[0].0 as isize);
let k1 = *kptr.offset(zone.values_offsets[1].0 as isize);
let k2 = *kptr.offset(zone.values_offsets[2].0 as isize);
let k3 = *kptr.offset(zone.values_offsets[3].0 as isize);
let k = f32x4::from_array([k0, k1, k2, k3]);
let bias = *bias.offset(c);
while !visitor.done {
let iptr = iptr.offset(visitor.input_center_offset);
let optr = optr.offset(visitor.output_offset);
for i in 0..visitor.inner_loop_len as isize {
let iptr = iptr.offset(visitor.inner_loop_input_full_stride * i);
let optr = optr.offset(visitor.inner_loop_output_stride * i);
let i0 = *iptr.offset(ioffset0);
let i1 = *iptr.offset(ioffset1);
let i2 = *iptr.offset(ioffset2);
let i3 = *iptr.offset(ioffset3);
let i = f32x4::from_array([i0, i1, i2, i3]);
let p = (i * k).reduce_sum();
let sum = bias + p;
     *optr = sum
     }
     visitor.next_non_inner_axis()
     }
     }
     }
     */

/*
#[inline(never)]
unsafe fn process_zone_4<T: Datum + Copy + ndarray::LinalgScalar>(
&self,
zone: &Zone,
c_stride_i: isize,
c_stride_o: isize,
k_stride_i: isize,
iptr: *const T,
kptr: *const T,
bias: *const T,
optr: *mut T,
) {
let mut visitor = ZoneScanner::new(zone, &self.patch);
let ioffset0 = zone.values_offsets[0].1;
let ioffset1 = zone.values_offsets[1].1;
let ioffset2 = zone.values_offsets[2].1;
let ioffset3 = zone.values_offsets[3].1;
for c in 0..*self.input_shape.c() as isize {
visitor.reset();
let kptr = kptr.offset(k_stride_i * c);
let iptr = iptr.offset(c_stride_i * c);
let optr = optr.offset(c_stride_o * c);
let k0 = *kptr.offset(zone.values_offsets[0].0 as isize);
let k1 = *kptr.offset(zone.values_offsets[1].0 as isize);
let k2 = *kptr.offset(zone.values_offsets[2].0 as isize);
let k3 = *kptr.offset(zone.values_offsets[3].0 as isize);
let bias = *bias.offset(c);
while !visitor.done {
let iptr = iptr.offset(visitor.input_center_offset);
let optr = optr.offset(visitor.output_offset);
for i in 0..visitor.inner_loop_len as isize {
let iptr = iptr.offset(visitor.inner_loop_input_full_stride * i);
let optr = optr.offset(visitor.inner_loop_output_stride * i);
let i0 = *iptr.offset(ioffset0);
let i1 = *iptr.offset(ioffset1);
let i2 = *iptr.offset(ioffset2);
let i3 = *iptr.offset(ioffset3);
let p0 = i0 * k0;
let p1 = i1 * k1;
let p2 = i2 * k2;
let p3 = i3 * k3;
let sum = bias + p0 + p1 + p2 + p3;
     *optr = sum
     }
     visitor.next_non_inner_axis()
     }
     }
     }
     */

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::cnn::conv::{BlockedConv, Conv, KernelFormat};
    use crate::ops::cnn::{PaddingSpec, PoolSpec};
    use crate::ops::nn::DataFormat;

    #[allow(clippy::too_many_arguments)]
    fn run_dw(
        fmt: DataFormat,
        c: usize,
        h: usize,
        w: usize,
        kh: usize,
        kw: usize,
        pad: PaddingSpec,
        stride: (usize, usize),
    ) {
        run_dw_dt(f32::datum_type(), fmt, c, h, w, kh, kw, pad, stride)
    }

    #[allow(clippy::too_many_arguments)]
    fn run_dw_dt(
        dt: DatumType,
        fmt: DataFormat,
        c: usize,
        h: usize,
        w: usize,
        kh: usize,
        kw: usize,
        pad: PaddingSpec,
        stride: (usize, usize),
    ) {
        run_dw_batch(1, dt, fmt, c, h, w, kh, kw, pad, stride)
    }

    #[allow(clippy::too_many_arguments)]
    /// A channel-last f32 depthwise conv followed by `max(x, 0)` then `min(x, 6)` (ReLU6 as ONNX
    /// `Clip` arrives): the optimised model is one `DepthWise` with the clamp, and its output is
    /// bit for bit the optimised conv alone, clamped after (the decluttered model convolves in
    /// another order, so it is only close), on one thread and on two. Then the bounds' algebra of
    /// `Clamp::then`.
    #[test]
    fn relu6_fuses_into_channel_last_depthwise() {
        let (c, h, w) = (40, 7, 9);
        let x: Vec<f32> = (0..c * h * w).map(|i| ((i as f32 * 0.137).sin()) * 9.0).collect();
        let kernel: Vec<f32> = (0..c * 9).map(|i| ((i as f32 * 0.091).cos()) * 0.8).collect();
        let mut model = TypedModel::default();
        let xv = model.add_source("x", f32::fact([1, h, w, c])).unwrap();
        let kv = model.add_const("k", Tensor::from_shape(&[c, 1, 3, 3], &kernel).unwrap()).unwrap();
        let bv = model.add_const("b", Tensor::from_shape(&[c], &vec![0.5f32; c]).unwrap()).unwrap();
        let pool_spec = PoolSpec {
            data_format: DataFormat::NHWC,
            kernel_shape: tvec!(3, 3),
            padding: PaddingSpec::SameUpper,
            dilations: None,
            strides: None,
            input_channels: c,
            output_channels: c,
        };
        let conv = Conv { pool_spec, kernel_fmt: KernelFormat::OIHW, group: c, q_params: None };
        let y = model.wire_node("dw", conv, &[xv, kv, bv]).unwrap()[0];
        let conv_output = y;
        let zero = model.add_const("zero", tensor0(0f32)).unwrap();
        let six = model.add_const("six", tensor0(6f32)).unwrap();
        let zero =
            model.wire_node("zero.r", crate::ops::change_axes::AxisOp::Add(0), &[zero]).unwrap()[0];
        let six =
            model.wire_node("six.r", crate::ops::change_axes::AxisOp::Add(0), &[six]).unwrap()[0];
        let wire_rank4 = |model: &mut TypedModel, name: &str, v: OutletId| {
            (0..3).fold(v, |v, i| {
                model
                    .wire_node(format!("{name}.{i}"), crate::ops::change_axes::AxisOp::Add(0), &[v])
                    .unwrap()[0]
            })
        };
        let zero = wire_rank4(&mut model, "zero", zero);
        let six = wire_rank4(&mut model, "six", six);
        let y = model.wire_node("relu", crate::ops::math::max(), &[y, zero]).unwrap()[0];
        let y = model.wire_node("six_cap", crate::ops::math::min(), &[y, six]).unwrap();
        let mut conv_alone = model.clone();
        conv_alone.select_output_outlets(&[conv_output]).unwrap();
        model.select_output_outlets(&y).unwrap();
        let model = model.into_decluttered().unwrap();
        let input = tvec!(Tensor::from_shape(&[1, h, w, c], &x).unwrap().into_tvalue());
        let reference = model.clone().into_runnable().unwrap().run(input.clone()).unwrap();
        let conv_alone = conv_alone.into_decluttered().unwrap().into_optimized().unwrap();
        let mut expected = conv_alone.into_runnable().unwrap().run(input.clone()).unwrap()[0]
            .clone()
            .into_tensor();
        expected
            .to_plain_array_view_mut::<f32>()
            .unwrap()
            .iter_mut()
            .for_each(|v| *v = v.max(0.0).min(6.0));
        let optimised = model.into_optimized().unwrap();
        let ops: Vec<String> = optimised.nodes.iter().map(|n| n.op().name().to_string()).collect();
        let fused = optimised.nodes.iter().filter_map(|n| n.op_as::<DepthWise>()).next().unwrap();
        assert_eq!(fused.clamp.map(|c| c.bounds()), Some((0.0, 6.0)), "ops: {ops:?}");
        assert!(!ops.iter().any(|op| op.contains("Max") || op.contains("Min")), "ops: {ops:?}");
        let runnable = optimised.into_runnable().unwrap();
        // On two threads the 7-row map splits by channels: each output point's channels are then
        // clamped as their own run, where one thread clamps each row's points as one run.
        let pool = tract_linalg::multithread::Executor::multithread(2);
        let split = tract_linalg::multithread::multithread_tract_scope(pool, || {
            runnable.run(input.clone()).unwrap()
        });
        split[0].close_enough(&expected, Approximation::Exact).unwrap();
        let got = runnable.run(input).unwrap();
        got[0].close_enough(&expected, Approximation::Exact).unwrap();
        got[0].close_enough(&reference[0], Approximation::Approximate).unwrap();
        let values = got[0].to_plain_array_view::<f32>().unwrap();
        assert!(values.iter().any(|v| *v == 6.0) && values.iter().any(|v| *v == 0.0));

        let open = Clamp { lo: f32::NEG_INFINITY.to_bits(), hi: f32::INFINITY.to_bits() };
        let relu6 = open.then(true, 0.0).unwrap().then(false, 6.0).unwrap();
        assert_eq!(relu6.bounds(), (0.0, 6.0));
        // min then max with the max above the min's bound: a constant, not a clamp
        assert_eq!(open.then(false, 6.0).unwrap().then(true, 7.0), None);
        assert_eq!(relu6.then(false, -1.0).unwrap().bounds(), (0.0, -1.0));
    }

    /// A channel-last f32 depthwise conv, its ReLU6, then the quantise step of an int8 conv
    /// (`QuantizeLinearI8`): the optimised model is one `DepthWise` with the clamp and the
    /// quantise step, its i8 output bit for bit the f32 conv + ReLU6 quantised after, on one
    /// thread (whole rows of points at a time) and on two (the 7-row map then splits by
    /// channels), with and without a zero point.
    #[test]
    fn quantize_fuses_into_channel_last_depthwise() {
        let (c, h, w) = (40, 7, 9);
        let x: Vec<f32> = (0..c * h * w).map(|i| ((i as f32 * 0.137).sin()) * 9.0).collect();
        let kernel: Vec<f32> = (0..c * 9).map(|i| ((i as f32 * 0.091).cos()) * 0.8).collect();
        for (scale, zero_point) in [(21.1f32, 0i8), (17.3, -7)] {
            let mut model = TypedModel::default();
            let xv = model.add_source("x", f32::fact([1, h, w, c])).unwrap();
            let kernel = Tensor::from_shape(&[c, 1, 3, 3], &kernel).unwrap();
            let kv = model.add_const("k", kernel).unwrap();
            let bias = Tensor::from_shape(&[c], &vec![0.5f32; c]).unwrap();
            let bv = model.add_const("b", bias).unwrap();
            let pool_spec = PoolSpec {
                data_format: DataFormat::NHWC,
                kernel_shape: tvec!(3, 3),
                padding: PaddingSpec::SameUpper,
                dilations: None,
                strides: None,
                input_channels: c,
                output_channels: c,
            };
            let conv = Conv { pool_spec, kernel_fmt: KernelFormat::OIHW, group: c, q_params: None };
            let y = model.wire_node("dw", conv, &[xv, kv, bv]).unwrap()[0];
            let bound = |model: &mut TypedModel, name: &str, v: f32| {
                let k = model.add_const(name, tensor0(v)).unwrap();
                (0..4).fold(k, |k, i| {
                    let add = crate::ops::change_axes::AxisOp::Add(0);
                    model.wire_node(format!("{name}.{i}"), add, &[k]).unwrap()[0]
                })
            };
            let (zero, six) = (bound(&mut model, "zero", 0.0), bound(&mut model, "six", 6.0));
            let y = model.wire_node("relu", crate::ops::math::max(), &[y, zero]).unwrap()[0];
            let y = model.wire_node("six_cap", crate::ops::math::min(), &[y, six]).unwrap()[0];
            let mut float = model.clone();
            float.select_output_outlets(&[y]).unwrap();
            let q = crate::ops::quant::quantize_linear_i8(scale, zero_point);
            let yq = model.wire_node("quantize", q, &[y]).unwrap();
            model.select_output_outlets(&yq).unwrap();
            let input = tvec!(Tensor::from_shape(&[1, h, w, c], &x).unwrap().into_tvalue());
            let relu6 = float.into_optimized().unwrap().into_runnable().unwrap();
            let relu6 = relu6.run(input.clone()).unwrap()[0].clone().into_tensor();
            let relu6: Vec<f32> =
                relu6.to_plain_array_view::<f32>().unwrap().iter().copied().collect();
            let mut expected = vec![0i8; relu6.len()];
            let zp = zero_point as i32;
            crate::ops::quant::quantize_linear_f32_i8_slice(&relu6, &mut expected, scale, zp);
            let optimised = model.into_optimized().unwrap();
            let ops: Vec<String> =
                optimised.nodes.iter().map(|n| n.op().name().to_string()).collect();
            let fused =
                optimised.nodes.iter().filter_map(|n| n.op_as::<DepthWise>()).next().unwrap();
            assert!(fused.clamp.is_some() && fused.quantize.is_some(), "ops: {ops:?}");
            assert_eq!(ops.len(), 4, "ops: {ops:?}"); // source, kernel, bias, the depthwise
            let runnable = optimised.into_runnable().unwrap();
            let pool = tract_linalg::multithread::Executor::multithread(2);
            let split = tract_linalg::multithread::multithread_tract_scope(pool, || {
                runnable.run(input.clone()).unwrap()
            });
            let whole = runnable.run(input).unwrap();
            for got in [&whole[0], &split[0]] {
                assert_eq!(got.datum_type(), i8::datum_type());
                let got: Vec<i8> =
                    got.to_plain_array_view::<i8>().unwrap().iter().copied().collect();
                assert_eq!(got, expected);
            }
        }
    }

    fn run_dw_batch(
        n: usize,
        dt: DatumType,
        fmt: DataFormat,
        c: usize,
        h: usize,
        w: usize,
        kh: usize,
        kw: usize,
        pad: PaddingSpec,
        stride: (usize, usize),
    ) {
        let x: Vec<f32> = (0..n * c * h * w).map(|i| ((i as f32 * 0.137).sin()) * 0.7).collect();
        let kernel: Vec<f32> = (0..c * kh * kw).map(|i| ((i as f32 * 0.091).cos()) * 0.3).collect();
        let bias: Vec<f32> = (0..c).map(|i| (i as f32 * 0.05) - 0.1).collect();

        let c_last = fmt.c_is_last();
        let x_shape = if c_last { [n, h, w, c] } else { [n, c, h, w] };
        let mut model = TypedModel::default();
        let xv = model.add_source("x", dt.fact(x_shape)).unwrap();
        let k = Tensor::from_shape(&[c, 1, kh, kw], &kernel).unwrap();
        let kv = model.add_const("k", k.cast_to_dt(dt).unwrap().into_owned()).unwrap();
        let b = Tensor::from_shape(&[c], &bias).unwrap();
        let bv = model.add_const("b", b.cast_to_dt(dt).unwrap().into_owned()).unwrap();
        let pool_spec = PoolSpec {
            data_format: fmt,
            kernel_shape: tvec!(kh, kw),
            padding: pad.clone(),
            dilations: None,
            strides: Some(tvec!(stride.0, stride.1)),
            input_channels: c,
            output_channels: c,
        };
        let computed = pool_spec.computed_padding(&[h, w]);
        let conv = Conv { pool_spec, kernel_fmt: KernelFormat::OIHW, group: c, q_params: None };
        let out = model.wire_node("dw", conv, &[xv, kv, bv]).unwrap();
        model.select_output_outlets(&out).unwrap();
        let model = model.into_decluttered().unwrap().into_optimized().unwrap();
        if kw == 1 && model.nodes.iter().any(|node| node.op_as::<BlockedConv>().is_some()) {
            // `BlockedConv` claims kw=1 NCHW f32 wherever it is enabled -- by default on
            // wasm, opt-in elsewhere -- so this shape does not reach DepthWise there.
            // `blocked_conv_matches_reference` covers it.
            return;
        }
        assert!(
            model.nodes.iter().any(|node| node.op_as::<DepthWise>().is_some()),
            "expected DepthWiseConv, got {}",
            model.nodes.iter().map(|node| node.op().name()).collect::<Vec<_>>().join(",")
        );
        let runnable = model.into_runnable().unwrap();
        let input = Tensor::from_shape(&x_shape, &x).unwrap();
        let input = input.cast_to_dt(dt).unwrap().into_owned();
        let got = runnable.run(tvec![input.into_tvalue()]).unwrap();
        let got = got[0].cast_to::<f32>().unwrap().into_owned();
        let got = got.to_plain_array_view::<f32>().unwrap();
        let oshape = got.shape();
        let (oh, ow) = if c_last { (oshape[1], oshape[2]) } else { (oshape[2], oshape[3]) };
        let (ph, pw) = (computed[0].pad_before as isize, computed[1].pad_before as isize);
        let mut max_abs = 0f32;
        for b in 0..n {
            for oc in 0..c {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let mut acc = bias[oc];
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = oy as isize * stride.0 as isize + ky as isize - ph;
                                let ix = ox as isize * stride.1 as isize + kx as isize - pw;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                    continue;
                                }
                                let (iy, ix) = (iy as usize, ix as usize);
                                let xv = if c_last {
                                    x[(((b * h + iy) * w) + ix) * c + oc]
                                } else {
                                    x[(((b * c + oc) * h + iy) * w) + ix]
                                };
                                let kv = kernel[((oc * kh + ky) * kw) + kx];
                                acc += xv * kv;
                            }
                        }
                        let g = if c_last { got[[b, oy, ox, oc]] } else { got[[b, oc, oy, ox]] };
                        max_abs = max_abs.max((g - acc).abs());
                    }
                }
            }
        }
        // f16 accumulates every tap in f16, so its error grows with the tap count.
        let tolerance = if dt == f16::datum_type() { 3e-3 * (kh * kw) as f32 } else { 1e-5 };
        assert!(
            max_abs < tolerance,
            "DepthWise {dt:?} {fmt:?} mismatch c={c} {h}x{w} k={kh}x{kw} stride={stride:?} pad={pad:?}: max_abs={max_abs}"
        );
    }

    #[test]
    fn depthwise_multithreaded_matches_reference() {
        let pool = tract_linalg::multithread::Executor::multithread(4);
        tract_linalg::multithread::multithread_tract_scope(pool, || {
            run_dw(DataFormat::NCHW, 32, 64, 80, 3, 3, PaddingSpec::Valid, (1, 1));
            run_dw(DataFormat::NCHW, 32, 200, 24, 3, 3, PaddingSpec::SameUpper, (1, 1));
            run_dw(DataFormat::NCHW, 32, 70, 70, 5, 5, PaddingSpec::SameUpper, (1, 1));
            run_dw(DataFormat::NCHW, 20, 91, 91, 3, 3, PaddingSpec::SameUpper, (2, 2));
            run_dw(DataFormat::NCHW, 7, 130, 129, 3, 3, PaddingSpec::Valid, (1, 1));
            run_dw_batch(
                3,
                f32::datum_type(),
                DataFormat::NCHW,
                11,
                64,
                70,
                3,
                3,
                PaddingSpec::SameUpper,
                (1, 1),
            );
            run_dw_batch(
                2,
                f32::datum_type(),
                DataFormat::NCHW,
                5,
                120,
                100,
                5,
                5,
                PaddingSpec::Valid,
                (1, 1),
            );
        });
    }

    #[test]
    fn depthwise_contig_w_matches_reference() {
        // 48 kHz-like: NCHW, H=1, long W, kw=3. Inner loop is W.
        run_dw(DataFormat::NCHW, 16, 1, 64, 1, 3, PaddingSpec::Valid, (1, 1));
        run_dw(DataFormat::NCHW, 32, 1, 481, 1, 3, PaddingSpec::Valid, (1, 1));
        run_dw(DataFormat::NCHW, 8, 1, 17, 1, 3, PaddingSpec::SameUpper, (1, 1));
        // kw=1: taps a row apart, output still contiguous along W.
        run_dw(DataFormat::NCHW, 8, 12, 20, 3, 1, PaddingSpec::Valid, (1, 1));
        run_dw(DataFormat::NCHW, 4, 9, 9, 3, 3, PaddingSpec::Valid, (1, 1));
        // 5x5 / 5x1 / 3x5: tap counts past the compile-time paths, so the inner loop runs
        // through the whole-tap-count kernel rather than a fallback.
        run_dw(DataFormat::NCHW, 16, 40, 40, 5, 5, PaddingSpec::SameUpper, (1, 1));
        run_dw(DataFormat::NCHW, 64, 20, 20, 5, 5, PaddingSpec::SameUpper, (1, 1));
        run_dw(DataFormat::NCHW, 8, 24, 24, 5, 5, PaddingSpec::Valid, (1, 1));
        run_dw(DataFormat::NCHW, 8, 12, 20, 5, 1, PaddingSpec::Valid, (1, 1));
        run_dw(DataFormat::NCHW, 8, 12, 20, 3, 5, PaddingSpec::Valid, (1, 1));
        // 49, 81 and 121 taps take the vectorised kernel; 169 is past the limit and stays scalar.
        run_dw(DataFormat::NCHW, 8, 30, 30, 7, 7, PaddingSpec::SameUpper, (1, 1));
        run_dw(DataFormat::NCHW, 8, 30, 30, 9, 9, PaddingSpec::SameUpper, (1, 1));
        run_dw(DataFormat::NCHW, 8, 30, 30, 11, 11, PaddingSpec::SameUpper, (1, 1));
        run_dw(DataFormat::NCHW, 8, 30, 30, 13, 13, PaddingSpec::SameUpper, (1, 1));
        // Encoder DW: stride 2 / 3 along W (vld2 / vld3 path).
        run_dw(DataFormat::NCHW, 64, 1, 481, 1, 3, PaddingSpec::SameUpper, (1, 3));
        run_dw(DataFormat::NCHW, 64, 1, 161, 1, 3, PaddingSpec::SameUpper, (1, 2));
        run_dw(DataFormat::NCHW, 16, 1, 64, 1, 3, PaddingSpec::Valid, (1, 2));
    }

    #[test]
    fn depthwise_nhwc_f16_matches_reference() {
        let f16 = f16::datum_type();
        run_dw_dt(f16, DataFormat::NHWC, 3, 9, 9, 3, 3, PaddingSpec::Valid, (1, 1));
        run_dw_dt(f16, DataFormat::NHWC, 33, 12, 14, 3, 3, PaddingSpec::SameUpper, (1, 1));
        run_dw_dt(f16, DataFormat::NHWC, 64, 11, 13, 5, 5, PaddingSpec::SameUpper, (2, 2));
    }

    #[test]
    fn depthwise_nhwc_multithreaded_matches_reference() {
        // Thread counts that band the output rows evenly and unevenly, through border zones
        // and strided maps, and (10-row and 5-row maps) split the channels instead, into
        // chunks of whole 16-channel blocks.
        for threads in [2, 3, 4] {
            let pool = tract_linalg::multithread::Executor::multithread(threads);
            tract_linalg::multithread::multithread_tract_scope(pool, || {
                for dt in [f32::datum_type(), f16::datum_type()] {
                    use PaddingSpec::*;
                    run_dw_dt(dt, DataFormat::NHWC, 64, 30, 30, 3, 3, SameUpper, (1, 1));
                    run_dw_dt(dt, DataFormat::NHWC, 33, 40, 40, 3, 3, Valid, (1, 1));
                    run_dw_dt(dt, DataFormat::NHWC, 200, 20, 20, 5, 5, SameUpper, (2, 2));
                    run_dw_dt(dt, DataFormat::NHWC, 80, 25, 27, 3, 3, SameUpper, (2, 1));
                    run_dw_dt(dt, DataFormat::NHWC, 96, 20, 20, 3, 3, SameUpper, (1, 1));
                    // A map too short to band: split by channels.
                    run_dw_dt(dt, DataFormat::NHWC, 160, 5, 50, 3, 3, SameUpper, (1, 1));
                }
                // Fewer outputs than the threading threshold, more multiply-adds: shared. (f32
                // only: 25 taps of these values accumulated in f16 exceed its tolerance, split
                // or not.)
                run_dw(DataFormat::NHWC, 1152, 5, 5, 5, 5, PaddingSpec::SameUpper, (1, 1));
            });
        }
    }

    #[test]
    fn depthwise_nhwc_matches_reference() {
        // DFN3-like depthwise convs: 1x3 along a long axis, strided or not.
        run_dw(DataFormat::NHWC, 3, 9, 9, 3, 3, PaddingSpec::Valid, (1, 1));
        run_dw(DataFormat::NHWC, 64, 100, 32, 1, 3, PaddingSpec::SameUpper, (1, 2));
        run_dw(DataFormat::NHWC, 64, 100, 16, 1, 3, PaddingSpec::SameUpper, (1, 2));
        run_dw(DataFormat::NHWC, 64, 100, 8, 1, 3, PaddingSpec::SameUpper, (1, 1));
        run_dw(DataFormat::NHWC, 64, 100, 8, 1, 1, PaddingSpec::Valid, (1, 1));
        run_dw(DataFormat::NHWC, 64, 100, 96, 5, 1, PaddingSpec::SameUpper, (1, 1));
        // Odd channel counts and small shapes: vector tails, narrow zones.
        run_dw(DataFormat::NHWC, 17, 12, 20, 3, 3, PaddingSpec::SameUpper, (1, 1));
        run_dw(DataFormat::NHWC, 8, 1, 64, 1, 3, PaddingSpec::Valid, (1, 3));
        run_dw(DataFormat::NHWC, 4, 1, 17, 1, 3, PaddingSpec::SameUpper, (1, 1));
    }
}
