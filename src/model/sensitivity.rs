//! How per-layer attention errors grow through the model: MATH.md 4's propagated bound
//! `err_0 <= sum_l e_l prod_{k<l} kappa_k` (ML24 Def 3.3 and its multi-layer theorem,
//! whose proof bounds `kappa_l` by poly(n)), computed here from the actual weights and
//! activations instead.
//!
//! Notation (layers `l = 1..m`, `F_l` the block map `T_{l-1} -> T_l`, `J_l` its Jacobian
//! at the exact model's activations, `g_l = dL/dT_l` the exact gradients, norms
//! Frobenius for matrices of activations and 2-norms for the linear maps on them):
//!
//! ```text
//! forward error   D_0 = 0,   D_l <= kappa_l D_{l-1} + mu_l a_l
//! top             G_m <= D_m / n                       (MSE: dL/dT_m = (T_m - Y) / n)
//! backward error  G_{l-1} <= kappa_l G_l + eta_l D_{l-1} + nu_l zeta_l a_l + b_l,
//!                 dX error = G_0
//! ```
//! - `kappa_l = ||J_l||_2` (= `||J_l^T||_2`, the backward map's norm);
//! - `mu_l` the norm of the MLP half's Jacobian `I + MLP' LN2'` at `Z_l`, through which
//!   the attention output error enters `T_l`;
//! - `a_l = ||W_O||_F sqrt(sum_heads n d_h bound_O^2)`, the attention output error
//!   (bound_O the polynomial engine's certified entrywise bound, MATH.md 2.4/2.6);
//! - `b_l = ||LN1'||_2 sum_{X in Q,K,V} ||W_X||_F sqrt(sum_heads n d_h bound_dX^2)`, the
//!   error the engine's gradient adds at `dT_{l-1}` (MATH.md 2.5's bounds);
//! - `eta_l = ||Hess_T <g_l, F_l(T)>||_2`, how much the backward map applied to the
//!   exact `g_l` moves when its input activations move (the forward error `D_{l-1}`
//!   changes the point the backward is evaluated at);
//! - `zeta_l = ||Hess_Z <g_l, Z + MLP(LN2(Z))>||_2` and `nu_l` the norm of the attention
//!   half's backward map `dZ -> dT`: the layer's own attention output error `a_l` moves
//!   `Z` inside the block, so the MLP half's backward (zeta_l) and then the attention
//!   half's (nu_l) carry it to `dT_{l-1}`.
//!
//! Unrolled, `G_0 = sum_l e_l prod_{k<l} kappa_k + G_m prod_k kappa_k` with
//! `e_l = eta_l D_{l-1} + nu_l zeta_l a_l + b_l`: MATH.md 4's form plus the
//! loss-gradient term.
//!
//! What this is and is not: the recurrences are first order in the errors (products of
//! two errors are dropped; they are below 1e-6 of the kept terms at the errors the
//! engine certifies), and the norms `kappa_l, mu_l, eta_l, zeta_l, nu_l` are estimated by power
//! iteration with central differences (h = 1e-3 ||T||_F), which converges to the norm
//! from below. So the result is a computed estimate of the bound, not a certificate;
//! the depth sweep checks it against the measured error at every depth. Defined for the
//! MSE loss (the cross-entropy head would add LNf's curvature: not implemented, a typed
//! error says so).

use super::block;
use super::config::LossKind;
use super::engine::{EngineChoice, LayerReport};
use super::layer_norm::LnCache;
use super::params::LayerParams;
use super::stack::{Batch, Model, Source};
use crate::error::{Error, Result};
use crate::rng::SplitMix64;
use crate::tensor::Matrix;
use serde::Serialize;

/// One layer's terms of the propagated bound (all in Frobenius / operator 2-norms).
#[derive(Clone, Debug, Serialize)]
pub struct LayerTerms {
    /// `kappa_l`: the norm of the block's Jacobian (= of its backward map).
    pub kappa: f64,
    /// `mu_l`: the norm of the MLP half's Jacobian.
    pub mu: f64,
    /// `eta_l`: the norm of the Hessian of `<g_l, F_l(T)>` at `T_{l-1}`.
    pub eta: f64,
    /// `zeta_l`: the norm of the Hessian of `<g_l, MLP half(Z)>` at `Z_l`.
    pub zeta: f64,
    /// `nu_l`: the norm of the attention half's backward map `dZ -> dT`.
    pub nu: f64,
    /// `a_l`: the bound on the attention output error added to `Z_l`.
    pub forward_error: f64,
    /// `b_l`: the bound on the error the engine's gradient adds to `dT_{l-1}`.
    pub backward_error: f64,
    /// `D_{l-1}`: the propagated forward error at this layer's input.
    pub input_error: f64,
    /// `e_l = eta_l D_{l-1} + nu_l zeta_l a_l + b_l`: the layer's own contribution to
    /// the gradient error.
    pub own_error: f64,
}

