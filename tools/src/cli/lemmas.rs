//! `polyattn lemmas`: the lemma register of the reference crate (docs/math.md §6).
//!
//! Runs every lemma function of `polyattn-spec` (ML24 and AS24, docs/math.md §6)
//! against the independent dual-number oracle on a fixed instance, prints the measured
//! statuses as a table, and optionally writes the register as Markdown and JSON.

use polyattn::error::{Error, Result};
use polyattn_spec::register;
use std::path::{Path, PathBuf};

/// Arguments of `polyattn lemmas`.
#[derive(Debug, clap::Args)]
pub struct LemmasArgs {
    /// Write the register as a Markdown table to this file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Write the register as JSON (one object per lemma) to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| Error::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    })
}

/// Measures the register at the spec's default precision, prints it, and writes the
/// requested files.
pub fn run(args: &LemmasArgs) -> Result<()> {
    let rows =
        register::rows(polyattn_spec::DEFAULT_PREC).map_err(|e| Error::InvalidParameter {
            name: "lemma register",
            value: format!("seed {}", register::REGISTER_SEED),
            reason: e.to_string(),
        })?;
    out!("{}", register::to_text(&rows));
    if let Some(p) = &args.markdown {
        write(p, &register::to_markdown(&rows))?;
        outln!("wrote {}", p.display());
    }
    if let Some(p) = &args.json {
        write(p, &register::to_json(&rows))?;
        outln!("wrote {}", p.display());
    }
    Ok(())
}
