//! One pre-norm decoder block (MATH.md 4; ML24 Def 1.3 with Lemma J.3's residuals):
//!
//! ```text
//! Z = T + MHA(LN1(T)),    T' = Z + MLP(LN2(Z))
//! ```
//! Backward given `dT'`: `dZ = dT' + LN2'^T MLP'^T dT'`, `dT = dZ + LN1'^T MHA'^T dZ`
//! (the residual adds the identity to each branch's Jacobian, ML24 Lemma J.3).

use super::config::ModelConfig;
use super::dense::{add, add_assign};
use super::engine::{EngineChoice, LayerReport};
use super::layer_norm::{self, LnCache};
use super::mha::{self, MhaCache, MhaWeights};
use super::mlp::{self, MlpCache, MlpGrads, MlpWeights};
use super::params::{LayerNormParams, LayerParams};
use crate::error::Result;
use crate::scalar::Real;
use crate::tensor::Matrix;

/// What the block's backward needs.
#[derive(Clone, Debug)]
pub struct BlockCache<T> {
    pub(crate) ln1: Option<LnCache<T>>,
    pub(crate) mha: MhaCache<T>,
    pub(crate) ln2: Option<LnCache<T>>,
    pub(crate) mlp: MlpCache<T>,
}

fn mha_weights<T>(p: &LayerParams<T>) -> MhaWeights<'_, T> {
    MhaWeights {
        wq: &p.wq,
        wk: &p.wk,
        wv: &p.wv,
        wo: &p.wo,
    }
}

fn mlp_weights<T>(p: &LayerParams<T>) -> MlpWeights<'_, T> {
    MlpWeights {
        w1: &p.w1,
        b1: &p.b1,
        w2: &p.w2,
        b2: &p.b2,
    }
}

/// The attention half `Z = T + MHA(LN1(T))`: `Z`, the caches and the engine report.
pub fn attention_half<T: Real>(
    cfg: &ModelConfig,
    p: &LayerParams<T>,
    choice: &EngineChoice,
    t: &Matrix<T>,
) -> Result<(Matrix<T>, Option<LnCache<T>>, MhaCache<T>, LayerReport)> {
    let (x1, ln1) = layer_norm::forward(p.ln1.as_ref(), t)?;
    let (a, mha, report) = mha::forward(mha_weights(p), cfg.n_heads, cfg.mask(), choice, &x1)?;
    Ok((add(t, &a)?, ln1, mha, report))
}

/// The MLP half `T' = Z + MLP(LN2(Z))` and its caches.
pub fn mlp_half<T: Real>(
    cfg: &ModelConfig,
    p: &LayerParams<T>,
    z: &Matrix<T>,
) -> Result<(Matrix<T>, Option<LnCache<T>>, MlpCache<T>)> {
    let (x2, ln2) = layer_norm::forward(p.ln2.as_ref(), z)?;
    let (g, mlp) = mlp::forward(mlp_weights(p), cfg.activation, &x2)?;
    Ok((add(z, &g)?, ln2, mlp))
}

/// `T' = Z + MLP(LN2(Z))`, `Z = T + MHA(LN1(T))`; the cache and the attention report.
pub fn forward<T: Real>(
    cfg: &ModelConfig,
    p: &LayerParams<T>,
    choice: &EngineChoice,
    t: &Matrix<T>,
) -> Result<(Matrix<T>, BlockCache<T>, LayerReport)> {
    let (z, ln1, mha, report) = attention_half(cfg, p, choice, t)?;
    let (out, ln2, mlp) = mlp_half(cfg, p, &z)?;
    Ok((out, BlockCache { ln1, mha, ln2, mlp }, report))
}

/// Backward of [`mlp_half`] given `dT'`: `dZ = dT' + LN2'^T MLP'^T dT'` and the
/// gradients of LN2 and of the MLP.
pub fn mlp_half_backward<T: Real>(
    cfg: &ModelConfig,
    p: &LayerParams<T>,
    ln2: Option<&LnCache<T>>,
    mlp_cache: &MlpCache<T>,
    d_out: &Matrix<T>,
) -> Result<(Matrix<T>, Option<LayerNormParams<T>>, MlpGrads<T>)> {
    let (dx2, g_mlp) = mlp::backward(mlp_weights(p), cfg.activation, mlp_cache, d_out)?;
    let (dz_branch, g_ln2) = layer_norm::backward(p.ln2.as_ref(), ln2, &dx2)?;
    let mut dz = d_out.clone();
    add_assign(&mut dz, &dz_branch);
    Ok((dz, g_ln2, g_mlp))
}

/// Backward of [`forward`] given `dT'`: `dT` and the block's gradients (same layout
/// as its parameters); fills the report's gradient bounds.
pub fn backward<T: Real>(
    cfg: &ModelConfig,
    p: &LayerParams<T>,
    cache: &BlockCache<T>,
    d_out: &Matrix<T>,
    report: &mut LayerReport,
) -> Result<(Matrix<T>, LayerParams<T>)> {
    let (dz, g_ln2, g_mlp) = mlp_half_backward(cfg, p, cache.ln2.as_ref(), &cache.mlp, d_out)?;
    let (dx1, g_mha) = mha::backward(mha_weights(p), cfg.mask(), &cache.mha, &dz, report)?;
    let (dt_branch, g_ln1) = layer_norm::backward(p.ln1.as_ref(), cache.ln1.as_ref(), &dx1)?;
    let mut dt = dz;
    add_assign(&mut dt, &dt_branch);
    Ok((
        dt,
        LayerParams {
            ln1: g_ln1,
            wq: g_mha.wq,
            wk: g_mha.wk,
            wv: g_mha.wv,
            wo: g_mha.wo,
            ln2: g_ln2,
            w1: g_mlp.w1,
            b1: g_mlp.b1,
            w2: g_mlp.w2,
            b2: g_mlp.b2,
        },
    ))
}
