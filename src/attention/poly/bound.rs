//! A priori bounds on the polynomial engine's distance to exact attention, entry by
//! entry, split into the polynomial part (from the certified eps_P alone) and the
//! rounding part (docs/math.md §4; §5.1, questions 2 and 3).
//!
//! Let P be the exact attention matrix and P~ the polynomial one. With every
//! A~_ij = P(S_ij) within relative eps_P of e^{S_ij}, |P~_ij - P_ij| <= rho P_ij with
//! rho = 2 eps_P / (1 - eps_P) (docs/math.md §4.1), and P_ij <= (1 + rho) P~_ij. Then,
//! with W = P~ |V| (entrywise absolute values), Vmax_c = max_j |V_jc|:
//!
//! ```text
//! |O~_ic - O_ic|   <= rho sum_j P_ij |V_jc|             <= rho (1 + rho) W_ic =: bO_ic
//! |delta~_i - delta_i| <= sum_c |dO_ic| bO_ic           =: e_i
//! |dP_ij - delta_i| <= sum_c |dO_ic| (Vmax_c + |O_ic| + bO_ic)  =: D_i
//! |dS~_ij - dS_ij| <= P_ij (rho_k D_i + (1 + rho_k) e_i) =: P_ij sigma_i
//! |dQ~_ic - dQ_ic| <= |tau| sigma_i (1 + rho) (P~ |K|)_ic
//! |dK~_jc - dK_jc| <= |tau| (1 + rho) (P~^T (sigma o |Q|))_jc
//! |dV~_jc - dV_jc| <= rho (1 + rho) (P~^T |dO|)_jc
//! ```
//! rho_k is rho for the substituted gradient, and (eps' + eps_P) / (1 - eps_P) for the
//! polynomial model's, eps' being P''s certified relative error against exp (its
//! dS uses P'(S)/D~ in place of e^S/D). The weights W, P~|K|, P~^T(...) are computed by
//! the engine's own contractions, in O(n r (d + d_v)): W in the forward's pass (payload
//! [V, |V|]); P~|K| and P~^T [|dO|, sigma_poly |Q|, sigma_total |Q|] as side products
//! of the backward's passes ([`GradWeights`], [`super::core::backward_with`]: same
//! kernel, wider payload; both parts' sigma in one pass, since the contraction is
//! linear in the payload's columns), or in two passes of their own
//! ([`gradients_with_rounding`]).
//!
//! Rounding: the engine computes in f64; a first-order a priori estimate of the
//! relative perturbation of P~'s entries, rho_r = 2 gamma_k kappa
//! ([`super::rho::rounding_rho`]), is added to every rho, the computed weights are
//! inflated by (1 + rho_r), and the final rounding to the output dtype adds u |y|.
//! The polynomial part is the same bound with rho_r = 0 and no output rounding.

use super::core::{apply, apply_transposed, GradientKind, LowRankProblem, SideProducts};
use super::plan::Plan;
use super::polynomial::certify;
use super::rho::{rho_of, rounding_rho};

/// Entrywise bounds for one output tensor (row-major, like the tensor).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Bounds {
    /// Bound on |computed - exact| (polynomial and rounding parts together).
    pub total: Vec<f64>,
    /// The polynomial part alone (exact arithmetic with P in place of exp).
    pub poly: Vec<f64>,
}

impl Bounds {
    /// `len` entries of +inf: what an uncertified plan (eps_P >= 1, only reachable
    /// through [`super::plan::Accuracy::DegreeUncertified`]) reports.
    pub fn infinite(len: usize) -> Self {
        Self {
            total: vec![f64::INFINITY; len],
            poly: vec![f64::INFINITY; len],
        }
    }

    /// max over entries of the total bound.
    pub fn max_total(&self) -> f64 {
        self.total.iter().cloned().fold(0.0, f64::max)
    }
    /// max over entries of the polynomial part.
    pub fn max_poly(&self) -> f64 {
        self.poly.iter().cloned().fold(0.0, f64::max)
    }
    /// max over entries of the rounding part (total - polynomial).
    pub fn max_rounding(&self) -> f64 {
        self.total
            .iter()
            .zip(&self.poly)
            .map(|(t, p)| t - p)
            .fold(0.0, f64::max)
    }
}

