//! The polynomial method (docs/math.md §3): attention and its gradients in
//! O(n r d d_v) time through exp(S) ~ P(S) = U V^T, with a certified degree choice
//! and an a priori error bound on every output entry.
//!
//! - [`polynomial`]: P and its certified relative error eps_P (docs/math.md §3.2);
//! - [`features`]: the symmetric-monomial factors U, V (docs/math.md §3.3);
//! - [`lowrank`]: the masked contractions: chunked prefix states, and the range form of a sliding window (docs/math.md §3.4);
//! - the small GEMMs those are made of live with the number trait
//!   ([`crate::scalar::matmul`]: generic loop, or SIMD for floats);
//! - [`core`]: the algorithm, generic over the number type (docs/math.md §3.4, §3.5);
//! - [`plan`]: radius, degree, rank, cost and the regime report; refusals;
//! - [`bound`]: the a priori bounds on |O~ - O|, |dQ~ - dQ|, ... (docs/math.md §4).
//!
//! Precision: f32 and f64 inputs are both computed in f64 internally and rounded
//! once to the input dtype on output, so the rounding part of the bound is f64's.
//!
//! The engine refuses ([`Error::PolyRefused`]) what it
//! cannot certify at a sane rank and cost: scores past the bounded-entry regime need
//! degrees and ranks that grow without limit (AS23), and the engine says so instead of
//! returning a confident wrong answer.

pub mod bound;
pub mod core;
pub mod features;
pub mod lowrank;
pub mod plan;
pub mod polynomial;
pub mod rho;

pub use self::core::GradientKind;
pub use bound::Bounds;
pub use plan::{Accuracy, Plan, PolyConfig, Regime};
pub use polynomial::PolyKind;

use self::core::LowRankProblem;
use crate::attention::exact::reference::exact_reference;
use crate::attention::Problem;
use crate::error::{Error, Result};
use crate::scalar::Real;
use crate::tensor::{MatRef, Matrix};

/// The forward's results for one head.
#[derive(Clone, Debug)]
pub struct PolyForward<T> {
    /// O~, `n_q x d_v`.
    pub o: Matrix<T>,
    /// ln D~_i, the polynomial model's log-normaliser (approximates the exact lse);
    /// `-inf` for a fully masked row.
    pub lse: Vec<T>,
    /// The polynomial, rank and regime used.
    pub plan: Plan,
    /// Entrywise bound on |O~ - O| against exact attention, split into parts.
    pub bound: Bounds,
    /// O~ and D~ in f64 (what the backward continues from).
    o64: Vec<f64>,
    norm: Vec<f64>,
    /// P~ |V| (the weights of the O bound, reused by the gradient bounds).
    weights_v: Vec<f64>,
    /// The exact block: query rows `[0, rows)` (those of a masked problem that see at
    /// most [`PolyConfig::exact_prefix`] keys) and the keys `[0, keys)` they see, computed
    /// by the exact engine; `(0, 0)` when none.
    pub exact_block: (usize, usize),
    /// Key padding the forward applied (from a key-padding bias, [`key_padding`]); the
    /// backward applies the same.
    keys: Option<Vec<bool>>,
    /// The number of keys the forward saw (the backward must get the same).
    n_k: usize,
}

impl<T> PolyForward<T> {
    /// How many keys a key-padding bias hid from every query (0 without padding).
    pub fn hidden_keys(&self) -> usize {
        self.keys
            .as_ref()
            .map_or(0, |k| k.iter().filter(|&&seen| !seen).count())
    }
}

