//! Probes for the lemmas that state inequalities rather than identities:
//! ML24's entry bounds (Lemmas C.17-C.19), the rank side of Lemma I.1, and AS24's lower-bound side
//! (Lemmas E.3, E.4 and the reduction of Theorem 1.5 / E.5). Each measures
//! the quantity in certified intervals and compares it with the stated bound
//! ([`BoundCheck`]); the reduction also compares its gradient-derived slopes
//! with dual-number slopes entry by entry.

use rug::Rational;

use crate::as24_lower::{
    f_and_slope, f_at_zero, lambda_at, lemma_e3_bounds, lemma_e4_riemann_sum, slopes_by_dual,
    theorem_e5_calls, theorem_e5_reduction, HardInstance,
};
use crate::bounds::{abs, BoundCheck};
use crate::instance::Instance;
use crate::interval::Interval;
use crate::linalg::{agreement, Mat, Res};
use crate::ml24::degree::lemma_i1_low_rank;
use crate::ml24::entry_bounds::EntryBound;
use crate::ml24::Layer;

use super::Probe;

/// The hard instances every AS24 Appendix E probe runs on: a seeded one
/// (`n = 8`, `d = 3`, `B = 2`) and the aligned one with `d = 32 > 27`
/// (`n = 4`, `B = 1`), where the printed `|f'| <= 8 B n` fails.
fn hard_instances(inst: &Instance) -> Res<[HardInstance; 2]> {
    Ok([
        HardInstance::random(8, 3, 2.0, inst.seed)?,
        HardInstance::aligned(4, 32, 1.0)?,
    ])
}

/// An entry-bound lemma (C.17-C.19): the general bound must hold; the
/// printed chain is reported as the printed bound.
pub(super) fn probe_entry_bound(
    inst: &Instance,
    prec: u32,
    lemma: fn(&Layer, u32) -> Res<EntryBound>,
) -> Res<Probe> {
    let e = lemma(&inst.layer, prec)?;
    Ok(Probe {
        bound: Some(BoundCheck::new(&e.measured, &e.general)?),
        printed_bound: Some(BoundCheck::new(&e.measured, &e.printed)?),
        ..Probe::default()
    })
}

/// AS24 Lemma E.3 on both hard instances: `|f'|` on the grid `lambda = i/8`
/// (and at `11/16`, near the aligned instance's maximum `lambda B = ln 2`)
/// against `2 B d n` (corrected) and `8 B n` (printed); the difference
/// quotients of `f'` on the grid against `5 B^2 d n` (a difference quotient
/// is a value of `f''` by the mean value theorem).
pub(super) fn probe_as_e3(inst: &Instance, prec: u32) -> Res<Probe> {
    let mut checks = Vec::new();
    let mut printed = Vec::new();
    for h in hard_instances(inst)? {
        let b = lemma_e3_bounds(&h, prec);
        let grid: Vec<Interval> = (0..=8).map(|i| lambda_at(i, 8, prec)).collect();
        let mut slopes = Vec::new();
        for l in grid.iter().chain([lambda_at(11, 16, prec)].iter()) {
            let s = f_and_slope(&h, l, prec)?.1;
            checks.push(BoundCheck::new(&s, &b.slope)?);
            printed.push(BoundCheck::new(&s, &b.slope_printed)?);
            slopes.push(s);
        }
        let step = lambda_at(1, 8, prec);
        for w in slopes[..9].windows(2) {
            let quotient = w[1].sub(&w[0]).div(&step);
            checks.push(BoundCheck::new(&quotient, &b.curvature)?);
        }
    }
    Ok(Probe {
        bound: Some(BoundCheck::worst(&checks)),
        printed_bound: Some(BoundCheck::worst(&printed)),
        ..Probe::default()
    })
}

/// AS24 Lemma E.4 on both hard instances with `m = 16`: `|t_m - (f(1) -
/// f(0))|` against `b / m`, `b = 5 B^2 d n`.
pub(super) fn probe_as_e4(inst: &Instance, prec: u32) -> Res<Probe> {
    let m = 16;
    let mut checks = Vec::new();
    for h in hard_instances(inst)? {
        let t = lemma_e4_riemann_sum(&slopes_by_dual(&h, m, prec)?, prec)?;
        let f1 = f_and_slope(&h, &Interval::one(prec), prec)?.0;
        let f0 = f_and_slope(&h, &Interval::zero(prec), prec)?.0;
        let err = abs(&t.sub(&f1.sub(&f0)));
        let bound = lemma_e3_bounds(&h, prec)
            .curvature
            .div(&Interval::from_f64(m as f64, prec));
        checks.push(BoundCheck::new(&err, &bound)?);
    }
    Ok(Probe {
        bound: Some(BoundCheck::worst(&checks)),
        ..Probe::default()
    })
}

/// Theorem 1.5 / E.5's reduction on the seeded hard instance (`n = 8`, so
/// `m = 128 >= (log2 8)^4 = 81` gradient calls): the slopes `2 tr(dL/dX)`
/// from AS24's gradient against dual-number slopes of `f`, the fast `f(0)`
/// against the forward formula, and the answer's distance from `f(1)`
/// against `b / m`.
pub(super) fn probe_as_e5(inst: &Instance, prec: u32) -> Res<Probe> {
    let [h, _] = hard_instances(inst)?;
    let m = theorem_e5_calls(h.n());
    let r = theorem_e5_reduction(&h, m, prec)?;
    let mut claimed = r.slopes_by_gradient.clone();
    let mut oracle = slopes_by_dual(&h, m, prec)?;
    claimed.push(f_at_zero(&h, prec));
    oracle.push(f_and_slope(&h, &Interval::zero(prec), prec)?.0);
    let col = |v: Vec<Interval>| Mat::from_vec(v.len(), 1, v);
    Ok(Probe {
        correct: Some(agreement(&col(claimed), &col(oracle))?),
        bound: Some(BoundCheck::new(&r.error, &r.bound)?),
        ..Probe::default()
    })
}

/// ML24 Lemma I.1's rank side on the instance's layer with the degree-4
/// polynomial: `U V^T = P(scores)` exactly, and the rank `C(g + d, g)`
/// against the lemma's `C(2(g + d), 2g)`. The degree bound itself is an
/// `O()` without constants and is not checked (`ml24::degree`).
pub(super) fn probe_i1(inst: &Instance, prec: u32) -> Res<Probe> {
    let c = lemma_i1_low_rank(&inst.layer, &inst.poly_exact)?;
    let rank = Interval::from_f64(c.rank as f64, prec);
    let bound = Interval::from_rational(&Rational::from(c.rank_bound), prec);
    Ok(Probe {
        exact: Some(c.product == c.direct),
        bound: Some(BoundCheck::new(&rank, &bound)?),
        ..Probe::default()
    })
}
