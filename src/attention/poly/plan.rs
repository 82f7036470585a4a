//! Choosing the polynomial for one head: the rigorous exponent radius, the degree that
//! certifies a requested accuracy, the rank and cost, and the regime the input is in
//! (docs/math.md §3.1, §3.2, §3.6; AS23's bounded-entry threshold).

use super::features::{rank, Monomials};
use super::polynomial::{self, ExpPoly, PolyKind};
use super::rho;
use crate::attention::{Mask, Problem};
use crate::error::{Error, Result};
use crate::scalar::Real;

/// What accuracy to aim for.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Accuracy {
    /// The smallest degree whose a priori bound on max |O~ - O| (absolute, entrywise,
    /// polynomial and rounding parts together) is at most this.
    Eps(f64),
    /// This degree; the bound it certifies is reported.
    Degree(usize),
    /// This degree with no guarantee: it runs even where P certifies nothing on
    /// [-R, R] (eps_P >= 1, which [`Accuracy::Degree`] refuses), and every bound it
    /// reports is then +inf. For experiments that measure the error instead, e.g. a
    /// Taylor polynomial on data whose scores sit far inside the rigorous radius R
    /// (`polyattn sweep seed`). Never chosen by the CLI.
    DegreeUncertified(usize),
}

/// Configuration of the polynomial engine.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PolyConfig {
    /// tau (`None`: 1/sqrt(d)).
    pub scale: Option<f64>,
    /// The mask.
    pub mask: Mask,
    /// Target accuracy or fixed degree.
    pub accuracy: Accuracy,
    /// Chebyshev (default) or Taylor.
    pub kind: PolyKind,
    /// Refuse when the rank C(d + g, g) exceeds this (default 20 000).
    pub max_rank: usize,
    /// Highest degree tried (default 20, the features' limit).
    pub max_degree: usize,
    /// Refuse when the predicted cost exceeds this multiple of the exact engine's
    /// (default 10: the poly engine may be slower than exact, but not absurdly) ...
    pub max_cost_ratio: f64,
    /// ... and exceeds this many flops (default 1e9, about a second here): small
    /// problems are never refused for cost. `auto` uses ratio 1 and floor 0.
    pub cost_floor_flops: f64,
    /// Rows per chunk of the causal scans (default 0: chosen per contraction by the
    /// cost model of [`super::lowrank::chunk_for`], docs/perf/causal.md).
    pub chunk: usize,
    /// With a causal mask, the query rows that see at most this many keys (and at most
    /// n_k / 16; the first rows) are computed by the exact engine instead, with its
    /// rounding bound (default 512; 0 turns it off). The polynomial's relative error is not averaged
    /// down over a few keys, so those rows would otherwise set the certified bound and
    /// force a higher degree for every row; exactly they cost O(prefix^2 d). The CPU
    /// engine's option: the CUDA path (feature `cuda`) does not split rows.
    pub exact_prefix: usize,
    /// A radius known to bound the scores by construction (cosine attention: every
    /// `|S_ij| <= tau_max`, docs/math.md §7.4). The planner plans for
    /// `R = max(radius_floor, rigorous radius of the data)`: the plan (degree, rank) then
    /// stays put while the data moves below the floor, and the certificate never
    /// weakens (a polynomial certified on `[-R, R]` is certified on every smaller
    /// interval). Default 0: the data's radius alone.
    pub radius_floor: f64,
}

impl Default for PolyConfig {
    fn default() -> Self {
        Self {
            scale: None,
            mask: Mask::None,
            accuracy: Accuracy::Eps(1e-6),
            kind: PolyKind::Chebyshev,
            max_rank: 20_000,
            max_degree: 20,
            max_cost_ratio: 10.0,
            cost_floor_flops: 1e9,
            chunk: 0,
            exact_prefix: 512,
            radius_floor: 0.0,
        }
    }
}

impl PolyConfig {
    /// The shared attention configuration (scale and mask).
    pub fn attention(&self) -> crate::attention::AttentionConfig {
        crate::attention::AttentionConfig {
            scale: self.scale,
            mask: self.mask,
            softcap: None,
        }
    }
}

