//! Project automation, run as `cargo xtask TASK` (matklad's xtask pattern: a plain binary crate
//! behind a cargo alias, no extra tools to install):
//!
//! * `demo`: the main job end to end on a fresh machine (phantom data → train → export → probe
//!   simulator ⇄ edge runtime over a pseudo-terminal → summary).
//! * `dist`: cross-builds the edge runtime for a board and packs a versioned, hashed tarball.
//! * `flash`: deploys that tarball to a board over ssh with an atomic switch, a health check and
//!   rollback.
//! * `screenshots`: the documentation's pictures of the exam screen and a referral sheet, made by
//!   streaming a phantom sweep to the edge.
//! * `gpu-check`: builds the CUDA trainer and a self-contained folder that checks it on a GPU
//!   machine (burn-cuda vs PyTorch step, end-to-end training and export).
//!
//! xtask never links burn or tract; it drives `cargo` and the built binaries (and reads model
//! cards with `shared`'s `bundle` feature).

mod board;
mod demo;
mod dist;
mod flash;
mod gpu_check;
mod screenshots;
mod util;

use clap::{Parser, Subcommand};

/// CDNet project tasks.
#[derive(Parser, Debug)]
#[command(name = "cargo xtask", version, about, arg_required_else_help = false)]
struct Cli {
    #[command(subcommand)]
    task: Option<Task>,
}

#[derive(Subcommand, Debug)]
enum Task {
    /// Run the whole chain on a built-in phantom data set: train, evaluate, export, serve over a pty.
    Demo(demo::DemoArgs),
    /// Cross-build the edge runtime for a board and pack a versioned tarball with the model bundle.
    Dist(dist::DistArgs),
    /// Deploy a dist tarball to a board over ssh: atomic switch, restart, health check, rollback.
    Flash(flash::FlashArgs),
    /// Build the CUDA trainer and a folder that checks it on an NVIDIA GPU machine (no network).
    GpuCheck(gpu_check::GpuCheckArgs),
    /// Regenerate docs/img's exam screen and referral sheet by streaming a sweep to the edge.
    Screenshots(screenshots::ScreenshotsArgs),
}

fn main() {
    let cli = Cli::parse();
    let outcome = match cli.task {
        None => {
            println!("cargo xtask TASK — tasks:");
            println!(
                "  demo    phantom data → train cpu-small → export fp32+int8 → simulator ⇄ edge over a pty (--quick: shipped model)"
            );
            println!(
                "  dist    cross-build cdnet-edge for a board and pack target/dist/cdnet-edge-VERSION-BOARD.tar.gz"
            );
            println!(
                "  flash   deploy a dist tarball to a board over ssh, switch atomically, health-check, roll back on failure"
            );
            println!(
                "  gpu-check  build the CUDA trainer and target/gpu-check/, a folder that times it against PyTorch on a GPU"
            );
            println!(
                "  screenshots  stream a phantom sweep to the edge; write docs/img's exam screen and referral sheet"
            );
            println!("boards: {}", board::BOARDS.iter().map(|b| b.name).collect::<Vec<_>>().join(", "));
            println!("`cargo xtask TASK --help` for the options of a task.");
            Ok(())
        }
        Some(Task::Demo(args)) => demo::run(args),
        Some(Task::Dist(args)) => dist::run(args).map(|_| ()),
        Some(Task::Flash(args)) => flash::run(args),
        Some(Task::GpuCheck(args)) => gpu_check::run(args),
        Some(Task::Screenshots(args)) => screenshots::run(args),
    };
    if let Err(error) = outcome {
        eprintln!("error: {error:#}");
        std::process::exit(1);
    }
}
