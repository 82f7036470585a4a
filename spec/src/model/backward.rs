//! The closed-form backward pass (docs/math.md §7.2 and §2.3): the gradient
//! of every parameter (and of a feature input) from the forward trace, in
//! interval arithmetic ([`gradients`]) and in double-double balls
//! ([`loss_and_gradients_ball`]).

use std::collections::BTreeMap;

use rug::Rational;

use crate::attention::SpecError;
use crate::ball::Ball;
use crate::interval::Interval;
use crate::linalg::{
    add, degenerate, hadamard, lift, matmul, scale, sub, zeros, LemmaScalar, Mat, Res,
};
use crate::ml24::blocks::tanh;

use super::blocks::*;
use super::config::*;
use super::forward::*;
use super::num::*;

/// Column sums as a `1 x cols` matrix (the gradient of a bias `1 b`).
pub(super) fn col_sums<T: LemmaScalar>(m: &Mat<T>, prec: u32) -> Mat<T> {
    Mat::from_fn(1, m.ncols(), |_, j| {
        sum((0..m.nrows()).map(|i| m[(i, j)].clone()), prec)
    })
}

/// `x^T y`.
pub(super) fn tmul<T: LemmaScalar>(x: &Mat<T>, y: &Mat<T>, prec: u32) -> Res<Mat<T>> {
    matmul(&x.transpose(), y, prec)
}

/// `x y^T`.
pub(super) fn mult<T: LemmaScalar>(x: &Mat<T>, y: &Mat<T>, prec: u32) -> Res<Mat<T>> {
    matmul(x, &y.transpose(), prec)
}

/// Backward of a layer norm (when on): given `dy = dL/dout`, records
/// `grad.{prefix}.gain = 1^T (dy o xhat)` and `grad.{prefix}.bias = 1^T dy`,
/// and returns `dL/dx` row by row,
/// `dx = rstd (g - mean(g) - xhat mean(g o xhat))` with `g = dy o gain`.
/// When layer norm is off, `dx = dy`.
pub(super) fn ln_backward<T: Num>(
    ln: Option<&LnTrace<T>>,
    w: &Weights<T>,
    prefix: &str,
    dy: Mat<T>,
    grads: &mut BTreeMap<String, Mat<T>>,
    prec: u32,
) -> Res<Mat<T>> {
    let Some(ln) = ln else { return Ok(dy) };
    let gain = param(w, &format!("{prefix}.gain"))?;
    grads.insert(
        format!("grad.{prefix}.gain"),
        col_sums(&hadamard(&dy, &ln.xhat)?, prec),
    );
    grads.insert(format!("grad.{prefix}.bias"), col_sums(&dy, prec));
    let (n, d) = dy.shape();
    let inv_d = T::from_rational(&Rational::from((1, d as u64)), prec);
    let mut dx = zeros::<T>(n, d, prec);
    for i in 0..n {
        let g: Vec<T> = (0..d).map(|j| dy[(i, j)].times(&gain[(0, j)])).collect();
        let mean_g = sum(g.iter().cloned(), prec).times(&inv_d);
        let mean_gx = sum(
            g.iter()
                .enumerate()
                .map(|(j, gj)| gj.times(&ln.xhat[(i, j)])),
            prec,
        )
        .times(&inv_d);
        for (j, gj) in g.iter().enumerate() {
            let centred = gj.minus(&mean_g).minus(&ln.xhat[(i, j)].times(&mean_gx));
            dx[(i, j)] = ln.rstd[i].times(&centred);
        }
    }
    Ok(dx)
}

/// `act'(u)` entry-wise. GELU:
/// `0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 k x^2)` with
/// `t = tanh(c (x + k x^3))`, `c = sqrt(2/pi)`, `k = 0.044715`.
pub(super) fn activation_slope<T: Num>(act: Activation, u: &T, k: &Consts<T>) -> Res<T> {
    let prec = k.prec;
    match act {
        Activation::Relu => Ok(u.relu_slope()),
        Activation::Gelu => {
            let one = T::one(prec);
            let x2 = u.times(u);
            let t = tanh(
                &k.gelu_c.times(&u.plus(&k.gelu_k.times(&x2).times(u))),
                prec,
            )?;
            let first = k.half.times(&one.plus(&t));
            let sech2 = one.minus(&t.times(&t));
            let inner = k
                .gelu_c
                .times(&one.plus(&k.three.times(&k.gelu_k).times(&x2)));
            Ok(first.plus(&k.half.times(u).times(&sech2).times(&inner)))
        }
    }
}