/// Where an input stands: the facts a user needs to judge the polynomial method.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Regime {
    /// Sequence length used for sqrt(ln n) (max of n_q, n_k).
    pub n: usize,
    /// Head dimension.
    pub d: usize,
    /// Certified exponent radius R = |tau| max_i ||q_i|| max_j ||k_j|| (rounded up),
    /// or [`PolyConfig::radius_floor`] when larger: every score satisfies
    /// |S_ij| <= R (docs/math.md §3.1).
    pub radius: f64,
    /// The papers' entry bound B = max |entry| of Q and K.
    pub entry_bound: f64,
    /// sqrt(ln n), the scale of AS23's entry-bound threshold (see [`Regime::bounded_entries`]).
    pub sqrt_ln_n: f64,
    /// The degree g.
    pub degree: usize,
    /// The rank r = C(d + g, g).
    pub rank: usize,
    /// Certified relative error eps_P of P on [-R, R].
    pub eps_poly: f64,
    /// Predicted floating-point operations of the polynomial forward.
    pub poly_flops: f64,
    /// Predicted floating-point operations of the exact forward.
    pub exact_flops: f64,
}

impl Regime {
    /// exact / poly predicted cost: above 1 the polynomial engine should be faster.
    pub fn predicted_speedup(&self) -> f64 {
        self.exact_flops / self.poly_flops
    }
    /// True when B < sqrt(ln n) at this n: where the input sits against the *scale* of
    /// AS23's threshold. By itself it promises nothing: the theorems are asymptotic
    /// (B = o(sqrt(log n)) almost linear, B = omega(sqrt(log n)) not subquadratic under
    /// SETH, constants unknown) and concern d = Theta(log n); at one n and a fixed d the
    /// planner's degree, rank and predicted cost are what decide (README, "The cost
    /// exponent under the papers' own prescriptions").
    pub fn bounded_entries(&self) -> bool {
        self.entry_bound < self.sqrt_ln_n
    }
}

/// The chosen polynomial, its monomials and the scaling of the factors.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The certified polynomial.
    pub poly: ExpPoly,
    /// Its monomial table.
    pub monomials: Monomials,
    /// The regime report.
    pub regime: Regime,
    /// a in x = a q (a b = tau): a power-of-two rescaling that balances the factors.
    pub query_scale: f64,
    /// b in y = b k.
    pub key_scale: f64,
}

/// Sum of squares, square root and product, each rounded up (next_up after a
/// round-to-nearest result is an upper bound on the exact value).
pub fn rigorous_radius<T: Real>(p: &Problem<'_, T>) -> f64 {
    let norm_up = |row: &[T]| {
        let s = row.iter().fold(0.0f64, |acc, x| {
            (acc + (x.to_f64() * x.to_f64()).next_up()).next_up()
        });
        s.sqrt().next_up()
    };
    let max_norm = |m: crate::tensor::MatRef<'_, T>| {
        (0..m.rows())
            .map(|i| norm_up(m.row(i)))
            .fold(0.0f64, f64::max)
    };
    ((p.tau.to_f64().abs() * max_norm(p.q)).next_up() * max_norm(p.k)).next_up()
}

impl Plan {
    /// The low-rank problem this plan describes for one head: `q` (`n_q x d`), `k`
    /// (`n_k x d`), `v` (`n_k x d_v`) already in the scalar `S` the algorithm runs on,
    /// and the plan's f64 numbers (tau, the factor scales, P's coefficients) lifted into
    /// `S` by `lift` (the identity for f64, an MPFR conversion for the references).
    #[allow(clippy::too_many_arguments)]
    pub fn low_rank_problem<'a, S>(
        &self,
        (q, k, v): (&'a [S], &'a [S], &'a [S]),
        (n_q, n_k, d, d_v): (usize, usize, usize, usize),
        tau: f64,
        mask: Mask,
        chunk: usize,
        lift: impl Fn(f64) -> S,
    ) -> super::core::LowRankProblem<'a, S> {
        super::core::LowRankProblem {
            q,
            k,
            v,
            n_q,
            n_k,
            d,
            d_v,
            tau: lift(tau),
            query_scale: lift(self.query_scale),
            key_scale: lift(self.key_scale),
            coeffs: self.poly.coeffs.iter().map(|&c| lift(c)).collect(),
            mask,
            chunk,
            keys: None,
        }
    }
}

