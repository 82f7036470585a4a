//! The exact engine against the 128-bit MPFR enclosures of `polyattn-spec`, widened
//! by the exact engine's derived rounding allowance (the `exact_vs_reference` fuzz
//! target, and the shared support of the enclosure tests in `tests/`).
//!
//! A check passes when every computed entry lies within its enclosure `[lo, hi]`
//! widened by its allowance on each side: the enclosure contains the exact real
//! result, and the allowance bounds the engine's rounding (derivation on
//! [`Allowance`]). Fully masked rows must have lse = -inf exactly.

use super::{log_spread, pick, Outcome, Violation};
use arbitrary::{Arbitrary, Unstructured};
use nalgebra::DMatrix;
use polyattn::attention::{exact, Alignment, AttentionConfig, Mask};
use polyattn::error::{Error, Result};
use polyattn::rng::SplitMix64;
use polyattn::tensor::Matrix;
use polyattn::Real;
use polyattn_spec::attention as spec;
use polyattn_spec::Interval;

pub use crate::certify::spec_mask;

/// A test problem in f64 (values already rounded to the dtype under test).
#[derive(Clone, Debug)]
pub struct Case {
    /// Queries.
    pub n_q: usize,
    /// Keys.
    pub n_k: usize,
    /// Head dimension of Q and K.
    pub d: usize,
    /// Head dimension of V.
    pub d_v: usize,
    /// Q, `n_q x d`, row-major.
    pub q: Vec<f64>,
    /// K, `n_k x d`.
    pub k: Vec<f64>,
    /// V, `n_k x d_v`.
    pub v: Vec<f64>,
    /// dO, `n_q x d_v`.
    pub d_o: Vec<f64>,
    /// The scale as passed in the config (None: 1/sqrt(d)).
    pub scale: Option<f64>,
    /// The mask.
    pub mask: Mask,
    /// An additive score bias, `n_q x n_k` row-major (finite or `-inf`), or none.
    pub bias: Option<Vec<f64>>,
    /// A score softcap `c` (rounded to the dtype), or none.
    pub softcap: Option<f64>,
}

impl Case {
    /// This case with an additive score bias (`n_q x n_k` row-major, `-inf` hides a
    /// key), rounded to `T` as the engine in `T` receives it.
    pub fn with_bias<T: Real>(mut self, bias: Vec<f64>) -> Case {
        self.bias = Some(bias.into_iter().map(|z| T::from_f64(z).to_f64()).collect());
        self
    }

    /// This case with a score softcap `c` (rounded to `T`, as the engine rounds it).
    pub fn with_softcap<T: Real>(mut self, c: f64) -> Case {
        self.softcap = Some(T::from_f64(c).to_f64());
        self
    }
}

/// Seeded N(0,1) inputs; q is then rescaled so that max |S_ij| equals `s_max` (when
/// given), which is how the tests reach scores of any magnitude. Values are rounded to
/// `T` so both the engine and the reference see the same numbers.
pub fn case<T: Real>(
    seed: u64,
    (n_q, n_k, d, d_v): (usize, usize, usize, usize),
    scale: Option<f64>,
    mask: Mask,
    s_max: Option<f64>,
) -> Case {
    let mut r = SplitMix64::new(seed);
    let round = |x: Vec<f64>| {
        x.into_iter()
            .map(|z| T::from_f64(z).to_f64())
            .collect::<Vec<_>>()
    };
    let mut q = r.normal_vec(n_q * d, 1.0);
    let k = round(r.normal_vec(n_k * d, 1.0));
    let v = round(r.normal_vec(n_k * d_v, 1.0));
    let d_o = round(r.normal_vec(n_q * d_v, 1.0));
    if let Some(target) = s_max {
        let tau = tau_of::<T>(scale, d);
        let mut cur: f64 = 0.0;
        for i in 0..n_q {
            for j in 0..n_k {
                let s: f64 = (0..d).map(|l| q[i * d + l] * k[j * d + l]).sum();
                cur = cur.max((tau * s).abs());
            }
        }
        if cur > 0.0 {
            q.iter_mut().for_each(|x| *x *= target / cur);
        }
    }
    Case {
        n_q,
        n_k,
        d,
        d_v,
        q: round(q),
        k,
        v,
        d_o,
        scale,
        mask,
        bias: None,
        softcap: None,
    }
}

/// The scale the engine uses for dtype `T` (rounded once to `T`).
pub fn tau_of<T: Real>(scale: Option<f64>, d: usize) -> f64 {
    let cfg = AttentionConfig {
        scale,
        mask: Mask::None,
        softcap: None,
    };
    T::from_f64(cfg.scale_for(d)).to_f64()
}

/// The engine's results in f64, row-major.
pub struct Computed {
    /// O.
    pub o: Vec<f64>,
    /// lse.
    pub lse: Vec<f64>,
    /// dQ.
    pub dq: Vec<f64>,
    /// dK.
    pub dk: Vec<f64>,
    /// dV.
    pub dv: Vec<f64>,
}