/// False when the plan's polynomial certifies nothing (eps_P >= 1 or NaN): no bound
/// exists, and every bound is reported as +inf.
pub(crate) fn certifies(plan: &Plan) -> bool {
    plan.poly.eps < 1.0
}

/// Rounding's rho for the forward (sums of r and n_k terms).
fn rho_round_forward(plan: &Plan, n_k: usize) -> f64 {
    rounding_rho(&plan.poly, plan.regime.rank, n_k)
}

/// Bounds on |O~ - O| from the weights W = P~|V| and the computed O~.
pub fn output(plan: &Plan, n_k: usize, weights_v: &[f64], o: &[f64], u_out: f64) -> Bounds {
    output_with_rounding(plan, rho_round_forward(plan, n_k), weights_v, o, u_out)
}

/// [`output`] for another arithmetic: `rr` is the a priori relative perturbation of
/// P~'s entries by rounding (f64 engine: [`rounding_rho`]; the f16 CUDA path:
/// `cuda::allowance::poly_rounding_rho`), `u_out` the output dtype's unit roundoff.
pub fn output_with_rounding(
    plan: &Plan,
    rr: f64,
    weights_v: &[f64],
    o: &[f64],
    u_out: f64,
) -> Bounds {
    if !certifies(plan) {
        return Bounds::infinite(o.len());
    }
    let rho_p = rho_of(plan.poly.eps);
    let rho_t = rho_p + rr;
    let total = weights_v
        .iter()
        .zip(o)
        .map(|(w, y)| rho_t * (1.0 + rho_t) * (1.0 + rr) * w + u_out * y.abs())
        .collect();
    let poly = weights_v
        .iter()
        .map(|w| rho_p * (1.0 + rho_p) * w)
        .collect();
    Bounds { total, poly }
}

/// What the gradient bounds need besides the low-rank problem.
pub struct GradContext<'a> {
    /// The plan.
    pub plan: &'a Plan,
    /// Which gradient.
    pub kind: GradientKind,
    /// Q, K, V in f64.
    pub inputs: (&'a [f64], &'a [f64], &'a [f64]),
    /// O~ in f64.
    pub o: &'a [f64],
    /// dO in f64.
    pub d_o: &'a [f64],
    /// W = P~|V| from the forward.
    pub weights_v: &'a [f64],
    /// The forward's total O bound.
    pub bound_o: &'a [f64],
    /// Unit roundoff of the output dtype.
    pub u_out: f64,
}

/// One set of rho's: for P~ vs P, for the kind's dS factor, and rounding's.
struct Rhos {
    p: f64,
    k: f64,
    round: f64,
}

/// Rounding's rho for the gradients of the f64 engine (sums of r (d_v + 1) and
/// max(n_q, n_k) terms).
pub fn gradient_rounding(plan: &Plan, lr: &LowRankProblem<'_, f64>) -> f64 {
    rounding_rho(
        &plan.poly,
        plan.regime.rank * (lr.d_v + 1),
        lr.n_q.max(lr.n_k),
    )
}

/// Bounds on dQ, dK, dV (see the module docs). `computed` are the gradients.
pub fn gradients(
    lr: &LowRankProblem<'_, f64>,
    norm: &[f64],
    cx: &GradContext<'_>,
    computed: (&[f64], &[f64], &[f64]),
) -> (Bounds, Bounds, Bounds) {
    gradients_with_rounding(lr, norm, cx, computed, gradient_rounding(cx.plan, lr))
}

/// +inf bounds for every gradient entry (an uncertified plan).
pub fn infinite_gradients(lr: &LowRankProblem<'_, f64>) -> (Bounds, Bounds, Bounds) {
    (
        Bounds::infinite(lr.n_q * lr.d),
        Bounds::infinite(lr.n_k * lr.d),
        Bounds::infinite(lr.n_k * lr.d_v),
    )
}

