//! Edits of an exported ONNX graph (protobuf via prost, the types tract ships in `tract_onnx::pb`):
//! stable input/output names, BatchNorm folded into the preceding convolutions, composed ReLU6
//! rewritten as `Clip`, unused initializers pruned, a Softmax on the head.

use prost::Message;
use std::collections::{BTreeMap, HashMap, HashSet};
use tract_onnx::pb::{AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, attribute_proto, tensor_proto};

/// Why a graph edit failed.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// Not a valid ONNX protobuf.
    #[error("not a valid ONNX model: {0}")]
    Decode(String),
    /// The graph is not shaped as expected.
    #[error("unexpected graph structure: {0}")]
    Structure(String),
}

/// An ONNX model being edited.
#[derive(Debug, Clone)]
pub struct Graph {
    model: ModelProto,
}

/// The four nodes of one composed ReLU6 (node indices) and its input.
struct ComposedRelu6 {
    outer_sub: usize,
    relu_x: usize,
    shifted: usize,
    relu_shifted: usize,
    x: String,
}

/// How many node inputs read each value.
fn reader_counts(graph: &GraphProto) -> HashMap<&str, usize> {
    let mut counts = HashMap::new();
    for input in graph.node.iter().flat_map(|n| &n.input) {
        *counts.entry(input.as_str()).or_default() += 1;
    }
    counts
}

/// The index of the node that writes each value.
fn writers(graph: &GraphProto) -> HashMap<&str, usize> {
    graph.node.iter().enumerate().flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i))).collect()
}

/// Drops the nodes at `indices`, keeping the others in order.
fn remove_nodes(graph: &mut GraphProto, indices: &HashSet<usize>) {
    let nodes = std::mem::take(&mut graph.node);
    graph.node = nodes.into_iter().enumerate().filter(|(i, _)| !indices.contains(i)).map(|(_, n)| n).collect();
}

