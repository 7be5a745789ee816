//! Classification metrics as the paper reports them, plus localisation.
//!
//! Precision, sensitivity (recall), specificity and F1 are computed per class and **macro**-averaged
//! (the mean of the per-class values); accuracy is overall (correct / total); AUC is one-vs-rest
//! ROC-AUC on the softmax probabilities, macro-averaged over classes that have both positives and
//! negatives (sklearn `roc_auc_score(multi_class="ovr", average="macro")`). A class that is never
//! predicted has precision 0 (sklearn's `zero_division=0`).
//!
//! The pointing game (Zhang et al., "Top-down neural attention by excitation backprop") counts a
//! lesion image as a hit when the maximum of its heatmap lies within 15 pixels of the lesion mask
//! at 224 px (the tolerance scales with the input side). The heatmap is the stride-16 map the
//! device draws, placed on the image by [`cdnet_shared::heatmap`]. The cell-level score counts a
//! hit when the peak cell's own `S × S` region overlaps the mask: it does not depend on
//! interpolation. Two references go with every score: the same game played with AttS (the
//! stride-32 attention the zoom box uses), and the paper's *centre baseline*, which always points
//! at the image centre: a heatmap that does not beat it has not shown that it finds lesions.

use cdnet_shared::heatmap::HeatmapGeometry;
use serde::{Deserialize, Serialize};

/// Per-class figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    /// Class name.
    pub name: String,
    /// Images of this class.
    pub support: usize,
    /// TP / (TP + FP).
    pub precision: f64,
    /// TP / (TP + FN) (recall).
    pub sensitivity: f64,
    /// TN / (TN + FP).
    pub specificity: f64,
    /// 2TP / (2TP + FP + FN).
    pub f1: f64,
    /// One-vs-rest ROC-AUC (absent when the class has no positives or no negatives).
    pub auc: Option<f64>,
    /// The pointing game on this class's lesion images (absent without masks or a heatmap).
    #[serde(default)]
    pub pointing_game: Option<PointingGame>,
}

/// Localisation score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PointingGame {
    /// Lesion images whose heatmap peak lies within the tolerance of the lesion.
    pub hits: usize,
    /// Lesion images scored.
    pub total: usize,
    /// hits / total.
    pub score: f64,
    /// Tolerance used, in input pixels (15 at 224 px).
    #[serde(default)]
    pub tolerance_px: f64,
    /// Lesion images whose peak cell's region overlaps the lesion.
    #[serde(default)]
    pub cell_hits: usize,
    /// cell_hits / total.
    #[serde(default)]
    pub cell_score: f64,
    /// Lesion images whose AttS (stride-32 attention) peak lies within the tolerance.
    #[serde(default)]
    pub attention_hits: usize,
    /// attention_hits / total.
    #[serde(default)]
    pub attention_score: f64,
    /// Lesion images whose centre pixel lies within the tolerance (the centre baseline).
    #[serde(default)]
    pub centre_hits: usize,
    /// centre_hits / total.
    #[serde(default)]
    pub centre_score: f64,
}

/// An image's heatmap and AttS as the network gave them, by whichever path (burn, or a bundle on
/// tract).
#[derive(Debug, Clone, Copy)]
pub struct LesionMaps<'a> {
    /// The heatmap, row-major `heatmap_side²`.
    pub heatmap: &'a [f32],
    /// Its side (0: the network gave none).
    pub heatmap_side: usize,
    /// AttS, row-major `attention_side²`.
    pub attention: &'a [f32],
    /// Its side.
    pub attention_side: usize,
}

impl<'a> LesionMaps<'a> {
    /// The maps of one answer.
    pub fn new(heatmap: &'a [f32], heatmap_side: usize, attention: &'a [f32], attention_side: usize) -> Self {
        Self { heatmap, heatmap_side, attention, attention_side }
    }
}

/// One lesion image for the pointing game: its maps and `n × n` mask.
#[derive(Debug, Clone, Copy)]
pub struct LesionImage<'a> {
    /// What the network gave.
    pub maps: LesionMaps<'a>,
    /// Lesion mask (non-zero = lesion).
    pub mask: &'a [u8],
}

