//! The one low-rank primitive every polynomial-engine pass is made of: a masked
//! contraction through a rank-w kernel, by chunked prefix states (docs/math.md §3.4, §3.5;
//! ML24 Algorithm 2 / Lemma I.3 for the prefix form).
//!
//! For output rows a, source rows j, a kernel K_aj = L_a . R_j (L_a, R_j in S^w), a
//! payload X_j in S^p and a visibility end e(a) (non-decreasing in a):
//!
//! ```text
//! Y_a = sum_{j < e(a)} (L_a . R_j) X_j                      (prefix form)
//! Y_j = sum_{a : j < e(a)} (L_a . R_j) X_a                  (transposed form)
//! ```
//!
//! The sources are cut into chunks of `chunk` rows. A row whose visible range ends
//! inside chunk m uses the prefix state Z_m = sum_{j < m C} R_j X_j^T (w x p) and sees
//! the rest of the chunk directly; a row that sees chunk m whole uses Z_{m+1}:
//!
//! ```text
//! Y_rows = L_rows Z_m  +  (mask o (L_rows R_chunk^T)) X_chunk        (two small GEMMs)
//! Z_b    = sum of the pieces' states R_piece^T X_piece before b        (GEMMs, then a scan)
//! ```
//!
//! Only the boundaries some row uses get a state (with no mask: one, the total). The
//! sources up to the last of them are cut into pieces that end at every used boundary
//! and are at most a size-dependent length long; blocks of consecutive pieces are
//! processed in three phases: the pieces' states in parallel (one GEMM each), an
//! in-order scan that turns them into the boundaries' prefix states, then the output
//! rows served by those boundaries in parallel (features, the state product and the
//! masked in-chunk product, rows in blocks; the in-chunk block by the [`Direct`] kernel
//! where it applies, in row tiles that form only the columns their rows see). No n x n object and no n x w factor is
//! ever formed; cost O((n_out + n_src) w p + n_out chunk (k + p)) (k = d + g with the
//! direct kernel, w without); the states of one
//! block are bounded in memory.
//!
//! Factors L, R are produced on demand, feature-major (`buf[t * rows + i]`: the layout
//! the vectorised feature maps write and the GEMMs read as a transposed view); payloads
//! row-major. The dense products go through [`Field::matmul`] (generic loop, or SIMD
//! GEMM for floats).
//!
//! Determinism: the pieces, blocks of rows and the order of every sum depend only on
//! the sizes and the mask, never on the thread count, so results are bitwise
//! reproducible for any number of threads.
//!
//! The transposed form is the prefix form on reversed indices: the rows a that see
//! source j form a suffix, which reversal turns into a prefix.
//!
//! # Causal cost against non-causal (docs/perf/causal.md)
//!
//! With n output rows and n sources, rank w, payload width p, point dimension d and
//! kernel degree g (the polynomial engine's factors are P's features, so with a
//! [`Direct`] kernel an in-chunk entry costs d + g instead of w), chunk C and row tiles
//! of T = `TILE` = 32 rows:
//!
//! ```text
//! non-causal: states 2 n w p  + state products 2 n w p                 = 4 n w p flops
//! causal:     states 2 n w p  + state products 2 n w p                  (the same)
//!             + scan (n / C) w p additions, and n / C states of w p written, scanned
//!               and read: about 4 w p / C streamed elements per row
//!             + in-chunk blocks: a row sees about (C + T) / 2 columns of its chunk,
//!               2 (d + g) flops for the kernel entry and 2 p for the payload:
//!               n (C + T)(d + g + p) flops (through the factors: 2 n C (w + p))
//! floor:      causal / non-causal = 1 + ((C + T)(d + g + p) + STATE_COST w p / C) / (4 w p)
//! ```
//!
//! (STATE_COST: one streamed state element against one multiply-add.) At d = 8, g = 4,
//! w = 495, the forward's p = 17 and C = 128 the flop part is 1.14 (the factor path at
//! C = 32 was 1.97); the backward's p of about 90 gives 1.09. [`chunk_for`] picks C
//! minimising the excess; the states and the state products cost the same as
//! without a mask, so the ratio cannot go below 1.

use crate::scalar::matmul::{Strided, StridedMut};
use crate::scalar::Field;
use rayon::prelude::*;

/// A factor (L or R): rows produced on demand, feature-major. `fill(start, end, buf)`
/// writes feature t of row i (start <= i < end) at `buf[t * (end - start) + i - start]`.
pub struct Features<'a, S> {
    /// Features per row (w).
    pub width: usize,
    /// Number of rows.
    pub len: usize,
    /// The row generator.
    pub fill: &'a (dyn Fn(usize, usize, &mut [S]) + Sync),
}

/// Rows of a payload, produced on demand: `fill(start, end, buf)` writes rows
/// `start..end` (row-major, `width` columns) into `buf`.
pub struct Rows<'a, S> {
    /// Columns per row.
    pub width: usize,
    /// Number of rows.
    pub len: usize,
    /// The row generator.
    pub fill: &'a (dyn Fn(usize, usize, &mut [S]) + Sync),
}

/// The kernel of the contraction evaluated directly, for the in-chunk blocks:
/// `L_a . R_j = sum_t coeffs[t] (x_a . y_j)^t` for points x_a, y_j of `dim` coordinates
/// (the polynomial engine's factors are P's features of x_a = a q_a and the powers of
/// y_j = b k_j, so this is an identity in exact arithmetic, docs/math.md §3.3). A block
/// then costs `dim + deg` operations per entry instead of `w`. `left(start, end, buf)`
/// writes the points of rows start..end (row-major, `dim` columns), likewise `right`.
///
/// Used only where its rounding chain is no longer than the factors' (`deg (dim + 2)
/// <= w`, [`Direct::applies`], docs/math.md §4.3), so the a priori rounding estimate
/// stays valid unchanged; otherwise the blocks go through the factors.
pub struct Direct<'a, S> {
    /// Coordinates per point.
    pub dim: usize,
    /// The kernel polynomial's coefficients c_0..c_deg.
    pub coeffs: &'a [S],
    /// Points of the output side (indexed like L).
    pub left: &'a (dyn Fn(usize, usize, &mut [S]) + Sync),
    /// Points of the source side (indexed like R).
    pub right: &'a (dyn Fn(usize, usize, &mut [S]) + Sync),
}

