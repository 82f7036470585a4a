//! The one low-rank primitive every polynomial-engine pass is made of: a masked
//! contraction through a rank-w kernel, by chunked prefix states (MATH.md 2.4/2.5;
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
//! The prefix form scans source chunks of `chunk` rows: the state
//! Z = sum_{j before the chunk} R_j X_j^T (w x p) serves every row whose visible range
//! ends inside the chunk (Y_a = L_a Z), and the part of the chunk the row sees is done
//! directly. No n x n object exists; cost O((n_out + n_src) w (p + chunk)).
//! Parallelism: the sources are split into a fixed number of segments (depending only
//! on the sizes, never on the thread count); segment totals are scanned in order, then
//! each segment is walked in parallel. Every output is one fixed operation sequence, so
//! results are bitwise reproducible for any thread count.
//!
//! The transposed form is the prefix form on reversed indices: the rows a that see
//! source j form a suffix, which reversal turns into a prefix.

use crate::scalar::Field;
use rayon::prelude::*;

/// Rows of a factor or payload, produced on demand: `fill(start, end, buf)` writes rows
/// `start..end` (row-major, `width` columns) into `buf`.
pub struct Rows<'a, S> {
    /// Columns per row.
    pub width: usize,
    /// Number of rows.
    pub len: usize,
    /// The row generator.
    pub fill: &'a (dyn Fn(usize, usize, &mut [S]) + Sync),
}

/// The most segments a source is split into (a constant: determinism).
const MAX_SEGMENTS: usize = 32;
/// Output rows per parallel task within one chunk's group.
const ROW_BLOCK: usize = 64;

/// Y (`left.len x payload.width`, row-major) of the prefix form.
pub fn prefix_contract<S: Field>(
    end: &(dyn Fn(usize) -> usize + Sync),
    left: &Rows<'_, S>,
    right: &Rows<'_, S>,
    payload: &Rows<'_, S>,
    chunk: usize,
) -> Vec<S> {
    let (n_out, n_src, w, p) = (left.len, right.len, left.width, payload.width);
    debug_assert_eq!(left.width, right.width);
    debug_assert_eq!(right.len, payload.len);
    let mut out = vec![S::zero(); n_out * p];
    if n_out == 0 || n_src == 0 {
        return out;
    }
    let chunk = chunk.max(1);
    let n_chunks = n_src.div_ceil(chunk);
    // Output rows grouped by the chunk in which their visible range ends:
    // group m = rows with e(a) in (m C, (m+1) C]; rows with e(a) = 0 see nothing.
    let row_lo: Vec<usize> = (0..=n_chunks)
        .map(|m| {
            if m == n_chunks {
                n_out
            } else {
                partition_point(n_out, |a| end(a) <= m * chunk)
            }
        })
        .collect();
    let seg_chunks = n_chunks.div_ceil(MAX_SEGMENTS).max(1);
    let n_seg = n_chunks.div_ceil(seg_chunks);
    let chunk_range = |m: usize| (m * chunk, ((m + 1) * chunk).min(n_src));

    // Phase 1: each segment's total state, in parallel.
    let totals: Vec<Vec<S>> = (0..n_seg)
        .into_par_iter()
        .map(|s| {
            let mut z = vec![S::zero(); w * p];
            let mut scratch = Scratch::new(chunk, w, p);
            for m in s * seg_chunks..((s + 1) * seg_chunks).min(n_chunks) {
                let (j0, j1) = chunk_range(m);
                scratch.load(right, payload, j0, j1);
                add_rt_x(&scratch.r, &scratch.x, w, p, &mut z);
            }
            z
        })
        .collect();
    // Phase 2: exclusive scan of segment totals, in order.
    let mut starts = Vec::with_capacity(n_seg);
    let mut acc = vec![S::zero(); w * p];
    for t in &totals {
        starts.push(acc.clone());
        for (a, b) in acc.iter_mut().zip(t) {
            *a = a.clone() + b.clone();
        }
    }
    // Phase 3: walk each segment, writing the rows of its groups.
    let mut slices: Vec<(usize, &mut [S])> = Vec::with_capacity(n_seg);
    let (_, mut rest) = out.split_at_mut(row_lo[0] * p); // rows that see nothing stay 0
    for s in 0..n_seg {
        let lo = row_lo[s * seg_chunks];
        let hi = row_lo[((s + 1) * seg_chunks).min(n_chunks)];
        let (mine, tail) = rest.split_at_mut((hi - lo) * p);
        slices.push((lo, mine));
        rest = tail;
    }
    slices
        .into_par_iter()
        .zip(starts)
        .enumerate()
        .for_each(|(s, ((seg_lo, seg_out), mut z))| {
            let mut scratch = Scratch::new(chunk, w, p);
            for m in s * seg_chunks..((s + 1) * seg_chunks).min(n_chunks) {
                let (j0, j1) = chunk_range(m);
                scratch.load(right, payload, j0, j1);
                let (a0, a1) = (row_lo[m], row_lo[m + 1]);
                // Rows that see the whole chunk come after the state absorbs it (no direct
                // work: with no mask that is every row); the others see part of it.
                let a_full = a0 + partition_point(a1 - a0, |t| end(a0 + t) < j1);
                let mut rows_of = |z: &[S], lo: usize, hi: usize, direct: bool| {
                    if hi > lo {
                        let rows_out = &mut seg_out[(lo - seg_lo) * p..(hi - seg_lo) * p];
                        let sc = &scratch;
                        rows_out
                            .par_chunks_mut(ROW_BLOCK * p)
                            .enumerate()
                            .for_each(|(b, y)| {
                                let chunk_part = if direct { (j0, j1) } else { (j1, j1) };
                                group_rows(
                                    end,
                                    left,
                                    z,
                                    sc,
                                    chunk_part,
                                    lo + b * ROW_BLOCK,
                                    y,
                                    (w, p),
                                );
                            });
                    }
                };
                rows_of(&z, a0, a_full, true);
                add_rt_x(&scratch.r, &scratch.x, w, p, &mut z);
                rows_of(&z, a_full, a1, false);
            }
        });
    out
}