/// Predicted flops of the polynomial forward (features, states twice, queries' state
/// products, the in-chunk blocks of a mask: about chunk / 2 entries per row, each
/// `d + g` operations by the direct kernel where it applies, `r` otherwise, and `p`
/// for the payload) and of the exact forward (4 n_q n_k d, halved when causal, 4 d
/// per visible pair under a sliding window). A sliding window runs the range form
/// (`lowrank::range_contract_map`): every part twice, and a partial chunk at both
/// ends of each row's range. `chunk` 0 is the cost model's choice
/// ([`super::lowrank::chunk_for`]).
fn costs(
    n_q: usize,
    n_k: usize,
    (d, d_v, g): (usize, usize, usize),
    r: usize,
    chunk: usize,
    mask: Mask,
) -> (f64, f64) {
    let direct_k = (g * (d + 2) <= r && d + g < r).then_some((d, g));
    let chunk = if chunk == 0 {
        super::lowrank::chunk_for(r, d_v + 1, direct_k)
    } else {
        chunk
    };
    let k = direct_k.map_or(r, |(d, g)| d + g) as f64;
    let (nq, nk, r, p) = (n_q as f64, n_k as f64, r as f64, (d_v + 1) as f64);
    let direct = if mask == Mask::None {
        0.0
    } else {
        (chunk as f64).min(nk) / 2.0
    };
    let (parts, blocks) = if mask.is_prefix() {
        (1.0, 1.0)
    } else {
        (2.0, 2.0)
    };
    let poly = parts * (2.0 * (nq + nk) * r + 4.0 * nk * r * p + 2.0 * nq * r * p)
        + blocks * 2.0 * nq * direct * (k + p);
    let pairs = match mask {
        Mask::None => nq * nk,
        Mask::Window(_) => (0..n_q)
            .map(|i| mask.key_range(i, n_q, n_k).len() as f64)
            .sum(),
        _ => 0.5 * nq * nk,
    };
    let exact = 4.0 * pairs * d as f64;
    (poly, exact)
}

/// The polynomial engine's refusal of `p` for `reason`, with the regime it was in:
/// the exponent radius `radius`, the entry bound B = max |q|, |k| and sqrt(ln n).
pub fn refusal<T: Real>(p: &Problem<'_, T>, radius: f64, reason: String) -> Error {
    let n = p.n_q().max(p.n_k());
    Error::PolyRefused {
        reason,
        radius,
        entry_bound: entry_bound(p),
        sqrt_ln_n: (n as f64).ln().max(0.0).sqrt(),
    }
}

/// The papers' entry bound B = max |q|, |k|.
fn entry_bound<T: Real>(p: &Problem<'_, T>) -> f64 {
    (p.q.as_slice().iter().chain(p.k.as_slice()))
        .map(|x| x.to_f64().abs())
        .fold(0.0, f64::max)
}

/// The refusal of an input with an additive score bias other than key padding (the
/// polynomial engine takes key padding only, `poly::key_padding`; the exact engine
/// takes any bias, and `auto` falls back to it).
pub fn refuse_bias<T: Real>(p: &Problem<'_, T>) -> Error {
    refusal(
        p,
        rigorous_radius(p),
        "an additive score bias (attn_mask) other than key padding (every column all 0 or \
         all -inf) runs through the exact engine only"
            .into(),
    )
}

/// The refusal of a softcapped problem: the polynomial engine approximates
/// `exp(tau q . k)`, not `exp(c tanh(tau q . k / c))` (a polynomial of the composed
/// function is future work); the exact engine takes the cap, and `auto` falls back.
pub fn refuse_softcap<T: Real>(p: &Problem<'_, T>, c: f64) -> Error {
    refusal(
        p,
        rigorous_radius(p),
        format!("softcap {c}: score softcapping runs through the exact engine only"),
    )
}

