//! The allocation policy of a training process.
//!
//! burn's CPU backend allocates a fresh buffer for every intermediate tensor and frees it when the
//! autodiff graph drops it, tens of megabytes at a time at 160–224 px. glibc's malloc serves
//! blocks above its mmap threshold (128 KiB, rising to at most 32 MiB) with a fresh `mmap` and
//! unmaps them on `free`, and trims the heap top after large frees, so every training step pays
//! the kernel to fault in and zero the same gigabytes again: 17 % of a Lite0 step at batch 16,
//! 160 px in `perf` (`clear_page_erms`, page faults, `memset`; docs/performance.md). Keeping freed
//! memory in the heap for reuse is what PyTorch's CPU tuning guides get from jemalloc/tcmalloc;
//! with glibc it is two `mallopt` settings. The peak resident set is the peak of live tensors
//! either way (measured: unchanged, 2.5 GiB).

/// Keep freed memory in the process heap for reuse instead of returning it to the kernel.
///
/// Does nothing outside glibc, or when the user set malloc tunables in `GLIBC_TUNABLES` (theirs
/// win). Call it first thing in `main`, before other threads allocate.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    glibc::keep_freed_memory();
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod glibc {
    use std::ffi::c_int;

    // From glibc's <malloc.h>.
    const M_TRIM_THRESHOLD: c_int = -1;
    const M_MMAP_THRESHOLD: c_int = -3;

    unsafe extern "C" {
        fn mallopt(param: c_int, value: c_int) -> c_int;
    }

    pub(super) fn keep_freed_memory() {
        let user_tuned = std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("glibc.malloc."));
        if user_tuned {
            return;
        }
        // SAFETY: mallopt only changes malloc's thresholds; both values are in its accepted range
        // and the call happens before the process starts its worker threads.
        let accepted =
            unsafe { mallopt(M_MMAP_THRESHOLD, c_int::MAX) == 1 && mallopt(M_TRIM_THRESHOLD, c_int::MAX) == 1 };
        if !accepted {
            tracing::debug!("glibc refused the malloc thresholds; freed tensors go back to the kernel");
        }
    }
}
