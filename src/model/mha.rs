//! Multi-head attention `MHA(x) = concat_c(Attn(x W_Q^c, x W_K^c, x W_V^c)) W_O` with
//! heads splitting `d_model` column-wise and tau = 1/sqrt(d_head) per head (docs/math.md
//! §7; ML24 Lemma K.2). Backward (ML24 Lemma 3.4 / C.4 through the projections):
//!
//! ```text
//! dW_O = O_cat^T dy,  dO_cat = dy W_O^T  -> per head dO -> engine -> dQ, dK, dV
//! dW_Q = x^T dQ,  dW_K = x^T dK,  dW_V = x^T dV,
//! dx = dQ W_Q^T + dK W_K^T + dV W_V^T
//! ```
//! (dQ, dK, dV concatenated over heads, `n x d_model` each.)

use super::dense::{add, merge_heads, mm, mm_nt, mm_tn, split_heads};
use super::engine::{self, EngineChoice, HeadsForward, LayerReport};
use crate::attention::Mask;
use crate::error::Result;
use crate::scalar::Real;
use crate::tensor::{Matrix, Tensor3};

/// The attention weights of one layer, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct MhaWeights<'a, T> {
    /// W_Q, `d_model x d_model`.
    pub wq: &'a Matrix<T>,
    /// W_K.
    pub wk: &'a Matrix<T>,
    /// W_V.
    pub wv: &'a Matrix<T>,
    /// W_O.
    pub wo: &'a Matrix<T>,
}

/// What the backward needs.
#[derive(Clone, Debug)]
pub struct MhaCache<T> {
    x: Matrix<T>,
    q: Tensor3<T>,
    k: Tensor3<T>,
    v: Tensor3<T>,
    o_cat: Matrix<T>,
    heads: HeadsForward<T>,
}

/// Gradients of the attention weights.
#[derive(Clone, Debug)]
pub struct MhaGrads<T> {
    /// dL/dW_Q.
    pub wq: Matrix<T>,
    /// dL/dW_K.
    pub wk: Matrix<T>,
    /// dL/dW_V.
    pub wv: Matrix<T>,
    /// dL/dW_O.
    pub wo: Matrix<T>,
}

/// `MHA(x)` with `heads` heads through `choice`; the cache and the engine report.
pub fn forward<T: Real>(
    w: MhaWeights<'_, T>,
    heads: usize,
    mask: Mask,
    choice: &EngineChoice,
    x: &Matrix<T>,
) -> Result<(Matrix<T>, MhaCache<T>, LayerReport)> {
    let q = split_heads(&mm(x, w.wq)?, heads)?;
    let k = split_heads(&mm(x, w.wk)?, heads)?;
    let v = split_heads(&mm(x, w.wv)?, heads)?;
    let (o, state, report) = engine::forward(&q, &k, &v, mask, choice)?;
    let o_cat = merge_heads(&o)?;
    let y = mm(&o_cat, w.wo)?;
    Ok((
        y,
        MhaCache {
            x: x.clone(),
            q,
            k,
            v,
            o_cat,
            heads: state,
        },
        report,
    ))
}

/// Backward of [`forward`] given `dy`: `dx` and the weight gradients; the report's
/// gradient bounds are filled when the polynomial engine ran.
pub fn backward<T: Real>(
    w: MhaWeights<'_, T>,
    mask: Mask,
    cache: &MhaCache<T>,
    dy: &Matrix<T>,
    report: &mut LayerReport,
) -> Result<(Matrix<T>, MhaGrads<T>)> {
    let heads = cache.q.heads();
    let dwo = mm_tn(&cache.o_cat, dy)?;
    let d_o = split_heads(&mm_nt(dy, w.wo)?, heads)?;
    let (dq, dk, dv) = engine::backward(
        &cache.q,
        &cache.k,
        &cache.v,
        &cache.heads,
        &d_o,
        mask,
        report,
    )?;
    let (dq, dk, dv) = (merge_heads(&dq)?, merge_heads(&dk)?, merge_heads(&dv)?);
    let dx = add(
        &add(&mm_nt(&dq, w.wq)?, &mm_nt(&dk, w.wk)?)?,
        &mm_nt(&dv, w.wv)?,
    )?;
    Ok((
        dx,
        MhaGrads {
            wq: mm_tn(&cache.x, &dq)?,
            wk: mm_tn(&cache.x, &dk)?,
            wv: mm_tn(&cache.x, &dv)?,
            wo: dwo,
        },
    ))
}