impl<S: Field> Direct<'_, S> {
    /// Whether the direct evaluation replaces width-`w` factor products: its rounding
    /// chain (a `dim`-term dot product, whose error is amplified at most `deg` times by
    /// the polynomial, and Horner's `2 deg` roundings) is at most the factors' `w`-term
    /// dot product, and it is cheaper.
    pub fn applies(&self, w: usize) -> bool {
        let deg = self.coeffs.len().saturating_sub(1);
        deg * (self.dim + 2) <= w && self.dim + deg < w
    }
    /// `k` holds dot products s; replaces each by sum_t c_t s^t (Horner: per entry
    /// `acc = acc s + c_t` from the top coefficient down), using `s` as scratch.
    fn horner(&self, k: &mut [S], s: &mut [S]) {
        let Some((top, rest)) = self.coeffs.split_last() else {
            k.iter_mut().for_each(|x| *x = S::zero());
            return;
        };
        s.clone_from_slice(k);
        k.iter_mut().for_each(|x| *x = top.clone());
        for c in rest.iter().rev() {
            for (x, si) in k.iter_mut().zip(&*s) {
                *x = x.clone() * si.clone() + c.clone();
            }
        }
    }
}

/// Opt-in timers of the contractions' phases (docs/perf/causal.md): off unless the
/// environment variable `POLYATTN_PROFILE` is set when the first contraction runs; then
/// each phase's wall time (states, scan, rows) and, inside the row tasks, the thread time
/// of the query features, the state products and the in-chunk blocks are summed, and
/// [`profile::take`] reads and resets them. Timing never changes a result.
pub mod profile {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    use std::time::Instant;

    /// The timed parts, in [`take`]'s order.
    pub const NAMES: [&str; 7] = [
        "states (wall)",
        "scan (wall)",
        "rows (wall)",
        "rows: query features (thread)",
        "rows: state products (thread)",
        "rows: in-chunk blocks (thread)",
        "setup and output allocation (wall)",
    ];
    static NANOS: [AtomicU64; 7] = [const { AtomicU64::new(0) }; 7];

    fn on() -> bool {
        static ON: OnceLock<bool> = OnceLock::new();
        *ON.get_or_init(|| std::env::var_os("POLYATTN_PROFILE").is_some())
    }

    /// A start time when profiling is on.
    pub(super) fn start() -> Option<Instant> {
        on().then(Instant::now)
    }

    /// Adds the time since `t` to part `i`.
    pub(super) fn stop(t: Option<Instant>, i: usize) {
        if let Some(t) = t {
            NANOS[i].fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
        }
    }

    /// The seconds summed per part since the last call (all zero when off), resetting them.
    pub fn take() -> [f64; 7] {
        std::array::from_fn(|i| NANOS[i].swap(0, Ordering::Relaxed) as f64 * 1e-9)
    }
}

/// Rows per tile of the in-chunk blocks (a tile forms only the columns its rows see).
const TILE: usize = 32;
/// Most output rows per task (the state product is a rows x w x p GEMM).
const ROW_BLOCK: usize = 256;
/// Elements of factor rows a task holds at once (about 256 KiB of f64: cache-sized).
const CACHE_ELEMS: usize = 1 << 15;
/// Source rows per piece (the unit of parallelism of the state phase).
const PIECE_ROWS: usize = 4096;
/// State elements held per block of pieces (w p each; 8 MiB of f64).
const BLOCK_ELEMS: usize = 1 << 20;

/// Reusable buffers of one worker.
struct Scratch<S> {
    l: Vec<S>,
    r: Vec<S>,
    x: Vec<S>,
    k: Vec<S>,
    y: Vec<S>,
    s: Vec<S>,
}

impl<S: Field> Scratch<S> {
    fn new() -> Self {
        Self {
            l: Vec::new(),
            r: Vec::new(),
            x: Vec::new(),
            k: Vec::new(),
            y: Vec::new(),
            s: Vec::new(),
        }
    }
}

/// `buf` resized to `len` (contents unspecified; capacity is kept between uses).
fn sized<S: Field>(buf: &mut Vec<S>, len: usize) -> &mut [S] {
    if buf.len() < len {
        buf.resize(len, S::zero());
    }
    &mut buf[..len]
}

/// One block of output rows: rows `a_lo..a_lo + rows` served by boundary `b`.
struct Task<'o, S> {
    b: usize,
    a_lo: usize,
    nb: usize,
    out: &'o mut [S],
}

/// Y (`left.len x payload.width`, row-major) of the prefix form.
pub fn prefix_contract<S: Field>(
    end: &(dyn Fn(usize) -> usize + Sync),
    left: &Features<'_, S>,
    right: &Features<'_, S>,
    payload: &Rows<'_, S>,
    blocks: Blocks<'_, S>,
) -> Vec<S> {
    let copy = |_: usize, y: &[S], o: &mut [S]| o.clone_from_slice(y);
    prefix_contract_map(end, left, right, payload, blocks, payload.width, &copy)
}

/// How the in-chunk blocks are formed: the chunk length (0: chosen by
/// [`chunk_for`]'s cost model) and the direct kernel, if any.
pub type Blocks<'a, S> = (usize, Option<&'a Direct<'a, S>>);

/// The prefix form with a row epilogue: `finish(a, y_a, out_a)` turns each Y row into
/// the output row a (`out_width` columns; rows that see nothing get y_a = 0). Y itself
/// never exists as a whole (for wide payloads it would be the largest object).
pub fn prefix_contract_map<S: Field>(
    end: &(dyn Fn(usize) -> usize + Sync),
    left: &Features<'_, S>,
    right: &Features<'_, S>,
    payload: &Rows<'_, S>,
    blocks: Blocks<'_, S>,
    out_width: usize,
    finish: &Finish<'_, S>,
) -> Vec<S> {
    let limits = (PIECE_ROWS, BLOCK_ELEMS);
    prefix_contract_with(
        end,
        left,
        right,
        payload,
        blocks,
        (out_width, finish),
        limits,
    )
}

/// A row epilogue: `(row, y_row, out_row)`.
pub type Finish<'a, S> = dyn Fn(usize, &[S], &mut [S]) + Sync + 'a;

