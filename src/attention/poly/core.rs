//! The low-rank algorithm itself, written once over any [`Field`] (f64; exact
//! rationals in the tests): forward (docs/math.md §3.4) and both backward kinds
//! (docs/math.md §3.5), for every mask (the prefix form for none or causal, the range
//! form for a sliding window), through the contractions of [`super::lowrank`].
//!
//! Notation: x_i = a q_i and y_j = b k_j with a b = tau (a = tau lambda, b = 1/lambda),
//! U_i = query features of x_i with P's coefficients, V_j = powers of y_j, so
//! U_i . V_j = P(tau q_i . k_j) exactly in exact arithmetic (docs/math.md §3.3).
//!
//! ```text
//! forward:   [num_i, D~_i] = sum_{j visible} (U_i . V_j) [v_j, 1],   O~_i = num_i / D~_i
//! backward:  U~_i = F_i / D~_i,  delta_i = dO_i . O~_i,
//!            dS_ij = (U~_i . V'_j)(dO_i . v_j - delta_i)
//!            dQ_i = tau / D~_i (sum_c dO_ic Y_i[c] - delta_i Y_i[d_v]),
//!                   Y = prefix(F, V'; payload [v_j (x) k_j, k_j])
//!            dK_j = tau (sum_c v_jc Y'_j[c] - Y'_j[d_v]),
//!                   Y' = transposed(F, V'; payload [(dO_i / D~_i) (x) q_i, (delta_i / D~_i) q_i])
//!            dV = transposed(U, V; payload dO_i / D~_i)
//! ```
//! (the tensor trick of docs/math.md §3.5 with the Kronecker factor moved into the
//! payload: the kernel stays rank r, the payload is (d_v + 1) d wide, and the states are
//! the r x d_v x d tensors T, T'). With the substituted gradient dV rides in dK's pass,
//! and any extra payloads with P~'s kernel ([`SideProducts`]: the bound's weights,
//! docs/math.md §4.2) ride in dQ's and dK's passes.
//! The row scaling by 1/D~ is applied to outputs or payloads, never to the features.
//! F = features with P's coefficients and V' = V gives the papers' gradient (P~ in
//! place of P in the exact formula: [`GradientKind::Substituted`]); F = features with
//! P''s coefficients (degree g - 1) and V' = V truncated to degree g - 1 gives the
//! exact gradient of the polynomial model ([`GradientKind::PolynomialModel`]), since
//! there dS_ij = P'(S_ij) (dP_ij - delta_i) / D~_i.

use super::features::Monomials;
use super::lowrank::{
    prefix_contract_map, range_contract_map, range_transposed_contract_map,
    transposed_contract_map, Blocks, Direct, Features, Finish, Rows,
};
use crate::attention::Mask;
use crate::scalar::Field;