/// Runs the exact engine in `T` (forward and backward); its typed errors pass through.
pub fn run_engine<T: Real>(c: &Case) -> Result<Computed> {
    let m = |rows, cols, x: &[f64]| {
        Matrix::from_vec(rows, cols, x.iter().map(|&z| T::from_f64(z)).collect())
    };
    let (q, k, v, d_o) = (
        m(c.n_q, c.d, &c.q)?,
        m(c.n_k, c.d, &c.k)?,
        m(c.n_k, c.d_v, &c.v)?,
        m(c.n_q, c.d_v, &c.d_o)?,
    );
    let cfg = AttentionConfig {
        scale: c.scale,
        mask: c.mask,
        softcap: c.softcap,
    };
    let bias = match &c.bias {
        Some(b) => Some(m(c.n_q, c.n_k, b)?),
        None => None,
    };
    let b = bias.as_ref().map(|b| b.view());
    let f = exact::forward_with_bias(q.view(), k.view(), v.view(), b, &cfg)?;
    let g = exact::backward_with_bias(q.view(), k.view(), v.view(), b, &f, d_o.view(), &cfg)?;
    let v64 = |x: &[T]| x.iter().map(|z| z.to_f64()).collect::<Vec<_>>();
    Ok(Computed {
        o: v64(f.o.as_slice()),
        lse: v64(&f.lse),
        dq: v64(g.dq.as_slice()),
        dk: v64(g.dk.as_slice()),
        dv: v64(g.dv.as_slice()),
    })
}

/// Row-major enclosures from the spec (nalgebra is column-major: convert).
pub struct Enclosures {
    /// O.
    pub o: Vec<Interval>,
    /// lse (`None`: a fully masked row).
    pub lse: Vec<Option<Interval>>,
    /// dQ.
    pub dq: Vec<Interval>,
    /// dK.
    pub dk: Vec<Interval>,
    /// dV.
    pub dv: Vec<Interval>,
}

fn row_major(m: &DMatrix<Interval>) -> Vec<Interval> {
    let mut out = Vec::with_capacity(m.len());
    for i in 0..m.nrows() {
        for j in 0..m.ncols() {
            out.push(m[(i, j)].clone());
        }
    }
    out
}

/// The spec's problem for `c` in dtype `T` (tau rounded to `T`).
pub fn spec_problem<T: Real>(c: &Case) -> spec::Problem {
    spec::Problem {
        q: DMatrix::from_row_slice(c.n_q, c.d, &c.q),
        k: DMatrix::from_row_slice(c.n_k, c.d, &c.k),
        v: DMatrix::from_row_slice(c.n_k, c.d_v, &c.v),
        tau: tau_of::<T>(c.scale, c.d),
        mask: crate::certify::spec_mask(c.mask),
        softcap: c.softcap,
    }
}

/// MPFR enclosures at 128 bits of the exact results for dtype `T`'s inputs and tau.
pub fn enclosures<T: Real>(c: &Case) -> std::result::Result<Enclosures, Violation> {
    let p = spec_problem::<T>(c);
    let spec_err =
        |e: polyattn_spec::attention::SpecError| Violation(format!("spec enclosure failed: {e}"));
    let bias = c
        .bias
        .as_ref()
        .map(|b| DMatrix::from_row_slice(c.n_q, c.n_k, b));
    let f = spec::forward_with_bias(&p, bias.as_ref(), 128).map_err(spec_err)?;
    let d_o = DMatrix::from_row_slice(c.n_q, c.d_v, &c.d_o);
    let g = spec::backward_with_bias(&p, bias.as_ref(), &d_o, 128).map_err(spec_err)?;
    Ok(Enclosures {
        o: row_major(&f.o),
        lse: f.lse,
        dq: row_major(&g.dq),
        dk: row_major(&g.dk),
        dv: row_major(&g.dv),
    })
}

/// Plain f64 values of the exact formulas, used only as magnitudes in the allowance.
pub struct Reference {
    /// S = cap(tau Q K^T) + B (cap: the softcap, or the identity).
    pub s: Vec<f64>,
    /// The softcap's slope sech^2(tau q_i . k_j / c) (1 without a softcap).
    pub slope: Vec<f64>,
    /// |tau q_i . k_j| / c, the capped argument's size (0 without a softcap).
    pub y: Vec<f64>,
    /// P = softmax(S) (masked).
    pub p: Vec<f64>,
    /// O = P V.
    pub o: Vec<f64>,
    /// Row log-sum-exp.
    pub lse: Vec<f64>,
    /// dP = dO V^T.
    pub dp: Vec<f64>,
    /// delta_i = dO_i . O_i.
    pub delta: Vec<f64>,
    /// dS = P o (dP - delta) o slope.
    pub ds: Vec<f64>,
    /// dQ.
    pub dq: Vec<f64>,
    /// dK.
    pub dk: Vec<f64>,
    /// The keys each row sees.
    pub visible: Vec<std::ops::Range<usize>>,
}

