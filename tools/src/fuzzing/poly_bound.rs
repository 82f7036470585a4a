//! The `poly_bound` property: on inputs whose Q and K entries lie in [-B, B], with B
//! log-spread from 1e-3 to 10 sqrt(ln n) (both sides of AS23's threshold), the
//! polynomial engine either refuses with [`Error::PolyRefused`] or returns O~ (and
//! gradients) within their certified entrywise bounds of exact attention.
//!
//! Exact attention is not available in closed form, so the check compares against the
//! f64 exact engine with its a priori rounding bound
//! ([`exact_reference`]): |O~ - O_ref| <= bound_poly + bound_ref entrywise, which holds
//! whenever both certificates hold (triangle inequality). Forward and backward (both
//! gradient kinds) are checked.

use super::{check_entries, log_spread, pick, Outcome, Violation};
use arbitrary::{Arbitrary, Unstructured};
use polyattn::attention::exact::reference::exact_reference;
use polyattn::attention::poly::{self, Accuracy, GradientKind, PolyConfig};
use polyattn::attention::Mask;
use polyattn::error::Error;
use polyattn::rng::SplitMix64;
use polyattn::tensor::Matrix;

/// How the entries of Q and K are drawn (all within [-B, B]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// Independent uniform on [-B, B].
    Uniform,
    /// Every entry +B or -B, random signs.
    PlusMinusB,
    /// Every entry equal to +B (all scores equal to the radius).
    AllB,
    /// Row 0 of Q and of K at +-B, every other entry 1000 times smaller.
    OneHugeRow,
    /// Rank one: q_i = a_i w, k_j = b_j w with |a_i|, |b_j|, |w_l| <= 1, scaled to B.
    RankOne,
}

/// The structured input of the `poly_bound` target.
#[derive(Clone, Debug, PartialEq)]
pub struct PolyBoundInput {
    /// Queries (1..=128).
    pub n_q: usize,
    /// Keys (1..=128; equal to `n_q` half of the time).
    pub n_k: usize,
    /// Head dimension of Q and K (1..=8).
    pub d: usize,
    /// Head dimension of V (1..=4).
    pub d_v: usize,
    /// The entry bound B, log-spread over [1e-3, 10 sqrt(ln max(n, 2))].
    pub b: f64,
    /// Target accuracy (eps 1e-1 .. 1e-12) or a fixed degree (1..=20).
    pub accuracy: Accuracy,
    /// The mask.
    pub mask: Mask,
    /// The scale (`None`: 1/sqrt(d)); also 1, negative and zero.
    pub scale: Option<f64>,
    /// The entries' pattern.
    pub pattern: Pattern,
    /// Which gradient the backward computes.
    pub kind: GradientKind,
    /// Seed of the entries.
    pub seed: u64,
}

/// Largest n of the target.
pub const MAX_N: usize = 128;

/// The rank limit of the target's engine configuration (the default is 20 000): ranks
/// up to 3 500 still reach degree 6 at d = 8 and degree 20 at d <= 3, and keep one
/// execution well under a second, so a campaign runs many more of them. A refusal
/// for rank is a typed refusal like any other.
pub const MAX_RANK: usize = 3_500;

impl<'a> Arbitrary<'a> for PolyBoundInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let n_q = u.int_in_range(1..=MAX_N)?;
        let n_k = if u.arbitrary::<bool>()? {
            n_q
        } else {
            u.int_in_range(1..=MAX_N)?
        };
        let d = u.int_in_range(1..=8)?;
        let d_v = u.int_in_range(1..=4)?;
        let n = n_q.max(n_k).max(2) as f64;
        let b = log_spread(u, 1e-3, 10.0 * n.ln().sqrt())?;
        let accuracy = if u.ratio(1u8, 4u8)? {
            Accuracy::Degree(u.int_in_range(1..=20)?)
        } else {
            Accuracy::Eps(log_spread(u, 1e-12, 1e-1)?)
        };
        let mut mask = pick(
            u,
            &[Mask::None, Mask::CausalTopLeft, Mask::CausalBottomRight],
        )?;
        let scale = pick(u, &[None, None, None, Some(1.0), Some(-0.5), Some(0.0)])?;
        let pattern = pick(
            u,
            &[
                Pattern::Uniform,
                Pattern::PlusMinusB,
                Pattern::AllB,
                Pattern::OneHugeRow,
                Pattern::RankOne,
            ],
        )?;
        let kind = pick(
            u,
            &[GradientKind::Substituted, GradientKind::PolynomialModel],
        )?;
        let seed = u.arbitrary()?;
        // A sliding window (the range form) on a third of the inputs, drawn last so that
        // older corpus inputs decode as before (an exhausted input reads 0: no window).
        if u.arbitrary::<u8>()? % 3 == 1 {
            let side = |u: &mut Unstructured<'a>| -> arbitrary::Result<Option<usize>> {
                let x = u.int_in_range(0..=MAX_N + 1)?;
                Ok((x <= MAX_N).then_some(x))
            };
            let (left, right) = (side(u)?, side(u)?);
            let align = pick(
                u,
                &[
                    polyattn::attention::Alignment::TopLeft,
                    polyattn::attention::Alignment::BottomRight,
                ],
            )?;
            mask = mask.with_window(left, right, align);
        }
        Ok(Self {
            n_q,
            n_k,
            d,
            d_v,
            b,
            accuracy,
            mask,
            scale,
            pattern,
            kind,
            seed,
        })
    }
}

