//! The exact attention engine: tiled, online softmax, forward and backward, causal
//! masks in both alignments, single head and multi-head, generic over f32/f64.
//!
//! Semantics (docs/math.md §2.1): `O = softmax_rows(tau Q K^T + B + mask) V` (`B` an
//! optional additive bias, `*_with_bias`), `lse_i =
//! log sum_j e^{S_ij}` over visible keys; the backward returns `dQ, dK, dV` for a given
//! `dO`. See [`Mask`](crate::attention::Mask) for fully masked rows.
//!
//! Precision: every quantity (scores, the running max and denominator, the output
//! accumulators, the gradients) is computed and accumulated in the input dtype `T`;
//! for f32 this means f32 softmax statistics, whose rounding the enclosure tests allow
//! for with u = 2^-24. The max shift keeps every `exp` argument `<= 0`, so scores of
//! any magnitude that fits `T` stay finite.
//!
//! Parallelism: rayon over heads, over blocks of query rows (forward) and over a fixed
//! number of key-block groups chosen from the shape alone (backward, see `backward.rs`);
//! every output element is produced by one fixed sequence of floating-point operations,
//! so results are bitwise identical for any number of threads.
//!
//! Kernels: the tile products and the softmax row updates are SIMD microkernels
//! ([`tile`], generic over [`crate::simd::Lanes`]), dispatched once per block to
//! AVX-512, AVX2 or scalar code by what the CPU supports (`POLYATTN_SIMD=avx2|scalar`
//! caps it). The same instruction set gives the same bits for any thread count;
//! different instruction sets (e.g. a CPU without AVX-512) may differ in the last
//! bits, all within the certified rounding allowance (docs/math.md §5.4): the SIMD `exp`
//! is within 1 ulp (`simd/exp.rs`), and the products sum in fixed orders covered by
//! gamma_k. Memory: besides the outputs, K (and V for the backward) packed once per
//! call (O(n d)), per-block tiles, and for the backward `G - 1 <= 7` partial dQ buffers
//! (`(G - 1) n_q d` values, at most 2^24 where that leaves `G >= 2`); never an
//! `n_q x n_k` buffer.

mod backward;
mod forward;
pub mod reference;
mod softcap;
pub mod tile;

use super::{AttentionConfig, Problem};
use crate::error::{Error, Result};
use crate::scalar::Real;
use crate::tensor::{MatRef, Matrix, Tensor3};
use backward::{row_deltas, Upstream};
use rayon::prelude::*;

/// The forward's results for one head.
#[derive(Clone, Debug, PartialEq)]
pub struct Forward<T> {
    /// The output O, `n_q x d_v`.
    pub o: Matrix<T>,
    /// The row log-sum-exp `lse_i = log sum_j e^{S_ij}` (`-inf` for a fully masked row),
    /// length `n_q`. The backward needs it.
    pub lse: Vec<T>,
}

/// Gradients of one head.
#[derive(Clone, Debug, PartialEq)]
pub struct Gradients<T> {
    /// dL/dQ, `n_q x d`.
    pub dq: Matrix<T>,
    /// dL/dK, `n_k x d`.
    pub dk: Matrix<T>,
    /// dL/dV, `n_k x d_v`.
    pub dv: Matrix<T>,
}

/// The forward's results for a stack of heads.
#[derive(Clone, Debug, PartialEq)]
pub struct MultiHeadForward<T> {
    /// O, `[heads, n_q, d_v]`.
    pub o: Tensor3<T>,
    /// lse, `heads x n_q`.
    pub lse: Matrix<T>,
}

/// Gradients for a stack of heads, each `[heads, rows, cols]` like its input.
#[derive(Clone, Debug, PartialEq)]
pub struct MultiHeadGradients<T> {
    /// dL/dQ.
    pub dq: Tensor3<T>,
    /// dL/dK.
    pub dk: Tensor3<T>,
    /// dL/dV.
    pub dv: Tensor3<T>,
}

/// Exact attention forward for one head: `q` is `n_q x d`, `k` is `n_k x d`, `v` is
/// `n_k x d_v`. Errors on shape mismatch, empty or non-finite inputs, or intermediates
/// that could overflow `T`.
pub fn forward<T: Real>(
    q: MatRef<'_, T>,
    k: MatRef<'_, T>,
    v: MatRef<'_, T>,
    config: &AttentionConfig,
) -> Result<Forward<T>> {
    forward_with_bias(q, k, v, None, config)
}

/// [`forward`] with an additive score bias `bias` (`n_q x n_k`, finite or `-inf`;
/// see [`Problem::bias`]): `S = tau Q K^T + B` before the mask.
pub fn forward_with_bias<T: Real>(
    q: MatRef<'_, T>,
    k: MatRef<'_, T>,
    v: MatRef<'_, T>,
    bias: Option<MatRef<'_, T>>,
    config: &AttentionConfig,
) -> Result<Forward<T>> {
    let p = Problem::new(q, k, v, config)?.with_bias(bias)?;
    let mut o = Matrix::zeros(p.n_q(), p.d_v())?;
    let mut lse = vec![T::ZERO; p.n_q()];
    forward::forward_into(&p, o.as_mut_slice(), &mut lse);
    Ok(Forward { o, lse })
}