/// Which approximate gradient the backward computes (docs/math.md §3.5: never
/// confuse them).
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
    /// Key padding: `keys[j]` false hides key `j` from every query (an additive bias
    /// of `-inf` on its column). Such a key's payload rows enter every contraction over
    /// keys as exact zeros, and its output rows of a contraction over queries (dK, dV)
    /// are zero. `None`: every key the mask allows is seen.
    pub keys: Option<&'a [bool]>,
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
    /// The contraction over each query's visible keys (forward, dQ): the prefix form
    /// for no mask or a causal one, the range form for a sliding window.
    fn over_keys(
        &self,
        (left, right, payload): (&Features<'_, S>, &Features<'_, S>, &Rows<'_, S>),
        blocks: Blocks<'_, S>,
        out_width: usize,
        finish: &Finish<'_, S>,
    ) -> Vec<S> {
        let (m, n_q, n_k) = (self.mask, self.n_q, self.n_k);
        // Padded keys' payload rows are exact zeros: they add nothing to any sum.
        let hidden = |s: usize, e: usize, buf: &mut [S]| {
            (payload.fill)(s, e, buf);
            if let Some(keys) = self.keys {
                let w = payload.width;
                for (j, row) in (s..e).zip(buf.chunks_exact_mut(w.max(1))) {
                    if !keys[j] {
                        row.iter_mut().for_each(|x| *x = S::zero());
                    }
                }
            }
        };
        let masked = Rows {
            width: payload.width,
            len: payload.len,
            fill: &hidden,
        };
        let payload = if self.keys.is_some() {
            &masked
        } else {
            payload
        };
        if m.is_prefix() {
            let end = |a: usize| m.key_end(a, n_q, n_k);
            prefix_contract_map(&end, left, right, payload, blocks, out_width, finish)
        } else {
            let range = |a: usize| m.key_range(a, n_q, n_k);
            range_contract_map(&range, left, right, payload, blocks, out_width, finish)
        }
    }

    /// The contraction over the queries that see each key (dK, dV; `left` and the
    /// payload indexed by queries): the transposed form for no mask or a causal one,
    /// the transposed range form for a sliding window.
    fn over_queries(
        &self,
        (left, right, payload): (&Features<'_, S>, &Features<'_, S>, &Rows<'_, S>),
        blocks: Blocks<'_, S>,
        out_width: usize,
        finish: &Finish<'_, S>,
    ) -> Vec<S> {
        let (m, n_q, n_k) = (self.mask, self.n_q, self.n_k);
        // A padded key's row is finished from Y = 0 (no query sees it).
        let zero = vec![S::zero(); payload.width];
        let hidden = |j: usize, y: &[S], o: &mut [S]| match self.keys {
            Some(keys) if !keys[j] => finish(j, &zero, o),
            _ => finish(j, y, o),
        };
        let finish: &Finish<'_, S> = if self.keys.is_some() { &hidden } else { finish };
        if m.is_prefix() {
            let first = |j: usize| m.first_query(j, n_q, n_k);
            transposed_contract_map(&first, left, right, payload, blocks, out_width, finish)
        } else {
            let rows = |j: usize| m.query_range(j, n_q, n_k);
            range_transposed_contract_map(&rows, left, right, payload, blocks, out_width, finish)
        }
    }
    /// Rows s..e of `m` (`d` columns) times `scale`, feature-major (`d x (e - s)`).
    fn scaled_block(&self, m: &[S], scale: &S, (s, e): (usize, usize)) -> Vec<S> {
        let (d, nb) = (self.d, e - s);
        let mut x = vec![S::zero(); d * nb];
        for (i, row) in m[s * d..e * d].chunks_exact(d).enumerate() {
            for (v, q) in row.iter().enumerate() {
                x[v * nb + i] = q.clone() * scale.clone();
            }
        }
        x
    }
    /// Query features with per-monomial `weights` ([`Monomials::query_weights`]) of
    /// rows s..e, feature-major.
    fn fill_query(&self, mon: &Monomials, weights: &[S], (s, e): (usize, usize), buf: &mut [S]) {
        let x = self.scaled_block(self.q, &self.query_scale, (s, e));
        mon.query_block(&x, e - s, weights, buf);
    }
    /// The points x_i = a q_i of rows s..e (`scale` = a) or y_j = b k_j (`scale` = b),
    /// row-major: the direct kernel's inputs, rounded exactly as the features' are.
    fn points(&self, m: &[S], scale: &S, (s, e): (usize, usize), buf: &mut [S]) {
        let d = self.d;
        for (o, x) in buf[..(e - s) * d].iter_mut().zip(&m[s * d..e * d]) {
            *o = x.clone() * scale.clone();
        }
    }
    /// The direct form of the kernel U_i . V_j = sum_t c_t (x_i . y_j)^t (`coeffs`: the
    /// query features' polynomial, features of width `width`), for the in-chunk blocks;
    /// `None` unless the features hold every monomial of degree <= deg (then the
    /// identity is exact).
    fn direct<'a>(
        &'a self,
        mon: &Monomials,
        width: usize,
        coeffs: &'a [S],
        pts: &'a (Box<PointFill<'a, S>>, Box<PointFill<'a, S>>),
    ) -> Option<Direct<'a, S>> {
        let deg = coeffs.len().checked_sub(1)?;
        (deg <= mon.degree() && width == mon.prefix_len(deg)).then_some(Direct {
            dim: self.d,
            coeffs,
            left: &*pts.0,
            right: &*pts.1,
        })
    }
    /// The point generators of queries and keys.
    fn point_fills(&self) -> (Box<PointFill<'_, S>>, Box<PointFill<'_, S>>) {
        (
            Box::new(move |s, e, buf: &mut [S]| {
                self.points(self.q, &self.query_scale, (s, e), buf)
            }),
            Box::new(move |s, e, buf: &mut [S]| self.points(self.k, &self.key_scale, (s, e), buf)),
        )
    }
    /// Key powers y_j^alpha, the first `width` monomials, rows s..e, feature-major.
    fn fill_key(&self, mon: &Monomials, (s, e): (usize, usize), width: usize, buf: &mut [S]) {
        let x = self.scaled_block(self.k, &self.key_scale, (s, e));
        mon.powers_block(&x, e - s, &mut buf[..width * (e - s)]);
    }
}

