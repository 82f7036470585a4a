//! Tiled backward pass (MATH.md 1.1): given dO, the forward's `O` and `lse`,
//!
//! ```text
//! P_ij  = e^{S_ij - lse_i}           (recomputed per tile; 0 where masked)
//! delta = rowsum(dO o O)
//! dV    = P^T dO
//! dS    = P o (dO V^T - delta 1^T)
//! dQ    = tau dS K,      dK = tau dS^T Q
//! ```
//!
//! Determinism without atomics: two passes, each owning its outputs. The key pass runs
//! in parallel over key blocks and accumulates dK and dV over the query blocks in a
//! fixed order; the query pass runs in parallel over query blocks and accumulates dQ.
//! Both recompute P and dS from Q, K, V, dO and lse (no `n_q x n_k` storage), so the
//! backward costs about 1.5x FlashAttention-2's single pass; a later fused kernel can
//! trade that for memory without changing the results' definition.

use super::tile::{ab_acc, abt, atb_acc, dot, scale, BLOCK_K, BLOCK_Q};
use crate::attention::Problem;
use crate::scalar::Real;
use rayon::prelude::*;

/// The inputs of the backward besides the problem itself.
pub(crate) struct Upstream<'a, T> {
    /// dL/dO, `n_q x d_v`.
    pub d_o: &'a [T],
    /// The forward's row log-sum-exp, `n_q`.
    pub lse: &'a [T],
    /// delta_i = dO_i . O_i, `n_q`.
    pub delta: &'a [T],
}

/// delta_i = dO_i . O_i for every row (`d_v` columns each).
pub(crate) fn row_deltas<T: Real>(d_o: &[T], o: &[T], d_v: usize) -> Vec<T> {
    d_o.chunks_exact(d_v)
        .zip(o.chunks_exact(d_v))
        .map(|(a, b)| dot(a, b))
        .collect()
}

/// Writes dQ (`n_q x d`), dK (`n_k x d`) and dV (`n_k x d_v`).
pub(crate) fn backward_into<T: Real>(
    p: &Problem<'_, T>,
    up: &Upstream<'_, T>,
    dq: &mut [T],
    dk: &mut [T],
    dv: &mut [T],
) {
    let (d, d_v) = (p.d(), p.d_v());
    dk.par_chunks_mut(BLOCK_K * d)
        .zip(dv.par_chunks_mut(BLOCK_K * d_v))
        .enumerate()
        .for_each(|(b, (dk_blk, dv_blk))| key_block(p, up, b * BLOCK_K, dk_blk, dv_blk));
    dq.par_chunks_mut(BLOCK_Q * d)
        .enumerate()
        .for_each(|(b, dq_blk)| query_block(p, up, b * BLOCK_Q, dq_blk));
}

/// Scratch tiles for one (query block, key block) pair.
struct Tiles<T> {
    /// P, `rows x cols`.
    p: Vec<T>,
    /// dS, `rows x cols`.
    ds: Vec<T>,
}

impl<T: Real> Tiles<T> {
    fn new() -> Self {
        Self {
            p: vec![T::ZERO; BLOCK_Q * BLOCK_K],
            ds: vec![T::ZERO; BLOCK_Q * BLOCK_K],
        }
    }

    /// Fills `p` and `ds` for queries `[i0, i0 + rows)` and keys `[j0, j0 + cols)`;
    /// returns the two tiles trimmed to `rows x cols`.
    fn compute(
        &mut self,
        pr: &Problem<'_, T>,
        up: &Upstream<'_, T>,
        (i0, rows): (usize, usize),
        (j0, cols): (usize, usize),
    ) -> (&[T], &[T]) {
        let (d, d_v) = (pr.d(), pr.d_v());
        let p = &mut self.p[..rows * cols];
        let ds = &mut self.ds[..rows * cols];
        abt(
            pr.q.rows_slice(i0, i0 + rows),
            pr.k.rows_slice(j0, j0 + cols),
            d,
            pr.tau,
            p,
        );
        abt(
            &up.d_o[i0 * d_v..(i0 + rows) * d_v],
            pr.v.rows_slice(j0, j0 + cols),
            d_v,
            T::ONE,
            ds,
        );
        for r in 0..rows {
            let i = i0 + r;
            let visible = pr.key_end(i).saturating_sub(j0).min(cols);
            let (p_row, ds_row) = (
                &mut p[r * cols..(r + 1) * cols],
                &mut ds[r * cols..(r + 1) * cols],
            );
            let lse = up.lse[i];
            if lse == T::NEG_INFINITY {
                // A fully masked row has P = 0 (see `Mask`).
                p_row.fill(T::ZERO);
                ds_row.fill(T::ZERO);
                continue;
            }
            for c in 0..visible {
                p_row[c] = (p_row[c] - lse).exp();
                ds_row[c] = p_row[c] * (ds_row[c] - up.delta[i]);
            }
            p_row[visible..].fill(T::ZERO);
            ds_row[visible..].fill(T::ZERO);
        }
        (p, ds)
    }
}

/// dK and dV for keys `[j0, j0 + cols)`, summed over the query blocks that see them.
fn key_block<T: Real>(
    p: &Problem<'_, T>,
    up: &Upstream<'_, T>,
    j0: usize,
    dk: &mut [T],
    dv: &mut [T],
) {
    let d_v = p.d_v();
    let cols = dv.len() / d_v;
    dk.fill(T::ZERO);
    dv.fill(T::ZERO);
    let mut tiles = Tiles::new();
    // Rows before first_query(j0) see none of these keys.
    let mut i0 = p.first_query(j0) / BLOCK_Q * BLOCK_Q;
    while i0 < p.n_q() {
        let rows = BLOCK_Q.min(p.n_q() - i0);
        let (pt, ds) = tiles.compute(p, up, (i0, rows), (j0, cols));
        atb_acc(pt, &up.d_o[i0 * d_v..(i0 + rows) * d_v], cols, dv);
        atb_acc(ds, p.q.rows_slice(i0, i0 + rows), cols, dk);
        i0 += rows;
    }
    scale(p.tau, dk);
}

/// dQ for queries `[i0, i0 + rows)`, summed over the key blocks they see.
fn query_block<T: Real>(p: &Problem<'_, T>, up: &Upstream<'_, T>, i0: usize, dq: &mut [T]) {
    let d = p.d();
    let rows = dq.len() / d;
    dq.fill(T::ZERO);
    let mut tiles = Tiles::new();
    let key_stop = p.key_end(i0 + rows - 1);
    let mut j0 = 0;
    while j0 < key_stop {
        let cols = BLOCK_K.min(p.n_k() - j0);
        let (_, ds) = tiles.compute(p, up, (i0, rows), (j0, cols));
        ab_acc(ds, p.k.rows_slice(j0, j0 + cols), d, dq);
        j0 += cols;
    }
    scale(p.tau, dq);
}