/// The plain f64 formulas for `c` with scale `tau`.
pub fn reference(c: &Case, tau: f64) -> Reference {
    let (n_q, n_k, d, d_v) = (c.n_q, c.n_k, c.d, c.d_v);
    let visible: Vec<std::ops::Range<usize>> =
        (0..n_q).map(|i| c.mask.key_range(i, n_q, n_k)).collect();
    let mut s = vec![0.0; n_q * n_k];
    let mut slope = vec![1.0; n_q * n_k];
    let mut y = vec![0.0; n_q * n_k];
    let mut p = vec![0.0; n_q * n_k];
    let mut lse = vec![f64::NEG_INFINITY; n_q];
    for i in 0..n_q {
        for j in 0..n_k {
            let ij = i * n_k + j;
            let raw = tau * (0..d).map(|l| c.q[i * d + l] * c.k[j * d + l]).sum::<f64>();
            let capped = match c.softcap {
                Some(cap) => {
                    let t = (raw / cap).tanh();
                    y[ij] = (raw / cap).abs();
                    slope[ij] = 1.0 / ((raw / cap).cosh() * (raw / cap).cosh());
                    cap * t
                }
                None => raw,
            };
            s[ij] = capped + c.bias.as_ref().map_or(0.0, |b| b[ij]);
        }
        let vis = visible[i].clone();
        if vis.is_empty() {
            continue;
        }
        let m = vis
            .clone()
            .map(|j| s[i * n_k + j])
            .fold(f64::NEG_INFINITY, f64::max);
        if m == f64::NEG_INFINITY {
            continue; // every visible key hidden by a -inf bias: a fully masked row
        }
        let z: f64 = vis.clone().map(|j| (s[i * n_k + j] - m).exp()).sum();
        for j in vis {
            p[i * n_k + j] = (s[i * n_k + j] - m).exp() / z;
        }
        lse[i] = m + z.ln();
    }
    let mut o = vec![0.0; n_q * d_v];
    let mut dp = vec![0.0; n_q * n_k];
    let mut delta = vec![0.0; n_q];
    for i in 0..n_q {
        for cc in 0..d_v {
            o[i * d_v + cc] = (0..n_k).map(|j| p[i * n_k + j] * c.v[j * d_v + cc]).sum();
        }
        delta[i] = (0..d_v)
            .map(|cc| c.d_o[i * d_v + cc] * o[i * d_v + cc])
            .sum();
        for j in 0..n_k {
            dp[i * n_k + j] = (0..d_v)
                .map(|cc| c.d_o[i * d_v + cc] * c.v[j * d_v + cc])
                .sum();
        }
    }
    let ds: Vec<f64> = (0..n_q * n_k)
        .map(|ij| p[ij] * (dp[ij] - delta[ij / n_k]) * slope[ij])
        .collect();
    let mut dq = vec![0.0; n_q * d];
    let mut dk = vec![0.0; n_k * d];
    for i in 0..n_q {
        for j in 0..n_k {
            for l in 0..d {
                dq[i * d + l] += tau * ds[i * n_k + j] * c.k[j * d + l];
                dk[j * d + l] += tau * ds[i * n_k + j] * c.q[i * d + l];
            }
        }
    }
    Reference {
        s,
        slope,
        y,
        p,
        o,
        lse,
        dp,
        delta,
        ds,
        dq,
        dk,
        visible,
    }
}

use polyattn::rounding::gamma;

