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
//! backward costs about 1.4x FlashAttention-2's single pass (seven tile products per
//! tile pair instead of five); a later fused kernel can trade that for memory without
//! changing the results' definition. K and V are packed once per call for the score and
//! dP tiles ([`pack_transposed`]); the products and the P/dS element updates run on the
//! best SIMD lanes of this CPU ([`crate::simd::dispatch`], once per block).

use super::tile::{
    ab_acc_lanes, abt_packed, atb_acc_lanes, dot, pack_transposed, scale, BLOCK_K, BLOCK_Q,
};
use crate::attention::Problem;
use crate::scalar::Real;
use crate::simd::{dispatch, Kernel, Lanes};
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

/// K and V packed for the score and dP tiles (O(n d) memory, built once per call).
struct Packed<T> {
    kt: Vec<T>,
    vt: Vec<T>,
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
    let pk = Packed {
        kt: pack_transposed(p.k.as_slice(), d),
        vt: pack_transposed(p.v.as_slice(), d_v),
    };
    let pk = &pk;
    dk.par_chunks_mut(BLOCK_K * d)
        .zip(dv.par_chunks_mut(BLOCK_K * d_v))
        .enumerate()
        .for_each(|(b, (dk, dv))| {
            dispatch(KeyBlock {
                p,
                up,
                pk,
                j0: b * BLOCK_K,
                dk,
                dv,
            })
        });
    dq.par_chunks_mut(BLOCK_Q * d)
        .enumerate()
        .for_each(|(b, dq)| {
            dispatch(QueryBlock {
                p,
                up,
                pk,
                i0: b * BLOCK_Q,
                dq,
            })
        });
}

/// Scratch tiles for one (query block, key block) pair, `BLOCK_Q x BLOCK_K` each.
struct Tiles<T> {
    /// P.
    p: Vec<T>,
    /// dS.
    ds: Vec<T>,
}

impl<T: Real> Tiles<T> {
    fn new() -> Self {
        Self {
            p: vec![T::ZERO; BLOCK_Q * BLOCK_K],
            ds: vec![T::ZERO; BLOCK_Q * BLOCK_K],
        }
    }

    /// Fills `p` and `ds` (row stride `BLOCK_K`, zero past the visible keys) for
    /// queries `[i0, i0 + rows)` and keys `[j0, j0 + cols)`; returns both trimmed to
    /// `rows` rows.
    #[inline(always)]
    fn compute<V: Lanes<Elem = T>>(
        &mut self,
        v: V,
        pr: &Problem<'_, T>,
        up: &Upstream<'_, T>,
        pk: &Packed<T>,
        (i0, rows): (usize, usize),
        (j0, cols): (usize, usize),
    ) -> (&[T], &[T]) {
        let (d, d_v) = (pr.d(), pr.d_v());
        let p = &mut self.p[..rows * BLOCK_K];
        let ds = &mut self.ds[..rows * BLOCK_K];
        abt_packed(
            v,
            pr.q.rows_slice(i0, i0 + rows),
            d,
            &pk.kt[j0 * d..(j0 + BLOCK_K) * d],
            pr.tau,
            p,
        );
        abt_packed(
            v,
            &up.d_o[i0 * d_v..(i0 + rows) * d_v],
            d_v,
            &pk.vt[j0 * d_v..(j0 + BLOCK_K) * d_v],
            T::ONE,
            ds,
        );
        let w = V::WIDTH;
        for (r, (p_row, ds_row)) in p
            .chunks_exact_mut(BLOCK_K)
            .zip(ds.chunks_exact_mut(BLOCK_K))
            .enumerate()
        {
            let i = i0 + r;
            let visible = pr.key_end(i).saturating_sub(j0).min(cols);
            let lse = up.lse[i];
            if lse == T::NEG_INFINITY || visible == 0 {
                // A fully masked row has P = 0 (see `Mask`).
                p_row.fill(T::ZERO);
                ds_row.fill(T::ZERO);
                continue;
            }
            // Masked keys: S = -inf, so P = e^{-inf} = 0 and dS = 0 (dP is finite).
            p_row[visible..].fill(T::NEG_INFINITY);
            let (lse, delta) = (v.splat(lse), v.splat(up.delta[i]));
            // SAFETY: BLOCK_K is a multiple of WIDTH; every access is inside the rows.
            unsafe {
                for c in (0..BLOCK_K).step_by(w) {
                    let (pp, dp) = (p_row.as_mut_ptr().add(c), ds_row.as_mut_ptr().add(c));
                    let e = v.exp(v.sub(v.load(pp), lse));
                    v.store(pp, e);
                    v.store(dp, v.mul(e, v.sub(v.load(dp), delta)));
                }
            }
        }
        (p, ds)
    }
}

/// dK and dV for keys `[j0, j0 + cols)`, summed over the query blocks that see them.
struct KeyBlock<'a, 'p, T> {
    p: &'a Problem<'p, T>,
    up: &'a Upstream<'a, T>,
    pk: &'a Packed<T>,
    j0: usize,
    dk: &'a mut [T],
    dv: &'a mut [T],
}

impl<T: Real> Kernel<T> for KeyBlock<'_, '_, T> {
    type Out = ();
    #[inline(always)]
    fn run<V: Lanes<Elem = T>>(self, v: V) {
        let Self {
            p,
            up,
            pk,
            j0,
            dk,
            dv,
        } = self;
        let (d, d_v) = (p.d(), p.d_v());
        let cols = dv.len() / d_v;
        dk.fill(T::ZERO);
        dv.fill(T::ZERO);
        let mut tiles = Tiles::new();
        // Rows before first_query(j0) see none of these keys.
        let mut i0 = p.first_query(j0) / BLOCK_Q * BLOCK_Q;
        while i0 < p.n_q() {
            let rows = BLOCK_Q.min(p.n_q() - i0);
            let (pt, ds) = tiles.compute(v, p, up, pk, (i0, rows), (j0, cols));
            atb_acc_lanes(
                v,
                pt,
                BLOCK_K,
                cols,
                &up.d_o[i0 * d_v..(i0 + rows) * d_v],
                d_v,
                dv,
            );
            atb_acc_lanes(v, ds, BLOCK_K, cols, p.q.rows_slice(i0, i0 + rows), d, dk);
            i0 += rows;
        }
        scale(p.tau, dk);
    }
}

/// dQ for queries `[i0, i0 + rows)`, summed over the key blocks they see.
struct QueryBlock<'a, 'p, T> {
    p: &'a Problem<'p, T>,
    up: &'a Upstream<'a, T>,
    pk: &'a Packed<T>,
    i0: usize,
    dq: &'a mut [T],
}

impl<T: Real> Kernel<T> for QueryBlock<'_, '_, T> {
    type Out = ();
    #[inline(always)]
    fn run<V: Lanes<Elem = T>>(self, v: V) {
        let Self { p, up, pk, i0, dq } = self;
        let d = p.d();
        let rows = dq.len() / d;
        dq.fill(T::ZERO);
        let mut tiles = Tiles::new();
        let key_stop = p.key_end(i0 + rows - 1);
        let mut j0 = 0;
        while j0 < key_stop {
            let cols = BLOCK_K.min(p.n_k() - j0);
            let (_, ds) = tiles.compute(v, p, up, pk, (i0, rows), (j0, cols));
            ab_acc_lanes(v, ds, BLOCK_K, cols, p.k.rows_slice(j0, j0 + cols), d, dq);
            j0 += cols;
        }
        scale(p.tau, dq);
    }
}
