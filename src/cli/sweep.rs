//! `polyattn sweep KIND`: parameter sweeps that write tables, JSON and plots.
//!
//! - `io`: the simulated I/O of attention against IO24's bounds (MATH.md 5); see
//!   [`crate::harness::io`].

use crate::error::Result;
use crate::harness::io::{self, Preset};
use clap::Subcommand;
use std::path::PathBuf;

/// Arguments of `polyattn sweep`.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// Which sweep.
    #[command(subcommand)]
    pub kind: SweepKind,
}

/// The sweeps.
#[derive(Debug, Subcommand)]
pub enum SweepKind {
    /// I/O of standard, FlashAttention and small-cache attention in the two-level
    /// memory model, over n, d and M (MATH.md 5, IO24).
    Io(IoArgs),
}

/// Arguments of `polyattn sweep io`.
#[derive(Debug, clap::Args)]
pub struct IoArgs {
    /// Grid size: `small` runs in seconds, `full` is the README's.
    #[arg(long, value_enum, default_value_t = Preset::Small)]
    pub preset: Preset,
    /// Output folder for io.md, io.json and the SVG plots.
    #[arg(long, default_value = "results/io")]
    pub out: PathBuf,
}

/// Runs the chosen sweep, prints its summary and writes its files.
pub fn run(args: &SweepArgs) -> Result<()> {
    match &args.kind {
        SweepKind::Io(a) => {
            let report = io::sweep(a.preset)?;
            print!("{}", io::terminal_summary(&report));
            io::write_outputs(&report, &a.out)?;
            println!("wrote io.md, io.json and plots to {}", a.out.display());
            Ok(())
        }
    }
}