/// Per-entry rounding allowances of the exact engine's O, lse, dQ, dK, dV, derived
/// from the algorithm's operation sequence (first-order, u = T's unit roundoff,
/// gamma_k = k u / (1 - k u), exp/ln within 1 ulp <= 2u relative; the engine's exp
/// is `polyattn::simd`'s vectorised one on AVX2/AVX-512 CPUs, stated within
/// `simd::EXP_MAX_ULPS_F32` = `EXP_MAX_ULPS_F64` = 1 ulp for normal results (measured
/// 0.85 / 0.84) and within 2u relative plus half the subnormal spacing for subnormal
/// ones, which the eta terms below cover; libm's elsewhere; the tile products may sum
/// in any fixed order with FMA, which gamma_k covers):
///
/// Forward, row i (n_i visible keys, nb key blocks, R_i = max_j |S_ij|):
/// - score:  |s^ - S| <= e_ij = |tau| gamma_d sum_l |q_il k_jl| + u |S_ij|
/// - every term of the denominator l and of the accumulator acc carries a relative
///   error <= eps_i = max_j e_ij + 4u R_i (rounded exp arguments, including the
///   telescoping rescale arguments m_old - m_new) + 2u (exp) + 3u nb (each rescale:
///   exp and two products) + gamma_{n_i + nb + 1} (the sums);
/// - O = acc / l: |O^ - O| <= 2 eps_i / (1 - eps_i) sum_j P_ij |V_j| + 2u |O|
///   (docs/math.md §4.1's ratio argument, plus the reciprocal and the product);
/// - lse = m + ln l: |lse^ - lse| <= eps_i / (1 - eps_i) + 2u |lse - m| + u |lse|.
///
/// Backward (rho_ij = e_ij + eta_i + u |S_ij - lse_i| + 2u the relative error of P^,
/// eta_i the lse allowance): f_ij = gamma_dv sum |dO_i||V_j| (dP), g_i = gamma_dv
/// sum |dO_i||O_i| + sum |dO_i| a(O_i) (delta), h_ij = P_ij (rho_ij |dP - delta| + f_ij +
/// g_i + u |dP - delta|) + u |dS_ij| (dS), and
/// - dV_jc: sum_i P_ij |dO_ic| (rho_ij + gamma_{n_q + 1})
/// - dQ_ic: |tau| sum_j (h_ij + gamma_{n_k + 1} |dS_ij|) |K_jc| + u |dQ_ic|
/// - dK_jc: |tau| sum_i (h_ij + gamma_{n_q + 1} |dS_ij|) |Q_ic| + u |dK_jc|
///
/// Underflow: with gradual underflow every operation may add an absolute error of at
/// most eta (half the subnormal spacing; we use the whole spacing, 2^-149 for f32 and
/// 2^-1074 for f64) besides the relative u (Higham, Accuracy and Stability, 2.2), so
/// each allowance gains eta times (its number of roundings x the magnitudes they touch).
/// It matters only where outputs are themselves subnormal (|S| ~ 80 in f32).
///
/// The result is doubled: second-order terms are below eps^2 (< 1e-3 of the first-order
/// terms for every case tested, since eps < 1e-3), and the magnitudes are evaluated in
/// f64 from the plain reference rather than exactly; a factor of two covers both with
/// a wide margin while keeping the allowance within a small multiple of the rounding
/// that actually occurs (the tests print measured / allowance).
pub struct Allowance {
    /// For O.
    pub o: Vec<f64>,
    /// For lse.
    pub lse: Vec<f64>,
    /// For dQ.
    pub dq: Vec<f64>,
    /// For dK.
    pub dk: Vec<f64>,
    /// For dV.
    pub dv: Vec<f64>,
}