/// A generator of points (rows s..e, row-major) for the direct kernel.
type PointFill<'a, S> = dyn Fn(usize, usize, &mut [S]) + Sync + 'a;

/// x / den, or 0 when den is 0 (a row that sees no key).
fn div_or_zero<S: Field>(x: S, den: &S) -> S {
    if den.is_zero() {
        S::zero()
    } else {
        x / den.clone()
    }
}

/// Forward (docs/math.md §3.4): O~ and D~.
pub fn forward<S: Field>(p: &LowRankProblem<'_, S>, mon: &Monomials) -> LowRankForward<S> {
    apply(p, mon, p.v, p.d_v)
}

/// P~ X for any per-key payload `x` (`n_k x width`): rows `sum_j A~_ij x_j / D~_i`,
/// with D~ (the forward is `apply` with X = V; several payloads side by side cost one
/// pass).
pub fn apply<S: Field>(
    p: &LowRankProblem<'_, S>,
    mon: &Monomials,
    x: &[S],
    width: usize,
) -> LowRankForward<S> {
    let r = mon.len();
    let weights = mon.query_weights(&p.coeffs, r);
    let fill_l = |s, e, buf: &mut [S]| p.fill_query(mon, &weights, (s, e), buf);
    let fill_r = |s, e, buf: &mut [S]| p.fill_key(mon, (s, e), r, buf);
    let fill_x = |s: usize, e: usize, buf: &mut [S]| {
        for (j, out) in (s..e).zip(buf.chunks_exact_mut(width + 1)) {
            out[..width].clone_from_slice(&x[j * width..(j + 1) * width]);
            out[width] = S::one();
        }
    };
    let pts = p.point_fills();
    let direct = p.direct(mon, r, &p.coeffs, &pts);
    let copy = |_: usize, y: &[S], o: &mut [S]| o.clone_from_slice(y);
    let y = p.over_keys(
        (
            &Features {
                width: r,
                len: p.n_q,
                fill: &fill_l,
            },
            &Features {
                width: r,
                len: p.n_k,
                fill: &fill_r,
            },
            &Rows {
                width: width + 1,
                len: p.n_k,
                fill: &fill_x,
            },
        ),
        (p.chunk, direct.as_ref()),
        width + 1,
        &copy,
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
    let weights = mon.query_weights(&p.coeffs, r);
    let fill_u = |s, e, buf: &mut [S]| p.fill_query(mon, &weights, (s, e), buf);
    let fill_v = |s, e, buf: &mut [S]| p.fill_key(mon, (s, e), r, buf);
    let fill_x = |s: usize, e: usize, buf: &mut [S]| {
        for (i, out) in (s..e).zip(buf.chunks_exact_mut(width)) {
            for (o, xi) in out.iter_mut().zip(&x[i * width..(i + 1) * width]) {
                *o = div_or_zero(xi.clone(), &norm[i]);
            }
        }
    };
    let pts = p.point_fills();
    let direct = p.direct(mon, r, &p.coeffs, &pts);
    let copy = |_: usize, y: &[S], o: &mut [S]| o.clone_from_slice(y);
    p.over_queries(
        (
            &Features {
                width: r,
                len: p.n_q,
                fill: &fill_u,
            },
            &Features {
                width: r,
                len: p.n_k,
                fill: &fill_v,
            },
            &Rows {
                width,
                len: p.n_q,
                fill: &fill_x,
            },
        ),
        (p.chunk, direct.as_ref()),
        width,
        &copy,
    )
}

/// Backward (docs/math.md §3.5): dQ, dK, dV of the chosen [`GradientKind`], given the
/// forward's O~ and D~ and dO (`n_q x d_v`).
pub fn backward<S: Field>(
    p: &LowRankProblem<'_, S>,
    mon: &Monomials,
    fwd: &LowRankForward<S>,
    d_o: &[S],
    kind: GradientKind,
) -> LowRankGrads<S> {
    backward_with(p, mon, fwd, d_o, kind, &SideProducts::none()).0
}

/// Extra per-key and per-query payloads the backward's passes carry along (the
/// bound's weights, docs/math.md §4.2): `keys` (`n_k x key_width`) gives
/// P~ X_keys (`n_q x key_width`, rows `sum_j A~_ij x_j / D~_i`, as [`apply`]) and
/// `queries` (`n_q x query_width`) gives P~^T X_queries (`n_k x query_width`, as
/// [`apply_transposed`]), both with P~ = (U / D~) V^T of P's own coefficients.
#[derive(Clone, Copy, Debug)]
pub struct SideProducts<'a, S> {
    /// Per-key payload, row-major.
    pub keys: &'a [S],
    /// Its columns.
    pub key_width: usize,
    /// Per-query payload, row-major.
    pub queries: &'a [S],
    /// Its columns.
    pub query_width: usize,
}

