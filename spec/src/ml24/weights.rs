//! ML24 Lemma 3.4 / C.4 (the chain rule through `G`) and the weight gradients
//! of Appendices F and G (docs/math.md §1.3 and §6.2).
//!
//! ```text
//! ds_{i0 j0}/dW_{ab}   = tau X_{i0 a} sum_l f_{i0 l} (h_{l j0} - s_{i0 j0}) X_{l b}    (F.3)
//! dL/dW                = tau X^T p X                                              (F.4)
//! ds_{i0 j0}/dW_V{ab}  = [b = j0] (f X)_{i0 a}                                     (G.1)
//! dL/dW_V              = sum_{i0 j0} G_{i0 j0} ds_{i0 j0}/dW_V  = X^T f^T G        (G.2, G.3)
//! ```
//! Lemma G.3 prints `X^T f G` (an erratum: `f` is not symmetric).

use crate::interval::Interval;
use crate::linalg::{add, chain, scale, LemmaScalar, Mat, Res};
use crate::ml24::terms::{assemble, b_terms, Form};
use crate::ml24::{check_index, eval_exp, Eval, Layer};

/// `ds_{i0 j0}/dW` (`d x d`) from an evaluation (Lemma F.3's formula).
pub(crate) fn ds_dw<T: LemmaScalar>(e: &Eval<T>, i0: usize, j0: usize) -> Res<Mat<T>> {
    let (n, d) = (e.l.x.nrows(), e.l.x.ncols());
    check_index("i0", i0, n)?;
    check_index("j0", j0, e.l.wv.ncols())?;
    let prec = e.prec();
    let (x, f, h, s) = (&e.l.x, &e.fw.f, &e.fw.h, &e.fw.s[(i0, j0)]);
    let weighted: Vec<T> = (0..d)
        .map(|b| {
            (0..n).fold(T::zero(prec), |acc, l| {
                acc.plus(&f[(i0, l)].times(&h[(l, j0)].minus(s)).times(&x[(l, b)]))
            })
        })
        .collect();
    Ok(Mat::from_fn(d, d, |a, b| {
        e.l.tau.times(&x[(i0, a)]).times(&weighted[b])
    }))
}

/// `ds_{i0 j0}/dW_V` (`d x d_v`) from an evaluation (Lemma G.1's formula).
pub(crate) fn ds_dwv<T: LemmaScalar>(e: &Eval<T>, i0: usize, j0: usize) -> Res<Mat<T>> {
    let (n, d, dv) = (e.l.x.nrows(), e.l.x.ncols(), e.l.wv.ncols());
    check_index("i0", i0, n)?;
    check_index("j0", j0, dv)?;
    let prec = e.prec();
    let fx: Vec<T> = (0..d)
        .map(|a| {
            (0..n).fold(T::zero(prec), |acc, l| {
                acc.plus(&e.fw.f[(i0, l)].times(&e.l.x[(l, a)]))
            })
        })
        .collect();
    Ok(Mat::from_fn(d, dv, |a, b| {
        if b == j0 {
            fx[a].clone()
        } else {
            T::zero(prec)
        }
    }))
}

/// ML24 Lemma F.3 (the ML24 form of AS24 Lemma B.1 with `A1 = A2 = X` and the
/// variable `W`): `ds_{i0 j0}/dW_{ab} = tau X_{i0 a} sum_l f_{i0 l} (h_{l j0} -
/// s_{i0 j0}) X_{l b}`, as a `d x d` matrix. Correct.
pub fn lemma_f3_ds_dw(layer: &Layer, i0: usize, j0: usize, prec: u32) -> Res<Mat<Interval>> {
    let e = eval_exp(layer, &Mat::zeros(layer.n(), layer.d_v()), prec)?;
    ds_dw(&e, i0, j0)
}

/// ML24 Lemma F.4: `dL/dW = tau X^T p X` (`d x d`; correct as printed, docs/math.md §1.3).
pub fn lemma_f4_grad_w(layer: &Layer, g: &Mat<f64>, prec: u32) -> Res<Mat<Interval>> {
    let e = eval_exp(layer, g, prec)?;
    Ok(scale(
        &e.l.tau,
        &chain(&[&e.l.x.transpose(), &e.p, &e.l.x], prec)?,
    ))
}

