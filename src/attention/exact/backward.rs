//! Tiled backward pass (docs/math.md §2.3): given dO, the forward's `O` and `lse`,
//!
//! ```text
//! P_ij  = e^{S_ij - lse_i}           (recomputed per tile; 0 where masked)
//! delta = rowsum(dO o O)
//! dV    = P^T dO
//! dS    = P o (dO V^T - delta 1^T)
//! dQ    = tau dS K,      dK = tau dS^T Q
//! ```
//!
//! One pass, FlashAttention-2's loop order: for each key block, the query blocks that
//! see it (from `query_range`, so tiles wholly outside a causal mask or a window are
//! skipped) in
//! increasing order. Per (query block, key block) pair it recomputes the score tile and
//! the dP tile once ([`abt_packed`]; no `n_q x n_k` storage), forms P and dS from them
//! and does three accumulating products, `dV_j += P^T dO_i`, `dK_j += dS^T Q_i` and
//! `dQ_i += dS K_j`: five tile products per pair (the earlier two-pass design took
//! seven and evaluated each P tile twice).
//!
//! Determinism without atomics: the key blocks are dealt to a fixed number `G` of
//! groups ([`groups`]; a function of the shape only, never of the thread count) and the
//! groups run in parallel. A group owns dK and dV of its key blocks outright, and owns
//! a partial dQ buffer (`n_q x d`) into which it accumulates `dS K_j` over its key
//! blocks in increasing order; group 0's partial is `dq` itself. After all groups
//! finish, `dQ = tau ((partial_0 + partial_1) + ... + partial_{G-1})`, summed in that
//! order for every entry (in parallel over query blocks). Every output element is thus
//! produced by one fixed sequence of operations, so the bits do not depend on the
//! thread count. dQ's summation order depends on `G`, and the rounding allowance
//! (`fuzzing::enclosure::allowance`: gamma_{n_k + 1} per product) still covers it: a
//! term of dQ_ic from a key of group `s` passes through at most `c_s` roundings in that
//! group's chain of multiply-adds (`c_s` the keys of group `s`; with FMA, or a rounded
//! product and then additions, the first addition being onto 0) and `G - 1` additions
//! in the reduction, and `G - 1 <= n_k - c_s` because `G <= nb` leaves every other
//! group at least one key; so at most `n_k` roundings, as in a single chain. Additions
//! add no underflow error (a subnormal sum is exact), so the allowance's
//! `eta (n_k + 2)` is unchanged too.
//!
//! Memory: besides the outputs, K and V packed once per call ([`pack_transposed`],
//! O(n d)), two `BLOCK_Q x BLOCK_K` tiles per group, and `G - 1` partial dQ buffers,
//! `(G - 1) n_q d` values (at most 7 `n_q d`, and at most 2^24 values unless that
//! leaves fewer than 2 groups; see [`groups`]), allocated once per call. The products
//! and the P/dS element updates run on the best SIMD lanes of this CPU
//! ([`crate::simd::dispatch`], once per group).

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

/// Most key-block groups (the backward's parallelism within one head).
const MAX_GROUPS: usize = 8;
/// Budget, in values, for the partial dQ buffers beyond `dq` itself.
const PARTIAL_BUDGET: usize = 1 << 24;

/// The number `G` of key-block groups of the backward for `n_q` queries, `n_k` keys and
/// head dimension `d`: a function of the shape only, so the results do not depend on
/// the thread count.
///
/// `G = min(nb, G_mem)` with `nb = ceil(n_k / BLOCK_K)` key blocks and `G_mem` the
/// largest of 8, 4, 2 whose `G_mem - 1` partial dQ buffers fit 2^24 values
/// (`(G_mem - 1) n_q d <= 2^24`: 64 MiB in f32, 128 MiB in f64), or 2 when none does
/// (then the extra memory is one more dQ, `n_q d` values). Powers of two, so that the
/// groups (of nearly equal work, see [`group_of`]) share out evenly over the usual
/// thread counts.
pub(crate) fn groups(n_q: usize, n_k: usize, d: usize) -> usize {
    let nb = n_k.div_ceil(BLOCK_K).max(1);
    let mut g_mem = MAX_GROUPS;
    while g_mem > 2 && (g_mem - 1) * n_q * d > PARTIAL_BUDGET {
        g_mem /= 2;
    }
    nb.min(g_mem)
}

