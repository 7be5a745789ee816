//! `cdnet sweeps`: frame-level against exam-level accuracy of a bundle on phantom sweeps, through
//! the device's path (frame gate, network: `Pipeline::classify_image`; exam: `shared::exam`).

use anyhow::{Result, bail};
use cdnet_shared::GrayImage;
use cdnet_shared::exam::Exam;
use cdnet_shared::phantom::{PhantomClass, SweepConfig, sweep};
use cdnet_shared::runtime::{FrameVerdict, Pipeline};
use serde::Serialize;

/// What was measured.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SweepReport {
    /// Sweeps of an eye (with informative frames).
    pub sweeps: usize,
    /// Frames in them.
    pub frames: usize,
    /// Frames the gate passed and the network classified.
    pub classified: usize,
    /// Classified frames whose class was the eye's.
    pub frames_correct: usize,
    /// Uninformative frames that the gate passed.
    pub uninformative_classified: usize,
    /// Uninformative frames in the sweeps.
    pub uninformative: usize,
    /// Sweeps whose exam gave a conclusive verdict.
    pub verdicts: usize,
    /// Verdicts that were the eye's class.
    pub verdicts_correct: usize,
    /// Sweeps of uninformative frames only.
    pub empty_sweeps: usize,
    /// Of those, how many produced a verdict (should be 0).
    pub empty_sweeps_with_verdict: usize,
}

impl std::fmt::Display for SweepReport {
    /// One line: frame-level against exam-level accuracy, and the uninformative-only sweeps.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} sweeps, {} frames ({} uninformative, {} of them classified): frame-level accuracy {:.4} \
             ({}/{} classified frames), exam-level accuracy {:.4} ({}/{} sweeps, {} with a verdict); \
             {} of {} uninformative-only sweeps gave a verdict",
            self.sweeps,
            self.frames,
            self.uninformative,
            self.uninformative_classified,
            self.frame_accuracy(),
            self.frames_correct,
            self.classified,
            self.exam_accuracy(),
            self.verdicts_correct,
            self.sweeps,
            self.verdicts,
            self.empty_sweeps_with_verdict,
            self.empty_sweeps
        )
    }
}

impl SweepReport {
    /// Correct classified frames / classified frames.
    pub fn frame_accuracy(&self) -> f64 {
        self.frames_correct as f64 / self.classified.max(1) as f64
    }

    /// Correct verdicts / sweeps (a sweep without a verdict counts as wrong).
    pub fn exam_accuracy(&self) -> f64 {
        self.verdicts_correct as f64 / self.sweeps.max(1) as f64
    }
}

/// Runs one sweep through the gate, the network and an exam; returns the conclusive verdict's class.
fn run_sweep(
    pipeline: &Pipeline,
    class: PhantomClass,
    seed: u64,
    config: &SweepConfig,
    report: &mut SweepReport,
) -> Result<Option<usize>> {
    let card = &pipeline.bundle().card;
    let mut exam = Exam::new(card.exam, card.labels.len());
    for (i, frame) in sweep(class, seed, config).into_iter().enumerate() {
        let now_ms = i as u64 * 100;
        let image = GrayImage::new(frame.size, frame.size, &frame.pixels)?;
        report.frames += 1;
        report.uninformative += usize::from(!frame.kind.is_informative());
        match pipeline.classify_image(&image)? {
            FrameVerdict::Classified(inference) => {
                report.classified += 1;
                report.frames_correct += usize::from(inference.class == class.index());
                report.uninformative_classified += usize::from(!frame.kind.is_informative());
                exam.add_classified(i as u32, &inference.probabilities, now_ms);
            }
            FrameVerdict::NoEye { .. } => {
                exam.add_refused(now_ms);
            }
        }
    }
    Ok(exam.verdict().filter(|v| v.conclusive).map(|v| v.class))
}

/// Scores `per_class` sweeps of each class, then `per_class` sweeps of uninformative frames only.
pub fn score_sweeps(pipeline: &Pipeline, per_class: usize, seed: u64, config: &SweepConfig) -> Result<SweepReport> {
    if pipeline.bundle().card.labels.names() != ["Normal", "IOT", "RD", "PSS", "VH"] {
        bail!(
            "phantom sweeps are ocular B-scans: the bundle must have the five ocular labels (Normal, IOT, RD, PSS, VH)"
        );
    }
    let mut report = SweepReport::default();
    for class in PhantomClass::ALL {
        for k in 0..per_class {
            let eye_seed = seed.wrapping_mul(1_000_003) + (class.index() * per_class + k) as u64;
            let verdict = run_sweep(pipeline, class, eye_seed, config, &mut report)?;
            report.sweeps += 1;
            report.verdicts += usize::from(verdict.is_some());
            report.verdicts_correct += usize::from(verdict == Some(class.index()));
        }
    }
    let empty = SweepConfig { uninformative: 1.0, ..*config };
    let mut scratch = SweepReport::default();
    for k in 0..per_class {
        let class = PhantomClass::ALL[k % PhantomClass::ALL.len()];
        let verdict = run_sweep(pipeline, class, seed.wrapping_add(0xE0E0 + k as u64), &empty, &mut scratch)?;
        report.empty_sweeps += 1;
        report.empty_sweeps_with_verdict += usize::from(verdict.is_some());
    }
    Ok(report)
}