/// The degree decision, in one place: the plans to try, in order (the CPU engine runs
/// them all; the CUDA path, whose f16 bound is computed on the host after the run, runs
/// the last, which is [`plan`]'s). The last is [`plan`]'s, whose degree g is the smallest that meets eps
/// by the a priori bound ([`rho::output_a_priori`], with max |V| for the P-weighted
/// |V|). With an eps target, g - 1 comes first when a rigorous floor of the bound its
/// run would report ([`rho::output_floor`], O(n d): rows from `first_poly_row` on, the
/// rows before it being computed exactly) does not already exceed eps. An engine runs
/// the candidates in order and keeps the first whose reported bound meets the target
/// ([`meets_target`]); the backward, which dominates the cost, then runs at the lower
/// rank when g - 1 sufficed. Errors and refusals are [`plan`]'s for degree g.
pub fn candidates<T: Real>(
    p: &Problem<'_, T>,
    cfg: &PolyConfig,
    first_poly_row: usize,
) -> Result<Vec<Plan>> {
    let chosen = plan(p, cfg)?;
    let g = chosen.regime.degree;
    let mut out = Vec::with_capacity(2);
    if let Accuracy::Eps(eps) = cfg.accuracy {
        if g > 1 {
            let lower = polynomial::ExpPoly::new(cfg.kind, g - 1, chosen.regime.radius);
            if rho::output_floor(&lower, max_visible_mean_abs(p, first_poly_row)) <= eps {
                let cfg_lower = PolyConfig {
                    accuracy: Accuracy::Degree(g - 1),
                    ..*cfg
                };
                if let Ok(pl) = plan(p, &cfg_lower) {
                    out.push(pl);
                }
            }
        }
    }
    out.push(chosen);
    Ok(out)
}

/// Whether a run whose reported max bound is `bound` meets `cfg`'s target (always for a
/// fixed degree: there is no target).
pub fn meets_target(cfg: &PolyConfig, bound: f64) -> bool {
    match cfg.accuracy {
        Accuracy::Eps(eps) => bound <= eps,
        Accuracy::Degree(_) | Accuracy::DegreeUncertified(_) => true,
    }
}

/// max over rows i >= `first` and value columns c of the mean of |V_jc| over the keys
/// row i sees (0 when no such row sees a key): what [`rho::output_floor`] needs (the
/// rows before `first` are computed exactly). Under a sliding window, the maximum over
/// evenly spaced rows (64 to 127 of them), each mean summed directly: no larger than the true
/// maximum, so the floor it gives stays a floor.
fn max_visible_mean_abs<T: Real>(p: &Problem<'_, T>, first: usize) -> f64 {
    let (d_v, v) = (p.d_v(), p.v.as_slice());
    if !p.mask.is_prefix() {
        let step = (p.n_q().saturating_sub(first) / 64).max(1);
        let mut best = 0.0f64;
        for i in (first..p.n_q()).step_by(step) {
            let keys = p.key_range(i);
            let m = keys.len();
            for c in 0..d_v {
                let sum: f64 = keys.clone().map(|j| v[j * d_v + c].to_f64().abs()).sum();
                if m > 0 {
                    best = best.max(sum / m as f64);
                }
            }
        }
        return best;
    }
    let mut sums = vec![0.0f64; d_v];
    let (mut seen, mut best) = (0usize, 0.0f64);
    for i in 0..p.n_q() {
        let e = p.key_end(i);
        while seen < e {
            for (s, x) in sums.iter_mut().zip(&v[seen * d_v..(seen + 1) * d_v]) {
                *s += x.to_f64().abs();
            }
            seen += 1;
        }
        if e > 0 && i >= first {
            best = sums.iter().fold(best, |b, s| b.max(s / e as f64));
        }
    }
    best
}