/// The derived allowance (see [`Allowance`]) for `c` computed in `T`.
pub fn allowance<T: Real>(c: &Case) -> Allowance {
    let u = T::UNIT_ROUNDOFF;
    let eta = if T::DTYPE == "F32" {
        f32::from_bits(1) as f64
    } else {
        f64::from_bits(1)
    };
    let tau = tau_of::<T>(c.scale, c.d);
    let r = reference(c, tau);
    let (n_q, n_k, d, d_v) = (c.n_q, c.n_k, c.d, c.d_v);
    let nb = n_k.div_ceil(polyattn::attention::exact::tile::BLOCK_K);
    let mut e = vec![0.0; n_q * n_k];
    let mut e_raw = vec![0.0; n_q * n_k];
    // The plain f64 reference's own raw-score error (for `slope_hi`).
    let mut e_plain = vec![0.0; n_q * n_k];
    for i in 0..n_q {
        for j in 0..n_k {
            let abs_dot: f64 = (0..d)
                .map(|l| (c.q[i * d + l] * c.k[j * d + l]).abs())
                .sum();
            let s = r.s[i * n_k + j];
            if !s.is_finite() {
                continue; // hidden by a -inf bias: P = 0 exactly, nothing computed
            }
            let dot: f64 = (0..d).map(|l| c.q[i * d + l] * c.k[j * d + l]).sum();
            // The product's rounding, and with a bias the addition's: u |S + b|.
            let add = if c.bias.is_some() { u * s.abs() } else { 0.0 };
            e_raw[i * n_k + j] = tau.abs() * gamma(d, u) * abs_dot + u * (tau * dot).abs();
            // The sum, the product by tau, the division by c and cosh (a few ulps),
            // all in f64.
            let u64 = f64::EPSILON / 2.0;
            e_plain[i * n_k + j] = tau.abs() * gamma(d, u64) * abs_dot
                + c.softcap
                    .map_or(0.0, |cap| 4.0 * u64 * r.y[i * n_k + j] * cap);
            // A softcap passes the raw error through (1-Lipschitz) and adds 6u c
            // (`polyattn::attention::exact` softcap: docs/math.md §5.4).
            let cap = c.softcap.map_or(0.0, |cap| 6.0 * u * cap);
            e[i * n_k + j] = e_raw[i * n_k + j] + cap + add;
        }
    }
    let mut a_o = vec![0.0; n_q * d_v];
    let mut a_lse = vec![0.0; n_q];
    for i in 0..n_q {
        let vis = r.visible[i].clone();
        if vis.is_empty() || r.lse[i] == f64::NEG_INFINITY {
            continue;
        }
        let r_i = vis
            .clone()
            .map(|j| r.s[i * n_k + j].abs())
            .filter(|x| x.is_finite())
            .fold(0.0, f64::max);
        let e_max = vis.clone().map(|j| e[i * n_k + j]).fold(0.0, f64::max);
        let eps =
            e_max + 4.0 * u * r_i + 2.0 * u + 3.0 * u * nb as f64 + gamma(vis.len() + nb + 1, u);
        for cc in 0..d_v {
            let pv: f64 = vis
                .clone()
                .map(|j| r.p[i * n_k + j] * c.v[j * d_v + cc].abs())
                .sum();
            let v_abs: f64 = vis.clone().map(|j| c.v[j * d_v + cc].abs()).sum();
            a_o[i * d_v + cc] = 2.0 * eps / (1.0 - eps) * pv
                + 2.0 * u * r.o[i * d_v + cc].abs()
                + 2.0 * eta * (v_abs + 1.0);
        }
        let m = vis
            .map(|j| r.s[i * n_k + j])
            .fold(f64::NEG_INFINITY, f64::max);
        a_lse[i] = eps / (1.0 - eps) + 2.0 * u * (r.lse[i] - m).abs() + u * r.lse[i].abs();
    }
    let mut h = vec![0.0; n_q * n_k];
    let mut rho = vec![0.0; n_q * n_k];
    // |dS_ij| over the true and the computed slope (`slope_hi`).
    let mut ds_hi = vec![0.0; n_q * n_k];
    for i in 0..n_q {
        let g_i: f64 = (0..d_v)
            .map(|cc| {
                let x = c.d_o[i * d_v + cc].abs();
                gamma(d_v, u) * x * r.o[i * d_v + cc].abs() + x * a_o[i * d_v + cc]
            })
            .sum();
        for j in r.visible[i].clone() {
            let ij = i * n_k + j;
            if !r.s[ij].is_finite() {
                continue; // hidden by a -inf bias
            }
            rho[ij] = e[ij] + a_lse[i] + u * (r.s[ij] - r.lse[i]).abs() + 2.0 * u;
            let f: f64 = gamma(d_v, u)
                * (0..d_v)
                    .map(|cc| (c.d_o[i * d_v + cc] * c.v[j * d_v + cc]).abs())
                    .sum::<f64>();
            let diff = (r.dp[ij] - r.delta[i]).abs();
            let (g_hi, slope_err) = slope_hi(c, &r, ij, e_raw[ij] + e_plain[ij], (u, eta));
            ds_hi[ij] = r.p[ij] * diff * g_hi;
            h[ij] = r.p[ij] * (rho[ij] * diff + f + g_i + u * diff) * g_hi
                + u * ds_hi[ij]
                + eta * (diff + 2.0)
                + r.p[ij] * diff * slope_err;
        }
    }
    let (gq, gk) = (gamma(n_q + 1, u), gamma(n_k + 1, u));
    let mut a_dq = vec![0.0; n_q * d];
    let mut a_dk = vec![0.0; n_k * d];
    let mut a_dv = vec![0.0; n_k * d_v];
    for i in 0..n_q {
        for j in r.visible[i].clone() {
            let ij = i * n_k + j;
            let w = h[ij] + ds_hi[ij] * gq.max(gk);
            for l in 0..d {
                a_dq[i * d + l] += tau.abs() * w * c.k[j * d + l].abs();
                a_dk[j * d + l] += tau.abs() * w * c.q[i * d + l].abs();
            }
            for cc in 0..d_v {
                let x = c.d_o[i * d_v + cc].abs();
                a_dv[j * d_v + cc] += r.p[ij] * x * (rho[ij] + gq) + eta * (x + 1.0);
            }
        }
    }
    a_dq.iter_mut()
        .zip(&r.dq)
        .for_each(|(a, x)| *a += u * x.abs() + eta * (n_k + 2) as f64);
    a_dk.iter_mut()
        .zip(&r.dk)
        .for_each(|(a, x)| *a += u * x.abs() + eta * (n_q + 2) as f64);
    a_dv.iter_mut().for_each(|a| *a += eta);
    let dbl = |v: Vec<f64>| v.into_iter().map(|x| 2.0 * x).collect::<Vec<_>>();
    Allowance {
        o: dbl(a_o),
        lse: dbl(a_lse),
        dq: dbl(a_dq),
        dk: dbl(a_dk),
        dv: dbl(a_dv),
    }
}

/// Under a softcap: an upper bound `g_hi` on both the true slope `sech^2(raw / c)` and
/// the engine's computed one, and the bound on their difference as a multiple of
/// `P |dP - delta|` (without a cap: `(1, 0)`). The plain reference's slope is off the
/// true one by its own raw-score error `e_plain` and the engine's by `e_raw` plus the
/// rounding of `y`; `|d ln sech^2 / dy| <= 2` turns a score error `delta` into a factor
/// `exp(2 delta / c)`, not small when `delta` is comparable to `c` (large cancelling
/// products under a small cap), so the factor is taken whole:
/// `g_hi = min(1, slope exp(2 D))`, `D = (e_raw + e_plain) / c + u |y|` (`e_scores` =
/// `e_raw + e_plain`, computed with the other score errors in [`allowance`]), and the
/// difference `g_hi (expm1(2 D) + 3u + gamma_4 + 2u |y|) + 4 eta` (the slope's own
/// rounding, `exact::softcap`, and the product `dS g`).
fn slope_hi(c: &Case, r: &Reference, ij: usize, e_scores: f64, (u, eta): (f64, f64)) -> (f64, f64) {
    let Some(cap) = c.softcap else {
        return (1.0, 0.0);
    };
    let big_d = e_scores / cap + u * r.y[ij];
    let g_hi = (r.slope[ij] * (2.0 * big_d).exp()).min(1.0);
    let rel = (2.0 * big_d).exp_m1() + 3.0 * u + gamma(4, u) + 2.0 * u * r.y[ij];
    (g_hi, g_hi * rel + 4.0 * eta)
}

