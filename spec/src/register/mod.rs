//! The lemma register (docs/math.md §6): every lemma of
//! ML24 and AS24 that the spec encodes, with its paper, number, what it
//! computes, the correction where the printed form is wrong, and a status
//! that is *measured*, not asserted: [`rows`] runs every lemma function on a
//! fixed instance (and on a symmetric-`W` variant) against the independent
//! oracle and derives the status from the outcome.
//!
//! How a status is decided (see [`Status`]):
//! * the corrected form must agree with the oracle at every entry (the
//!   enclosures overlap), its factored form must equal the direct form exactly
//!   in rationals, and its polynomial result must lie within the propagated
//!   epsilon of `exp`; otherwise the status is [`Status::Fails`] (a spec bug);
//! * the printed form, if the paper's differs, is compared in the same way: an
//!   entry whose enclosure is disjoint from the oracle's proves it wrong, by
//!   the certified margin reported. If it is disjoint on the general instance
//!   but agrees when `W` is symmetric the status is
//!   [`Status::HoldsOnlyWhenSymmetric`]; if it is disjoint on both, or its
//!   factored form differs exactly from the direct one, [`Status::Erratum`].
//! * a lemma that states an inequality is measured as the ratio of the
//!   quantity to the bound (`crate::bounds`): the bound that holds must have
//!   a certified ratio of at most `1` (else [`Status::Fails`]); a printed
//!   bound whose certified ratio exceeds `1` is an [`Status::Erratum`].
//!
//! Files: this one holds the types and [`measure`]; `table` the entries in
//! paper order; `probes` the identity checks against the oracle;
//! `bound_probes` the inequality checks (ML24 C.17-C.19, I.1's rank side,
//! AS24 E.3-E.5); `causal_probes` ML24 I.7/I.8 against the causal attention
//! oracle; `format` the Markdown, JSON and text renderings.

use serde::Serialize;

use crate::bounds::BoundCheck;
use crate::instance::Instance;
use crate::linalg::{Agreement, EpsCheck, Res};

mod bound_probes;
mod causal_probes;
mod format;
mod probes;
mod table;

pub use format::{to_json, to_markdown, to_text};
pub use table::entries;

/// What one run of a lemma's checks found.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Probe {
    /// The corrected form against the oracle (`exp` world).
    pub correct: Option<Agreement>,
    /// The printed form against the oracle (`exp` world).
    pub printed: Option<Agreement>,
    /// Factored form `==` direct form with `P` in place of `exp`, in rationals.
    pub exact: Option<bool>,
    /// The printed factored form `==` the direct (correct) form, in rationals.
    pub printed_exact: Option<bool>,
    /// The polynomial result against `exp`, within the propagated epsilon.
    pub eps: Option<EpsCheck>,
    /// A bound the lemma states (or, where the printed constant is wrong, its
    /// corrected form) against the measured quantity: must hold.
    pub bound: Option<BoundCheck>,
    /// The printed bound against the measured quantity, where it differs
    /// from `bound`: proven wrong when certainly exceeded.
    pub printed_bound: Option<BoundCheck>,
}

impl Probe {
    /// `true` when every check of the corrected form passed.
    pub fn correct_holds(&self) -> bool {
        self.correct.is_none_or(|a| a.agrees())
            && self.exact.unwrap_or(true)
            && self
                .eps
                .is_none_or(|e| e.consistent && e.measured <= e.bound)
            && self.bound.is_none_or(|b| b.holds())
    }

    /// `Some(true)` when the printed form is proven wrong on this instance,
    /// `Some(false)` when it agrees, `None` when there is no printed form.
    pub fn printed_wrong(&self) -> Option<bool> {
        match (self.printed, self.printed_exact, self.printed_bound) {
            (None, None, None) => None,
            (p, e, b) => Some(
                p.is_some_and(|a| !a.agrees())
                    || e == Some(false)
                    || b.is_some_and(|b| b.violated()),
            ),
        }
    }
}

/// A lemma's status, as measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Status {
    /// The lemma holds as printed (or the printed form is the corrected one).
    Holds,
    /// The printed form is wrong in general; the corrected one holds.
    Erratum,
    /// The printed form holds only when `W` is symmetric.
    HoldsOnlyWhenSymmetric,
    /// The *corrected* form failed a check: a bug in the spec.
    Fails,
}

impl Status {
    /// A short human-readable label.
    pub fn label(self) -> &'static str {
        match self {
            Status::Holds => "holds",
            Status::Erratum => "erratum",
            Status::HoldsOnlyWhenSymmetric => "holds only when W is symmetric",
            Status::Fails => "FAILS (spec bug)",
        }
    }

    /// The status implied by a probe on a general instance and one on a
    /// symmetric-`W` instance (module docs).
    pub fn from_probes(general: &Probe, symmetric: &Probe) -> Status {
        if !general.correct_holds() || !symmetric.correct_holds() {
            return Status::Fails;
        }
        match (general.printed_wrong(), symmetric.printed_wrong()) {
            (Some(true), Some(false)) => Status::HoldsOnlyWhenSymmetric,
            (Some(true), _) => Status::Erratum,
            _ => Status::Holds,
        }
    }
}

