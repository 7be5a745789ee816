//! The edge's side of an exam (`shared::exam`): each answered frame joins the probe session's exam,
//! which yields the screen's exam line and key frame, and, when the exam ends, the finished exam
//! that becomes a referral sheet and a session-log record (`crate::referral`).
//!
//! An exam ends when a new probe session starts (`Hello`), when no frame came for longer than the
//! card's `exam.gap_ms` (checked while idle too, so the sheet is written when the probe is put
//! down, not when it is picked up again), and when the run stops.

use crate::screen::{ExamLine, ShownFrame};
use cdnet_shared::exam::{Exam, ExamRule, ExamVerdict, KeyFrame};
use cdnet_shared::runtime::FrameVerdict;
use std::sync::Arc;

/// An exam's verdict in the run summary.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ExamReport {
    /// Verdict class (index into the card's labels).
    pub class: usize,
    /// Its mean probability over the exam's gated frames.
    pub confidence: f32,
    /// Whether that reaches the card's `exam.min_confidence` ("inconclusive" otherwise).
    pub conclusive: bool,
    /// Gated frames it rests on.
    pub frames: usize,
    /// Frames the gate refused during the exam.
    pub refused: usize,
    /// The frame most confident in the verdict class.
    pub key_frame: u32,
}

impl From<&ExamVerdict> for ExamReport {
    fn from(v: &ExamVerdict) -> Self {
        ExamReport {
            class: v.class,
            confidence: v.confidence,
            conclusive: v.conclusive,
            frames: v.frames,
            refused: v.refused,
            key_frame: v.key_frame.seq,
        }
    }
}

/// A class's key frame, kept whole: the picture and what the network said about it.
#[derive(Debug, Clone)]
pub struct KeyFrameShot {
    /// The class it is the key frame of.
    pub class: usize,
    /// Its probability of that class.
    pub probability: f32,
    /// The frame as received, with its (classified) verdict.
    pub frame: Arc<ShownFrame>,
}

/// An exam that has ended with a verdict (conclusive or not).
#[derive(Debug, Clone)]
pub struct FinishedExam {
    /// Exams started in this run, counting this one (1, 2, …).
    pub number: u64,
    /// Wall clock of its first frame, milliseconds since the Unix epoch.
    pub started_ms: u128,
    /// Wall clock of its last frame.
    pub ended_ms: u128,
    /// The verdict and per-class evidence.
    pub verdict: ExamVerdict,
    /// Key frames, most evident class first (the verdict's), one per class that has one.
    pub key_frames: Vec<KeyFrameShot>,
}

/// The running exam with what the screen and the referral sheet need beyond `shared::exam`.
#[derive(Debug)]
pub struct ExamTracker {
    exam: Exam,
    number: u64,
    started_ms: Option<u128>,
    last_ms: u128,
    shots: Vec<Option<KeyFrameShot>>,
}

impl ExamTracker {
    /// No exam yet, for a card with `classes` classes.
    pub fn new(rule: ExamRule, classes: usize) -> Self {
        ExamTracker {
            exam: Exam::new(rule, classes),
            number: 0,
            started_ms: None,
            last_ms: 0,
            shots: vec![None; classes],
        }
    }

    /// Adds an answered frame at `now_ms` (the run's clock) and `wall_ms` (the wall clock). Returns
    /// the exam this frame ended, if it had a verdict: the one before a new session (`new_session`,
    /// a `Hello` since the last frame) or before a pause longer than the gap.
    pub fn record(
        &mut self,
        new_session: bool,
        frame: &Arc<ShownFrame>,
        now_ms: u64,
        wall_ms: u128,
    ) -> Option<FinishedExam> {
        let ended = if new_session || self.exam.ends_at(now_ms) { self.finish() } else { None };
        if self.started_ms.is_none() {
            self.started_ms = Some(wall_ms);
            self.number += 1;
        }
        self.last_ms = wall_ms;
        match &frame.verdict {
            FrameVerdict::Classified(inference) => {
                let before: Vec<Option<KeyFrame>> = (0..self.shots.len()).map(|c| self.exam.key_frame(c)).collect();
                self.exam.add_classified(frame.seq, &inference.probabilities, now_ms);
                for (class, shot) in self.shots.iter_mut().enumerate() {
                    match self.exam.key_frame(class) {
                        Some(key) if before[class] != Some(key) => {
                            *shot = Some(KeyFrameShot { class, probability: key.probability, frame: frame.clone() });
                        }
                        _ => {}
                    }
                }
            }
            FrameVerdict::NoEye { .. } => {
                self.exam.add_refused(now_ms);
            }
        }
        ended
    }

    /// Ends the exam if no frame came for longer than the gap (call while waiting for frames).
    pub fn finish_if_idle(&mut self, now_ms: u64) -> Option<FinishedExam> {
        if self.exam.ends_at(now_ms) { self.finish() } else { None }
    }

