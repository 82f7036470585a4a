//! Tile kernels: the small dense products the tiled engine is made of.
//!
//! Each kernel works on contiguous row-major tiles and has one fixed summation order,
//! so results do not depend on how tiles are scheduled across threads. They are the
//! seam where SIMD microkernels slot in: the engine only calls these functions.

use crate::scalar::Real;

/// Rows of Q per tile (query block, B_r).
pub const BLOCK_Q: usize = 64;
/// Rows of K and V per tile (key block, B_c).
pub const BLOCK_K: usize = 64;

/// `x . y` summed left to right.
#[inline]
pub fn dot<T: Real>(x: &[T], y: &[T]) -> T {
    let mut s = T::ZERO;
    for (&a, &b) in x.iter().zip(y) {
        s += a * b;
    }
    s
}

/// `out = alpha * A B^T`: `a` is `m x k`, `b` is `n x k`, `out` is `m x n`.
pub fn abt<T: Real>(a: &[T], b: &[T], k: usize, alpha: T, out: &mut [T]) {
    let n = b.len() / k;
    for (a_row, out_row) in a.chunks_exact(k).zip(out.chunks_exact_mut(n)) {
        for (o, b_row) in out_row.iter_mut().zip(b.chunks_exact(k)) {
            *o = alpha * dot(a_row, b_row);
        }
    }
}

/// `out += A B`: `a` is `m x k`, `b` is `k x n`, `out` is `m x n`.
pub fn ab_acc<T: Real>(a: &[T], b: &[T], n: usize, out: &mut [T]) {
    let k = b.len() / n;
    for (a_row, out_row) in a.chunks_exact(k).zip(out.chunks_exact_mut(n)) {
        for (&a_ik, b_row) in a_row.iter().zip(b.chunks_exact(n)) {
            if a_ik != T::ZERO {
                axpy(a_ik, b_row, out_row);
            }
        }
    }
}

/// `out += A^T B`: `a` is `m x k`, `b` is `m x n`, `out` is `k x n`.
pub fn atb_acc<T: Real>(a: &[T], b: &[T], k: usize, out: &mut [T]) {
    let n = out.len() / k;
    for (a_row, b_row) in a.chunks_exact(k).zip(b.chunks_exact(n)) {
        for (&a_ik, out_row) in a_row.iter().zip(out.chunks_exact_mut(n)) {
            if a_ik != T::ZERO {
                axpy(a_ik, b_row, out_row);
            }
        }
    }
}

/// `y += alpha * x`.
#[inline]
pub fn axpy<T: Real>(alpha: T, x: &[T], y: &mut [T]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// `x *= alpha`.
#[inline]
pub fn scale<T: Real>(alpha: T, x: &mut [T]) {
    for xi in x {
        *xi *= alpha;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_agree_with_definitions() {
        // Small integers: every product and sum is exact, so == is the right test.
        let a: Vec<f64> = (0..6).map(|x| x as f64 - 2.0).collect(); // 2 x 3
        let b: Vec<f64> = (0..12).map(|x| (x % 5) as f64).collect(); // 4 x 3 or 3 x 4
        let mut out = vec![0.0; 8];
        abt(&a, &b, 3, 2.0, &mut out);
        for i in 0..2 {
            for j in 0..4 {
                let want: f64 = (0..3).map(|l| a[i * 3 + l] * b[j * 3 + l]).sum();
                assert_eq!(out[i * 4 + j], 2.0 * want);
            }
        }
        let mut out = vec![1.0; 8];
        ab_acc(&a, &b, 4, &mut out); // (2x3)(3x4)
        for i in 0..2 {
            for j in 0..4 {
                let want: f64 = (0..3).map(|l| a[i * 3 + l] * b[l * 4 + j]).sum();
                assert_eq!(out[i * 4 + j], 1.0 + want);
            }
        }
        let c: Vec<f64> = (0..8).map(|x| x as f64).collect(); // 2 x 4
        let mut out = vec![0.0; 12];
        atb_acc(&a, &c, 3, &mut out); // (3x2)(2x4)
        for i in 0..3 {
            for j in 0..4 {
                let want: f64 = (0..2).map(|l| a[l * 3 + i] * c[l * 4 + j]).sum();
                assert_eq!(out[i * 4 + j], want);
            }
        }
    }
}
