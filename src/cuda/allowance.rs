//! Certified rounding allowances of the f16 kernels: f16 storage (u16 = 2^-11) of
//! inputs, operands and outputs, f32 arithmetic (u32 = 2^-24) for every sum
//! (docs/math.md §4.4, §5.6). Two parts:
//!
//! - the exact kernels' per-entry allowance (derivation below), which needs the MPFR
//!   enclosure of the exact result and is therefore computed in the tools crate
//!   (`polyattn_tools::fuzzing::cuda_allowance::exact_allowance`): an f16 result lies
//!   within its 128-bit MPFR enclosure widened by it.
//! - [`poly_rounding_rho`] and [`poly_bounds`]: the polynomial kernels' rounding as
//!   a relative perturbation of P~'s entries, fed to the CPU engine's bound
//!   machinery ([`crate::attention::poly::bound::output_with_rounding`],
//!   [`crate::attention::poly::bound::gradients_with_rounding`]) in place of f64's.
//!
//! Exact kernels, row i (n_i visible keys, nb = ceil(n_i / BLOCK_K) tiles, R_i =
//! max_j |S_ij|, u_in = u16 when the inputs were rounded from f32 and 0 when they
//! were f16 already; expf within 2 ulp (4 u32 relative), logf within 1 ulp):
//! - score: e_ij = |tau| (gamma32_d + 2 u_in) sum_l |q_il k_jl| + u32 |S_ij|
//! - every term of the denominator carries eps_i = max_j e_ij + 4 u32 R_i (exp
//!   arguments, telescoped) + 4 u32 (expf) + 5 u32 nb (each rescale: expf and one
//!   product) + gamma32(n_i + nb + 1) (the sums); the numerator's terms also carry the
//!   f16 rounding of p (u16) and of V (u_in);
//! - O: (2 eps_i + u16 + u_in) / (1 - eps_i) (P|V|)_ic + (u32 + u16) |O_ic| (division,
//!   f16 store) + eta16 (sum_j |V_jc| + 1) (f16 underflow of p and of O);
//! - lse: eps_i / (1 - eps_i) + 2 u32 |lse - m| + u32 |lse|.
//!
//! Backward, per visible pair: rho_ij = e_ij + a_lse,i + u32 |S_ij - lse_i| + 4 u32
//! (recomputed P); f_ij = (gamma32_dv + 2 u_in) sum_c |dO_ic V_jc| (dP);
//! g_i = (gamma32_dv + u_in) sum_c |dO_ic O_ic| + sum_c |dO_ic| a_O,ic (delta from the
//! stored O); h_ij = P_ij (rho_ij |dP - delta| + f_ij + g_i + u32 |dP - delta|)
//! + (u32 + u16) |dS_ij| + eta16 (dS and its f16 operand);
//! - dV_jc: sum_i (P_ij |dO_ic| (rho_ij + u16 + u_in + gamma32(n_q + 1)) + eta16 (|dO_ic| + 1))
//! - dQ_ic: |tau| sum_j (h_ij + (gamma32(n_k + 1) + u_in) |dS_ij|) |K_jc| + (u32 + u16) |dQ_ic| + eta16
//! - dK_jc: |tau| sum_i (h_ij + (gamma32(n_q + 1) + u_in) |dS_ij|) |Q_ic| + (u32 + u16) |dK_jc| + eta16
//!
//! eta16 = 2^-25 is half the f16 subnormal spacing (the absolute error of rounding
//! to f16 in the subnormal range). As for the f32/f64 allowance, the first-order sum
//! is doubled to cover second-order terms (every eps here is below 1e-2 in the tests'
//! ranges, so they are below 1% of the first-order ones) and the use of f64 magnitudes
//! from the plain reference.

use super::launch::MAX_CHUNK;
use super::poly::FeatureTable;
use super::poly::{CudaPolyForward, CudaPolyGradients};
use crate::attention::poly::bound::{self, Bounds, GradContext};
use crate::attention::poly::core;
use crate::attention::poly::{GradientKind, PolyConfig};
use crate::attention::Problem;
use crate::error::Result;
use crate::tensor::MatRef;

