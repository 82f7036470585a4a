//! One pre-norm decoder block (docs/math.md §7; ML24 Def 1.3 with Lemma J.3's residuals):
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
        log_tau: p.log_tau.as_deref(),
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

/// The attention half's result: `Z = T + MHA(LN1(T))`, its caches and the report.
pub struct AttentionHalf<T> {
    /// `Z`.
    pub z: Matrix<T>,
    ln1: Option<LnCache<T>>,
    mha: MhaCache<T>,
    /// What the attention engine ran.
    pub report: LayerReport,
}

impl<T> AttentionHalf<T> {
    /// LN1's cache (`None` when layer norm is off).
    pub fn ln1(&self) -> Option<&LnCache<T>> {
        self.ln1.as_ref()
    }
}

/// The MLP half's result: `T' = Z + MLP(LN2(Z))` and its caches.
pub struct MlpHalf<T> {
    /// `T'`.
    pub out: Matrix<T>,
    ln2: Option<LnCache<T>>,
    mlp: MlpCache<T>,
}

/// The MLP half's gradients: LN2's (when on) and the MLP's.
pub struct MlpHalfGrads<T> {
    /// dL/d(LN2 gain, bias).
    pub ln2: Option<LayerNormParams<T>>,
    /// dL/d(W1, b1, W2, b2).
    pub mlp: MlpGrads<T>,
}

/// The attention half `Z = T + MHA(LN1(T))`.
pub fn attention_half<T: Real>(
    cfg: &ModelConfig,
    p: &LayerParams<T>,
    choice: &EngineChoice,
    t: &Matrix<T>,
) -> Result<AttentionHalf<T>> {
    let (x1, ln1) = layer_norm::forward(p.ln1.as_ref(), t)?;
    let (a, mha, report) = mha::forward(mha_weights(p), cfg, choice, &x1)?;
    Ok(AttentionHalf {
        z: add(t, &a)?,
        ln1,
        mha,
        report,
    })
}

/// The MLP half `T' = Z + MLP(LN2(Z))`.
pub fn mlp_half<T: Real>(
    cfg: &ModelConfig,
    p: &LayerParams<T>,
    z: &Matrix<T>,
) -> Result<MlpHalf<T>> {
    let (x2, ln2) = layer_norm::forward(p.ln2.as_ref(), z)?;
    let (g, mlp) = mlp::forward(mlp_weights(p), cfg.activation, &x2)?;
    Ok(MlpHalf {
        out: add(z, &g)?,
        ln2,
        mlp,
    })
}

/// `T' = Z + MLP(LN2(Z))`, `Z = T + MHA(LN1(T))`; the cache and the attention report.
pub fn forward<T: Real>(
    cfg: &ModelConfig,
    p: &LayerParams<T>,
    choice: &EngineChoice,
    t: &Matrix<T>,
) -> Result<(Matrix<T>, BlockCache<T>, LayerReport)> {
    let a = attention_half(cfg, p, choice, t)?;
    let m = mlp_half(cfg, p, &a.z)?;
    let cache = BlockCache {
        ln1: a.ln1,
        mha: a.mha,
        ln2: m.ln2,
        mlp: m.mlp,
    };
    Ok((m.out, cache, a.report))
}

/// Backward of [`mlp_half`] given `dT'`: `dZ = dT' + LN2'^T MLP'^T dT'` and the
/// gradients of LN2 and of the MLP.
pub fn mlp_half_backward<T: Real>(
    cfg: &ModelConfig,
    p: &LayerParams<T>,
    half: &MlpHalf<T>,
    d_out: &Matrix<T>,
) -> Result<(Matrix<T>, MlpHalfGrads<T>)> {
    mlp_backward_parts(cfg, p, half.ln2.as_ref(), &half.mlp, d_out)
}

/// Backward of [`attention_half`] given `dZ`: `dT = dZ + LN1'^T MHA'^T dZ` (the
/// weight gradients are dropped; `report` receives the engine's gradient bounds). The
/// configuration is carried by `half` (kept in the signature for symmetry).
pub fn attention_half_backward<T: Real>(
    _cfg: &ModelConfig,
    p: &LayerParams<T>,
    half: &AttentionHalf<T>,
    dz: &Matrix<T>,
    report: &mut LayerReport,
) -> Result<Matrix<T>> {
    Ok(attention_backward_parts(p, half.ln1.as_ref(), &half.mha, dz.clone(), report)?.0)
}

