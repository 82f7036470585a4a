//! Layer norm, forward and backward, row by row (docs/math.md §7.1, §7.2):
//!
//! ```text
//! mu_i = mean_j x_ij,  var_i = mean_j (x_ij - mu_i)^2   (biased),
//! r_i = 1 / sqrt(var_i + 1e-5),  xhat_ij = (x_ij - mu_i) r_i,
//! y_ij = xhat_ij gamma_j + beta_j.
//! ```
//! Backward, given `dy`: `dgamma_j = sum_i dy_ij xhat_ij`, `dbeta_j = sum_i dy_ij`,
//! `g_ij = dy_ij gamma_j`,
//! `dx_ij = r_i (g_ij - mean_k g_ik - xhat_ij mean_k g_ik xhat_ik)`.
//! With layer norm switched off (`None` parameters) `y = x` and `dx = dy`.

use super::params::LayerNormParams;
use crate::error::Result;
use crate::scalar::Real;
use crate::tensor::Matrix;

/// The epsilon added to the variance.
pub const LN_EPS: f64 = 1e-5;

/// What the backward needs: `xhat` and `r` per row (`None` when layer norm is off).
#[derive(Clone, Debug)]
pub struct LnCache<T> {
    xhat: Matrix<T>,
    rstd: Vec<T>,
}

impl<T: Real> LnCache<T> {
    /// `max_i r_i = max_i 1 / sqrt(var_i + eps)`. Times `max_j |gamma_j|` it bounds the
    /// operator 2-norm of LN's Jacobian (and of its transpose, the backward): rows
    /// decouple, and row i's Jacobian is `r_i diag(gamma) P` with
    /// `P = I - 1 1^T / d - xhat xhat^T / d` symmetric with eigenvalues 1, 0 and
    /// `1 - |xhat|^2 / d` in [0, 1] (1 and xhat are orthogonal, `|xhat|^2 <= d`).
    pub fn max_rstd(&self) -> f64 {
        self.rstd.iter().fold(0.0, |m, r| m.max(r.to_f64()))
    }

    /// `max_j ||xhat_{:,j}||_2`, the largest column norm of `xhat`. It bounds the map
    /// `dy -> dgamma = (sum_i dy_ij xhat_ij)_j`: `||dgamma||_2 <= max_j ||xhat_{:,j}||
    /// ||dy||_F` (Cauchy-Schwarz per column).
    pub fn max_xhat_col_norm(&self) -> f64 {
        let (n, d) = (self.xhat.rows(), self.xhat.cols());
        (0..d)
            .map(|j| {
                (0..n)
                    .map(|i| self.xhat.row(i)[j].to_f64().powi(2))
                    .sum::<f64>()
                    .sqrt()
            })
            .fold(0.0, f64::max)
    }
}

/// `y = LN(x)` and the cache; identity (no cache) when `p` is `None`.
pub fn forward<T: Real>(
    p: Option<&LayerNormParams<T>>,
    x: &Matrix<T>,
) -> Result<(Matrix<T>, Option<LnCache<T>>)> {
    let Some(p) = p else {
        return Ok((x.clone(), None));
    };
    let (n, d) = (x.rows(), x.cols());
    let dt = T::from_f64(d as f64);
    let eps = T::from_f64(LN_EPS);
    let mut xhat = Vec::with_capacity(n * d);
    let mut y = Vec::with_capacity(n * d);
    let mut rstd = Vec::with_capacity(n);
    for i in 0..n {
        let row = x.row(i);
        let mu = row.iter().copied().sum::<T>() / dt;
        let var = row.iter().map(|&v| (v - mu) * (v - mu)).sum::<T>() / dt;
        let r = T::ONE / (var + eps).sqrt();
        rstd.push(r);
        for (j, &v) in row.iter().enumerate() {
            let h = (v - mu) * r;
            xhat.push(h);
            y.push(h * p.gain[j] + p.bias[j]);
        }
    }
    Ok((
        Matrix::from_vec(n, d, y)?,
        Some(LnCache {
            xhat: Matrix::from_vec(n, d, xhat)?,
            rstd,
        }),
    ))
}

/// Backward of [`forward`]: `dx`, and `(dgamma, dbeta)` when layer norm is on.
pub fn backward<T: Real>(
    p: Option<&LayerNormParams<T>>,
    cache: Option<&LnCache<T>>,
    dy: &Matrix<T>,
) -> Result<(Matrix<T>, Option<LayerNormParams<T>>)> {
    let (Some(p), Some(c)) = (p, cache) else {
        return Ok((dy.clone(), None));
    };
    let (n, d) = (dy.rows(), dy.cols());
    let dt = T::from_f64(d as f64);
    let mut grad = LayerNormParams {
        gain: vec![T::ZERO; d],
        bias: vec![T::ZERO; d],
    };
    let mut dx = Vec::with_capacity(n * d);
    let mut g = vec![T::ZERO; d];
    for i in 0..n {
        let (dy_i, xh_i) = (dy.row(i), c.xhat.row(i));
        let (mut mean_g, mut mean_gx) = (T::ZERO, T::ZERO);
        for j in 0..d {
            grad.gain[j] += dy_i[j] * xh_i[j];
            grad.bias[j] += dy_i[j];
            g[j] = dy_i[j] * p.gain[j];
            mean_g += g[j];
            mean_gx += g[j] * xh_i[j];
        }
        mean_g /= dt;
        mean_gx /= dt;
        let r = c.rstd[i];
        for j in 0..d {
            dx.push(r * (g[j] - mean_g - xh_i[j] * mean_gx));
        }
    }
    Ok((Matrix::from_vec(n, d, dx)?, Some(grad)))
}