/// [`prefix_contract`] with explicit limits (source rows per piece, state elements per
/// block).
fn prefix_contract_with<S: Field>(
    end: &(dyn Fn(usize) -> usize + Sync),
    left: &Features<'_, S>,
    right: &Features<'_, S>,
    payload: &Rows<'_, S>,
    (chunk, direct): Blocks<'_, S>,
    (q, finish): (usize, &Finish<'_, S>),
    (piece_rows, block_elems): (usize, usize),
) -> Vec<S> {
    let (n_out, n_src, w, p) = (left.len, right.len, left.width, payload.width);
    debug_assert_eq!(left.width, right.width);
    debug_assert_eq!(right.len, payload.len);
    let t_setup = profile::start();
    let mut out = vec![S::zero(); n_out * q];
    if n_out == 0 || q == 0 {
        return out;
    }
    if n_src == 0 || p == 0 {
        let y = vec![S::zero(); p];
        for (a, o) in out.chunks_exact_mut(q).enumerate() {
            finish(a, &y, o);
        }
        return out;
    }
    let direct = direct.filter(|k| k.applies(w));
    let chunk = if chunk == 0 {
        chunk_for(
            w,
            p,
            direct.map(|k| (k.dim, k.coeffs.len().saturating_sub(1))),
        )
    } else {
        chunk
    };
    let n_chunks = n_src.div_ceil(chunk);
    let chunk_end = |m: usize| ((m + 1) * chunk).min(n_src);
    // row_lo[m]: first row with e(a) > m C (rows before row_lo[0] see nothing);
    // a_full[m]: first row of group m (e(a) in (m C, (m+1) C]) that sees chunk m whole.
    let row_lo: Vec<usize> = (0..=n_chunks)
        .map(|m| {
            if m == n_chunks {
                n_out
            } else {
                partition_point(n_out, |a| end(a) <= m * chunk)
            }
        })
        .collect();
    let a_full: Vec<usize> = (0..n_chunks)
        .map(|m| {
            let (a0, a1) = (row_lo[m], row_lo[m + 1]);
            a0 + partition_point(a1 - a0, |t| end(a0 + t) < chunk_end(m))
        })
        .collect();
    // Boundary b (state Z_b over sources < b C) serves the rows of group b - 1 that see
    // that chunk whole and the rows of group b that see it in part.
    let rows_of = |b: usize| {
        let lo = if b == 0 { row_lo[0] } else { a_full[b - 1] };
        let hi = if b == n_chunks { n_out } else { a_full[b] };
        (lo, hi)
    };
    let needed: Vec<usize> = (0..=n_chunks)
        .filter(|&b| {
            let (lo, hi) = rows_of(b);
            hi > lo
        })
        .collect();
    // Pieces of sources: (j0, j1, the used boundary it ends at, if any).
    let max_piece = piece_rows.max(1);
    // Sub-blocks of source rows and blocks of output rows whose factors fit in cache.
    let sub = (CACHE_ELEMS / (w + p).max(1)).max(8).min(max_piece);
    let row_block = (CACHE_ELEMS / w.max(1)).clamp(chunk.min(ROW_BLOCK), ROW_BLOCK);
    let mut pieces: Vec<(usize, usize, bool)> = Vec::new();
    let mut piece_of_boundary = vec![usize::MAX; n_chunks + 1];
    let mut pos = 0;
    for &b in &needed {
        let stop = (b * chunk).min(n_src);
        while pos < stop {
            let e = (pos + max_piece).min(stop);
            pieces.push((pos, e, e == stop));
            pos = e;
        }
        if b > 0 {
            piece_of_boundary[b] = pieces.len() - 1;
        }
    }
    let ws = w * p;
    let block_len = (block_elems / ws.max(1)).max(2);
    let n_blocks = pieces.len().div_ceil(block_len).max(1);
    // Output rows in tasks, in row order (boundaries ascending), each with its slice.
    let mut tasks: Vec<Task<'_, S>> = Vec::new();
    {
        let (blind, mut rest) = out.split_at_mut(row_lo[0] * q);
        let y = vec![S::zero(); p];
        for (a, o) in blind.chunks_exact_mut(q).enumerate() {
            finish(a, &y, o);
        }
        let mut at = row_lo[0];
        for &b in &needed {
            let (lo, hi) = rows_of(b);
            debug_assert_eq!(lo, at);
            let mut a = lo;
            while a < hi {
                let e = (a + row_block).min(hi);
                let (mine, tail) = rest.split_at_mut((e - a) * q);
                tasks.push(Task {
                    b,
                    a_lo: a,
                    nb: e - a,
                    out: mine,
                });
                rest = tail;
                a = e;
            }
            at = hi;
        }
    }
    let block_of = |b: usize| {
        if b == 0 {
            0
        } else {
            piece_of_boundary[b] / block_len
        }
    };
    let mut states = vec![S::zero(); pieces.len().min(block_len) * ws];
    let mut running = vec![S::zero(); ws];
    let mut tasks = tasks.into_iter().peekable();
    profile::stop(t_setup, 6);
    for blk in 0..n_blocks {
        let k0 = blk * block_len;
        let k1 = ((blk + 1) * block_len).min(pieces.len());
        // Phase 1: the pieces' states R^T X, in parallel.
        let t = profile::start();
        let my = &pieces[k0.min(k1)..k1];
        states[..my.len() * ws]
            .par_chunks_mut(ws)
            .zip(my.par_iter())
            .for_each_init(Scratch::new, |sc, (st, &(j0, j1, _))| {
                // In sub-blocks whose factor rows stay in cache, accumulated in order
                // (of balanced lengths: no short tail GEMM).
                // A piece of at most ROW_BLOCK rows (a causal chunk) is one product:
                // its state, which outgrows the cache, is then written once.
                let sub = if j1 - j0 <= ROW_BLOCK {
                    (j1 - j0).max(1)
                } else {
                    (j1 - j0).div_ceil((j1 - j0).div_ceil(sub).max(1)).max(1)
                };
                for (i, s0) in (j0..j1).step_by(sub).enumerate() {
                    let s1 = (s0 + sub).min(j1);
                    let len = s1 - s0;
                    let r = sized(&mut sc.r, w * len);
                    (right.fill)(s0, s1, r);
                    let x = sized(&mut sc.x, len * p);
                    (payload.fill)(s0, s1, x);
                    S::matmul(
                        StridedMut::row_major(&mut *st, w, p),
                        Strided::row_major(r, w, len),
                        Strided::row_major(x, len, p),
                        i > 0,
                    );
                }
            });
        profile::stop(t, 0);
        let t = profile::start();
        // Phase 2: in order, the running sum; a piece ending at a used boundary keeps
        // that boundary's prefix state in its slot.
        for (st, &(_, _, at_boundary)) in states.chunks_exact_mut(ws).zip(my) {
            for (z, s) in running.iter_mut().zip(st.iter_mut()) {
                *z = z.clone() + s.clone();
                if at_boundary {
                    *s = z.clone();
                }
            }
        }
        profile::stop(t, 1);
        let t = profile::start();
        // Phase 3: the rows these boundaries serve, in parallel.
        let mut mine = Vec::new();
        while let Some(t) = tasks.next_if(|t| block_of(t.b) == blk) {
            mine.push(t);
        }
        let states = &states;
        mine.into_par_iter().for_each_init(Scratch::new, |sc, t| {
            let state = (t.b > 0).then(|| {
                let k = piece_of_boundary[t.b] - k0;
                &states[k * ws..(k + 1) * ws]
            });
            let part = (t.b < n_chunks).then(|| (t.b * chunk, chunk_end(t.b), row_lo[t.b]));
            rows_task(
                end,
                (left, right, payload, direct),
                state,
                part,
                (t, finish),
                sc,
            );
        });
        profile::stop(t, 2);
    }
    drop(tasks);
    out
}

/// The factors, the payload and the direct kernel of one contraction.
type Factors<'a, S> = (
    &'a Features<'a, S>,
    &'a Features<'a, S>,
    &'a Rows<'a, S>,
    Option<&'a Direct<'a, S>>,
);

