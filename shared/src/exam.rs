//! The exam: from a sweep of frames to one verdict per eye.
//!
//! A clinician sweeps the probe over the eye for seconds; many frames show little (the probe in the
//! air, the lid, half a globe). The exam collects the frames the frame gate passed and answers with
//! the class of the **highest mean probability** over them (soft voting: one confident wrong frame
//! cannot outvote many), its mean probability as the confidence, the number of frames it rests on,
//! and the key frame: the frame most confident in the verdict class. There is no verdict before
//! [`ExamRule::min_frames`] gated frames, so a sweep of only uninformative frames produces none.
//!
//! An exam starts with the probe's session (a new `Hello`) or after [`ExamRule::gap_ms`] without a
//! frame; the caller says which ([`Exam::restart`]), and times are the caller's clock, so the logic
//! is a pure function of its inputs.

use serde::{Deserialize, Serialize};
use std::vec::Vec;

/// How frames become a verdict (the model card's `exam` section).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExamRule {
    /// Gated frames needed before there is a verdict.
    pub min_frames: usize,
    /// A pause longer than this (milliseconds) with no frame ends the exam.
    pub gap_ms: u64,
    /// Mean probability the verdict class needs for the verdict to be conclusive; below it the
    /// exam says "inconclusive" (the frames disagree: nothing in view that the model can read).
    pub min_confidence: f32,
}

impl Default for ExamRule {
    fn default() -> Self {
        // min_confidence 0.65: chosen on sweeps of seed 1 (`cdnet sweeps --seed 1 --per-class 10`),
        // where uninformative-only sweeps reached 0.63 and 43 of 50 eye sweeps exceeded 0.65;
        // measured on other seeds in docs/results.md.
        ExamRule { min_frames: 8, gap_ms: 5_000, min_confidence: 0.65 }
    }
}

impl ExamRule {
    /// Every field in range; errors name the field.
    pub fn validate(&self) -> Result<(), std::string::String> {
        if self.min_frames == 0 || self.min_frames > 10_000 {
            return Err(std::format!("exam.min_frames = {} must lie in 1…10000", self.min_frames));
        }
        if self.gap_ms == 0 {
            return Err("exam.gap_ms must be positive".into());
        }
        if !(0.0..=1.0).contains(&self.min_confidence) {
            return Err(std::format!("exam.min_confidence = {} must be a probability (0…1)", self.min_confidence));
        }
        Ok(())
    }
}

/// The frame most confident in one class so far.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyFrame {
    /// Its sequence number.
    pub seq: u32,
    /// Its probability of the class.
    pub probability: f32,
}

/// The exam's answer so far.
#[derive(Debug, Clone, PartialEq)]
pub struct ExamVerdict {
    /// Verdict class.
    pub class: usize,
    /// Its mean probability over the exam's gated frames.
    pub confidence: f32,
    /// `confidence` reaches the rule's `min_confidence`: show the class; otherwise "inconclusive".
    pub conclusive: bool,
    /// Mean probability of every class (the per-class evidence).
    pub evidence: Vec<f32>,
    /// Gated frames the verdict rests on.
    pub frames: usize,
    /// Frames the gate refused during the exam.
    pub refused: usize,
    /// The frame most confident in the verdict class.
    pub key_frame: KeyFrame,
}

/// One exam in progress.
#[derive(Debug, Clone, PartialEq)]
pub struct Exam {
    rule: ExamRule,
    sums: Vec<f64>,
    best: Vec<Option<KeyFrame>>,
    frames: usize,
    refused: usize,
    last_ms: Option<u64>,
}

/// What adding a frame did to the exam.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExamEvent {
    /// The frame joined the running exam.
    Continued,
    /// The pause before it exceeded the rule's gap: the old exam ended and this frame began a new one.
    Restarted,
}

impl Exam {
    /// An empty exam over `classes` classes.
    pub fn new(rule: ExamRule, classes: usize) -> Self {
        Exam {
            rule,
            sums: std::vec![0.0; classes],
            best: std::vec![None; classes],
            frames: 0,
            refused: 0,
            last_ms: None,
        }
    }

    /// Ends the exam and starts an empty one (a new probe session).
    pub fn restart(&mut self) {
        *self = Exam::new(self.rule, self.sums.len());
    }

    /// Whether the exam has seen no frame at all.
    pub fn is_empty(&self) -> bool {
        self.frames == 0 && self.refused == 0
    }

    fn tick(&mut self, now_ms: u64) -> ExamEvent {
        let gap = self.ends_at(now_ms);
        if gap {
            self.restart();
        }
        self.last_ms = Some(now_ms);
        if gap { ExamEvent::Restarted } else { ExamEvent::Continued }
    }

    /// Adds a classified frame (its class probabilities) at `now_ms`. Probabilities of the wrong
    /// length or not finite are not evidence and are ignored.
    pub fn add_classified(&mut self, seq: u32, probabilities: &[f32], now_ms: u64) -> ExamEvent {
        let event = self.tick(now_ms);
        if probabilities.len() != self.sums.len() || probabilities.iter().any(|p| !p.is_finite()) {
            return event;
        }
        self.frames += 1;
        for ((sum, best), &p) in self.sums.iter_mut().zip(&mut self.best).zip(probabilities) {
            *sum += p as f64;
            if best.is_none_or(|b| p > b.probability) {
                *best = Some(KeyFrame { seq, probability: p });
            }
        }
        event
    }

