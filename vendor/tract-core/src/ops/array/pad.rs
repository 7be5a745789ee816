use crate::internal::*;

/// How a padded region is filled. A `Constant` value carries a single element
/// in the datum type the model builder gave it, f32 for a float graph, and no
/// pass retypes it: a consumer casts it to the datum type of the tensor it pads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PadMode {
    Constant(Arc<Tensor>),
    Reflect,
    Edge,
}

impl Default for PadMode {
    fn default() -> PadMode {
        PadMode::Constant(Arc::new(0.0f32.into()))
    }
}

#[derive(Debug, Clone, new, Default, Hash, PartialEq, Eq)]
pub struct Pad {
    pub pads: Vec<(usize, usize)>,
    pub mode: PadMode,
}

impl Pad {
    fn eval_t<T>(&self, input_tensor: TValue) -> TractResult<TValue>
    where
        T: Copy + Datum,
    {
        use tract_ndarray::*;
        let input = input_tensor.to_plain_array_view::<T>()?;
        let output_shape: Vec<usize> =
            input.shape().iter().zip(self.pads.iter()).map(|(&d, &(a, b))| d + a + b).collect();
        let element = match &self.mode {
            PadMode::Constant(f) => f.cast_to_scalar::<T>()?,
            _ => T::default(),
        };
        let mut output = ArrayD::<T>::from_elem(output_shape, element);
        let slice_spec: Vec<SliceInfoElem> = self
            .pads
            .iter()
            .map(|&(a, b)| SliceInfoElem::Slice {
                start: a as isize,
                end: if b != 0 { Some(-(b as isize)) } else { None },
                step: 1,
            })
            .collect();
        let slice_info = SliceInfo::<_, IxDyn, IxDyn>::try_from(slice_spec).unwrap();
        match (input.as_slice(), output.as_slice_mut()) {
            (Some(from), Some(to)) => copy_interior(from, input.shape(), &self.pads, to),
            _ => output.slice_mut(slice_info.as_ref()).assign(&input),
        }
        if self.mode == PadMode::Reflect || self.mode == PadMode::Edge {
            for (ax, &(bef, aft)) in self.pads.iter().enumerate() {
                let axis = Axis(ax);
                let dim = output.shape()[ax];
                {
                    let (mut pad, data) = output.view_mut().split_at(axis, bef);
                    for i in 0..bef {
                        let mut target = pad.slice_axis_mut(axis, Slice::from(i..i + 1));
                        let source_slice = match self.mode {
                            PadMode::Edge => 0,
                            PadMode::Reflect => bef - i,
                            _ => panic!(),
                        };
                        let source =
                            data.slice_axis(axis, Slice::from(source_slice..source_slice + 1));
                        target.assign(&source);
                    }
                }
                {
                    let (data, mut pad) = output.view_mut().split_at(axis, dim - aft);
                    for i in 0..aft {
                        let mut target = pad.slice_axis_mut(axis, Slice::from(i..i + 1));
                        let source_slice = match self.mode {
                            PadMode::Edge => dim - aft - 1,
                            PadMode::Reflect => dim - aft - 2 - i,
                            _ => panic!(),
                        };
                        let source =
                            data.slice_axis(axis, Slice::from(source_slice..source_slice + 1));
                        target.assign(&source);
                    }
                }
            }
        }
        let mut output = output.into_tensor();
        unsafe { output.set_datum_type(input_tensor.datum_type()) }
        Ok(output.into_tvalue())
    }
}

/// Copies `input` (C order, `shape`) into the interior of `output` (C order, `shape` plus
/// `pads`) one contiguous run at a time. The axes after the last padded one, with that one, are
/// a single run in both tensors: a whole row of an NHWC image padded in H and W, where ndarray's
/// `assign` on a dynamic-rank view copies element by element (3-float rows took 2.5× the time
/// of the 160-float rows of the same image in NCHW).
fn copy_interior<T: Copy>(input: &[T], shape: &[usize], pads: &[(usize, usize)], output: &mut [T]) {
    let Some(last_padded) = pads.iter().rposition(|&(before, after)| before + after > 0) else {
        output.copy_from_slice(input);
        return;
    };
    let run: usize = shape[last_padded..].iter().product();
    if run == 0 {
        return;
    }
    let mut out_strides = vec![1usize; shape.len()];
    for axis in (0..shape.len() - 1).rev() {
        let (before, after) = pads[axis + 1];
        out_strides[axis] = out_strides[axis + 1] * (shape[axis + 1] + before + after);
    }
    let origin: usize = pads.iter().zip(&out_strides).map(|(&(before, _), s)| before * s).sum();
    let mut index = vec![0usize; last_padded];
    for chunk in input.chunks_exact(run) {
        let offset = origin + index.iter().zip(&out_strides).map(|(i, s)| i * s).sum::<usize>();
        output[offset..offset + run].copy_from_slice(chunk);
        for axis in (0..last_padded).rev() {
            index[axis] += 1;
            if index[axis] < shape[axis] {
                break;
            }
            index[axis] = 0;
        }
    }
}

impl Op for Pad {
    fn name(&self) -> StaticName {
        "Pad".into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!("Mode: {:?}, pads: {:?})", self.mode, self.pads,)])
    }

    op_as_typed_op!();
}

impl EvalOp for Pad {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = args_1!(inputs);
        Ok(tvec!(dispatch_numbers!(Self::eval_t(input.datum_type())(self, input))?))
    }
}