/// The keys a key-padding bias leaves visible: `Ok(None)` without a bias, `Ok(Some)`
/// when every column of the bias is all 0 (key seen) or all `-inf` (key hidden from
/// every query: PyTorch's `key_padding_mask`, a padded batch), and the typed refusal
/// for any other bias (the polynomial engine factorises `exp(tau q . k)`; a general
/// additive bias runs through the exact engine, and `auto` falls back to it).
pub fn key_padding<T: Real>(p: &Problem<'_, T>) -> Result<Option<Vec<bool>>> {
    let Some(b) = p.bias else {
        return Ok(None);
    };
    let first = b.row(0);
    let keys: Vec<bool> = first.iter().map(|x| x.to_f64() == 0.0).collect();
    let padding = (0..b.rows()).all(|i| {
        b.row(i).iter().zip(&keys).all(|(x, &seen)| {
            let x = x.to_f64();
            if seen {
                x == 0.0
            } else {
                x == f64::NEG_INFINITY
            }
        })
    });
    match (padding, keys.iter().all(|&seen| seen)) {
        (false, _) => Err(plan::refuse_bias(p)),
        // Nothing hidden (an all-True boolean mask): the unbiased problem.
        (true, true) => Ok(None),
        (true, false) => Ok(Some(keys)),
    }
}

/// Gradients of one head.
#[derive(Clone, Debug)]
pub struct PolyGradients<T> {
    /// dQ~, `n_q x d`.
    pub dq: Matrix<T>,
    /// dK~, `n_k x d`.
    pub dk: Matrix<T>,
    /// dV~, `n_k x d_v`.
    pub dv: Matrix<T>,
    /// Which gradient this is.
    pub kind: GradientKind,
    /// Entrywise bounds on the distance to the exact gradients dQ, dK, dV.
    pub bound_dq: Bounds,
    /// See `bound_dq`.
    pub bound_dk: Bounds,
    /// See `bound_dq`.
    pub bound_dv: Bounds,
}

fn to64<T: Real>(m: MatRef<'_, T>) -> Vec<f64> {
    m.as_slice().iter().map(|x| x.to_f64()).collect()
}

fn from64<T: Real>(rows: usize, cols: usize, v: &[f64]) -> Result<Matrix<T>> {
    Matrix::from_vec(rows, cols, v.iter().map(|&x| T::from_f64(x)).collect())
}

/// The exact block of a masked problem: the rows `[0, rows)` whose visible keys end at
/// or before `min(limit, n_k / 16)` (a prefix: visibility ends are non-decreasing) and
/// the keys `[0, keys)` they see; `(0, 0)` with no mask, a window, a zero limit or no key seen.
/// The `n_k / 16` cap keeps the block's exact cost below 1/256 of exact attention's
/// and leaves small problems to the polynomial engine.
fn exact_block<T: Real>(p: &Problem<'_, T>, limit: usize) -> (usize, usize) {
    let limit = limit.min(p.n_k() / 16);
    // A sliding window's first rows see a block of keys whose alignment as a
    // sub-problem would differ (bottom-right with a right extent): none computed exactly.
    if p.mask == crate::attention::Mask::None || !p.mask.is_prefix() || limit == 0 {
        return (0, 0);
    }
    let rows = (0..p.n_q()).take_while(|&i| p.key_end(i) <= limit).count();
    let keys = if rows == 0 { 0 } else { p.key_end(rows - 1) };
    if keys == 0 {
        (0, 0)
    } else {
        (rows, keys)
    }
}

/// The exact engine in f64, with its rounding bounds ([`exact_reference`]), on the
/// block `rows x keys` of `inputs` (same scale and mask: a prefix of rows with the
/// keys they see is a problem of the same mask kind).
fn exact_on_block<T: Real>(
    p: &Problem<'_, T>,
    inputs: &Inputs,
    (rows, keys): (usize, usize),
    d_o: Option<&[f64]>,
) -> Result<crate::attention::exact::reference::ExactReference> {
    let (d, d_v) = (p.d(), p.d_v());
    let q = Matrix::from_vec(rows, d, inputs.q[..rows * d].to_vec())?;
    let k = Matrix::from_vec(keys, d, inputs.k[..keys * d].to_vec())?;
    let v = Matrix::from_vec(keys, d_v, inputs.v[..keys * d_v].to_vec())?;
    let g = d_o
        .map(|g| Matrix::from_vec(rows, d_v, g[..rows * d_v].to_vec()))
        .transpose()?;
    let cfg = crate::attention::AttentionConfig {
        scale: Some(p.tau.to_f64()),
        mask: p.mask,
        softcap: None,
    };
    exact_reference(
        q.view(),
        k.view(),
        v.view(),
        g.as_ref().map(|g| g.view()),
        &cfg,
    )
}