/// [`gradients`] for another arithmetic: `rr` is the a priori relative perturbation
/// of P~'s entries (and of the dS factors) by rounding (see [`output_with_rounding`]).
/// The weights take two passes of their own here; the engine's backward instead
/// carries them in its gradient passes ([`GradWeights::side`]).
pub fn gradients_with_rounding(
    lr: &LowRankProblem<'_, f64>,
    norm: &[f64],
    cx: &GradContext<'_>,
    computed: (&[f64], &[f64], &[f64]),
    rr: f64,
) -> (Bounds, Bounds, Bounds) {
    let Some(w) = GradWeights::new(lr, norm, cx, rr) else {
        return infinite_gradients(lr);
    };
    let side = w.side();
    let mon = &cx.plan.monomials;
    let w_k = apply(lr, mon, side.keys, side.key_width).o;
    let w_t = apply_transposed(lr, mon, norm, side.queries, side.query_width);
    w.finish(lr, cx, (&w_k, &w_t), computed)
}

/// The gradient bounds' weights, as payloads of the low-rank passes: P~ |K| (per-key
/// payload |K|) and P~^T [|dO|, sigma_poly o |Q|, sigma_total o |Q|] (per-query
/// payload: the polynomial part's and the total's sigma share one pass, |dO| serves
/// both). [`GradWeights::finish`] turns the passes' results into the bounds.
pub struct GradWeights {
    rhos: [Rhos; 2],
    /// sigma_i of the polynomial part and of the total (module docs).
    sigma: [Vec<f64>; 2],
    keys: Vec<f64>,
    queries: Vec<f64>,
    d: usize,
    d_v: usize,
}

impl GradWeights {
    /// The payloads for `cx`, or `None` when the plan certifies nothing (every bound
    /// is then +inf and no weight is needed).
    pub fn new(
        lr: &LowRankProblem<'_, f64>,
        norm: &[f64],
        cx: &GradContext<'_>,
        rr: f64,
    ) -> Option<Self> {
        let plan = cx.plan;
        if !certifies(plan) {
            return None;
        }
        let (n_q, n_k, d, d_v) = (lr.n_q, lr.n_k, lr.d, lr.d_v);
        let eps = plan.poly.eps;
        let rho_p = rho_of(eps);
        let rho_kind = match cx.kind {
            GradientKind::Substituted => rho_p,
            GradientKind::PolynomialModel => {
                let eps_d = certify(&plan.poly.derivative_coeffs(), plan.poly.radius);
                (eps_d + eps) / (1.0 - eps)
            }
        };
        let (q, k, v) = cx.inputs;
        let v_max: Vec<f64> = (0..d_v)
            .map(|c| (0..n_k).map(|j| v[j * d_v + c].abs()).fold(0.0, f64::max))
            .collect();
        let poly_o = output(plan, n_k, cx.weights_v, cx.o, 0.0).poly;
        let rhos = [
            Rhos {
                p: rho_p,
                k: rho_kind,
                round: 0.0,
            },
            Rhos {
                p: rho_p + rr,
                k: rho_kind + rr,
                round: rr,
            },
        ];
        let sigma_of = |rh: &Rhos, b_o: &[f64]| -> Vec<f64> {
            (0..n_q)
                .map(|i| {
                    if norm[i] == 0.0 {
                        return 0.0;
                    }
                    let (mut e, mut dd) = (0.0, 0.0);
                    for c in 0..d_v {
                        let g = cx.d_o[i * d_v + c].abs();
                        e += g * b_o[i * d_v + c];
                        dd += g * (v_max[c] + cx.o[i * d_v + c].abs() + b_o[i * d_v + c]);
                    }
                    rh.k * dd + (1.0 + rh.k) * e
                })
                .collect()
        };
        let sigma = [sigma_of(&rhos[0], &poly_o), sigma_of(&rhos[1], cx.bound_o)];
        let mut queries = Vec::with_capacity(n_q * (d_v + 2 * d));
        for i in 0..n_q {
            let qi = &q[i * d..(i + 1) * d];
            queries.extend(cx.d_o[i * d_v..(i + 1) * d_v].iter().map(|x| x.abs()));
            for s in &sigma {
                queries.extend(qi.iter().map(|x| s[i] * x.abs()));
            }
        }
        Some(Self {
            rhos,
            sigma,
            keys: k.iter().map(|x| x.abs()).collect(),
            queries,
            d,
            d_v,
        })
    }

