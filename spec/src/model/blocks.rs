//! The forward pass's elementwise and row-wise pieces: layer norm (with the
//! record its backward needs), softmax rows with a point shift, the
//! activation, and parameter look-up.

use std::collections::BTreeMap;

use rug::Rational;

use crate::linalg::{degenerate, shape_err, zeros, LemmaScalar, Mat, Res};
use crate::ml24::blocks::tanh;

use super::config::*;
use super::num::*;

/// Lifted parameters by name.
pub(super) type Weights<T> = BTreeMap<String, Mat<T>>;

/// Looks a lifted parameter up (present after [`validate`]; an error, not a
/// panic, otherwise).
pub(super) fn param<'a, T>(w: &'a Weights<T>, name: &str) -> Res<&'a Mat<T>> {
    w.get(name)
        .ok_or_else(|| shape_err(format!("parameter {name} is missing")))
}

/// One layer norm's record: the normalised rows `xhat`, the reciprocal
/// standard deviations `rstd_i = 1/sqrt(var_i + eps)`, and the output.
pub(super) struct LnTrace<T> {
    pub(super) xhat: Mat<T>,
    pub(super) rstd: Vec<T>,
    pub(super) out: Mat<T>,
}

/// The sum of `terms`, left to right from zero.
pub(super) fn sum<T: LemmaScalar>(terms: impl Iterator<Item = T>, prec: u32) -> T {
    terms.fold(T::zero(prec), |a, x| a.plus(&x))
}

/// `LN(x)` row by row (docs/math.md §7): `xhat = (x - mean) rstd`, `out = xhat o
/// gain + bias`.
pub(super) fn layer_norm<T: Num>(
    x: &Mat<T>,
    gain: &Mat<T>,
    bias: &Mat<T>,
    k: &Consts<T>,
) -> Res<LnTrace<T>> {
    let (n, d) = x.shape();
    let prec = k.prec;
    let inv_d = T::from_rational(&Rational::from((1, d as u64)), prec);
    let mut xhat = zeros::<T>(n, d, prec);
    let mut rstd = Vec::with_capacity(n);
    for i in 0..n {
        let mean = sum((0..d).map(|j| x[(i, j)].clone()), prec).times(&inv_d);
        let dev: Vec<T> = (0..d).map(|j| x[(i, j)].minus(&mean)).collect();
        let ss = sum(dev.iter().map(|v| v.times(v)), prec);
        let r = ss
            .times(&inv_d)
            .plus(&k.eps)
            .sqrt()
            .and_then(|s| s.recip())
            .ok_or_else(|| degenerate("layer norm: var + eps not bounded away from 0"))?;
        for (j, v) in dev.iter().enumerate() {
            xhat[(i, j)] = v.times(&r);
        }
        rstd.push(r);
    }
    let out = Mat::from_fn(n, d, |i, j| {
        xhat[(i, j)].times(&gain[(0, j)]).plus(&bias[(0, j)])
    });
    Ok(LnTrace { xhat, rstd, out })
}

/// The layer norm named `prefix` when layer norm is on, else `None` (identity).
pub(super) fn maybe_ln<T: Num>(
    cfg: &Config,
    w: &Weights<T>,
    prefix: &str,
    x: &Mat<T>,
    k: &Consts<T>,
) -> Res<Option<LnTrace<T>>> {
    if !cfg.layer_norm {
        return Ok(None);
    }
    let gain = param(w, &format!("{prefix}.gain"))?;
    let bias = param(w, &format!("{prefix}.bias"))?;
    layer_norm(x, gain, bias, k).map(Some)
}

/// A softmax row's pieces over the entries `zs`: the shift `c` (a *point*, the
/// largest midpoint of the row), `e_j = exp(z_j - c)` and `inv = 1 / sum_j e_j`,
/// so `p_j = e_j inv` (the shift is exact in real arithmetic).
pub(super) fn softmax_parts<T: Num>(zs: &[T], prec: u32) -> Res<(T, Vec<T>, T)> {
    let c = zs
        .iter()
        .reduce(|a, b| if b.mid_f64() > a.mid_f64() { b } else { a })
        .ok_or_else(|| degenerate("softmax of an empty row"))?
        .midpoint();
    let es = zs
        .iter()
        .map(|z| {
            z.minus(&c)
                .exp()
                .ok_or_else(|| degenerate("exp unavailable"))
        })
        .collect::<Res<Vec<T>>>()?;
    let inv = sum(es.iter().cloned(), prec)
        .recip()
        .ok_or_else(|| degenerate("softmax normaliser not bounded away from 0"))?;
    Ok((c, es, inv))
}

/// A softmax row: `p_j = exp(z_j - c) / sum_j exp(z_j - c)` over the entries
/// `zs`, and `lse = c + ln sum_j exp(z_j - c)`.
pub(super) fn softmax_row<T: Num>(zs: &[T], prec: u32) -> Res<(Vec<T>, T)> {
    let (c, es, inv) = softmax_parts(zs, prec)?;
    let lse = sum(es.iter().cloned(), prec)
        .ln()
        .ok_or_else(|| degenerate("softmax normaliser not positive"))?
        .plus(&c);
    Ok((es.iter().map(|e| e.times(&inv)).collect(), lse))
}

/// `act(u)` entry-wise.
pub(super) fn activate<T: Num>(act: Activation, u: &T, k: &Consts<T>) -> Res<T> {
    match act {
        Activation::Relu => Ok(u.relu()),
        Activation::Gelu => {
            let prec = k.prec;
            let inner = u.plus(&k.gelu_k.times(&u.times(u).times(u)));
            let t = tanh(&k.gelu_c.times(&inner), prec)?;
            Ok(k.half.times(u).times(&T::one(prec).plus(&t)))
        }
    }
}