/// Overwrites the first `rows` rows (`width` columns) of `y` and of `bound` with the
/// exact block's values and rounding bounds (plus the final rounding to the output
/// dtype, `u_out |y|`); the polynomial part of those rows is 0.
fn put_exact_rows(y: &mut [f64], bound: &mut Bounds, exact: (&[f64], &[f64]), u_out: f64) {
    let (values, bounds) = exact;
    let len = values.len();
    y[..len].copy_from_slice(values);
    for (i, (b, v)) in bounds.iter().zip(values).enumerate() {
        bound.total[i] = b + u_out * v.abs();
        bound.poly[i] = 0.0;
    }
}

/// Adds the exact block's contributions to the first rows of `y` (keys the exact rows
/// see: their dK, dV terms) and its rounding bounds to `bound`'s totals (plus the f64
/// addition's and the output's rounding, `(u + u_out) |y|`).
fn add_exact_rows(y: &mut [f64], bound: &mut Bounds, exact: (&[f64], &[f64]), u_out: f64) {
    let (values, bounds) = exact;
    for (i, (b, v)) in bounds.iter().zip(values).enumerate() {
        y[i] += v;
        bound.total[i] += b + (f64::EPSILON / 2.0 + u_out) * y[i].abs();
    }
}

/// The f64 inputs of the generic algorithm for a validated problem and plan.
struct Inputs {
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
}

impl Inputs {
    fn new<T: Real>(p: &Problem<'_, T>) -> Self {
        Self {
            q: to64(p.q),
            k: to64(p.k),
            v: to64(p.v),
        }
    }
    fn low_rank<'a, T: Real>(
        &'a self,
        p: &Problem<'_, T>,
        plan: &Plan,
        chunk: usize,
    ) -> LowRankProblem<'a, f64> {
        plan.low_rank_problem(
            (&self.q, &self.k, &self.v),
            (p.n_q(), p.n_k(), p.d(), p.d_v()),
            p.tau.to_f64(),
            p.mask,
            chunk,
            |x| x,
        )
    }
}

/// Polynomial-method forward for one head (`q`: `n_q x d`, `k`: `n_k x d`, `v`:
/// `n_k x d_v`): validates like the exact engine, plans (or refuses), computes O~ and
/// its bound.
pub fn forward<T: Real>(
    q: MatRef<'_, T>,
    k: MatRef<'_, T>,
    v: MatRef<'_, T>,
    cfg: &PolyConfig,
) -> Result<PolyForward<T>> {
    forward_with_bias(q, k, v, None, cfg)
}

/// [`forward`] with an additive score bias (`n_q x n_k`, as the exact engine's
/// `forward_with_bias`): a key-padding bias only ([`key_padding`]; every column all 0
/// or all `-inf`), any other bias is refused with a typed error. The backward reuses
/// the forward's padding.
pub fn forward_with_bias<T: Real>(
    q: MatRef<'_, T>,
    k: MatRef<'_, T>,
    v: MatRef<'_, T>,
    bias: Option<MatRef<'_, T>>,
    cfg: &PolyConfig,
) -> Result<PolyForward<T>> {
    forward_problem(
        &Problem::new(q, k, v, &cfg.attention())?.with_bias(bias)?,
        cfg,
    )
}