/// Q (`n_q x d`) and K (`n_k x d`) row-major, every entry in [-B, B].
pub fn draw_qk(x: &PolyBoundInput) -> (Vec<f64>, Vec<f64>) {
    let (b, d) = (x.b, x.d);
    let mut r = SplitMix64::new(x.seed);
    let gen = |rows: usize, r: &mut SplitMix64| -> Vec<f64> {
        match x.pattern {
            Pattern::Uniform => (0..rows * d).map(|_| r.range(-b, b)).collect(),
            Pattern::PlusMinusB => (0..rows * d)
                .map(|_| if r.uniform() < 0.5 { -b } else { b })
                .collect(),
            Pattern::AllB => vec![b; rows * d],
            Pattern::OneHugeRow => (0..rows * d)
                .map(|idx| {
                    let s = if r.uniform() < 0.5 { -1.0 } else { 1.0 };
                    if idx < d {
                        s * b
                    } else {
                        s * b * 1e-3 * r.uniform()
                    }
                })
                .collect(),
            Pattern::RankOne => Vec::new(), // filled below (shares w between Q and K)
        }
    };
    if x.pattern == Pattern::RankOne {
        let w: Vec<f64> = (0..d).map(|_| r.range(-1.0, 1.0)).collect();
        let w_max = w.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
        let mut outer = |rows: usize| -> Vec<f64> {
            let a: Vec<f64> = (0..rows).map(|_| r.range(-1.0, 1.0)).collect();
            let a_max = a.iter().fold(0.0f64, |m, v| m.max(v.abs())).max(1e-300);
            (0..rows * d)
                .map(|idx| (b * (a[idx / d] / a_max) * (w[idx % d] / w_max)).clamp(-b, b))
                .collect()
        };
        let q = outer(x.n_q);
        let k = outer(x.n_k);
        return (q, k);
    }
    let q = gen(x.n_q, &mut r);
    let k = gen(x.n_k, &mut r);
    (q, k)
}