type AttentionGrads<T> = (Matrix<T>, Option<LayerNormParams<T>>, mha::MhaGrads<T>);

fn attention_backward_parts<T: Real>(
    p: &LayerParams<T>,
    ln1: Option<&LnCache<T>>,
    mha_cache: &MhaCache<T>,
    dz: Matrix<T>,
    report: &mut LayerReport,
) -> Result<AttentionGrads<T>> {
    let (dx1, g_mha) = mha::backward(mha_weights(p), mha_cache, &dz, report)?;
    let (dt_branch, g_ln1) = layer_norm::backward(p.ln1.as_ref(), ln1, &dx1)?;
    let mut dt = dz;
    add_assign(&mut dt, &dt_branch);
    Ok((dt, g_ln1, g_mha))
}

fn mlp_backward_parts<T: Real>(
    cfg: &ModelConfig,
    p: &LayerParams<T>,
    ln2: Option<&LnCache<T>>,
    mlp_cache: &MlpCache<T>,
    d_out: &Matrix<T>,
) -> Result<(Matrix<T>, MlpHalfGrads<T>)> {
    let (dx2, g_mlp) = mlp::backward(mlp_weights(p), cfg.activation, mlp_cache, d_out)?;
    let (dz_branch, g_ln2) = layer_norm::backward(p.ln2.as_ref(), ln2, &dx2)?;
    let mut dz = d_out.clone();
    add_assign(&mut dz, &dz_branch);
    Ok((
        dz,
        MlpHalfGrads {
            ln2: g_ln2,
            mlp: g_mlp,
        },
    ))
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
    let (dz, g) = mlp_backward_parts(cfg, p, cache.ln2.as_ref(), &cache.mlp, d_out)?;
    let (g_ln2, g_mlp) = (g.ln2, g.mlp);
    let (dt, g_ln1, g_mha) =
        attention_backward_parts(p, cache.ln1.as_ref(), &cache.mha, dz, report)?;
    Ok((dt, assemble(g_ln1, g_mha, g_ln2, g_mlp)))
}

fn assemble<T>(
    ln1: Option<LayerNormParams<T>>,
    mha: mha::MhaGrads<T>,
    ln2: Option<LayerNormParams<T>>,
    mlp: MlpGrads<T>,
) -> LayerParams<T> {
    LayerParams {
        ln1,
        wq: mha.wq,
        wk: mha.wk,
        wv: mha.wv,
        wo: mha.wo,
        log_tau: mha.log_tau,
        ln2,
        w1: mlp.w1,
        b1: mlp.b1,
        w2: mlp.w2,
        b2: mlp.b2,
    }
}

/// Zeros shaped like `p`.
fn zeros_like<T: Real>(p: &LayerParams<T>) -> LayerParams<T> {
    let mut z = p.clone();
    for (_, _, d) in z.slots_mut("") {
        d.fill(T::ZERO);
    }
    z
}

/// Backward of [`attention_half`] given `dZ`: `dT` and the half's parameter gradients
/// (LN1, W_Q, W_K, W_V, W_O, log_tau) in a block-shaped gradient whose MLP-half
/// entries are zero.
pub fn attention_half_param_backward<T: Real>(
    _cfg: &ModelConfig,
    p: &LayerParams<T>,
    half: &AttentionHalf<T>,
    dz: &Matrix<T>,
    report: &mut LayerReport,
) -> Result<(Matrix<T>, LayerParams<T>)> {
    let (dt, g_ln1, g_mha) =
        attention_backward_parts(p, half.ln1.as_ref(), &half.mha, dz.clone(), report)?;
    let mut g = zeros_like(p);
    g.ln1 = g_ln1;
    (g.wq, g.wk, g.wv, g.wo) = (g_mha.wq, g_mha.wk, g_mha.wv, g_mha.wo);
    g.log_tau = g_mha.log_tau;
    Ok((dt, g))
}

impl<T: Real> MlpHalfGrads<T> {
    /// These gradients in a block-shaped gradient (`p` gives the shapes) whose
    /// attention-half entries are zero.
    pub fn into_layer(self, p: &LayerParams<T>) -> LayerParams<T> {
        let mut g = zeros_like(p);
        g.ln2 = self.ln2;
        (g.w1, g.b1, g.w2, g.b2) = (self.mlp.w1, self.mlp.b1, self.mlp.w2, self.mlp.b2);
        g
    }
}
