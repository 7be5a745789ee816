//! The CDNet edge runtime: receives probe frames over a serial link, runs the exported model with
//! tract, and shows the diagnosis and lesion heatmap on the board's screen.
//!
//! * [`runner`]: the receive → infer → send/draw pipeline (threads that never block each other);
//!   its writer thread (results, heartbeats, session log, referral sheets) is `writer`.
//! * [`exam`]: the probe session's exam (screen line, key frame, run summary) from `shared::exam`.
//! * [`referral`]: the printable referral sheet and session-log record of a finished exam.
//! * [`link`]: the probe link behind a small trait (serial port, pseudo-terminal).
//! * [`screen`]: what the screen shows, drawn with embedded-graphics (800×480 and 320×240).
//! * [`display`]: where it is shown (Linux framebuffer, PNG snapshots, nowhere).
//! * [`session_log`]: the durable, rotated record of every result.
//! * [`sim`]: the probe simulator behind `cdnet-probe-sim`.
//! * [`memory`]: allocator tuning that keeps the load-time peak off the board's RAM.

pub mod display;
pub mod exam;
pub mod link;
pub mod memory;
pub mod referral;
pub mod runner;
pub mod screen;
pub mod session_log;
pub mod sim;
mod writer;