impl<S> SideProducts<'_, S> {
    /// No side products.
    pub fn none() -> Self {
        Self {
            keys: &[],
            key_width: 0,
            queries: &[],
            query_width: 0,
        }
    }
}

/// Splits row-major `y` (`a + b` columns) into its first `a` and last `b` columns.
fn split_columns<S: Field>(y: Vec<S>, a: usize, b: usize) -> (Vec<S>, Vec<S>) {
    if b == 0 {
        return (y, Vec::new());
    }
    let rows = y.len() / (a + b);
    let (mut left, mut right) = (Vec::with_capacity(rows * a), Vec::with_capacity(rows * b));
    for row in y.chunks_exact(a + b) {
        left.extend_from_slice(&row[..a]);
        right.extend_from_slice(&row[a..]);
    }
    (left, right)
}

/// [`backward`] plus the [`SideProducts`] P~ X_keys and P~^T X_queries. With the
/// substituted kind both ride in the gradient passes (same kernel P~: the key payload
/// widens dQ's pass, the query payload dK's); with the polynomial model's (kernel
/// P'), the query payload rides in dV's pass and the key payload gets its own.
pub fn backward_with<S: Field>(
    p: &LowRankProblem<'_, S>,
    mon: &Monomials,
    fwd: &LowRankForward<S>,
    d_o: &[S],
    kind: GradientKind,
    side: &SideProducts<'_, S>,
) -> (LowRankGrads<S>, Vec<S>, Vec<S>) {
    let (d, d_v) = (p.d, p.d_v);
    let (xw, yw) = (side.key_width, side.query_width);
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
        GradientKind::Substituted => (p.coeffs.clone(), mon.len()),
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
    // Side products ride in the gradient passes when their kernel is P~'s.
    let fuse = kind == GradientKind::Substituted;
    let (xq, yk) = if fuse { (xw, yw) } else { (0, 0) };
    let weights = mon.query_weights(&coeffs_s, r_s);
    let fill_l = |s, e, buf: &mut [S]| p.fill_query(mon, &weights, (s, e), buf);
    let fill_r = |s, e, buf: &mut [S]| p.fill_key(mon, (s, e), r_s, buf);
    let pts = p.point_fills();
    let direct = p.direct(mon, r_s, &coeffs_s, &pts);
    let left = Features {
        width: r_s,
        len: p.n_q,
        fill: &fill_l,
    };
    let right = Features {
        width: r_s,
        len: p.n_k,
        fill: &fill_r,
    };
    // dQ: payload E_j = [v_j (x) k_j, k_j (, X_keys_j)] (block c holds v_jc k_j).
    let wq = (d_v + 1) * d;
    let we = wq + xq;
    let fill_e = |s: usize, e: usize, buf: &mut [S]| {
        for (j, out) in (s..e).zip(buf.chunks_exact_mut(we)) {
            let kj = &p.k[j * d..(j + 1) * d];
            for (c, vc) in p.v[j * d_v..(j + 1) * d_v].iter().enumerate() {
                for (o, kt) in out[c * d..(c + 1) * d].iter_mut().zip(kj) {
                    *o = vc.clone() * kt.clone();
                }
            }
            out[d_v * d..wq].clone_from_slice(kj);
            out[wq..].clone_from_slice(&side.keys[j * xq..(j + 1) * xq]);
        }
    };
    // Rows of dQ, then (fused) P~ X_keys's.
    let finish_q = |i: usize, yi: &[S], out: &mut [S]| {
        let den = &fwd.norm[i];
        if den.is_zero() {
            out.iter_mut().for_each(|o| *o = S::zero());
            return;
        }
        let g = &d_o[i * d_v..(i + 1) * d_v];
        for (t, o) in out[..d].iter_mut().enumerate() {
            let mut acc = -(delta[i].clone() * yi[d_v * d + t].clone());
            for (c, gc) in g.iter().enumerate() {
                acc = acc + gc.clone() * yi[c * d + t].clone();
            }
            *o = acc / den.clone() * p.tau.clone();
        }
        for (o, y) in out[d..].iter_mut().zip(&yi[wq..]) {
            *o = y.clone() / den.clone();
        }
    };
    let yq = p.over_keys(
        (
            &left,
            &right,
            &Rows {
                width: we,
                len: p.n_k,
                fill: &fill_e,
            },
        ),
        (p.chunk, direct.as_ref()),
        d + xq,
        &finish_q,
    );
    let (dq, mut side_keys) = split_columns(yq, d, xq);
    // dK (and dV with the substituted kind, whose kernel is the same): payload
    // F_i = [(dO_i / D~_i) (x) q_i, (delta_i / D~_i) q_i (, dO_i / D~_i, X_queries_i / D~_i)].
    let wk = wq + if fuse { d_v + yk } else { 0 };
    let fill_f = |s: usize, e: usize, buf: &mut [S]| {
        for (i, out) in (s..e).zip(buf.chunks_exact_mut(wk)) {
            let den = &fwd.norm[i];
            let qi = &p.q[i * d..(i + 1) * d];
            let g = &d_o[i * d_v..(i + 1) * d_v];
            for (c, gc) in g.iter().enumerate() {
                let gd = div_or_zero(gc.clone(), den);
                for (o, qt) in out[c * d..(c + 1) * d].iter_mut().zip(qi) {
                    *o = gd.clone() * qt.clone();
                }
                if fuse {
                    out[wq + c] = gd;
                }
            }
            let dd = div_or_zero(delta[i].clone(), den);
            for (o, qt) in out[d_v * d..wq].iter_mut().zip(qi) {
                *o = dd.clone() * qt.clone();
            }
            if fuse {
                let xi = &side.queries[i * yk..(i + 1) * yk];
                for (o, x) in out[wq + d_v..].iter_mut().zip(xi) {
                    *o = div_or_zero(x.clone(), den);
                }
            }
        }
    };
    // Rows of dK, then (fused) dV's and P~^T X_queries's.
    let finish_k = |j: usize, yj: &[S], out: &mut [S]| {
        let vj = &p.v[j * d_v..(j + 1) * d_v];
        for (t, o) in out[..d].iter_mut().enumerate() {
            let mut acc = -yj[d_v * d + t].clone();
            for (c, vc) in vj.iter().enumerate() {
                acc = acc + vc.clone() * yj[c * d + t].clone();
            }
            *o = acc * p.tau.clone();
        }
        if fuse {
            out[d..].clone_from_slice(&yj[wq..]);
        }
    };
    let qk = d + if fuse { d_v + yk } else { 0 };
    let yk_rows = p.over_queries(
        (
            &left,
            &right,
            &Rows {
                width: wk,
                len: p.n_q,
                fill: &fill_f,
            },
        ),
        (p.chunk, direct.as_ref()),
        qk,
        &finish_k,
    );
    // dV = P~^T dO with P~ = (U / D~) V^T, for both kinds (with the model's kind, one
    // more pass that also carries X_queries, and P~ X_keys on its own).
    let (dk, rest) = split_columns(yk_rows, d, qk - d);
    let (dv, side_queries) = if fuse {
        split_columns(rest, d_v, yk)
    } else {
        if xw > 0 {
            side_keys = apply(p, mon, side.keys, xw).o;
        }
        if yw == 0 {
            (apply_transposed(p, mon, &fwd.norm, d_o, d_v), Vec::new())
        } else {
            let mut x = Vec::with_capacity(p.n_q * (d_v + yw));
            for i in 0..p.n_q {
                x.extend_from_slice(&d_o[i * d_v..(i + 1) * d_v]);
                x.extend_from_slice(&side.queries[i * yw..(i + 1) * yw]);
            }
            let t = apply_transposed(p, mon, &fwd.norm, &x, d_v + yw);
            split_columns(t, d_v, yw)
        }
    };
    (LowRankGrads { dq, dk, dv }, side_keys, side_queries)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same bits for 1, 2 and 3 threads (several pieces, blocks and row tasks;
    /// both masks; both gradient kinds).
    #[test]
    fn bitwise_deterministic_across_thread_counts() {
        let (n, d) = (2500usize, 3usize);
        let val = |i: usize, s: u64| {
            let x = (i as u64 ^ s).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
            (x as f64 / (1u64 << 53) as f64 - 0.5) * 0.8
        };
        let (q, k, v, g): (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) = (
            (0..n * d).map(|i| val(i, 1)).collect(),
            (0..n * d).map(|i| val(i, 2)).collect(),
            (0..n * d).map(|i| val(i, 3)).collect(),
            (0..n * d).map(|i| val(i, 4)).collect(),
        );
        let mon = Monomials::new(d, 3, 1000).unwrap();
        let windows = [
            Mask::None.with_window(
                Some(700),
                Some(20),
                crate::attention::Alignment::BottomRight,
            ),
            Mask::None.with_window(Some(37), Some(0), crate::attention::Alignment::TopLeft),
        ];
        for mask in [
            Mask::None,
            Mask::CausalTopLeft,
            Mask::CausalBottomRight,
            windows[0],
            windows[1],
        ] {
            let p = LowRankProblem {
                q: &q,
                k: &k,
                v: &v,
                n_q: n,
                n_k: n - 7,
                d,
                d_v: d,
                tau: 0.5,
                query_scale: 0.25,
                key_scale: 2.0,
                coeffs: vec![1.0, 1.0, 0.5, 1.0 / 6.0],
                mask,
                chunk: 16,
                keys: None,
            };
            let run = |threads: usize| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .unwrap()
                    .install(|| {
                        let f = forward(&p, &mon);
                        let a = backward(&p, &mon, &f, &g, GradientKind::Substituted);
                        let b = backward(&p, &mon, &f, &g, GradientKind::PolynomialModel);
                        (f, a, b)
                    })
            };
            let one = run(1);
            for t in [2, 3] {
                assert!(one == run(t), "{mask:?}: {t} threads differ from 1");
            }
        }
    }
}
