//! How per-layer attention errors grow through the model: docs/math.md §7.3's propagated
//! bound `err_0 <= sum_l e_l prod_{k<l} kappa_k` (ML24 Def 3.3 and its multi-layer
//! theorem, whose proof bounds `kappa_l` by poly(n)), computed here from the actual
//! weights and activations instead.
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
//!   (bound_O the polynomial engine's certified entrywise bound, docs/math.md §4);
//! - `b_l = ||LN1'||_2 sum_{X in Q,K,V} ||W_X||_F sqrt(sum_heads n d_h bound_dX^2)`, the
//!   error the engine's gradient adds at `dT_{l-1}` (docs/math.md §4.2's bounds);
//! - `eta_l = ||Hess_T <g_l, F_l(T)>||_2`, how much the backward map applied to the
//!   exact `g_l` moves when its input activations move (the forward error `D_{l-1}`
//!   changes the point the backward is evaluated at);
//! - `zeta_l = ||Hess_Z <g_l, Z + MLP(LN2(Z))>||_2` and `nu_l` the norm of the attention
//!   half's backward map `dZ -> dT`: the layer's own attention output error `a_l` moves
//!   `Z` inside the block, so the MLP half's backward (zeta_l) and then the attention
//!   half's (nu_l) carry it to `dT_{l-1}`.
//!
//! Unrolled, `G_0 = sum_l e_l prod_{k<l} kappa_k + G_m prod_k kappa_k` with
//! `e_l = eta_l D_{l-1} + nu_l zeta_l a_l + b_l`: docs/math.md §7.3's form plus the
//! loss-gradient term.
//!
//! The weight gradients `dtheta_l = Phi_l(T_{l-1}, g_l)` (`Phi_l = d<g, F_l>/dtheta`,
//! linear in `g`) take the same three kinds of error, to first order:
//!
//! ```text
//! W_l <= beta_l G_l + chi_l D_{l-1} + w_l
//! w_l  = xi_l a_l + beta'_l zeta_l a_l + ||dO_cat||_F ||dZ_l||_F
//!        + ||x1||_F (||dQ||_F + ||dK||_F + ||dV||_F) + c_l ||dx1||_F
//! ```
//! - `beta_l = ||dF_l/dtheta||_2`, the map `g -> dtheta` (the output gradient's error);
//! - `chi_l = ||d^2 <g_l, F_l> / dT dtheta||_2` (the input activations moved);
//! - `xi_l = ||d^2 <g_l, MLP half> / dZ dtheta||_2` and `beta'_l = ||dZ/dtheta||_2` of
//!   the attention half: the layer's own output error `a_l` moves the MLP half's
//!   gradients directly and, through `dZ` (by `zeta_l a_l`), the attention half's;
//! - the engine's own gradient errors at exact inputs: `dW_O = O_cat^T dZ` takes the
//!   heads' output errors (`||dO_cat||_F` from the certified per-head bounds);
//!   `dW_Q = x1^T dQ` (K, V alike) the engine's dQ, dK, dV errors; LN1's gain and
//!   bias gradients `(sum_i dx1_ij xhat_ij, sum_i dx1_ij)` the error
//!   `||dx1||_F <= sum_X ||W_X||_F ||dX||_F` through `c_l = sqrt(max_j
//!   ||xhat_{:,j}||^2 + n)` (Cauchy-Schwarz per column; 0 without layer norm).
//!
//! `W_l` bounds the Frobenius norm of the error of all the layer's parameter gradients
//! together (so of each tensor's too).
//!
//! What this is and is not: the recurrences are first order in the errors (products of
//! two errors are dropped; they are below 1e-6 of the kept terms at the errors the
//! engine certifies), and the norms `kappa_l, mu_l, eta_l, zeta_l, nu_l, beta_l, chi_l,
//! xi_l, beta'_l` are estimated by power
//! iteration with central differences (h = 1e-3 ||T||_F), which converges to the norm
//! from below. So the result is a computed estimate of the bound, not a certificate;
//! the depth sweep checks it against the measured error at every depth. Defined for the
//! MSE loss (the cross-entropy head would add LNf's curvature: not implemented, a typed
//! error says so).

