//! Tiled forward pass with an online softmax (MATH.md 1.1; FlashAttention's scheme).
//!
//! For each block of `BLOCK_Q` query rows, key blocks are visited in increasing order.
//! Each row keeps a running maximum `m`, a running denominator `l = sum_j e^{S_ij - m}`
//! and an accumulator `acc = sum_j e^{S_ij - m} v_j`; when a new block raises the
//! maximum, both are multiplied by `e^{m_old - m_new}`. At the end `O_i = acc / l` and
//! `lse_i = m + ln l`. No `n_q x n_k` matrix exists at any time: the working memory is
//! one score tile and one accumulator per query block.
//!
//! Key blocks lying wholly beyond a causal mask are not visited, so causal attention
//! costs about half the work.

use super::tile::{ab_acc, abt, scale, BLOCK_K, BLOCK_Q};
use crate::attention::Problem;
use crate::scalar::Real;
use rayon::prelude::*;

/// Writes `O` (`n_q x d_v`, row-major) into `o` and the row log-sum-exp into `lse`.
///
/// `o.len() == n_q * d_v` and `lse.len() == n_q` (checked by the callers). Query
/// blocks run in parallel; each is computed by one fixed sequence of operations, so
/// the bits do not depend on the thread count.
pub(crate) fn forward_into<T: Real>(p: &Problem<'_, T>, o: &mut [T], lse: &mut [T]) {
    let d_v = p.d_v();
    o.par_chunks_mut(BLOCK_Q * d_v)
        .zip(lse.par_chunks_mut(BLOCK_Q))
        .enumerate()
        .for_each(|(b, (o_blk, lse_blk))| query_block(p, b * BLOCK_Q, o_blk, lse_blk));
}

/// One query block `[i0, i0 + rows)`, `rows = lse_blk.len()`.
fn query_block<T: Real>(p: &Problem<'_, T>, i0: usize, o_blk: &mut [T], lse_blk: &mut [T]) {
    let (d, d_v, rows) = (p.d(), p.d_v(), lse_blk.len());
    let q_blk = p.q.rows_slice(i0, i0 + rows);
    let mut m = vec![T::NEG_INFINITY; rows];
    let mut l = vec![T::ZERO; rows];
    let acc = o_blk; // accumulate in place, normalise at the end
    acc.fill(T::ZERO);
    let mut s = vec![T::ZERO; rows * BLOCK_K];

    let key_stop = p.key_end(i0 + rows - 1); // the last row sees the most keys
    let mut j0 = 0;
    while j0 < key_stop {
        let cols = BLOCK_K.min(p.n_k() - j0);
        let s = &mut s[..rows * cols];
        abt(q_blk, p.k.rows_slice(j0, j0 + cols), d, p.tau, s);
        for (r, s_row) in s.chunks_exact_mut(cols).enumerate() {
            let visible = p.key_end(i0 + r).saturating_sub(j0).min(cols);
            s_row[visible..].fill(T::NEG_INFINITY);
            let m_new = s_row.iter().fold(m[r], |a, &x| a.max(x));
            if m_new == T::NEG_INFINITY {
                // The row has seen no key yet: nothing to accumulate.
                s_row.fill(T::ZERO);
                continue;
            }
            // alpha = e^{m_old - m_new}; exactly 0 when nothing was seen before.
            let alpha = if m[r] == T::NEG_INFINITY {
                T::ZERO
            } else {
                (m[r] - m_new).exp()
            };
            let mut row_sum = T::ZERO;
            for x in s_row.iter_mut() {
                *x = (*x - m_new).exp(); // e^{-inf} = 0 for masked entries
                row_sum += *x;
            }
            l[r] = alpha * l[r] + row_sum;
            scale(alpha, &mut acc[r * d_v..(r + 1) * d_v]);
            m[r] = m_new;
        }
        ab_acc(s, p.v.rows_slice(j0, j0 + cols), d_v, acc);
        j0 += cols;
    }

    for r in 0..rows {
        let acc_row = &mut acc[r * d_v..(r + 1) * d_v];
        if l[r] == T::ZERO {
            // Fully masked row: defined as O = 0, lse = -inf (see `Mask`).
            acc_row.fill(T::ZERO);
            lse_blk[r] = T::NEG_INFINITY;
        } else {
            let inv = T::ONE / l[r];
            scale(inv, acc_row);
            lse_blk[r] = m[r] + l[r].ln();
        }
    }
}