/// [`forward`] of a validated problem.
fn forward_problem<T: Real>(p: &Problem<'_, T>, cfg: &PolyConfig) -> Result<PolyForward<T>> {
    let p = *p;
    let keys = key_padding(&p)?;
    let inputs = Inputs::new(&p);
    // With key padding, no rows are computed exactly (the exact block runs unbiased).
    let block = if keys.is_some() {
        (0, 0)
    } else {
        exact_block(&p, cfg.exact_prefix)
    };
    // The degree decision ([`plan::candidates`]): each candidate is run in order and
    // the first whose reported bound meets eps is kept; the last one unconditionally.
    let mut plans = plan::candidates(&p, cfg, block.0)?;
    let last = plans.pop().ok_or_else(|| Error::InvalidParameter {
        name: "plan",
        value: "none".into(),
        reason: "the planner returned no candidate".into(),
    })?;
    for pl in plans {
        let run = run_forward::<T>(&p, &inputs, pl, (cfg.chunk, &keys), block)?;
        if plan::meets_target(cfg, run.bound.max_total()) {
            return Ok(run);
        }
    }
    run_forward(&p, &inputs, last, (cfg.chunk, &keys), block)
}

/// The forward at a fixed plan, with its bound.
fn run_forward<T: Real>(
    p: &Problem<'_, T>,
    inputs: &Inputs,
    plan: Plan,
    (chunk, keys): (usize, &Option<Vec<bool>>),
    block: (usize, usize),
) -> Result<PolyForward<T>> {
    // An uncertified plan reports +inf everywhere (no exact rows mixed in).
    let block = if bound::certifies(&plan) {
        block
    } else {
        (0, 0)
    };
    let mut lr = inputs.low_rank(p, &plan, chunk);
    lr.keys = keys.as_deref();
    // One pass for O~ and the bound's weights W = P~ |V|: payload [V, |V|] per key.
    let dv = p.d_v();
    let mut payload = Vec::with_capacity(inputs.v.len() * 2);
    for row in inputs.v.chunks_exact(dv) {
        payload.extend_from_slice(row);
        payload.extend(row.iter().map(|x| x.abs()));
    }
    let both = core::apply(&lr, &plan.monomials, &payload, 2 * dv);
    let mut f = core::LowRankForward {
        o: Vec::with_capacity(p.n_q() * dv),
        norm: both.norm,
    };
    let mut weights_v = Vec::with_capacity(p.n_q() * dv);
    for row in both.o.chunks_exact(2 * dv) {
        f.o.extend_from_slice(&row[..dv]);
        weights_v.extend_from_slice(&row[dv..]);
    }
    // Visible keys before each key index (padding counted out), for "row i sees a key".
    let seen_before: Vec<usize> = std::iter::once(0)
        .chain((0..p.n_k()).scan(0, |c, j| {
            *c += usize::from(keys.as_ref().is_none_or(|k| k[j]));
            Some(*c)
        }))
        .collect();
    for (i, &den) in f.norm.iter().enumerate() {
        let r = p.key_range(i);
        let sees_a_key = seen_before[r.end] > seen_before[r.start];
        if sees_a_key && !(den > 0.0 && den.is_finite()) {
            return Err(Error::PolyRefused {
                reason: format!("the normaliser of row {i} is {den:e}, not positive: P is not a valid exp surrogate here"),
                radius: plan.regime.radius,
                entry_bound: plan.regime.entry_bound,
                sqrt_ln_n: plan.regime.sqrt_ln_n,
            });
        }
    }
    let mut bound = bound::output(&plan, p.n_k(), &weights_v, &f.o, T::UNIT_ROUNDOFF);
    let mut lse: Vec<T> = f
        .norm
        .iter()
        .map(|&x| T::from_f64(if x > 0.0 { x.ln() } else { f64::NEG_INFINITY }))
        .collect();
    if block.0 > 0 {
        // The exact block replaces the polynomial rows (its certified bound is the
        // exact engine's rounding alone). The backward zeroes dO on these rows for the
        // polynomial passes, so their internal normalisers stay as computed.
        let ex = exact_on_block(p, inputs, block, None)?;
        put_exact_rows(&mut f.o, &mut bound, (&ex.o, &ex.bound_o), T::UNIT_ROUNDOFF);
        for (l, x) in lse.iter_mut().zip(&ex.lse) {
            *l = T::from_f64(*x);
        }
    }
    Ok(PolyForward {
        o: from64(p.n_q(), p.d_v(), &f.o)?,
        lse,
        plan,
        bound,
        o64: f.o,
        norm: f.norm,
        weights_v,
        exact_block: block,
        keys: keys.clone(),
        n_k: p.n_k(),
    })
}