use super::block;
use super::config::LossKind;
use super::engine::{EngineChoice, LayerReport};
use super::layer_norm::{self, LnCache};
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
    /// `beta_l`: the norm of the block's parameter Jacobian (the map `g -> dtheta`).
    pub beta: f64,
    /// `chi_l`: the norm of the mixed second derivative of `<g_l, F_l>` in `T`, `theta`.
    pub chi: f64,
    /// `xi_l`: the norm of the mixed second derivative of `<g_l, MLP half>` in `Z`,
    /// `theta`.
    pub xi: f64,
    /// `beta'_l`: the norm of the attention half's parameter Jacobian `dZ/dtheta`.
    pub beta_attention: f64,
    /// `a_l`: the bound on the attention output error added to `Z_l`.
    pub forward_error: f64,
    /// `b_l`: the bound on the error the engine's gradient adds to `dT_{l-1}`.
    pub backward_error: f64,
    /// `D_{l-1}`: the propagated forward error at this layer's input.
    pub input_error: f64,
    /// `e_l = eta_l D_{l-1} + nu_l zeta_l a_l + b_l`: the layer's own contribution to
    /// the gradient error.
    pub own_error: f64,
    /// `w_l`: the layer's own (engine-local) contribution to its weight gradients' error.
    pub weight_own_error: f64,
    /// `G_l`: the propagated bound on the error of `dL/dT_l`, the gradient arriving at
    /// the layer's output.
    pub output_grad_error: f64,
    /// `W_l = beta_l G_l + chi_l D_{l-1} + w_l`: the bound on the Frobenius error of the
    /// layer's parameter gradients (all its tensors together).
    pub weight_bound: f64,
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