impl TypedOp for Pad {
    as_op!();

    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut fact = inputs[0].without_value();
        if self.pads.len() != fact.rank() {
            bail!("Inconsistent pad: input of rank {}, pads are: {:?}", fact.rank(), self.pads);
        }
        for (ix, (b, e)) in self.pads.iter().enumerate() {
            fact.shape.set(ix, fact.shape[ix].clone() + *b + *e);
        }
        Ok(tvec!(fact))
    }

    fn input_roi(
        &self,
        model: &TypedModel,
        node: &TypedNode,
    ) -> TractResult<Option<TVec<Option<TDim>>>> {
        let output_fact = model.outlet_fact(OutletId::new(node.id, 0))?;
        rule_if_some!(roi = &output_fact.region_of_interest);
        // For each padded axis, substitute 🎯axis → 🎯axis - before
        let mut input_roi = roi.clone();
        for (axis, &(before, _)) in self.pads.iter().enumerate() {
            if before == 0 {
                continue;
            }
            if let Some(sym) = input_roi
                .symbols()
                .into_iter()
                .find(|s| crate::ops::logic::sym_to_coord_axis(s) == Some(axis))
            {
                let shifted = TDim::Sym(sym.clone()) - TDim::Val(before as i64);
                input_roi = input_roi.substitute(&sym, &shifted).unwrap_or(input_roi);
            }
        }
        Ok(Some(tvec![Some(input_roi)]))
    }

    fn axes_mapping(
        &self,
        inputs: &[&TypedFact],
        outputs: &[&TypedFact],
    ) -> TractResult<AxesMapping> {
        let mut result = AxesMapping::disconnected(inputs, outputs)?;
        for (ix, pads) in self.pads.iter().enumerate() {
            if pads == &(0, 0) {
                result = result.linking((InOut::In(0), ix), (InOut::Out(0), ix))?;
            }
        }
        Ok(result)
    }

    fn change_axes(
        &self,
        model: &TypedModel,
        node: &TypedNode,
        io: InOut,
        change: &AxisOp,
    ) -> TractResult<Option<AxisChangeConsequence>> {
        let mut new_op = self.clone();
        if let (InOut::In(0), AxisOp::Rm(ix)) = (io, change)
            && new_op.pads.remove(*ix) == (0, 0)
        {
            return Ok(Some(AxisChangeConsequence::new(
                model,
                node,
                Some(Box::new(new_op)),
                change,
            )));
        }
        if let (InOut::In(0), AxisOp::Add(ix)) = (io, change) {
            new_op.pads.insert(*ix, (0, 0));
            return Ok(Some(AxisChangeConsequence::new(
                model,
                node,
                Some(Box::new(new_op)),
                change,
            )));
        }
        Ok(None)
    }

    fn declutter(
        &self,
        model: &TypedModel,
        node: &TypedNode,
    ) -> TractResult<Option<TypedModelPatch>> {
        if self.pads.iter().all(|p| p.0 == 0 && p.1 == 0) {
            TypedModelPatch::shunt_one_op(model, node)
        } else {
            Ok(None)
        }
    }
}

#[cfg(test)]
mod copy_interior_tests {
    use super::*;
    use tract_ndarray::*;

    /// The interior copy against ndarray's slice assignment, over layouts with padding on the
    /// innermost axis, on outer axes only, on none, and an empty input.
    #[test]
    fn copy_interior_matches_slice_assignment() {
        let cases: &[(&[usize], &[(usize, usize)])] = &[
            (&[1, 5, 6, 3], &[(0, 0), (0, 1), (0, 1), (0, 0)]),
            (&[1, 3, 5, 6], &[(0, 0), (0, 0), (0, 1), (0, 1)]),
            (&[2, 3, 4], &[(1, 2), (0, 0), (3, 0)]),
            (&[2, 3, 4], &[(0, 0), (2, 1), (0, 0)]),
            (&[4, 3], &[(0, 0), (0, 0)]),
            (&[7], &[(2, 5)]),
            (&[2, 0, 3], &[(1, 1), (0, 0), (1, 0)]),
        ];
        for &(shape, pads) in cases {
            let input = ArrayD::from_shape_fn(IxDyn(shape), |ix| {
                ix.slice().iter().fold(1.0f32, |acc, &i| acc * 7.0 + i as f32)
            });
            let out_shape: Vec<usize> =
                shape.iter().zip(pads).map(|(d, (before, after))| d + before + after).collect();
            let mut expected = ArrayD::from_elem(IxDyn(&out_shape), -1.0f32);
            let slices: Vec<SliceInfoElem> = pads
                .iter()
                .zip(shape)
                .map(|(&(before, _), &d)| SliceInfoElem::Slice {
                    start: before as isize,
                    end: Some((before + d) as isize),
                    step: 1,
                })
                .collect();
            let info = SliceInfo::<_, IxDyn, IxDyn>::try_from(slices).unwrap();
            expected.slice_mut(info.as_ref()).assign(&input);
            let mut got = ArrayD::from_elem(IxDyn(&out_shape), -1.0f32);
            copy_interior(input.as_slice().unwrap(), shape, pads, got.as_slice_mut().unwrap());
            assert_eq!(got, expected, "shape {shape:?}, pads {pads:?}");
        }
    }
}