/// Polynomial-method backward for one head: the gradients of `kind` given `d_o`
/// (`n_q x d_v`), with entrywise bounds against the exact gradients.
pub fn backward<T: Real>(
    q: MatRef<'_, T>,
    k: MatRef<'_, T>,
    v: MatRef<'_, T>,
    fwd: &PolyForward<T>,
    d_o: MatRef<'_, T>,
    kind: GradientKind,
    cfg: &PolyConfig,
) -> Result<PolyGradients<T>> {
    let p = Problem::new(q, k, v, &cfg.attention())?;
    p.check_backward_inputs(fwd.o.view(), &fwd.lse, d_o)?;
    backward_problem(&p, fwd, d_o, kind, cfg)
}

/// [`backward`] of a validated problem whose backward inputs were checked
/// ([`Problem::check_backward_inputs`]).
fn backward_problem<T: Real>(
    p: &Problem<'_, T>,
    fwd: &PolyForward<T>,
    d_o: MatRef<'_, T>,
    kind: GradientKind,
    cfg: &PolyConfig,
) -> Result<PolyGradients<T>> {
    let p = *p;
    // The forward must be of these inputs' sizes (its normalisers and padding are
    // indexed by them).
    if (fwd.norm.len(), fwd.o.cols(), fwd.n_k) != (p.n_q(), p.d_v(), p.n_k()) {
        return Err(Error::ShapeMismatch {
            what: "the forward's results against q, k, v (n_q, d_v, n_k)".into(),
            expected: format!("({}, {}, {})", p.n_q(), p.d_v(), p.n_k()),
            got: format!("({}, {}, {})", fwd.norm.len(), fwd.o.cols(), fwd.n_k),
        });
    }
    let inputs = Inputs::new(&p);
    let plan = &fwd.plan;
    let mut lr = inputs.low_rank(&p, plan, cfg.chunk);
    lr.keys = fwd.keys.as_deref();
    let lr_fwd = core::LowRankForward {
        o: fwd.o64.clone(),
        norm: fwd.norm.clone(),
    };
    // The exact block's rows take no part in the polynomial passes (dO = 0 there: their
    // dS~ vanishes, so they add nothing to dK~, dV~ and get dQ~ = 0); the exact engine
    // supplies their gradients below.
    let (rows, keys) = fwd.exact_block;
    let g_full = to64(d_o);
    let mut g_o = g_full.clone();
    g_o[..rows * p.d_v()].fill(0.0);
    let ctx = bound::GradContext {
        plan,
        kind,
        inputs: (&inputs.q, &inputs.k, &inputs.v),
        o: &fwd.o64,
        d_o: &g_o,
        weights_v: &fwd.weights_v,
        bound_o: &fwd.bound.total,
        u_out: T::UNIT_ROUNDOFF,
    };
    // The bound's weights ride in the gradient passes as side products (one set of
    // passes for gradients and bounds; docs/math.md §3.5, §4).
    let weights =
        bound::GradWeights::new(&lr, &fwd.norm, &ctx, bound::gradient_rounding(plan, &lr));
    let side = weights
        .as_ref()
        .map_or_else(core::SideProducts::none, |w| w.side());
    let (mut g, w_k, w_t) = core::backward_with(&lr, &plan.monomials, &lr_fwd, &g_o, kind, &side);
    let mut b = match &weights {
        Some(w) => w.finish(&lr, &ctx, (&w_k, &w_t), (&g.dq, &g.dk, &g.dv)),
        None => bound::infinite_gradients(&lr),
    };
    if rows > 0 {
        let ex = exact_on_block(&p, &inputs, (rows, keys), Some(&g_full))?;
        let eg = ex.grads.as_ref().ok_or_else(|| Error::InvalidParameter {
            name: "exact block",
            value: "no gradients".into(),
            reason: "the exact reference was given dO".into(),
        })?;
        let u = T::UNIT_ROUNDOFF;
        put_exact_rows(&mut g.dq, &mut b.0, (&eg.dq, &eg.bound_dq), u);
        add_exact_rows(&mut g.dk, &mut b.1, (&eg.dk, &eg.bound_dk), u);
        add_exact_rows(&mut g.dv, &mut b.2, (&eg.dv, &eg.bound_dv), u);
    }
    Ok(PolyGradients {
        dq: from64(p.n_q(), p.d(), &g.dq)?,
        dk: from64(p.n_k(), p.d(), &g.dk)?,
        dv: from64(p.n_k(), p.d_v(), &g.dv)?,
        kind,
        bound_dq: b.0,
        bound_dk: b.1,
        bound_dv: b.2,
    })
}

