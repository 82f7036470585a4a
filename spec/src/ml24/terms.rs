//! ML24 Appendix D: the derivative of the attention output with respect to
//! the input `X`, entry by entry (Lemma D.1), for one output entry (Lemmas
//! D.3..D.8), and contracted with `G` (Lemmas D.9..D.14, D.17).
//!
//! Corrected forms (docs/math.md §1.3 and §6.2; each checked against the dual-number
//! oracle of [`super::oracle`] in the tests):
//!
//! ```text
//! ds_{i0 j0}/dX_{i1 j1} = [i0 = i1] tau sum_l f_{i0 l} (h_{l j0} - s_{i0 j0}) (X W^T)_{l j1}
//!                        + tau f_{i0 i1} (h_{i1 j0} - s_{i0 j0}) (X W)_{i0 j1}
//!                        + f_{i0 i1} (W_V)_{j1 j0}
//! D2 + D4 = tau p X W^T,   D6 + D7 = tau p^T X W,   D8 = f^T G W_V^T
//! dL/dX = D2 + D4 + D6 + D7 + D8            (Lemma D.17)
//! ```
//!
//! The printed forms are those of docs/math.md §6.2, as far as ML24 v2's
//! text could be read (its display math was partly lost and rebuilt from the
//! inline text): the query-side terms carry `W` where `W^T` belongs and the
//! key/value-side terms carry `f_{i1 i0}` (a column of `f`) and `W^T` where
//! `f_{i0 i1}` (a row) and `W` belong.

use crate::interval::Interval;
use crate::linalg::{add, chain, diag_left, neg, scale, LemmaScalar, Mat, Res};
use crate::ml24::{check_index, eval_exp, Eval, Layer};

/// Which form of a term to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Form {
    Correct,
    Printed,
}

/// The five pieces of `ds_{i0 j0}/dX` for one output entry (Lemmas D.3..D.7):
/// `b6`, `b7`, `b8` are `n x d`, `b2`, `b4` are `d x 1`.
pub(crate) struct BTerms<T> {
    pub b6: Mat<T>,
    pub b7: Mat<T>,
    pub b8: Mat<T>,
    pub b2: Mat<T>,
    pub b4: Mat<T>,
}

/// Builds B2..B8 for `(i0, j0)` in the chosen form (see the module docs).
pub(crate) fn b_terms<T: LemmaScalar>(
    e: &Eval<T>,
    i0: usize,
    j0: usize,
    form: Form,
) -> Res<BTerms<T>> {
    let (n, d, dv) = (e.l.x.nrows(), e.l.x.ncols(), e.l.wv.ncols());
    check_index("i0", i0, n)?;
    check_index("j0", j0, dv)?;
    let prec = e.prec();
    let (f, h, s, tau) = (&e.fw.f, &e.fw.h, &e.fw.s[(i0, j0)], &e.l.tau);
    let xw = e.l.xw()?;
    let xwt = e.l.xwt()?;
    // Key side: correct uses row i0 of f and (X W)_{i0,*}; printed the column
    // i0 of f and (W X_{i0,*}^T)^T = (X W^T)_{i0,*}.
    let (fk, xk) = match form {
        Form::Correct => (f.row(i0).transpose(), xw.row(i0).into_owned()),
        Form::Printed => (f.column(i0).into_owned(), xwt.row(i0).into_owned()),
    };
    let b6 = Mat::from_fn(n, d, |i1, j1| {
        tau.times(s).times(&fk[i1]).times(&xk[j1]).negate()
    });
    let b7 = Mat::from_fn(n, d, |i1, j1| {
        tau.times(&fk[i1]).times(&h[(i1, j0)]).times(&xk[j1])
    });
    let b8 = Mat::from_fn(n, d, |i1, j1| fk[i1].times(&e.l.wv[(j1, j0)]));
    // Query side: correct sums (X W^T)_{l j1}, printed (X W)_{l j1}.
    let xq = match form {
        Form::Correct => &xwt,
        Form::Printed => &xw,
    };
    let sum_over_l = |weight: &dyn Fn(usize) -> T, j1: usize| {
        (0..n).fold(T::zero(prec), |acc, l| {
            acc.plus(&f[(i0, l)].times(&weight(l)).times(&xq[(l, j1)]))
        })
    };
    let b2 = Mat::from_fn(d, 1, |j1, _| {
        tau.times(s)
            .times(&sum_over_l(&|_| T::one(prec), j1))
            .negate()
    });
    let b4 = Mat::from_fn(d, 1, |j1, _| {
        tau.times(&sum_over_l(&|l| h[(l, j0)].clone(), j1))
    });
    Ok(BTerms { b6, b7, b8, b2, b4 })
}

