//! Exams on phantom sweeps through the device's path (frame gate, network, `shared::exam`) with the
//! shipped demo bundle: the exam is at least as accurate as its frames, and a sweep of
//! uninformative frames only (air, lid, globe at the edge) gives no verdict. The 100-sweep figures
//! in docs/results.md come from `cdnet sweeps`, which runs the same code.

use cdnet_host::sweeps::score_sweeps;
use cdnet_integration::shipped_bundle;
use cdnet_shared::bundle::Bundle;
use cdnet_shared::phantom::{Difficulty, PhantomConfig, SweepConfig};
use cdnet_shared::runtime::{Pipeline, Threads};

#[test]
fn exams_beat_frames_and_empty_sweeps_give_no_verdict() {
    let pipeline = Pipeline::load(Bundle::open(&shipped_bundle("demo-phantom")).unwrap(), Threads(1)).unwrap();
    let config = SweepConfig {
        frames: 16,
        uninformative: 0.35,
        phantom: PhantomConfig { size: 256, difficulty: Difficulty::Hard.value() },
    };
    let report = score_sweeps(&pipeline, 3, 11, &config).unwrap();
    eprintln!("{report}");
    assert_eq!((report.sweeps, report.frames), (15, 15 * 16), "the empty sweeps are counted apart");
    assert!(report.uninformative > 0 && report.classified < report.frames, "{report:?}");
    assert!(report.exam_accuracy() >= report.frame_accuracy(), "{report:?}");
    assert_eq!(report.empty_sweeps_with_verdict, 0, "uninformative frames alone gave a verdict: {report:?}");
}