/// One block of output rows: Y = L Z (when there is a state) plus, for the rows from
/// `first_partial` on, the part of chunk [j0, j1) they see, directly.
fn rows_task<S: Field>(
    end: &(dyn Fn(usize) -> usize + Sync),
    (left, right, payload, direct): Factors<'_, S>,
    state: Option<&[S]>,
    part: Option<(usize, usize, usize)>,
    (t, finish): (Task<'_, S>, &Finish<'_, S>),
    sc: &mut Scratch<S>,
) {
    let (w, p, nb, a_lo) = (left.width, payload.width, t.nb, t.a_lo);
    let Scratch { l, r, x, k, y, s } = sc;
    let y = sized(y, nb * p);
    let t_f = profile::start();
    let l = sized(l, w * nb);
    (left.fill)(a_lo, a_lo + nb, l);
    profile::stop(t_f, 3);
    let t_z = profile::start();
    let l_t = |off: usize, rows: usize| Strided {
        data: &l[off..],
        rows,
        cols: w,
        rs: 1,
        cs: nb,
    };
    match state {
        Some(z) => S::matmul(
            StridedMut::row_major(&mut *y, nb, p),
            l_t(0, nb),
            Strided::row_major(z, w, p),
            false,
        ),
        None => y.iter_mut().for_each(|z| *z = S::zero()),
    }
    profile::stop(t_z, 4);
    let t_k = profile::start();
    if let Some((j0, j1, first_partial)) = part {
        let off = first_partial.max(a_lo) - a_lo;
        if off < nb {
            let (np, cl) = (nb - off, j1 - j0);
            let x = sized(x, cl * p);
            (payload.fill)(j0, j1, x);
            // The points of the rows and of the chunk (direct kernel), or the chunk's
            // factor R (feature-major, w x cl).
            let dim = direct.map_or(0, |dk| dk.dim);
            let (pts, r) = match direct {
                Some(dk) => {
                    let (xa, yb) = sized(r, dim * (np + cl)).split_at_mut(dim * np);
                    (dk.left)(a_lo + off, a_lo + nb, xa);
                    (dk.right)(j0, j1, yb);
                    (Some((&*xa, &*yb)), &[][..])
                }
                None => {
                    let r = sized(r, w * cl);
                    (right.fill)(j0, j1, r);
                    (None, &*r)
                }
            };
            // Rows in tiles of TILE; a tile's visible columns end where its last row's
            // do (e is non-decreasing), so only the lower triangle of the block is formed.
            let mut t0 = 0;
            while t0 < np {
                let t1 = (t0 + TILE).min(np);
                let (nt, row0) = (t1 - t0, a_lo + off + t0);
                let cols = end(row0 + nt - 1).min(j1).saturating_sub(j0);
                if cols > 0 {
                    let k = sized(k, nt * cols);
                    match (direct, pts) {
                        // K = P(X_rows Y_cols^T): a dim-deep product, then Horner.
                        (Some(dk), Some((xa, yb))) => {
                            S::matmul(
                                StridedMut::row_major(&mut *k, nt, cols),
                                Strided::row_major(&xa[t0 * dim..t1 * dim], nt, dim),
                                Strided::row_major(&yb[..cols * dim], cols, dim).t(),
                                false,
                            );
                            dk.horner(k, sized(s, nt * cols));
                        }
                        _ => S::matmul(
                            StridedMut::row_major(&mut *k, nt, cols),
                            l_t(off + t0, nt),
                            Strided {
                                data: r,
                                rows: w,
                                cols,
                                rs: cl,
                                cs: 1,
                            },
                            false,
                        ),
                    }
                    for (i, row) in k.chunks_exact_mut(cols).enumerate() {
                        let vis = end(row0 + i).min(j1).saturating_sub(j0);
                        row[vis.min(cols)..].iter_mut().for_each(|z| *z = S::zero());
                    }
                    S::matmul(
                        StridedMut::row_major(&mut y[(off + t0) * p..], nt, p),
                        Strided::row_major(k, nt, cols),
                        Strided::row_major(&x[..cols * p], cols, p),
                        true,
                    );
                }
                t0 = t1;
            }
        }
    }
    profile::stop(t_k, 5);
    let q = t.out.len() / nb;
    for (i, (yi, oi)) in y.chunks_exact(p).zip(t.out.chunks_exact_mut(q)).enumerate() {
        finish(a_lo + i, yi, oi);
    }
}

/// Y (`right.len x payload.width`) of the transposed form:
/// Y_j = sum_{a: j < e(a)} (L_a . R_j) X_a, `payload` indexed like `left`.
/// `first(j)` must be the first a with j < e(a) (`left.len` if none).
pub fn transposed_contract<S: Field>(
    first: &(dyn Fn(usize) -> usize + Sync),
    left: &Features<'_, S>,
    right: &Features<'_, S>,
    payload: &Rows<'_, S>,
    blocks: Blocks<'_, S>,
) -> Vec<S> {
    let copy = |_: usize, y: &[S], o: &mut [S]| o.clone_from_slice(y);
    transposed_contract_map(first, left, right, payload, blocks, payload.width, &copy)
}