/// `B6 + B7 + B8 + e_{i0} (B2 + B4)^T`: the whole `ds_{i0 j0}/dX` (`n x d`).
pub(crate) fn assemble<T: LemmaScalar>(b: &BTerms<T>, i0: usize) -> Res<Mat<T>> {
    let mut m = add(&add(&b.b6, &b.b7)?, &b.b8)?;
    for j1 in 0..m.ncols() {
        m[(i0, j1)] = m[(i0, j1)].plus(&b.b2[j1]).plus(&b.b4[j1]);
    }
    Ok(m)
}

fn d1(layer: &Layer, idx: [usize; 4], form: Form, prec: u32) -> Res<Interval> {
    let [i0, j0, i1, j1] = idx;
    let g = Mat::zeros(layer.n(), layer.d_v());
    let e = eval_exp(layer, &g, prec)?;
    check_index("i1", i1, layer.n())?;
    check_index("j1", j1, layer.d())?;
    let m = assemble(&b_terms(&e, i0, j0, form)?, i0)?;
    Ok(m[(i1, j1)].clone())
}

/// ML24 Lemma D.1, corrected: `ds_{i0 j0} / dX_{i1 j1}` (formula in the module
/// docs; both cases `i0 = i1` (C1..C5) and `i0 != i1` (C6..C8)).
pub fn lemma_d1_ds_dx(
    layer: &Layer,
    (i0, j0): (usize, usize),
    (i1, j1): (usize, usize),
    prec: u32,
) -> Res<Interval> {
    d1(layer, [i0, j0, i1, j1], Form::Correct, prec)
}

/// ML24 Lemma D.1 as printed (docs/math.md §6.2; v2's display math was rebuilt
/// from its inline text): for `i0 = i1`,
/// `C1 = -s f_{i0 i0} <W_{j1,*}, X_{i0,*}>`, `C2 = -s <f_{i0,*}, X W_{*,j1}>`,
/// `C3 = f_{i0 i0} h_{i0 j0} <W_{j1,*}, X_{i0,*}>`,
/// `C4 = <f_{i0,*} o (X W_{*,j1}), h_{*,j0}>`, `C5 = f_{i0 i0} (W_V)_{j1 j0}`;
/// for `i0 != i1`, `C6 = -s f_{i1 i0} <W_{j1,*}, X_{i0,*}>`,
/// `C7 = f_{i1 i0} h_{i1 j0} <W_{j1,*}, X_{i0,*}>`, `C8 = f_{i1 i0} (W_V)_{j1 j0}`
/// (`tau` inserted as in the corrected form). Errata: `W` for `W^T` (C2, C4)
/// and `W^T` for `W` (C1, C3, C6, C7), `f_{i1 i0}` for `f_{i0 i1}` (C6..C8).
/// The case `i0 = i1` is right when `W` is symmetric; `i0 != i1` is not.
pub fn lemma_d1_ds_dx_printed(
    layer: &Layer,
    (i0, j0): (usize, usize),
    (i1, j1): (usize, usize),
    prec: u32,
) -> Res<Interval> {
    d1(layer, [i0, j0, i1, j1], Form::Printed, prec)
}