/// `Df(x)[v]` by a central difference with step `h = 1e-3 max(||x||, 1)` along
/// `v / ||v||`, scaled back by `||v||` (the derivative is linear in `v`).
fn central_difference(
    x: &[f64],
    v: &[f64],
    f: &mut dyn FnMut(&[f64]) -> Result<Vec<f64>>,
) -> Result<Vec<f64>> {
    let nv = frob(v);
    if nv == 0.0 {
        let len = f(x)?.len();
        return Ok(vec![0.0; len]);
    }
    let h = 1e-3 * frob(x).max(1.0);
    let step = |s: f64| -> Vec<f64> { x.iter().zip(v).map(|(a, b)| a + s * b / nv).collect() };
    let plus = f(&step(h))?;
    let minus = f(&step(-h))?;
    Ok(plus
        .iter()
        .zip(&minus)
        .map(|(a, b)| (a - b) / (2.0 * h) * nv)
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
    let (dim, theta) = (t.rows() * t.cols(), p.to_flat());
    let (_, cache, _) = block::forward(cfg, p, &exact, t)?;
    let dummy = LayerReport {
        requested: "exact",
        engine: "exact",
        reason: String::new(),
        heads: vec![],
    };
    let shape = |v: &[f64]| Matrix::from_vec(t.rows(), t.cols(), v.to_vec());
    let at = |x: &[f64]| {
        p.with_flat(x).ok_or_else(|| Error::InvalidParameter {
            name: "theta",
            value: format!("{} values", x.len()),
            reason: format!("the layer has {}", theta.len()),
        })
    };
    let (ts, flat) = (t.as_slice(), |m: Matrix<f64>| m.as_slice().to_vec());
    // kappa: ||J||_2 = sqrt(||J^T J||_2).
    let mut jtj = |v: &[f64]| -> Result<Vec<f64>> {
        let jv = central_difference(ts, v, &mut |x| {
            Ok(flat(block::forward(cfg, p, &exact, &shape(x)?)?.0))
        })?;
        let (jt, _) = block::backward(cfg, p, &cache, &shape(&jv)?, &mut dummy.clone())?;
        Ok(flat(jt))
    };
    let kappa = power_norm(dim, iters, seed, &mut jtj)?.sqrt();
    // mu: the MLP half at Z.
    let a = block::attention_half(cfg, p, &exact, t)?;
    let (z, ln1) = (&a.z, a.ln1());
    let zs = z.as_slice();
    let half = block::mlp_half(cfg, p, z)?;
    let mut mtm = |v: &[f64]| -> Result<Vec<f64>> {
        let jv = central_difference(zs, v, &mut |x| {
            Ok(flat(block::mlp_half(cfg, p, &shape(x)?)?.out))
        })?;
        let (jt, _) = block::mlp_half_backward(cfg, p, &half, &shape(&jv)?)?;
        Ok(flat(jt))
    };
    let mu = power_norm(dim, iters, seed ^ 1, &mut mtm)?.sqrt();
    // zeta: the Hessian of <g, MLP half(Z)>, whose gradient is the MLP half's backward.
    let mut hess_z = |v: &[f64]| -> Result<Vec<f64>> {
        central_difference(zs, v, &mut |x| {
            let h = block::mlp_half(cfg, p, &shape(x)?)?;
            Ok(flat(block::mlp_half_backward(cfg, p, &h, g)?.0))
        })
    };
    let zeta = power_norm(dim, iters, seed ^ 3, &mut hess_z)?;
    // nu: the attention half's backward map dZ -> dT, sqrt(||A^T A||) with A v by
    // central differences of Z(T).
    let mut ata = |v: &[f64]| -> Result<Vec<f64>> {
        let av = central_difference(ts, v, &mut |x| {
            Ok(flat(block::attention_half(cfg, p, &exact, &shape(x)?)?.z))
        })?;
        let mut r = dummy.clone();
        Ok(flat(block::attention_half_backward(
            cfg,
            p,
            &a,
            &shape(&av)?,
            &mut r,
        )?))
    };
    let nu = power_norm(dim, iters, seed ^ 4, &mut ata)?.sqrt();
    // eta: the Hessian of <g, F(T)>, whose gradient is the block backward of g at T.
    let mut hess = |v: &[f64]| -> Result<Vec<f64>> {
        central_difference(ts, v, &mut |x| {
            let (_, c, mut r) = block::forward(cfg, p, &exact, &shape(x)?)?;
            Ok(flat(block::backward(cfg, p, &c, g, &mut r)?.0))
        })
    };
    let eta = power_norm(dim, iters, seed ^ 2, &mut hess)?;
    // beta: the parameter Jacobian dF/dtheta, sqrt(||J_theta^T J_theta||) with
    // J_theta w by central differences in theta and J_theta^T by the backward.
    let mut jtj_theta = |w: &[f64]| -> Result<Vec<f64>> {
        let jw = central_difference(&theta, w, &mut |y| {
            Ok(flat(block::forward(cfg, &at(y)?, &exact, t)?.0))
        })?;
        let (_, gp) = block::backward(cfg, p, &cache, &shape(&jw)?, &mut dummy.clone())?;
        Ok(gp.to_flat())
    };
    let beta = power_norm(theta.len(), iters, seed ^ 5, &mut jtj_theta)?.sqrt();
    // chi: M = d/dT of the parameter gradient Phi(T, g); M^T w = d/dtheta of the input
    // gradient (the mixed second derivatives of <g, F> commute).
    let mut mtm_mixed = |v: &[f64]| -> Result<Vec<f64>> {
        let mv = central_difference(ts, v, &mut |x| {
            let (_, c, mut r) = block::forward(cfg, p, &exact, &shape(x)?)?;
            Ok(block::backward(cfg, p, &c, g, &mut r)?.1.to_flat())
        })?;
        central_difference(&theta, &mv, &mut |y| {
            let q = at(y)?;
            let (_, c, mut r) = block::forward(cfg, &q, &exact, t)?;
            Ok(flat(block::backward(cfg, &q, &c, g, &mut r)?.0))
        })
    };
    let chi = power_norm(dim, iters, seed ^ 6, &mut mtm_mixed)?.sqrt();
    // xi: the same mixed derivative for the MLP half, at Z.
    let mut xtx = |v: &[f64]| -> Result<Vec<f64>> {
        let mv = central_difference(zs, v, &mut |x| {
            let h = block::mlp_half(cfg, p, &shape(x)?)?;
            Ok(block::mlp_half_backward(cfg, p, &h, g)?
                .1
                .into_layer(p)
                .to_flat())
        })?;
        central_difference(&theta, &mv, &mut |y| {
            let q = at(y)?;
            let h = block::mlp_half(cfg, &q, z)?;
            Ok(flat(block::mlp_half_backward(cfg, &q, &h, g)?.0))
        })
    };
    let xi = power_norm(dim, iters, seed ^ 7, &mut xtx)?.sqrt();
    // beta': the attention half's parameter Jacobian dZ/dtheta.
    let mut btb = |w: &[f64]| -> Result<Vec<f64>> {
        let jw = central_difference(&theta, w, &mut |y| {
            Ok(flat(block::attention_half(cfg, &at(y)?, &exact, t)?.z))
        })?;
        let mut r = dummy.clone();
        Ok(
            block::attention_half_param_backward(cfg, p, &a, &shape(&jw)?, &mut r)?
                .1
                .to_flat(),
        )
    };
    let beta_attention = power_norm(theta.len(), iters, seed ^ 8, &mut btb)?.sqrt();
    // a_l, b_l and w_l from the engine's certified per-head bounds.
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
    let (e_o, e_q, e_k, e_v) = (
        hf(&|h| Some(h.bound_o))?,
        hf(&|h| h.bound_dq)?,
        hf(&|h| h.bound_dk)?,
        hf(&|h| h.bound_dv)?,
    );
    let forward_error = w(&p.wo) * e_o;
    let dx1_error = w(&p.wq) * e_q + w(&p.wk) * e_k + w(&p.wv) * e_v;
    let backward_error = ln_norm(p.ln1.as_ref(), ln1) * dx1_error;
    let dz = block::mlp_half_backward(cfg, p, &half, g)?.0;
    let x1 = layer_norm::forward(p.ln1.as_ref(), t)?.0;
    let ln1_grad_norm = ln1.map_or(0.0, |c| (c.max_xhat_col_norm().powi(2) + n as f64).sqrt());
    let weight_own_error = (xi + beta_attention * zeta) * forward_error
        + e_o * w(&dz)
        + w(&x1) * (e_q + e_k + e_v)
        + ln1_grad_norm * dx1_error;
    Ok(LayerTerms {
        kappa,
        mu,
        eta,
        zeta,
        nu,
        beta,
        chi,
        xi,
        beta_attention,
        forward_error,
        backward_error,
        input_error: 0.0,
        own_error: 0.0,
        weight_own_error,
        output_grad_error: 0.0,
        weight_bound: 0.0,
    })
}

/// docs/math.md §7.3's propagated bounds on `||dX~ - dX||_F` and on each layer's weight
/// gradients' Frobenius error for a run whose per-layer engine
/// reports (with their certified attention bounds; exact layers contribute none) are
/// `reports`, evaluated at the exact model's activations on `batch` (see the module
/// documentation for the terms and what kind of bound this is). `iters` power
/// iterations per norm (20 is plenty for the sweep's sizes).
pub fn propagated_bound(
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
    if cfg.cosine.is_some() {
        // b_l maps the engine's dQ, dK errors through W_Q, W_K directly; with cosine
        // attention they pass the normalisation's Jacobian (tau / ||q||) first, which the
        // terms above do not carry.
        return Err(Error::InvalidParameter {
            name: "attention",
            value: "cosine".into(),
            reason: "the propagated bound is implemented for dot-product attention only".into(),
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
    let mut acc = top_error;
    for terms in layers.iter_mut().rev() {
        terms.output_grad_error = acc;
        terms.weight_bound =
            terms.beta * acc + terms.chi * terms.input_error + terms.weight_own_error;
        acc = terms.kappa * acc + terms.own_error;
    }
    let dx_bound = acc;
    Ok(PropagatedBound {
        layers,
        output_error: d,
        top_error,
        dx_bound,
        iterations: iters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures::{bounded_model, small_head_config, QK_SCALE};

    /// The largest singular value of the matrix whose `cols` columns are `column(e_j)`,
    /// built explicitly (so its transpose is exact indexing, not the adjoint code the
    /// operator estimates use) and iterated to convergence.
    fn explicit_norm(cols: usize, column: &mut dyn FnMut(&[f64]) -> Vec<f64>) -> f64 {
        let m: Vec<Vec<f64>> = (0..cols)
            .map(|j| {
                let mut e = vec![0.0; cols];
                e[j] = 1.0;
                column(&e)
            })
            .collect();
        let mut v = vec![1.0 / (cols as f64).sqrt(); cols];
        let mut est = 0.0;
        for _ in 0..500 {
            let rows = m[0].len();
            let mv: Vec<f64> = (0..rows)
                .map(|i| (0..cols).map(|j| m[j][i] * v[j]).sum())
                .collect();
            let mtmv: Vec<f64> = m
                .iter()
                .map(|c| c.iter().zip(&mv).map(|(a, b)| a * b).sum())
                .collect();
            est = frob(&mtmv).sqrt();
            let nv = frob(&mtmv);
            v = mtmv.iter().map(|x| x / nv).collect();
        }
        est
    }

    /// Each norm the weight-gradient bound uses, estimated matrix-free (power
    /// iteration through the backward code, the transposes by central differences in
    /// the other space), agrees with the same operator built column by column from
    /// central differences of the forward code and iterated to convergence: within 2%
    /// below (60 iterations of the matrix-free estimate, which approaches the norm from
    /// below) and 1e-4 above (the central differences' O(h^2) error). A wrong adjoint or
    /// transpose converges to another operator's norm and fails this.
    #[test]
    fn parameter_norms_match_explicit_operators() {
        let (model, batch) = bounded_model(small_head_config(1), QK_SCALE, 6, 5).unwrap();
        let Source::Embeddings(x) = &batch.source else {
            unreachable!()
        };
        let fwd = model.forward(&batch, &[EngineChoice::Exact]).unwrap();
        let (_, g) = model.backward_trace(&fwd).unwrap();
        let (cfg, p, g) = (model.config(), &model.params().layers[0], &g[1]);
        let rep = LayerReport {
            requested: "exact",
            engine: "exact",
            reason: String::new(),
            heads: vec![],
        };
        let terms = layer_terms(&model, p, x, g, &rep, 60, 3).unwrap();
        let theta = p.to_flat();
        let exact = EngineChoice::Exact;
        let shape = |v: &[f64]| Matrix::from_vec(x.rows(), x.cols(), v.to_vec()).unwrap();
        let at = |v: &[f64]| p.with_flat(v).unwrap();
        let z = block::attention_half(cfg, p, &exact, x).unwrap().z;
        let check = |name: &str, est: f64, exact_norm: f64| {
            assert!(
                est >= 0.98 * exact_norm && est <= exact_norm * (1.0 + 1e-4),
                "{name}: matrix-free {est} vs explicit {exact_norm}"
            );
        };
        let beta = explicit_norm(theta.len(), &mut |w| {
            central_difference(&theta, w, &mut |y| {
                Ok(block::forward(cfg, &at(y), &exact, x)?
                    .0
                    .as_slice()
                    .to_vec())
            })
            .unwrap()
        });
        check("beta", terms.beta, beta);
        let chi = explicit_norm(x.rows() * x.cols(), &mut |v| {
            central_difference(x.as_slice(), v, &mut |y| {
                let (_, c, mut r) = block::forward(cfg, p, &exact, &shape(y))?;
                Ok(block::backward(cfg, p, &c, g, &mut r)?.1.to_flat())
            })
            .unwrap()
        });
        check("chi", terms.chi, chi);
        let xi = explicit_norm(x.rows() * x.cols(), &mut |v| {
            central_difference(z.as_slice(), v, &mut |y| {
                let h = block::mlp_half(cfg, p, &shape(y))?;
                Ok(block::mlp_half_backward(cfg, p, &h, g)?
                    .1
                    .into_layer(p)
                    .to_flat())
            })
            .unwrap()
        });
        check("xi", terms.xi, xi);
        let beta_attention = explicit_norm(theta.len(), &mut |w| {
            central_difference(&theta, w, &mut |y| {
                Ok(block::attention_half(cfg, &at(y), &exact, x)?
                    .z
                    .as_slice()
                    .to_vec())
            })
            .unwrap()
        });
        check("beta'", terms.beta_attention, beta_attention);
        // An exact layer adds no error of its own.
        assert_eq!(terms.weight_own_error, 0.0);
    }
}