    /// Ends the exam now; its record if it reached a verdict. The next frame starts a new one.
    pub fn finish(&mut self) -> Option<FinishedExam> {
        let verdict = self.exam.verdict();
        let started_ms = self.started_ms.take();
        let mut shots: Vec<KeyFrameShot> = self.shots.iter_mut().filter_map(Option::take).collect();
        self.exam.restart();
        let (verdict, started_ms) = (verdict?, started_ms?);
        shots.sort_by(|a, b| verdict.evidence[b.class].total_cmp(&verdict.evidence[a.class]));
        Some(FinishedExam { number: self.number, started_ms, ended_ms: self.last_ms, verdict, key_frames: shots })
    }

    /// The screen's exam line.
    pub fn line(&self) -> ExamLine {
        let (frames, refused) = self.exam.counts();
        ExamLine {
            verdict: self.exam.verdict().map(|v| (v.class, v.confidence, v.conclusive)),
            frames,
            refused,
            min_frames: self.exam.rule().min_frames,
        }
    }

    /// The key frame the screen shows beside the live one: the verdict class's, and only for a
    /// conclusive verdict (a key frame labelled with a class would read as a diagnosis).
    pub fn shown_key_frame(&self) -> Option<KeyFrameShot> {
        let verdict = self.exam.verdict().filter(|v| v.conclusive)?;
        self.shots.get(verdict.class).cloned().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cdnet_shared::Rect;
    use cdnet_shared::gate::Refusal;
    use cdnet_shared::runtime::Inference;

    fn classified(seq: u32, probabilities: &[f32]) -> Arc<ShownFrame> {
        let class = if probabilities[0] >= probabilities[1] { 0 } else { 1 };
        let inference = Inference {
            probabilities: probabilities.to_vec(),
            class,
            confidence: probabilities[class],
            uncertain: false,
            attention: vec![0.0; 4],
            attention_side: 2,
            heatmap: vec![0.0; 4],
            heatmap_side: 2,
            zoom_box: None,
            crop: Rect { x0: 0, y0: 0, x1: 4, y1: 4 },
            gate_distance: Some(1.0),
        };
        Arc::new(ShownFrame {
            seq,
            width: 4,
            height: 4,
            pixels: vec![0; 16],
            verdict: FrameVerdict::Classified(inference),
        })
    }

    fn refused(seq: u32) -> Arc<ShownFrame> {
        let crop = Rect { x0: 0, y0: 0, x1: 4, y1: 4 };
        let verdict = FrameVerdict::NoEye { refusal: Refusal::Blank { contrast: 0.0 }, crop };
        Arc::new(ShownFrame { seq, width: 4, height: 4, pixels: vec![0; 16], verdict })
    }

    fn rule() -> ExamRule {
        ExamRule { min_frames: 3, gap_ms: 1_000, min_confidence: 0.6 }
    }

    #[test]
    fn key_frames_are_the_exams_and_the_record_comes_when_the_exam_ends() {
        let mut tracker = ExamTracker::new(rule(), 2);
        let frames = [classified(0, &[0.3, 0.7]), classified(1, &[0.1, 0.9]), refused(2), classified(3, &[0.6, 0.4])];
        for (t, frame) in frames.iter().enumerate() {
            if t == 3 {
                assert!(tracker.shown_key_frame().is_none(), "a key frame before there is a verdict");
            }
            assert!(tracker.record(false, frame, t as u64 * 100, 1_000 + t as u128).is_none());
        }
        assert!(tracker.record(false, &classified(4, &[0.2, 0.8]), 400, 1_004).is_none());
        let shown = tracker.shown_key_frame().expect("a conclusive verdict shows its key frame");
        assert_eq!((shown.class, shown.frame.seq), (1, 1));
        assert!(tracker.finish_if_idle(1_400).is_none(), "the gap has not passed");
        let done = tracker.finish_if_idle(1_401).expect("the pause ended the exam");
        assert_eq!((done.number, done.started_ms, done.ended_ms), (1, 1_000, 1_004));
        assert_eq!((done.verdict.class, done.verdict.frames, done.verdict.refused), (1, 4, 1));
        let keys: Vec<(usize, u32)> = done.key_frames.iter().map(|k| (k.class, k.frame.seq)).collect();
        assert_eq!(keys, [(1, 1), (0, 3)], "verdict class first, then by evidence");
        assert!(tracker.finish().is_none(), "an exam without frames has no record");
    }

    #[test]
    fn a_new_session_ends_the_exam_and_too_few_frames_leave_no_record() {
        let mut tracker = ExamTracker::new(rule(), 2);
        for seq in 0..3 {
            tracker.record(false, &classified(seq, &[0.9, 0.1]), seq as u64, seq as u128);
        }
        let done = tracker.record(true, &classified(0, &[0.1, 0.9]), 10, 10).expect("Hello ends the exam");
        assert_eq!((done.number, done.verdict.class, done.verdict.frames), (1, 0, 3));
        assert_eq!(tracker.line().frames, 1, "the new session's frame starts the next exam");
        assert!(tracker.record(false, &refused(1), 5_000, 5_000).is_none(), "one gated frame: no verdict, no record");
        assert!(tracker.finish().is_none());
    }
}
