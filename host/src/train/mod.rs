//! Training: the step (every regime and ablation), the loop, checkpoints, metrics and reports.

pub mod step;
