//! The shared resize, preprocessing and centre-zoom box give PyTorch's numbers.
//! Expected values: `tools/resize_parity.py` (torch `F.interpolate(mode="bilinear",
//! align_corners=False)`), committed in `tests/data/resize_parity.json`.

use cdnet_shared::resize::resize_bilinear;
use cdnet_shared::{CenterZoomParams, PreprocessConfig, Rect, center_zoom_box};
use serde_json::Value;

fn fixture() -> Value {
    serde_json::from_str(include_str!("data/resize_parity.json")).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

#[test]
fn resize_and_normalise_match_pytorch() {
    let f = fixture();
    let (w, h) = (f["width"].as_u64().unwrap() as usize, f["height"].as_u64().unwrap() as usize);
    let pixels: Vec<u8> = f["pixels"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u8).collect();
    for case in f["cases"].as_array().unwrap() {
        let (ow, oh) = (case["out_w"].as_u64().unwrap() as usize, case["out_h"].as_u64().unwrap() as usize);
        let mut out = vec![0.0; ow * oh];
        resize_bilinear(&pixels, w, h, Rect::full(w, h), &mut out, ow, oh).unwrap();
        let err = max_abs(&out, &floats(&case["resized"]));
        assert!(err <= 1e-4, "{ow}×{oh}: max abs error {err} (0–255 scale)");
        if ow == oh {
            // The fixture (7×5) is below the minimum frame size that preprocess_plane enforces, so
            // the same two steps are applied directly: the full-frame resize above, then normalise.
            let config = PreprocessConfig { input_size: ow, ..Default::default() };
            config.normalization.apply_all(&mut out);
            let err = max_abs(&out, &floats(&case["normalised"]));
            assert!(err <= 1e-6, "{ow}×{oh} normalised: max abs error {err}");
        }
    }
}

#[test]
fn region_resize_matches_pytorch_slice_then_interpolate() {
    let f = fixture();
    let (w, h) = (f["width"].as_u64().unwrap() as usize, f["height"].as_u64().unwrap() as usize);
    let pixels: Vec<f32> = f["pixels"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
    let r = &f["region"];
    let g = |k: &str| r[k].as_u64().unwrap() as usize;
    let rect = Rect { x0: g("x0"), y0: g("y0"), x1: g("x1"), y1: g("y1") };
    let mut out = vec![0.0; g("out_w") * g("out_h")];
    resize_bilinear(&pixels, w, h, rect, &mut out, g("out_w"), g("out_h")).unwrap();
    let err = max_abs(&out, &floats(&r["resized"]));
    assert!(err <= 1e-4, "max abs error {err}");
}

#[test]
fn attention_upsampling_and_zoom_box_match_pytorch() {
    let f = fixture();
    let z = &f["zoom"];
    let att = floats(&z["att"]);
    let mut up = vec![0.0; 224 * 224];
    resize_bilinear(&att, 7, 7, Rect::full(7, 7), &mut up, 224, 224).unwrap();
    let err = max_abs(&up[100 * 224..101 * 224], &floats(&z["upsampled_row_100"]));
    assert!(err <= 1e-6, "max abs error {err}");
    let b = center_zoom_box(&att, 7, 7, 224, &CenterZoomParams::default()).unwrap();
    let e = &z["box"];
    let g = |k: &str| e[k].as_u64().unwrap() as usize;
    assert_eq!(b, Rect { x0: g("x0"), y0: g("y0"), x1: g("x1"), y1: g("y1") });
}
