//! The edge runs each frame on a pool of threads (`CDNET_THREADS`, `runtime::FramePool`): tract
//! shares matrix products and depthwise convolutions among them, and the frame's thread keeps the
//! others awake. The answer — class probabilities and the lesion heatmap — must not depend on how
//! many threads there are, and the pool must serve frame after frame.

use cdnet_integration::shipped_bundle;
use cdnet_shared::bundle::Bundle;
use cdnet_shared::runtime::{Inference, Pipeline, Threads};

fn answers(bundle: &Bundle, threads: usize, planes: &[Vec<f32>]) -> Vec<Inference> {
    let pipeline = Pipeline::load(bundle.clone(), Threads(threads)).unwrap();
    planes.iter().map(|plane| pipeline.infer_plane(plane).unwrap()).collect()
}

fn largest_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn every_shipped_bundle_answers_alike_on_one_two_and_three_threads() {
    for name in ["demo-phantom", "demo-phantom-int8", "busi-lite0"] {
        let bundle = Bundle::open(&shipped_bundle(name)).unwrap();
        let planes = cdnet_host::export::phantom_planes(&bundle.card.preprocess, 5).unwrap();
        let one = answers(&bundle, 1, &planes);
        for threads in [2, 3] {
            let many = answers(&bundle, threads, &planes);
            let mut worst = 0f32;
            for (a, b) in one.iter().zip(&many) {
                assert_eq!(a.class, b.class, "{name}, {threads} threads");
                worst = worst.max(largest_difference(&a.probabilities, &b.probabilities));
                worst = worst.max(largest_difference(&a.heatmap, &b.heatmap));
            }
            println!("{name}: {threads} threads against one, max |Δ| {worst:.2e} over {} frames", planes.len());
            // Splitting tiles, row bands and element-wise chunks leaves every output's arithmetic
            // as it is on one thread; the bound leaves room only for a reduction split differently.
            assert!(worst <= 1e-5, "{name}, {threads} threads: {worst}");
        }
    }
}
