//! Evaluation: the inference path over a set of samples → metrics, pointing game and report figures.

use super::metrics::{LesionImage, LesionMaps, Metrics, PointingGame, compute};
use super::report;
use crate::data::Sample;
use crate::model::Cdnet;
use crate::model::infer::{Prediction, predict};
use anyhow::{Context, Result};
use burn::prelude::*;
use cdnet_shared::{CenterZoomParams, Normalization};
use serde::Serialize;
use std::path::Path;

/// Predictions and metrics for a set of samples.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Metrics (with the pointing game when masks exist).
    pub metrics: Metrics,
    /// True labels.
    pub labels: Vec<usize>,
    /// One prediction per sample.
    pub predictions: Vec<Prediction>,
}

/// Normalises a sample's intensities into a network plane.
pub fn normalised(sample: &Sample, norm: &Normalization) -> Vec<f32> {
    let mut plane = sample.image.clone();
    norm.apply_all(&mut plane);
    plane
}

/// Scores the pointing game, overall and per class, into `metrics` when some of `samples` (inputs
/// `n × n`) have a lesion mask and the maps (one per sample) carry a heatmap; otherwise leaves
/// `metrics` as it is.
pub fn add_pointing_game(metrics: &mut Metrics, samples: &[Sample], maps: &[LesionMaps<'_>], n: usize) {
    let lesions: Vec<(usize, &Vec<u8>)> = samples
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.mask.as_ref().filter(|m| m.contains(&1)).map(|m| (i, m)))
        .collect();
    if lesions.is_empty() || maps.first().is_none_or(|m| m.heatmap_side == 0) {
        return;
    }
    let images = |class: Option<usize>| {
        lesions
            .iter()
            .filter(move |(i, _)| class.is_none_or(|c| samples[*i].label == c))
            .map(|(i, mask)| LesionImage { maps: maps[*i], mask })
    };
    metrics.pointing_game = Some(PointingGame::score(images(None), n));
    for (c, class) in metrics.per_class.iter_mut().enumerate() {
        let game = PointingGame::score(images(Some(c)), n);
        class.pointing_game = (game.total > 0).then_some(game);
    }
}

/// Runs the inference path over `samples` in batches and scores it.
#[allow(clippy::too_many_arguments)]
pub fn evaluate(
    model: &Cdnet,
    samples: &[Sample],
    class_names: &[String],
    n: usize,
    norm: &Normalization,
    zoom: &CenterZoomParams,
    batch_size: usize,
    device: &Device,
) -> Evaluation {
    let mut predictions = Vec::with_capacity(samples.len());
    for chunk in samples.chunks(batch_size.max(1)) {
        let planes: Vec<Vec<f32>> = chunk.iter().map(|s| normalised(s, norm)).collect();
        let refs: Vec<&[f32]> = planes.iter().map(Vec::as_slice).collect();
        predictions.extend(predict(model, &refs, n, zoom, device));
    }
    let labels: Vec<usize> = samples.iter().map(|s| s.label).collect();
    let predicted: Vec<usize> = predictions.iter().map(|p| p.class).collect();
    let probabilities: Vec<Vec<f32>> = predictions.iter().map(|p| p.probabilities.clone()).collect();
    let mut metrics = compute(class_names, &labels, &predicted, &probabilities);
    let maps: Vec<LesionMaps<'_>> = predictions
        .iter()
        .map(|p| LesionMaps::new(&p.heatmap, p.heatmap_side, &p.attention, p.attention_side))
        .collect();
    add_pointing_game(&mut metrics, samples, &maps, n);
    Evaluation { metrics, labels, predictions }
}

/// `metrics.json` content: which split, which samples, the numbers.
#[derive(Serialize)]
struct MetricsFile<'a> {
    split: &'a str,
    metrics: &'a Metrics,
    samples: Vec<SampleResult<'a>>,
}

#[derive(Serialize)]
struct SampleResult<'a> {
    id: &'a str,
    label: usize,
    predicted: usize,
    probabilities: &'a [f32],
}

