//! The layer-level lemmas of ML24: the gradient through the MLP block
//! `g(Z) = phi(Z W_g)` (Lemmas H.1, H.2), through a residual connection
//! (Lemma J.3) and through multi-head attention (Lemma K.2). docs/math.md §6.2, §7.
//!
//! `phi` is `tanh` here (any differentiable activation would do; `tanh` is
//! elementary in `exp`, so the same generic code runs in intervals and in the
//! dual-number oracle): `phi'(x) = 1 - tanh(x)^2`.

use crate::interval::Interval;
use crate::linalg::{
    add, chain, degenerate, exp_kernel, expect_shape, hadamard, lift, matmul, LemmaScalar, Mat, Res,
};
use crate::ml24::terms::{d_terms, Form};
use crate::ml24::{Eval, Layer};

/// `tanh(x) = 1 - 2 / (exp(2x) + 1)`.
pub(crate) fn tanh<T: LemmaScalar>(x: &T, prec: u32) -> Res<T> {
    let one = T::one(prec);
    let e2 = x
        .plus(x)
        .exp()
        .ok_or_else(|| degenerate("tanh needs exp"))?;
    let inv = e2
        .plus(&one)
        .recip()
        .ok_or_else(|| degenerate("exp(2x) + 1 not bounded away from 0"))?;
    Ok(one.minus(&inv.plus(&inv)))
}

/// The MLP block of ML24 Appendix H: `T = phi(Z W_g)`.
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp {
    /// `Z` (the attention output `Attn(T_{i-1})`), `n x d_v`.
    pub z: Mat<f64>,
    /// `W_g`, `d_v x d_g`.
    pub w_g: Mat<f64>,
}

/// `(dL/dT o phi'(Z W_g))` and the lifted inputs.
fn mlp_inner(
    m: &Mlp,
    gt: &Mat<f64>,
    prec: u32,
) -> Res<(Mat<Interval>, Mat<Interval>, Mat<Interval>)> {
    crate::linalg::check_prec(prec)?;
    expect_shape("W_g", &m.w_g, Some(m.z.ncols()), None)?;
    expect_shape("dL/dT", gt, Some(m.z.nrows()), Some(m.w_g.ncols()))?;
    let z = lift::<Interval>("Z", &m.z, prec)?;
    let wg = lift::<Interval>("W_g", &m.w_g, prec)?;
    let gt = lift::<Interval>("dL/dT", gt, prec)?;
    let pre = matmul(&z, &wg, prec)?;
    let mut dphi = Vec::with_capacity(pre.len());
    for x in pre.iter() {
        let t = tanh(x, prec)?;
        dphi.push(Interval::one(prec) - &t * &t);
    }
    let dphi = Mat::from_vec(pre.nrows(), pre.ncols(), dphi);
    Ok((hadamard(&gt, &dphi)?, z, wg))
}

/// ML24 Lemma H.1: the gradient handed to the attention part,
/// `G_i = dL/dZ = (dL/dT o phi'(Z W_g)) W_g^T` (`n x d_v`). Correct.
pub fn lemma_h1_grad_through_mlp(m: &Mlp, gt: &Mat<f64>, prec: u32) -> Res<Mat<Interval>> {
    let (inner, _, wg) = mlp_inner(m, gt, prec)?;
    matmul(&inner, &wg.transpose(), prec)
}

/// ML24 Lemma H.2: the MLP weight gradient `dL/dW_g = Z^T (dL/dT o phi'(Z W_g))`
/// (`d_v x d_g`). (H.2 is taken to be H.1's weight counterpart; docs/math.md
/// §6.2.) Correct.
pub fn lemma_h2_grad_w_g(m: &Mlp, gt: &Mat<f64>, prec: u32) -> Res<Mat<Interval>> {
    let (inner, z, _) = mlp_inner(m, gt, prec)?;
    matmul(&z.transpose(), &inner, prec)
}