macro_rules! b_lemma {
    ($name:ident, $printed:ident, $field:ident, $num:literal, $correct_doc:literal, $printed_doc:literal) => {
        #[doc = concat!("ML24 Lemma ", $num, ", corrected: ", $correct_doc,
            " for one output entry `(i0, j0)` (docs/math.md §6.2). `tau` as in the chain rule.")]
        pub fn $name(layer: &Layer, i0: usize, j0: usize, prec: u32) -> Res<Mat<Interval>> {
            let e = eval_exp(layer, &Mat::zeros(layer.n(), layer.d_v()), prec)?;
            Ok(b_terms(&e, i0, j0, Form::Correct)?.$field)
        }
        #[doc = concat!("ML24 Lemma ", $num, " as printed (docs/math.md §6.2, rebuilt from v2's inline text): ",
            $printed_doc, " (`tau` inserted where the corrected form has it).")]
        pub fn $printed(layer: &Layer, i0: usize, j0: usize, prec: u32) -> Res<Mat<Interval>> {
            let e = eval_exp(layer, &Mat::zeros(layer.n(), layer.d_v()), prec)?;
            Ok(b_terms(&e, i0, j0, Form::Printed)?.$field)
        }
    };
}

b_lemma!(
    lemma_d3_b6,
    lemma_d3_b6_printed,
    b6,
    "D.3",
    "`B6 = -tau s_{i0 j0} f_{i0,*}^T (X_{i0,*} W)` (`n x d`, key side, normaliser part)",
    "`B6 = -s_{i0 j0} f_{*,i0} (W X_{i0,*}^T)^T` (a column of `f` and `W^T`)"
);
b_lemma!(
    lemma_d4_b7,
    lemma_d4_b7_printed,
    b7,
    "D.4",
    "`B7 = tau (f_{i0,*}^T o h_{*,j0}) (X_{i0,*} W)` (`n x d`, key side, numerator part)",
    "`B7 = (f_{*,i0} o h_{*,j0}) (W X_{i0,*}^T)^T`"
);
b_lemma!(
    lemma_d5_b8,
    lemma_d5_b8_printed,
    b8,
    "D.5",
    "`B8 = f_{i0,*}^T (W_V)_{*,j0}^T` (`n x d`, value side)",
    "`B8 = f_{*,i0} (W_V)_{*,j0}^T`"
);
b_lemma!(
    lemma_d6_b2,
    lemma_d6_b2_printed,
    b2,
    "D.6",
    "`B2 = -tau s_{i0 j0} W X^T f_{i0,*}^T` (`d x 1`, query side, normaliser part)",
    "`B2 = -s_{i0 j0} W^T X^T f_{i0,*}` (right when `W` is symmetric)"
);
b_lemma!(
    lemma_d7_b4,
    lemma_d7_b4_printed,
    b4,
    "D.7",
    "`B4 = tau W X^T (f_{i0,*}^T o h_{*,j0})` (`d x 1`, query side, numerator part)",
    "`B4 = W^T X^T (f_{i0,*} o h_{*,j0})` (right when `W` is symmetric)"
);

/// ML24 Lemma D.8, corrected: the whole `ds_{i0 j0}/dX = B6 + B7 + B8 +
/// e_{i0} (B2 + B4)^T` (`n x d`) assembled from Lemmas D.3..D.7. (This is the
/// assembly that the chain of D.3..D.7 and D.9 implies; docs/math.md §6.2.)
pub fn lemma_d8_ds_dx(layer: &Layer, i0: usize, j0: usize, prec: u32) -> Res<Mat<Interval>> {
    let e = eval_exp(layer, &Mat::zeros(layer.n(), layer.d_v()), prec)?;
    assemble(&b_terms(&e, i0, j0, Form::Correct)?, i0)
}