/// The group of key block `b` among `g`: dealt in a boustrophedon (0, 1, ..., g - 1,
/// g - 1, ..., 1, 0, 0, 1, ...), so that under a causal mask, where key block `b` is
/// seen by about `nb - b` query blocks, every group gets about the same work.
fn group_of(b: usize, g: usize) -> usize {
    let (round, pos) = (b / g, b % g);
    if round % 2 == 0 {
        pos
    } else {
        g - 1 - pos
    }
}

/// Writes dQ (`n_q x d`), dK (`n_k x d`) and dV (`n_k x d_v`).
pub(crate) fn backward_into<T: Real>(
    p: &Problem<'_, T>,
    up: &Upstream<'_, T>,
    dq: &mut [T],
    dk: &mut [T],
    dv: &mut [T],
) {
    let (n_q, d, d_v) = (p.n_q(), p.d(), p.d_v());
    let pk = Packed {
        kt: pack_transposed(p.k.as_slice(), d),
        vt: pack_transposed(p.v.as_slice(), d_v),
    };
    let g = groups(n_q, p.n_k(), d);
    let mut partials = vec![T::ZERO; (g - 1) * n_q * d];
    let mut tasks: Vec<Group<'_, '_, T>> = std::iter::once(&mut *dq)
        .chain(partials.chunks_exact_mut(n_q * d))
        .map(|dq| Group {
            p,
            up,
            pk: &pk,
            blocks: Vec::new(),
            dq,
        })
        .collect();
    for (b, (dk, dv)) in dk
        .chunks_mut(BLOCK_K * d)
        .zip(dv.chunks_mut(BLOCK_K * d_v))
        .enumerate()
    {
        tasks[group_of(b, g)].blocks.push((b * BLOCK_K, dk, dv));
    }
    tasks.into_par_iter().for_each(dispatch);
    let tau = p.tau;
    dq.par_chunks_mut(BLOCK_Q * d)
        .enumerate()
        .for_each(|(b, rows)| {
            let at = b * BLOCK_Q * d..b * BLOCK_Q * d + rows.len();
            for part in partials.chunks_exact(n_q * d) {
                for (x, &y) in rows.iter_mut().zip(&part[at.clone()]) {
                    *x += y;
                }
            }
            scale(tau, rows);
        });
}

/// Scratch tiles for one (query block, key block) pair, `BLOCK_Q x BLOCK_K` each.
struct Tiles<T> {
    /// P.
    p: Vec<T>,
    /// dS.
    ds: Vec<T>,
    /// The softcap's slope `sech^2(S / c)` (empty without a softcap).
    slope: Vec<T>,
}

impl<T: Real> Tiles<T> {
    fn new(softcap: bool) -> Self {
        Self {
            p: vec![T::ZERO; BLOCK_Q * BLOCK_K],
            ds: vec![T::ZERO; BLOCK_Q * BLOCK_K],
            slope: vec![T::ZERO; if softcap { BLOCK_K } else { 0 }],
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
            let (lo, hi) = pr.visible_cols(i, j0, cols);
            let lse = up.lse[i];
            if lse == T::NEG_INFINITY || lo == hi {
                // A fully masked row, or one that sees none of these keys, has P = 0.
                p_row.fill(T::ZERO);
                ds_row.fill(T::ZERO);
                continue;
            }
            // Masked keys: S = -inf, so P = e^{-inf} = 0 and dS = 0 (dP is finite).
            p_row[..lo].fill(T::NEG_INFINITY);
            p_row[hi..].fill(T::NEG_INFINITY);
            if let Some(c) = pr.softcap {
                super::softcap::cap_row(v, c, (lo, hi), p_row, Some(&mut self.slope));
            }
            super::forward::add_bias(pr, i, j0, (lo, hi), p_row);
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
            if pr.softcap.is_some() {
                // dS of the raw score: times the cap's slope (0 outside lo..hi, where
                // dS is already 0).
                for (d, &g) in ds_row[lo..hi].iter_mut().zip(&self.slope[lo..hi]) {
                    *d *= g;
                }
            }
        }
        (p, ds)
    }
}