/// One head's attention backward (docs/math.md §2.3), streamed row by row with `P_h`
/// recomputed from its softmax record: `dV = P^T dO`, `dP = dO V^T`,
/// `delta = rowsum(dO o O)`, `dS = P o (dP - delta 1^T)`, `dQ = tau dS K`,
/// `dK = tau dS^T Q`. Row blocks ([`row_blocks`]) run in parallel; each keeps its
/// own partial `dS^T Q` and `P^T dO`, summed in block order. Returns the head's
/// `(dQ, dK, dV)`, each `n x d_head`.
#[allow(clippy::too_many_arguments)]
pub(super) fn head_backward<T: Num>(
    cols: HeadCols,
    lt: &LayerTrace<T>,
    rec: &HeadTrace<T>,
    dheads: &Mat<T>,
    k: &Consts<T>,
) -> Res<(Mat<T>, Mat<T>, Mat<T>)> {
    use rayon::prelude::*;
    let (prec, n, dh, c0) = (k.prec, lt.g.nrows(), cols.dh, cols.c0);
    let block = |rows: std::ops::Range<usize>| -> Res<(Vec<T>, Vec<T>, Vec<T>)> {
        let (mut dq, mut dst_q, mut pt_do) = (
            Vec::with_capacity(rows.len() * dh),
            vec![T::zero(prec); n * dh],
            vec![T::zero(prec); n * dh],
        );
        for i in rows {
            let p = cols.probs((&lt.q, &lt.k), &k.tau, rec, i, prec)?;
            let d_o: Vec<T> = (c0..c0 + dh).map(|c| dheads[(i, c)].clone()).collect();
            let delta = sum(
                d_o.iter()
                    .enumerate()
                    .map(|(t, g)| g.times(&lt.heads[(i, c0 + t)])),
                prec,
            );
            let ds: Vec<T> = p
                .iter()
                .enumerate()
                .map(|(j, pij)| {
                    let dp = sum(
                        d_o.iter()
                            .enumerate()
                            .map(|(t, g)| g.times(&lt.v[(j, c0 + t)])),
                        prec,
                    );
                    pij.times(&dp.minus(&delta))
                })
                .collect();
            for t in 0..dh {
                let acc = sum(
                    ds.iter()
                        .enumerate()
                        .map(|(j, s)| s.times(&lt.k[(j, c0 + t)])),
                    prec,
                );
                dq.push(k.tau.times(&acc));
            }
            for (j, (s, pij)) in ds.iter().zip(&p).enumerate() {
                for (t, g) in d_o.iter().enumerate() {
                    let e = j * dh + t;
                    dst_q[e] = dst_q[e].plus(&s.times(&lt.q[(i, c0 + t)]));
                    pt_do[e] = pt_do[e].plus(&pij.times(g));
                }
            }
        }
        Ok((dq, dst_q, pt_do))
    };
    let parts = row_blocks(n)
        .into_par_iter()
        .map(block)
        .collect::<Vec<_>>()
        .into_iter()
        .collect::<Res<Vec<_>>>()?;
    let mut dq = Vec::with_capacity(n * dh);
    let (mut dst_q, mut pt_do) = (vec![T::zero(prec); n * dh], vec![T::zero(prec); n * dh]);
    for (q_rows, a, b) in parts {
        dq.extend(q_rows);
        for e in 0..n * dh {
            dst_q[e] = dst_q[e].plus(&a[e]);
            pt_do[e] = pt_do[e].plus(&b[e]);
        }
    }
    let rows = |v: Vec<T>| Mat::from_row_iterator(n, dh, v);
    let dk = scale(&k.tau, &rows(dst_q));
    Ok((rows(dq), dk, rows(pt_do)))
}

