//! The forward pass (docs/math.md §7): multi-head attention streamed row by
//! row, the layer loop, the loss, and the record ([`Forward`] publicly, a
//! full trace internally) that the backward pass reads.

use std::collections::BTreeMap;

use crate::attention::SpecError;
use crate::interval::Interval;
use crate::linalg::{add, degenerate, lift, matmul, shape_err, sub, zeros, Mat, Res};

use super::blocks::*;
use super::config::*;
use super::names::validate;
use super::num::*;

/// One head's softmax record: per query row the shift `c_i` and `1 / sum_j
/// exp(s_ij - c_i)`, from which the backward recomputes the row of `P_h`
/// (never stored: `n x n` per head would not fit at the sizes [`Ball`] reaches).
pub(super) struct HeadTrace<T> {
    pub(super) shift: Vec<T>,
    pub(super) inv: Vec<T>,
}

/// The columns `c0 .. c0 + dh` of one head, and whether the mask is causal.
#[derive(Clone, Copy)]
pub(super) struct HeadCols {
    pub(super) c0: usize,
    pub(super) dh: usize,
    pub(super) causal: bool,
}

impl HeadCols {
    /// The keys row `i` sees (top-left causal: `0..=i`).
    pub(super) fn keys(&self, i: usize, n: usize) -> usize {
        if self.causal {
            i + 1
        } else {
            n
        }
    }

    /// Row `i`'s scores `tau (q_i . k_j)` over the head's columns, `j < keys`.
    pub(super) fn scores<T: Num>(
        &self,
        q: &Mat<T>,
        kk: &Mat<T>,
        tau: &T,
        i: usize,
        prec: u32,
    ) -> Vec<T> {
        (0..self.keys(i, kk.nrows()))
            .map(|j| {
                let cs = self.c0..self.c0 + self.dh;
                tau.times(&sum(cs.map(|c| q[(i, c)].times(&kk[(j, c)])), prec))
            })
            .collect()
    }

    /// Row `i` of `P_h` recomputed from the record: `exp(s_ij - c_i) inv_i`.
    pub(super) fn probs<T: Num>(
        &self,
        (q, kk): (&Mat<T>, &Mat<T>),
        tau: &T,
        rec: &HeadTrace<T>,
        i: usize,
        prec: u32,
    ) -> Res<Vec<T>> {
        self.scores(q, kk, tau, i, prec)
            .iter()
            .map(|s| {
                s.minus(&rec.shift[i])
                    .exp()
                    .map(|e| e.times(&rec.inv[i]))
                    .ok_or_else(|| degenerate("exp unavailable"))
            })
            .collect()
    }
}

/// Rows `0..n` cut into at most this many contiguous blocks for the parallel
/// backward (a fixed count, so the sums, and the enclosures, do not depend on the
/// number of threads).
pub(super) const ROW_BLOCKS: usize = 32;

/// The row blocks of [`ROW_BLOCKS`].
pub(super) fn row_blocks(n: usize) -> Vec<std::ops::Range<usize>> {
    let b = n.clamp(1, ROW_BLOCKS);
    (0..b).map(|t| t * n / b..(t + 1) * n / b).collect()
}

/// Everything one layer's forward computes that its backward needs.
pub(super) struct LayerTrace<T> {
    pub(super) ln1: Option<LnTrace<T>>,
    /// `LN1(T_{l-1})`.
    pub(super) g: Mat<T>,
    pub(super) q: Mat<T>,
    pub(super) k: Mat<T>,
    pub(super) v: Mat<T>,
    /// Per head, the softmax record of `P_h` (causal entries are `0`).
    pub(super) softmax: Vec<HeadTrace<T>>,
    /// `[O_1, ..., O_h]`, `n x d_model`.
    pub(super) heads: Mat<T>,
    /// `Z_l`.
    pub(super) z: Mat<T>,
    pub(super) ln2: Option<LnTrace<T>>,
    /// `LN2(Z_l)`.
    pub(super) h: Mat<T>,
    /// `U = H W1 + b1`.
    pub(super) u: Mat<T>,
    /// `act(U)`.
    pub(super) a: Mat<T>,
    /// `T_l`.
    pub(super) out: Mat<T>,
}

/// The whole forward pass's record.
pub(super) struct Trace<T> {
    pub(super) t0: Mat<T>,
    pub(super) layers: Vec<LayerTrace<T>>,
    /// Cross-entropy only: `LNf`, its output (`T_m` when layer norm is off),
    /// the logits and their row softmax.
    pub(super) lnf: Option<LnTrace<T>>,
    pub(super) hf: Option<Mat<T>>,
    pub(super) logits: Option<Mat<T>>,
    pub(super) probs: Option<Mat<T>>,
    pub(super) loss: T,
}

/// `x + 1 b` (a row vector added to every row).
pub(super) fn add_row<T: Num>(x: &Mat<T>, b: &Mat<T>) -> Mat<T> {
    Mat::from_fn(x.nrows(), x.ncols(), |i, j| x[(i, j)].plus(&b[(0, j)]))
}

