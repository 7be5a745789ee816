//! Checkpoints of a training run: the progress record, and the file that holds it with the model
//! and optimiser bytes (written atomically, so a power cut leaves the previous one), and the
//! per-epoch seeds that make a resumed run repeat an uninterrupted one.

use super::trainer::EpochRecord;
use crate::model::saved::write_atomic;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Checkpointed progress.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(super) struct TrainState {
    /// Stage of the last completed epoch (1 or 2).
    pub(super) stage: u8,
    /// Epochs completed in that stage.
    pub(super) epochs_done: usize,
    /// History of all epochs so far.
    pub(super) history: Vec<EpochRecord>,
    /// Index in `history` of the best epoch so far, and its score.
    pub(super) best: Option<(usize, f64)>,
}

pub(super) const CHECKPOINT: &str = "checkpoint.ckpt";
const MAGIC: &[u8; 8] = b"CDNETCK1";

/// Writes the state, model and optimiser bytes atomically: magic, then three length-prefixed parts.
pub(super) fn save_checkpoint(path: &Path, state: &TrainState, model: &[u8], optimizer: &[u8]) -> Result<()> {
    let json = serde_json::to_vec(state)?;
    let mut bytes = Vec::with_capacity(8 + 24 + json.len() + model.len() + optimizer.len());
    bytes.extend_from_slice(MAGIC);
    for part in [&json[..], model, optimizer] {
        bytes.extend_from_slice(&(part.len() as u64).to_le_bytes());
        bytes.extend_from_slice(part);
    }
    write_atomic(path, &bytes).with_context(|| format!("cannot write checkpoint {}", path.display()))
}

/// Reads what [`save_checkpoint`] wrote; a damaged file is one error naming it.
pub(super) fn load_checkpoint(path: &Path) -> Result<(TrainState, Vec<u8>, Vec<u8>)> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read checkpoint {}", path.display()))?;
    let corrupt = || anyhow::anyhow!("checkpoint {} is damaged or not a cdnet checkpoint", path.display());
    let mut rest = bytes.strip_prefix(MAGIC).ok_or_else(corrupt)?;
    let mut parts = Vec::new();
    for _ in 0..3 {
        let (len, tail) = rest.split_first_chunk::<8>().ok_or_else(corrupt)?;
        let len = u64::from_le_bytes(*len) as usize;
        let (part, tail) = tail.split_at_checked(len).ok_or_else(corrupt)?;
        parts.push(part.to_vec());
        rest = tail;
    }
    let optimizer = parts.pop().ok_or_else(corrupt)?;
    let model = parts.pop().ok_or_else(corrupt)?;
    let state = serde_json::from_slice(&parts[0]).map_err(|_| corrupt())?;
    Ok((state, model, optimizer))
}

/// SplitMix-style mixing of the seed with stage and epoch.
pub(super) fn epoch_seed(seed: u64, stage: u8, epoch: usize) -> u64 {
    let mut z = seed ^ ((stage as u64) << 56) ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
