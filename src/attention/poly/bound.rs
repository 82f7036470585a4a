//! A priori bounds on the polynomial engine's distance to exact attention, entry by
//! entry, split into the polynomial part (from the certified eps_P alone) and the
//! rounding part (MATH.md 2.4, 2.5, 2.6 questions 2 and 3).
//!
//! Let P be the exact attention matrix and P~ the polynomial one. With every
//! A~_ij = P(S_ij) within relative eps_P of e^{S_ij}, |P~_ij - P_ij| <= rho P_ij with
//! rho = 2 eps_P / (1 - eps_P) (MATH.md 2.4), and P_ij <= (1 + rho) P~_ij. Then, with
//! W = P~ |V| (entrywise absolute values), Vmax_c = max_j |V_jc|:
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
//! the engine's own contractions, in O(n r (d + d_v)).
//!
//! Rounding: the engine computes in f64; a first-order a priori estimate of the
//! relative perturbation of P~'s entries, rho_r = 2 gamma_k kappa
//! ([`super::plan::rounding_rho`]), is added to every rho, the computed weights are
//! inflated by (1 + rho_r), and the final rounding to the output dtype adds u |y|.
//! The polynomial part is the same bound with rho_r = 0 and no output rounding.

use super::core::{apply, apply_transposed, GradientKind, LowRankProblem};
use super::plan::{rho_of, rounding_rho, Plan};
use super::polynomial::certify;

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
fn certifies(plan: &Plan) -> bool {
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

/// Bounds on dQ, dK, dV (see the module docs). `computed` are the gradients.
pub fn gradients(
    lr: &LowRankProblem<'_, f64>,
    norm: &[f64],
    cx: &GradContext<'_>,
    computed: (&[f64], &[f64], &[f64]),
) -> (Bounds, Bounds, Bounds) {
    let plan = cx.plan;
    let rr = rounding_rho(
        &plan.poly,
        plan.regime.rank * (lr.d_v + 1),
        lr.n_q.max(lr.n_k),
    );
    gradients_with_rounding(lr, norm, cx, computed, rr)
}

/// [`gradients`] for another arithmetic: `rr` is the a priori relative perturbation
/// of P~'s entries (and of the dS factors) by rounding (see [`output_with_rounding`]).
pub fn gradients_with_rounding(
    lr: &LowRankProblem<'_, f64>,
    norm: &[f64],
    cx: &GradContext<'_>,
    computed: (&[f64], &[f64], &[f64]),
    rr: f64,
) -> (Bounds, Bounds, Bounds) {
    let plan = cx.plan;
    let (n_q, n_k, d, d_v) = (lr.n_q, lr.n_k, lr.d, lr.d_v);
    if !certifies(plan) {
        return (
            Bounds::infinite(n_q * d),
            Bounds::infinite(n_k * d),
            Bounds::infinite(n_k * d_v),
        );
    }
    let eps = plan.poly.eps;
    let rho_p = rho_of(eps);
    let rho_kind = match cx.kind {
        GradientKind::Substituted => rho_p,
        GradientKind::PolynomialModel => {
            let eps_d = certify(&plan.poly.derivative_coeffs(), plan.poly.radius);
            if eps >= 1.0 {
                f64::INFINITY
            } else {
                (eps_d + eps) / (1.0 - eps)
            }
        }
    };
    let (q, k, v) = cx.inputs;
    let abs = |x: &[f64]| x.iter().map(|z| z.abs()).collect::<Vec<_>>();
    let w_k = apply(lr, &plan.monomials, &abs(k), d).o; // P~ |K|
    let v_max: Vec<f64> = (0..d_v)
        .map(|c| (0..n_k).map(|j| v[j * d_v + c].abs()).fold(0.0, f64::max))
        .collect();
    let poly_o = output(plan, n_k, cx.weights_v, cx.o, 0.0).poly;
    let one = |rh: &Rhos, b_o: &[f64]| -> [Vec<f64>; 3] {
        let sigma: Vec<f64> = (0..n_q)
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
            .collect();
        let tau = lr.tau.abs();
        let infl = 1.0 + rh.round;
        let dq = (0..n_q * d)
            .map(|ic| tau * sigma[ic / d] * (1.0 + rh.p) * w_k[ic] * infl)
            .collect();
        let mut payload = Vec::with_capacity(n_q * (d_v + d));
        for i in 0..n_q {
            payload.extend(cx.d_o[i * d_v..(i + 1) * d_v].iter().map(|x| x.abs()));
            payload.extend(q[i * d..(i + 1) * d].iter().map(|x| sigma[i] * x.abs()));
        }
        let t = apply_transposed(lr, &plan.monomials, norm, &payload, d_v + d);
        let mut dk = Vec::with_capacity(n_k * d);
        let mut dv = Vec::with_capacity(n_k * d_v);
        for row in t.chunks_exact(d_v + d) {
            dv.extend(row[..d_v].iter().map(|w| rh.p * (1.0 + rh.p) * w * infl));
            dk.extend(row[d_v..].iter().map(|w| tau * (1.0 + rh.p) * w * infl));
        }
        [dq, dk, dv]
    };
    let poly = one(
        &Rhos {
            p: rho_p,
            k: rho_kind,
            round: 0.0,
        },
        &poly_o,
    );
    let total = one(
        &Rhos {
            p: rho_p + rr,
            k: rho_kind + rr,
            round: rr,
        },
        cx.bound_o,
    );
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