impl PointingGame {
    /// Scores lesion images at input side `n`.
    pub fn score<'a>(images: impl IntoIterator<Item = LesionImage<'a>>, n: usize) -> Self {
        let tolerance_px = pointing_tolerance(n);
        let (mut hits, mut cell_hits, mut attention_hits, mut centre_hits, mut total) = (0, 0, 0, 0, 0);
        for image in images {
            total += 1;
            centre_hits += usize::from(near_lesion((n / 2, n / 2), image.mask, n, tolerance_px));
            if let Ok(geometry) = HeatmapGeometry::new(image.maps.heatmap_side, n) {
                hits += usize::from(pointing_hit(&geometry, image.maps.heatmap, image.mask, tolerance_px));
                cell_hits += usize::from(pointing_cell_hit(&geometry, image.maps.heatmap, image.mask));
            }
            if let Ok(geometry) = HeatmapGeometry::new(image.maps.attention_side, n) {
                attention_hits += usize::from(pointing_hit(&geometry, image.maps.attention, image.mask, tolerance_px));
            }
        }
        let rate = |h: usize| if total == 0 { 0.0 } else { h as f64 / total as f64 };
        PointingGame {
            hits,
            total,
            score: rate(hits),
            tolerance_px,
            cell_hits,
            cell_score: rate(cell_hits),
            attention_hits,
            attention_score: rate(attention_hits),
            centre_hits,
            centre_score: rate(centre_hits),
        }
    }
}

/// Everything reported for one evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Images evaluated.
    pub count: usize,
    /// Overall accuracy.
    pub accuracy: f64,
    /// Macro F1.
    pub macro_f1: f64,
    /// Macro precision.
    pub macro_precision: f64,
    /// Macro sensitivity.
    pub macro_sensitivity: f64,
    /// Macro specificity.
    pub macro_specificity: f64,
    /// Macro one-vs-rest AUC.
    pub macro_auc: Option<f64>,
    /// Per class.
    pub per_class: Vec<ClassMetrics>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<usize>>,
    /// Pointing game, when lesion masks exist.
    pub pointing_game: Option<PointingGame>,
}

/// Computes the metrics from labels, predicted classes and per-class probabilities.
pub fn compute(class_names: &[String], labels: &[usize], predicted: &[usize], probabilities: &[Vec<f32>]) -> Metrics {
    let k = class_names.len();
    let n = labels.len();
    let mut confusion = vec![vec![0usize; k]; k];
    for (&t, &p) in labels.iter().zip(predicted) {
        confusion[t][p] += 1;
    }
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let per_class: Vec<ClassMetrics> = (0..k)
        .map(|c| {
            let tp = confusion[c][c];
            let fn_: usize = confusion[c].iter().sum::<usize>() - tp;
            let fp: usize = (0..k).map(|t| confusion[t][c]).sum::<usize>() - tp;
            let tn = n - tp - fn_ - fp;
            let scores: Vec<f32> = probabilities.iter().map(|p| p[c]).collect();
            let positives: Vec<bool> = labels.iter().map(|&l| l == c).collect();
            ClassMetrics {
                name: class_names[c].clone(),
                support: tp + fn_,
                precision: ratio(tp, tp + fp),
                sensitivity: ratio(tp, tp + fn_),
                specificity: ratio(tn, tn + fp),
                f1: ratio(2 * tp, 2 * tp + fp + fn_),
                auc: auc(&scores, &positives),
                pointing_game: None,
            }
        })
        .collect();
    let mean = |f: &dyn Fn(&ClassMetrics) -> f64| per_class.iter().map(f).sum::<f64>() / k.max(1) as f64;
    let aucs: Vec<f64> = per_class.iter().filter_map(|c| c.auc).collect();
    Metrics {
        count: n,
        accuracy: ratio(labels.iter().zip(predicted).filter(|(t, p)| t == p).count(), n),
        macro_f1: mean(&|c| c.f1),
        macro_precision: mean(&|c| c.precision),
        macro_sensitivity: mean(&|c| c.sensitivity),
        macro_specificity: mean(&|c| c.specificity),
        macro_auc: (!aucs.is_empty()).then(|| aucs.iter().sum::<f64>() / aucs.len() as f64),
        per_class,
        confusion,
        pointing_game: None,
    }
}