    /// Counts a frame the gate refused at `now_ms` (it keeps the exam alive, adds no evidence).
    pub fn add_refused(&mut self, now_ms: u64) -> ExamEvent {
        let event = self.tick(now_ms);
        self.refused += 1;
        event
    }

    /// The rule.
    pub fn rule(&self) -> ExamRule {
        self.rule
    }

    /// The verdict, once at least `min_frames` gated frames are in (conclusive or not).
    pub fn verdict(&self) -> Option<ExamVerdict> {
        if self.frames < self.rule.min_frames {
            return None;
        }
        let evidence: Vec<f32> = self.sums.iter().map(|s| (s / self.frames as f64) as f32).collect();
        let (class, &confidence) = evidence.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1))?;
        Some(ExamVerdict {
            class,
            confidence,
            conclusive: confidence >= self.rule.min_confidence,
            frames: self.frames,
            refused: self.refused,
            key_frame: self.best[class]?,
            evidence,
        })
    }

    /// Whether a frame at `now_ms` would start a new exam: the pause since the last frame is longer
    /// than the rule's gap. The caller can then close this exam (write its record) first, and an
    /// idle device can close it without waiting for the next frame.
    pub fn ends_at(&self, now_ms: u64) -> bool {
        self.last_ms.is_some_and(|last| now_ms.saturating_sub(last) > self.rule.gap_ms)
    }

    /// The frame most confident in `class` so far.
    pub fn key_frame(&self, class: usize) -> Option<KeyFrame> {
        self.best.get(class).copied().flatten()
    }

    /// Gated and refused frames so far.
    pub fn counts(&self) -> (usize, usize) {
        (self.frames, self.refused)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule() -> ExamRule {
        ExamRule { min_frames: 3, gap_ms: 1000, min_confidence: 0.6 }
    }

    #[test]
    fn no_verdict_before_enough_gated_frames() {
        let mut exam = Exam::new(rule(), 3);
        for t in 0..50 {
            exam.add_refused(t * 10);
        }
        assert_eq!(exam.verdict(), None, "refused frames alone gave a verdict");
        exam.add_classified(1, &[0.1, 0.8, 0.1], 600);
        exam.add_classified(2, &[0.1, 0.7, 0.2], 700);
        assert_eq!(exam.verdict(), None);
        exam.add_classified(3, &[0.2, 0.6, 0.2], 800);
        let verdict = exam.verdict().unwrap();
        assert_eq!((verdict.class, verdict.frames, verdict.refused), (1, 3, 50));
        assert!((verdict.confidence - 0.7).abs() < 1e-6);
        assert!(verdict.conclusive);
        for seq in 4..10 {
            exam.add_classified(seq, &[0.5, 0.0, 0.5], 900);
        }
        let spread = exam.verdict().unwrap();
        assert!(!spread.conclusive, "frames that disagree gave a conclusive verdict: {spread:?}");
        assert_eq!(verdict.key_frame, KeyFrame { seq: 1, probability: 0.8 });
    }

    #[test]
    fn soft_voting_is_not_swayed_by_one_confident_frame() {
        let mut exam = Exam::new(rule(), 2);
        exam.add_classified(0, &[0.0, 1.0], 0);
        for seq in 1..5 {
            exam.add_classified(seq, &[0.7, 0.3], seq as u64 * 10);
        }
        let verdict = exam.verdict().unwrap();
        assert_eq!(verdict.class, 0);
        assert_eq!(verdict.key_frame.seq, 1, "the first of the equally confident class-0 frames");
    }

    #[test]
    fn a_pause_longer_than_the_gap_starts_a_new_exam() {
        let mut exam = Exam::new(rule(), 2);
        for seq in 0..3 {
            assert_eq!(exam.add_classified(seq, &[0.9, 0.1], seq as u64 * 100), ExamEvent::Continued);
        }
        assert_eq!(exam.verdict().unwrap().class, 0);
        assert_eq!(exam.key_frame(0), Some(KeyFrame { seq: 0, probability: 0.9 }));
        assert!(!exam.ends_at(1_200) && exam.ends_at(1_201), "the gap is 1000 ms after the frame at 200");
        assert_eq!(exam.add_classified(10, &[0.2, 0.8], 5_000), ExamEvent::Restarted);
        assert_eq!(exam.counts(), (1, 0));
        assert_eq!(exam.verdict(), None);
        exam.restart();
        assert!(exam.is_empty());
    }

    #[test]
    fn malformed_probabilities_are_not_evidence() {
        let mut exam = Exam::new(rule(), 2);
        exam.add_classified(0, &[0.5], 0);
        exam.add_classified(1, &[f32::NAN, 0.5], 1);
        assert_eq!(exam.counts(), (0, 0));
        assert!(rule().validate().is_ok());
        assert!(ExamRule { min_frames: 0, ..rule() }.validate().unwrap_err().contains("exam.min_frames"));
        assert!(ExamRule { min_confidence: 1.5, ..rule() }.validate().unwrap_err().contains("exam.min_confidence"));
    }
}
