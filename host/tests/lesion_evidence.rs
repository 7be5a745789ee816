//! The lesion-evidence term on the heatmap: what it rewards, what it ignores, and where its
//! gradient goes.

use burn::module::{Module, ModuleVisitor, Param};
use burn::prelude::*;
use burn::tensor::Gradients;
use cdnet_host::model::cmz::CmzConfig;
use cdnet_host::model::loss::{HcdConfig, lesion_evidence, peak_to_mean};
use cdnet_host::model::{CdnetConfig, EfficientNetConfig};
use cdnet_host::train::step::{Batch, LesionEvidence, LossKind, StepConfig, ZoomKind, training_loss};
use cdnet_shared::CenterZoomParams;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

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

#[test]
fn its_gradient_reaches_the_attention_and_it_is_logged() {
    let device = Device::flex().autodiff();
    device.seed(3);
    let config = CdnetConfig::new(EfficientNetConfig::tiny(), 3)
        .with_input_size(64)
        .with_texture_channels(32)
        .with_feature_dim(64)
        .with_attention_maps(8);
    let model = config.init(&device);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let planes = (0..4)
        .map(|i| (0..64 * 64).map(|p| if (p / 64 + p % 64 + i) % 9 < 2 { 0.9 } else { -0.5 }).collect())
        .collect();
    let batch = Batch { planes, labels: vec![0, 1, 2, 0] };
    let step = |evidence: Option<LesionEvidence>| StepConfig {
        loss: LossKind::Ce,
        hcd: HcdConfig::new(),
        zoom: ZoomKind::None,
        cmz: CmzConfig::new(),
        center: CenterZoomParams::default(),
        train_heads: true,
        heads_train_backbone: false,
        lesion_evidence: evidence,
    };
    let settings = LesionEvidence { weight: 1.0, sharpness: 2.0, normal_class: 0 };
    let with = training_loss(&model, &batch, 64, &step(Some(settings)), &mut rng, &device);
    let without = training_loss(&model, &batch, 64, &step(None), &mut rng, &device);
    assert!(with.parts.evidence > 0.0, "the term was not logged: {:?}", with.parts);
    assert_eq!(without.parts.evidence, 0.0);
    assert!(
        (with.parts.total - without.parts.total - with.parts.evidence).abs() < 1e-4,
        "total {} = CE {} + evidence {}",
        with.parts.total,
        without.parts.total,
        with.parts.evidence
    );
    // The term alone: its gradient must reach the texture adaptor that draws the heatmap.
    let grads = (with.loss - without.loss).backward();
    let mut probe = NonZeroGradients { path: Vec::new(), grads: &grads, names: Vec::new() };
    model.visit(&mut probe);
    assert!(
        probe.names.iter().any(|name| name.contains("wsll.texture")),
        "no gradient on the texture adaptor that draws the heatmap; non-zero: {:?}",
        probe.names
    );
}

/// The paths of the float parameters with a non-zero gradient.
struct NonZeroGradients<'a> {
    path: Vec<String>,
    grads: &'a Gradients,
    names: Vec<String>,
}

impl ModuleVisitor for NonZeroGradients<'_> {
    fn enter_module(&mut self, name: &str, _container: &str) {
        self.path.push(name.to_string());
    }
    fn exit_module(&mut self, _name: &str, _container: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let nonzero = param.val().grad(self.grads).is_some_and(|g| g.abs().sum().into_scalar::<f32>() > 0.0);
        if nonzero {
            self.names.push(self.path.join("."));
        }
    }
}