/// Y (`right.len x payload.width`) of the transposed form:
/// Y_j = sum_{a: j < e(a)} (L_a . R_j) X_a, `payload` indexed like `left`.
/// `first(j)` must be the first a with j < e(a) (`left.len` if none).
pub fn transposed_contract<S: Field>(
    first: &(dyn Fn(usize) -> usize + Sync),
    left: &Rows<'_, S>,
    right: &Rows<'_, S>,
    payload: &Rows<'_, S>,
    chunk: usize,
) -> Vec<S> {
    let (n_a, n_j, p) = (left.len, right.len, payload.width);
    // Reversed indices: out row j' = n_j - 1 - j, source a' = n_a - 1 - a;
    // a sees j  <=>  a >= first(j)  <=>  a' < n_a - first(j).
    let rev = |rows: &Rows<'_, S>, start: usize, end: usize, buf: &mut [S]| {
        let (n, wd) = (rows.len, rows.width);
        (rows.fill)(n - end, n - start, buf);
        reverse_rows(&mut buf[..(end - start) * wd], wd);
    };
    let fill_out = |s: usize, e: usize, buf: &mut [S]| rev(right, s, e, buf);
    let fill_src = |s: usize, e: usize, buf: &mut [S]| rev(left, s, e, buf);
    let fill_pay = |s: usize, e: usize, buf: &mut [S]| rev(payload, s, e, buf);
    let out_rows = Rows {
        width: right.width,
        len: n_j,
        fill: &fill_out,
    };
    let src_rows = Rows {
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
    let mut y = prefix_contract(&end_rev, &out_rows, &src_rows, &pay_rows, chunk);
    reverse_rows(&mut y, p);
    y
}

/// Reusable buffers for one chunk of R and X.
struct Scratch<S> {
    r: Vec<S>,
    x: Vec<S>,
}