    /// The payloads as side products of the passes (keys: |K|, d columns; queries:
    /// [|dO|, sigma_poly |Q|, sigma_total |Q|], d_v + 2 d columns).
    pub fn side(&self) -> SideProducts<'_, f64> {
        SideProducts {
            keys: &self.keys,
            key_width: self.d,
            queries: &self.queries,
            query_width: self.d_v + 2 * self.d,
        }
    }

    /// The bounds from the passes' results `(P~ X_keys, P~^T X_queries)` (what
    /// [`super::core::backward_with`] returns for [`GradWeights::side`]) and the
    /// computed gradients.
    pub fn finish(
        &self,
        lr: &LowRankProblem<'_, f64>,
        cx: &GradContext<'_>,
        (w_k, w_t): (&[f64], &[f64]),
        computed: (&[f64], &[f64], &[f64]),
    ) -> (Bounds, Bounds, Bounds) {
        let (d, d_v) = (self.d, self.d_v);
        let tau = lr.tau.abs();
        let wt = d_v + 2 * d;
        let [poly, total] = [0, 1].map(|part| {
            let rh = &self.rhos[part];
            let sigma = &self.sigma[part];
            let infl = 1.0 + rh.round;
            let dq = w_k
                .iter()
                .enumerate()
                .map(|(ic, w)| tau * sigma[ic / d] * (1.0 + rh.p) * w * infl)
                .collect();
            let mut dk = Vec::with_capacity(lr.n_k * d);
            let mut dv = Vec::with_capacity(lr.n_k * d_v);
            for row in w_t.chunks_exact(wt) {
                dv.extend(row[..d_v].iter().map(|w| rh.p * (1.0 + rh.p) * w * infl));
                let own = &row[d_v + part * d..d_v + (part + 1) * d];
                dk.extend(own.iter().map(|w| tau * (1.0 + rh.p) * w * infl));
            }
            [dq, dk, dv]
        });
        let mut out = poly
            .into_iter()
            .zip(total)
            .zip([computed.0, computed.1, computed.2])
            .map(|((p, t), y)| Bounds {
                total: t
                    .iter()
                    .zip(y)
                    .map(|(b, y)| b + cx.u_out * y.abs())
                    .collect(),
                poly: p,
            });
        let (a, b, c) = (
            out.next().unwrap_or_default(),
            out.next().unwrap_or_default(),
            out.next().unwrap_or_default(),
        );
        (a, b, c)
    }
}

/// Sums the values (in `T`) and bounds (in f64) over each group of `g` consecutive
/// query heads (GQA: the query heads `h` with `h / g == j` share key head `j`).
///
/// With `s` the exact sum of the heads' exact gradients, the returned bound covers
/// `|fl_T(sum v) - s| <= sum b + gamma^T_{g-1} sum |v|` (recursive summation in `T`),
/// rounded up ([`crate::rounding::group_sum_radius`]); the polynomial part alone is
/// `sum b` times `1 + gamma_{g+2}` (its `g - 1` sums, one product, the factor's own
/// rounding).
pub fn sum_groups<T: crate::Real>(
    vals: Vec<Vec<T>>,
    bounds: Vec<Bounds>,
    g: usize,
) -> (Vec<Vec<T>>, Vec<Bounds>) {
    use crate::rounding::{gamma, group_sum_radius, U_F32, U_F64};
    // No group (g <= 1, ordinary multi-head attention): nothing is added, nothing
    // rounds; the heads pass through unchanged (the same bits as without GQA support).
    if g <= 1 {
        return (vals, bounds);
    }
    let u = if T::DTYPE == "F32" { U_F32 } else { U_F64 };
    let up_poly = 1.0 + gamma(g + 2, U_F64);
    let mut out_v = Vec::new();
    let mut out_b = Vec::new();
    for (vs, bs) in vals.chunks(g).zip(bounds.chunks(g)) {
        let len = vs[0].len();
        let mut sum = vec![T::from_f64(0.0); len];
        let mut abs = vec![0.0f64; len];
        let mut total = vec![0.0f64; len];
        let mut polyb = vec![0.0f64; len];
        for (v, b) in vs.iter().zip(bs) {
            for e in 0..len {
                sum[e] += v[e];
                abs[e] += v[e].to_f64().abs();
                total[e] += b.total[e];
                polyb[e] += b.poly[e];
            }
        }
        for e in 0..len {
            // A sum that overflowed T is unbounded (the f64 sums of |v| and of the
            // bounds do not see T's overflow; found by review).
            total[e] = if sum[e].to_f64().is_finite() {
                group_sum_radius(total[e], abs[e], g, u)
            } else {
                f64::INFINITY
            };
            polyb[e] *= up_poly;
        }
        out_v.push(sum);
        out_b.push(Bounds { total, poly: polyb });
    }
    (out_v, out_b)
}