/// [`forward`] for each head of `[heads, n, d]` stacks, heads in parallel; each head
/// gets its own plan (its own radius, degree and bound). `k` and `v` may have fewer
/// heads than `q` (grouped-query attention, [`crate::attention::kv_group`]).
pub fn forward_multihead<T: Real>(
    q: &crate::tensor::Tensor3<T>,
    k: &crate::tensor::Tensor3<T>,
    v: &crate::tensor::Tensor3<T>,
    cfg: &PolyConfig,
) -> Result<Vec<PolyForward<T>>> {
    forward_multihead_with_bias(q, k, v, None, cfg)
}

/// [`forward_multihead`] with an additive bias `[1 or heads, n_q, n_k]` (as the exact
/// engine's): key padding only, per head ([`forward_with_bias`]).
pub fn forward_multihead_with_bias<T: Real>(
    q: &crate::tensor::Tensor3<T>,
    k: &crate::tensor::Tensor3<T>,
    v: &crate::tensor::Tensor3<T>,
    bias: Option<&crate::tensor::Tensor3<T>>,
    cfg: &PolyConfig,
) -> Result<Vec<PolyForward<T>>> {
    use rayon::prelude::*;
    let (probs, _) = crate::attention::exact::head_problems(q, k, v, bias, &cfg.attention())?;
    probs
        .par_iter()
        .map(|p| forward_problem(p, cfg))
        .collect::<Vec<_>>()
        // Sequentially: the error reported is the first refusing head's in head order,
        // whatever the scheduling (a parallel collect keeps whichever failed first).
        .into_iter()
        .collect()
}

/// [`backward`] for each query head, given the heads' forwards. With grouped-query
/// heads each result's `dk`, `dv` (and their bounds) are that query head's share:
/// a key/value head's gradient is the sum over its group
/// ([`crate::attention::sum_groups`]; the bounds add).
pub fn backward_multihead<T: Real>(
    q: &crate::tensor::Tensor3<T>,
    k: &crate::tensor::Tensor3<T>,
    v: &crate::tensor::Tensor3<T>,
    fwd: &[PolyForward<T>],
    d_o: &crate::tensor::Tensor3<T>,
    kind: GradientKind,
    cfg: &PolyConfig,
) -> Result<Vec<PolyGradients<T>>> {
    use rayon::prelude::*;
    crate::attention::same_heads(
        q.heads(),
        &[("do", d_o.heads()), ("forward results", fwd.len())],
    )?;
    crate::attention::same_heads(k.heads(), &[("v", v.heads())])?;
    let g = crate::attention::kv_group(q.heads(), k.heads())?;
    crate::attention::check_stacks(&[("q", q), ("k", k), ("v", v), ("do", d_o)])?;
    let attn = cfg.attention();
    (0..q.heads())
        .into_par_iter()
        .map(|h| {
            let p = Problem::from_finite(q.head(h), k.head(h / g), v.head(h / g), &attn)?;
            p.check_backward_finite_do(fwd[h].o.view(), &fwd[h].lse, d_o.head(h))?;
            backward_problem(&p, &fwd[h], d_o.head(h), kind, cfg)
        })
        .collect::<Vec<_>>()
        .into_iter()
        .collect()
}
