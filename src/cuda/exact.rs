//! Host API of the f16 exact kernels: the CPU exact engine's shapes and types
//! ([`AttentionConfig`], [`MultiHeadForward`], [`MultiHeadGradients`]; docs/math.md §2),
//! run on any [`Backend`] (the device or the emulation).
//!
//! Inputs are f32 and are rounded once to f16 (the kernels' storage); outputs are the
//! kernels' f16 values widened exactly to f32, lse is f32. Validation is the CPU
//! engine's ([`Problem`] in f32: shapes, emptiness, finiteness, score range, since
//! the kernels compute in f32) plus f16's own limits: every stored entry must be at
//! most 65504 in magnitude, the f16 operand dS = P o (dP - delta) must fit a priori,
//! and an output that overflowed f16 anyway is reported as [`Error::Overflow`].

use super::backend::{Backend, ExactArgs};
use super::launch::{check_head_dims, mask_code};
use crate::attention::exact::{Forward, Gradients, MultiHeadForward, MultiHeadGradients};
use crate::attention::{check_stacks, same_heads, AttentionConfig, Problem};
use crate::error::{Error, Result};
use crate::tensor::{MatRef, Matrix, Tensor3};
use half::f16;

/// The largest finite f16.
pub const F16_MAX: f64 = 65504.0;

/// Fails with [`Error::Overflow`] if an entry of `x` does not fit f16.
pub fn check_f16_storage(what: &str, x: &[f32]) -> Result<()> {
    if let Some((i, v)) = x
        .iter()
        .enumerate()
        .find(|(_, v)| (v.abs() as f64) > F16_MAX)
    {
        return Err(Error::Overflow {
            quantity: format!("{what}[{i}] (stored in f16)"),
            bound: v.abs() as f64,
            dtype: "F16",
        });
    }
    Ok(())
}

/// f32 values rounded to f16.
pub fn to_half(x: &[f32]) -> Vec<f16> {
    x.iter().map(|v| f16::from_f32(*v)).collect()
}

/// f16 values widened to f32.
pub fn to_f32(x: &[f16]) -> Vec<f32> {
    x.iter().map(|v| v.to_f32()).collect()
}

/// Fails with [`Error::Overflow`] if a computed f16 output is not finite.
pub fn check_outputs(what: &str, x: &[f16]) -> Result<()> {
    if x.iter().any(|v| !v.is_finite()) {
        return Err(Error::Overflow {
            quantity: format!("the computed {what}"),
            bound: f64::INFINITY,
            dtype: "F16",
        });
    }
    Ok(())
}

/// Validates a stack of heads (the CPU engine's checks, in f32) and returns the
/// kernel arguments.
fn validate(
    q: &Tensor3<f32>,
    k: &Tensor3<f32>,
    v: &Tensor3<f32>,
    cfg: &AttentionConfig,
) -> Result<ExactArgs> {
    same_heads(q.heads(), &[("k", k.heads()), ("v", v.heads())])?;
    check_stacks(&[("q", q), ("k", k), ("v", v)])?;
    // Each head's shape and range checks (the entries were checked above).
    let mut tau = 0.0f32;
    for hd in 0..q.heads() {
        tau = Problem::from_finite(q.head(hd), k.head(hd), v.head(hd), cfg)?.tau;
    }
    check_f16_storage("q", q.as_slice())?;
    check_f16_storage("k", k.as_slice())?;
    check_f16_storage("v", v.as_slice())?;
    check_head_dims(q.cols(), v.cols())?;
    if let Some(c) = cfg.softcap {
        return Err(Error::InvalidParameter {
            name: "softcap",
            value: c.to_string(),
            reason: "the CUDA kernels have no score softcap; it runs on the CPU exact engine"
                .into(),
        });
    }
    Ok(ExactArgs {
        heads: q.heads(),
        n_q: q.rows(),
        n_k: k.rows(),
        d: q.cols(),
        d_v: v.cols(),
        tau,
        mask: mask_code(cfg.mask)?,
    })
}

/// Exact attention forward in f16 for `[heads, n, d]` stacks (see the module docs).
pub fn forward_multihead<B: Backend>(
    b: &B,
    q: &Tensor3<f32>,
    k: &Tensor3<f32>,
    v: &Tensor3<f32>,
    cfg: &AttentionConfig,
) -> Result<MultiHeadForward<f32>> {
    let a = validate(q, k, v, cfg)?;
    let (qd, kd, vd) = (
        b.upload_half(&to_half(q.as_slice()))?,
        b.upload_half(&to_half(k.as_slice()))?,
        b.upload_half(&to_half(v.as_slice()))?,
    );
    let mut o = b.alloc_half(a.heads * a.n_q * a.d_v)?;
    let mut lse = b.alloc_float(a.heads * a.n_q)?;
    b.exact_forward(&a, (&qd, &kd, &vd), &mut o, &mut lse)?;
    let o = b.download_half(&o)?;
    check_outputs("O", &o)?;
    let mut lse = b.download_float(&lse)?;
    lse.truncate(a.heads * a.n_q);
    let mut o = to_f32(&o);
    o.truncate(a.heads * a.n_q * a.d_v);
    Ok(MultiHeadForward {
        o: Tensor3::from_vec(a.heads, a.n_q, a.d_v, o)?,
        lse: Matrix::from_vec(a.heads, a.n_q, lse)?,
    })
}

