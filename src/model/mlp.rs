//! The position-wise MLP `g(x) = act(x W1 + b1) W2 + b2` and its backward (docs/math.md
//! §7; ML24 Lemmas H.1, H.2 for the chain rule through `act`):
//!
//! ```text
//! forward:  H = x W1 + b1,  A = act(H),  y = A W2 + b2
//! backward: dW2 = A^T dy,  db2 = colsum(dy),  dA = dy W2^T,
//!           dH = dA o act'(H),  dW1 = x^T dH,  db1 = colsum(dH),  dx = dH W1^T
//! ```
//! `act` and `act'` are evaluated in f64 and rounded once to `T` (the GELU needs
//! `tanh`, which the scalar trait does not carry).

use super::config::Activation;
use super::dense::{add_row, col_sum, mm, mm_nt, mm_tn};
use crate::error::Result;
use crate::scalar::Real;
use crate::tensor::Matrix;

/// sqrt(2 / pi), the GELU's inner scale.
const GELU_C: f64 = 0.797_884_560_802_865_4;
/// The GELU's cubic coefficient.
const GELU_A: f64 = 0.044_715;

impl Activation {
    /// `act(x)`: GELU `0.5 x (1 + tanh(c (x + a x^3)))` with `c = sqrt(2/pi)`,
    /// `a = 0.044715`; ReLU `max(x, 0)`.
    pub fn apply(self, x: f64) -> f64 {
        match self {
            Activation::Gelu => 0.5 * x * (1.0 + (GELU_C * (x + GELU_A * x * x * x)).tanh()),
            Activation::Relu => x.max(0.0),
        }
    }

    /// `act'(x)`: GELU `0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 a x^2)` with
    /// `t = tanh(c (x + a x^3))`; ReLU `1` for `x > 0`, else `0`.
    pub fn derivative(self, x: f64) -> f64 {
        match self {
            Activation::Gelu => {
                let t = (GELU_C * (x + GELU_A * x * x * x)).tanh();
                0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * GELU_C * (1.0 + 3.0 * GELU_A * x * x)
            }
            Activation::Relu => {
                if x > 0.0 {
                    1.0
                } else {
                    0.0
                }
            }
        }
    }
}

/// The MLP's weights, borrowed.
#[derive(Clone, Copy, Debug)]
pub struct MlpWeights<'a, T> {
    /// W1, `d_model x d_ff`.
    pub w1: &'a Matrix<T>,
    /// b1, `d_ff`.
    pub b1: &'a [T],
    /// W2, `d_ff x d_model`.
    pub w2: &'a Matrix<T>,
    /// b2, `d_model`.
    pub b2: &'a [T],
}

/// What the backward needs: the input `x`, the pre-activation `H` and `A = act(H)`.
#[derive(Clone, Debug)]
pub struct MlpCache<T> {
    x: Matrix<T>,
    pre: Matrix<T>,
    act: Matrix<T>,
}

/// The MLP's parameter gradients.
#[derive(Clone, Debug)]
pub struct MlpGrads<T> {
    /// dL/dW1.
    pub w1: Matrix<T>,
    /// dL/db1.
    pub b1: Vec<T>,
    /// dL/dW2.
    pub w2: Matrix<T>,
    /// dL/db2.
    pub b2: Vec<T>,
}

/// `y = act(x W1 + b1) W2 + b2` and the cache.
pub fn forward<T: Real>(
    w: MlpWeights<'_, T>,
    act: Activation,
    x: &Matrix<T>,
) -> Result<(Matrix<T>, MlpCache<T>)> {
    let mut pre = mm(x, w.w1)?;
    add_row(&mut pre, w.b1);
    let a: Vec<T> = pre
        .as_slice()
        .iter()
        .map(|&h| T::from_f64(act.apply(h.to_f64())))
        .collect();
    let a = Matrix::from_vec(pre.rows(), pre.cols(), a)?;
    let mut y = mm(&a, w.w2)?;
    add_row(&mut y, w.b2);
    Ok((
        y,
        MlpCache {
            x: x.clone(),
            pre,
            act: a,
        },
    ))
}

/// Backward of [`forward`] given `dy`: `dx` and the parameter gradients.
pub fn backward<T: Real>(
    w: MlpWeights<'_, T>,
    act: Activation,
    cache: &MlpCache<T>,
    dy: &Matrix<T>,
) -> Result<(Matrix<T>, MlpGrads<T>)> {
    let dw2 = mm_tn(&cache.act, dy)?;
    let db2 = col_sum(dy);
    let da = mm_nt(dy, w.w2)?;
    let dh: Vec<T> = da
        .as_slice()
        .iter()
        .zip(cache.pre.as_slice())
        .map(|(&g, &h)| g * T::from_f64(act.derivative(h.to_f64())))
        .collect();
    let dh = Matrix::from_vec(da.rows(), da.cols(), dh)?;
    let dw1 = mm_tn(&cache.x, &dh)?;
    let db1 = col_sum(&dh);
    let dx = mm_nt(&dh, w.w1)?;
    Ok((
        dx,
        MlpGrads {
            w1: dw1,
            b1: db1,
            w2: dw2,
            b2: db2,
        },
    ))
}
