//! Experiment harnesses behind `polyattn sweep`: each sweep runs a grid, summarises
//! it, and writes Markdown, JSON and SVG plots to an output folder. Shared helpers for
//! writing those files live here.
//!
//! - [`io_sweep`]: the I/O complexity of attention in the two-level model (docs/math.md §8,
//!   IO24).
//! - [`accuracy`]: the polynomial engine's certified error against n (eps = 1/n).
//! - `bits` (feature `certify`): the algorithm in MPFR at p = c log2(n) bits.
//! - [`formats`]: the algorithm with every operation rounded to a binary format of p
//!   bits and a limited exponent (f16, bf16 and p around log2 n).
//! - [`exponent`]: the polynomial method's cost exponent against n, plan-only up to
//!   n = 2^40 under the papers' prescriptions (d = Theta(log n), B = Theta(sqrt(log n))).
//! - [`fit`]: least-squares slopes on log-log data.
//! - [`model_time`]: the whole model's time against n, exact vs polynomial.
//! - [`threshold`]: where the polynomial engine stops paying, B against n (AS23's line).
//! - [`model_depth`]: the gradient difference against the number of layers.
//! - [`seed`]: ML24's rebuttal experiment (d = 4..12, n = 10 * 2^d) redone with certified errors.
//! - [`progress`]: the progress bar the long sweeps draw on a terminal.

pub mod accuracy;
#[cfg(feature = "certify")]
pub mod bits;
pub mod exponent;
pub mod fit;
pub mod formats;
pub mod io_sweep;
pub mod model_depth;
pub mod model_time;
pub mod progress;
pub mod seed;
pub mod threshold;

/// Grid sizes of a sweep: each sweep documents its two grids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
pub enum Preset {
    /// Runs in seconds; used by the tests.
    Small,
    /// Minutes; the README's figures.
    Full,
}

use polyattn::error::{Error, Result};
use std::path::Path;

/// Creates `dir` and its parents.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        action: "create",
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes `contents` to `path` atomically ([`polyattn::output::write_file`]).
pub fn write_text(path: &Path, contents: &str) -> Result<()> {
    polyattn::output::write_file(path, contents.as_bytes())
}

/// Serialises `value` as pretty JSON into `path`.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<()> {
    let s = serde_json::to_string_pretty(value).map_err(|e| Error::Io {
        action: "write",
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    write_text(path, &s)
}

pub use crate::table::{markdown_table, sig3, text_table};

/// Where a result came from: the source revision, the machine and the thread count,
/// recorded in every result file that carries one (no timestamps: the files stay
/// reproducible).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Provenance {
    /// `$POLYATTN_REVISION` when set (a prebuilt binary run where the source tree
    /// and git are absent, e.g. a GPU machine), else `git describe --always --dirty`
    /// of the source tree, or `unknown`.
    pub revision: String,
    /// CPU model (`/proc/cpuinfo`), logical CPUs and the SIMD level in use.
    pub machine: String,
    /// rayon's worker threads.
    pub threads: usize,
}

impl Provenance {
    /// This process's provenance.
    pub fn here() -> Self {
        let from_env = std::env::var("POLYATTN_REVISION")
            .ok()
            .filter(|s| !s.trim().is_empty());
        let revision = from_env
            .or_else(|| {
                std::process::Command::new("git")
                    .args([
                        "-C",
                        env!("CARGO_MANIFEST_DIR"),
                        "describe",
                        "--always",
                        "--dirty",
                    ])
                    .output()
                    .ok()
                    .filter(|o| o.status.success())
                    .and_then(|o| String::from_utf8(o.stdout).ok())
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
            })
            .unwrap_or_else(|| "unknown".into());
        let model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_string())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        Self {
            revision,
            machine: format!(
                "{model}, {cpus} logical CPUs, SIMD {:?}",
                polyattn::simd::isa::<f64>()
            ),
            threads: rayon::current_num_threads(),
        }
    }

    /// One sentence for a Markdown report.
    pub fn sentence(&self) -> String {
        format!(
            "Revision {}, machine {}, {} threads.",
            self.revision, self.machine, self.threads
        )
    }
}
