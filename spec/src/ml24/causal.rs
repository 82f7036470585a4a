//! ML24 Lemmas I.7 and I.8: the pieces of `dL/dX` (Lemma D.17's `D6`, `D2`,
//! `D8` in I.7, `D7`, `D4` in I.8) and the weight gradients (`g_v` of G.3 in
//! I.7 part 4, `g_w` of F.5 in I.8 part 3) under the causal mask, where `f`
//! is the row-normalised causally masked `exp` (docs/math.md §1.2, top-left:
//! key `j` visible to query `i` iff `j <= i`).
//!
//! Lemmas I.7 and I.8 restate the D.17 and G.3 formulas with the masked `f`,
//! so they repeat their transposes (docs/math.md §6.2); the chain rule does
//! not care where `f`'s zeros sit, so the corrected forms are D.17's and
//! G.3's with the masked `f`. F.5's `g_w = tau X^T (p1 - p2) X` is printed
//! correctly and I.8 part 3 inherits that.

use crate::interval::Interval;
use crate::linalg::{
    apply, causal, chain, exp_kernel, lift, matmul, normalise_rows, scale, Mat, Res,
};
use crate::ml24::terms::{d_terms, Form};
use crate::ml24::{Eval, Fwd, Layer};

/// The evaluation of docs/math.md §1.3 with the causal `f`.
fn causal_eval(layer: &Layer, g: &Mat<f64>, prec: u32) -> Res<Eval<Interval>> {
    let l = layer.lift::<Interval>(prec)?;
    let e = apply(&exp_kernel, &l.scores()?)?;
    let f = normalise_rows(&causal(&e, prec), prec)?;
    let h = matmul(&l.x, &l.wv, prec)?;
    let s = matmul(&f, &h, prec)?;
    let g = lift("G", g, prec)?;
    Eval::from_parts(l, Fwd { f, h, s }, g)
}

fn grad_x(layer: &Layer, g: &Mat<f64>, form: Form, prec: u32) -> Res<Mat<Interval>> {
    d_terms(&causal_eval(layer, g, prec)?, form)?.total()
}

/// Lemmas I.7 parts 1-3 and I.8 parts 1-2 summed: causal `dL/dX =
/// tau (p X W^T + p^T X W) + f^T G W_V^T`.
pub fn lemma_i7_i8_grad_x(layer: &Layer, g: &Mat<f64>, prec: u32) -> Res<Mat<Interval>> {
    grad_x(layer, g, Form::Correct, prec)
}

/// The same as printed (D.17's printed terms with the causal `f`).
pub fn lemma_i7_i8_grad_x_printed(layer: &Layer, g: &Mat<f64>, prec: u32) -> Res<Mat<Interval>> {
    grad_x(layer, g, Form::Printed, prec)
}

/// Lemma I.7 part 4: causal `dL/dW_V = X^T f^T G`.
pub fn lemma_i7_grad_wv(layer: &Layer, g: &Mat<f64>, prec: u32) -> Res<Mat<Interval>> {
    let e = causal_eval(layer, g, prec)?;
    chain(&[&e.l.x.transpose(), &e.fw.f.transpose(), &e.g], prec)
}

/// Lemma I.7 part 4 as printed: `X^T f G`.
pub fn lemma_i7_grad_wv_printed(layer: &Layer, g: &Mat<f64>, prec: u32) -> Res<Mat<Interval>> {
    let e = causal_eval(layer, g, prec)?;
    chain(&[&e.l.x.transpose(), &e.fw.f, &e.g], prec)
}

/// Lemma I.8 part 3: causal `dL/dW = tau X^T (p1 - p2) X`.
pub fn lemma_i8_grad_w(layer: &Layer, g: &Mat<f64>, prec: u32) -> Res<Mat<Interval>> {
    let e = causal_eval(layer, g, prec)?;
    Ok(scale(
        &e.l.tau,
        &chain(&[&e.l.x.transpose(), &e.p, &e.l.x], prec)?,
    ))
}