/// The transposed form with a row epilogue, as [`prefix_contract_map`] (`finish`
/// receives the output row j in the original order).
pub fn transposed_contract_map<S: Field>(
    first: &(dyn Fn(usize) -> usize + Sync),
    left: &Features<'_, S>,
    right: &Features<'_, S>,
    payload: &Rows<'_, S>,
    (chunk, direct): Blocks<'_, S>,
    out_width: usize,
    finish: &Finish<'_, S>,
) -> Vec<S> {
    let (n_a, n_j) = (left.len, right.len);
    // Reversed indices: out row j' = n_j - 1 - j, source a' = n_a - 1 - a;
    // a sees j  <=>  a >= first(j)  <=>  a' < n_a - first(j). The kernel is symmetric
    // in its two sides, so the output side's factor is `right`.
    let (outs, srcs) = (Span::reversed(0, n_j), Span::reversed(0, n_a));
    let end_rev = |jr: usize| n_a - first(outs.index(jr)).min(n_a);
    let finish_rev = |jr: usize, y: &[S], o: &mut [S]| finish(outs.index(jr), y, o);
    let swapped = direct.map(Direct::swapped);
    let mut y = on_spans(
        (right, left, payload, swapped.as_ref()),
        (outs, srcs),
        &|fl, fr, fx, dk| {
            prefix_contract_map(&end_rev, fl, fr, fx, (chunk, dk), out_width, &finish_rev)
        },
    );
    reverse_rows(&mut y, out_width);
    y
}

/// A contiguous part of a factor's or payload's rows, in order or reversed: local row
/// `i` is the parent's row [`Span::index`]`(i)`.
#[derive(Clone, Copy, Debug)]
struct Span {
    off: usize,
    len: usize,
    rev: bool,
}

impl Span {
    fn forward(off: usize, len: usize) -> Self {
        Span {
            off,
            len,
            rev: false,
        }
    }
    fn reversed(off: usize, len: usize) -> Self {
        Span {
            off,
            len,
            rev: true,
        }
    }
    /// The parent's row of local row `i`.
    fn index(self, i: usize) -> usize {
        if self.rev {
            self.off + self.len - 1 - i
        } else {
            self.off + i
        }
    }
    /// `f` (rows of `width`, row-major; feature-major `width x rows` if `features`) on
    /// local rows `s..e`: the parent's rows, reordered when reversed.
    fn fill<S>(
        self,
        f: &(dyn Fn(usize, usize, &mut [S]) + Sync),
        (width, features): (usize, bool),
        (s, e): (usize, usize),
        buf: &mut [S],
    ) {
        let nb = e - s;
        if !self.rev {
            return f(self.off + s, self.off + e, buf);
        }
        f(self.off + self.len - e, self.off + self.len - s, buf);
        if nb == 0 {
            return;
        }
        if features {
            buf[..width * nb]
                .chunks_exact_mut(nb)
                .for_each(|row| row.reverse());
        } else {
            reverse_rows(&mut buf[..nb * width], width);
        }
    }
}

impl<'a, S> Direct<'a, S> {
    /// The same kernel with its two sides exchanged (its polynomial of `x . y` is
    /// symmetric).
    fn swapped(&self) -> Direct<'a, S> {
        Direct {
            dim: self.dim,
            coeffs: self.coeffs,
            left: self.right,
            right: self.left,
        }
    }
}

/// What [`on_spans`] runs: the factors, payload and direct kernel of a sub-problem.
type OnSpans<'b, S, R> =
    dyn Fn(&Features<'_, S>, &Features<'_, S>, &Rows<'_, S>, Option<&Direct<'_, S>>) -> R + 'b;

/// Runs `body` on the factors, payload and direct kernel restricted to `rows` (the
/// output side: `left` and the direct kernel's left points) and `srcs` (`right`,
/// `payload` and the right points).
fn on_spans<S: Field, R>(
    (left, right, payload, direct): Factors<'_, S>,
    (rows, srcs): (Span, Span),
    body: &OnSpans<'_, S, R>,
) -> R {
    let fl =
        |s: usize, e: usize, buf: &mut [S]| rows.fill(left.fill, (left.width, true), (s, e), buf);
    let fr =
        |s: usize, e: usize, buf: &mut [S]| srcs.fill(right.fill, (right.width, true), (s, e), buf);
    let fx = |s: usize, e: usize, buf: &mut [S]| {
        srcs.fill(payload.fill, (payload.width, false), (s, e), buf)
    };
    let (pl, pr);
    let dk = match direct {
        Some(dk) => {
            pl = move |s: usize, e: usize, buf: &mut [S]| {
                rows.fill(dk.left, (dk.dim, false), (s, e), buf)
            };
            pr = move |s: usize, e: usize, buf: &mut [S]| {
                srcs.fill(dk.right, (dk.dim, false), (s, e), buf)
            };
            Some(Direct {
                dim: dk.dim,
                coeffs: dk.coeffs,
                left: &pl,
                right: &pr,
            })
        }
        None => None,
    };
    body(
        &Features {
            width: left.width,
            len: rows.len,
            fill: &fl,
        },
        &Features {
            width: right.width,
            len: srcs.len,
            fill: &fr,
        },
        &Rows {
            width: payload.width,
            len: srcs.len,
            fill: &fx,
        },
        dk.as_ref(),
    )
}