/// Backward of one layer (docs/math.md §7.2 and §2.3; ML24 Lemmas H.1/H.2 for the MLP,
/// J.3 for the residuals, K.2 for the heads): given `dT = dL/dT_l`, records
/// this layer's parameter gradients and returns `dL/dT_{l-1}`.
pub(super) fn layer_backward<T: Num>(
    cfg: &Config,
    w: &Weights<T>,
    l: usize,
    lt: &LayerTrace<T>,
    dt: Mat<T>,
    grads: &mut BTreeMap<String, Mat<T>>,
    k: &Consts<T>,
) -> Res<Mat<T>> {
    let prec = k.prec;
    let p = |name: &str| param(w, &format!("layers.{l}.{name}"));
    let mut put = |name: &str, m: Mat<T>| {
        grads.insert(format!("grad.layers.{l}.{name}"), m);
    };
    // MLP: T = Z + act(U) W2 + b2, U = H W1 + b1.
    put("mlp.b2", col_sums(&dt, prec));
    put("mlp.w2", tmul(&lt.a, &dt, prec)?);
    let da = mult(&dt, p("mlp.w2")?, prec)?;
    let mut slope = Vec::with_capacity(lt.u.len());
    for x in lt.u.iter() {
        slope.push(activation_slope(cfg.activation, x, k)?);
    }
    let du = hadamard(&da, &Mat::from_vec(lt.u.nrows(), lt.u.ncols(), slope))?;
    put("mlp.w1", tmul(&lt.h, &du, prec)?);
    put("mlp.b1", col_sums(&du, prec));
    let dh = mult(&du, p("mlp.w1")?, prec)?;
    let dz_mlp = ln_backward(
        lt.ln2.as_ref(),
        w,
        &format!("layers.{l}.ln2"),
        dh,
        grads,
        prec,
    )?;
    let dz = add(&dt, &dz_mlp)?;
    // Attention: Z = T + [O_1..O_h] Wo.
    grads.insert(
        format!("grad.layers.{l}.attn.wo"),
        tmul(&lt.heads, &dz, prec)?,
    );
    let dheads = mult(&dz, p("attn.wo")?, prec)?;
    let (n, dh_) = (lt.g.nrows(), cfg.d_head());
    let mut dq = zeros::<T>(n, cfg.d_model, prec);
    let mut dk = dq.clone();
    let mut dv = dq.clone();
    for (hd, rec) in lt.softmax.iter().enumerate() {
        let cols = HeadCols {
            c0: hd * dh_,
            dh: dh_,
            causal: cfg.causal,
        };
        let (dqh, dkh, dvh) = head_backward(cols, lt, rec, &dheads, k)?;
        dq.view_mut((0, cols.c0), (n, dh_)).copy_from(&dqh);
        dk.view_mut((0, cols.c0), (n, dh_)).copy_from(&dkh);
        dv.view_mut((0, cols.c0), (n, dh_)).copy_from(&dvh);
    }
    let mut dg = zeros::<T>(n, cfg.d_model, prec);
    for (name, d) in [("wq", &dq), ("wk", &dk), ("wv", &dv)] {
        grads.insert(
            format!("grad.layers.{l}.attn.{name}"),
            tmul(&lt.g, d, prec)?,
        );
        dg = add(&dg, &mult(d, p(&format!("attn.{name}"))?, prec)?)?;
    }
    let dt_attn = ln_backward(
        lt.ln1.as_ref(),
        w,
        &format!("layers.{l}.ln1"),
        dg,
        grads,
        prec,
    )?;
    add(&dz, &dt_attn)
}

