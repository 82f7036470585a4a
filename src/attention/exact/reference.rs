//! Exact attention in f64 with an a priori bound on its rounding error, entry by entry:
//! an enclosure `y_ref +- bound` of the exact real result for any size the exact
//! engine can run (docs/math.md §5.5: an f64 exact computation plus a rigorous a priori
//! rounding bound is an enclosure too).
//!
//! The bound follows the exact engine's operation sequence (u = 2^-53,
//! gamma_k = k u / (1 - k u), exp and ln within 1 ulp = 2u relative (the SIMD exp of
//! `crate::simd` is stated and tested within 1 ulp, see `simd/exp.rs`); row i, R_i =
//! |tau| ||q_i|| max_j ||k_j|| >= max_j |S_ij| by Cauchy-Schwarz, nb key blocks):
//!
//! ```text
//! e_i   = |tau| gamma_d ||q_i|| max||k|| + u r_i                 scores, r_i = |tau| ||q_i|| max||k||
//!         (+ 6u c with a softcap c: R_i = min(r_i, c) then; `exact::softcap`)
//!         (+ u R_i with a bias B, R_i = min(r_i, c) + max_j |B_ij| then)
//! eps_i = e_i + 4u R_i + 2u + 3u nb + gamma_{n_k + nb + 1}       each term of l and acc
//! bO_ic = 2 eps_i / (1 - eps_i) (P|V|)_ic + 2u |O_ic|            (docs/math.md §4.1)
//! eta_i = eps_i / (1 - eps_i) + 2u ln n_k + u |lse_i|            lse (bound_lse)
//! rho_i = e_i + eta_i + u (2 R_i + ln n_k) + 2u                  recomputed P
//! D_i   = sum_c |dO_ic| (Vmax_c + |O_ic|)  >= |dP_ij - delta_i|
//! H_i   = (rho_i + 2u) D_i + gamma_dv sum_c |dO_ic| (Vmax_c + |O_ic|) + sum_c |dO_ic| bO_ic
//!         (+ D_i (3u + gamma_4 + 2u r_i / c + 2 e^raw_i / c) with a softcap, e^raw_i =
//!         |tau| gamma_d ||q_i|| max||k|| + u r_i the raw score's error: dS times the
//!         cap's slope, its error and the product's rounding, on |dS| <= P_ij D_i; an
//!         absolute slope error, valid at any size since sech^2 is 0.77-Lipschitz and
//!         at most 1)
//! bdQ_ic = |tau| (H_i + gamma_{n_k+1} D_i) (P|K|)_ic + u |dQ_ic|
//! bdK_jc = |tau| (P^T ((H + gamma_{n_q+1} D) o |Q|))_jc + u |dK_jc|
//! bdV_jc = (P^T ((rho + gamma_{n_q+1}) o |dO|))_jc
//! ```
//! The weighted sums (P|V|, P|K|, P^T(...)) are computed by the exact engine itself
//! (forward with |V| or |K| as values; the backward's dV with a weight as dO).
//! The terms are first order; the result is doubled, which covers the second-order
//! terms and the use of computed rather than exact magnitudes while every
//! `eps_i < 1e-3`. That is checked, not assumed: when some `eps_i >= 1e-3` (huge
//! scores `|tau| ||q_i|| ||k_j||` or `n_k` near `1/u`), every radius is `+inf`, and so
//! is any single bound that came out non-finite (NaN or an overflow); an infinite
//! radius certifies nothing (the certify reports print `inf`, never a false bound).
//! A fully masked row keeps its exact `lse = -inf` with radius 0 (and O, dQ rows of
//! exact zeros). The same derivation, per entry rather than with row maxima, is checked
//! against 128-bit MPFR enclosures in `tests/exact_enclosure.rs`; `tests/certify.rs`
//! checks this one against them too.
//!
//! Underflow: below f64's normal range each operation may also err by an absolute
//! `eta = 2^-1074` (the subnormal spacing; an `e^x` flushed to 0 errs by less). A
//! score gap past ~745 (a large bias makes that easy) flushes `P_ij` to 0, so the
//! relative terms above miss it; every radius therefore also gets an absolute term,
//! first order, counting the flushed terms of its sum with their largest weights:
//! `2 eta n_k (1 + max|V|)` for O, `2 eta n_k` for lse (`l >= 1`),
//! `2 eta n_q (1 + max|dO|)` for dV, and `2 |tau| eta n_k (1 + max_i D_i)(1 + max|K|)`,
//! `2 |tau| eta n_q (1 + max_i D_i)(1 + max|Q|)` for dQ and dK (6 instead of 2 with a
//! softcap, whose slope may lose `4 eta` per term).

