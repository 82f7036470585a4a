//! Tiled forward pass with an online softmax (docs/math.md §2.2; FlashAttention's scheme).
//!
//! For each block of `BLOCK_Q` query rows, key blocks are visited in increasing order.
//! Each row keeps a running maximum `m`, a running denominator `l = sum_j e^{S_ij - m}`
//! and an accumulator `acc = sum_j e^{S_ij - m} v_j`; when a new block raises the
//! maximum, both are multiplied by `e^{m_old - m_new}`. At the end `O_i = acc / l` and
//! `lse_i = m + ln l`. No `n_q x n_k` matrix exists at any time: the working memory is
//! one score tile and one accumulator per query block, plus K packed once per call
//! (`n_k x d`, see [`pack_transposed`](super::tile::pack_transposed)).
//!
//! Key blocks lying wholly outside a block's visible keys are not visited, so causal
//! attention costs about half the work and a sliding window of width `w` about
//! `w / n_k` of it.
//!
//! The tile products and the row updates run on the best SIMD lanes of this CPU
//! ([`crate::simd::dispatch`], once per query block); `exp` is the lanes' exp.

use super::tile::{ab_acc_lanes, abt_packed, exp1, pack_transposed, scale, BLOCK_K, BLOCK_Q};
use crate::attention::Problem;
use crate::scalar::Real;
use crate::simd::{dispatch, Kernel, Lanes};
use rayon::prelude::*;

/// Writes `O` (`n_q x d_v`, row-major) into `o` and the row log-sum-exp into `lse`.
///
/// `o.len() == n_q * d_v` and `lse.len() == n_q` (checked by the callers). Query
/// blocks run in parallel; each is computed by one fixed sequence of operations, so
/// the bits do not depend on the thread count.
pub(crate) fn forward_into<T: Real>(p: &Problem<'_, T>, o: &mut [T], lse: &mut [T]) {
    let d_v = p.d_v();
    let kt = pack_transposed(p.k.as_slice(), p.d());
    o.par_chunks_mut(BLOCK_Q * d_v)
        .zip(lse.par_chunks_mut(BLOCK_Q))
        .enumerate()
        .for_each(|(b, (o_blk, lse_blk))| {
            dispatch(QueryBlock {
                p,
                kt: &kt,
                i0: b * BLOCK_Q,
                o_blk,
                lse_blk,
            })
        });
}

/// One query block `[i0, i0 + rows)`, `rows = lse_blk.len()`.
struct QueryBlock<'a, 'p, T> {
    p: &'a Problem<'p, T>,
    kt: &'a [T],
    i0: usize,
    o_blk: &'a mut [T],
    lse_blk: &'a mut [T],
}

impl<T: Real> Kernel<T> for QueryBlock<'_, '_, T> {
    type Out = ();
    #[inline(always)]
    fn run<V: Lanes<Elem = T>>(self, v: V) {
        let Self {
            p,
            kt,
            i0,
            o_blk,
            lse_blk,
        } = self;
        let (d, d_v, rows) = (p.d(), p.d_v(), lse_blk.len());
        let q_blk = p.q.rows_slice(i0, i0 + rows);
        let mut m = [T::NEG_INFINITY; BLOCK_Q];
        let mut l = [T::ZERO; BLOCK_Q];
        let acc = o_blk; // accumulate in place, normalise at the end
        acc.fill(T::ZERO);
        let mut s = [T::ZERO; BLOCK_Q * BLOCK_K];
        let s = &mut s[..rows * BLOCK_K];

        // Both ends of the rows' key ranges are non-decreasing: the block's first row
        // starts lowest and its last row ends highest. Key blocks stay aligned to
        // BLOCK_K (the packed K^T is laid out in whole blocks).
        let key_stop = p.key_end(i0 + rows - 1);
        let mut j0 = p.key_range(i0).start / BLOCK_K * BLOCK_K;
        while j0 < key_stop {
            let cols = BLOCK_K.min(p.n_k() - j0);
            let kt_blk = &kt[j0 * d..(j0 + BLOCK_K) * d];
            abt_packed(v, q_blk, d, kt_blk, p.tau, s);
            for (r, s_row) in s.chunks_exact_mut(BLOCK_K).enumerate() {
                let (lo, hi) = p.visible_cols(i0 + r, j0, cols);
                s_row[..lo].fill(T::NEG_INFINITY);
                s_row[hi..].fill(T::NEG_INFINITY);
                if let Some(c) = p.softcap {
                    super::softcap::cap_row(v, c, (lo, hi), s_row, None);
                }
                add_bias(p, i0 + r, j0, (lo, hi), s_row);
                let m_new = row_max(v, s_row).max(m[r]);
                if m_new == T::NEG_INFINITY {
                    // The row has seen no key yet: nothing to accumulate.
                    s_row.fill(T::ZERO);
                    continue;
                }
                // alpha = e^{m_old - m_new}; exactly 0 when nothing was seen before.
                let alpha = if m[r] == T::NEG_INFINITY {
                    T::ZERO
                } else {
                    exp1(v, m[r] - m_new)
                };
                // e^{-inf} = 0 for masked entries.
                let row_sum = exp_shifted_sum(v, s_row, m_new);
                l[r] = alpha * l[r] + row_sum;
                if alpha != T::ONE {
                    scale(alpha, &mut acc[r * d_v..(r + 1) * d_v]);
                }
                m[r] = m_new;
            }
            ab_acc_lanes(v, s, BLOCK_K, cols, p.v.rows_slice(j0, j0 + cols), d_v, acc);
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
}

/// Adds row `i` of the problem's bias (if any) to the visible columns `lo..hi` of a
/// score row whose first column is key `j0` (one rounding per entry; `-inf` hides).
#[inline(always)]
pub(super) fn add_bias<T: Real>(
    p: &Problem<'_, T>,
    i: usize,
    j0: usize,
    (lo, hi): (usize, usize),
    s_row: &mut [T],
) {
    if let Some(b) = p.bias {
        for (s, &x) in s_row[lo..hi].iter_mut().zip(&b.row(i)[j0 + lo..j0 + hi]) {
            *s += x;
        }
    }
}

/// The largest entry of a `BLOCK_K` row.
#[inline(always)]
fn row_max<V: Lanes>(v: V, row: &[V::Elem]) -> V::Elem {
    let w = V::WIDTH;
    assert!(row.len() == BLOCK_K);
    // SAFETY: BLOCK_K is a multiple of WIDTH; every load is inside the row.
    unsafe {
        let mut mx = v.load(row.as_ptr());
        for c in (w..BLOCK_K).step_by(w) {
            mx = v.max(mx, v.load(row.as_ptr().add(c)));
        }
        v.reduce_max(mx)
    }
}

/// `row[j] = e^{row[j] - shift}` for a `BLOCK_K` row; returns the sum (lane partial
/// sums, then the lanes' fixed reduction).
#[inline(always)]
fn exp_shifted_sum<V: Lanes>(v: V, row: &mut [V::Elem], shift: V::Elem) -> V::Elem {
    let w = V::WIDTH;
    assert!(row.len() == BLOCK_K);
    let sh = v.splat(shift);
    let mut sum = v.splat(V::Elem::ZERO);
    // SAFETY: as in `row_max`.
    unsafe {
        for c in (0..BLOCK_K).step_by(w) {
            let p = row.as_mut_ptr().add(c);
            let e = v.exp(v.sub(v.load(p), sh));
            v.store(p, e);
            sum = v.add(sum, e);
        }
    }
    v.reduce_add(sum)
}