/// For one tensor: the worst `outside / allowance` (0 when y lies inside the
/// enclosure; above 1 fails) and the worst tightness `max(|y - lo|, |y - hi|) /
/// allowance` (how much of the allowance the certified error uses), with the index of
/// the worst excess. A non-finite `y` or a length mismatch is a violation.
pub fn worst_excess(
    name: &str,
    ys: &[f64],
    ivs: &[Interval],
    allow: &[f64],
) -> std::result::Result<(f64, f64, usize), Violation> {
    if ys.len() != ivs.len() || allow.len() != ys.len() {
        return Err(Violation(format!(
            "{name}: {} values, {} enclosures, {} allowances",
            ys.len(),
            ivs.len(),
            allow.len()
        )));
    }
    let (mut worst, mut tight, mut at) = (0.0f64, 0.0f64, 0usize);
    for (idx, ((y, iv), a)) in ys.iter().zip(ivs).zip(allow).enumerate() {
        if !y.is_finite() {
            return Err(Violation(format!("{name}[{idx}] = {y} is not finite")));
        }
        let (lo, hi) = (iv.lo_f64(), iv.hi_f64());
        let outside = if *y < lo {
            lo - y
        } else if *y > hi {
            y - hi
        } else {
            0.0
        };
        let ratio = if outside == 0.0 {
            0.0
        } else if *a > 0.0 {
            outside / a
        } else {
            f64::INFINITY
        };
        if ratio > worst {
            worst = ratio;
            at = idx;
        }
        if *a > 0.0 {
            tight = tight.max((y - lo).abs().max((hi - y).abs()) / a);
        }
    }
    Ok((worst, tight, at))
}

/// Checks every output of the engine in `T` against the spec enclosure widened by the
/// derived allowance; returns the worst tightness (certified error / allowance) over
/// all tensors. The engine's own typed errors are returned as violations here (the
/// tests' cases are all valid inputs).
pub fn check_case<T: Real>(c: &Case) -> std::result::Result<f64, Violation> {
    let got = run_engine::<T>(c).map_err(|e| Violation(format!("exact engine failed: {e}")))?;
    let enc = enclosures::<T>(c)?;
    let allow = allowance::<T>(c);
    check_against(c, &got, &enc, &allow)
}

/// [`check_case`] for given results, enclosures and allowances.
pub fn check_against(
    c: &Case,
    got: &Computed,
    enc: &Enclosures,
    allow: &Allowance,
) -> std::result::Result<f64, Violation> {
    let mut worst: f64 = 0.0;
    // lse: a fully masked row must be exactly -inf (defined), others enclosed.
    let mut lse_ivs = Vec::new();
    let mut lse_ys = Vec::new();
    let mut lse_a = Vec::new();
    if enc.lse.len() != got.lse.len() {
        return Err(Violation("lse: lengths differ".into()));
    }
    for (i, l) in enc.lse.iter().enumerate() {
        match l {
            None => {
                if got.lse[i] != f64::NEG_INFINITY {
                    return Err(Violation(format!(
                        "fully masked row {i} must have lse = -inf, got {}",
                        got.lse[i]
                    )));
                }
            }
            Some(iv) => {
                lse_ivs.push(iv.clone());
                lse_ys.push(got.lse[i]);
                lse_a.push(allow.lse[i]);
            }
        }
    }
    for (name, ys, ivs, a) in [
        ("o", &got.o, &enc.o, &allow.o),
        ("lse", &lse_ys, &lse_ivs, &lse_a),
        ("dq", &got.dq, &enc.dq, &allow.dq),
        ("dk", &got.dk, &enc.dk, &allow.dk),
        ("dv", &got.dv, &enc.dv, &allow.dv),
    ] {
        let (ratio, tight, idx) = worst_excess(name, ys, ivs, a)?;
        if ratio > 1.0 {
            return Err(Violation(format!(
                "{name}[{idx}] = {:e} lies outside [{:e}, {:e}] by {ratio:.3} x its allowance {:e} ({:?} n_q={} n_k={} d={} d_v={})",
                ys[idx],
                ivs[idx].lo_f64(),
                ivs[idx].hi_f64(),
                a[idx],
                c.mask,
                c.n_q,
                c.n_k,
                c.d,
                c.d_v
            )));
        }
        worst = worst.max(tight);
    }
    Ok(worst)
}

