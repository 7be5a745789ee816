//! `cargo xtask screenshots`: the documentation's pictures of the device, made by the device's own
//! code. `cdnet-edge render` draws one phantom frame (`--seed 7 --frame 2`, a retinal detachment) on both
//! layouts (`docs/img/edge-800x480.png`, `edge-320x240.png`). One phantom sweep is streamed over a pseudo-terminal to `cdnet-edge` with the shipped demo
//! bundle; its last screen (live frame, exam line, key frame) becomes `docs/img/edge-800x480-exam.png`
//! and the referral sheet of the exam `docs/img/referral-sheet.png`. The sheet carries the time it
//! was made; everything else on both is the same on every run on the same machine.

use crate::demo::serve;
use crate::util::{self, cargo, root};
use anyhow::{Context, Result, bail};
use clap::Args;
use std::path::PathBuf;
use std::process::Command;

/// Options of `cargo xtask screenshots`.
#[derive(Args, Debug, Clone)]
pub struct ScreenshotsArgs {
    /// The bundle shown.
    #[arg(long, default_value = "models/demo-phantom")]
    pub model: PathBuf,
    /// Which sweeps (`cdnet-probe-sim --source sweeps:SEED:EYE`).
    #[arg(long, default_value_t = 3)]
    pub sweep: u64,
    /// Which eye of them is streamed (its class is EYE mod 5 in the phantom's order: 7 = RD).
    #[arg(long, default_value_t = 7)]
    pub eye: usize,
    /// Where the pictures go.
    #[arg(long, default_value = "docs/img")]
    pub out: PathBuf,
}

/// Frames of one sweep (`cdnet_edge::sim::SWEEP_FRAMES`).
const SWEEP_FRAMES: usize = 24;

pub fn run(args: ScreenshotsArgs) -> Result<()> {
    // The same packages as `cargo xtask demo` builds, so cargo resolves the same features and reuses
    // its artefacts instead of building tract a second time.
    let packages = ["build", "--release", "-p", "cdnet-edge", "--bins", "-p", "cdnet-host", "--bin", "cdnet"];
    util::run(cargo().current_dir(root()).args(packages))?;
    let work = root().join("target/screenshots");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("cannot clear {}", work.display()))?;
    }
    std::fs::create_dir_all(&work)?;
    let model = root().join(&args.model);
    let served = serve(&work, &model, "fp32", &format!("sweeps:{}:{}", args.sweep, args.eye), SWEEP_FRAMES)?;
    let referrals = work.join("session-fp32/referrals");
    let sheets: Vec<PathBuf> = std::fs::read_dir(&referrals)
        .with_context(|| format!("no referral sheet was written ({})", referrals.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "png"))
        .collect();
    let [sheet] = &sheets[..] else {
        bail!("expected one referral sheet in {}, found {sheets:?}", referrals.display())
    };
    let out = root().join(&args.out);
    for (layout, name) in [("800x480", "edge-800x480.png"), ("320x240", "edge-320x240.png")] {
        let mut render = Command::new(root().join("target/release/cdnet-edge"));
        render.arg("render").arg("--model").arg(&model).args(["--frame", "2", "--layout", layout, "--out"]);
        render.arg(out.join(name));
        util::run(&mut render)?;
        println!("{}", out.join(name).display());
    }
    for (from, name) in [(&served.screen, "edge-800x480-exam.png"), (sheet, "referral-sheet.png")] {
        std::fs::copy(from, out.join(name)).with_context(|| format!("cannot copy {}", from.display()))?;
        println!("{}", out.join(name).display());
    }
    Ok(())
}