/// Exact attention backward for one head, from the forward's results and `d_o`
/// (`n_q x d_v`): `dV = P^T dO`, `dS = P o (dO V^T - rowsum(dO o O))`,
/// `dQ = tau dS K`, `dK = tau dS^T Q` (docs/math.md §2.3).
pub fn backward<T: Real>(
    q: MatRef<'_, T>,
    k: MatRef<'_, T>,
    v: MatRef<'_, T>,
    fwd: &Forward<T>,
    d_o: MatRef<'_, T>,
    config: &AttentionConfig,
) -> Result<Gradients<T>> {
    backward_with_bias(q, k, v, None, fwd, d_o, config)
}

/// [`backward`] with the additive score bias the forward used ([`forward_with_bias`]);
/// the bias gets no gradient.
pub fn backward_with_bias<T: Real>(
    q: MatRef<'_, T>,
    k: MatRef<'_, T>,
    v: MatRef<'_, T>,
    bias: Option<MatRef<'_, T>>,
    fwd: &Forward<T>,
    d_o: MatRef<'_, T>,
    config: &AttentionConfig,
) -> Result<Gradients<T>> {
    let p = Problem::new(q, k, v, config)?.with_bias(bias)?;
    p.check_backward_inputs(fwd.o.view(), &fwd.lse, d_o)?;
    let delta = row_deltas(d_o.as_slice(), fwd.o.as_slice(), p.d_v());
    let up = Upstream {
        d_o: d_o.as_slice(),
        lse: &fwd.lse,
        delta: &delta,
    };
    let mut g = Gradients {
        dq: Matrix::zeros(p.n_q(), p.d())?,
        dk: Matrix::zeros(p.n_k(), p.d())?,
        dv: Matrix::zeros(p.n_k(), p.d_v())?,
    };
    backward::backward_into(
        &p,
        &up,
        g.dq.as_mut_slice(),
        g.dk.as_mut_slice(),
        g.dv.as_mut_slice(),
    );
    Ok(g)
}