/// The *range form* with a row epilogue (`finish` as in [`prefix_contract_map`]):
///
/// ```text
/// Y_a = sum_{j in range(a)} (L_a . R_j) X_j,     range(a) = [s(a), e(a))
/// ```
///
/// for ranges whose two ends are non-decreasing in `a`: a sliding window's key ranges,
/// and (with the factors' roles exchanged) its query ranges. With `len` = the longest
/// range, the sources are cut into segments at the multiples of `len`, and row `a`
/// splits its range at the first cut at or after s(a), `beta(a) = min(len ceil(s(a) / len),
/// n_src)`:
///
/// ```text
/// Y_a = sum_{s(a) <= j < beta(a)} ...   +   sum_{beta(a) <= j < e(a)} ...
///       (a suffix of the segment ending at beta(a): the prefix form on reversed indices)
///                                           (a prefix of the segment starting at beta(a))
/// ```
///
/// Both parts are the chunked prefix form on one segment, so no prefix state is ever
/// subtracted from another (a difference of prefix states cancels, and its rounding
/// would grow with n / len); they are added once. A sliding window's ranges always
/// split so (docs/math.md §3.4: a range that does not reach beta(a) is shorter than
/// `len`, which only clamping at the end of the sources allows, and there
/// beta(a) = n_src = e(a)); a row whose range lies strictly inside a segment (other
/// range families) is summed directly, `(L_a R_range^T) X_range`. Every output entry
/// then takes one rounding more than the prefix form on at most `len` sources (the
/// addition of the parts, only when both are used, which needs `len < n_src`), so it
/// stays within the count `r + n_k + 8` of docs/math.md §4.3.
///
/// Cost: every source enters the states of two segment scans and every row makes two
/// state products, about twice the unmasked form's `4 n w p`, plus the in-chunk blocks
/// at both ends of each range. The runs of rows sharing a split point run in parallel,
/// each holding its rows' Y (`rows x p`) until the epilogue. Deterministic as the
/// prefix form (the segments, the splits and every sum's order depend on the sizes
/// and the ranges only).
pub fn range_contract_map<S: Field>(
    range: &(dyn Fn(usize) -> std::ops::Range<usize> + Sync),
    left: &Features<'_, S>,
    right: &Features<'_, S>,
    payload: &Rows<'_, S>,
    (chunk, direct): Blocks<'_, S>,
    out_width: usize,
    finish: &Finish<'_, S>,
) -> Vec<S> {
    let (n_out, n_src, p) = (left.len, right.len, payload.width);
    let ranges: Vec<std::ops::Range<usize>> = (0..n_out)
        .map(|a| {
            let r = range(a);
            r.start.min(n_src)..r.end.min(n_src)
        })
        .collect();
    let len = ranges.iter().map(|r| r.len()).max().unwrap_or(0);
    let mut out = vec![S::zero(); n_out * out_width];
    if out_width == 0 {
        return out;
    }
    let zero = vec![S::zero(); p];
    if len == 0 || p == 0 {
        out.par_chunks_mut(out_width)
            .enumerate()
            .for_each(|(a, o)| finish(a, &zero, o));
        return out;
    }
    let beta = |r: &std::ops::Range<usize>| (r.start.div_ceil(len) * len).min(n_src);
    // Runs of rows with one split point b (beta is non-decreasing in a): rows
    // a0..a_split end short of b (summed directly; for a window only rows that see
    // nothing), rows a_split..a1 reach b (e is non-decreasing) and take the two parts.
    let mut runs: Vec<(usize, usize, usize, usize)> = Vec::new();
    let mut a0 = 0;
    while a0 < n_out {
        let b = beta(&ranges[a0]);
        let a1 = a0 + partition_point(n_out - a0, |i| beta(&ranges[a0 + i]) == b);
        let a_split = a0 + partition_point(a1 - a0, |i| ranges[a0 + i].end < b);
        runs.push((a0, a_split, a1, b));
        a0 = a1;
    }
    let mut slices = Vec::with_capacity(runs.len());
    let mut rest = &mut out[..];
    for &(a0, _, a1, _) in &runs {
        let (mine, tail) = rest.split_at_mut((a1 - a0) * out_width);
        slices.push(mine);
        rest = tail;
    }
    let factors = (left, right, payload, direct);
    // The runs in parallel (each row's result depends on the sizes and ranges only), Y
    // held per run.
    runs.par_iter()
        .zip(slices.into_par_iter())
        .for_each(|(&(a0, a_split, a1, b), out_run)| {
            let mut y = vec![S::zero(); (a1 - a0) * p];
            let mut add = |rows: Span, t: &[S]| {
                for (i, ti) in t.chunks_exact(p).enumerate() {
                    let a = rows.index(i) - a0;
                    for (o, v) in y[a * p..(a + 1) * p].iter_mut().zip(ti) {
                        *o = o.clone() + v.clone();
                    }
                }
            };
            if b > 0 && a1 > a_split {
                // Suffixes [s(a), b) of the segment [j0, b), on reversed indices.
                let j0 = (b - 1) / len * len;
                let rows = Span::reversed(a_split, a1 - a_split);
                let srcs = Span::reversed(j0, b - j0);
                let end = |i: usize| b - ranges[rows.index(i)].start.clamp(j0, b);
                let t = on_spans(factors, (rows, srcs), &|fl, fr, fx, dk| {
                    prefix_contract(&end, fl, fr, fx, (chunk, dk))
                });
                add(rows, &t);
            }
            if b < n_src && a1 > a_split {
                // Prefixes [b, e(a)) of the segment [b, j1).
                let j1 = (b + len).min(n_src);
                let rows = Span::forward(a_split, a1 - a_split);
                let srcs = Span::forward(b, j1 - b);
                let end = |i: usize| ranges[rows.index(i)].end.clamp(b, j1) - b;
                let t = on_spans(factors, (rows, srcs), &|fl, fr, fx, dk| {
                    prefix_contract(&end, fl, fr, fx, (chunk, dk))
                });
                add(rows, &t);
            }
            // Rows whose range lies strictly inside a segment: summed directly,
            // (L_a R_range^T) X_range.
            let w = left.width;
            let (mut l, mut r, mut x) = (vec![S::zero(); w], Vec::new(), Vec::new());
            for a in (a0..a_split).filter(|&a| !ranges[a].is_empty()) {
                let rg = ranges[a].clone();
                let m = rg.len();
                (left.fill)(a, a + 1, &mut l);
                r.resize(w * m, S::zero());
                (right.fill)(rg.start, rg.end, &mut r);
                x.resize(m * p, S::zero());
                (payload.fill)(rg.start, rg.end, &mut x);
                let ya = &mut y[(a - a0) * p..(a - a0 + 1) * p];
                for (j, xj) in x.chunks_exact(p).enumerate() {
                    let mut k = S::zero();
                    for (t, lt) in l.iter().enumerate() {
                        k = k + lt.clone() * r[t * m + j].clone();
                    }
                    for (o, v) in ya.iter_mut().zip(xj) {
                        *o = o.clone() + k.clone() * v.clone();
                    }
                }
            }
            for (i, (yi, oi)) in y
                .chunks_exact(p)
                .zip(out_run.chunks_exact_mut(out_width))
                .enumerate()
            {
                finish(a0 + i, yi, oi);
            }
        });
    out
}

/// The transposed range form: `Y_j = sum_{a in rows(j)} (L_a . R_j) X_a` (`payload`
/// indexed like `left`), [`range_contract_map`] with the factors' roles exchanged.
pub fn range_transposed_contract_map<S: Field>(
    rows: &(dyn Fn(usize) -> std::ops::Range<usize> + Sync),
    left: &Features<'_, S>,
    right: &Features<'_, S>,
    payload: &Rows<'_, S>,
    (chunk, direct): Blocks<'_, S>,
    out_width: usize,
    finish: &Finish<'_, S>,
) -> Vec<S> {
    let swapped = direct.map(Direct::swapped);
    range_contract_map(
        rows,
        right,
        left,
        payload,
        (chunk, swapped.as_ref()),
        out_width,
        finish,
    )
}