/// Reads an f32 initializer (raw little-endian data or `float_data`).
pub fn read_f32(tensor: &TensorProto) -> Result<Vec<f32>, GraphError> {
    if tensor.data_type != tensor_proto::DataType::Float as i32 {
        return Err(GraphError::Structure(format!("initializer {} is not float32", tensor.name)));
    }
    if !tensor.raw_data.is_empty() {
        Ok(tensor.raw_data.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
    } else {
        Ok(tensor.float_data.clone())
    }
}

/// A float32 initializer.
pub fn f32_tensor(name: &str, dims: &[i64], values: &[f32]) -> TensorProto {
    TensorProto {
        name: name.to_string(),
        dims: dims.to_vec(),
        data_type: tensor_proto::DataType::Float as i32,
        raw_data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

/// A node.
pub fn node(op: &str, name: &str, inputs: &[&str], outputs: &[&str], attributes: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.to_string(),
        name: name.to_string(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attributes,
        ..Default::default()
    }
}

/// An integer attribute.
pub fn int_attribute(name: &str, value: i64) -> AttributeProto {
    AttributeProto {
        name: name.to_string(),
        r#type: attribute_proto::AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

impl Graph {
    /// Parses ONNX bytes.
    pub fn decode(bytes: &[u8]) -> Result<Graph, GraphError> {
        let model = ModelProto::decode(bytes).map_err(|e| GraphError::Decode(e.to_string()))?;
        if model.graph.is_none() {
            return Err(GraphError::Decode("the model has no graph".into()));
        }
        Ok(Graph { model })
    }

    /// Serialises to ONNX bytes.
    pub fn encode(&self) -> Vec<u8> {
        self.model.encode_to_vec()
    }

    /// The graph.
    pub fn graph(&self) -> &GraphProto {
        self.model.graph.as_ref().expect("checked at decode")
    }

    /// The graph, mutably.
    pub fn graph_mut(&mut self) -> &mut GraphProto {
        self.model.graph.as_mut().expect("checked at decode")
    }

    /// The opset of the default domain.
    pub fn opset(&self) -> i64 {
        self.model.opset_import.iter().find(|o| o.domain.is_empty()).map_or(0, |o| o.version)
    }

    /// Records who produced the model.
    pub fn set_producer(&mut self, name: &str, version: &str, doc: &str) {
        self.model.producer_name = name.to_string();
        self.model.producer_version = version.to_string();
        self.model.doc_string = doc.to_string();
    }

    /// Renames every occurrence of a value.
    fn rename_value(&mut self, from: &str, to: &str) {
        let graph = self.graph_mut();
        for node in &mut graph.node {
            for name in node.input.iter_mut().chain(node.output.iter_mut()) {
                if name == from {
                    *name = to.to_string();
                }
            }
        }
        for value in graph.input.iter_mut().chain(graph.output.iter_mut()) {
            if value.name == from {
                value.name = to.to_string();
            }
        }
    }

    /// Gives the graph inputs and outputs the names the runtime looks for.
    pub fn rename_io(&mut self, inputs: &[&str], outputs: &[&str]) -> Result<(), GraphError> {
        let graph = self.graph();
        let real_inputs: Vec<String> = {
            let initializers: HashSet<&str> = graph.initializer.iter().map(|t| t.name.as_str()).collect();
            graph.input.iter().map(|v| v.name.clone()).filter(|n| !initializers.contains(n.as_str())).collect()
        };
        let real_outputs: Vec<String> = graph.output.iter().map(|v| v.name.clone()).collect();
        if real_inputs.len() != inputs.len() || real_outputs.len() != outputs.len() {
            return Err(GraphError::Structure(format!(
                "expected {} inputs and {} outputs, found {} and {}",
                inputs.len(),
                outputs.len(),
                real_inputs.len(),
                real_outputs.len()
            )));
        }
        for (old, new) in real_inputs.iter().zip(inputs).chain(real_outputs.iter().zip(outputs)) {
            self.rename_value(old, new);
        }
        Ok(())
    }

    /// Folds every `BatchNormalization` that directly follows a `Conv` (and is that conv's only
    /// consumer) into the conv's weights and bias: `W' = W·γ/√(σ²+ε)`, `b' = (b−μ)·γ/√(σ²+ε) + β`.
    /// Returns how many were folded.
    pub fn fold_batch_norms(&mut self) -> Result<usize, GraphError> {
        let graph = self.graph_mut();
        let (consumers, producer) = (reader_counts(graph), writers(graph));
        let initializer_index: HashMap<String, usize> =
            graph.initializer.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        let get = |name: &str| -> Result<Vec<f32>, GraphError> {
            let index = initializer_index
                .get(name)
                .ok_or_else(|| GraphError::Structure(format!("{name} is not an initializer")))?;
            read_f32(&graph.initializer[*index])
        };
        let mut folded = Vec::new(); // (conv index, bn index, new weight, new bias)
        for (bn_index, bn) in graph.node.iter().enumerate() {
            if bn.op_type != "BatchNormalization" || bn.input.len() < 5 {
                continue;
            }
            let Some(&conv_index) = producer.get(bn.input[0].as_str()) else { continue };
            let conv = &graph.node[conv_index];
            if conv.op_type != "Conv" || consumers.get(bn.input[0].as_str()) != Some(&1) {
                continue;
            }
            let weight_name = &conv.input[1];
            let weight_index = initializer_index[weight_name.as_str()];
            let dims = graph.initializer[weight_index].dims.clone();
            let mut weight = get(weight_name)?;
            let out_channels = dims[0] as usize;
            let per_channel = weight.len() / out_channels;
            let mut bias = match conv.input.get(2).filter(|n| !n.is_empty()) {
                Some(name) => get(name)?,
                None => vec![0.0; out_channels],
            };
            let (gamma, beta, mean, var) =
                (get(&bn.input[1])?, get(&bn.input[2])?, get(&bn.input[3])?, get(&bn.input[4])?);
            let epsilon = bn.attribute.iter().find(|a| a.name == "epsilon").map_or(1e-5, |a| a.f);
            for c in 0..out_channels {
                let scale = gamma[c] / (var[c] + epsilon).sqrt();
                for w in &mut weight[c * per_channel..(c + 1) * per_channel] {
                    *w *= scale;
                }
                bias[c] = (bias[c] - mean[c]) * scale + beta[c];
            }
            folded.push((conv_index, bn_index, dims, weight, bias));
        }
        let count = folded.len();
        let mut remove = HashSet::new();
        for (conv_index, bn_index, dims, weight, bias) in folded {
            let bn_output = graph.node[bn_index].output[0].clone();
            let base = graph.node[conv_index].input[1].clone();
            let (weight_name, bias_name) = (format!("{base}.bn_folded"), format!("{base}.bn_folded_bias"));
            graph.initializer.push(f32_tensor(&weight_name, &dims, &weight));
            graph.initializer.push(f32_tensor(&bias_name, &[dims[0]], &bias));
            let conv = &mut graph.node[conv_index];
            conv.input.truncate(1);
            conv.input.push(weight_name);
            conv.input.push(bias_name);
            conv.output[0] = bn_output;
            remove.insert(bn_index);
        }
        remove_nodes(graph, &remove);
        self.prune_initializers();
        Ok(count)
    }

    /// Rewrites every ReLU6 that burn-onnx composed as `Relu(x) − Relu(x − 6)` (it cannot export a
    /// clamp) as the one `Clip(x, 0, 6)` the model computes. Returns how many were rewritten.
    ///
    /// The two forms give the same bits for every `x ≤ 12` (there `x − 6` and `x − (x − 6)` are
    /// exact); above 12 the composed form rounds away from 6, and `Clip` is what burn trains
    /// (`model::activation::relu6`). Runtimes fuse a `Clip` into the convolution before it; the
    /// composed form costs two extra passes over every expanded feature map (tract: 13 % of a
    /// field-model frame, issue 16).
    pub fn fuse_relu6(&mut self) -> Result<usize, GraphError> {
        let matches = self.composed_relu6()?;
        let graph = self.graph_mut();
        let mut remove = HashSet::new();
        for m in &matches {
            let output = graph.node[m.outer_sub].output[0].clone();
            let (low, high) = (format!("{output}.clip_min"), format!("{output}.clip_max"));
            graph.initializer.push(f32_tensor(&low, &[], &[0.0]));
            graph.initializer.push(f32_tensor(&high, &[], &[6.0]));
            let name = graph.node[m.outer_sub].name.clone();
            graph.node[m.outer_sub] = node("Clip", &format!("{name}.relu6"), &[&m.x, &low, &high], &[&output], vec![]);
            remove.extend([m.relu_x, m.shifted, m.relu_shifted]);
        }
        remove_nodes(graph, &remove);
        self.prune_initializers();
        Ok(matches.len())
    }

    /// Every `Sub(Relu(x), Relu(Sub(x, 6)))` whose intermediate values nothing else reads.
    fn composed_relu6(&self) -> Result<Vec<ComposedRelu6>, GraphError> {
        let graph = self.graph();
        let (consumers, producer) = (reader_counts(graph), writers(graph));
        let outputs: HashSet<&str> = graph.output.iter().map(|v| v.name.as_str()).collect();
        let initializers: HashMap<&str, &TensorProto> =
            graph.initializer.iter().map(|t| (t.name.as_str(), t)).collect();
        let is_six = |name: &str| -> Result<bool, GraphError> {
            Ok(match initializers.get(name) {
                Some(t) if t.data_type == tensor_proto::DataType::Float as i32 => read_f32(t)? == [6.0],
                _ => false,
            })
        };
        // An intermediate value the rewrite removes: one producer of the given op, one reader.
        let private = |value: &str, op: &str| -> Option<usize> {
            let index = *producer.get(value)?;
            let single = consumers.get(value) == Some(&1) && !outputs.contains(value);
            (graph.node[index].op_type == op && single).then_some(index)
        };
        let mut found = Vec::new();
        for (outer_sub, sub) in graph.node.iter().enumerate() {
            let [a, b] = &sub.input[..] else { continue };
            if sub.op_type != "Sub" {
                continue;
            }
            let (Some(relu_x), Some(relu_shifted)) = (private(a, "Relu"), private(b, "Relu")) else { continue };
            let Some(shifted) = private(&graph.node[relu_shifted].input[0], "Sub") else { continue };
            let x = &graph.node[relu_x].input[0];
            let [shift_x, six] = &graph.node[shifted].input[..] else { continue };
            if shift_x == x && is_six(six)? {
                found.push(ComposedRelu6 { outer_sub, relu_x, shifted, relu_shifted, x: x.clone() });
            }
        }
        Ok(found)
    }

    /// Drops initializers that no node reads (burn embeds every parameter of the module; folding
    /// leaves the BatchNorm statistics unused).
    pub fn prune_initializers(&mut self) {
        let graph = self.graph_mut();
        let used: HashSet<String> = graph.node.iter().flat_map(|n| n.input.iter().cloned()).collect();
        graph.initializer.retain(|t| used.contains(&t.name));
    }

    /// Appends `Softmax(axis = 1)` after the single output, keeping the output name.
    pub fn append_softmax(&mut self) -> Result<(), GraphError> {
        let graph = self.graph_mut();
        let [output] = &mut graph.output[..] else {
            return Err(GraphError::Structure("the head must have exactly one output".into()));
        };
        let name = output.name.clone();
        let logits = format!("{name}_logits");
        for node in &mut graph.node {
            for o in node.output.iter_mut().filter(|o| **o == name) {
                *o = logits.clone();
            }
        }
        graph.node.push(node("Softmax", "softmax", &[&logits], &[&name], vec![int_attribute("axis", 1)]));
        Ok(())
    }

    /// Operator counts, for the card and for tests.
    pub fn op_counts(&self) -> BTreeMap<String, usize> {
        let mut counts = BTreeMap::new();
        for node in &self.graph().node {
            *counts.entry(node.op_type.clone()).or_default() += 1;
        }
        counts
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tract_onnx::pb::{OperatorSetIdProto, TypeProto, ValueInfoProto, type_proto};
    use tract_onnx::prelude::{DatumExt, Framework, InferenceModelExt, IntoRunnable, IntoTValue, Tensor, tvec};

    /// `y = relu(x) − relu(x − 6)` as burn-onnx writes it, and a second copy (`z`) whose `relu(x)`
    /// is also an output, which the rewrite must leave alone.
    pub(crate) fn composed() -> Graph {
        let value = |name: &str| {
            let tensor = type_proto::Tensor { elem_type: tensor_proto::DataType::Float as i32, shape: None };
            let r#type = TypeProto { value: Some(type_proto::Value::TensorType(tensor)), ..Default::default() };
            ValueInfoProto { name: name.into(), r#type: Some(r#type), ..Default::default() }
        };
        let graph = GraphProto {
            node: vec![
                node("Relu", "r1", &["x"], &["a"], vec![]),
                node("Sub", "s1", &["x", "six"], &["t"], vec![]),
                node("Relu", "r2", &["t"], &["b"], vec![]),
                node("Sub", "s2", &["a", "b"], &["y"], vec![]),
                node("Relu", "r3", &["y"], &["c"], vec![]),
                node("Sub", "s3", &["y", "six_again"], &["u"], vec![]),
                node("Relu", "r4", &["u"], &["d"], vec![]),
                node("Sub", "s4", &["c", "d"], &["z"], vec![]),
            ],
            initializer: vec![f32_tensor("six", &[], &[6.0]), f32_tensor("six_again", &[], &[6.0])],
            input: vec![value("x")],
            output: vec![value("y"), value("z"), value("c")],
            ..Default::default()
        };
        let opset = OperatorSetIdProto { domain: String::new(), version: 18 };
        Graph {
            model: ModelProto { graph: Some(graph), opset_import: vec![opset], ir_version: 8, ..Default::default() },
        }
    }

    fn run(graph: &Graph, x: &[f32]) -> Vec<Vec<f32>> {
        let model = tract_onnx::onnx()
            .model_for_read(&mut &graph.encode()[..])
            .and_then(|m| m.with_input_fact(0, f32::fact([x.len()]).into()))
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .unwrap_or_else(|e| panic!("{e:?}"));
        let outputs = model.run(tvec!(Tensor::from_shape(&[x.len()], x).unwrap().into_tvalue())).unwrap();
        outputs.iter().map(|o| o.to_plain_array_view::<f32>().unwrap().iter().copied().collect()).collect()
    }

    #[test]
    fn composed_relu6_becomes_clip_with_the_same_values() {
        let mut graph = composed();
        assert_eq!(graph.fuse_relu6().unwrap(), 1, "only the copy whose intermediates nothing else reads");
        let ops = graph.op_counts();
        assert_eq!(ops.get("Clip"), Some(&1), "{ops:?}");
        assert_eq!((ops.get("Relu"), ops.get("Sub")), (Some(&2), Some(&2)), "{ops:?}");
        assert_eq!(graph.graph().initializer.iter().filter(|t| t.name == "six").count(), 0, "unused scalar pruned");
        // The last is 2^26 + 8, where `x − 6` rounds (the f32 spacing there is 8).
        let x: [f32; 15] = [
            -1e6,
            -20.0,
            -1.0,
            0.0,
            0.25,
            3.0,
            5.999,
            6.0,
            6.001,
            7.3,
            11.9,
            12.0,
            12.5,
            1e3,
            (1u32 << 26) as f32 + 8.0,
        ];
        let (before, after) = (run(&composed(), &x), run(&graph, &x));
        for (i, &v) in x.iter().enumerate() {
            let clipped = after[0][i];
            assert_eq!(clipped, v.clamp(0.0, 6.0), "Clip at {v}");
            if v <= 12.0 {
                assert_eq!(clipped.to_bits(), before[0][i].to_bits(), "composed and Clip differ at {v}");
            }
        }
        // Where the composed form rounds, it is not ReLU6; the rewrite is.
        assert_ne!(before[0][x.len() - 1], 6.0);
        assert_eq!(after[1], before[1], "the untouched copy");
    }

    #[test]
    fn a_shift_other_than_six_is_not_relu6() {
        let mut graph = composed();
        graph.graph_mut().initializer[0] = f32_tensor("six", &[], &[5.0]);
        assert_eq!(graph.fuse_relu6().unwrap(), 0);
    }
}