/// Multi-head attention of one layer on `g` (docs/math.md §2 per head, ML24
/// Appendix K): returns `Q, K, V`, the heads' softmax records and
/// `[O_1, ..., O_h]`. Rows run in parallel (each row's arithmetic is the same
/// whatever the thread count).
#[allow(clippy::type_complexity)]
pub(super) fn attention<T: Num>(
    cfg: &Config,
    w: &Weights<T>,
    l: usize,
    g: &Mat<T>,
    k: &Consts<T>,
) -> Res<(Mat<T>, Mat<T>, Mat<T>, Vec<HeadTrace<T>>, Mat<T>)> {
    use rayon::prelude::*;
    let prec = k.prec;
    let proj = |name: &str| matmul(g, param(w, &format!("layers.{l}.attn.{name}"))?, prec);
    let (q, kk, v) = (proj("wq")?, proj("wk")?, proj("wv")?);
    let (n, dh) = (g.nrows(), cfg.d_head());
    let mut heads = zeros::<T>(n, cfg.d_model, prec);
    let mut records = Vec::with_capacity(cfg.n_heads);
    for hd in 0..cfg.n_heads {
        let cols = HeadCols {
            c0: hd * dh,
            dh,
            causal: cfg.causal,
        };
        let rows = (0..n)
            .into_par_iter()
            .map(|i| {
                let (c, es, inv) = softmax_parts(&cols.scores(&q, &kk, &k.tau, i, prec), prec)?;
                let p: Vec<T> = es.iter().map(|e| e.times(&inv)).collect();
                let o: Vec<T> = (cols.c0..cols.c0 + dh)
                    .map(|c| {
                        sum(
                            p.iter().enumerate().map(|(j, pj)| pj.times(&v[(j, c)])),
                            prec,
                        )
                    })
                    .collect();
                Ok((c, inv, o))
            })
            .collect::<Vec<_>>()
            // The first failing row in row order, whatever the scheduling.
            .into_iter()
            .collect::<Res<Vec<_>>>()?;
        let mut rec = HeadTrace {
            shift: Vec::with_capacity(n),
            inv: Vec::with_capacity(n),
        };
        for (i, (c, inv, o)) in rows.into_iter().enumerate() {
            rec.shift.push(c);
            rec.inv.push(inv);
            for (t, x) in o.into_iter().enumerate() {
                heads[(i, cols.c0 + t)] = x;
            }
        }
        records.push(rec);
    }
    Ok((q, kk, v, records, heads))
}

/// The forward pass from `T_0`, recording everything (docs/math.md §7).
pub(super) fn run<T: Num>(
    cfg: &Config,
    w: &Weights<T>,
    t0: Mat<T>,
    targets: &Targets,
    k: &Consts<T>,
) -> Res<Trace<T>> {
    let prec = k.prec;
    let mut layers = Vec::with_capacity(cfg.n_layers);
    let mut t = t0.clone();
    for l in 0..cfg.n_layers {
        let p = |name: &str| param(w, &format!("layers.{l}.{name}"));
        let ln1 = maybe_ln(cfg, w, &format!("layers.{l}.ln1"), &t, k)?;
        let g = ln1.as_ref().map_or_else(|| t.clone(), |ln| ln.out.clone());
        let (q, kk, v, softmax, heads) = attention(cfg, w, l, &g, k)?;
        let z = add(&t, &matmul(&heads, p("attn.wo")?, prec)?)?;
        let ln2 = maybe_ln(cfg, w, &format!("layers.{l}.ln2"), &z, k)?;
        let h = ln2.as_ref().map_or_else(|| z.clone(), |ln| ln.out.clone());
        let u = add_row(&matmul(&h, p("mlp.w1")?, prec)?, p("mlp.b1")?);
        let mut a = Vec::with_capacity(u.len());
        for x in u.iter() {
            a.push(activate(cfg.activation, x, k)?);
        }
        let a = Mat::from_vec(u.nrows(), u.ncols(), a);
        let out = add(&z, &add_row(&matmul(&a, p("mlp.w2")?, prec)?, p("mlp.b2")?))?;
        t = out.clone();
        layers.push(LayerTrace {
            ln1,
            g,
            q,
            k: kk,
            v,
            softmax,
            heads,
            z,
            ln2,
            h,
            u,
            a,
            out,
        });
    }
    let mut trace = Trace {
        t0,
        layers,
        lnf: None,
        hf: None,
        logits: None,
        probs: None,
        loss: T::zero(prec),
    };
    match targets {
        Targets::Values(y) => {
            let y = lift::<T>("Y", y, prec)?;
            let r = sub(&t, &y)?;
            let ss = sum(r.iter().map(|x| x.times(x)), prec);
            trace.loss = ss.times(&k.half).times(&k.inv_n);
        }
        Targets::Labels(y) => {
            let lnf = maybe_ln(cfg, w, "lnf", &t, k)?;
            let hf = lnf.as_ref().map_or_else(|| t.clone(), |ln| ln.out.clone());
            let logits = matmul(&hf, param(w, "head.w_out")?, prec)?;
            let mut probs = zeros::<T>(logits.nrows(), logits.ncols(), prec);
            let mut total = T::zero(prec);
            for (i, &yi) in y.iter().enumerate() {
                let row: Vec<T> = logits.row(i).iter().cloned().collect();
                let (p, lse) = softmax_row(&row, prec)?;
                total = total.plus(&lse.minus(&logits[(i, yi)]));
                for (j, pj) in p.into_iter().enumerate() {
                    probs[(i, j)] = pj;
                }
            }
            trace.loss = total.times(&k.inv_n);
            trace.lnf = lnf;
            trace.hf = Some(hf);
            trace.logits = Some(logits);
            trace.probs = Some(probs);
        }
    }
    Ok(trace)
}