/// Exact attention backward in f16 for `[heads, n, d]` stacks, from the f16 forward's
/// results (FlashAttention-2's algorithm, deterministic; docs/math.md §2).
pub fn backward_multihead<B: Backend>(
    b: &B,
    q: &Tensor3<f32>,
    k: &Tensor3<f32>,
    v: &Tensor3<f32>,
    fwd: &MultiHeadForward<f32>,
    d_o: &Tensor3<f32>,
    cfg: &AttentionConfig,
) -> Result<MultiHeadGradients<f32>> {
    let a = validate(q, k, v, cfg)?;
    // The entries were checked by `validate`: each head's problem from them.
    let probs = (0..a.heads)
        .map(|hd| Problem::from_finite(q.head(hd), k.head(hd), v.head(hd), cfg))
        .collect::<Result<Vec<_>>>()?;
    crate::attention::exact::check_backward_stacks(&probs, fwd, d_o)?;
    for hd in 0..a.heads {
        // dS = P o (dP - delta) is an f16 operand: |dS| <= 2 max||dO_i|| max||V_j||.
        let ds = 2.0
            * crate::attention::problem::max_row_norm(d_o.head(hd))
            * crate::attention::problem::max_row_norm(v.head(hd));
        if ds > F16_MAX / 2.0 {
            return Err(Error::Overflow {
                quantity: format!("dS = P o (dP - delta) of head {hd} (an f16 operand)"),
                bound: ds,
                dtype: "F16",
            });
        }
    }
    check_f16_storage("do", d_o.as_slice())?;
    check_f16_storage("o", fwd.o.as_slice())?;
    let up = |x: &[f32]| b.upload_half(&to_half(x));
    let (qd, kd, vd, gd, od) = (
        up(q.as_slice())?,
        up(k.as_slice())?,
        up(v.as_slice())?,
        up(d_o.as_slice())?,
        up(fwd.o.as_slice())?,
    );
    let lse = b.upload_float(fwd.lse.as_slice())?;
    let mut delta = b.alloc_float(a.heads * a.n_q)?;
    b.row_delta(a.heads * a.n_q, a.d_v, &gd, &od, &mut delta)?;
    let mut dq = b.alloc_half(a.heads * a.n_q * a.d)?;
    let mut dk = b.alloc_half(a.heads * a.n_k * a.d)?;
    let mut dv = b.alloc_half(a.heads * a.n_k * a.d_v)?;
    b.exact_backward(
        &a,
        (&qd, &kd, &vd),
        &gd,
        (&lse, &delta),
        &mut dq,
        &mut dk,
        &mut dv,
    )?;
    let take = |name: &str, x: &B::Half, rows: usize, cols: usize| -> Result<Tensor3<f32>> {
        let h = b.download_half(x)?;
        check_outputs(name, &h)?;
        let mut f = to_f32(&h);
        f.truncate(a.heads * rows * cols);
        Tensor3::from_vec(a.heads, rows, cols, f)
    };
    Ok(MultiHeadGradients {
        dq: take("dQ", &dq, a.n_q, a.d)?,
        dk: take("dK", &dk, a.n_k, a.d)?,
        dv: take("dV", &dv, a.n_k, a.d_v)?,
    })
}

fn stack(m: MatRef<'_, f32>) -> Result<Tensor3<f32>> {
    Tensor3::from_vec(1, m.rows(), m.cols(), m.as_slice().to_vec())
}

/// Exact attention forward in f16 for one head (`q` `n_q x d`, `k` `n_k x d`, `v`
/// `n_k x d_v`); see [`forward_multihead`].
pub fn forward<B: Backend>(
    b: &B,
    q: MatRef<'_, f32>,
    k: MatRef<'_, f32>,
    v: MatRef<'_, f32>,
    cfg: &AttentionConfig,
) -> Result<Forward<f32>> {
    let f = forward_multihead(b, &stack(q)?, &stack(k)?, &stack(v)?, cfg)?;
    Ok(Forward {
        o: Matrix::from_vec(q.rows(), v.cols(), f.o.into_vec())?,
        lse: f.lse.into_vec(),
    })
}

/// Exact attention backward in f16 for one head; see [`backward_multihead`].
pub fn backward<B: Backend>(
    b: &B,
    q: MatRef<'_, f32>,
    k: MatRef<'_, f32>,
    v: MatRef<'_, f32>,
    fwd: &Forward<f32>,
    d_o: MatRef<'_, f32>,
    cfg: &AttentionConfig,
) -> Result<Gradients<f32>> {
    let f = MultiHeadForward {
        o: stack(fwd.o.view())?,
        lse: Matrix::from_vec(1, fwd.lse.len(), fwd.lse.clone())?,
    };
    let g = backward_multihead(b, &stack(q)?, &stack(k)?, &stack(v)?, &f, &stack(d_o)?, cfg)?;
    Ok(Gradients {
        dq: Matrix::from_vec(q.rows(), q.cols(), g.dq.into_vec())?,
        dk: Matrix::from_vec(k.rows(), k.cols(), g.dk.into_vec())?,
        dv: Matrix::from_vec(k.rows(), v.cols(), g.dv.into_vec())?,
    })
}