#[cfg(test)]
mod group_sum_tests {
    use super::*;

    /// The f64 sum of the bounds rounds: 1 + 19 (u) sums to 1 in f64, so the old
    /// `(1 + 4 eps)` factor gave 1 + 8u < 1 + 19u, the exact sum. The bound must be at
    /// least the exact sum (1 + 19u, so at least the next double 1 + 20u).
    #[test]
    fn group_bound_covers_the_f64_sum_of_bounds() {
        let u = f64::EPSILON / 2.0;
        let g = 20;
        let vals = vec![vec![0.0f64]; g];
        let bounds: Vec<Bounds> = (0..g)
            .map(|h| {
                let b = if h == 0 { 1.0 } else { u };
                Bounds {
                    total: vec![b],
                    poly: vec![b],
                }
            })
            .collect();
        let (v, b) = sum_groups(vals, bounds, g);
        assert_eq!(v, vec![vec![0.0]]);
        assert!(b[0].total[0] >= 1.0 + 20.0 * u, "{:e}", b[0].total[0] - 1.0);
        assert!(b[0].poly[0] >= 1.0 + 20.0 * u, "{:e}", b[0].poly[0] - 1.0);
    }

    /// g = 1 is no sum: values and bounds pass through bit for bit (the Python package
    /// calls this for every head layout; its bounds must equal the CLI's).
    #[test]
    fn group_of_one_is_the_identity() {
        let vals = vec![vec![1.5f64, -2.0], vec![0.25, 3.0]];
        let bounds = vec![
            Bounds {
                total: vec![1e-7, 2e-7],
                poly: vec![1e-8, 2e-8],
            };
            2
        ];
        let (v, b) = sum_groups(vals.clone(), bounds.clone(), 1);
        assert_eq!(v, vals);
        assert_eq!(b, bounds);
    }

    /// The value sum's own rounding: three f64 values whose sum rounds; the bound
    /// with zero input bounds must cover |fl(sum) - exact sum|.
    #[test]
    fn group_bound_covers_the_value_sum_rounding() {
        let u = f64::EPSILON / 2.0;
        let vals = vec![vec![1.0f64], vec![u], vec![u]]; // fl = 1, exact 1 + 2u
        let bounds = vec![
            Bounds {
                total: vec![0.0],
                poly: vec![0.0],
            };
            3
        ];
        let (v, b) = sum_groups(vals, bounds, 3);
        assert!(b[0].total[0] >= (1.0 + 2.0 * u - v[0][0]).abs());
        assert!(b[0].total[0] > 0.0);
    }

    /// Two f32 shares of 2e38 overflow to inf when summed in f32, while the f64 sums
    /// of |v| and of the bounds stay finite: the bound must be infinite (found by
    /// review: it was about 2.4e31).
    #[test]
    fn an_f32_group_sum_that_overflows_is_unbounded() {
        let vals = vec![vec![2e38f32], vec![2e38f32]];
        let bounds = vec![
            Bounds {
                total: vec![0.0],
                poly: vec![0.0],
            };
            2
        ];
        let (v, b) = sum_groups(vals, bounds, 2);
        assert_eq!(v[0][0], f32::INFINITY);
        assert_eq!(b[0].total[0], f64::INFINITY);
    }
}