use crate::attention::exact;
use crate::attention::{AttentionConfig, Problem};
use crate::error::Result;
use crate::tensor::{MatRef, Matrix};

/// The f64 exact results and their entrywise rounding bounds.
#[derive(Clone, Debug, PartialEq)]
pub struct ExactReference {
    /// O, `n_q x d_v`.
    pub o: Vec<f64>,
    /// Bound on |O - O_exact| per entry.
    pub bound_o: Vec<f64>,
    /// The row log-sum-exp.
    pub lse: Vec<f64>,
    /// Bound on |lse - lse_exact| per row (`2 (1 + 2 eps_max) eta_i`; 0 for a fully
    /// masked row, whose lse is `-inf` by definition).
    pub bound_lse: Vec<f64>,
    /// Gradients and their bounds, when `d_o` was given: (dQ, dK, dV).
    pub grads: Option<ReferenceGrads>,
}

/// Gradients of the reference with their entrywise bounds.
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceGrads {
    /// dQ, `n_q x d`.
    pub dq: Vec<f64>,
    /// dK, `n_k x d`.
    pub dk: Vec<f64>,
    /// dV, `n_k x d_v`.
    pub dv: Vec<f64>,
    /// Bounds for dQ.
    pub bound_dq: Vec<f64>,
    /// Bounds for dK.
    pub bound_dk: Vec<f64>,
    /// Bounds for dV.
    pub bound_dv: Vec<f64>,
}

/// gamma_k in f64 ([`crate::rounding::gamma`]).
fn gamma(k: usize) -> f64 {
    crate::rounding::gamma(k, crate::rounding::U_F64)
}

/// The subnormal spacing of f64, the absolute error an underflowing operation may add.
const ETA: f64 = f64::from_bits(1);

fn max_abs(x: &[f64]) -> f64 {
    x.iter().fold(0.0, |m, v| m.max(v.abs()))
}

/// The largest per-row eps for which the doubled first-order bounds hold.
pub const EPS_LIMIT: f64 = 1e-3;

/// Replaces every radius by `+inf` when `valid` is false, and any non-finite one
/// (NaN included) by `+inf` in any case.
fn sanitize(bounds: &mut [f64], valid: bool) {
    for b in bounds.iter_mut() {
        if !valid || !b.is_finite() {
            *b = f64::INFINITY;
        }
    }
}

fn abs_matrix(m: MatRef<'_, f64>) -> Result<Matrix<f64>> {
    Matrix::from_vec(
        m.rows(),
        m.cols(),
        m.as_slice().iter().map(|x| x.abs()).collect(),
    )
}

/// Runs the exact engine in f64 on (`q`, `k`, `v`[, `d_o`]) and bounds its rounding.
pub fn exact_reference(
    q: MatRef<'_, f64>,
    k: MatRef<'_, f64>,
    v: MatRef<'_, f64>,
    d_o: Option<MatRef<'_, f64>>,
    cfg: &AttentionConfig,
) -> Result<ExactReference> {
    exact_reference_with_bias(q, k, v, None, d_o, cfg)
}