/// ML24 Lemma G.1: `ds_{i0 j0}/dW_V` (`d x d_v`): column `j0` is `(f X)_{i0,*}^T`,
/// the others zero. Correct.
pub fn lemma_g1_ds_dwv(layer: &Layer, i0: usize, j0: usize, prec: u32) -> Res<Mat<Interval>> {
    let e = eval_exp(layer, &Mat::zeros(layer.n(), layer.d_v()), prec)?;
    ds_dwv(&e, i0, j0)
}

/// ML24 Lemma G.2: `dL/dW_V = sum_{i0, j0} G_{i0 j0} ds_{i0 j0}/dW_V` (the chain
/// rule through `G` applied to Lemma G.1; `d x d_v`). Correct.
pub fn lemma_g2_grad_wv(layer: &Layer, g: &Mat<f64>, prec: u32) -> Res<Mat<Interval>> {
    let e = eval_exp(layer, g, prec)?;
    let mut acc = crate::linalg::zeros(layer.d(), layer.d_v(), prec);
    for i0 in 0..layer.n() {
        for j0 in 0..layer.d_v() {
            acc = add(&acc, &scale(&e.g[(i0, j0)], &ds_dwv(&e, i0, j0)?))?;
        }
    }
    Ok(acc)
}

/// ML24 Lemma G.3, corrected (docs/math.md §1.3): `dL/dW_V = X^T f^T G` (`d x d_v`).
pub fn lemma_g3_grad_wv(layer: &Layer, g: &Mat<f64>, prec: u32) -> Res<Mat<Interval>> {
    let e = eval_exp(layer, g, prec)?;
    chain(&[&e.l.x.transpose(), &e.fw.f.transpose(), &e.g], prec)
}

/// ML24 Lemma G.3 as printed (docs/math.md §6.2): `dL/dW_V = X^T f G`. Wrong:
/// `f` is not symmetric, not even for symmetric `W` (its rows are normalised,
/// its columns are not).
pub fn lemma_g3_grad_wv_printed(layer: &Layer, g: &Mat<f64>, prec: u32) -> Res<Mat<Interval>> {
    let e = eval_exp(layer, g, prec)?;
    chain(&[&e.l.x.transpose(), &e.fw.f, &e.g], prec)
}

/// The three gradients of one layer by the chain rule through `G`.
#[derive(Clone, Debug, PartialEq)]
pub struct ChainRule {
    /// `dL/dX` (`n x d`), standing for `dL/dT_{i-1}`.
    pub dx: Mat<Interval>,
    /// `dL/dW` (`d x d`).
    pub dw: Mat<Interval>,
    /// `dL/dW_V` (`d x d_v`).
    pub dwv: Mat<Interval>,
}

/// ML24 Lemma 3.4 / C.4: the closed form of the gradient components as sums
/// over `G`: `dL/dT_{i-1} = sum_{i0 j0} G_{i0 j0} ds_{i0 j0}/dT_{i-1}` and the
/// same for `W_i` and `W_{V,i}`, with the entry derivatives of the corrected
/// Lemma D.1 (via D.3..D.8), Lemma F.3 and Lemma G.1. Correct.
pub fn lemma_c4_chain_rule(layer: &Layer, g: &Mat<f64>, prec: u32) -> Res<ChainRule> {
    let e = eval_exp(layer, g, prec)?;
    let mut dx = crate::linalg::zeros(layer.n(), layer.d(), prec);
    let mut dw = crate::linalg::zeros(layer.d(), layer.d(), prec);
    let mut dwv = crate::linalg::zeros(layer.d(), layer.d_v(), prec);
    for i0 in 0..layer.n() {
        for j0 in 0..layer.d_v() {
            let gij = &e.g[(i0, j0)];
            let jx = assemble(&b_terms(&e, i0, j0, Form::Correct)?, i0)?;
            dx = add(&dx, &scale(gij, &jx))?;
            dw = add(&dw, &scale(gij, &ds_dw(&e, i0, j0)?))?;
            dwv = add(&dwv, &scale(gij, &ds_dwv(&e, i0, j0)?))?;
        }
    }
    Ok(ChainRule { dx, dw, dwv })
}
