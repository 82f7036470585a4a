//! The low-rank algorithm itself, written once over any [`Field`] (f32, f64, exact
//! rationals in the tests): forward (MATH.md 2.4) and both backward kinds (MATH.md
//! 2.5), for every prefix mask, through the contractions of [`super::lowrank`].
//!
//! Notation: x_i = a q_i and y_j = b k_j with a b = tau (a = tau lambda, b = 1/lambda),
//! U_i = query features of x_i with P's coefficients, V_j = powers of y_j, so
//! U_i . V_j = P(tau q_i . k_j) exactly in exact arithmetic (MATH.md 2.3).
//!
//! ```text
//! forward:   [num_i, D~_i] = sum_{j visible} (U_i . V_j) [v_j, 1],   O~_i = num_i / D~_i
//! backward:  U~_i = F_i / D~_i,  delta_i = dO_i . O~_i,
//!            L_i = [U~_i (x) dO_i, -delta_i U~_i],  R_j = [V'_j (x) v_j, V'_j]
//!            (L_i . R_j = (U~_i . V'_j)(dO_i . v_j - delta_i) = dS_ij)
//!            dQ = tau * prefix(L, R; payload K),  dK = tau * transposed(L, R; payload Q)
//!            dV = transposed(U / D~, V; payload dO)
//! ```
//! F = features with P's coefficients and V' = V gives the papers' gradient (P~ in
//! place of P in the exact formula: [`GradientKind::Substituted`]); F = features with
//! P''s coefficients (degree g - 1) and V' = V truncated to degree g - 1 gives the
//! exact gradient of the polynomial model ([`GradientKind::PolynomialModel`]), since
//! there dS_ij = P'(S_ij) (dP_ij - delta_i) / D~_i.

use super::features::Monomials;
use super::lowrank::{prefix_contract, transposed_contract, Rows};
use crate::attention::Mask;
use crate::scalar::Field;

/// Which approximate gradient the backward computes (MATH.md 2.5: never confuse them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GradientKind {
    /// The exact gradient formula with P~ substituted for P (ML24's ALTGrad, AS24's
    /// algorithm): what the papers analyse; approximates the true gradient.
    #[default]
    Substituted,
    /// The exact gradient of the polynomial model O~ itself (involves P'): what
    /// autodiff of the approximate forward gives; consistent with training on O~.
    PolynomialModel,
}

impl GradientKind {
    /// Name for reports and files.
    pub fn name(self) -> &'static str {
        match self {
            GradientKind::Substituted => "substituted",
            GradientKind::PolynomialModel => "polynomial-model",
        }
    }
}

/// One head's inputs to the generic algorithm (row-major slices).
#[derive(Clone, Debug)]
pub struct LowRankProblem<'a, S> {
    /// Queries, `n_q x d`.
    pub q: &'a [S],
    /// Keys, `n_k x d`.
    pub k: &'a [S],
    /// Values, `n_k x d_v`.
    pub v: &'a [S],
    /// Number of queries.
    pub n_q: usize,
    /// Number of keys.
    pub n_k: usize,
    /// Head dimension.
    pub d: usize,
    /// Value dimension.
    pub d_v: usize,
    /// tau (for the gradients' final scaling).
    pub tau: S,
    /// a: x_i = a q_i (a b = tau).
    pub query_scale: S,
    /// b: y_j = b k_j.
    pub key_scale: S,
    /// P's monomial coefficients c_0..c_g.
    pub coeffs: Vec<S>,
    /// The mask.
    pub mask: Mask,
    /// Source rows per chunk of the scans.
    pub chunk: usize,
}

/// The forward's results: O~ (`n_q x d_v`) and D~ (`n_q`; 0 for a fully masked row).
#[derive(Clone, Debug, PartialEq)]
pub struct LowRankForward<S> {
    /// O~.
    pub o: Vec<S>,
    /// The normaliser D~_i = sum_{j visible} P(S_ij).
    pub norm: Vec<S>,
}

/// Gradients (`n_q x d`, `n_k x d`, `n_k x d_v`).
#[derive(Clone, Debug, PartialEq)]
pub struct LowRankGrads<S> {
    /// dQ.
    pub dq: Vec<S>,
    /// dK.
    pub dk: Vec<S>,
    /// dV.
    pub dv: Vec<S>,
}