/// Runs the property on one input (see the module docs).
pub fn check(x: &PolyBoundInput) -> Result<Outcome, Violation> {
    let (q, k) = draw_qk(x);
    let mut r = SplitMix64::new(x.seed ^ 0x9e37_79b9_7f4a_7c15);
    let v: Vec<f64> = (0..x.n_k * x.d_v).map(|_| r.range(-1.0, 1.0)).collect();
    let g: Vec<f64> = (0..x.n_q * x.d_v).map(|_| r.range(-1.0, 1.0)).collect();
    let mat = |rows, cols, data: Vec<f64>| {
        Matrix::from_vec(rows, cols, data).map_err(|e| Violation(format!("building input: {e}")))
    };
    let (q, k, v, g) = (
        mat(x.n_q, x.d, q)?,
        mat(x.n_k, x.d, k)?,
        mat(x.n_k, x.d_v, v)?,
        mat(x.n_q, x.d_v, g)?,
    );
    let cfg = PolyConfig {
        scale: x.scale,
        mask: x.mask,
        accuracy: x.accuracy,
        max_rank: MAX_RANK,
        ..PolyConfig::default()
    };
    let entry_bound = q
        .as_slice()
        .iter()
        .chain(k.as_slice())
        .fold(0.0f64, |m, v| m.max(v.abs()));
    let mut out = Outcome {
        n: Some(x.n_q.max(x.n_k)),
        entry_bound: Some(entry_bound),
        ..Outcome::default()
    };
    if entry_bound > x.b {
        return Err(Violation(format!(
            "generator drew an entry {entry_bound:e} above B = {:e}",
            x.b
        )));
    }
    let fwd = match poly::forward(q.view(), k.view(), v.view(), &cfg) {
        Ok(f) => f,
        Err(Error::PolyRefused { reason, .. }) => {
            out.refused = Some(reason);
            return Ok(out);
        }
        Err(e) => return Err(Violation(format!("forward: untyped failure: {e}"))),
    };
    out.degree = Some(fwd.plan.regime.degree);
    out.score_radius = Some(fwd.plan.regime.radius);
    let reference = exact_reference(
        q.view(),
        k.view(),
        v.view(),
        Some(g.view()),
        &cfg.attention(),
    )
    .map_err(|e| Violation(format!("the f64 reference failed on a valid input: {e}")))?;
    let ctx = |what: &str| {
        format!(
            "{what} (n_q={} n_k={} d={} d_v={} B={:e} R={:e} degree={} {:?} {:?} {:?})",
            x.n_q,
            x.n_k,
            x.d,
            x.d_v,
            x.b,
            fwd.plan.regime.radius,
            fwd.plan.regime.degree,
            x.mask,
            x.scale,
            x.pattern
        )
    };
    let mut tight = check_entries(
        &ctx("o"),
        fwd.o.as_slice(),
        &reference.o,
        &fwd.bound.total,
        &reference.bound_o,
    )?;
    let grads = match poly::backward(q.view(), k.view(), v.view(), &fwd, g.view(), x.kind, &cfg) {
        Ok(gr) => gr,
        Err(Error::PolyRefused { reason, .. }) => {
            out.refused = Some(format!("backward: {reason}"));
            out.tightness = Some(tight);
            return Ok(out);
        }
        Err(e) => return Err(Violation(ctx(&format!("backward: untyped failure: {e}")))),
    };
    let rg = reference
        .grads
        .as_ref()
        .ok_or_else(|| Violation("the reference returned no gradients".into()))?;
    for (name, got, want, b, rb) in [
        ("dq", &grads.dq, &rg.dq, &grads.bound_dq.total, &rg.bound_dq),
        ("dk", &grads.dk, &rg.dk, &grads.bound_dk.total, &rg.bound_dk),
        ("dv", &grads.dv, &rg.dv, &grads.bound_dv.total, &rg.bound_dv),
    ] {
        let what = ctx(&format!("{name} ({:?})", x.kind));
        tight = tight.max(check_entries(&what, got.as_slice(), want, b, rb)?);
    }
    out.tightness = Some(tight);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(pattern: Pattern, b: f64) -> PolyBoundInput {
        PolyBoundInput {
            n_q: 16,
            n_k: 12,
            d: 3,
            d_v: 2,
            b,
            accuracy: Accuracy::Eps(1e-6),
            mask: Mask::CausalBottomRight,
            scale: None,
            pattern,
            kind: GradientKind::Substituted,
            seed: 7,
        }
    }

    #[test]
    fn patterns_stay_within_b() {
        for p in [
            Pattern::Uniform,
            Pattern::PlusMinusB,
            Pattern::AllB,
            Pattern::OneHugeRow,
            Pattern::RankOne,
        ] {
            let (q, k) = draw_qk(&input(p, 0.7));
            let m = q.iter().chain(&k).fold(0.0f64, |m, v| m.max(v.abs()));
            assert!(m <= 0.7 && m > 0.0, "{p:?}: max {m}");
            assert_eq!((q.len(), k.len()), (48, 36));
        }
        let (q, _) = draw_qk(&input(Pattern::PlusMinusB, 0.7));
        assert!(q.iter().all(|v| v.abs() == 0.7));
    }

    #[test]
    fn small_b_is_accepted_and_certified() {
        let out = check(&input(Pattern::Uniform, 0.3)).unwrap();
        assert!(out.refused.is_none(), "{out:?}");
        let t = out.tightness.unwrap();
        assert!(t <= 1.0, "{t}");
    }

    #[test]
    fn large_b_is_refused_with_a_reason() {
        let mut x = input(Pattern::AllB, 20.0);
        x.accuracy = Accuracy::Eps(1e-10);
        let out = check(&x).unwrap();
        assert!(out.refused.is_some(), "{out:?}");
    }
}
