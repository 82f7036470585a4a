//! The register as Markdown (docs/lemmas.md), JSON and a terminal table.

use std::fmt::Write as _;

use super::{Row, REGISTER_SEED};

fn fmt_opt(x: Option<f64>) -> String {
    x.map_or("-".into(), |v| format!("{v:.3e}"))
}

fn fmt_bool(x: Option<bool>) -> String {
    x.map_or("-".into(), |b| if b { "yes" } else { "NO" }.into())
}

/// Escapes a table cell for Markdown (`|`, and `<`/`>` which would read as HTML).
fn md_cell(s: &str) -> String {
    s.replace('|', "\\|")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The rows as a Markdown table (with a short legend).
pub fn to_markdown(rows: &[Row]) -> String {
    let mut s = String::new();
    s.push_str("# Lemma register\n\n");
    s.push_str(
        "Every lemma of ML24 (arXiv 2408.13233 v2) and AS24 (arXiv 2402.04497) that \
         `polyattn-spec` encodes, with a status measured by running its function against \
         the dual-number oracle on a fixed instance (seed ",
    );
    let _ = write!(s, "{REGISTER_SEED}");
    s.push_str(
        ", n = 5, d = 3, d_v = 2, non-symmetric W) and on the same instance with W made \
         symmetric. *Margin* is a certified lower bound on how far the printed form's \
         enclosure lies from the oracle's at the worst entry (absolute, then relative to \
         the largest oracle entry); *exact* says whether the factored form equals the \
         direct form with exp replaced by a rational polynomial, in exact rationals; \
         *eps bound* is the certified bound on the polynomial result's distance from the \
         exp one, *eps measured* the observed distance. For a lemma that states an inequality, \
         *measured/bound* is a certified upper bound on the measured quantity over the \
         stated (or corrected) bound, at most 1 when the bound holds on both instances, \
         and *measured/printed* a certified lower bound on the measured quantity over the \
         printed bound, above 1 when the printed bound is wrong. See docs/math.md §6.\n\n",
    );
    s.push_str(
        "| paper | lemma | function | computes | status | correction | checked entries | exact | printed margin | rel. | disjoint | margin if W symmetric | printed exact | eps bound | eps measured | measured/bound | measured/printed |\n",
    );
    s.push_str("|---|---|---|---|---|---|--:|---|--:|--:|--:|--:|---|--:|--:|--:|--:|\n");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.paper,
            r.number,
            r.function,
            md_cell(r.computes),
            r.status.label(),
            md_cell(r.correction),
            r.entries_checked,
            fmt_bool(r.exact_identity),
            fmt_opt(r.printed_margin),
            fmt_opt(r.printed_rel_margin),
            r.printed_disjoint.clone().unwrap_or_else(|| "-".into()),
            fmt_opt(r.symmetric_margin),
            fmt_bool(r.printed_exact_identity),
            fmt_opt(r.eps_bound),
            fmt_opt(r.eps_measured),
            fmt_opt(r.bound_ratio),
            fmt_opt(r.printed_bound_ratio),
        );
    }
    s
}

/// The rows as a JSON array (one object per row, the fields of [`Row`]).
pub fn to_json(rows: &[Row]) -> String {
    serde_json::to_string_pretty(rows).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// A plain-text table for a terminal.
pub fn to_text(rows: &[Row]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<5} {:<22} {:<31} {:>12} {:>10} {:>12}",
        "paper", "lemma", "status", "margin", "rel.", "margin sym."
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{:<5} {:<22} {:<31} {:>12} {:>10} {:>12}",
            r.paper,
            r.number,
            r.status.label(),
            fmt_opt(r.printed_margin),
            fmt_opt(r.printed_rel_margin),
            fmt_opt(r.symmetric_margin)
        );
    }
    s
}