/// The propagated bound on `||dX~ - dX||_F` and its terms.
#[derive(Clone, Debug, Serialize)]
pub struct PropagatedBound {
    /// Per layer, first layer first.
    pub layers: Vec<LayerTerms>,
    /// `D_m`: the propagated bound on `||T~_m - T_m||_F`.
    pub output_error: f64,
    /// `G_m`: the bound on the loss gradient's error at the top.
    pub top_error: f64,
    /// `G_0`: the bound on `||dX~ - dX||_F`.
    pub dx_bound: f64,
    /// Power iterations per norm.
    pub iterations: usize,
}

fn frob(x: &[f64]) -> f64 {
    x.iter().map(|v| v * v).sum::<f64>().sqrt()
}

fn axpy_new(t: &Matrix<f64>, h: f64, v: &[f64]) -> Result<Matrix<f64>> {
    let data = t.as_slice().iter().zip(v).map(|(a, b)| a + h * b).collect();
    Matrix::from_vec(t.rows(), t.cols(), data)
}

fn central_difference(
    t: &Matrix<f64>,
    v: &[f64],
    f: &mut dyn FnMut(&Matrix<f64>) -> Result<Matrix<f64>>,
) -> Result<Vec<f64>> {
    let h = 1e-3 * frob(t.as_slice()).max(1.0);
    let plus = f(&axpy_new(t, h, v)?)?;
    let minus = f(&axpy_new(t, -h, v)?)?;
    Ok(plus
        .as_slice()
        .iter()
        .zip(minus.as_slice())
        .map(|(a, b)| (a - b) / (2.0 * h))
        .collect())
}

/// The largest eigenvalue magnitude of a symmetric operator `op` on vectors of length
/// `dim`, by `iters` power iterations from a seeded random start (`|A v|` for the last
/// unit `v`: a lower estimate converging to the norm).
fn power_norm(
    dim: usize,
    iters: usize,
    seed: u64,
    op: &mut dyn FnMut(&[f64]) -> Result<Vec<f64>>,
) -> Result<f64> {
    let mut v = SplitMix64::new(seed).normal_vec(dim, 1.0);
    let mut est = 0.0;
    for _ in 0..iters {
        let nv = frob(&v);
        if nv == 0.0 {
            return Ok(0.0);
        }
        v.iter_mut().for_each(|x| *x /= nv);
        let w = op(&v)?;
        est = frob(&w);
        v = w;
    }
    Ok(est)
}

fn head_frob(n: usize, d_h: usize, bounds: impl Iterator<Item = f64>) -> f64 {
    bounds.map(|b| (n * d_h) as f64 * b * b).sum::<f64>().sqrt()
}

fn ln_norm(p: Option<&super::params::LayerNormParams<f64>>, c: Option<&LnCache<f64>>) -> f64 {
    match (p, c) {
        (Some(p), Some(c)) => p.gain.iter().fold(0.0f64, |m, g| m.max(g.abs())) * c.max_rstd(),
        _ => 1.0,
    }
}