impl<S: Field> LowRankProblem<'_, S> {
    fn key_end(&self, i: usize) -> usize {
        self.mask.key_end(i, self.n_q, self.n_k)
    }
    fn first_query(&self, j: usize) -> usize {
        self.mask.first_query(j, self.n_q, self.n_k)
    }
    fn scaled(row: &[S], s: &S) -> Vec<S> {
        row.iter().map(|x| x.clone() * s.clone()).collect()
    }
    /// Query features with `coeffs`, the first `width` monomials, rows a0..a1, each
    /// divided by `div[a]` when given (rows with div 0 give zero rows).
    fn fill_query(
        &self,
        mon: &Monomials,
        coeffs: &[S],
        div: Option<&[S]>,
        (a0, a1): (usize, usize),
        width: usize,
        buf: &mut [S],
    ) {
        for (a, out) in (a0..a1).zip(buf.chunks_exact_mut(width)) {
            let x = Self::scaled(&self.q[a * self.d..(a + 1) * self.d], &self.query_scale);
            mon.query_features(&x, coeffs, out);
            if let Some(div) = div {
                if div[a].is_zero() {
                    out.iter_mut().for_each(|z| *z = S::zero());
                } else {
                    out.iter_mut().for_each(|z| *z = z.clone() / div[a].clone());
                }
            }
        }
    }
    /// Key powers y_j^alpha, the first `width` monomials, rows j0..j1.
    fn fill_key(&self, mon: &Monomials, (j0, j1): (usize, usize), width: usize, buf: &mut [S]) {
        let mut full = vec![S::zero(); mon.len()];
        for (j, out) in (j0..j1).zip(buf.chunks_exact_mut(width)) {
            let y = Self::scaled(&self.k[j * self.d..(j + 1) * self.d], &self.key_scale);
            mon.powers(&y, &mut full);
            out.clone_from_slice(&full[..width]);
        }
    }
}

/// Copies rows `s..e` of a row-major matrix of `width` columns.
fn copy_rows<S: Clone + Sync>(
    m: &[S],
    width: usize,
) -> impl Fn(usize, usize, &mut [S]) + Sync + '_ {
    move |s, e, buf| buf[..(e - s) * width].clone_from_slice(&m[s * width..e * width])
}

/// Forward (MATH.md 2.4): O~ and D~.
pub fn forward<S: Field>(p: &LowRankProblem<'_, S>, mon: &Monomials) -> LowRankForward<S> {
    apply(p, mon, p.v, p.d_v)
}

/// P~ X for any per-key payload `x` (`n_k x width`): rows `sum_j A~_ij x_j / D~_i`,
/// with D~ (the forward is `apply` with X = V).
pub fn apply<S: Field>(
    p: &LowRankProblem<'_, S>,
    mon: &Monomials,
    x: &[S],
    width: usize,
) -> LowRankForward<S> {
    let r = mon.len();
    let fill_l = |s, e, buf: &mut [S]| p.fill_query(mon, &p.coeffs, None, (s, e), r, buf);
    let fill_r = |s, e, buf: &mut [S]| p.fill_key(mon, (s, e), r, buf);
    let fill_x = |s: usize, e: usize, buf: &mut [S]| {
        for (j, out) in (s..e).zip(buf.chunks_exact_mut(width + 1)) {
            out[..width].clone_from_slice(&x[j * width..(j + 1) * width]);
            out[width] = S::one();
        }
    };
    let y = prefix_contract(
        &|a| p.key_end(a),
        &Rows {
            width: r,
            len: p.n_q,
            fill: &fill_l,
        },
        &Rows {
            width: r,
            len: p.n_k,
            fill: &fill_r,
        },
        &Rows {
            width: width + 1,
            len: p.n_k,
            fill: &fill_x,
        },
        p.chunk,
    );
    let mut o = Vec::with_capacity(p.n_q * width);
    let mut norm = Vec::with_capacity(p.n_q);
    for row in y.chunks_exact(width + 1) {
        let den = row[width].clone();
        if den.is_zero() {
            o.extend(std::iter::repeat_n(S::zero(), width));
        } else {
            o.extend(row[..width].iter().map(|x| x.clone() / den.clone()));
        }
        norm.push(den);
    }
    LowRankForward { o, norm }
}