/// Relative cost of one prefix-state element (written by its chunk's GEMM, scanned in
/// order, read by the rows it serves: streamed through memory, about four passes) against
/// one multiply-add of the in-chunk products (docs/perf/causal.md).
const STATE_COST: usize = 32;

/// The chunk length of a masked contraction of width `w` and payload `p`, from the cost
/// model of docs/perf/causal.md: per output row the in-chunk block costs about
/// `chunk (k + p)` multiply-adds (`k = dim + deg` with a direct kernel `(dim, deg)`, `w`
/// through the factors) and the prefix states `STATE_COST w p / chunk`; the sum is
/// least at `chunk = sqrt(STATE_COST w p / (k + p))`, taken as a power of two in
/// [16, 512] (the result depends on the sizes only, never on the thread count).
pub fn chunk_for(w: usize, p: usize, direct: Option<(usize, usize)>) -> usize {
    let k = direct.map_or(w, |(dim, deg)| dim + deg);
    let best = ((STATE_COST * w * p) as f64 / (k + p).max(1) as f64).sqrt();
    let mut c = 16;
    while c < 512 && (2 * c) as f64 <= best * std::f64::consts::SQRT_2 {
        c *= 2;
    }
    c
}

fn reverse_rows<S>(buf: &mut [S], width: usize) {
    if width == 0 {
        return;
    }
    let n = buf.len() / width;
    for i in 0..n / 2 {
        let (a, b) = buf.split_at_mut((n - 1 - i) * width);
        a[i * width..(i + 1) * width].swap_with_slice(&mut b[..width]);
    }
}

