//! The edge's side of an exam (`shared::exam`): each answered frame joins the probe session's exam,
//! which yields the screen's exam line and, at the end of a run, the summary's verdict.

use crate::screen::ExamLine;
use cdnet_shared::exam::{Exam, ExamEvent, ExamVerdict};
use cdnet_shared::runtime::FrameVerdict;

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

impl From<ExamVerdict> for ExamReport {
    fn from(v: ExamVerdict) -> Self {
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

/// Adds a frame's verdict to the exam (a new exam first when `new_session`: a `Hello` was accepted
/// since the last frame; the exam itself restarts after a long pause) and returns the screen's
/// exam line.
pub fn record_frame(exam: &mut Exam, new_session: bool, seq: u32, verdict: &FrameVerdict, now_ms: u64) -> ExamLine {
    if new_session {
        exam.restart();
    }
    let event = match verdict {
        FrameVerdict::Classified(inference) => exam.add_classified(seq, &inference.probabilities, now_ms),
        FrameVerdict::NoEye { .. } => exam.add_refused(now_ms),
    };
    if event == ExamEvent::Restarted {
        tracing::info!("a new exam starts at frame {seq} (pause longer than {} ms)", exam.rule().gap_ms);
    }
    let (frames, refused) = exam.counts();
    ExamLine {
        verdict: exam.verdict().map(|v| (v.class, v.confidence, v.conclusive)),
        frames,
        refused,
        min_frames: exam.rule().min_frames,
    }
}
