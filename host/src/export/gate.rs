//! Calibrating a bundle's frame gate ([`cdnet_shared::gate`]) on a data set: the statistics of
//! the training split fix its mean and covariance, the validation split its threshold. `cdnet
//! export` does this for every bundle; `cdnet gate` recalibrates one, or gives a format-2 bundle
//! its gate.

use crate::data::{self, DataConfig, Dataset};
use anyhow::{Context, Result, bail};
use cdnet_shared::PreprocessConfig;
use cdnet_shared::bundle::{Bundle, read_card};
use cdnet_shared::gate::{FrameGate, FrameStatistics, GateSettings, calibrate, frame_statistics};
use cdnet_shared::labels::LabelSet;
use std::path::Path;

/// The data set under `root` as the model sees it (its crop, input size and classes).
pub fn load_for_model(root: &Path, preprocess: &PreprocessConfig, labels: &LabelSet) -> Result<Dataset> {
    data::load(
        root,
        &DataConfig {
            input_size: preprocess.input_size,
            crop: Some(preprocess.crop),
            classes: Some(labels.names().to_vec()),
            ..Default::default()
        },
    )
    .with_context(|| format!("cannot load {} to calibrate the frame gate", root.display()))
}

/// The gate calibrated on `data`: fit on `train`, threshold on `val` (or `test` when a data set
/// has no validation split).
pub fn calibrate_on(data: &Dataset, settings: &GateSettings) -> Result<FrameGate> {
    let n = data.input_size;
    let statistics = |samples: &[data::Sample]| -> Vec<FrameStatistics> {
        samples.iter().map(|s| frame_statistics(&s.image, n)).collect()
    };
    let (held_name, held) = if data.val.is_empty() { ("test", &data.test) } else { ("val", &data.val) };
    if held.is_empty() {
        bail!(
            "the frame gate needs held-out frames (a val or test split) to set its threshold; this data set has none"
        );
    }
    calibrate(&statistics(&data.train), &statistics(held), ("train", held_name), settings).map_err(anyhow::Error::msg)
}

/// The gate calibrated on procedurally rendered phantom B-scans: the fallback of an export given no
/// data, recorded as such in the card (a device with it refuses what does not look like the
/// phantom, which fails closed).
pub fn calibrate_on_phantom(preprocess: &PreprocessConfig, settings: &GateSettings) -> Result<FrameGate> {
    use cdnet_shared::phantom::{PhantomClass, PhantomConfig, render};
    let n = preprocess.input_size;
    let frames = |first: u64, count: usize| -> Result<Vec<FrameStatistics>> {
        (0..count)
            .map(|i| {
                let class = PhantomClass::ALL[i % PhantomClass::ALL.len()];
                let image = render(class, first + i as u64, &PhantomConfig { size: 256, difficulty: 0.5 });
                let gray = cdnet_shared::GrayImage::new(image.size, image.size, &image.pixels)?;
                let mut plane = vec![0.0; n * n];
                cdnet_shared::preprocess::crop_resize_plane(&gray, preprocess, &mut plane)?;
                Ok(frame_statistics(&plane, n))
            })
            .collect()
    };
    calibrate(&frames(50_000, 200)?, &frames(60_000, 50)?, ("phantom (no data given)", "phantom"), settings)
        .map_err(anyhow::Error::msg)
}

/// Calibrates the gate of the bundle in `model` on `data` (the model's training data), writes it
/// into the card (upgrading a format-2 card), rebinds the graphs and checks that tract loads the
/// bundle.
pub fn recalibrate_bundle(model: &Path, data: &Path, settings: &GateSettings) -> Result<FrameGate> {
    let (_, card) = read_card(model)?;
    let gate = calibrate_on(&load_for_model(data, &card.preprocess, &card.labels)?, settings)?;
    let bundle = Bundle::set_gate(model, gate.clone())?;
    super::nnef::load_preferred(bundle)?;
    Ok(gate)
}