/// The first index in 0..n where `pred` turns false (pred must be true then false).
fn partition_point(n: usize, pred: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if pred(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of `data` (`dim` columns) as a feature-major fill of width `w`, features
    /// past `dim` zero.
    fn feature_fill(
        data: &[f64],
        dim: usize,
        w: usize,
    ) -> impl Fn(usize, usize, &mut [f64]) + Sync {
        let data = data.to_vec();
        move |s: usize, e: usize, buf: &mut [f64]| {
            for i in s..e {
                for t in 0..w {
                    buf[t * (e - s) + i - s] = if t < dim { data[i * dim + t] } else { 0.0 };
                }
            }
        }
    }

    /// A test contraction's fills.
    type Fill = dyn Fn(usize, usize, &mut [f64]) + Sync;

    /// Its factors and payloads: left (`n_a` rows), right (`n_j`), the payload indexed
    /// like right and the one indexed like left.
    fn views<'a>(
        (fl, fr, fx, fxa): (&'a Fill, &'a Fill, &'a Fill, &'a Fill),
        (n_a, n_j, w, p): (usize, usize, usize, usize),
    ) -> (
        Features<'a, f64>,
        Features<'a, f64>,
        Rows<'a, f64>,
        Rows<'a, f64>,
    ) {
        (
            Features {
                width: w,
                len: n_a,
                fill: fl,
            },
            Features {
                width: w,
                len: n_j,
                fill: fr,
            },
            Rows {
                width: p,
                len: n_j,
                fill: fx,
            },
            Rows {
                width: p,
                len: n_a,
                fill: fxa,
            },
        )
    }

    /// Rows of `data` (`width` columns), row-major.
    fn row_fill(data: &[f64], width: usize) -> impl Fn(usize, usize, &mut [f64]) + Sync {
        let data = data.to_vec();
        move |s: usize, e: usize, buf: &mut [f64]| {
            buf[..(e - s) * width].copy_from_slice(&data[s * width..e * width])
        }
    }

    /// Against the O(n^2) definition, with small-integer data (exact in f64, so ==),
    /// for several visibility patterns and chunk sizes.
    #[test]
    fn contractions_match_the_definition() {
        let (n_a, n_j, w, p) = (23usize, 17usize, 3usize, 2usize);
        let val = |i: usize, c: usize, s: usize| ((i * 7 + c * 3 + s) % 5) as f64 - 2.0;
        let (l, r): (Vec<f64>, Vec<f64>) = (
            (0..n_a * w).map(|k| val(k / w, k % w, 1)).collect(),
            (0..n_j * w).map(|k| val(k / w, k % w, 2)).collect(),
        );
        let x: Vec<f64> = (0..n_j * p).map(|k| val(k / p, k % p, 3)).collect();
        let xa: Vec<f64> = (0..n_a * p).map(|k| val(k / p, k % p, 4)).collect();
        let (fl, fr, fx, fxa) = (
            feature_fill(&l, w, w),
            feature_fill(&r, w, w),
            row_fill(&x, p),
            row_fill(&xa, p),
        );
        let (left, right, pay, pay_a) = views((&fl, &fr, &fx, &fxa), (n_a, n_j, w, p));
        let kern = |a: usize, j: usize| (0..w).map(|t| l[a * w + t] * r[j * w + t]).sum::<f64>();
        let ends: [Box<dyn Fn(usize) -> usize + Sync>; 3] = [
            Box::new(move |_| n_j),
            Box::new(|a| (a + 1).min(n_j)),
            Box::new(|a| (a + n_j + 1).saturating_sub(n_a).min(n_j)),
        ];
        for e in &ends {
            for chunk in [1, 4, 5, 64] {
                for limits in [(PIECE_ROWS, BLOCK_ELEMS), (1, 1), (3, 2 * w * p)] {
                    let copy = |_: usize, y: &[f64], o: &mut [f64]| o.copy_from_slice(y);
                    let y = prefix_contract_with(
                        e.as_ref(),
                        &left,
                        &right,
                        &pay,
                        (chunk, None),
                        (p, &copy),
                        limits,
                    );
                    for a in 0..n_a {
                        for c in 0..p {
                            let want: f64 = (0..e(a)).map(|j| kern(a, j) * x[j * p + c]).sum();
                            assert_eq!(y[a * p + c], want, "prefix a={a} c={c} chunk={chunk}");
                        }
                    }
                }
                let first = |j: usize| (0..n_a).find(|&a| j < e(a)).unwrap_or(n_a);
                let yt = transposed_contract(&first, &left, &right, &pay_a, (chunk, None));
                for j in 0..n_j {
                    for c in 0..p {
                        let want: f64 = (0..n_a)
                            .filter(|&a| j < e(a))
                            .map(|a| kern(a, j) * xa[a * p + c])
                            .sum();
                        assert_eq!(yt[j * p + c], want, "transposed j={j} c={c} chunk={chunk}");
                    }
                }
            }
        }
    }

    /// The range form (sliding windows, and a range family whose ranges can lie inside
    /// a segment) and its transposed form against the O(n^2) definition, exactly,
    /// through the factors and through the direct kernel (points of dim 3, features
    /// padded with zeros to w = 6, coefficients (0, 1): deg (dim + 2) = 5 <= 6, so it
    /// applies).
    #[test]
    fn range_forms_match_the_definition() {
        use crate::attention::{Alignment, Mask};
        let (n_a, n_j, d, w, p) = (29usize, 23usize, 3usize, 6usize, 2usize);
        let val = |i: usize, c: usize, s: usize| ((i * 7 + c * 3 + s) % 5) as f64 - 2.0;
        let pa: Vec<f64> = (0..n_a * d).map(|k| val(k / d, k % d, 1)).collect();
        let pj: Vec<f64> = (0..n_j * d).map(|k| val(k / d, k % d, 2)).collect();
        let x: Vec<f64> = (0..n_j * p).map(|k| val(k / p, k % p, 3)).collect();
        let xa: Vec<f64> = (0..n_a * p).map(|k| val(k / p, k % p, 4)).collect();
        let (fl, fr, fx, fxa) = (
            feature_fill(&pa, d, w),
            feature_fill(&pj, d, w),
            row_fill(&x, p),
            row_fill(&xa, p),
        );
        let (pl, pr) = (row_fill(&pa, d), row_fill(&pj, d));
        let (left, right, pay, pay_a) = views((&fl, &fr, &fx, &fxa), (n_a, n_j, w, p));
        let coeffs = [0.0, 1.0];
        let direct = Direct {
            dim: d,
            coeffs: &coeffs,
            left: &pl,
            right: &pr,
        };
        assert!(direct.applies(w));
        let kern = |a: usize, j: usize| (0..d).map(|t| pa[a * d + t] * pj[j * d + t]).sum::<f64>();
        let mut masks = Vec::new();
        for align in [Alignment::TopLeft, Alignment::BottomRight] {
            for (lo, hi) in [
                (Some(3), Some(2)),
                (Some(0), Some(0)),
                (Some(9), Some(0)),
                (None, Some(4)),
                (Some(5), None),
                (Some(40), Some(1)),
            ] {
                masks.push(Mask::None.with_window(lo, hi, align));
            }
        }
        let copy = |_: usize, y: &[f64], o: &mut [f64]| o.copy_from_slice(y);
        let check = |name: &str, range: &(dyn Fn(usize) -> std::ops::Range<usize> + Sync)| {
            for chunk in [1, 4, 64] {
                for dk in [None, Some(&direct)] {
                    let y = range_contract_map(range, &left, &right, &pay, (chunk, dk), p, &copy);
                    for a in 0..n_a {
                        for c in 0..p {
                            let want: f64 = range(a).map(|j| kern(a, j) * x[j * p + c]).sum();
                            assert_eq!(y[a * p + c], want, "{name} a={a} c={c} chunk={chunk}");
                        }
                    }
                }
            }
        };
        for m in &masks {
            check(&m.name(), &|a| m.key_range(a, n_a, n_j));
            // The transposed form: each key's query range.
            for (chunk, dk) in [(1, None), (5, None), (1, Some(&direct)), (5, Some(&direct))] {
                let yt = range_transposed_contract_map(
                    &|j| m.query_range(j, n_a, n_j),
                    &left,
                    &right,
                    &pay_a,
                    (chunk, dk),
                    p,
                    &copy,
                );
                for j in 0..n_j {
                    for c in 0..p {
                        let want: f64 = (0..n_a)
                            .filter(|&a| m.key_range(a, n_a, n_j).contains(&j))
                            .map(|a| kern(a, j) * xa[a * p + c])
                            .sum();
                        assert_eq!(yt[j * p + c], want, "{} transposed j={j}", m.name());
                    }
                }
            }
        }
        // Ranges of varying length (non-decreasing ends), some inside a segment of the
        // longest length: those rows are summed directly.
        let varying = |a: usize| (a * 2 / 3)..(a * 2 / 3 + 1 + 3 * (a / 8)).min(n_j);
        let len = (0..n_a).map(|a| varying(a).len()).max().unwrap();
        assert!((0..n_a).any(|a| {
            let rg = varying(a);
            !rg.is_empty() && rg.end < (rg.start.div_ceil(len) * len).min(n_j)
        }));
        check("varying", &varying);
    }

    /// No prefix-state differences (which would cancel): keys before 60 carry 2^70
    /// payloads, so rows whose window starts at or after 60 come out exact only if no
    /// state of those keys is ever subtracted (independent review's test).
    #[test]
    fn range_form_subtracts_no_states() {
        use crate::attention::{Alignment, Mask};
        let (n, w, p) = (300usize, 2usize, 1usize);
        let big = 2f64.powi(70);
        let val = |i: usize, c: usize| ((i * 5 + c * 3) % 7) as f64 - 3.0;
        let l: Vec<f64> = (0..n * w).map(|k| val(k / w, k % w)).collect();
        let r: Vec<f64> = (0..n * w).map(|k| val(k / w + 1, k % w)).collect();
        let x: Vec<f64> = (0..n)
            .map(|j| if j < 60 { big } else { val(j, 2) })
            .collect();
        let (fl, fr, fx) = (
            feature_fill(&l, w, w),
            feature_fill(&r, w, w),
            row_fill(&x, p),
        );
        let (left, right, pay, _) = views((&fl, &fr, &fx, &fx), (n, n, w, p));
        let copy = |_: usize, y: &[f64], o: &mut [f64]| o.copy_from_slice(y);
        for m in [
            Mask::None.with_window(Some(20), Some(3), Alignment::TopLeft),
            Mask::None.with_window(Some(7), Some(0), Alignment::BottomRight),
        ] {
            for chunk in [1, 3, 16] {
                let y = range_contract_map(
                    &|a| m.key_range(a, n, n),
                    &left,
                    &right,
                    &pay,
                    (chunk, None),
                    p,
                    &copy,
                );
                for a in 0..n {
                    let rg = m.key_range(a, n, n);
                    if rg.start >= 60 {
                        let want: f64 = rg
                            .map(|j| {
                                (0..w).map(|t| l[a * w + t] * r[j * w + t]).sum::<f64>() * x[j]
                            })
                            .sum();
                        assert_eq!(y[a], want, "{} a={a} chunk={chunk}", m.name());
                    }
                }
            }
        }
    }
}
