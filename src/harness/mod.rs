//! Experiment harnesses behind `polyattn sweep`: each sweep runs a grid, summarises
//! it, and writes Markdown, JSON and SVG plots to an output folder. Shared helpers for
//! writing those files live here.
//!
//! - [`io`]: the I/O complexity of attention in the two-level model (docs/math.md §8,
//!   IO24).
//! - [`accuracy`]: the polynomial engine's certified error against n (eps = 1/n).
//! - `bits` (feature `certify`): the algorithm in MPFR at p = c log2(n) bits.
//! - [`fit`]: least-squares slopes on log-log data.
//! - [`model_time`]: the whole model's time against n, exact vs polynomial.
//! - [`threshold`]: where the polynomial engine stops paying, B against n (AS23's line).
//! - [`model_depth`]: the gradient difference against the number of layers.
//! - [`progress`]: the progress bar the long sweeps draw on a terminal.

pub mod accuracy;
#[cfg(feature = "certify")]
pub mod bits;
pub mod fit;
pub mod io;
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

use crate::error::{Error, Result};
use std::path::Path;

/// Creates `dir` and its parents.
pub fn ensure_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        action: "create",
        path: dir.to_path_buf(),
        source,
    })
}

/// Writes `contents` to `path` atomically ([`crate::output::write_file`]).
pub fn write_text(path: &Path, contents: &str) -> Result<()> {
    crate::output::write_file(path, contents.as_bytes())
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

/// A Markdown table: a header row, the alignment row, then the rows.
pub fn markdown_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    // A `|` inside a cell (a norm like ||x||) would end the cell: escape it.
    let cell = |c: &str| c.replace('|', "\\|");
    let line = |cells: Vec<String>| format!("| {} |\n", cells.join(" | "));
    let mut s = line(headers.iter().map(|h| cell(h)).collect());
    s.push('|');
    s.push_str(&" ---: |".repeat(headers.len()));
    s.push('\n');
    for r in rows {
        s.push_str(&line(r.iter().map(|c| cell(c)).collect()));
    }
    s
}

/// The same rows as a fixed-width plain-text table for the terminal.
pub fn text_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for r in rows {
        for (wi, c) in w.iter_mut().zip(r) {
            *wi = (*wi).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| -> String {
        let mut s = String::new();
        for (c, wi) in cells.iter().zip(&w) {
            s.push_str(&format!("{c:>wi$}  "));
        }
        s.trim_end().to_string() + "\n"
    };
    let mut s = line(headers.to_vec());
    for r in rows {
        s.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    s
}

/// `x` with three significant digits (plain notation between 0.01 and 10^6).
pub fn sig3(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        return format!("{x}");
    }
    let a = x.abs();
    if (0.01..1e6).contains(&a) {
        let decimals = (2 - a.log10().floor() as i32).max(0) as usize;
        format!("{x:.decimals$}")
    } else {
        format!("{x:.2e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_and_numbers() {
        let rows = vec![vec!["1".to_string(), "22".to_string()]];
        assert_eq!(
            markdown_table(&["a", "b"], &rows),
            "| a | b |\n| ---: | ---: |\n| 1 | 22 |\n"
        );
        assert_eq!(text_table(&["a", "b"], &rows), "a   b\n1  22\n");
        assert_eq!(sig3(1234.6), "1235");
        assert_eq!(sig3(0.012345), "0.0123");
        assert_eq!(sig3(12.345), "12.3");
        assert_eq!(sig3(1.5e7), "1.50e7");
    }
}