/// Validates a stack of heads and returns one [`Problem`] per query head (query head
/// `h` paired with key/value head `h / g`, [`super::kv_group`]) and the group size `g`.
/// A bias stack has one head (shared by all) or one per query head.
pub(crate) fn head_problems<'a, T: Real>(
    q: &'a Tensor3<T>,
    k: &'a Tensor3<T>,
    v: &'a Tensor3<T>,
    bias: Option<&'a Tensor3<T>>,
    config: &AttentionConfig,
) -> Result<(Vec<Problem<'a, T>>, usize)> {
    if let Some(b) = bias {
        if b.heads() != 1 && b.heads() != q.heads() {
            return Err(Error::ShapeMismatch {
                what: "attention bias heads".into(),
                expected: format!("1 or {} (q's heads)", q.heads()),
                got: b.heads().to_string(),
            });
        }
    }
    let bias_of = |h: usize| bias.map(|b| b.head(if b.heads() == 1 { 0 } else { h }));
    super::same_heads(k.heads(), &[("v", v.heads())])?;
    let g = super::kv_group(q.heads(), k.heads())?;
    super::check_stacks(&[("q", q), ("k", k), ("v", v)])?;
    let probs = (0..q.heads())
        .map(|h| {
            // Entries were checked on the stacks above (errors name the head).
            Problem::from_finite(q.head(h), k.head(h / g), v.head(h / g), config)?
                .with_bias(bias_of(h))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((probs, g))
}

/// The multi-head backward's extra inputs against `probs` (one validated problem per
/// query head): the forward's `o` and `d_o` shaped `[h, n_q, d_v]`, `lse` `[h, n_q]`,
/// `d_o` finite (one scan of the stack, errors naming the head), then each head's
/// backward checks ([`Problem::check_backward_inputs`] less that scan). Shared by this
/// engine and the CUDA host API.
pub(crate) fn check_backward_stacks<T: Real>(
    probs: &[Problem<'_, T>],
    fwd: &MultiHeadForward<T>,
    d_o: &Tensor3<T>,
) -> Result<()> {
    // No heads: rejected before any problem is built (`same_heads`, `check_stacks`).
    let Some(p0) = probs.first() else {
        return Ok(());
    };
    let (h, n_q, d_v) = (probs.len(), p0.n_q(), p0.d_v());
    for (name, shape) in [("o", fwd.o.shape()), ("do", d_o.shape())] {
        if shape != [h, n_q, d_v] {
            return Err(Error::ShapeMismatch {
                what: name.to_string(),
                expected: format!("{:?}", [h, n_q, d_v]),
                got: format!("{shape:?}"),
            });
        }
    }
    if fwd.lse.shape() != [h, n_q] {
        return Err(Error::ShapeMismatch {
            what: "lse".into(),
            expected: format!("{:?}", [h, n_q]),
            got: format!("{:?}", fwd.lse.shape()),
        });
    }
    super::check_stacks(&[("do", d_o)])?;
    for (i, p) in probs.iter().enumerate() {
        p.check_backward_finite_do(fwd.o.head(i), fwd.lse.row(i), d_o.head(i))?;
    }
    Ok(())
}

/// Exact attention forward for `[heads, n, d]` stacks (`q`: `[h, n_q, d]`, `k`:
/// `[h_kv, n_k, d]`, `v`: `[h_kv, n_k, d_v]`, `h_kv` dividing `h`: grouped-query
/// attention, [`super::kv_group`]); heads run in parallel. A batch dimension folds
/// into `heads` (`[b, h, n, d]` is `[b * h, n, d]`).
pub fn forward_multihead<T: Real>(
    q: &Tensor3<T>,
    k: &Tensor3<T>,
    v: &Tensor3<T>,
    config: &AttentionConfig,
) -> Result<MultiHeadForward<T>> {
    forward_multihead_with_bias(q, k, v, None, config)
}

/// [`forward_multihead`] with an additive score bias `[1 or heads, n_q, n_k]` (one
/// head is shared by every query head; see [`Problem::bias`]).
pub fn forward_multihead_with_bias<T: Real>(
    q: &Tensor3<T>,
    k: &Tensor3<T>,
    v: &Tensor3<T>,
    bias: Option<&Tensor3<T>>,
    config: &AttentionConfig,
) -> Result<MultiHeadForward<T>> {
    let (probs, _) = head_problems(q, k, v, bias, config)?;
    let (n_q, d_v) = (q.rows(), v.cols());
    let mut o = Tensor3::zeros(q.heads(), n_q, d_v)?;
    let mut lse = Matrix::zeros(q.heads(), n_q)?;
    o.as_mut_slice()
        .par_chunks_mut(n_q * d_v)
        .zip(lse.as_mut_slice().par_chunks_mut(n_q))
        .zip(&probs)
        .for_each(|((o_h, lse_h), p)| forward::forward_into(p, o_h, lse_h));
    Ok(MultiHeadForward { o, lse })
}

/// Exact attention backward for `[heads, n, d]` stacks; see [`backward`]. With
/// grouped-query heads, dK and dV of a key/value head are the sums over the query
/// heads that read it ([`super::sum_groups`], in head order).
pub fn backward_multihead<T: Real>(
    q: &Tensor3<T>,
    k: &Tensor3<T>,
    v: &Tensor3<T>,
    fwd: &MultiHeadForward<T>,
    d_o: &Tensor3<T>,
    config: &AttentionConfig,
) -> Result<MultiHeadGradients<T>> {
    backward_multihead_with_bias(q, k, v, None, fwd, d_o, config)
}

/// [`backward_multihead`] with the bias the forward used
/// ([`forward_multihead_with_bias`]).
pub fn backward_multihead_with_bias<T: Real>(
    q: &Tensor3<T>,
    k: &Tensor3<T>,
    v: &Tensor3<T>,
    bias: Option<&Tensor3<T>>,
    fwd: &MultiHeadForward<T>,
    d_o: &Tensor3<T>,
    config: &AttentionConfig,
) -> Result<MultiHeadGradients<T>> {
    let (probs, g) = head_problems(q, k, v, bias, config)?;
    let (h, n_q, n_k, d, d_v) = (q.heads(), q.rows(), k.rows(), q.cols(), v.cols());
    check_backward_stacks(&probs, fwd, d_o)?;
    // Per query head first; grouped heads are summed afterwards.
    let mut grads = MultiHeadGradients {
        dq: Tensor3::zeros(h, n_q, d)?,
        dk: Tensor3::zeros(h, n_k, d)?,
        dv: Tensor3::zeros(h, n_k, d_v)?,
    };
    grads
        .dq
        .as_mut_slice()
        .par_chunks_mut(n_q * d)
        .zip(grads.dk.as_mut_slice().par_chunks_mut(n_k * d))
        .zip(grads.dv.as_mut_slice().par_chunks_mut(n_k * d_v))
        .enumerate()
        .for_each(|(i, ((dq, dk), dv))| {
            let d_o = d_o.head(i).as_slice();
            let delta = row_deltas(d_o, fwd.o.head(i).as_slice(), d_v);
            let up = Upstream {
                d_o,
                lse: fwd.lse.row(i),
                delta: &delta,
            };
            backward::backward_into(&probs[i], &up, dq, dk, dv);
        });
    if g > 1 {
        grads.dk = super::sum_groups(&grads.dk, g)?;
        grads.dv = super::sum_groups(&grads.dv, g)?;
    }
    Ok(grads)
}
