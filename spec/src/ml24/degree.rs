//! ML24 Lemma I.1 (quoted from AS23): for `||Q||_inf, ||K||_inf <= R` and
//! `A = exp(Q K^T / d)` there is a degree
//! `g = O(max(log(1/eps) / log(log(1/eps) / R), R^2))` and a rank
//! `r <= C(2(g + d), 2g)` with an `(eps, r)`-approximation of `A` computable
//! in `O(n r)` time.
//!
//! What can be checked on an instance, and is: the degree-`g` factorisation
//! of docs/math.md §3.3 ([`crate::linalg::poly_factors`]) gives
//! `U V^T = P(scores)` exactly, with rank `C(g + d, g)` (the monomials of
//! degree `<= g` in `d` variables), which is at most the lemma's
//! `C(2(g + d), 2g)`; [`lemma_i1_low_rank`] returns both sides.
//!
//! What cannot: the degree bound is an `O()` without constants, so no finite
//! computation confirms or refutes it. [`lemma_i1_degree_terms`] evaluates
//! its two terms as printed and with `R^2` in the first term: the scores of
//! `Q K^T / d` reach `R^2`, and the degree of the cited approximation of
//! `exp` on an interval of length `B` is `max(log(1/eps) / log(log(1/eps) /
//! B), B)` with `B` the score bound, so the printed `R` inside the logarithm
//! reads as a slip for `R^2` (docs/math.md §6).

use rug::{Complete, Integer, Rational};

use crate::linalg::{lift, lift_scalar, matmul, poly_factors, Mat, Poly, Res, EXACT};
use crate::ml24::Layer;

/// The rank side of Lemma I.1 on a layer (queries `X W`, keys `X`, scale
/// `tau`) for a polynomial `P` of degree `g`.
#[derive(Clone, Debug, PartialEq)]
pub struct LowRankCheck {
    /// `U V^T` from the degree-`g` factors, in exact rationals.
    pub product: Mat<Rational>,
    /// `P(tau (X W) X^T)` entry by entry, in exact rationals.
    pub direct: Mat<Rational>,
    /// The factors' rank (columns of `U`).
    pub rank: usize,
    /// The lemma's bound `C(2(g + d), 2g)`.
    pub rank_bound: Integer,
}

/// `C(n, k)` exactly.
pub fn binomial(n: u32, k: u32) -> Integer {
    Integer::binomial_u(n, k).complete()
}

/// Lemma I.1's rank side (module docs).
pub fn lemma_i1_low_rank(layer: &Layer, p: &Poly) -> Res<LowRankCheck> {
    layer.validate()?;
    let x = lift::<Rational>("X", &layer.x, EXACT)?;
    let w = lift::<Rational>("W", &layer.w, EXACT)?;
    let tau = lift_scalar::<Rational>("tau", layer.tau, EXACT)?;
    let q = matmul(&x, &w, EXACT)?;
    let (u, v) = poly_factors(&q, &x, &tau, p, EXACT)?;
    let product = matmul(&u, &v.transpose(), EXACT)?;
    let scores = matmul(&q, &x.transpose(), EXACT)?;
    let direct = scores.map(|s| p.eval(&(tau.clone() * s), EXACT));
    let (g, d) = (p.degree() as u32, layer.d() as u32);
    Ok(LowRankCheck {
        product,
        direct,
        rank: u.ncols(),
        rank_bound: binomial(2 * (g + d), 2 * g),
    })
}

/// The two terms of Lemma I.1's degree bound for `eps` and `R`: as printed,
/// `(log(1/eps) / log(log(1/eps) / R), R^2)`, and with `R^2` in the first
/// term. Natural logarithms; `None` where a logarithm's argument is not
/// above `1` (the expression is then undefined or negative, and the `O()`
/// says nothing).
pub fn lemma_i1_degree_terms(eps: f64, r: f64) -> (Option<[f64; 2]>, Option<[f64; 2]>) {
    let l = (1.0 / eps).ln();
    let term = |b: f64| {
        let inner = l / b;
        (inner > 1.0).then(|| [l / inner.ln(), r * r])
    };
    (term(r), term(r * r))
}
