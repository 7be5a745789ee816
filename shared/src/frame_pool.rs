//! The threads tract's kernels share, kept awake for the length of one frame.
//!
//! tract hands each operation's matrix product to its rayon pool with `install`. Called from the
//! application's thread, that wakes a pool thread for every operation and puts the caller to sleep
//! until it is done: two futex wake-ups an operation, ~40 a frame, each tens of microseconds on a
//! virtual machine or a board's idle cores, against operations of 50–300 µs. A second thread then
//! gained tract nothing (docs/performance.md, stops 23–24).
//!
//! [`FramePool::run`] instead moves the whole frame onto one pool thread, so tract's `install`s
//! run inline there, and keeps every other pool thread busy-waiting on rayon's queues until the
//! frame ends: each product's second half is picked up as soon as it is queued, and the caller
//! sleeps once a frame, not once an operation. The spinning lasts one frame; between frames the
//! threads sleep as rayon's always do. onnxruntime's pool spins the same way by default.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tract_linalg::multithread::Executor;

/// A rayon pool for tract, and the way to run a frame on it.
#[derive(Debug, Clone)]
pub struct FramePool {
    pool: Arc<rayon::ThreadPool>,
}

impl FramePool {
    /// A pool of `threads` threads.
    pub fn new(threads: usize) -> Result<FramePool, rayon::ThreadPoolBuildError> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|index| std::format!("cdnet-tract-{index}"))
            .build()?;
        // Process-wide: this is the only executor the runtime installs.
        tract_linalg::multithread::set_threading_panel_threshold(HOT_PANEL_THRESHOLD);
        // Below the environment (TRACT_MMM_CHUNKS_PER_THREAD still wins); refused only when
        // another config in this process already chose, and then that choice stands.
        let _ = tract_nnef::tract_core::knobs::set_config_global("TRACT_MMM_CHUNKS_PER_THREAD", HOT_CHUNKS_PER_THREAD);
        Ok(FramePool { pool: Arc::new(pool) })
    }

    /// The executor that makes tract share its work over this pool.
    pub fn executor(&self) -> Executor {
        Executor::MultiThread(self.pool.clone())
    }

    /// Runs `frame` on the pool's first thread while the others wait for work without sleeping.
    ///
    /// Always the same thread, so the frame's tensors come from one allocator arena: letting any
    /// thread take the frame left each thread's glibc arena holding a frame's worth of freed
    /// tensors (10–16 MiB more peak RSS on the field model, fp32 and int8).
    pub fn run<R: Send>(&self, frame: impl FnOnce() -> R + Send) -> R {
        let frame = Mutex::new(Some(frame));
        let answer = Mutex::new(None);
        let done = AtomicBool::new(false);
        self.pool.broadcast(|context| {
            if context.index() != FRAME_THREAD {
                return take_work_until(&done);
            }
            let _end = EndOfFrame(&done);
            if let Some(frame) = lock(&frame).take() {
                *lock(&answer) = Some(frame());
            }
        });
        // `broadcast` returns once every thread's job has, so the frame thread's has run.
        lock(&answer).take().expect("the frame thread ran the frame")
    }
}

/// Fewest tiles a matrix product must have to be shared out. tract's default (64) prices waking a
/// sleeping thread; with the others already awake, 16 gave the field model its best frame on two
/// threads (8: no better; 32 and 64: 2–5 % slower; docs/performance.md, stop 26).
const HOT_PANEL_THRESHOLD: usize = 16;

/// Chunks per thread a split matrix product is cut into. tract's default (4) leaves slack for
/// threads that progress unevenly, paid for in work stealing: with every thread already spinning
/// here, the steals cost more than the slack saves — on the field model's 10×10 and 5×5 products
/// two threads ran no faster than one (`m 672 k 112 n 100`: 84 → 77 µs; `m 320 k 1152 n 25`:
/// 114 → 121 µs), and one chunk a thread ran them 1.9× and 2.0× faster; the field frame at two
/// threads 4.31 → 3.75 ms (docs/performance.md, stop 28). Read once, at the first split product.
const HOT_CHUNKS_PER_THREAD: &str = "1";

/// The pool thread frames run on.
const FRAME_THREAD: usize = 0;

/// The guarded value; a lock poisoned by a panicking frame still holds it (the panic itself
/// reaches the caller through `broadcast`).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs whatever work the pool queues until `done`, spinning (never sleeping) in between.
fn take_work_until(done: &AtomicBool) {
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() != Some(rayon::Yield::Executed) {
            std::hint::spin_loop();
        }
    }
}

/// Releases the waiting threads when the frame ends, returning or unwinding.
struct EndOfFrame<'a>(&'a AtomicBool);

impl Drop for EndOfFrame<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;
    use std::collections::BTreeSet;
    use std::sync::mpsc;
    use std::time::Duration;

    /// Runs `f` on its own thread and fails if it has not returned within ten seconds.
    fn within_ten_seconds<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
        let (send, receive) = mpsc::channel();
        std::thread::spawn(move || send.send(f()));
        receive.recv_timeout(Duration::from_secs(10)).expect("the pool hung")
    }

    #[test]
    fn a_frame_runs_on_the_frame_thread_and_its_parallel_work_reaches_the_others() {
        let (frame_thread, sum, workers) = within_ten_seconds(|| {
            let pool = FramePool::new(3).expect("pool");
            let workers = Mutex::new(BTreeSet::new());
            let (frame_thread, sum) = pool.run(|| {
                let sum: u64 = (0..400u64)
                    .into_par_iter()
                    .map(|i| {
                        workers.lock().unwrap().insert(rayon::current_thread_index());
                        std::thread::sleep(Duration::from_micros(50));
                        i * 3
                    })
                    .sum();
                (rayon::current_thread_index(), sum)
            });
            (frame_thread, sum, workers.into_inner().unwrap())
        });
        assert_eq!(frame_thread, Some(FRAME_THREAD), "the frame ran off its thread");
        assert_eq!(sum, 3 * 399 * 400 / 2);
        assert!(!workers.contains(&None), "work ran off the pool: {workers:?}");
        assert!(workers.len() >= 2, "the frame's parallel work stayed on one thread: {workers:?}");
    }

    #[test]
    fn a_frame_that_panics_releases_the_waiting_threads() {
        // Without the release the scope would wait for the spinning threads forever.
        let answer = within_ten_seconds(|| {
            let pool = FramePool::new(2).expect("pool");
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.run(|| panic!("a frame"))));
            assert!(outcome.is_err(), "the panic was lost");
            pool.run(|| 41 + 1)
        });
        assert_eq!(answer, 42);
    }

    #[test]
    fn a_pool_cuts_split_products_one_chunk_a_thread() {
        FramePool::new(2).expect("pool");
        let chunks = tract_linalg::knobs::TRACT_MMM_CHUNKS_PER_THREAD.get();
        match std::env::var("TRACT_MMM_CHUNKS_PER_THREAD") {
            // The environment still decides when it is set.
            Ok(value) => assert_eq!(chunks, value.parse().ok()),
            Err(_) => assert_eq!(chunks, HOT_CHUNKS_PER_THREAD.parse().ok()),
        }
    }
}