/// P~^T X for any per-query payload `x` (`n_q x width`), with P~ = (U / D~) V^T and
/// D~ = `norm` from the forward: rows `sum_{i sees j} P~_ij x_i` (dV is this with
/// X = dO).
pub fn apply_transposed<S: Field>(
    p: &LowRankProblem<'_, S>,
    mon: &Monomials,
    norm: &[S],
    x: &[S],
    width: usize,
) -> Vec<S> {
    let r = mon.len();
    let fill_u = |s, e, buf: &mut [S]| p.fill_query(mon, &p.coeffs, Some(norm), (s, e), r, buf);
    let fill_v = |s, e, buf: &mut [S]| p.fill_key(mon, (s, e), r, buf);
    let f_x = copy_rows(x, width);
    transposed_contract(
        &|j| p.first_query(j),
        &Rows {
            width: r,
            len: p.n_q,
            fill: &fill_u,
        },
        &Rows {
            width: r,
            len: p.n_k,
            fill: &fill_v,
        },
        &Rows {
            width,
            len: p.n_q,
            fill: &f_x,
        },
        p.chunk,
    )
}

/// Backward (MATH.md 2.5): dQ, dK, dV of the chosen [`GradientKind`], given the
/// forward's O~ and D~ and dO (`n_q x d_v`).
pub fn backward<S: Field>(
    p: &LowRankProblem<'_, S>,
    mon: &Monomials,
    fwd: &LowRankForward<S>,
    d_o: &[S],
    kind: GradientKind,
) -> LowRankGrads<S> {
    let (r, d, d_v) = (mon.len(), p.d, p.d_v);
    let delta: Vec<S> = (0..p.n_q)
        .map(|i| {
            let (a, b) = (&d_o[i * d_v..(i + 1) * d_v], &fwd.o[i * d_v..(i + 1) * d_v]);
            a.iter()
                .zip(b)
                .fold(S::zero(), |acc, (x, y)| acc + x.clone() * y.clone())
        })
        .collect();
    // The kernel factors of dS: P's features (kind a) or P''s (kind b, degree g - 1).
    let (coeffs_s, r_s) = match kind {
        GradientKind::Substituted => (p.coeffs.clone(), r),
        GradientKind::PolynomialModel => {
            let dc: Vec<S> = p
                .coeffs
                .iter()
                .enumerate()
                .skip(1)
                .map(|(t, c)| S::from_u64(t as u64) * c.clone())
                .collect();
            (dc, mon.prefix_len(p.coeffs.len().saturating_sub(2)))
        }
    };
    let w = r_s * (d_v + 1);
    let fill_l = |s: usize, e: usize, buf: &mut [S]| {
        let mut u = vec![S::zero(); r_s];
        for (a, out) in (s..e).zip(buf.chunks_exact_mut(w)) {
            p.fill_query(mon, &coeffs_s, Some(&fwd.norm), (a, a + 1), r_s, &mut u);
            let g = &d_o[a * d_v..(a + 1) * d_v];
            for (t, ut) in u.iter().enumerate() {
                for (c, gc) in g.iter().enumerate() {
                    out[t * d_v + c] = ut.clone() * gc.clone();
                }
                out[r_s * d_v + t] = -(delta[a].clone() * ut.clone());
            }
        }
    };
    let fill_r = |s: usize, e: usize, buf: &mut [S]| {
        let mut vk = vec![S::zero(); r_s];
        for (j, out) in (s..e).zip(buf.chunks_exact_mut(w)) {
            p.fill_key(mon, (j, j + 1), r_s, &mut vk);
            let vv = &p.v[j * d_v..(j + 1) * d_v];
            for (t, vt) in vk.iter().enumerate() {
                for (c, x) in vv.iter().enumerate() {
                    out[t * d_v + c] = vt.clone() * x.clone();
                }
                out[r_s * d_v + t] = vt.clone();
            }
        }
    };
    let left = Rows {
        width: w,
        len: p.n_q,
        fill: &fill_l,
    };
    let right = Rows {
        width: w,
        len: p.n_k,
        fill: &fill_r,
    };
    let (fk, fq) = (copy_rows(p.k, d), copy_rows(p.q, d));
    let end = |a| p.key_end(a);
    let first = |j| p.first_query(j);
    let scale = |v: Vec<S>| v.into_iter().map(|x| x * p.tau.clone()).collect::<Vec<_>>();
    let dq = scale(prefix_contract(
        &end,
        &left,
        &right,
        &Rows {
            width: d,
            len: p.n_k,
            fill: &fk,
        },
        p.chunk,
    ));
    let dk = scale(transposed_contract(
        &first,
        &left,
        &right,
        &Rows {
            width: d,
            len: p.n_q,
            fill: &fq,
        },
        p.chunk,
    ));
    // dV = P~^T dO with P~ = (U / D~) V^T, for both kinds.
    let dv = apply_transposed(p, mon, &fwd.norm, d_o, d_v);
    LowRankGrads { dq, dk, dv }
}
