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
    /// The polynomial algorithm in narrow and exponent-limited formats (f16, bf16,
    /// fewer than log2 n bits) with entries up to n, certified against exact attention.
    Formats(PresetArgs),
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
        SweepKind::ErrorN(a) => preset_sweep(
            a,
            "error_n",
            &["error_n.md", "error_n.json", "error_n.svg"],
            accuracy::sweep,
            accuracy::terminal_summary,
            accuracy::write_outputs,
        ),
        SweepKind::Seed(a) => preset_sweep(
            a,
            "seed",
            &["seed.md", "seed.json"],
            seed::sweep,
            seed::terminal_summary,
            seed::write_outputs,
        ),
        SweepKind::Depth(a) => preset_sweep(
            a,
            "depth",
            &["depth.md", "depth.json", "depth.svg"],
            model_depth::sweep,
            model_depth::terminal_summary,
            model_depth::write_outputs,
        ),
        SweepKind::TimeN(a) => preset_sweep(
            a,
            "time_n",
            &["time_n.md", "time_n.json", "time_n.svg"],
            model_time::sweep,
            model_time::terminal_summary,
            model_time::write_outputs,
        ),
        SweepKind::Bound(a) => preset_sweep(
            a,
            "bound",
            &["bound.md", "bound.json", "bound.svg"],
            threshold::sweep,
            threshold::terminal_summary,
            threshold::write_outputs,
        ),
        SweepKind::Exponent(a) => preset_sweep(
            a,
            "exponent",
            &[
                "exponent.md",
                "exponent.json",
                "exponent.svg",
                "exponent_map.svg",
            ],
            exponent::sweep,
            exponent::terminal_summary,
            exponent::write_outputs,
        ),
        SweepKind::Formats(a) => {
            use crate::harness::formats;
            preset_sweep(
                a,
                "formats",
                &["formats.md", "formats.json", "formats.svg"],
                formats::sweep,
                formats::terminal_summary,
                formats::write_outputs,
            )
        }
        #[cfg(feature = "certify")]
        SweepKind::Bits(a) => {
            use crate::harness::bits;
            preset_sweep(
                a,
                "bits",
                &["bits.md", "bits.json", "bits.svg"],
                bits::sweep,
                bits::terminal_summary,
                bits::write_outputs,
            )
        }
    }
}

/// One preset sweep: run it, print its summary, write its files to `--out` (default
/// `results/<name>`) and say which.
fn preset_sweep<R>(
    a: &PresetArgs,
    name: &str,
    files: &[&str],
    sweep: fn(Preset) -> Result<R>,
    summary: fn(&R) -> String,
    write: fn(&R, &std::path::Path) -> Result<()>,
) -> Result<()> {
    let out = a
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("results").join(name));
    let report = sweep(a.preset)?;
    out!("{}", summary(&report));
    write(&report, &out)?;
    // Where every file of the folder came from (revision, machine, threads), beside
    // them: the sweeps' own files keep their formats.
    let provenance = serde_json::json!({
        "sweep": name,
        "preset": a.preset,
        "provenance": crate::harness::Provenance::here(),
    });
    crate::harness::write_json(&out.join("provenance.json"), &provenance)?;
    outln!(
        "wrote {}, provenance.json to {}",
        files.join(", "),
        out.display()
    );
    Ok(())
}