/// Unit roundoff of f16 (11 significand bits).
pub const U16: f64 = 1.0 / 2048.0;
/// Unit roundoff of f32.
pub const U32: f64 = 1.0 / 16_777_216.0;
/// Half the f16 subnormal spacing: the absolute error of rounding a subnormal.
pub const ETA16: f64 = 1.0 / 33_554_432.0;

/// gamma_k = k u / (1 - k u) for u = u32.
/// `+inf` once `k u32 >= 1` ([`crate::rounding::gamma`]).
pub fn gamma32(k: usize) -> f64 {
    crate::rounding::gamma(k, U32)
}

/// The a priori relative perturbation of the f16 polynomial kernels' P~ entries
/// (the f16/f32 counterpart of [`crate::attention::poly::rho::rounding_rho`]):
///
/// ```text
/// u_f   = u16 + gamma32(2g + 2)         one stored feature: f32 inputs scaled, g products,
///                                       coefficient rounded to f32 and applied, f16 store
/// k     = width + n + 2 chunk + 16      f32 roundings on any path (state sums, scan,
///                                       the factor products, the apply sum, division)
/// kappa = (sum_t |c_t| R^t) e^R / (1 - eps_P)      cancellation (sum |U V| over P~)
/// under = eta16 L e^R / (1 - eps_P)     f16 underflow of features: L bounds
///                                       max_i sum_m |U_im| + max_j sum_m |V_jm|
///                                       (`mass`; [`feature_mass`] or the a priori
///                                       `DegreeScaling::l1_mass`)
/// rr    = 2 ((2 u_f + gamma32(k)) kappa + under) + 2 (e^{4 u_in R} - 1) + u_in
/// ```
/// The last two terms are the f32 -> f16 rounding of the inputs (scores move by at
/// most 2 u_in R; V, dO, K, Q payloads by u_in relative), zero when `u_in = 0`.
pub fn poly_rounding_rho(
    fwd: &CudaPolyForward,
    mass: f64,
    width: usize,
    n: usize,
    chunk: usize,
    u_in: f64,
) -> f64 {
    let poly = &fwd.plan.poly;
    let g = fwd.plan.regime.degree;
    let r = poly.radius;
    let u_f = U16 + gamma32(2 * g + 2);
    let k = width + n + 2 * chunk + 16;
    let abs_sum: f64 = poly
        .coeffs
        .iter()
        .enumerate()
        .map(|(t, c)| c.abs() * r.powi(t as i32))
        .sum();
    let denom = (1.0 - poly.eps).max(f64::MIN_POSITIVE);
    let kappa = abs_sum * r.exp() / denom;
    let under = ETA16 * mass * r.exp() / denom;
    2.0 * ((2.0 * u_f + gamma32(k)) * kappa + under) + 2.0 * ((4.0 * u_in * r).exp() - 1.0) + u_in
}

/// Certified bounds of an f16 polynomial run against exact attention.
#[derive(Clone, Debug)]
pub struct PolyF16Bounds {
    /// Entrywise bound on |O~_f16 - O|.
    pub o: Bounds,
    /// Bounds on dQ, dK, dV when gradients were given.
    pub grads: Option<(Bounds, Bounds, Bounds)>,
    /// The rounding perturbations used (forward, gradients).
    pub rho_rounding: (f64, f64),
}