/// ML24 Lemma J.3 (residual connection): for `T = X + s(X) W_O` (the attention
/// output projected back to width `d` by `W_O`, `d_v x d`),
/// `dL/dX = dL/dT + D17(G)` with `G = dL/dT W_O^T` and `D17` the corrected
/// Lemma D.17 (`n x d`). Correct.
pub fn lemma_j3_residual_grad_x(
    layer: &Layer,
    w_o: &Mat<f64>,
    gt: &Mat<f64>,
    prec: u32,
) -> Res<Mat<Interval>> {
    let l = layer.lift::<Interval>(prec)?;
    expect_shape("W_O", w_o, Some(layer.d_v()), Some(layer.d()))?;
    expect_shape("dL/dT", gt, Some(layer.n()), Some(layer.d()))?;
    let wo = lift::<Interval>("W_O", w_o, prec)?;
    let gt = lift::<Interval>("dL/dT", gt, prec)?;
    let g = matmul(&gt, &wo.transpose(), prec)?;
    let fw = l.forward(&exp_kernel)?;
    let e = Eval::from_parts(l, fw, g)?;
    add(&gt, &d_terms(&e, Form::Correct)?.total()?)
}

/// One head of a multi-head layer (ML24 Appendix K).
#[derive(Clone, Debug, PartialEq)]
pub struct Head {
    /// `W_h = W_{Q,h} W_{K,h}^T`, `d x d`.
    pub w: Mat<f64>,
    /// `W_{V,h}`, `d x d_h`.
    pub w_v: Mat<f64>,
    /// The head's score scale.
    pub tau: f64,
}

/// Gradients of a multi-head layer.
#[derive(Clone, Debug, PartialEq)]
pub struct MultiHeadGrads {
    /// `dL/dX`, `n x d`.
    pub dx: Mat<Interval>,
    /// `dL/dW_h` per head.
    pub dw: Vec<Mat<Interval>>,
    /// `dL/dW_{V,h}` per head.
    pub dwv: Vec<Mat<Interval>>,
}

/// The head as a single-head [`Layer`].
pub fn head_layer(x: &Mat<f64>, h: &Head) -> Layer {
    Layer {
        x: x.clone(),
        w: h.w.clone(),
        w_v: h.w_v.clone(),
        tau: h.tau,
    }
}

/// ML24 Lemma K.2 (multi-head): with the output `[s_1, ..., s_H]` (heads
/// concatenated column-wise, each with its own scale), `G` splits column-wise
/// into `G_h`, and `dL/dX = sum_h D17_h(G_h)`, `dL/dW_h = tau_h X^T p_h X`,
/// `dL/dW_{V,h} = X^T f_h^T G_h` (the corrected single-head lemmas per head).
/// `g` is `n x sum_h d_h`. Correct.
pub fn lemma_k2_multi_head(
    x: &Mat<f64>,
    heads: &[Head],
    g: &Mat<f64>,
    prec: u32,
) -> Res<MultiHeadGrads> {
    let total: usize = heads.iter().map(|h| h.w_v.ncols()).sum();
    expect_shape("G", g, Some(x.nrows()), Some(total))?;
    let mut dx = crate::linalg::zeros(x.nrows(), x.ncols(), prec);
    let (mut dw, mut dwv) = (Vec::new(), Vec::new());
    let mut c0 = 0;
    for h in heads {
        let layer = head_layer(x, h);
        let dh = h.w_v.ncols();
        let gh = g.columns(c0, dh).into_owned();
        c0 += dh;
        let e = crate::ml24::eval_exp(&layer, &gh, prec)?;
        dx = add(&dx, &d_terms(&e, Form::Correct)?.total()?)?;
        dw.push(crate::linalg::scale(
            &e.l.tau,
            &chain(&[&e.l.x.transpose(), &e.p, &e.l.x], prec)?,
        ));
        dwv.push(chain(
            &[&e.l.x.transpose(), &e.fw.f.transpose(), &e.g],
            prec,
        )?);
    }
    Ok(MultiHeadGrads { dx, dw, dwv })
}