/// Writes `metrics.json`, `confusion.png`, `roc.png` and `heatmaps.png` into `dir`.
pub fn write_reports(
    evaluation: &Evaluation,
    samples: &[Sample],
    split: &str,
    n: usize,
    norm: &Normalization,
    dir: &Path,
) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let file = MetricsFile {
        split,
        metrics: &evaluation.metrics,
        samples: samples
            .iter()
            .zip(&evaluation.predictions)
            .map(|(s, p)| SampleResult {
                id: &s.id,
                label: s.label,
                predicted: p.class,
                probabilities: &p.probabilities,
            })
            .collect(),
    };
    let path = dir.join("metrics.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&file)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    report::confusion(&evaluation.metrics, &dir.join("confusion.png"))?;
    let probabilities: Vec<Vec<f32>> = evaluation.predictions.iter().map(|p| p.probabilities.clone()).collect();
    report::roc(&evaluation.metrics, &evaluation.labels, &probabilities, &dir.join("roc.png"))?;
    // One example per class (first of each), as in the paper's Fig. 7.
    let names: Vec<String> = evaluation.metrics.per_class.iter().map(|c| c.name.clone()).collect();
    let mut planes = Vec::new();
    let mut picks = Vec::new();
    for class in 0..names.len() {
        if let Some(i) = samples.iter().position(|s| s.label == class) {
            planes.push(normalised(&samples[i], norm));
            picks.push(i);
        }
    }
    let rows: Vec<(&[f32], &Prediction, String)> = picks
        .iter()
        .zip(&planes)
        .map(|(&i, plane)| {
            let p = &evaluation.predictions[i];
            let caption = format!(
                "{} — true {}, predicted {} ({:.0} %)",
                samples[i].id,
                names[samples[i].label],
                names[p.class],
                100.0 * p.probabilities[p.class]
            );
            (plane.as_slice(), p, caption)
        })
        .collect();
    if !rows.is_empty() {
        report::heatmap_panel(&rows, n, norm, &dir.join("heatmaps.png"))?;
    }
    Ok(())
}

/// A one-screen text summary of metrics.
pub fn summary(metrics: &Metrics) -> String {
    let mut out = format!(
        "accuracy {:.4}  macro F1 {:.4}  precision {:.4}  sensitivity {:.4}  specificity {:.4}  AUC {}\n",
        metrics.accuracy,
        metrics.macro_f1,
        metrics.macro_precision,
        metrics.macro_sensitivity,
        metrics.macro_specificity,
        metrics.macro_auc.map_or("n/a".into(), |a| format!("{a:.4}"))
    );
    out.push_str(&format!(
        "{:<12} {:>7} {:>9} {:>11} {:>11} {:>7} {:>7} {:>9}\n",
        "class", "support", "precision", "sensitivity", "specificity", "F1", "AUC", "pointing"
    ));
    for c in &metrics.per_class {
        out.push_str(&format!(
            "{:<12} {:>7} {:>9.4} {:>11.4} {:>11.4} {:>7.4} {:>7} {:>9}\n",
            c.name,
            c.support,
            c.precision,
            c.sensitivity,
            c.specificity,
            c.f1,
            c.auc.map_or("n/a".into(), |a| format!("{a:.4}")),
            c.pointing_game.map_or("—".into(), |g| format!("{}/{}", g.hits, g.total))
        ));
    }
    if let Some(pg) = metrics.pointing_game {
        out.push_str(&format!(
            "pointing game {:.4} ({}/{} lesion images, {:.1} px tolerance); cell level {:.4} ({}/{}); \
             AttS {:.4} ({}/{}); centre baseline {:.4} ({}/{})\n",
            pg.score,
            pg.hits,
            pg.total,
            pg.tolerance_px,
            pg.cell_score,
            pg.cell_hits,
            pg.total,
            pg.attention_score,
            pg.attention_hits,
            pg.total,
            pg.centre_score,
            pg.centre_hits,
            pg.total
        ));
    }
    out
}
