//! The losses and their gradients with respect to their input (docs/math.md §7.1,
//! §7.2: MSE, or cross-entropy through an output head).
//!
//! ```text
//! MSE:  L = 1/(2n) sum_ij (T_ij - Y_ij)^2,          dL/dT = (T - Y) / n
//! CE:   L = 1/n sum_i (lse_i - Z_{i, y_i}),  lse_i = log sum_c e^{Z_ic},
//!       dL/dZ = (softmax(Z) - onehot(y)) / n
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
