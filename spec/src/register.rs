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

use std::fmt::Write as _;

use nalgebra::DMatrix;
use rug::Rational;
use serde::Serialize;

use crate::as24;
use crate::attention;
use crate::dual::Dual;
use crate::instance::Instance;
use crate::interval::Interval;
use crate::linalg::{
    agreement, apply, causal, eps_check, exp_kernel, lift, matmul, max_mag, merge, neg,
    normalise_rows, scale, widened_kernel, Agreement, EpsCheck, Mat, Res, EXACT,
};
use crate::ml24::blocks::{self, head_layer, tanh};
use crate::ml24::low_rank::{self as lr};
use crate::ml24::oracle::{
    ds_by_dual, grad_by_dual, grad_scalar, pairing, Occurrence, Param, Part,
};
use crate::ml24::terms::{self, d_terms, DTerms, Form};
use crate::ml24::{weights, Eval, Layer};

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
}

impl Probe {
    /// `true` when every check of the corrected form passed.
    pub fn correct_holds(&self) -> bool {
        self.correct.is_none_or(|a| a.agrees())
            && self.exact.unwrap_or(true)
            && self
                .eps
                .is_none_or(|e| e.consistent && e.measured <= e.bound)
    }

    /// `Some(true)` when the printed form is proven wrong on this instance,
    /// `Some(false)` when it agrees, `None` when there is no printed form.
    pub fn printed_wrong(&self) -> Option<bool> {
        match (self.printed, self.printed_exact) {
            (None, None) => None,
            (p, e) => Some(p.is_some_and(|a| !a.agrees()) || e == Some(false)),
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
         exp one, *eps measured* the observed distance. See docs/math.md §6.\n\n",
    );
    s.push_str(
        "| paper | lemma | function | computes | status | correction | checked entries | exact | printed margin | rel. | disjoint | margin if W symmetric | printed exact | eps bound | eps measured |\n",
    );
    s.push_str("|---|---|---|---|---|---|--:|---|--:|--:|--:|--:|---|--:|--:|\n");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | `{}` | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
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

// ------------------------------------------------------------------ probes

fn ag(a: &Mat<Interval>, b: &Mat<Interval>) -> Res<Agreement> {
    agreement(a, b)
}

/// A column vector from a list of intervals.
fn column(v: Vec<Interval>) -> Mat<Interval> {
    let n = v.len();
    DMatrix::from_vec(n, 1, v)
}

/// `ds/dX_{i1 j1}` for every `(i1, j1)` (row-major), by the oracle.
fn jacobian(layer: &Layer, occ: Occurrence, part: Part, prec: u32) -> Res<Vec<Mat<Interval>>> {
    let mut out = Vec::new();
    for i1 in 0..layer.n() {
        for j1 in 0..layer.d() {
            out.push(ds_by_dual(layer, Param::X(occ), (i1, j1), part, prec)?);
        }
    }
    Ok(out)
}

fn probe_d1(inst: &Instance, prec: u32, same_row: bool) -> Res<Probe> {
    let l = &inst.layer;
    let jac = jacobian(l, Occurrence::All, Part::Total, prec)?;
    let (mut c, mut p, mut o) = (Vec::new(), Vec::new(), Vec::new());
    for i0 in 0..l.n() {
        for j0 in 0..l.d_v() {
            for i1 in 0..l.n() {
                if (i0 == i1) != same_row {
                    continue;
                }
                for j1 in 0..l.d() {
                    c.push(terms::lemma_d1_ds_dx(l, (i0, j0), (i1, j1), prec)?);
                    p.push(terms::lemma_d1_ds_dx_printed(l, (i0, j0), (i1, j1), prec)?);
                    o.push(jac[i1 * l.d() + j1][(i0, j0)].clone());
                }
            }
        }
    }
    let o = column(o);
    Ok(Probe {
        correct: Some(ag(&column(c), &o)?),
        printed: Some(ag(&column(p), &o)?),
        ..Probe::default()
    })
}

type BFn = fn(&Layer, usize, usize, u32) -> Res<Mat<Interval>>;

/// B-terms: `n x d` (key/value side) or `d x 1` (query side, row `i0`).
fn probe_b(inst: &Instance, prec: u32, f: (BFn, BFn), occ: Occurrence, part: Part) -> Res<Probe> {
    let l = &inst.layer;
    let jac = jacobian(l, occ, part, prec)?;
    let query = occ == Occurrence::Query;
    let (mut cs, mut ps) = (Vec::new(), Vec::new());
    for i0 in 0..l.n() {
        for j0 in 0..l.d_v() {
            let o = if query {
                Mat::from_fn(l.d(), 1, |j1, _| jac[i0 * l.d() + j1][(i0, j0)].clone())
            } else {
                Mat::from_fn(l.n(), l.d(), |i1, j1| {
                    jac[i1 * l.d() + j1][(i0, j0)].clone()
                })
            };
            cs.push(ag(&f.0(l, i0, j0, prec)?, &o)?);
            ps.push(ag(&f.1(l, i0, j0, prec)?, &o)?);
        }
    }
    Ok(Probe {
        correct: Some(merge(&cs)),
        printed: Some(merge(&ps)),
        ..Probe::default()
    })
}

fn probe_d8(inst: &Instance, prec: u32) -> Res<Probe> {
    let l = &inst.layer;
    let jac = jacobian(l, Occurrence::All, Part::Total, prec)?;
    let (mut cs, mut ps) = (Vec::new(), Vec::new());
    for i0 in 0..l.n() {
        for j0 in 0..l.d_v() {
            let o = Mat::from_fn(l.n(), l.d(), |i1, j1| {
                jac[i1 * l.d() + j1][(i0, j0)].clone()
            });
            cs.push(ag(&terms::lemma_d8_ds_dx(l, i0, j0, prec)?, &o)?);
            ps.push(ag(&terms::lemma_d8_ds_dx_printed(l, i0, j0, prec)?, &o)?);
        }
    }
    Ok(Probe {
        correct: Some(merge(&cs)),
        printed: Some(merge(&ps)),
        ..Probe::default()
    })
}

type GFn = fn(&Layer, &Mat<f64>, u32) -> Res<Mat<Interval>>;

fn probe_grad(
    inst: &Instance,
    prec: u32,
    correct: GFn,
    printed: Option<GFn>,
    param: Param,
    part: Part,
) -> Res<Probe> {
    let (l, g) = (&inst.layer, &inst.g);
    let o = grad_by_dual(l, g, param, part, prec)?;
    Ok(Probe {
        correct: Some(ag(&correct(l, g, prec)?, &o)?),
        printed: printed.map(|p| ag(&p(l, g, prec)?, &o)).transpose()?,
        ..Probe::default()
    })
}

/// The direct evaluation with `P` in exact rationals.
fn direct_exact(inst: &Instance) -> Res<Eval<Rational>> {
    lr::direct(&inst.layer, &inst.g, &inst.poly_exact, EXACT)
}

/// The direct evaluation with the widened kernel (encloses `exp` and `P`),
/// and `eps_P`.
fn direct_widened(inst: &Instance, prec: u32) -> Res<(Eval<Interval>, f64)> {
    let l = inst.layer.lift::<Interval>(prec)?;
    let r = max_mag(&l.scores()?);
    let p = &inst.poly_close;
    let eps = p.taylor_relative_error(r, prec);
    let k = widened_kernel(p, r, eps, prec)?;
    Ok((Eval::new(&inst.layer, &inst.g, &k, prec)?, eps))
}

type Pick = fn(&DTerms<Rational>) -> &Mat<Rational>;
type PickI = fn(&DTerms<Interval>) -> &Mat<Interval>;

fn probe_e(
    inst: &Instance,
    prec: u32,
    pick: Pick,
    pick_i: PickI,
    occ: Occurrence,
    part: Part,
) -> Res<Probe> {
    let lr_exact = lr::d_terms_low_rank(&lr::low_rank_back::<Rational>(
        &inst.layer,
        &inst.g,
        &inst.poly_exact,
        EXACT,
    )?)?;
    let direct = d_terms(&direct_exact(inst)?, Form::Correct)?;
    let lr_iv = lr::d_terms_low_rank(&lr::low_rank_back::<Interval>(
        &inst.layer,
        &inst.g,
        &inst.poly_close,
        prec,
    )?)?;
    let (wide, eps) = direct_widened(inst, prec)?;
    let wide = d_terms(&wide, Form::Correct)?;
    let o = grad_by_dual(&inst.layer, &inst.g, Param::X(occ), part, prec)?;
    Ok(Probe {
        exact: Some(pick(&lr_exact) == pick(&direct)),
        eps: Some(eps_check(eps, pick_i(&wide), pick_i(&lr_iv), &o)?),
        ..Probe::default()
    })
}

fn probe_e_total(inst: &Instance, prec: u32) -> Res<Probe> {
    let lr_exact = lr::lemma_e_low_rank_grad_x(&inst.layer, &inst.g, &inst.poly_exact)?;
    let direct = d_terms(&direct_exact(inst)?, Form::Correct)?.total()?;
    let lr_iv = lr::d_terms_low_rank(&lr::low_rank_back::<Interval>(
        &inst.layer,
        &inst.g,
        &inst.poly_close,
        prec,
    )?)?
    .total()?;
    let (wide, eps) = direct_widened(inst, prec)?;
    let wide = d_terms(&wide, Form::Correct)?.total()?;
    let o = grad_by_dual(
        &inst.layer,
        &inst.g,
        Param::X(Occurrence::All),
        Part::Total,
        prec,
    )?;
    Ok(Probe {
        exact: Some(lr_exact == direct),
        eps: Some(eps_check(eps, &wide, &lr_iv, &o)?),
        ..Probe::default()
    })
}

fn probe_e1(inst: &Instance, prec: u32) -> Res<Probe> {
    let f_lr = lr::lemma_e1_low_rank_f(&inst.layer, &inst.poly_exact)?;
    let direct = direct_exact(inst)?.fw.f;
    let l = inst.layer.lift::<Interval>(prec)?;
    let lri = lr::factors(&l, &inst.poly_close)?;
    let f_lri = matmul(&lri.u, &lri.v.transpose(), prec)?;
    let (wide, eps) = direct_widened(inst, prec)?;
    let o = crate::ml24::oracle::attention_matrix(&inst.layer, prec)?;
    Ok(Probe {
        exact: Some(f_lr == direct),
        eps: Some(eps_check(eps, &wide.fw.f, &f_lri, &o)?),
        ..Probe::default()
    })
}

fn tau_xt_m_x(e: &Eval<Interval>, m: &Mat<Interval>) -> Res<Mat<Interval>> {
    let prec = e.prec();
    Ok(scale(
        &e.l.tau,
        &crate::linalg::chain(&[&e.l.x.transpose(), m, &e.l.x], prec)?,
    ))
}

fn probe_f5(inst: &Instance, prec: u32) -> Res<Probe> {
    let (l, g) = (&inst.layer, &inst.g);
    let de = direct_exact(inst)?;
    let direct = scale(
        &de.l.tau,
        &crate::linalg::chain(&[&de.l.x.transpose(), &de.p, &de.l.x], EXACT)?,
    );
    let lr_c = lr::lemma_f5_grad_w_low_rank(l, g, &inst.poly_exact)?;
    let lr_p = lr::lemma_f5_grad_w_low_rank_printed(l, g, &inst.poly_exact)?;
    let o = grad_by_dual(l, g, Param::W, Part::Total, prec)?;
    let e = crate::ml24::eval_exp(l, g, prec)?;
    let printed_exp = tau_xt_m_x(&e, &e.p1)?;
    let lr_iv = lr::grad_w_low_rank(
        &lr::low_rank_back::<Interval>(l, g, &inst.poly_close, prec)?,
        false,
    )?;
    let (wide, eps) = direct_widened(inst, prec)?;
    let wide = tau_xt_m_x(&wide, &wide.p)?;
    Ok(Probe {
        printed: Some(ag(&printed_exp, &o)?),
        exact: Some(lr_c == direct),
        printed_exact: Some(lr_p == direct),
        eps: Some(eps_check(eps, &wide, &lr_iv, &o)?),
        ..Probe::default()
    })
}

fn probe_g3_low_rank(inst: &Instance, prec: u32) -> Res<Probe> {
    let (l, g) = (&inst.layer, &inst.g);
    let de = direct_exact(inst)?;
    let direct = crate::linalg::chain(&[&de.l.x.transpose(), &de.fw.f.transpose(), &de.g], EXACT)?;
    let lr_c = lr::lemma_g3_grad_wv_low_rank(l, g, &inst.poly_exact)?;
    let lr_p = lr::lemma_g3_grad_wv_low_rank_printed(l, g, &inst.poly_exact)?;
    let o = grad_by_dual(l, g, Param::Wv, Part::Total, prec)?;
    let lr_iv = lr::grad_wv_low_rank(
        &lr::low_rank_back::<Interval>(l, g, &inst.poly_close, prec)?,
        false,
    )?;
    let (wide, eps) = direct_widened(inst, prec)?;
    let wide = crate::linalg::chain(
        &[&wide.l.x.transpose(), &wide.fw.f.transpose(), &wide.g],
        prec,
    )?;
    Ok(Probe {
        printed: Some(ag(&weights::lemma_g3_grad_wv_printed(l, g, prec)?, &o)?),
        exact: Some(lr_c == direct),
        printed_exact: Some(lr_p == direct),
        eps: Some(eps_check(eps, &wide, &lr_iv, &o)?),
        ..Probe::default()
    })
}

fn probe_entrywise(
    inst: &Instance,
    prec: u32,
    lemma: BFn,
    param: Param,
    shape: (usize, usize),
) -> Res<Probe> {
    let l = &inst.layer;
    let mut jac = Vec::new();
    for a in 0..shape.0 {
        for b in 0..shape.1 {
            jac.push(ds_by_dual(l, param, (a, b), Part::Total, prec)?);
        }
    }
    let mut cs = Vec::new();
    for i0 in 0..l.n() {
        for j0 in 0..l.d_v() {
            let o = Mat::from_fn(shape.0, shape.1, |a, b| {
                jac[a * shape.1 + b][(i0, j0)].clone()
            });
            cs.push(ag(&lemma(l, i0, j0, prec)?, &o)?);
        }
    }
    Ok(Probe {
        correct: Some(merge(&cs)),
        ..Probe::default()
    })
}

fn probe_c4(inst: &Instance, prec: u32) -> Res<Probe> {
    let (l, g) = (&inst.layer, &inst.g);
    let c = weights::lemma_c4_chain_rule(l, g, prec)?;
    let parts = [
        ag(
            &c.dx,
            &grad_by_dual(l, g, Param::X(Occurrence::All), Part::Total, prec)?,
        )?,
        ag(&c.dw, &grad_by_dual(l, g, Param::W, Part::Total, prec)?)?,
        ag(&c.dwv, &grad_by_dual(l, g, Param::Wv, Part::Total, prec)?)?,
    ];
    Ok(Probe {
        correct: Some(merge(&parts)),
        ..Probe::default()
    })
}

fn mlp_loss(z: &Mat<Dual>, wg: &Mat<Dual>, gt: &Mat<Dual>, prec: u32) -> Res<Dual> {
    let pre = matmul(z, wg, prec)?;
    let mut t = Vec::with_capacity(pre.len());
    for x in pre.iter() {
        t.push(tanh(x, prec)?);
    }
    let t = Mat::from_vec(pre.nrows(), pre.ncols(), t);
    pairing(gt, &t, prec)
}

fn probe_h(inst: &Instance, prec: u32, wrt_z: bool) -> Res<Probe> {
    let m = &inst.mlp;
    let z = lift::<Dual>("Z", &m.z, prec)?;
    let wg = lift::<Dual>("W_g", &m.w_g, prec)?;
    let gt = lift::<Dual>("dL/dT", &inst.g_mlp, prec)?;
    let (claimed, o) = if wrt_z {
        let zi = lift::<Interval>("Z", &m.z, prec)?;
        (
            blocks::lemma_h1_grad_through_mlp(m, &inst.g_mlp, prec)?,
            grad_scalar(&zi, &|zz: &Mat<Dual>| mlp_loss(zz, &wg, &gt, prec))?,
        )
    } else {
        let wi = lift::<Interval>("W_g", &m.w_g, prec)?;
        (
            blocks::lemma_h2_grad_w_g(m, &inst.g_mlp, prec)?,
            grad_scalar(&wi, &|ww: &Mat<Dual>| mlp_loss(&z, ww, &gt, prec))?,
        )
    };
    Ok(Probe {
        correct: Some(ag(&claimed, &o)?),
        ..Probe::default()
    })
}

fn probe_j3(inst: &Instance, prec: u32) -> Res<Probe> {
    let l = &inst.layer;
    let claimed = blocks::lemma_j3_residual_grad_x(l, &inst.w_o, &inst.g_res, prec)?;
    let base = l.lift::<Dual>(prec)?;
    let wo = lift::<Dual>("W_O", &inst.w_o, prec)?;
    let gt = lift::<Dual>("dL/dT", &inst.g_res, prec)?;
    let xi = lift::<Interval>("X", &l.x, prec)?;
    let o = grad_scalar(&xi, &|x: &Mat<Dual>| {
        let mut lt = base.clone();
        lt.x = x.clone();
        let s = lt.forward(&exp_kernel)?.s;
        let t = crate::linalg::add(x, &matmul(&s, &wo, prec)?)?;
        pairing(&gt, &t, prec)
    })?;
    Ok(Probe {
        correct: Some(ag(&claimed, &o)?),
        ..Probe::default()
    })
}

/// `<G, [s_1, ..., s_H]>` with one matrix of one head replaced by `m`.
fn heads_loss(inst: &Instance, which: (usize, u8), m: &Mat<Dual>, prec: u32) -> Res<Dual> {
    let g = lift::<Dual>("G", &inst.g_heads, prec)?;
    let mut acc = Dual::constant(Interval::zero(prec));
    let mut c0 = 0;
    for (hi, h) in inst.heads.iter().enumerate() {
        let mut lt = head_layer(&inst.layer.x, h).lift::<Dual>(prec)?;
        match which {
            (_, 0) => lt.x = m.clone(),
            (k, 1) if k == hi => lt.w = m.clone(),
            (k, 2) if k == hi => lt.wv = m.clone(),
            _ => {}
        }
        let s = lt.forward(&exp_kernel)?.s;
        let gh = g.columns(c0, s.ncols()).into_owned();
        c0 += s.ncols();
        acc = acc + pairing(&gh, &s, prec)?;
    }
    Ok(acc)
}

fn probe_k2(inst: &Instance, prec: u32) -> Res<Probe> {
    let x = &inst.layer.x;
    let c = blocks::lemma_k2_multi_head(x, &inst.heads, &inst.g_heads, prec)?;
    let xi = lift::<Interval>("X", x, prec)?;
    let mut parts = vec![ag(
        &c.dx,
        &grad_scalar(&xi, &|m: &Mat<Dual>| heads_loss(inst, (0, 0), m, prec))?,
    )?];
    for (k, h) in inst.heads.iter().enumerate() {
        let wi = lift::<Interval>("W_h", &h.w, prec)?;
        let vi = lift::<Interval>("W_V,h", &h.w_v, prec)?;
        parts.push(ag(
            &c.dw[k],
            &grad_scalar(&wi, &|m: &Mat<Dual>| heads_loss(inst, (k, 1), m, prec))?,
        )?);
        parts.push(ag(
            &c.dwv[k],
            &grad_scalar(&vi, &|m: &Mat<Dual>| heads_loss(inst, (k, 2), m, prec))?,
        )?);
    }
    Ok(Probe {
        correct: Some(merge(&parts)),
        ..Probe::default()
    })
}

fn rat(name: &str, m: &Mat<f64>) -> Res<Mat<Rational>> {
    lift::<Rational>(name, m, EXACT)
}

fn probe_c2(inst: &Instance, _prec: u32) -> Res<Probe> {
    let [u1, v1, u2, v2, _] = &inst.factors;
    let lhs = lr::hadamard_direct(
        &rat("U1", u1)?,
        &rat("V1", v1)?,
        &rat("U2", u2)?,
        &rat("V2", v2)?,
        EXACT,
    )?;
    Ok(Probe {
        exact: Some(lr::fact_c2_row_kron(u1, v1, u2, v2)? == lhs),
        ..Probe::default()
    })
}

fn probe_prefix(inst: &Instance, prec: u32) -> Res<Probe> {
    let [u1, v1, _, _, y] = &inst.factors;
    let direct = lr::masked_direct(
        &matmul(&rat("U", u1)?, &rat("V", v1)?.transpose(), EXACT)?,
        &rat("Y", y)?,
        false,
        EXACT,
    )?;
    let exact = lr::lemma_i3_causal_prefix_product(u1, v1, y)? == direct;
    // Causal attention with P against exact causal attention (exp).
    let l = &inst.layer;
    let low = lr::lemma_i3_causal_attention(l, &inst.poly_close, prec)?;
    let lt = l.lift::<Interval>(prec)?;
    let s = lt.scores()?;
    let r = max_mag(&s);
    let eps = inst.poly_close.taylor_relative_error(r, prec);
    let k = widened_kernel(&inst.poly_close, r, eps, prec)?;
    let f = normalise_rows(&causal(&apply(&k, &s)?, prec), prec)?;
    let h = matmul(&lt.x, &lt.wv, prec)?;
    let wide = matmul(&f, &h, prec)?;
    let problem = attention::Problem {
        q: exact_product(&l.x, &l.w)?,
        k: l.x.clone(),
        v: exact_product(&l.x, &l.w_v)?,
        tau: l.tau,
        mask: attention::Mask::CausalTopLeft,
    };
    let o = attention::forward(&problem, prec)?.o;
    Ok(Probe {
        exact: Some(exact),
        eps: Some(eps_check(eps, &wide, &low, &o)?),
        ..Probe::default()
    })
}

/// `a b` in `f64`, checked to be exact (it is for the instances' dyadic
/// entries); [`crate::attention::SpecError::Degenerate`] otherwise.
fn exact_product(a: &Mat<f64>, b: &Mat<f64>) -> Res<Mat<f64>> {
    let p = a * b;
    let exact = matmul(&rat("a", a)?, &rat("b", b)?, EXACT)?;
    if rat("a b", &p)? == exact {
        Ok(p)
    } else {
        Err(crate::linalg::degenerate("product not exact in f64"))
    }
}

fn probe_suffix(inst: &Instance, _prec: u32) -> Res<Probe> {
    let [u1, v1, _, _, y] = &inst.factors;
    let direct = lr::masked_direct(
        &matmul(&rat("U", u1)?, &rat("V", v1)?.transpose(), EXACT)?,
        &rat("Y", y)?,
        true,
        EXACT,
    )?;
    Ok(Probe {
        exact: Some(lr::lemma_causal_suffix_product(u1, v1, y)? == direct),
        ..Probe::default()
    })
}

fn probe_i6(inst: &Instance, _prec: u32) -> Res<Probe> {
    let [u1, v1, u2, v2, y] = &inst.factors;
    let a = matmul(&rat("U", u1)?, &rat("V", v1)?.transpose(), EXACT)?;
    let ones = Mat::from_element(u1.nrows(), 1, Rational::from(1));
    let norm = lr::masked_direct(&a, &ones, false, EXACT)?;
    let had = lr::hadamard_direct(
        &rat("U1", u1)?,
        &rat("V1", v1)?,
        &rat("U2", u2)?,
        &rat("V2", v2)?,
        EXACT,
    )?;
    let had = lr::masked_direct(&had, &rat("Y", y)?, false, EXACT)?;
    let ok = lr::lemma_i6_masked_normaliser(u1, v1)? == norm
        && lr::lemma_i6_hadamard_prefix_product((u1, v1), (u2, v2), y)? == had;
    Ok(Probe {
        exact: Some(ok),
        ..Probe::default()
    })
}

// AS24 probes.

fn probe_b1(inst: &Instance, prec: u32, part: u8) -> Res<Probe> {
    let p = &inst.as24;
    let (n, dy) = (p.a1.nrows(), p.e.ncols());
    let mut parts = Vec::new();
    for a in 0..p.x.nrows() {
        for b in 0..p.x.ncols() {
            let o = as24::b1_oracle(p, (a, b), prec)?;
            if part == 8 {
                parts.push(ag(&as24::lemma_b1_part8(p, (a, b), prec)?, &o.dl)?);
                continue;
            }
            for j0 in 0..n {
                let i = (a, b);
                let one = |m: &Mat<Interval>, r: usize, c: usize| {
                    Mat::from_element(1, 1, m[(r, c)].clone())
                };
                match part {
                    1 => parts.push(ag(
                        &as24::lemma_b1_part1(p, j0, i, prec)?,
                        &crate::linalg::row(&o.ds, j0),
                    )?),
                    2 => parts.push(ag(
                        &as24::lemma_b1_part2(p, j0, i, prec)?,
                        &crate::linalg::row(&o.du, j0),
                    )?),
                    3 => parts.push(ag(
                        &as24::lemma_b1_part3(p, j0, i, prec)?,
                        &one(&o.dalpha, j0, 0),
                    )?),
                    4 => parts.push(ag(
                        &as24::lemma_b1_part4(p, j0, i, prec)?,
                        &one(&o.dalpha_inv, j0, 0),
                    )?),
                    5 => parts.push(ag(
                        &as24::lemma_b1_part5(p, j0, i, prec)?,
                        &crate::linalg::row(&o.df, j0),
                    )?),
                    _ => {
                        for i0 in 0..dy {
                            let (claimed, oracle) = if part == 6 {
                                (
                                    as24::lemma_b1_part6(p, j0, i0, i, prec)?,
                                    one(&o.dfh, j0, i0),
                                )
                            } else {
                                (
                                    as24::lemma_b1_part7(p, j0, i0, i, prec)?,
                                    one(&o.dc, j0, i0),
                                )
                            };
                            parts.push(ag(&claimed, &oracle)?);
                        }
                    }
                }
            }
        }
    }
    Ok(Probe {
        correct: Some(merge(&parts)),
        ..Probe::default()
    })
}

fn probe_c7(inst: &Instance, prec: u32) -> Res<Probe> {
    let p = &inst.as24;
    Ok(Probe {
        correct: Some(ag(
            &as24::lemma_c7_grad_x(p, prec)?,
            &as24::oracle_grad_x(p, prec)?,
        )?),
        ..Probe::default()
    })
}

fn probe_as_d2(inst: &Instance, prec: u32) -> Res<Probe> {
    let p = &inst.as24;
    let [f, ..] = as24::direct_poly(p, &inst.poly_exact)?;
    let (f_lr, f_wide, eps) = as24::with_exp_bounds(p, &inst.poly_as24, as24::Bounded::F, prec)?;
    let [f_exp, ..] = as24::exp_values(p, prec)?;
    Ok(Probe {
        exact: Some(as24::lemma_d2_low_rank_f(p, &inst.poly_exact)? == f),
        eps: Some(eps_check(eps, &f_wide, &f_lr, &f_exp)?),
        ..Probe::default()
    })
}

fn probe_as_d3(inst: &Instance, prec: u32) -> Res<Probe> {
    let p = &inst.as24;
    let [_, q, ..] = as24::direct_poly(p, &inst.poly_exact)?;
    let [_, q_exp, q_printed, ..] = as24::exp_values(p, prec)?;
    let o = as24::oracle_grad_f(p, prec)?;
    Ok(Probe {
        correct: Some(ag(&q_exp, &o)?),
        printed: Some(ag(&q_printed, &o)?),
        exact: Some(as24::lemma_d3_low_rank_q(p, &inst.poly_exact)? == q),
        printed_exact: Some(as24::lemma_d3_low_rank_q_printed(p, &inst.poly_exact)? == q),
        ..Probe::default()
    })
}

fn probe_as_d4(inst: &Instance, prec: u32) -> Res<Probe> {
    let p = &inst.as24;
    let [_, _, p1, ..] = as24::direct_poly(p, &inst.poly_exact)?;
    let [_, _, _, p1_exp, ..] = as24::exp_values(p, prec)?;
    let o = as24::oracle_grad_scores(p, as24::ScoreOccurrence::Numerator, prec)?;
    Ok(Probe {
        correct: Some(ag(&p1_exp, &o)?),
        exact: Some(as24::lemma_d4_low_rank_p1(p, &inst.poly_exact)? == p1),
        ..Probe::default()
    })
}

fn probe_as_d5(inst: &Instance, prec: u32) -> Res<Probe> {
    let p = &inst.as24;
    let [_, _, _, p2, _] = as24::direct_poly(p, &inst.poly_exact)?;
    let [_, _, _, _, p2_exp, p2_printed, _] = as24::exp_values(p, prec)?;
    // The normaliser occurrence of S gives -p2.
    let o = neg(&as24::oracle_grad_scores(
        p,
        as24::ScoreOccurrence::Normaliser,
        prec,
    )?);
    Ok(Probe {
        correct: Some(ag(&p2_exp, &o)?),
        printed: Some(ag(&p2_printed, &o)?),
        exact: Some(as24::lemma_d5_low_rank_p2(p, &inst.poly_exact)? == p2),
        printed_exact: Some(as24::lemma_d5_low_rank_p2_printed(p, &inst.poly_exact)? == p2),
        ..Probe::default()
    })
}

fn probe_thm16(inst: &Instance, prec: u32) -> Res<Probe> {
    let p = &inst.as24;
    let [.., g] = as24::direct_poly(p, &inst.poly_exact)?;
    let (g_lr, g_wide, eps) = as24::with_exp_bounds(p, &inst.poly_as24, as24::Bounded::Grad, prec)?;
    let o = as24::oracle_grad_x(p, prec)?;
    Ok(Probe {
        exact: Some(as24::theorem_1_6_grad_x(p, &inst.poly_exact)? == g),
        eps: Some(eps_check(eps, &g_wide, &g_lr, &o)?),
        ..Probe::default()
    })
}

macro_rules! entry {
    ($paper:literal, $num:literal, $func:literal, $computes:literal, $corr:literal, $probe:expr) => {
        Entry {
            paper: $paper,
            number: $num,
            function: $func,
            computes: $computes,
            correction: $corr,
            probe: $probe,
        }
    };
}

/// Every lemma of the register, in paper order.
pub fn entries() -> Vec<Entry> {
    use terms::*;
    use Occurrence::{Key, Query, Value};
    vec![
        entry!(
            "ML24",
            "Lemma 3.4 / C.4",
            "ml24::weights::lemma_c4_chain_rule",
            "dL/dX, dL/dW, dL/dW_V as sums over G of entry derivatives",
            "-",
            probe_c4
        ),
        entry!(
            "ML24",
            "Lemma D.1 (i0 = i1, C1..C5)",
            "ml24::terms::lemma_d1_ds_dx",
            "ds_{i0 j0}/dX_{i0 j1}",
            "C1, C3: (X W)_{i0 j1} for <W_{j1,*}, X_{i0,*}>; C2, C4: X W^T for X W",
            |i, p| probe_d1(i, p, true)
        ),
        entry!(
            "ML24",
            "Lemma D.1 (i0 != i1, C6..C8)",
            "ml24::terms::lemma_d1_ds_dx",
            "ds_{i0 j0}/dX_{i1 j1}, i1 != i0",
            "f_{i0 i1} for f_{i1 i0}; (X W)_{i0 j1} for <W_{j1,*}, X_{i0,*}>",
            |i, p| probe_d1(i, p, false)
        ),
        entry!(
            "ML24",
            "Lemma D.3 (B6)",
            "ml24::terms::lemma_d3_b6",
            "key side, normaliser part of ds_{i0 j0}/dX",
            "B6 = -s f_{i0,*}^T (X_{i0,*} W), not -s f_{*,i0} (W X_{i0,*}^T)^T",
            |i, p| probe_b(
                i,
                p,
                (lemma_d3_b6, lemma_d3_b6_printed),
                Key,
                Part::Normaliser
            )
        ),
        entry!(
            "ML24",
            "Lemma D.4 (B7)",
            "ml24::terms::lemma_d4_b7",
            "key side, numerator part of ds_{i0 j0}/dX",
            "B7 = (f_{i0,*}^T o h_{*,j0}) (X_{i0,*} W)",
            |i, p| probe_b(
                i,
                p,
                (lemma_d4_b7, lemma_d4_b7_printed),
                Key,
                Part::Numerator
            )
        ),
        entry!(
            "ML24",
            "Lemma D.5 (B8)",
            "ml24::terms::lemma_d5_b8",
            "value side of ds_{i0 j0}/dX",
            "B8 = f_{i0,*}^T (W_V)_{*,j0}^T (row of f, not column)",
            |i, p| probe_b(i, p, (lemma_d5_b8, lemma_d5_b8_printed), Value, Part::Total)
        ),
        entry!(
            "ML24",
            "Lemma D.6 (B2)",
            "ml24::terms::lemma_d6_b2",
            "query side, normaliser part of ds_{i0 j0}/dX_{i0,*}",
            "B2 = -s W X^T f_{i0,*}^T (W, not W^T)",
            |i, p| probe_b(
                i,
                p,
                (lemma_d6_b2, lemma_d6_b2_printed),
                Query,
                Part::Normaliser
            )
        ),
        entry!(
            "ML24",
            "Lemma D.7 (B4)",
            "ml24::terms::lemma_d7_b4",
            "query side, numerator part of ds_{i0 j0}/dX_{i0,*}",
            "B4 = W X^T (f_{i0,*}^T o h_{*,j0}) (W, not W^T)",
            |i, p| probe_b(
                i,
                p,
                (lemma_d7_b4, lemma_d7_b4_printed),
                Query,
                Part::Numerator
            )
        ),
        entry!(
            "ML24",
            "Lemma D.8",
            "ml24::terms::lemma_d8_ds_dx",
            "ds_{i0 j0}/dX = B6 + B7 + B8 + e_{i0} (B2 + B4)^T",
            "assemble the corrected B-terms",
            probe_d8
        ),
        entry!(
            "ML24",
            "Lemma D.9",
            "ml24::terms::lemma_d9_grad_x",
            "dL/dX = sum G_{i0 j0} ds_{i0 j0}/dX",
            "assemble the corrected B-terms",
            |i, p| probe_grad(
                i,
                p,
                lemma_d9_grad_x,
                Some(lemma_d9_grad_x_printed),
                Param::X(Occurrence::All),
                Part::Total
            )
        ),
        entry!(
            "ML24",
            "Lemma D.10 (D6)",
            "ml24::terms::lemma_d10_d6",
            "key side, normaliser part of dL/dX",
            "D6 = -f^T diag(K) X W (f^T and W, not f and W^T)",
            |i, p| probe_grad(
                i,
                p,
                lemma_d10_d6,
                Some(lemma_d10_d6_printed),
                Param::X(Key),
                Part::Normaliser
            )
        ),
        entry!(
            "ML24",
            "Lemma D.11 (D7)",
            "ml24::terms::lemma_d11_d7",
            "key side, numerator part of dL/dX",
            "D7 = (f o q)^T X W, not (f o q^T) X W^T",
            |i, p| probe_grad(
                i,
                p,
                lemma_d11_d7,
                Some(lemma_d11_d7_printed),
                Param::X(Key),
                Part::Numerator
            )
        ),
        entry!(
            "ML24",
            "Lemma D.12 (D8)",
            "ml24::terms::lemma_d12_d8",
            "value side of dL/dX",
            "D8 = f^T G W_V^T, not f G W_V^T",
            |i, p| probe_grad(
                i,
                p,
                lemma_d12_d8,
                Some(lemma_d12_d8_printed),
                Param::X(Value),
                Part::Total
            )
        ),
        entry!(
            "ML24",
            "Lemma D.13 (D2)",
            "ml24::terms::lemma_d13_d2",
            "query side, normaliser part of dL/dX",
            "D2 = -diag(K) f X W^T, not ... X W",
            |i, p| probe_grad(
                i,
                p,
                lemma_d13_d2,
                Some(lemma_d13_d2_printed),
                Param::X(Query),
                Part::Normaliser
            )
        ),
        entry!(
            "ML24",
            "Lemma D.14 (D4)",
            "ml24::terms::lemma_d14_d4",
            "query side, numerator part of dL/dX",
            "D4 = (f o q) X W^T, not ... X W",
            |i, p| probe_grad(
                i,
                p,
                lemma_d14_d4,
                Some(lemma_d14_d4_printed),
                Param::X(Query),
                Part::Numerator
            )
        ),
        entry!(
            "ML24",
            "Lemma D.17",
            "ml24::terms::lemma_d17_grad_x",
            "dL/dX = tau (p X W^T + p^T X W) + f^T G W_V^T",
            "D2 + D4 = p X W^T, D6 + D7 = p^T X W, D8 = f^T G W_V^T",
            |i, p| probe_grad(
                i,
                p,
                lemma_d17_grad_x,
                Some(lemma_d17_grad_x_printed),
                Param::X(Occurrence::All),
                Part::Total
            )
        ),
        entry!(
            "ML24",
            "Lemma C.13",
            "ml24::low_rank::lemma_e1_low_rank_f",
            "f~ = D~^-1 U V^T = U~ V^T (polynomial kernel, docs/math.md §3.3)",
            "-",
            probe_e1
        ),
        entry!(
            "ML24",
            "Lemmas E.2..E.10 (D6)",
            "ml24::low_rank::lemma_e_low_rank_d6",
            "low-rank D6 = -tau V (U~^T diag(K~) X W)",
            "transposes as in D.10",
            |i, p| probe_e(i, p, |t| &t.d6, |t| &t.d6, Key, Part::Normaliser)
        ),
        entry!(
            "ML24",
            "Lemmas E.2..E.10 (D7)",
            "ml24::low_rank::lemma_e_low_rank_d7",
            "low-rank D7 = tau (V (x) h)((U~ (x) G)^T X W)",
            "transposes as in D.11",
            |i, p| probe_e(i, p, |t| &t.d7, |t| &t.d7, Key, Part::Numerator)
        ),
        entry!(
            "ML24",
            "Lemmas E.2..E.10 (D8)",
            "ml24::low_rank::lemma_e_low_rank_d8",
            "low-rank D8 = V ((U~^T G) W_V^T)",
            "transposes as in D.12",
            |i, p| probe_e(i, p, |t| &t.d8, |t| &t.d8, Value, Part::Total)
        ),
        entry!(
            "ML24",
            "Lemmas E.2..E.10 (D2)",
            "ml24::low_rank::lemma_e_low_rank_d2",
            "low-rank D2 = -tau diag(K~) U~ ((V^T X) W^T)",
            "transposes as in D.13",
            |i, p| probe_e(i, p, |t| &t.d2, |t| &t.d2, Query, Part::Normaliser)
        ),
        entry!(
            "ML24",
            "Lemmas E.2..E.10 (D4)",
            "ml24::low_rank::lemma_e_low_rank_d4",
            "low-rank D4 = tau (U~ (x) G)(((V (x) h)^T X) W^T)",
            "transposes as in D.14",
            |i, p| probe_e(i, p, |t| &t.d4, |t| &t.d4, Query, Part::Numerator)
        ),
        entry!(
            "ML24",
            "Lemmas E.2..E.10 (sum)",
            "ml24::low_rank::lemma_e_low_rank_grad_x",
            "low-rank dL/dX in O(n r d d_v)",
            "transposes as in D.17",
            probe_e_total
        ),
        entry!(
            "ML24",
            "Lemma F.3 (= AS24 B.1)",
            "ml24::weights::lemma_f3_ds_dw",
            "ds_{i0 j0}/dW",
            "-",
            |i, p| probe_entrywise(
                i,
                p,
                weights::lemma_f3_ds_dw,
                Param::W,
                (i.layer.d(), i.layer.d())
            )
        ),
        entry!(
            "ML24",
            "Lemma F.4",
            "ml24::weights::lemma_f4_grad_w",
            "dL/dW = tau X^T p X",
            "-",
            |i, p| probe_grad(i, p, weights::lemma_f4_grad_w, None, Param::W, Part::Total)
        ),
        entry!(
            "ML24",
            "Lemma F.5 / Alg. 1 line 19",
            "ml24::low_rank::lemma_f5_grad_w_low_rank",
            "low-rank dL/dW from the p1 and p2 factors",
            "line 19 keeps only (X^T U3)(V3^T X); subtract (X^T U4)(V4^T X)",
            probe_f5
        ),
        entry!(
            "ML24",
            "Lemma G.1",
            "ml24::weights::lemma_g1_ds_dwv",
            "ds_{i0 j0}/dW_V",
            "-",
            |i, p| probe_entrywise(
                i,
                p,
                weights::lemma_g1_ds_dwv,
                Param::Wv,
                (i.layer.d(), i.layer.d_v())
            )
        ),
        entry!(
            "ML24",
            "Lemma G.2",
            "ml24::weights::lemma_g2_grad_wv",
            "dL/dW_V = sum G_{i0 j0} ds_{i0 j0}/dW_V",
            "-",
            |i, p| probe_grad(
                i,
                p,
                weights::lemma_g2_grad_wv,
                None,
                Param::Wv,
                Part::Total
            )
        ),
        entry!(
            "ML24",
            "Lemma G.3",
            "ml24::weights::lemma_g3_grad_wv",
            "dL/dW_V closed form",
            "X^T f^T G, not X^T f G",
            |i, p| probe_grad(
                i,
                p,
                weights::lemma_g3_grad_wv,
                Some(weights::lemma_g3_grad_wv_printed),
                Param::Wv,
                Part::Total
            )
        ),
        entry!(
            "ML24",
            "Alg. 1 line 22 (low-rank G.3)",
            "ml24::low_rank::lemma_g3_grad_wv_low_rank",
            "low-rank dL/dW_V",
            "(X^T V1)(U1^T G), not (X^T U1)(V1^T G)",
            probe_g3_low_rank
        ),
        entry!(
            "ML24",
            "Lemma H.2",
            "ml24::blocks::lemma_h1_grad_through_mlp",
            "G_i = (dL/dT o phi'(Z W_g)) W_g^T",
            "-",
            |i, p| probe_h(i, p, true)
        ),
        entry!(
            "ML24",
            "dL/dW_g (H.2's weight counterpart; not in ML24)",
            "ml24::blocks::lemma_h2_grad_w_g",
            "dL/dW_g = Z^T (dL/dT o phi'(Z W_g))",
            "-",
            |i, p| probe_h(i, p, false)
        ),
        entry!(
            "ML24",
            "Lemma I.3 / Alg. 2",
            "ml24::low_rank::lemma_i3_causal_prefix_product",
            "(M o U V^T) Y by prefix states; causal attention with P",
            "-",
            probe_prefix
        ),
        entry!(
            "ML24",
            "suffix-sum product (docs/math.md §3.5)",
            "ml24::low_rank::lemma_causal_suffix_product",
            "(M o U V^T)^T Y by suffix states (needed by the corrected transposes)",
            "not in ML24",
            probe_suffix
        ),
        entry!(
            "ML24",
            "Lemma I.6",
            "ml24::low_rank::lemma_i6_masked_normaliser",
            "masked normaliser (M o U V^T) 1; Hadamard case via Fact C.2",
            "-",
            probe_i6
        ),
        entry!(
            "ML24",
            "Lemma J.3",
            "ml24::blocks::lemma_j3_residual_grad_x",
            "dL/dX through T = X + s(X) W_O",
            "-",
            probe_j3
        ),
        entry!(
            "ML24",
            "Lemma K.2",
            "ml24::blocks::lemma_k2_multi_head",
            "multi-head dL/dX, dL/dW_h, dL/dW_V,h",
            "-",
            probe_k2
        ),
        entry!(
            "ML24",
            "Fact C.2",
            "ml24::low_rank::fact_c2_row_kron",
            "(U1 V1^T) o (U2 V2^T) = (U1 (x) U2)(V1 (x) V2)^T",
            "-",
            probe_c2
        ),
        entry!(
            "AS24",
            "Lemma B.1 part 2",
            "as24::lemma_b1_part1",
            "d(A1 X A2^T)_{j0}/dx_i",
            "-",
            |i, p| probe_b1(i, p, 1)
        ),
        entry!(
            "AS24",
            "Lemma B.1 part 3",
            "as24::lemma_b1_part2",
            "du_{j0}/dx_i",
            "-",
            |i, p| probe_b1(i, p, 2)
        ),
        entry!(
            "AS24",
            "Lemma B.1 part 4",
            "as24::lemma_b1_part3",
            "d alpha_{j0}/dx_i",
            "-",
            |i, p| probe_b1(i, p, 3)
        ),
        entry!(
            "AS24",
            "Lemma B.1 part 5 (its proof's d alpha^-1 step)",
            "as24::lemma_b1_part4",
            "d alpha_{j0}^-1/dx_i",
            "-",
            |i, p| probe_b1(i, p, 4)
        ),
        entry!(
            "AS24",
            "Lemma B.1 part 5",
            "as24::lemma_b1_part5",
            "df_{j0}/dx_i",
            "-",
            |i, p| probe_b1(i, p, 5)
        ),
        entry!(
            "AS24",
            "Lemma B.1 part 6",
            "as24::lemma_b1_part6",
            "d<f_{j0}, h_{i0}>/dx_i",
            "-",
            |i, p| probe_b1(i, p, 6)
        ),
        entry!(
            "AS24",
            "Lemma B.1 part 7",
            "as24::lemma_b1_part7",
            "dc_{j0 i0}/dx_i",
            "-",
            |i, p| probe_b1(i, p, 7)
        ),
        entry!(
            "AS24",
            "Lemma B.1 part 8 (summed over j0, i0)",
            "as24::lemma_b1_part8",
            "dL/dx_i",
            "-",
            |i, p| probe_b1(i, p, 8)
        ),
        entry!(
            "AS24",
            "Lemma C.7",
            "as24::lemma_c7_grad_x",
            "dL/dX = A1^T p A2",
            "-",
            probe_c7
        ),
        entry!(
            "AS24",
            "Lemma D.1",
            "as24::lemma_d2_low_rank_f",
            "f~ = U1 V1^T",
            "-",
            probe_as_d2
        ),
        entry!(
            "AS24",
            "Lemma D.3",
            "as24::lemma_d3_low_rank_q",
            "q~ = c~ h^T = U2 V2^T",
            "q = c h^T (not h c^T): U2 = [U1, -E], V2 = [h h^T V1, h]",
            probe_as_d3
        ),
        entry!(
            "AS24",
            "Lemma D.4",
            "as24::lemma_d4_low_rank_p1",
            "p1~ = f~ o q~ = U3 V3^T",
            "-",
            probe_as_d4
        ),
        entry!(
            "AS24",
            "Lemma D.5",
            "as24::lemma_d5_low_rank_p2",
            "p2~ = diag(r~) f~ = U4 V4^T",
            "U4 = diag(r~) U1, V4 = V1 (not V4 = diag(r~) V1); r~_j = U1_j (V1^T V2) U2_j^T",
            probe_as_d5
        ),
        entry!(
            "AS24",
            "Theorem 1.6 (algorithm)",
            "as24::theorem_1_6_grad_x",
            "dL/dX ~ (A1^T U3)(V3^T A2) - (A1^T U4)(V4^T A2)",
            "-",
            probe_thm16
        ),
    ]
}