/// [`exact_reference`] with an additive score bias (`n_q x n_k`, finite or `-inf`;
/// [`Problem::bias`]): the scores' radius grows by the row's largest finite `|b_ij|`
/// and each score has one more rounding (the module docs).
pub fn exact_reference_with_bias(
    q: MatRef<'_, f64>,
    k: MatRef<'_, f64>,
    v: MatRef<'_, f64>,
    bias: Option<MatRef<'_, f64>>,
    d_o: Option<MatRef<'_, f64>>,
    cfg: &AttentionConfig,
) -> Result<ExactReference> {
    let u = f64::EPSILON / 2.0;
    let p = Problem::new(q, k, v, cfg)?.with_bias(bias)?;
    let (n_q, n_k, d, d_v) = (p.n_q(), p.n_k(), p.d(), p.d_v());
    let tau = p.tau.abs();
    let nb = n_k.div_ceil(exact::tile::BLOCK_K);
    let norm = |r: &[f64]| r.iter().map(|x| x * x).sum::<f64>().sqrt();
    let k_max = (0..n_k).map(|j| norm(k.row(j))).fold(0.0, f64::max);
    let ln_nk = (n_k as f64).ln();
    let fwd = exact::forward_with_bias(q, k, v, bias, cfg)?;
    // Per-row score and accumulation error factors.
    let (mut e, mut eps, mut big_r) = (vec![0.0; n_q], vec![0.0; n_q], vec![0.0; n_q]);
    let mut e_raw = vec![0.0; n_q];
    let cap = p.softcap;
    for i in 0..n_q {
        if fwd.lse[i] == f64::NEG_INFINITY {
            continue; // a fully masked row is exact (O = 0, dQ = 0): no error terms
        }
        // |tau q_i . k_j| <= r0; with a bias |S_ij| <= r_i = r0 + max_j |b_ij| (finite
        // b_ij; -inf hides the key) and the addition rounds once more: u r_i.
        // A softcap c keeps |S_ij| <= c (before the bias) and adds an absolute 6u c
        // (`exact::softcap`; the raw score's error passes through, 1-Lipschitz).
        let r0 = tau * norm(q.row(i)) * k_max;
        let capped = cap.map_or(r0, |c| r0.min(c));
        let r_i = capped + p.bias_row_max(i);
        big_r[i] = r_i;
        let add = if p.bias.is_some() { u * r_i } else { 0.0 };
        e_raw[i] = tau * gamma(d) * norm(q.row(i)) * k_max + u * r0;
        e[i] = e_raw[i] + cap.map_or(0.0, |c| 6.0 * u * c) + add;
        eps[i] = e[i] + 4.0 * u * r_i + 2.0 * u + 3.0 * u * nb as f64 + gamma(n_k + nb + 1);
    }
    let eps_max = eps.iter().cloned().fold(0.0, f64::max);
    // NaN-safe: `valid` is false for a NaN eps too.
    let valid = eps.iter().all(|&x| x < EPS_LIMIT);
    let infl = 2.0 * (1.0 + 2.0 * eps_max); // second order and the weights' own rounding
    let mut bound_lse: Vec<f64> = (0..n_q)
        .map(|i| {
            let l = fwd.lse[i];
            if l == f64::NEG_INFINITY {
                return 0.0;
            }
            let ep = eps[i];
            infl * (ep / (1.0 - ep) + 2.0 * u * ln_nk + u * l.abs())
        })
        .collect();
    let abs_v = abs_matrix(v)?;
    let w_v = exact::forward_with_bias(q, k, abs_v.view(), bias, cfg)?.o; // P |V|
    let o = fwd.o.as_slice();
    let mut bound_o: Vec<f64> = (0..n_q * d_v)
        .map(|ic| {
            let ep = eps[ic / d_v];
            infl * (2.0 * ep / (1.0 - ep) * w_v.as_slice()[ic] + 2.0 * u * o[ic].abs())
        })
        .collect();
    let grads = match d_o {
        None => None,
        Some(g) => {
            let bwd = exact::backward_with_bias(q, k, v, bias, &fwd, g, cfg)?;
            let v_max: Vec<f64> = (0..d_v)
                .map(|c| (0..n_k).map(|j| v.at(j, c).abs()).fold(0.0, f64::max))
                .collect();
            let (mut rho, mut dd, mut hh) = (vec![0.0; n_q], vec![0.0; n_q], vec![0.0; n_q]);
            for i in 0..n_q {
                if fwd.lse[i] == f64::NEG_INFINITY {
                    continue; // a fully masked row contributes nothing
                }
                let ep = eps[i];
                let eta = ep / (1.0 - ep) + 2.0 * u * ln_nk + u * fwd.lse[i].abs();
                rho[i] = e[i] + eta + u * (2.0 * big_r[i] + ln_nk) + 2.0 * u;
                let (mut d_i, mut b_i) = (0.0, 0.0);
                for c in 0..d_v {
                    let gc = g.at(i, c).abs();
                    d_i += gc * (v_max[c] + o[i * d_v + c].abs());
                    b_i += gc * bound_o[i * d_v + c];
                }
                dd[i] = d_i;
                hh[i] = (rho[i] + 2.0 * u) * d_i + gamma(d_v) * d_i + b_i;
                if let Some(c) = cap {
                    // dS times the slope sech^2(S / c): the slope's relative error
                    // (`exact::softcap`) and the product's rounding, on |dS| <= P D_i.
                    let r0 = tau * norm(q.row(i)) * k_max;
                    hh[i] += d_i * (3.0 * u + gamma(4) + 2.0 * u * r0 / c + 2.0 * e_raw[i] / c);
                }
            }
            // P|K|: the forward with |K| as values.
            let abs_k = abs_matrix(k)?;
            let fk = exact::forward_with_bias(q, k, abs_k.view(), bias, cfg)?;
            let (gq, gk) = (gamma(n_q + 1), gamma(n_k + 1));
            let bound_dq: Vec<f64> = (0..n_q * d)
                .map(|ic| {
                    let i = ic / d;
                    infl * (tau * (hh[i] + gk * dd[i]) * fk.o.as_slice()[ic]
                        + u * bwd.dq.as_slice()[ic].abs())
                })
                .collect();
            // P^T X through the backward's dV (any values of width d work: use |K|).
            let weight_q = Matrix::from_fn(n_q, d, |i, c| (hh[i] + gq * dd[i]) * q.at(i, c).abs())?;
            let pt_q =
                exact::backward_with_bias(q, k, abs_k.view(), bias, &fk, weight_q.view(), cfg)?.dv;
            let bound_dk: Vec<f64> = (0..n_k * d)
                .map(|jc| infl * (tau * pt_q.as_slice()[jc] + u * bwd.dk.as_slice()[jc].abs()))
                .collect();
            let weight_o = Matrix::from_fn(n_q, d_v, |i, c| (rho[i] + gq) * g.at(i, c).abs())?;
            let pt_o = exact::backward_with_bias(q, k, v, bias, &fwd, weight_o.view(), cfg)?.dv;
            let mut bound_dv: Vec<f64> = pt_o.as_slice().iter().map(|x| infl * x).collect();
            let (mut bound_dq, mut bound_dk) = (bound_dq, bound_dk);
            // Underflow (the module docs): each P_ij, dS_ij and product may lose up to
            // eta absolutely; summed over a row or a column of the weights.
            let d_max = dd.iter().cloned().fold(0.0, f64::max);
            // A softcap's slope may lose 4 eta more per term (`exact::softcap`).
            let per_term = if cap.is_some() { 6.0 } else { 2.0 };
            let grad_under = |count: usize, weight: f64| {
                per_term * ETA * count as f64 * (1.0 + d_max) * (1.0 + weight)
            };
            let (under_dq, under_dk) = (
                tau * grad_under(n_k, max_abs(k.as_slice())),
                tau * grad_under(n_q, max_abs(q.as_slice())),
            );
            let under_dv = 2.0 * ETA * n_q as f64 * (1.0 + max_abs(g.as_slice()));
            for (ic, b) in bound_dq.iter_mut().enumerate() {
                if fwd.lse[ic / d] != f64::NEG_INFINITY {
                    *b += under_dq;
                }
            }
            bound_dk.iter_mut().for_each(|b| *b += under_dk);
            bound_dv.iter_mut().for_each(|b| *b += under_dv);
            for b in [&mut bound_dq, &mut bound_dk, &mut bound_dv] {
                sanitize(b, valid);
            }
            Some(ReferenceGrads {
                dq: bwd.dq.into_vec(),
                dk: bwd.dk.into_vec(),
                dv: bwd.dv.into_vec(),
                bound_dq,
                bound_dk,
                bound_dv,
            })
        }
    };
    // Underflow: P_ij e^{..} below the subnormal range is flushed (error < eta each).
    let under_o = 2.0 * ETA * n_k as f64 * (1.0 + max_abs(v.as_slice()));
    for (ic, b) in bound_o.iter_mut().enumerate() {
        if fwd.lse[ic / d_v] != f64::NEG_INFINITY {
            *b += under_o;
        }
    }
    for (b, l) in bound_lse.iter_mut().zip(&fwd.lse) {
        if *l != f64::NEG_INFINITY {
            *b += 2.0 * ETA * n_k as f64; // l >= 1 loses at most n_k eta
        }
    }
    sanitize(&mut bound_o, valid);
    for (b, l) in bound_lse.iter_mut().zip(&fwd.lse) {
        // A fully masked row's lse is exactly -inf: its radius 0 stays.
        if *l != f64::NEG_INFINITY && (!valid || !b.is_finite()) {
            *b = f64::INFINITY;
        }
    }
    Ok(ExactReference {
        o: fwd.o.into_vec(),
        bound_o,
        lse: fwd.lse,
        bound_lse,
        grads,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AttentionConfig {
        AttentionConfig::default()
    }

    /// Scores of about 1e14 make `u R_i` about 0.01 > EPS_LIMIT: the first-order
    /// bound no longer holds, so every radius must be infinite (before the fix they
    /// were finite, about 0.02 |O|).
    #[test]
    fn huge_scores_give_infinite_radii() {
        let (n, d) = (4, 2);
        let q = Matrix::from_fn(n, d, |i, c| 1e7 * (1.0 + (i + c) as f64)).unwrap();
        let k = Matrix::from_fn(n, d, |j, c| 1e7 * (1.0 + (j * c) as f64 / 3.0)).unwrap();
        let v = Matrix::from_fn(n, d, |j, c| (j + 2 * c) as f64).unwrap();
        let g = Matrix::from_fn(n, d, |_, _| 1.0).unwrap();
        let r = exact_reference(q.view(), k.view(), v.view(), Some(g.view()), &cfg()).unwrap();
        assert!(
            r.bound_o.iter().all(|b| *b == f64::INFINITY),
            "{:?}",
            r.bound_o
        );
        assert!(r.bound_lse.iter().all(|b| *b == f64::INFINITY));
        let gr = r.grads.unwrap();
        for b in [&gr.bound_dq, &gr.bound_dk, &gr.bound_dv] {
            assert!(b.iter().all(|b| *b == f64::INFINITY));
        }
    }

    /// Ordinary inputs keep finite radii (the refusal is not blanket).
    #[test]
    fn small_scores_keep_finite_radii() {
        let (n, d) = (4, 2);
        let q = Matrix::from_fn(n, d, |i, c| 0.1 * (i + c) as f64).unwrap();
        let v = Matrix::from_fn(n, d, |j, c| (j + 2 * c) as f64).unwrap();
        let g = Matrix::from_fn(n, d, |_, _| 1.0).unwrap();
        let r = exact_reference(q.view(), q.view(), v.view(), Some(g.view()), &cfg()).unwrap();
        assert!(r.bound_o.iter().all(|b| b.is_finite()));
        assert!(r.bound_lse.iter().all(|b| b.is_finite()));
        assert!(r.grads.unwrap().bound_dk.iter().all(|b| b.is_finite()));
    }
}
