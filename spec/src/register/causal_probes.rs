//! Probes for ML24 Lemmas I.7 and I.8 (causal mask): each runs the lemma's
//! corrected and printed forms against dual-number gradients of causal
//! attention from [`crate::attention`] (a second, independent oracle: its own
//! forward code and mask), pulled back to `X`, `W`, `W_V` by the chain rule
//! through `Q = X W`, `K = X`, `V = X W_V`.

use crate::attention::{gradients_by_dual_numbers, Mask, Problem};
use crate::instance::Instance;
use crate::interval::Interval;
use crate::linalg::{add, lift, matmul, Mat, Res};
use crate::ml24::causal::{
    lemma_i7_grad_wv, lemma_i7_grad_wv_printed, lemma_i7_i8_grad_x, lemma_i7_i8_grad_x_printed,
    lemma_i8_grad_w,
};

use super::probes::{ag, exact_product};
use super::Probe;

/// The oracle's causal gradients `(dL/dX, dL/dW, dL/dW_V)` for `L = <G, s>`.
fn causal_oracle(inst: &Instance, prec: u32) -> Res<[Mat<Interval>; 3]> {
    let l = &inst.layer;
    let p = Problem {
        q: exact_product(&l.x, &l.w)?,
        k: l.x.clone(),
        v: exact_product(&l.x, &l.w_v)?,
        tau: l.tau,
        mask: Mask::CausalTopLeft,
        softcap: None,
    };
    let gr = gradients_by_dual_numbers(&p, &inst.g, prec)?;
    let x = lift::<Interval>("X", &l.x, prec)?;
    let w = lift::<Interval>("W", &l.w, prec)?;
    let wv = lift::<Interval>("W_V", &l.w_v, prec)?;
    // dL/dX = dQ W^T + dK + dV W_V^T; dL/dW = X^T dQ; dL/dW_V = X^T dV.
    let dx = add(
        &add(&matmul(&gr.dq, &w.transpose(), prec)?, &gr.dk)?,
        &matmul(&gr.dv, &wv.transpose(), prec)?,
    )?;
    let dw = matmul(&x.transpose(), &gr.dq, prec)?;
    let dwv = matmul(&x.transpose(), &gr.dv, prec)?;
    Ok([dx, dw, dwv])
}

/// Lemmas I.7 parts 1-3 and I.8 parts 1-2, summed into causal `dL/dX`.
pub(super) fn probe_i7_i8_grad_x(inst: &Instance, prec: u32) -> Res<Probe> {
    let [dx, ..] = causal_oracle(inst, prec)?;
    let (l, g) = (&inst.layer, &inst.g);
    Ok(Probe {
        correct: Some(ag(&lemma_i7_i8_grad_x(l, g, prec)?, &dx)?),
        printed: Some(ag(&lemma_i7_i8_grad_x_printed(l, g, prec)?, &dx)?),
        ..Probe::default()
    })
}

/// Lemma I.7 part 4: causal `dL/dW_V`.
pub(super) fn probe_i7_grad_wv(inst: &Instance, prec: u32) -> Res<Probe> {
    let [_, _, dwv] = causal_oracle(inst, prec)?;
    let (l, g) = (&inst.layer, &inst.g);
    Ok(Probe {
        correct: Some(ag(&lemma_i7_grad_wv(l, g, prec)?, &dwv)?),
        printed: Some(ag(&lemma_i7_grad_wv_printed(l, g, prec)?, &dwv)?),
        ..Probe::default()
    })
}

/// Lemma I.8 part 3: causal `dL/dW` (printed as corrected).
pub(super) fn probe_i8_grad_w(inst: &Instance, prec: u32) -> Res<Probe> {
    let [_, dw, _] = causal_oracle(inst, prec)?;
    Ok(Probe {
        correct: Some(ag(&lemma_i8_grad_w(&inst.layer, &inst.g, prec)?, &dw)?),
        ..Probe::default()
    })
}