/// ML24 Lemma D.8 assembled from the printed B-terms (see
/// [`lemma_d3_b6_printed`] etc.).
pub fn lemma_d8_ds_dx_printed(
    layer: &Layer,
    i0: usize,
    j0: usize,
    prec: u32,
) -> Res<Mat<Interval>> {
    let e = eval_exp(layer, &Mat::zeros(layer.n(), layer.d_v()), prec)?;
    assemble(&b_terms(&e, i0, j0, Form::Printed)?, i0)
}

fn d9(layer: &Layer, g: &Mat<f64>, form: Form, prec: u32) -> Res<Mat<Interval>> {
    let e = eval_exp(layer, g, prec)?;
    let mut acc = Mat::from_element(layer.n(), layer.d(), Interval::zero(prec));
    for i0 in 0..layer.n() {
        for j0 in 0..layer.d_v() {
            let m = assemble(&b_terms(&e, i0, j0, form)?, i0)?;
            acc = add(&acc, &scale(&e.g[(i0, j0)], &m))?;
        }
    }
    Ok(acc)
}

/// ML24 Lemma D.9, corrected: `dL/dX = sum_{i0, j0} G_{i0 j0} (B6 + B7 + B8 +
/// e_{i0} (B2 + B4)^T)` with the corrected B-terms (`n x d`).
pub fn lemma_d9_grad_x(layer: &Layer, g: &Mat<f64>, prec: u32) -> Res<Mat<Interval>> {
    d9(layer, g, Form::Correct, prec)
}

/// ML24 Lemma D.9 with the printed B-terms (docs/math.md §6.2).
pub fn lemma_d9_grad_x_printed(layer: &Layer, g: &Mat<f64>, prec: u32) -> Res<Mat<Interval>> {
    d9(layer, g, Form::Printed, prec)
}

/// The five `G`-contracted terms of Lemmas D.10..D.14 in the chosen form.
pub(crate) struct DTerms<T> {
    pub d6: Mat<T>,
    pub d7: Mat<T>,
    pub d8: Mat<T>,
    pub d2: Mat<T>,
    pub d4: Mat<T>,
}

impl<T: LemmaScalar> DTerms<T> {
    /// `D2 + D4 + D6 + D7 + D8` (Lemma D.17).
    pub fn total(&self) -> Res<Mat<T>> {
        add(
            &add(&add(&add(&self.d2, &self.d4)?, &self.d6)?, &self.d7)?,
            &self.d8,
        )
    }
}

/// Builds D2..D8 (module docs; docs/math.md §6.2 for the printed forms).
pub(crate) fn d_terms<T: LemmaScalar>(e: &Eval<T>, form: Form) -> Res<DTerms<T>> {
    let prec = e.prec();
    let (x, w, wv, tau) = (&e.l.x, &e.l.w, &e.l.wv, &e.l.tau);
    let (f, ft, g) = (&e.fw.f, &e.fw.f.transpose(), &e.g);
    let (wt, wvt) = (w.transpose(), wv.transpose());
    let dk_f = diag_left(&e.k, f)?;
    Ok(match form {
        Form::Correct => DTerms {
            // D6 = -tau f^T diag(K) X W
            d6: neg(&scale(tau, &chain(&[&dk_f.transpose(), x, w], prec)?)),
            // D7 = tau (f o q)^T X W
            d7: scale(tau, &chain(&[&e.p1.transpose(), x, w], prec)?),
            // D8 = f^T G W_V^T
            d8: chain(&[ft, g, &wvt], prec)?,
            // D2 = -tau diag(K) f X W^T
            d2: neg(&scale(tau, &chain(&[&dk_f, x, &wt], prec)?)),
            // D4 = tau (f o q) X W^T
            d4: scale(tau, &chain(&[&e.p1, x, &wt], prec)?),
        },
        Form::Printed => {
            let f_diag_k = crate::linalg::diag_right(f, &e.k)?;
            let f_o_qt = crate::linalg::hadamard(f, &e.q.transpose())?;
            DTerms {
                // D6 = -f diag(K) X W^T
                d6: neg(&scale(tau, &chain(&[&f_diag_k, x, &wt], prec)?)),
                // D7 = (f o (h G^T)) X W^T
                d7: scale(tau, &chain(&[&f_o_qt, x, &wt], prec)?),
                // D8 = f G W_V^T
                d8: chain(&[f, g, &wvt], prec)?,
                // D2 = -diag(K) f X W
                d2: neg(&scale(tau, &chain(&[&dk_f, x, w], prec)?)),
                // D4 = (f o (G h^T)) X W
                d4: scale(tau, &chain(&[&e.p1, x, w], prec)?),
            }
        }
    })
}

