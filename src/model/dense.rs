//! Dense row-major products and reshapes the model's layers share (row-vector
//! convention `y = x W + b`, docs/math.md §7). Shapes are checked by the callers (the
//! model validates every parameter once); sizes come from matrices that already exist, so
//! the only possible failure is none, but allocation goes through [`Matrix::from_vec`].
//!
//! Every output entry is one fixed sequence of floating-point operations in `T`, so
//! results do not depend on the number of threads.

use crate::error::Result;
use crate::scalar::Real;
use crate::tensor::{Matrix, Tensor3};
use rayon::prelude::*;

/// Rows per parallel task: below this many rows in all, products run on one thread.
const PAR_ROWS: usize = 64;

/// `C = A B` with `A`: `n x k`, `B`: `k x m` (`C_ij = sum_t A_it B_tj`, t ascending).
pub fn mm<T: Real>(a: &Matrix<T>, b: &Matrix<T>) -> Result<Matrix<T>> {
    debug_assert_eq!(a.cols(), b.rows());
    let (k, m) = (a.cols(), b.cols());
    let mut c = vec![T::ZERO; a.rows() * m];
    let row = |(i, c_i): (usize, &mut [T])| {
        for (t, &a_it) in a.row(i).iter().enumerate() {
            for (c_ij, &b_tj) in c_i.iter_mut().zip(b.row(t)) {
                *c_ij += a_it * b_tj;
            }
        }
    };
    if m > 0 && k > 0 {
        if a.rows() >= PAR_ROWS {
            c.par_chunks_mut(m).enumerate().for_each(row);
        } else {
            c.chunks_mut(m).enumerate().for_each(row);
        }
    }
    Matrix::from_vec(a.rows(), m, c)
}

/// `C = A B^T` with `A`: `n x k`, `B`: `m x k` (`C_ij = sum_t A_it B_jt`).
pub fn mm_nt<T: Real>(a: &Matrix<T>, b: &Matrix<T>) -> Result<Matrix<T>> {
    debug_assert_eq!(a.cols(), b.cols());
    let m = b.rows();
    let mut c = vec![T::ZERO; a.rows() * m];
    let row = |(i, c_i): (usize, &mut [T])| {
        let a_i = a.row(i);
        for (j, c_ij) in c_i.iter_mut().enumerate() {
            let mut s = T::ZERO;
            for (&x, &y) in a_i.iter().zip(b.row(j)) {
                s += x * y;
            }
            *c_ij = s;
        }
    };
    if m > 0 {
        if a.rows() >= PAR_ROWS {
            c.par_chunks_mut(m).enumerate().for_each(row);
        } else {
            c.chunks_mut(m).enumerate().for_each(row);
        }
    }
    Matrix::from_vec(a.rows(), m, c)
}

/// `C = A^T B` with `A`: `n x k`, `B`: `n x m` (`C_ij = sum_r A_ri B_rj`, r ascending):
/// the weight gradients `dW = x^T dy`.
pub fn mm_tn<T: Real>(a: &Matrix<T>, b: &Matrix<T>) -> Result<Matrix<T>> {
    debug_assert_eq!(a.rows(), b.rows());
    let (k, m) = (a.cols(), b.cols());
    let mut c = vec![T::ZERO; k * m];
    let row = |(i, c_i): (usize, &mut [T])| {
        for r in 0..a.rows() {
            let a_ri = a.at(r, i);
            for (c_ij, &b_rj) in c_i.iter_mut().zip(b.row(r)) {
                *c_ij += a_ri * b_rj;
            }
        }
    };
    if m > 0 {
        if a.rows() * k >= PAR_ROWS * 16 {
            c.par_chunks_mut(m).enumerate().for_each(row);
        } else {
            c.chunks_mut(m).enumerate().for_each(row);
        }
    }
    Matrix::from_vec(k, m, c)
}

/// `A + B` entrywise (same shapes).
pub fn add<T: Real>(a: &Matrix<T>, b: &Matrix<T>) -> Result<Matrix<T>> {
    debug_assert_eq!(a.shape(), b.shape());
    let data = a
        .as_slice()
        .iter()
        .zip(b.as_slice())
        .map(|(&x, &y)| x + y)
        .collect();
    Matrix::from_vec(a.rows(), a.cols(), data)
}

/// `A += B` entrywise (same shapes).
pub fn add_assign<T: Real>(a: &mut Matrix<T>, b: &Matrix<T>) {
    debug_assert_eq!(a.shape(), b.shape());
    for (x, &y) in a.as_mut_slice().iter_mut().zip(b.as_slice()) {
        *x += y;
    }
}

/// Adds the row vector `b` to every row of `A` (`x W + b`).
pub fn add_row<T: Real>(a: &mut Matrix<T>, b: &[T]) {
    let cols = a.cols();
    debug_assert_eq!(cols, b.len());
    if cols == 0 {
        return;
    }
    for row in a.as_mut_slice().chunks_mut(cols) {
        for (x, &y) in row.iter_mut().zip(b) {
            *x += y;
        }
    }
}

/// Column sums `sum_i A_ij` (the gradient of a bias added to every row).
pub fn col_sum<T: Real>(a: &Matrix<T>) -> Vec<T> {
    let mut s = vec![T::ZERO; a.cols()];
    for i in 0..a.rows() {
        for (s_j, &x) in s.iter_mut().zip(a.row(i)) {
            *s_j += x;
        }
    }
    s
}

/// Splits the columns of `x` (`n x h d_h`) into `h` heads: `[h, n, d_h]` with
/// head `c` holding columns `c d_h .. (c + 1) d_h` (ML24 Lemma K.2's column split).
pub fn split_heads<T: Real>(x: &Matrix<T>, heads: usize) -> Result<Tensor3<T>> {
    let (n, d) = (x.rows(), x.cols());
    let dh = d / heads;
    let mut data = Vec::with_capacity(n * d);
    for c in 0..heads {
        for i in 0..n {
            data.extend_from_slice(&x.row(i)[c * dh..(c + 1) * dh]);
        }
    }
    Tensor3::from_vec(heads, n, dh, data)
}

/// The inverse of [`split_heads`]: concatenates the heads of `[h, n, d_h]` column-wise
/// into `n x h d_h`.
pub fn merge_heads<T: Real>(t: &Tensor3<T>) -> Result<Matrix<T>> {
    let (h, n, dh) = (t.heads(), t.rows(), t.cols());
    let mut data = Vec::with_capacity(h * n * dh);
    for i in 0..n {
        for c in 0..h {
            data.extend_from_slice(t.head(c).row(i));
        }
    }
    Matrix::from_vec(n, h * dh, data)
}
