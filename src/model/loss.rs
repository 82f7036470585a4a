//! The losses and their gradients with respect to their input (docs/math.md §7.1,
//! §7.2: MSE, or cross-entropy through an output head).
//!
//! ```text
//! MSE:  L = 1/(2n) sum_ij (T_ij - Y_ij)^2,          dL/dT = (T - Y) / n
//! CE:   L = 1/n sum_i (lse_i - Z_{i, y_i}),  lse_i = log sum_c e^{Z_ic},
//!       dL/dZ = (softmax(Z) - onehot(y)) / n
//! weighted CE: L = sum_i w_i (lse_i - Z_{i, y_i}),  dL/dZ_i = w_i (softmax(Z_i) - onehot(y_i))
//! ```
//! The softmax subtracts the row maximum first (exact in real arithmetic, and keeps
//! every `exp` argument `<= 0`).

use crate::error::Result;
use crate::scalar::Real;
use crate::tensor::Matrix;

/// `(L, dL/dT)` of the mean squared error `1/(2n) ||T - Y||_F^2` (`n` = rows).
pub fn mse<T: Real>(t: &Matrix<T>, y: &Matrix<T>) -> Result<(T, Matrix<T>)> {
    let n = T::from_f64(t.rows() as f64);
    let diff: Vec<T> = t
        .as_slice()
        .iter()
        .zip(y.as_slice())
        .map(|(&a, &b)| a - b)
        .collect();
    let loss = diff.iter().map(|&e| e * e).sum::<T>() / (n + n);
    let grad = diff.into_iter().map(|e| e / n).collect();
    Ok((loss, Matrix::from_vec(t.rows(), t.cols(), grad)?))
}

/// `(L, dL/dZ)` of the mean cross-entropy of logits `Z` (`n x vocab`) against
/// `labels` (each `< vocab`, checked by the caller).
pub fn cross_entropy<T: Real>(z: &Matrix<T>, labels: &[usize]) -> Result<(T, Matrix<T>)> {
    let (n, c) = (z.rows(), z.cols());
    let nt = T::from_f64(n as f64);
    let mut loss = T::ZERO;
    let mut grad = Vec::with_capacity(n * c);
    for (i, &y) in labels.iter().enumerate().take(n) {
        let row = z.row(i);
        let m = row.iter().copied().fold(T::NEG_INFINITY, T::max);
        let e: Vec<T> = row.iter().map(|&v| (v - m).exp()).collect();
        let s = e.iter().copied().sum::<T>();
        loss += m + s.ln() - row[y];
        for (j, &ej) in e.iter().enumerate() {
            let p = ej / s - if j == y { T::ONE } else { T::ZERO };
            grad.push(p / nt);
        }
    }
    Ok((loss / nt, Matrix::from_vec(n, c, grad)?))
}

/// `(L, dL/dZ)` of the weighted cross-entropy `sum_i w_i (lse_i - Z_{i, y_i})` (weights
/// and labels checked by the caller; a zero weight contributes nothing, not even a
/// NaN from its row's arithmetic, since its terms are skipped).
pub fn cross_entropy_weighted<T: Real>(
    z: &Matrix<T>,
    labels: &[usize],
    weights: &[T],
) -> Result<(T, Matrix<T>)> {
    let (n, c) = (z.rows(), z.cols());
    let mut loss = T::ZERO;
    let mut grad = vec![T::ZERO; n * c];
    for (i, (&y, &w)) in labels.iter().zip(weights).enumerate().take(n) {
        if w == T::ZERO {
            continue;
        }
        let row = z.row(i);
        let m = row.iter().copied().fold(T::NEG_INFINITY, T::max);
        let e: Vec<T> = row.iter().map(|&v| (v - m).exp()).collect();
        let s = e.iter().copied().sum::<T>();
        loss += w * (m + s.ln() - row[y]);
        for (j, &ej) in e.iter().enumerate() {
            let p = ej / s - if j == y { T::ONE } else { T::ZERO };
            grad[i * c + j] = w * p;
        }
    }
    Ok((loss, Matrix::from_vec(n, c, grad)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_weights_equal_the_mean() {
        // w_i = 1/n reproduces the mean: the same terms, each multiplied by 1/n instead
        // of the sum divided by n, so equal to a few ulps (|L| ~ 1, tolerance 1e-15).
        let z = Matrix::from_fn(3, 4, |i, j| (i as f64 - j as f64 * 0.7).sin()).unwrap();
        let labels = [1, 3, 0];
        let (l, g) = cross_entropy(&z, &labels).unwrap();
        let (lw, gw) = cross_entropy_weighted(&z, &labels, &[1.0 / 3.0; 3]).unwrap();
        assert!((l - lw).abs() < 1e-15);
        for (a, b) in g.as_slice().iter().zip(gw.as_slice()) {
            assert!((a - b).abs() < 1e-15);
        }
        // A zero weight ignores its row entirely.
        let (l0, g0) = cross_entropy_weighted(&z, &labels, &[0.5, 0.0, 0.5]).unwrap();
        let (l2, _) = cross_entropy(
            &Matrix::from_vec(2, 4, [z.row(0), z.row(2)].concat()).unwrap(),
            &[1, 0],
        )
        .unwrap();
        assert!((l0 - l2).abs() < 1e-15);
        assert!(g0.row(1).iter().all(|&x| x == 0.0));
    }
}