/// ROC-AUC as the Mann–Whitney statistic (ties count ½); `None` without both classes.
pub fn auc(scores: &[f32], positives: &[bool]) -> Option<f64> {
    let n_pos = positives.iter().filter(|&&p| p).count();
    let n_neg = positives.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    // Average ranks over ties.
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut ranks = vec![0.0f64; scores.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &idx in &order[i..=j] {
            ranks[idx] = rank;
        }
        i = j + 1;
    }
    let pos_rank_sum: f64 = ranks.iter().zip(positives).filter(|(_, p)| **p).map(|(r, _)| r).sum();
    Some((pos_rank_sum - (n_pos * (n_pos + 1)) as f64 / 2.0) / (n_pos * n_neg) as f64)
}

/// ROC curve points `(false-positive rate, true-positive rate)` from the highest threshold down.
pub fn roc_curve(scores: &[f32], positives: &[bool]) -> Vec<(f64, f64)> {
    let n_pos = positives.iter().filter(|&&p| p).count().max(1) as f64;
    let n_neg = positives.iter().filter(|&&p| !p).count().max(1) as f64;
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut points = vec![(0.0, 0.0)];
    let (mut tp, mut fp) = (0.0, 0.0);
    for (i, &idx) in order.iter().enumerate() {
        if positives[idx] {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        let last_of_tie = i + 1 == order.len() || scores[order[i + 1]] != scores[idx];
        if last_of_tie {
            points.push((fp / n_neg, tp / n_pos));
        }
    }
    points
}

/// The standard 15-pixel tolerance at 224 px, scaled to an `n`-pixel input.
pub fn pointing_tolerance(n: usize) -> f64 {
    15.0 * n as f64 / 224.0
}

/// Whether the heatmap's peak pixel lies within `tolerance_px` of a lesion pixel of the `n × n`
/// mask.
pub fn pointing_hit(geometry: &HeatmapGeometry, attention: &[f32], mask: &[u8], tolerance_px: f64) -> bool {
    geometry.peak_pixel(attention).is_ok_and(|peak| near_lesion(peak, mask, geometry.input_size(), tolerance_px))
}

/// Whether pixel `(px, py)` lies within `tolerance_px` of a lesion pixel of the `n × n` mask.
fn near_lesion((px, py): (usize, usize), mask: &[u8], n: usize, tolerance_px: f64) -> bool {
    if mask.len() != n * n {
        return false;
    }
    let reach = tolerance_px.floor() as usize;
    let (y0, y1) = (py.saturating_sub(reach), (py + reach + 1).min(n));
    let (x0, x1) = (px.saturating_sub(reach), (px + reach + 1).min(n));
    (y0..y1).any(|y| {
        (x0..x1).any(|x| {
            let (dx, dy) = (x as f64 - px as f64, y as f64 - py as f64);
            mask[y * n + x] != 0 && dx * dx + dy * dy <= tolerance_px * tolerance_px
        })
    })
}

/// Whether the region of the attention map's peak cell overlaps the lesion.
pub fn pointing_cell_hit(geometry: &HeatmapGeometry, attention: &[f32], mask: &[u8]) -> bool {
    let n = geometry.input_size();
    let Ok((cx, cy)) = geometry.peak_cell(attention) else { return false };
    if mask.len() != n * n {
        return false;
    }
    let region = geometry.cell_region(cx, cy);
    (region.y0..region.y1).any(|y| (region.x0..region.x1).any(|x| mask[y * n + x] != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(k: usize) -> Vec<String> {
        (0..k).map(|i| format!("c{i}")).collect()
    }

    #[test]
    fn hand_computed_three_class_confusion() {
        // true:      0 0 0 1 1 2 2 2
        // predicted: 0 0 1 1 2 2 2 0
        let labels = [0, 0, 0, 1, 1, 2, 2, 2];
        let predicted = [0, 0, 1, 1, 2, 2, 2, 0];
        let probs: Vec<Vec<f32>> = predicted
            .iter()
            .map(|&p| {
                let mut v = vec![0.1f32; 3];
                v[p] = 0.8;
                v
            })
            .collect();
        let m = compute(&names(3), &labels, &predicted, &probs);
        assert_eq!(m.confusion, vec![vec![2, 1, 0], vec![0, 1, 1], vec![1, 0, 2]]);
        assert!((m.accuracy - 5.0 / 8.0).abs() < 1e-12);
        // Class 0: TP 2, FN 1, FP 1, TN 4. Class 1: TP 1, FN 1, FP 1, TN 5. Class 2: TP 2, FN 1, FP 1, TN 4.
        let c0 = &m.per_class[0];
        assert!((c0.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((c0.sensitivity - 2.0 / 3.0).abs() < 1e-12);
        assert!((c0.specificity - 4.0 / 5.0).abs() < 1e-12);
        assert!((c0.f1 - 4.0 / 6.0).abs() < 1e-12);
        let c1 = &m.per_class[1];
        assert!((c1.precision - 0.5).abs() < 1e-12 && (c1.sensitivity - 0.5).abs() < 1e-12);
        assert!((c1.specificity - 5.0 / 6.0).abs() < 1e-12);
        let f1 = (4.0 / 6.0 + 0.5 + 4.0 / 6.0) / 3.0;
        assert!((m.macro_f1 - f1).abs() < 1e-12);
        let spe = (0.8 + 5.0 / 6.0 + 0.8) / 3.0;
        assert!((m.macro_specificity - spe).abs() < 1e-12);
    }

    #[test]
    fn never_predicted_class_has_zero_precision() {
        let m = compute(&names(2), &[0, 1], &[0, 0], &[vec![0.9, 0.1], vec![0.6, 0.4]]);
        assert_eq!(m.per_class[1].precision, 0.0);
        assert_eq!(m.per_class[1].sensitivity, 0.0);
    }

    #[test]
    fn auc_hand_cases() {
        assert_eq!(auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]), Some(0.75));
        assert_eq!(auc(&[0.5, 0.5], &[true, false]), Some(0.5), "ties count half");
        assert_eq!(auc(&[0.2, 0.9], &[false, true]), Some(1.0));
        assert_eq!(auc(&[0.2, 0.9], &[true, true]), None);
        let roc = roc_curve(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]);
        assert_eq!(roc, vec![(0.0, 0.0), (0.0, 0.5), (0.5, 0.5), (0.5, 1.0), (1.0, 1.0)]);
    }

    #[test]
    fn pointing_game_standard_and_cell_level() {
        // 7×7 map over 224 px; the lesion is a 20×20 square at [150, 170)².
        let mut mask = vec![0u8; 224 * 224];
        for y in 150..170 {
            for x in 150..170 {
                mask[y * 224 + x] = 1;
            }
        }
        let geometry = HeatmapGeometry::new(7, 224).unwrap();
        let mut att = [0.0f32; 49];
        // Cell (4, 4) is centred on pixel 159: inside the lesion.
        att[4 * 7 + 4] = 1.0;
        assert!(pointing_hit(&geometry, &att, &mask, 15.0));
        assert!(pointing_cell_hit(&geometry, &att, &mask));
        // Cell (5, 5) is centred on 191: 21 px from the lesion edge (22 on the diagonal) — a miss at 15 px,
        // though its region [176, 208)² does not overlap either.
        att = [0.0; 49];
        att[5 * 7 + 5] = 1.0;
        assert!(!pointing_hit(&geometry, &att, &mask, 15.0));
        assert!(!pointing_cell_hit(&geometry, &att, &mask));
        // A peak 10 px right of the lesion (column 179, row 159) is a hit within the tolerance.
        let tolerance_case = HeatmapGeometry::new(224, 224).unwrap();
        let mut fine = vec![0.0f32; 224 * 224];
        fine[159 * 224 + 179] = 1.0;
        assert!(pointing_hit(&tolerance_case, &fine, &mask, 15.0));
        assert!(!pointing_hit(&tolerance_case, &fine, &mask, 9.0));
        let image = LesionImage { maps: LesionMaps::new(&att, 7, &att, 7), mask: &mask };
        let game = PointingGame::score([image], 224);
        assert_eq!((game.hits, game.cell_hits, game.attention_hits, game.total), (0, 0, 0, 1));
        // The centre (112, 112) is 38 px from the lesion: the centre baseline misses it; a lesion
        // around the centre is a centre hit whatever the heatmap says.
        assert_eq!(game.centre_hits, 0);
        let mut central = vec![0u8; 224 * 224];
        central[120 * 224 + 100] = 1;
        let image = LesionImage { mask: &central, ..image };
        assert_eq!(PointingGame::score([image], 224).centre_hits, 1);
        assert!((pointing_tolerance(160) - 15.0 * 160.0 / 224.0).abs() < 1e-12);
    }
}