/// The structured input of the `exact_vs_reference` target.
#[derive(Clone, Debug, PartialEq)]
pub struct ExactInput {
    /// Queries (1..=8).
    pub n_q: usize,
    /// Keys (1..=8).
    pub n_k: usize,
    /// Head dimension of Q and K (1..=4).
    pub d: usize,
    /// Head dimension of V (1..=3).
    pub d_v: usize,
    /// Compute in f32 (else f64).
    pub f32: bool,
    /// The mask.
    pub mask: Mask,
    /// The scale (`None`: 1/sqrt(d)).
    pub scale: Option<f64>,
    /// max |S_ij| the inputs are rescaled to: log-spread over [1e-3, 700], or exactly
    /// 0 (all-zero queries) or 700.
    pub s_max: f64,
    /// Seed of the entries.
    pub seed: u64,
    /// The additive score bias: none, N(0, sigma) noise, ALiBi, random -inf entries
    /// (key padding and holes), large entries, or a fully hidden first row.
    pub bias: BiasKind,
    /// A score softcap (docs/math.md §1.4): none, log-spread over [1e-2, 1e3], or a
    /// fraction (1e-2..1) of `s_max` (scores saturated).
    pub softcap: Option<f64>,
}

/// The fuzzed additive bias (see [`ExactInput::bias`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BiasKind {
    /// No bias.
    None,
    /// N(0, sigma) entries.
    Noise(f64),
    /// FlashAttention's ALiBi, `-slope |i + n_k - n_q - j|`.
    Alibi(f64),
    /// Each entry `-inf` with probability 1/3, else 0.
    Holes,
    /// N(0, 1) times a large magnitude (1e3 in f32, 1e5 in f64).
    Large,
    /// Row 0 wholly `-inf`, the rest N(0, 1).
    HiddenRow,
}

impl BiasKind {
    /// The `n_q x n_k` bias (row-major) from `seed`, or `None`.
    fn build(self, seed: u64, n_q: usize, n_k: usize, f32: bool) -> Option<Vec<f64>> {
        let mut r = SplitMix64::new(seed ^ 0x9e37_79b9_7f4a_7c15);
        let at = |ij: usize| ((ij / n_k) as f64, (ij % n_k) as f64);
        let n = n_q * n_k;
        Some(match self {
            BiasKind::None => return None,
            BiasKind::Noise(sigma) => r.normal_vec(n, sigma),
            BiasKind::Alibi(slope) => (0..n)
                .map(|ij| {
                    let (i, j) = at(ij);
                    -slope * (i + n_k as f64 - n_q as f64 - j).abs()
                })
                .collect(),
            BiasKind::Holes => (0..n)
                .map(|_| {
                    if r.int(0, 2) == 0 {
                        f64::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
                .collect(),
            BiasKind::Large => r.normal_vec(n, if f32 { 1e3 } else { 1e5 }),
            BiasKind::HiddenRow => {
                let mut b = r.normal_vec(n, 1.0);
                b[..n_k].fill(f64::NEG_INFINITY);
                b
            }
        })
    }
}

/// Largest |S| of the target (f64's exp overflows past about 709).
pub const MAX_SCORE: f64 = 700.0;

impl<'a> Arbitrary<'a> for ExactInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let n_q = u.int_in_range(1..=8)?;
        let n_k = u.int_in_range(1..=8)?;
        let d = u.int_in_range(1..=4)?;
        let d_v = u.int_in_range(1..=3)?;
        let f32 = u.arbitrary()?;
        let mask = match u.int_in_range(0u8..=3)? {
            0 => Mask::None,
            1 => Mask::CausalTopLeft,
            2 => Mask::CausalBottomRight,
            // A sliding window: sides 0..=9 or unbounded, either alignment (rows that
            // see no key occur when the window lies outside the keys).
            _ => {
                let side = |u: &mut Unstructured<'_>| -> arbitrary::Result<Option<usize>> {
                    let s = u.int_in_range(0usize..=10)?;
                    Ok((s < 10).then_some(s))
                };
                let (left, right) = (side(u)?, side(u)?);
                let align = pick(u, &[Alignment::TopLeft, Alignment::BottomRight])?;
                Mask::None.with_window(left, right, align)
            }
        };
        let scale = pick(u, &[None, None, Some(1.0), Some(-0.3)])?;
        let s_max = match u.int_in_range(0u8..=9)? {
            0 => 0.0,
            1 => MAX_SCORE,
            _ => log_spread(u, 1e-3, MAX_SCORE)?,
        };
        let seed = u.arbitrary()?;
        // Last, so that inputs from before the bias decode as before (no bias).
        let bias = match u.int_in_range(0u8..=5)? {
            0 => BiasKind::None,
            1 => BiasKind::Noise(log_spread(u, 1e-3, 1e2)?),
            2 => BiasKind::Alibi(log_spread(u, 1e-2, 8.0)?),
            3 => BiasKind::Holes,
            4 => BiasKind::Large,
            _ => BiasKind::HiddenRow,
        };
        // After the bias, for the same reason (older inputs decode without a cap).
        let softcap = match u.int_in_range(0u8..=3)? {
            0 | 1 => None,
            2 => Some(log_spread(u, 1e-2, 1e3)?),
            _ => Some(log_spread(u, 1e-2, 1.0)? * s_max.max(1e-3)),
        };
        Ok(Self {
            n_q,
            n_k,
            d,
            d_v,
            f32,
            mask,
            scale,
            s_max,
            seed,
            bias,
            softcap,
        })
    }
}