/// One group of key blocks: dK and dV of its blocks, and its partial dQ (unscaled),
/// `sum_j dS_{:, j} K_j` over its blocks `j` in increasing order.
struct Group<'a, 'p, T> {
    p: &'a Problem<'p, T>,
    up: &'a Upstream<'a, T>,
    pk: &'a Packed<T>,
    /// (first key, dK rows, dV rows) of each of the group's key blocks, increasing.
    blocks: Vec<(usize, &'a mut [T], &'a mut [T])>,
    /// The group's partial dQ, `n_q x d`.
    dq: &'a mut [T],
}

impl<T: Real> Kernel<T> for Group<'_, '_, T> {
    type Out = ();
    #[inline(always)]
    fn run<V: Lanes<Elem = T>>(self, v: V) {
        let Self {
            p,
            up,
            pk,
            blocks,
            dq,
        } = self;
        let (d, d_v) = (p.d(), p.d_v());
        dq.fill(T::ZERO);
        let mut tiles = Tiles::new(p.softcap.is_some());
        for (j0, dk, dv) in blocks {
            let cols = dv.len() / d_v;
            let k_blk = p.k.rows_slice(j0, j0 + cols);
            dk.fill(T::ZERO);
            dv.fill(T::ZERO);
            // Only the rows from the first that sees key j0 to the last that sees key
            // j0 + cols - 1 see any of these keys (both ends are non-decreasing).
            let mut i0 = p.first_query(j0) / BLOCK_Q * BLOCK_Q;
            let row_stop = p.query_range(j0 + cols - 1).end;
            while i0 < row_stop {
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
                ab_acc_lanes(
                    v,
                    ds,
                    BLOCK_K,
                    cols,
                    k_blk,
                    d,
                    &mut dq[i0 * d..(i0 + rows) * d],
                );
                i0 += rows;
            }
            scale(p.tau, dk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_follow_the_stated_rule() {
        assert_eq!(groups(1, 1, 1), 1);
        assert_eq!(groups(100, BLOCK_K, 8), 1);
        assert_eq!(groups(100, BLOCK_K + 1, 8), 2);
        assert_eq!(groups(4096, 4096, 64), MAX_GROUPS);
        // 2^16 x 64 = 2^22 values per dQ: 1 + 3 (not 1 + 7) fit the 2^24 budget.
        assert_eq!(groups(1 << 16, 1 << 16, 64), 4);
        assert_eq!(groups(1 << 15, 1 << 16, 64), 8);
        assert_eq!(groups(1 << 15, 5 * BLOCK_K, 64), 5);
        // Past the budget, still two groups (one extra dQ).
        assert_eq!(groups(1 << 20, 1 << 20, 64), 2);
        for (n_q, n_k, d) in [
            (1, 1, 1),
            (700, 1100, 16),
            (1 << 16, 1 << 16, 64),
            (1 << 20, 1 << 20, 128),
        ] {
            let g = groups(n_q, n_k, d);
            assert!((1..=MAX_GROUPS).contains(&g) && g <= n_k.div_ceil(BLOCK_K));
            assert!(g <= 2 || (g - 1) * n_q * d <= PARTIAL_BUDGET);
        }
    }

    #[test]
    fn causal_work_is_balanced_across_groups() {
        // Key block b is seen by nb - b query blocks under a square causal mask.
        for (nb, g) in [(64, 8), (18, 8), (16, 8), (9, 8), (2, 2)] {
            let mut work = vec![0usize; g];
            let mut blocks = vec![0usize; g];
            for b in 0..nb {
                work[group_of(b, g)] += nb - b;
                blocks[group_of(b, g)] += 1;
            }
            assert!(blocks.iter().all(|&c| c >= 1), "{nb} {g}: an empty group");
            let (lo, hi) = (*work.iter().min().unwrap(), *work.iter().max().unwrap());
            // Within one key block's work of each other after every full round pair.
            assert!(hi - lo <= nb, "{nb} {g}: {work:?}");
            if nb % (2 * g) == 0 {
                assert_eq!(lo, hi, "{nb} {g}: {work:?}");
            }
        }
    }
}