/// The terms of one layer at input `t` (exact activations) with exact top gradient `g`
/// and the polynomial run's report `rep`.
fn layer_terms(
    model: &Model<f64>,
    p: &LayerParams<f64>,
    t: &Matrix<f64>,
    g: &Matrix<f64>,
    rep: &LayerReport,
    iters: usize,
    seed: u64,
) -> Result<LayerTerms> {
    let cfg = model.config();
    let exact = EngineChoice::Exact;
    let dim = t.rows() * t.cols();
    let (_, cache, _) = block::forward(cfg, p, &exact, t)?;
    let mut dummy = LayerReport {
        requested: "exact",
        engine: "exact",
        reason: String::new(),
        heads: vec![],
    };
    let shape = |v: &[f64]| Matrix::from_vec(t.rows(), t.cols(), v.to_vec());
    // kappa: ||J||_2 = sqrt(||J^T J||_2).
    let mut jtj = |v: &[f64]| -> Result<Vec<f64>> {
        let jv = central_difference(t, v, &mut |x| Ok(block::forward(cfg, p, &exact, x)?.0))?;
        let (jt, _) = block::backward(cfg, p, &cache, &shape(&jv)?, &mut dummy)?;
        Ok(jt.as_slice().to_vec())
    };
    let kappa = power_norm(dim, iters, seed, &mut jtj)?.sqrt();
    // mu: the MLP half at Z.
    let a = block::attention_half(cfg, p, &exact, t)?;
    let (z, ln1) = (&a.z, a.ln1());
    let half = block::mlp_half(cfg, p, z)?;
    let mut mtm = |v: &[f64]| -> Result<Vec<f64>> {
        let jv = central_difference(z, v, &mut |x| Ok(block::mlp_half(cfg, p, x)?.out))?;
        let (jt, _) = block::mlp_half_backward(cfg, p, &half, &shape(&jv)?)?;
        Ok(jt.as_slice().to_vec())
    };
    let mu = power_norm(dim, iters, seed ^ 1, &mut mtm)?.sqrt();
    // zeta: the Hessian of <g, MLP half(Z)>, whose gradient is the MLP half's backward.
    let mut hess_z = |v: &[f64]| -> Result<Vec<f64>> {
        central_difference(z, v, &mut |x| {
            let h = block::mlp_half(cfg, p, x)?;
            Ok(block::mlp_half_backward(cfg, p, &h, g)?.0)
        })
    };
    let zeta = power_norm(dim, iters, seed ^ 3, &mut hess_z)?;
    // nu: the attention half's backward map dZ -> dT, sqrt(||A^T A||) with A v by
    // central differences of Z(T).
    let mut ata = |v: &[f64]| -> Result<Vec<f64>> {
        let av = central_difference(t, v, &mut |x| {
            Ok(block::attention_half(cfg, p, &exact, x)?.z)
        })?;
        let mut r = dummy.clone();
        Ok(
            block::attention_half_backward(cfg, p, &a, &shape(&av)?, &mut r)?
                .as_slice()
                .to_vec(),
        )
    };
    let nu = power_norm(dim, iters, seed ^ 4, &mut ata)?.sqrt();
    // eta: the Hessian of <g, F(T)>, whose gradient is the block backward of g at T.
    let mut hess = |v: &[f64]| -> Result<Vec<f64>> {
        central_difference(t, v, &mut |x| {
            let (_, c, mut r) = block::forward(cfg, p, &exact, x)?;
            Ok(block::backward(cfg, p, &c, g, &mut r)?.0)
        })
    };
    let eta = power_norm(dim, iters, seed ^ 2, &mut hess)?;
    // a_l and b_l from the engine's certified per-head bounds.
    let (n, d_h) = (t.rows(), cfg.d_model / cfg.n_heads);
    let hf = |f: &dyn Fn(&super::engine::HeadReport) -> Option<f64>| -> Result<f64> {
        rep.heads
            .iter()
            .map(|h| {
                f(h).ok_or_else(|| Error::InvalidParameter {
                    name: "reports",
                    value: "a head without gradient bounds".into(),
                    reason: "pass the reports of a completed backward".into(),
                })
            })
            .collect::<Result<Vec<f64>>>()
            .map(|b| head_frob(n, d_h, b.into_iter()))
    };
    let w = |m: &Matrix<f64>| frob(m.as_slice());
    let forward_error = w(&p.wo) * hf(&|h| Some(h.bound_o))?;
    let backward_error = ln_norm(p.ln1.as_ref(), ln1)
        * (w(&p.wq) * hf(&|h| h.bound_dq)?
            + w(&p.wk) * hf(&|h| h.bound_dk)?
            + w(&p.wv) * hf(&|h| h.bound_dv)?);
    Ok(LayerTerms {
        kappa,
        mu,
        eta,
        zeta,
        nu,
        forward_error,
        backward_error,
        input_error: 0.0,
        own_error: 0.0,
    })
}

/// MATH.md 4's propagated bound on `||dX~ - dX||_F` for a run whose per-layer engine
/// reports (with their certified attention bounds; exact layers contribute none) are
/// `reports`, evaluated at the exact model's activations on `batch` (see the module
/// documentation for the terms and what kind of bound this is). `iters` power
/// iterations per norm (20 is plenty for the sweep's sizes).
pub fn propagated_dx_bound(
    model: &Model<f64>,
    batch: &Batch<f64>,
    reports: &[LayerReport],
    iters: usize,
) -> Result<PropagatedBound> {
    let cfg = model.config();
    if cfg.loss != LossKind::Mse {
        return Err(Error::InvalidParameter {
            name: "loss",
            value: cfg.loss.name().into(),
            reason: "the propagated bound is implemented for the MSE loss only".into(),
        });
    }
    if reports.len() != cfg.n_layers {
        return Err(Error::InvalidParameter {
            name: "reports",
            value: format!("{} entries", reports.len()),
            reason: format!("one per layer ({}) is needed", cfg.n_layers),
        });
    }
    let Source::Embeddings(x) = &batch.source else {
        return Err(Error::InvalidParameter {
            name: "batch",
            value: "token input".into(),
            reason: "the propagated bound is defined for a feature input X".into(),
        });
    };
    let fwd = model.forward(batch, &[EngineChoice::Exact])?;
    let (_, g) = model.backward_trace(&fwd)?;
    let mut t = x.clone();
    let mut layers = Vec::with_capacity(cfg.n_layers);
    for (l, (p, rep)) in model.params().layers.iter().zip(reports).enumerate() {
        // An exact layer (no heads in its report) adds no attention error (a_l = b_l =
        // 0); its norms still propagate the errors of the others.
        let terms = layer_terms(model, p, &t, &g[l + 1], rep, iters, 0x6b61 + l as u64)?;
        layers.push(terms);
        t = block::forward(cfg, p, &EngineChoice::Exact, &t)?.0;
    }
    let mut d = 0.0;
    for terms in &mut layers {
        terms.input_error = d;
        terms.own_error =
            terms.eta * d + terms.nu * terms.zeta * terms.forward_error + terms.backward_error;
        d = terms.kappa * d + terms.mu * terms.forward_error;
    }
    let top_error = d / x.rows() as f64;
    let dx_bound = layers
        .iter()
        .rev()
        .fold(top_error, |acc, terms| terms.kappa * acc + terms.own_error);
    Ok(PropagatedBound {
        layers,
        output_error: d,
        top_error,
        dx_bound,
        iterations: iters,
    })
}