/// Chooses the polynomial for `p` under `cfg`, or refuses with the reason.
pub fn plan<T: Real>(p: &Problem<'_, T>, cfg: &PolyConfig) -> Result<Plan> {
    let (n_q, n_k, d, d_v) = (p.n_q(), p.n_k(), p.d(), p.d_v());
    // A NaN or negative floor is ignored (f64::max returns the other operand for NaN).
    let radius = rigorous_radius(p).max(cfg.radius_floor);
    if cfg.radius_floor.is_infinite() {
        return Err(Error::InvalidParameter {
            name: "radius_floor",
            value: cfg.radius_floor.to_string(),
            reason: "must be finite".into(),
        });
    }
    let entry_bound = entry_bound(p);
    let n = n_q.max(n_k);
    let sqrt_ln_n = (n as f64).ln().max(0.0).sqrt();
    let refuse = |reason: String| refusal(p, radius, reason);
    let v_max =
        p.v.as_slice()
            .iter()
            .map(|x| x.to_f64().abs())
            .fold(0.0, f64::max);
    let max_degree = cfg.max_degree.min(20);
    let poly = match cfg.accuracy {
        Accuracy::Degree(g) | Accuracy::DegreeUncertified(g) => {
            if g == 0 || g > max_degree {
                return Err(Error::InvalidParameter {
                    name: "degree",
                    value: g.to_string(),
                    reason: format!("must be in 1..={max_degree}"),
                });
            }
            ExpPoly::new(cfg.kind, g, radius)
        }
        Accuracy::Eps(eps) => {
            if !(eps.is_finite() && eps > 0.0) {
                return Err(Error::InvalidParameter {
                    name: "eps",
                    value: eps.to_string(),
                    reason: "must be finite and positive".into(),
                });
            }
            let fits = |poly: &ExpPoly| {
                let r = rank(d, poly.degree()).unwrap_or(usize::MAX);
                rho::output_a_priori(poly, r, n_k, v_max, T::UNIT_ROUNDOFF) <= eps
            };
            let mut chosen = None;
            for g in 1..=max_degree {
                if rank(d, g).is_none_or(|r| r > cfg.max_rank) {
                    break;
                }
                let poly = ExpPoly::new(cfg.kind, g, radius);
                if fits(&poly) {
                    chosen = Some(poly);
                    break;
                }
            }
            chosen.ok_or_else(|| {
                refuse(format!(
                    "no degree up to {max_degree} with rank <= {} certifies max|O~ - O| <= {eps:e} for d = {d}",
                    cfg.max_rank
                ))
            })?
        }
    };
    let g = poly.degree();
    // With eps_P >= 1, P may vanish or change sign on [-R, R]: it is no surrogate for
    // exp at all, and no bound exists (rho = 2 eps / (1 - eps) is infinite).
    let certifies = !poly.eps.is_nan() && poly.eps < 1.0;
    if !certifies && !matches!(cfg.accuracy, Accuracy::DegreeUncertified(_)) {
        return Err(refuse(format!(
            "degree {g} certifies no accuracy at this radius (eps_P = {:e} >= 1)",
            poly.eps
        )));
    }
    let r = rank(d, g).filter(|&r| r <= cfg.max_rank).ok_or_else(|| {
        refuse(format!(
            "degree {g} at d = {d} needs rank C(d+g, g) above the limit {}",
            cfg.max_rank
        ))
    })?;
    let monomials = Monomials::new(d, g, cfg.max_rank)?;
    let (poly_flops, exact_flops) = costs(n_q, n_k, (d, d_v, g), r, cfg.chunk, cfg.mask);
    if poly_flops > cfg.max_cost_ratio * exact_flops && poly_flops > cfg.cost_floor_flops {
        return Err(refuse(format!(
            "degree {g}, rank {r}: predicted cost {:.1}x the exact engine's (limit {}x)",
            poly_flops / exact_flops,
            cfg.max_cost_ratio
        )));
    }
    // Balance the factors: x = tau lambda q, y = k / lambda with lambda a power of two
    // near sqrt(max||k|| / (|tau| max||q||)), so both sides have norms near sqrt(R).
    let tau = p.tau.to_f64();
    let qn = crate::attention::problem::max_row_norm(p.q);
    let kn = crate::attention::problem::max_row_norm(p.k);
    let lambda = if qn > 0.0 && kn > 0.0 && tau != 0.0 {
        2f64.powi(
            (0.5 * (kn / (tau.abs() * qn)).log2())
                .round()
                .clamp(-500.0, 500.0) as i32,
        )
    } else {
        1.0
    };
    let regime = Regime {
        n,
        d,
        radius,
        entry_bound,
        sqrt_ln_n,
        degree: g,
        rank: r,
        eps_poly: poly.eps,
        poly_flops,
        exact_flops,
    };
    Ok(Plan {
        poly,
        monomials,
        regime,
        query_scale: tau * lambda,
        key_scale: 1.0 / lambda,
    })
}
