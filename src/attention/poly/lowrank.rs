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
//! masked in-chunk product, rows in blocks). No n x n object and no n x w factor is
//! ever formed; cost O((n_out + n_src) w p + n_out chunk (w + p)); the states of one
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

use super::dense::{Strided, StridedMut};
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
}

impl<S: Field> Scratch<S> {
    fn new() -> Self {
        Self {
            l: Vec::new(),
            r: Vec::new(),
            x: Vec::new(),
            k: Vec::new(),
            y: Vec::new(),
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
    chunk: usize,
) -> Vec<S> {
    let copy = |_: usize, y: &[S], o: &mut [S]| o.clone_from_slice(y);
    prefix_contract_map(end, left, right, payload, chunk, payload.width, &copy)
}

/// The prefix form with a row epilogue: `finish(a, y_a, out_a)` turns each Y row into
/// the output row a (`out_width` columns; rows that see nothing get y_a = 0). Y itself
/// never exists as a whole (for wide payloads it would be the largest object).
pub fn prefix_contract_map<S: Field>(
    end: &(dyn Fn(usize) -> usize + Sync),
    left: &Features<'_, S>,
    right: &Features<'_, S>,
    payload: &Rows<'_, S>,
    chunk: usize,
    out_width: usize,
    finish: &Finish<'_, S>,
) -> Vec<S> {
    let limits = (PIECE_ROWS, BLOCK_ELEMS);
    prefix_contract_with(
        end,
        left,
        right,
        payload,
        chunk,
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
    chunk: usize,
    (q, finish): (usize, &Finish<'_, S>),
    (piece_rows, block_elems): (usize, usize),
) -> Vec<S> {
    let (n_out, n_src, w, p) = (left.len, right.len, left.width, payload.width);
    debug_assert_eq!(left.width, right.width);
    debug_assert_eq!(right.len, payload.len);
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
    let chunk = chunk.max(1);
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
    for blk in 0..n_blocks {
        let k0 = blk * block_len;
        let k1 = ((blk + 1) * block_len).min(pieces.len());
        // Phase 1: the pieces' states R^T X, in parallel.
        let my = &pieces[k0.min(k1)..k1];
        states[..my.len() * ws]
            .par_chunks_mut(ws)
            .zip(my.par_iter())
            .for_each_init(Scratch::new, |sc, (st, &(j0, j1, _))| {
                // In sub-blocks whose factor rows stay in cache, accumulated in order.
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
            rows_task(end, (left, right, payload), state, part, (t, finish), sc);
        });
    }
    drop(tasks);
    out
}

/// One block of output rows: Y = L Z (when there is a state) plus, for the rows from
/// `first_partial` on, the part of chunk [j0, j1) they see, directly.
fn rows_task<S: Field>(
    end: &(dyn Fn(usize) -> usize + Sync),
    (left, right, payload): (&Features<'_, S>, &Features<'_, S>, &Rows<'_, S>),
    state: Option<&[S]>,
    part: Option<(usize, usize, usize)>,
    (t, finish): (Task<'_, S>, &Finish<'_, S>),
    sc: &mut Scratch<S>,
) {
    let (w, p, nb, a_lo) = (left.width, payload.width, t.nb, t.a_lo);
    let Scratch { l, r, x, k, y } = sc;
    let y = sized(y, nb * p);
    let l = sized(l, w * nb);
    (left.fill)(a_lo, a_lo + nb, l);
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
    if let Some((j0, j1, first_partial)) = part {
        let off = first_partial.max(a_lo) - a_lo;
        if off < nb {
            let (np, cl) = (nb - off, j1 - j0);
            let r = sized(r, w * cl);
            (right.fill)(j0, j1, r);
            let x = sized(x, cl * p);
            (payload.fill)(j0, j1, x);
            let k = sized(k, np * cl);
            S::matmul(
                StridedMut::row_major(&mut *k, np, cl),
                l_t(off, np),
                Strided::row_major(r, w, cl),
                false,
            );
            for (i, row) in k.chunks_exact_mut(cl).enumerate() {
                let vis = end(a_lo + off + i).min(j1).saturating_sub(j0);
                row[vis..].iter_mut().for_each(|z| *z = S::zero());
            }
            S::matmul(
                StridedMut::row_major(&mut y[off * p..], np, p),
                Strided::row_major(k, np, cl),
                Strided::row_major(x, cl, p),
                true,
            );
        }
    }
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
    chunk: usize,
) -> Vec<S> {
    let copy = |_: usize, y: &[S], o: &mut [S]| o.clone_from_slice(y);
    transposed_contract_map(first, left, right, payload, chunk, payload.width, &copy)
}

/// The transposed form with a row epilogue, as [`prefix_contract_map`] (`finish`
/// receives the output row j in the original order).
pub fn transposed_contract_map<S: Field>(
    first: &(dyn Fn(usize) -> usize + Sync),
    left: &Features<'_, S>,
    right: &Features<'_, S>,
    payload: &Rows<'_, S>,
    chunk: usize,
    out_width: usize,
    finish: &Finish<'_, S>,
) -> Vec<S> {
    let (n_a, n_j, p) = (left.len, right.len, payload.width);
    // Reversed indices: out row j' = n_j - 1 - j, source a' = n_a - 1 - a;
    // a sees j  <=>  a >= first(j)  <=>  a' < n_a - first(j).
    let rev_f = |f: &Features<'_, S>, start: usize, end: usize, buf: &mut [S]| {
        let n = f.len;
        (f.fill)(n - end, n - start, buf);
        let nb = end - start;
        if nb > 0 {
            buf[..f.width * nb]
                .chunks_exact_mut(nb)
                .for_each(|row| row.reverse());
        }
    };
    let fill_out = |s: usize, e: usize, buf: &mut [S]| rev_f(right, s, e, buf);
    let fill_src = |s: usize, e: usize, buf: &mut [S]| rev_f(left, s, e, buf);
    let fill_pay = |s: usize, e: usize, buf: &mut [S]| {
        let n = payload.len;
        (payload.fill)(n - e, n - s, buf);
        reverse_rows(&mut buf[..(e - s) * p], p);
    };
    let out_rows = Features {
        width: right.width,
        len: n_j,
        fill: &fill_out,
    };
    let src_rows = Features {
        width: left.width,
        len: n_a,
        fill: &fill_src,
    };
    let pay_rows = Rows {
        width: p,
        len: n_a,
        fill: &fill_pay,
    };
    let end_rev = |jr: usize| n_a - first(n_j - 1 - jr).min(n_a);
    let finish_rev = |jr: usize, y: &[S], o: &mut [S]| finish(n_j - 1 - jr, y, o);
    let mut y = prefix_contract_map(
        &end_rev,
        &out_rows,
        &src_rows,
        &pay_rows,
        chunk,
        out_width,
        &finish_rev,
    );
    reverse_rows(&mut y, out_width);
    y
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
        let rows = |data: &[f64], width: usize| {
            let data = data.to_vec();
            move |s: usize, e: usize, buf: &mut [f64]| {
                buf[..(e - s) * width].copy_from_slice(&data[s * width..e * width])
            }
        };
        let feats = |data: &[f64]| {
            let data = data.to_vec();
            move |s: usize, e: usize, buf: &mut [f64]| {
                for i in s..e {
                    for t in 0..w {
                        buf[t * (e - s) + i - s] = data[i * w + t];
                    }
                }
            }
        };
        let (fl, fr, fx, fxa) = (feats(&l), feats(&r), rows(&x, p), rows(&xa, p));
        let left = Features {
            width: w,
            len: n_a,
            fill: &fl,
        };
        let right = Features {
            width: w,
            len: n_j,
            fill: &fr,
        };
        let pay = Rows {
            width: p,
            len: n_j,
            fill: &fx,
        };
        let pay_a = Rows {
            width: p,
            len: n_a,
            fill: &fxa,
        };
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
                        chunk,
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
                let yt = transposed_contract(&first, &left, &right, &pay_a, chunk);
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
}
