//! The inference path, as the edge runs it: global pass → AttS → centre-zoom box → crop → local
//! pass → fused head → softmax. The box, the crop and the softmax come from `cdnet_shared`, so the
//! host's evaluation numbers are the board's.

use super::Cdnet;
use burn::prelude::*;
use cdnet_shared::postprocess::{softmax, top_class};
use cdnet_shared::zoom::zoom_view;
use cdnet_shared::{CenterZoomParams, Rect};

/// Stacks normalised `n × n` planes into a `[B, 3, n, n]` batch of three identical channels.
pub fn planes_to_batch(planes: &[&[f32]], n: usize, device: &Device) -> Tensor<4> {
    let mut data = Vec::with_capacity(planes.len() * 3 * n * n);
    for plane in planes {
        for _ in 0..3 {
            data.extend_from_slice(plane);
        }
    }
    Tensor::from_data(TensorData::new(data, [planes.len(), 3, n, n]), device)
}

/// Reads a tensor back to the host as a flat vector. The element type is always f32 here; a failure
/// would be a backend bug.
pub fn to_vec<const D: usize>(tensor: Tensor<D>) -> Vec<f32> {
    tensor.into_data().convert::<f32>().try_into_vec::<f32>().unwrap_or_default()
}

/// What the network says about one image.
#[derive(Debug, Clone)]
pub struct Prediction {
    /// Softmax probabilities, one per class.
    pub probabilities: Vec<f32>,
    /// Most probable class (0 if the output was not finite).
    pub class: usize,
    /// AttS of the global pass, row-major `attention_side²` (empty without WSLL).
    pub attention: Vec<f32>,
    /// Side of the attention map.
    pub attention_side: usize,
    /// The stride-16 heatmap of the global pass, row-major `heatmap_side²` (empty without WSLL):
    /// what is drawn and scored; its 2 × 2 block means are `attention`.
    pub heatmap: Vec<f32>,
    /// Side of the heatmap (`2 · attention_side`).
    pub heatmap_side: usize,
    /// The centre-zoom box in input pixels (two-pass models only).
    pub zoom_box: Option<Rect>,
    /// The zoomed view, a normalised `n × n` plane (two-pass models only).
    pub zoom_view: Option<Vec<f32>>,
}

/// Runs the inference path on a batch of normalised `n × n` planes.
pub fn predict(
    model: &Cdnet,
    planes: &[&[f32]],
    n: usize,
    zoom: &CenterZoomParams,
    device: &Device,
) -> Vec<Prediction> {
    let batch = planes.len();
    if batch == 0 {
        return Vec::new();
    }
    let global = model.extract(planes_to_batch(planes, n, device));
    let (attention, side) = per_image_maps(global.attention_mean(), batch);
    let (heatmaps, heatmap_side) = per_image_maps(global.heatmap.clone(), batch);
    let per_image = |b: usize| attention.get(b).cloned().unwrap_or_default();
    let (logits, boxes, views) = if model.zoom_inference() {
        let mut boxes = Vec::with_capacity(batch);
        let mut views = Vec::with_capacity(batch);
        for (b, plane) in planes.iter().enumerate() {
            let zoomed = zoom_view(&per_image(b), side, plane, n, zoom);
            boxes.push(Some(zoomed.rect));
            views.push(zoomed.view);
        }
        let view_refs: Vec<&[f32]> = views.iter().map(Vec::as_slice).collect();
        let local = model.extract(planes_to_batch(&view_refs, n, device));
        let logits = model.fuse(global.feature, local.feature);
        (logits, boxes, views.into_iter().map(Some).collect())
    } else {
        (model.classify(global.feature), vec![None; batch], vec![None; batch])
    };
    let [_, k] = logits.dims();
    let logits = to_vec(logits);
    boxes
        .into_iter()
        .zip(views)
        .enumerate()
        .map(|(b, (zoom_box, zoom_view))| {
            let mut probabilities = vec![0.0; k];
            softmax(&logits[b * k..(b + 1) * k], &mut probabilities);
            let class = top_class(&probabilities).map_or(0, |(c, _)| c);
            Prediction {
                probabilities,
                class,
                attention: per_image(b),
                attention_side: side,
                heatmap: heatmaps.get(b).cloned().unwrap_or_default(),
                heatmap_side,
                zoom_box,
                zoom_view,
            }
        })
        .collect()
}

/// A `[B, 1, s, s]` map as one row-major `s²` vector per image, and `s` (none and 0 without a map).
fn per_image_maps(maps: Option<Tensor<4>>, batch: usize) -> (Vec<Vec<f32>>, usize) {
    let Some(maps) = maps else { return (Vec::new(), 0) };
    let [_, _, side, _] = maps.dims();
    let values = to_vec(maps);
    let per_image = values.chunks(side * side).take(batch).map(<[f32]>::to_vec).collect();
    (per_image, side)
}