macro_rules! d_lemma {
    ($name:ident, $printed:ident, $field:ident, $num:literal, $correct_doc:literal, $printed_doc:literal) => {
        #[doc = concat!("ML24 Lemma ", $num, ", corrected (docs/math.md §6.2): ", $correct_doc, " (`n x d`).")]
        pub fn $name(layer: &Layer, g: &Mat<f64>, prec: u32) -> Res<Mat<Interval>> {
            Ok(d_terms(&eval_exp(layer, g, prec)?, Form::Correct)?.$field)
        }
        #[doc = concat!("ML24 Lemma ", $num, " as printed (docs/math.md §6.2, as far as v2's text could be read): ",
            $printed_doc, " (`tau` inserted where the corrected form has it).")]
        pub fn $printed(layer: &Layer, g: &Mat<f64>, prec: u32) -> Res<Mat<Interval>> {
            Ok(d_terms(&eval_exp(layer, g, prec)?, Form::Printed)?.$field)
        }
    };
}

d_lemma!(
    lemma_d10_d6,
    lemma_d10_d6_printed,
    d6,
    "D.10",
    "`D6 = -tau f^T diag(K) X W`",
    "`D6 = -f diag(K) X W^T`"
);
d_lemma!(
    lemma_d11_d7,
    lemma_d11_d7_printed,
    d7,
    "D.11",
    "`D7 = tau (f o q)^T X W`",
    "`D7 = (f o (h G^T)) X W^T`"
);
d_lemma!(
    lemma_d12_d8,
    lemma_d12_d8_printed,
    d8,
    "D.12",
    "`D8 = f^T G W_V^T`",
    "`D8 = f G W_V^T`"
);
d_lemma!(
    lemma_d13_d2,
    lemma_d13_d2_printed,
    d2,
    "D.13",
    "`D2 = -tau diag(K) f X W^T`",
    "`D2 = -diag(K) f X W` (right when `W` is symmetric)"
);
d_lemma!(
    lemma_d14_d4,
    lemma_d14_d4_printed,
    d4,
    "D.14",
    "`D4 = tau (f o q) X W^T`",
    "`D4 = (f o (G h^T)) X W` (right when `W` is symmetric)"
);

/// ML24 Lemma D.17, corrected (docs/math.md §1.3): `dL/dX = tau (p X W^T + p^T X W)
/// + f^T G W_V^T`, the sum of the corrected D2, D4, D6, D7, D8.
pub fn lemma_d17_grad_x(layer: &Layer, g: &Mat<f64>, prec: u32) -> Res<Mat<Interval>> {
    d_terms(&eval_exp(layer, g, prec)?, Form::Correct)?.total()
}

/// ML24 Lemma D.17 as printed: the sum of the printed D2, D4, D6, D7, D8
/// (docs/math.md §6.2; misses `dL/dX` by O(1) for non-symmetric `W`).
pub fn lemma_d17_grad_x_printed(layer: &Layer, g: &Mat<f64>, prec: u32) -> Res<Mat<Interval>> {
    d_terms(&eval_exp(layer, g, prec)?, Form::Printed)?.total()
}
