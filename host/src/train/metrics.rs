//! Classification metrics as the paper reports them, plus localisation.
//!
//! Precision, sensitivity (recall), specificity and F1 are computed per class and **macro**-averaged
//! (the mean of the per-class values); accuracy is overall (correct / total); AUC is one-vs-rest
//! ROC-AUC on the softmax probabilities, macro-averaged over classes that have both positives and
//! negatives (sklearn `roc_auc_score(multi_class="ovr", average="macro")`). A class that is never
//! predicted has precision 0 (sklearn's `zero_division=0`). The pointing game counts a lesion image
//! as a hit when the maximum of its upsampled attention map falls inside the lesion mask.

use cdnet_shared::Rect;
use cdnet_shared::resize::resize_bilinear;
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
}

/// Localisation score.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PointingGame {
    /// Lesion images whose attention peak lies in the lesion.
    pub hits: usize,
    /// Lesion images scored.
    pub total: usize,
    /// hits / total.
    pub score: f64,
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

/// Whether the attention peak, upsampled to `n × n` as the heatmap is, lies in the lesion.
pub fn pointing_hit(attention: &[f32], side: usize, mask: &[u8], n: usize) -> bool {
    let mut up = vec![0.0f32; n * n];
    if side == 0 || resize_bilinear(attention, side, side, Rect::full(side, side), &mut up, n, n).is_err() {
        return false;
    }
    let peak = up.iter().enumerate().fold(0, |best, (i, v)| if *v > up[best] { i } else { best });
    mask.get(peak).is_some_and(|&m| m != 0)
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
    fn pointing_game_uses_the_upsampled_peak() {
        let mut att = [0.0f32; 4];
        att[3] = 1.0; // bottom-right cell of 2×2
        let mut mask = vec![0u8; 64];
        for y in 4..8 {
            for x in 4..8 {
                mask[y * 8 + x] = 1;
            }
        }
        assert!(pointing_hit(&att, 2, &mask, 8));
        att = [1.0, 0.0, 0.0, 0.0];
        assert!(!pointing_hit(&att, 2, &mask, 8));
    }
}