/// Bounds on the distance of the f16 polynomial results `fwd` (and `grads`) to exact
/// attention of the inputs the kernels saw (`u_in = 0`: `q`, `k`, `v`, `d_o` are
/// f16-representable) or of the given f32 inputs (`u_in = U16`). The CPU engine's
/// bound (docs/math.md §4) with [`poly_rounding_rho`] for the rounding part and
/// u16 + 2 u32 (plus eta16 absolute) for the f16 outputs. Costs one f64 low-rank
/// run, O(n r (d + d_v)).
#[allow(clippy::too_many_arguments)]
pub fn poly_bounds(
    q: MatRef<'_, f32>,
    k: MatRef<'_, f32>,
    v: MatRef<'_, f32>,
    d_o: Option<MatRef<'_, f32>>,
    cfg: &PolyConfig,
    fwd: &CudaPolyForward,
    grads: Option<&CudaPolyGradients>,
    u_in: f64,
) -> Result<PolyF16Bounds> {
    let p = Problem::new(q, k, v, &cfg.attention())?;
    let to64 = |m: MatRef<'_, f32>| {
        m.as_slice()
            .iter()
            .map(|x| half::f16::from_f32(*x).to_f64())
            .collect::<Vec<f64>>()
    };
    let (q64, k64, v64) = (to64(q), to64(k), to64(v));
    let plan = &fwd.plan;
    let lr = plan.low_rank_problem(
        (&q64, &k64, &v64),
        (p.n_q(), p.n_k(), p.d(), p.d_v()),
        p.tau as f64,
        p.mask,
        cfg.chunk,
        |x| x,
    );
    let f64_fwd = core::forward(&lr, &plan.monomials);
    let abs_v: Vec<f64> = v64.iter().map(|x| x.abs()).collect();
    let w = core::apply(&lr, &plan.monomials, &abs_v, p.d_v()).o;
    let u_out = U16 + 2.0 * U32;
    let n = p.n_q().max(p.n_k());
    let r = plan.regime.rank;
    let mass = feature_mass(fwd, &q64, &k64, p.d())?.min(fwd.scaling.l1_mass);
    let rr_f = poly_rounding_rho(fwd, mass, r, n, fwd.chunk, u_in);
    let rr_g = poly_rounding_rho(fwd, mass, r * (p.d_v() + 1), n, MAX_CHUNK, u_in);
    let o_gpu: Vec<f64> = fwd.o.as_slice().iter().map(|x| *x as f64).collect();
    let mut bo = bound::output_with_rounding(plan, rr_f, &w, &o_gpu, u_out);
    bo.total.iter_mut().for_each(|x| *x += ETA16);
    let grads = match (d_o, grads) {
        (Some(g), Some(gr)) => {
            let g64 = to64(g);
            let kind: GradientKind = gr.kind;
            let cx = GradContext {
                plan,
                kind,
                inputs: (&q64, &k64, &v64),
                o: &f64_fwd.o,
                d_o: &g64,
                weights_v: &w,
                bound_o: &bo.total,
                u_out,
            };
            let c64 = |m: &crate::tensor::Matrix<f32>| {
                m.as_slice().iter().map(|x| *x as f64).collect::<Vec<f64>>()
            };
            let (dq, dk, dv) = (c64(&gr.dq), c64(&gr.dk), c64(&gr.dv));
            let (mut a, mut b, mut c) =
                bound::gradients_with_rounding(&lr, &f64_fwd.norm, &cx, (&dq, &dk, &dv), rr_g);
            for bb in [&mut a, &mut b, &mut c] {
                bb.total.iter_mut().for_each(|x| *x += ETA16);
            }
            Some((a, b, c))
        }
        _ => None,
    };
    Ok(PolyF16Bounds {
        o: bo,
        grads,
        rho_rounding: (rr_f, rr_g),
    })
}

/// max_i sum_m |U_im| + max_j sum_m |V_jm| of the scaled features (query side with
/// P's and, when larger, P''s multipliers), evaluated in f64 from the inputs the
/// kernels saw and inflated by 1 + 2^-40 for the f64 evaluation: the `mass` of
/// [`poly_rounding_rho`]'s underflow term. O(n r d).
pub fn feature_mass(fwd: &CudaPolyForward, q: &[f64], k: &[f64], d: usize) -> Result<f64> {
    let table = FeatureTable::new(&fwd.plan.monomials)?;
    let sc = &fwd.scaling;
    let side = |x: &[f64], scale: f64, coef: &dyn Fn(usize) -> f64| -> f64 {
        x.chunks_exact(d)
            .map(|row| {
                let xs: Vec<f64> = row.iter().map(|z| (z * scale).abs()).collect();
                table
                    .powers(&xs)
                    .iter()
                    .enumerate()
                    .map(|(m, p)| p * coef(m))
                    .sum::<f64>()
            })
            .fold(0.0, f64::max)
    };
    let qc = |m: usize| {
        let a = (sc.query_coef[m] as f64).abs();
        let b = sc.deriv_coef.get(m).map_or(0.0, |x| (*x as f64).abs());
        a.max(b)
    };
    let kc = |m: usize| (sc.key_coef[m] as f64).abs();
    let mass = side(q, fwd.plan.query_scale, &qc) + side(k, fwd.plan.key_scale, &kc);
    Ok(mass * (1.0 + 2f64.powi(-40)))
}