fn check_in<T: Real>(x: &ExactInput) -> std::result::Result<Outcome, Violation> {
    let mut c = case::<T>(
        x.seed,
        (x.n_q, x.n_k, x.d, x.d_v),
        x.scale,
        x.mask,
        Some(x.s_max),
    );
    if x.s_max == 0.0 {
        c.q.iter_mut().for_each(|q| *q = 0.0);
    }
    if let Some(b) = x.bias.build(x.seed, x.n_q, x.n_k, x.f32) {
        c = c.with_bias::<T>(b);
    }
    if let Some(cap) = x.softcap {
        c = c.with_softcap::<T>(cap);
    }
    let tau = tau_of::<T>(c.scale, c.d);
    let r = reference(&c, tau);
    let mut out = Outcome {
        n: Some(x.n_q.max(x.n_k)),
        // Over visible finite scores (a -inf bias entry hides its key).
        score_radius: Some(
            r.s.iter()
                .filter(|s| s.is_finite())
                .fold(0.0f64, |m, s| m.max(s.abs())),
        ),
        entry_bound: Some(c.q.iter().chain(&c.k).fold(0.0f64, |m, s| m.max(s.abs()))),
        ..Outcome::default()
    };
    let got = match run_engine::<T>(&c) {
        Ok(g) => g,
        // A typed refusal of a range the dtype cannot hold is a correct answer.
        Err(e @ Error::Overflow { .. }) => {
            out.refused = Some(e.to_string());
            return Ok(out);
        }
        Err(e) => return Err(Violation(format!("exact engine: {e} on {x:?}"))),
    };
    let enc = enclosures::<T>(&c)?;
    let allow = allowance::<T>(&c);
    let t = check_against(&c, &got, &enc, &allow)
        .map_err(|v| Violation(format!("{v} (input {x:?})")))?;
    out.tightness = Some(t);
    Ok(out)
}

/// Runs the property on one input (see the module docs).
pub fn check(x: &ExactInput) -> std::result::Result<Outcome, Violation> {
    if x.f32 {
        check_in::<f32>(x)
    } else {
        check_in::<f64>(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_score_case_is_enclosed() {
        let x = ExactInput {
            n_q: 5,
            n_k: 7,
            d: 3,
            d_v: 2,
            f32: false,
            mask: Mask::CausalBottomRight,
            scale: None,
            s_max: 650.0,
            seed: 3,
            bias: BiasKind::None,
            softcap: None,
        };
        let out = check(&x).unwrap();
        assert!(out.tightness.unwrap() <= 1.0);
        assert!((out.score_radius.unwrap() - 650.0).abs() < 1e-6 * 650.0);
    }

    /// Every bias kind the fuzz target draws, with windows and causal masks, in both
    /// dtypes, at small and large scores, with and without a softcap, holds the property.
    #[test]
    fn every_bias_kind_is_enclosed() {
        let kinds = [
            BiasKind::Noise(30.0),
            BiasKind::Alibi(2.0),
            BiasKind::Holes,
            BiasKind::Large,
            BiasKind::HiddenRow,
        ];
        let masks = [
            Mask::None,
            Mask::CausalBottomRight,
            Mask::None.with_window(Some(2), Some(1), Alignment::TopLeft),
        ];
        let mut seed = 0;
        for bias in kinds {
            for mask in masks {
                for (f32, s_max) in [(false, 3.0), (true, 3.0), (false, 300.0), (true, 60.0)] {
                    seed += 1;
                    let x = ExactInput {
                        n_q: 7,
                        n_k: 6,
                        d: 3,
                        d_v: 2,
                        f32,
                        mask,
                        scale: None,
                        s_max,
                        seed,
                        bias,
                        // A third of the cases saturated (c = s_max / 4), a third
                        // near-linear (c = 50), a third uncapped.
                        softcap: [Some(s_max / 4.0), Some(50.0), None][(seed % 3) as usize],
                    };
                    let out = check(&x).unwrap_or_else(|v| panic!("{v:?}"));
                    assert!(
                        out.refused.is_some() || out.tightness.unwrap() <= 1.0,
                        "{x:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_wrong_output_is_caught() {
        let c = case::<f64>(1, (3, 4, 2, 2), None, Mask::None, Some(5.0));
        let mut got = run_engine::<f64>(&c).unwrap();
        let enc = enclosures::<f64>(&c).unwrap();
        let allow = allowance::<f64>(&c);
        assert!(check_against(&c, &got, &enc, &allow).is_ok());
        got.o[0] += 1e-6;
        assert!(check_against(&c, &got, &enc, &allow).is_err());
    }
}