/// The loss and the gradient of every parameter (and `X`) in `T` arithmetic:
/// the closed-form backward of [`gradients`], generic over the enclosure type.
pub(super) fn loss_and_gradients_in<T: Num>(
    cfg: &Config,
    params: &Params,
    ex: &Example,
    prec: u32,
) -> Res<(T, BTreeMap<String, Mat<T>>)> {
    let (k, w, tr) = trace_in::<T>(cfg, params, ex, prec)?;
    let mut grads = BTreeMap::new();
    let t_m = tr.layers.last().map_or(&tr.t0, |l| &l.out);
    let mut dt = match &ex.targets {
        Targets::Values(y) => scale(&k.inv_n, &sub(t_m, &lift::<T>("Y", y, prec)?)?),
        Targets::Labels(y) => {
            let (Some(hf), Some(probs)) = (&tr.hf, &tr.probs) else {
                return Err(degenerate("cross-entropy trace incomplete"));
            };
            let mut dlogits = probs.clone();
            for (i, &yi) in y.iter().enumerate() {
                dlogits[(i, yi)] = dlogits[(i, yi)].minus(&T::one(prec));
            }
            let dlogits = scale(&k.inv_n, &dlogits);
            grads.insert("grad.head.w_out".into(), tmul(hf, &dlogits, prec)?);
            let dhf = mult(&dlogits, param(&w, "head.w_out")?, prec)?;
            ln_backward(tr.lnf.as_ref(), &w, "lnf", dhf, &mut grads, prec)?
        }
    };
    for (l, lt) in tr.layers.iter().enumerate().rev() {
        dt = layer_backward(cfg, &w, l, lt, dt, &mut grads, &k)?;
    }
    match &ex.input {
        Input::Features(_) => {
            grads.insert("grad.x".into(), dt);
        }
        Input::Tokens(t) => {
            let e = param(&w, "embedding")?;
            let mut de = zeros::<T>(e.nrows(), e.ncols(), prec);
            for (i, &tok) in t.iter().enumerate() {
                for j in 0..e.ncols() {
                    de[(tok, j)] = de[(tok, j)].plus(&dt[(i, j)]);
                }
            }
            grads.insert("grad.embedding".into(), de);
        }
    }
    Ok((tr.loss, grads))
}

/// Gradient enclosures of `L` with respect to every parameter (and `X` for a
/// feature input) by the closed-form reverse-mode backward of each piece,
/// applied to the interval forward pass at `prec` bits: the loss
/// (`dT_m = (T_m - Y)/n`, or `d logits = (softmax - onehot)/n`), layer norm,
/// the MLP (ML24 Lemmas H.1, H.2), the residual connections (ML24 Lemma J.3)
/// and multi-head attention through the attention backward of docs/math.md §2.3
/// per head (ML24 Lemma K.2); ML24 Lemma 3.4/C.4 chains the layers. The
/// embedding's gradient adds the rows of `dL/dT_0` of every occurrence of a
/// token. Keys as in [`Gradients`]. Errors: as [`forward`].
pub fn gradients(
    cfg: &Config,
    params: &Params,
    ex: &Example,
    prec: u32,
) -> Result<Gradients, SpecError> {
    loss_and_gradients_in::<Interval>(cfg, params, ex, prec).map(|(_, g)| g)
}

/// The loss and every gradient as double-double [`Ball`]s: the same forward and
/// closed-form backward as [`forward`] and [`gradients`], in about 106-bit
/// arithmetic that carries a rigorous bound of its own rounding (docs/math.md §5.2: an
/// enclosure of the exact real values, like the MPFR one, but fast enough for
/// `n` in the tens of thousands). Attention never stores an `n x n` matrix (each
/// head keeps its rows' softmax shifts and normalisers and recomputes `P_h`), and
/// its rows run in parallel with sums in a fixed order (the result does not
/// depend on the number of threads). The widths are about `2^-106` times the
/// amplification of rounding through the layers (see [`gradients_to_width`](super::gradients_to_width)):
/// near `1e-25` relative for two layers of width 16. Errors: as [`gradients`];
/// [`SpecError::Degenerate`] also when a score leaves `exp`'s range (beyond 709
/// above the row's largest) or a normaliser's ball reaches 0.
pub fn loss_and_gradients_ball(
    cfg: &Config,
    params: &Params,
    ex: &Example,
) -> Result<(Ball, BTreeMap<String, Mat<Ball>>), SpecError> {
    loss_and_gradients_in::<Ball>(cfg, params, ex, 256)
}