/// A probe: runs a lemma's checks on an instance at a precision.
pub type ProbeFn = fn(&Instance, u32) -> Res<Probe>;

/// One lemma of the register (static facts plus its probe).
#[derive(Clone, Copy, Debug)]
pub struct Entry {
    /// `"ML24"` or `"AS24"`.
    pub paper: &'static str,
    /// The lemma's number in the paper (v2 for ML24).
    pub number: &'static str,
    /// The spec function(s) encoding it.
    pub function: &'static str,
    /// What it computes.
    pub computes: &'static str,
    /// The correction of the printed form (`"-"` when none is needed).
    pub correction: &'static str,
    /// Its checks.
    pub probe: ProbeFn,
}

/// One row of the register as measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Row {
    /// `"ML24"` or `"AS24"`.
    pub paper: &'static str,
    /// The lemma's number.
    pub number: &'static str,
    /// The spec function(s).
    pub function: &'static str,
    /// What it computes.
    pub computes: &'static str,
    /// The measured status.
    pub status: Status,
    /// The correction (`"-"` when none).
    pub correction: &'static str,
    /// Entries compared for the corrected form, over both instances.
    pub entries_checked: usize,
    /// Exact rational identity of the factored form (where one exists).
    pub exact_identity: Option<bool>,
    /// Certified margin by which the printed form misses the oracle on the
    /// fixed general instance (absolute; `None` without a printed `exp` form).
    pub printed_margin: Option<f64>,
    /// The same margin relative to the largest oracle magnitude.
    pub printed_rel_margin: Option<f64>,
    /// How many entries of the printed form are disjoint from the oracle's.
    pub printed_disjoint: Option<String>,
    /// The printed form's margin on the symmetric-`W` instance.
    pub symmetric_margin: Option<f64>,
    /// The printed factored form equals the direct form exactly (rationals).
    pub printed_exact_identity: Option<bool>,
    /// Certified bound on `|low-rank with P - exact|` (propagated epsilon).
    pub eps_bound: Option<f64>,
    /// Measured `|low-rank with P - exact|` (midpoints).
    pub eps_measured: Option<f64>,
    /// Certified upper bound on `measured / stated bound` for a lemma that
    /// states an inequality (at most `1` when the bound holds).
    pub bound_ratio: Option<f64>,
    /// Certified lower bound on `measured / printed bound` on the general
    /// instance (above `1`: the printed bound is wrong there).
    pub printed_bound_ratio: Option<f64>,
}

/// The seed of the register's fixed instance.
pub const REGISTER_SEED: u64 = 2024;

/// Runs one entry on the fixed general and symmetric instances.
pub fn measure(entry: &Entry, general: &Instance, symmetric: &Instance, prec: u32) -> Res<Row> {
    let g = (entry.probe)(general, prec)?;
    let s = (entry.probe)(symmetric, prec)?;
    let status = Status::from_probes(&g, &s);
    let entries = g.correct.map_or(0, |a| a.entries) + s.correct.map_or(0, |a| a.entries);
    Ok(Row {
        paper: entry.paper,
        number: entry.number,
        function: entry.function,
        computes: entry.computes,
        status,
        correction: entry.correction,
        entries_checked: entries,
        exact_identity: g.exact.map(|e| e && s.exact.unwrap_or(true)),
        printed_margin: g.printed.map(|a| a.margin),
        printed_rel_margin: g.printed.map(|a| a.rel_margin),
        printed_disjoint: g
            .printed
            .map(|a| format!("{} of {}", a.disjoint, a.entries)),
        symmetric_margin: s.printed.map(|a| a.margin),
        printed_exact_identity: g.printed_exact,
        eps_bound: g.eps.map(|e| e.bound),
        eps_measured: g.eps.map(|e| e.measured),
        bound_ratio: g
            .bound
            .map(|b| s.bound.map_or(b.ratio_hi, |t| b.ratio_hi.max(t.ratio_hi))),
        printed_bound_ratio: g.printed_bound.map(|b| b.ratio_lo),
    })
}

/// The register, measured on the fixed instance ([`REGISTER_SEED`], default
/// shape) at `prec` bits.
pub fn rows(prec: u32) -> Res<Vec<Row>> {
    let general = Instance::random(REGISTER_SEED, false);
    let symmetric = Instance::random(REGISTER_SEED, true);
    entries()
        .iter()
        .map(|e| measure(e, &general, &symmetric, prec))
        .collect()
}