impl<S: Field> Scratch<S> {
    fn new(chunk: usize, w: usize, p: usize) -> Self {
        Self {
            r: vec![S::zero(); chunk * w],
            x: vec![S::zero(); chunk * p],
        }
    }
    fn load(&mut self, right: &Rows<'_, S>, payload: &Rows<'_, S>, j0: usize, j1: usize) {
        let n = j1 - j0;
        self.r.truncate(0);
        self.r.resize(n * right.width, S::zero());
        self.x.truncate(0);
        self.x.resize(n * payload.width, S::zero());
        (right.fill)(j0, j1, &mut self.r);
        (payload.fill)(j0, j1, &mut self.x);
    }
}

/// Rows `r0..r0 + y.len()/p` of a group whose visible range ends in chunk [j0, j1):
/// Y_a = L_a Z + sum_{j0 <= j < e(a)} (L_a . R_j) X_j (an empty range `j0 == j1`
/// skips the direct part; the scratch holds the chunk's rows from j0 on).
#[allow(clippy::too_many_arguments)]
fn group_rows<S: Field>(
    end: &(dyn Fn(usize) -> usize + Sync),
    left: &Rows<'_, S>,
    z: &[S],
    sc: &Scratch<S>,
    (j0, j1): (usize, usize),
    r0: usize,
    y: &mut [S],
    (w, p): (usize, usize),
) {
    let rows = y.len() / p;
    let mut l = vec![S::zero(); rows * w];
    (left.fill)(r0, r0 + rows, &mut l);
    for (a, (l_row, y_row)) in l.chunks_exact(w).zip(y.chunks_exact_mut(p)).enumerate() {
        // L_a Z
        for (la, z_row) in l_row.iter().zip(z.chunks_exact(p)) {
            if !la.is_zero() {
                for (yc, zc) in y_row.iter_mut().zip(z_row) {
                    *yc = yc.clone() + la.clone() * zc.clone();
                }
            }
        }
        // the visible part of the chunk, directly
        let vis = if j0 == j1 {
            0
        } else {
            end(r0 + a).min(j1).saturating_sub(j0)
        };
        for j in 0..vis {
            let k = dot(l_row, &sc.r[j * w..(j + 1) * w]);
            for (yc, xc) in y_row.iter_mut().zip(&sc.x[j * p..(j + 1) * p]) {
                *yc = yc.clone() + k.clone() * xc.clone();
            }
        }
    }
}

/// z += R^T X for a chunk (R: n x w, X: n x p, z: w x p).
fn add_rt_x<S: Field>(r: &[S], x: &[S], w: usize, p: usize, z: &mut [S]) {
    for (r_row, x_row) in r.chunks_exact(w).zip(x.chunks_exact(p)) {
        for (ra, z_row) in r_row.iter().zip(z.chunks_exact_mut(p)) {
            if !ra.is_zero() {
                for (zc, xc) in z_row.iter_mut().zip(x_row) {
                    *zc = zc.clone() + ra.clone() * xc.clone();
                }
            }
        }
    }
}

fn dot<S: Field>(a: &[S], b: &[S]) -> S {
    a.iter()
        .zip(b)
        .fold(S::zero(), |acc, (x, y)| acc + x.clone() * y.clone())
}

fn reverse_rows<S>(buf: &mut [S], width: usize) {
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
        let (fl, fr, fx, fxa) = (rows(&l, w), rows(&r, w), rows(&x, p), rows(&xa, p));
        let left = Rows {
            width: w,
            len: n_a,
            fill: &fl,
        };
        let right = Rows {
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
                let y = prefix_contract(e.as_ref(), &left, &right, &pay, chunk);
                for a in 0..n_a {
                    for c in 0..p {
                        let want: f64 = (0..e(a)).map(|j| kern(a, j) * x[j * p + c]).sum();
                        assert_eq!(y[a * p + c], want, "prefix a={a} c={c} chunk={chunk}");
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
