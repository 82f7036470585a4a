//! `polyattn sweep KIND`: parameter sweeps that write tables, JSON and plots.
//!
//! - `io`: the simulated I/O of attention against IO24's bounds (docs/math.md §8); see
//!   [`crate::harness::io_sweep`].

use crate::harness::io_sweep;
use crate::harness::{accuracy, exponent, model_depth, model_time, seed, threshold, Preset};
use clap::Subcommand;
use polyattn::error::Result;
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
    /// memory model, over n, d and M (docs/math.md §8, IO24).
    Io(IoArgs),
    /// The polynomial engine's certified error against n with eps = 1/n.
    ErrorN(PresetArgs),
    /// The whole model's loss and gradients, exact vs polynomial engine, against n.
    TimeN(PresetArgs),
    /// Where the polynomial engine stops paying: entry bound B against n, eps = 1/n,
    /// with the line B = sqrt(ln n) (AS23/AS24's threshold).
    Bound(PresetArgs),
    /// The polynomial engine's gradient difference against the number of layers.
    Depth(PresetArgs),
    /// The polynomial method's cost exponent log(n r) / log n against n, plan-only up
    /// to n = 2^40, under the papers' prescriptions (tau = 1/d, B against sqrt(ln n),
    /// d fixed or growing with log n, eps = n^-a), with the threshold map.
    Exponent(PresetArgs),
    /// ML24's rebuttal experiment redone: d = 4..12, n = 10 * 2^d, N(0,1) inputs,
    /// scores Q K^T / d; error in the standard metric and speedup over the exact engine.
    Seed(PresetArgs),
    /// The polynomial algorithm in MPFR at p = c log2(n) bits (feature `certify`).
    #[cfg(feature = "certify")]
    Bits(PresetArgs),
}

/// Arguments of the sweeps that only take a preset and an output folder.
#[derive(Debug, clap::Args)]
pub struct PresetArgs {
    /// Grid size: `small` runs in seconds, `full` is the README's.
    #[arg(long, value_enum, default_value_t = Preset::Small)]
    pub preset: Preset,
    /// Output folder (default `results/<sweep>`).
    #[arg(long)]
    pub out: Option<PathBuf>,
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
            let report = io_sweep::sweep(a.preset)?;
            out!("{}", io_sweep::terminal_summary(&report));
            io_sweep::write_outputs(&report, &a.out)?;
            outln!("wrote io.md, io.json and plots to {}", a.out.display());
            Ok(())
        }
        SweepKind::ErrorN(a) => {
            let out = a
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from("results/error_n"));
            let report = accuracy::sweep(a.preset)?;
            out!("{}", accuracy::terminal_summary(&report));
            accuracy::write_outputs(&report, &out)?;
            outln!(
                "wrote error_n.md, error_n.json and error_n.svg to {}",
                out.display()
            );
            Ok(())
        }
        SweepKind::Seed(a) => {
            let out = a
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from("results/seed"));
            let report = seed::sweep(a.preset)?;
            out!("{}", seed::terminal_summary(&report));
            seed::write_outputs(&report, &out)?;
            outln!("wrote seed.md and seed.json to {}", out.display());
            Ok(())
        }
        SweepKind::Depth(a) => {
            let out = a
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from("results/depth"));
            let report = model_depth::sweep(a.preset)?;
            out!("{}", model_depth::terminal_summary(&report));
            model_depth::write_outputs(&report, &out)?;
            outln!(
                "wrote depth.md, depth.json and depth.svg to {}",
                out.display()
            );
            Ok(())
        }
        SweepKind::TimeN(a) => {
            let out = a
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from("results/time_n"));
            let report = model_time::sweep(a.preset)?;
            out!("{}", model_time::terminal_summary(&report));
            model_time::write_outputs(&report, &out)?;
            outln!(
                "wrote time_n.md, time_n.json and time_n.svg to {}",
                out.display()
            );
            Ok(())
        }
        SweepKind::Bound(a) => {
            let out = a
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from("results/bound"));
            let report = threshold::sweep(a.preset)?;
            out!("{}", threshold::terminal_summary(&report));
            threshold::write_outputs(&report, &out)?;
            outln!(
                "wrote bound.md, bound.json and bound.svg to {}",
                out.display()
            );
            Ok(())
        }
        SweepKind::Exponent(a) => {
            let out = a
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from("results/exponent"));
            let report = exponent::sweep(a.preset)?;
            out!("{}", exponent::terminal_summary(&report));
            exponent::write_outputs(&report, &out)?;
            outln!(
                "wrote exponent.md, exponent.json, exponent.svg and exponent_map.svg to {}",
                out.display()
            );
            Ok(())
        }
        #[cfg(feature = "certify")]
        SweepKind::Bits(a) => {
            let out = a
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from("results/bits"));
            let report = crate::harness::bits::sweep(a.preset)?;
            out!("{}", crate::harness::bits::terminal_summary(&report));
            crate::harness::bits::write_outputs(&report, &out)?;
            outln!("wrote bits.md, bits.json and bits.svg to {}", out.display());
            Ok(())
        }
    }
}
