//! The `cdnet` command line.

use crate::phantom::{self, Difficulty, PhantomConfig, WriteOptions};
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// Train, evaluate and export CDNet, the fine-grained ocular B-scan classifier.
#[derive(Debug, Parser)]
#[command(name = "cdnet", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    /// Print only errors and final results (no progress bars, no info logs).
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// More log output (-v debug, -vv trace). `RUST_LOG` overrides.
    #[arg(long, short, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a labelled ocular B-scan phantom data set (ImageFolder with masks and sidecars).
    Phantom(PhantomArgs),
}

/// `cdnet phantom`.
#[derive(Debug, Args)]
pub struct PhantomArgs {
    /// Output folder; created, must not exist or be empty.
    #[arg(long)]
    pub out: PathBuf,
    /// Training images per class (Normal, IOT, RD, PSS, VH).
    #[arg(long, default_value_t = 100)]
    pub per_class: usize,
    /// Validation images per class; with this or --test-per-class the set is split into train/, val/, test/.
    #[arg(long, default_value_t = 0)]
    pub val_per_class: usize,
    /// Test images per class.
    #[arg(long, default_value_t = 0)]
    pub test_per_class: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = 256)]
    pub size: usize,
    /// Lesion size/contrast: easy, medium, hard, or a number from 0 (easiest) to 1 (hardest).
    #[arg(long, default_value = "medium", value_parser = parse_difficulty)]
    pub difficulty: f32,
    /// Base seed; the same seed gives the same images.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write a contact sheet PNG (5 images per class, lesion boxes in red) to this path.
    #[arg(long)]
    pub sheet: Option<PathBuf>,
}

fn parse_difficulty(text: &str) -> Result<f32, String> {
    Difficulty::parse(text).ok_or_else(|| format!("`{text}` is not easy, medium, hard or a number between 0 and 1"))
}

/// Entry point of the `cdnet` binary: parses arguments, runs, and prints any error as one line.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.quiet, cli.verbose);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(quiet: bool, verbose: u8) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},burn=warn,cubecl=warn")));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Phantom(args) => run_phantom(args, cli.quiet),
    }
}

fn run_phantom(args: PhantomArgs, quiet: bool) -> Result<()> {
    let config = PhantomConfig { size: args.size, difficulty: args.difficulty };
    if let Some(sheet) = &args.sheet {
        let (rgb, w, h) = phantom::contact_sheet(5, args.seed, &config);
        if let Some(parent) = sheet.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).with_context(|| format!("cannot create {}", parent.display()))?;
        }
        image::save_buffer(sheet, &rgb, w, h, image::ExtendedColorType::Rgb8)
            .with_context(|| format!("cannot write {}", sheet.display()))?;
    }
    if args.size > 4096 {
        bail!("--size {} is larger than the 4096-pixel frames the system handles", args.size);
    }
    let summary = phantom::write_image_folder(&WriteOptions {
        out: args.out.clone(),
        per_class: args.per_class,
        val_per_class: args.val_per_class,
        test_per_class: args.test_per_class,
        seed: args.seed,
        config,
        progress: !quiet,
    })?;
    let splits: Vec<String> = summary.splits.iter().map(|(name, n)| format!("{name} {n}")).collect();
    println!(
        "wrote {} phantom images ({}) to {} in {:.1} s ({:.0} images/s)",
        summary.images,
        splits.join(", "),
        args.out.display(),
        summary.seconds,
        summary.images as f64 / summary.seconds.max(1e-9)
    );
    Ok(())
}
