//! Polynomial attention by the direct O(n^2) formulas, in exact rationals
//! (docs/math.md §3.4, §3.5 and §5.1, question 1).
//!
//! With exp replaced by a polynomial P with rational coefficients, every quantity of
//! attention and of both approximate gradients is a rational function of the inputs.
//! Computed here entry by entry from the definitions, with no low-rank factoring, it
//! is the exact target the production crate's low-rank algorithm must hit with `==`
//! when that algorithm runs on rationals.
//!
//! ```text
//! A_ij = M_ij P(tau q_i . k_j),  D_i = sum_j A_ij,  P~ = D^-1 A,  O = P~ V
//! dV = P~^T dO,  dP = dO V^T,  delta_i = dO_i . O_i
//! substituted:        dS_ij = P~_ij (dP_ij - delta_i)
//! polynomial model:   dS_ij = M_ij P'(S_ij) (dP_ij - delta_i) / D_i
//! dQ = tau dS K,  dK = tau dS^T Q
//! ```
//! A fully masked row (D_i = 0) has O_i = 0 and contributes nothing.

use crate::attention::Mask;
use num_rational::BigRational;
use num_traits::{One, Zero};

/// Row-major exact matrices and the problem's sizes.
#[derive(Clone, Debug, PartialEq)]
pub struct RationalProblem {
    /// Queries, `n_q x d`.
    pub q: Vec<BigRational>,
    /// Keys, `n_k x d`.
    pub k: Vec<BigRational>,
    /// Values, `n_k x d_v`.
    pub v: Vec<BigRational>,
    /// `n_q`, `n_k`, `d`, `d_v`.
    pub dims: (usize, usize, usize, usize),
    /// The scale tau.
    pub tau: BigRational,
    /// P's coefficients c_0..c_g (P(x) = sum_t c_t x^t).
    pub coeffs: Vec<BigRational>,
    /// The mask.
    pub mask: Mask,
}

/// Forward results: O (`n_q x d_v`) and the normaliser D (`n_q`).
#[derive(Clone, Debug, PartialEq)]
pub struct RationalForward {
    /// O.
    pub o: Vec<BigRational>,
    /// D_i = sum_j A_ij.
    pub norm: Vec<BigRational>,
}

/// Gradients, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct RationalGrads {
    /// dQ, `n_q x d`.
    pub dq: Vec<BigRational>,
    /// dK, `n_k x d`.
    pub dk: Vec<BigRational>,
    /// dV, `n_k x d_v`.
    pub dv: Vec<BigRational>,
}

/// Which approximate gradient: the exact formula with P~ substituted, or the exact
/// gradient of the polynomial model (docs/math.md §3.5, both kinds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RationalGradient {
    /// dS = P~ o (dP - delta).
    Substituted,
    /// dS = P'(S) o (dP - delta) / D.
    PolynomialModel,
}

fn horner(c: &[BigRational], x: &BigRational) -> BigRational {
    c.iter()
        .rev()
        .fold(BigRational::zero(), |acc, ct| acc * x + ct)
}

impl RationalProblem {
    fn scores(&self) -> Vec<Option<BigRational>> {
        let (n_q, n_k, d, _) = self.dims;
        let mut s = Vec::with_capacity(n_q * n_k);
        for i in 0..n_q {
            for j in 0..n_k {
                if self.mask.allows(i, j, n_q, n_k) {
                    let dot = (0..d).fold(BigRational::zero(), |acc, l| {
                        acc + &self.q[i * d + l] * &self.k[j * d + l]
                    });
                    s.push(Some(&self.tau * dot));
                } else {
                    s.push(None);
                }
            }
        }
        s
    }

    /// A_ij (0 where masked) and D_i.
    fn weights(&self) -> (Vec<BigRational>, Vec<BigRational>) {
        let (n_q, n_k, _, _) = self.dims;
        let a: Vec<BigRational> = self
            .scores()
            .iter()
            .map(|s| {
                s.as_ref()
                    .map_or_else(BigRational::zero, |x| horner(&self.coeffs, x))
            })
            .collect();
        let norm = (0..n_q)
            .map(|i| {
                a[i * n_k..(i + 1) * n_k]
                    .iter()
                    .fold(BigRational::zero(), |acc, x| acc + x)
            })
            .collect();
        (a, norm)
    }

    /// O and D by the direct formula.
    pub fn forward(&self) -> RationalForward {
        let (n_q, n_k, _, d_v) = self.dims;
        let (a, norm) = self.weights();
        let mut o = vec![BigRational::zero(); n_q * d_v];
        for i in 0..n_q {
            if norm[i].is_zero() {
                continue;
            }
            for c in 0..d_v {
                let num = (0..n_k).fold(BigRational::zero(), |acc, j| {
                    acc + &a[i * n_k + j] * &self.v[j * d_v + c]
                });
                o[i * d_v + c] = num / &norm[i];
            }
        }
        RationalForward { o, norm }
    }

    /// dQ, dK, dV by the direct formulas, for `d_o` (`n_q x d_v`).
    pub fn backward(&self, d_o: &[BigRational], kind: RationalGradient) -> RationalGrads {
        let (n_q, n_k, d, d_v) = self.dims;
        let (a, norm) = self.weights();
        let fwd = self.forward();
        let scores = self.scores();
        let dc: Vec<BigRational> = self
            .coeffs
            .iter()
            .enumerate()
            .skip(1)
            .map(|(t, c)| BigRational::from_integer((t as i64).into()) * c)
            .collect();
        let dot = |x: &[BigRational], y: &[BigRational]| {
            x.iter()
                .zip(y)
                .fold(BigRational::zero(), |acc, (p, q)| acc + p * q)
        };
        let mut dq = vec![BigRational::zero(); n_q * d];
        let mut dk = vec![BigRational::zero(); n_k * d];
        let mut dv = vec![BigRational::zero(); n_k * d_v];
        for i in 0..n_q {
            if norm[i].is_zero() {
                continue;
            }
            let g = &d_o[i * d_v..(i + 1) * d_v];
            let delta = dot(g, &fwd.o[i * d_v..(i + 1) * d_v]);
            for j in 0..n_k {
                let Some(s) = &scores[i * n_k + j] else {
                    continue;
                };
                let p = &a[i * n_k + j] / &norm[i];
                for c in 0..d_v {
                    dv[j * d_v + c] += &p * &g[c];
                }
                let dp = dot(g, &self.v[j * d_v..(j + 1) * d_v]);
                let ds = match kind {
                    RationalGradient::Substituted => p * (dp - &delta),
                    RationalGradient::PolynomialModel => horner(&dc, s) * (dp - &delta) / &norm[i],
                };
                for l in 0..d {
                    dq[i * d + l] += &self.tau * &ds * &self.k[j * d + l];
                    dk[j * d + l] += &self.tau * &ds * &self.q[i * d + l];
                }
            }
        }
        RationalGrads { dq, dk, dv }
    }
}

/// The exact rational value of an f64 (every finite f64 is a dyadic rational).
/// Returns `None` for NaN or an infinity.
pub fn rational_from_f64(x: f64) -> Option<BigRational> {
    BigRational::from_float(x)
}

/// 1 as a rational (convenience for building coefficient lists).
pub fn one() -> BigRational {
    BigRational::one()
}
