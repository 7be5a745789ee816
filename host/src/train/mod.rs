//! Training: the step (every regime and ablation), the loop, checkpoints, metrics and reports.

pub mod allocator;
pub mod augment;
pub mod bench;
mod checkpoint;
pub mod config;
pub mod device;
pub mod eval;
mod heads;
pub mod metrics;
mod range;
pub mod report;
pub mod step;
pub mod trainer;
