//! Test-only helpers shared by the test suites of every crate (a dev-dependency, never shipped).
//!
//! A test that cannot run here (a tool, a Python package or a data set is missing) must say so
//! where a person reads it, and must not pass unseen where the tool is supposed to be present:
//! [`skip`] prints `SKIPPED <test>: <reason>` straight to the process's stderr (libtest's output
//! capture only redirects the print macros), and panics instead when the caller says the
//! environment promised the missing piece: [`in_ci`] for what `.ci/run` installs (qemu, sshd, the
//! Python venv); for the shared data, which a CI machine may lack, `.ci/run` sets `CDNET_DATA_DIR`
//! only when it has the data, so a set variable with a missing data set is the failure.
#![forbid(unsafe_code)]

use std::io::Write;

/// Whether this run must have everything `.ci/run` installs: `CI=true`.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Reports that `test` cannot run because of `reason`: a visible `SKIPPED` line, or, when the
/// environment promised what is missing (`required`), a panic that fails the test.
pub fn skip(test: &str, reason: &str, required: bool) {
    assert!(!required, "{test}: required under CI=true but cannot run: {reason}");
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

/// `len` reproducible values uniform in `[lo, hi)` from `seed` (xorshift64; no RNG crate, so a
/// test's inputs never change with a dependency's version).
pub fn uniform(len: usize, seed: u64, lo: f32, hi: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            lo + (state >> 40) as f32 / (1u64 << 24) as f32 * (hi - lo)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_required_skip_fails() {
        assert!(std::panic::catch_unwind(|| skip("t", "no tool", true)).is_err());
        skip("t", "no tool", false);
    }
}