/// The checked inputs lifted to `T` and the forward pass over them: the
/// common start of [`forward`] and the gradients.
pub(super) fn trace_in<T: Num>(
    cfg: &Config,
    params: &Params,
    ex: &Example,
    prec: u32,
) -> Res<(Consts<T>, Weights<T>, Trace<T>)> {
    validate(cfg, params, ex, prec)?;
    let k = Consts::new(cfg, ex.n(), prec)?;
    let (w, x) = lift_all::<T>(params, ex, prec)?;
    let t0 = first_stream(&w, x.as_ref(), ex)?;
    let tr = run(cfg, &w, t0, &ex.targets, &k)?;
    Ok((k, w, tr))
}

/// The parameters lifted to `T`, and `T_0`.
pub(super) fn lift_all<T: Num>(
    params: &Params,
    ex: &Example,
    prec: u32,
) -> Res<(Weights<T>, Option<Mat<T>>)> {
    let mut w = BTreeMap::new();
    for (name, m) in params {
        w.insert(name.clone(), lift::<T>(name, m, prec)?);
    }
    let x = match &ex.input {
        Input::Features(x) => Some(lift::<T>("X", x, prec)?),
        Input::Tokens(_) => None,
    };
    Ok((w, x))
}

/// `T_0`: `X` itself, or the embedding rows of the tokens.
pub(super) fn first_stream<T: Num>(
    w: &Weights<T>,
    x: Option<&Mat<T>>,
    ex: &Example,
) -> Res<Mat<T>> {
    match (&ex.input, x) {
        (Input::Tokens(t), _) => {
            let e = param(w, "embedding")?;
            Ok(Mat::from_fn(t.len(), e.ncols(), |i, j| {
                e[(t[i], j)].clone()
            }))
        }
        (Input::Features(_), Some(x)) => Ok(x.clone()),
        (Input::Features(_), None) => Err(shape_err("feature input not lifted".into())),
    }
}

/// Enclosures of the forward pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Forward {
    /// The loss `L`.
    pub loss: Interval,
    /// The residual streams `T_0, T_1, ..., T_m` (`m + 1` matrices, `n x d_model`).
    pub t: Vec<Mat<Interval>>,
    /// The post-attention streams `Z_1, ..., Z_m`.
    pub z: Vec<Mat<Interval>>,
    /// Cross-entropy only: the logits `LNf(T_m) W_out` (`n x vocab`).
    pub logits: Option<Mat<Interval>>,
}

impl Forward {
    /// `T_m`, the model's output (the last of `t`; `None` only for a
    /// hand-built value with an empty `t`).
    pub fn output(&self) -> Option<&Mat<Interval>> {
        self.t.last()
    }
}

/// Enclosures of `L`, of every residual stream `T_l` (`T_m` the output), of
/// every `Z_l` and of the logits, at `prec` bits (docs/math.md §7).
///
/// Errors: [`SpecError::ShapeMismatch`] for a bad configuration, a missing,
/// extra or misshapen parameter, an input or targets of the wrong kind or
/// shape, `n = 0`, or a token or label `>= vocab`; [`SpecError::NonFinite`]
/// for a NaN or infinite entry; [`SpecError::InvalidPrecision`];
/// [`SpecError::Degenerate`] if a normaliser's enclosure is not bounded away
/// from zero (only with enclosures far too wide to be useful).
pub fn forward(
    cfg: &Config,
    params: &Params,
    ex: &Example,
    prec: u32,
) -> Result<Forward, SpecError> {
    let (_, _, tr) = trace_in::<Interval>(cfg, params, ex, prec)?;
    let mut t = vec![tr.t0];
    let mut z = Vec::with_capacity(tr.layers.len());
    for l in tr.layers {
        t.push(l.out);
        z.push(l.z);
    }
    Ok(Forward {
        loss: tr.loss,
        t,
        z,
        logits: tr.logits,
    })
}
