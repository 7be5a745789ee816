//! The lesion-evidence term on the heatmap: what it rewards and what it ignores (where its gradient
//! goes: `model.rs`, beside the other gradient-path tests).

use burn::prelude::*;
use cdnet_host::model::loss::{lesion_evidence, peak_to_mean};

const SIDE: usize = 6;

/// `[B, 1, 6, 6]` maps: `peaked[i]` puts a bump of height 10 on a floor of 1 at cell (2, 3),
/// otherwise the map is flat at 1; every map is multiplied by `scale[i]`.
fn maps(peaked: &[bool], scale: &[f32], device: &Device) -> Tensor<4> {
    let mut values = Vec::new();
    for (&peak, &s) in peaked.iter().zip(scale) {
        for cell in 0..SIDE * SIDE {
            let v = if peak && cell == 3 * SIDE + 2 { 10.0 } else { 1.0 };
            values.push(v * s);
        }
    }
    Tensor::from_data(TensorData::new(values, [peaked.len(), 1, SIDE, SIDE]), device)
}

fn values(t: Tensor<1>) -> Vec<f32> {
    cdnet_host::model::infer::to_vec(t)
}

#[test]
fn concentration_is_zero_for_a_flat_map_positive_for_a_peak_and_ignores_scale() {
    let device = Device::flex();
    let c = values(peak_to_mean(maps(&[false, true, true], &[1.0, 1.0, 37.0], &device), 2.0));
    assert!(c[0].abs() < 1e-4, "flat map: {}", c[0]);
    assert!(c[1] > 0.5, "a single peak 10× the floor: {}", c[1]);
    assert!((c[1] - c[2]).abs() < 1e-4, "scaling a map changed its concentration: {} vs {}", c[1], c[2]);
}

#[test]
fn the_term_rewards_peaks_on_lesion_images_and_flat_maps_on_normal_ones() {
    let device = Device::flex();
    let labels = [0, 1, 0, 2]; // class 0 is normal
    let term = |peaked: &[bool], scale: &[f32]| {
        values(lesion_evidence(maps(peaked, scale, &device), &labels, 0, 2.0).expect("both kinds in the batch"))[0]
    };
    let right = term(&[false, true, false, true], &[1.0; 4]);
    let wrong = term(&[true, false, true, false], &[1.0; 4]);
    let all_flat = term(&[false; 4], &[1.0; 4]);
    // Flat everywhere: every margin is 0, softplus(0) = ln 2.
    assert!((all_flat - std::f32::consts::LN_2).abs() < 1e-4, "flat maps: {all_flat}");
    assert!(
        right < all_flat && all_flat < wrong,
        "peaks on lesions {right}, flat {all_flat}, peaks on normals {wrong}"
    );
    // Lesion images whose maps are only larger, not more concentrated, earn nothing.
    let larger = term(&[false; 4], &[1.0, 50.0, 1.0, 50.0]);
    assert!((larger - all_flat).abs() < 1e-4, "a larger flat map changed the term: {larger} vs {all_flat}");
}

#[test]
fn the_term_needs_both_normal_and_lesion_images_in_the_batch() {
    let device = Device::flex();
    let heatmap = maps(&[true, false], &[1.0, 1.0], &device);
    assert!(lesion_evidence(heatmap.clone(), &[1, 2], 0, 2.0).is_none(), "no normal image");
    assert!(lesion_evidence(heatmap, &[0, 0], 0, 2.0).is_none(), "no lesion image");
}
