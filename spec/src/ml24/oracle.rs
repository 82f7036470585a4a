//! The independent derivative oracle for the ML24 lemmas (docs/math.md §6.1):
//! forward-mode [`Dual`] numbers over intervals, run through the *forward*
//! pass only. No closed-form gradient is used anywhere in this module.
//!
//! Besides whole derivatives, the oracle can split a derivative the way the
//! lemmas split it, still without any closed form:
//! * by **occurrence** of `X`: the layer uses `X` three times,
//!   `s = softmax(tau X_q W X_k^T) X_v W_V`; seeding only `X_q` (the query
//!   copy), `X_k` (keys) or `X_v` (values) gives the three parts whose sum is
//!   the derivative with respect to `X`;
//! * by **part** of the quotient `s = N / D` with `N = exp(S) h`,
//!   `D = exp(S) 1`: `ds = dN / D - s dD / D`; the first term is the
//!   *numerator* part, the second the *normaliser* part. Both are read off the
//!   dual parts of `N` and `D` directly.
//!
//! ML24's terms are exactly these pieces: D4/B4 are (query, numerator),
//! D2/B2 (query, normaliser), D7/B7 (key, numerator), D6/B6 (key,
//! normaliser), D8/B8 (value).

use crate::dual::Dual;
use crate::interval::Interval;
use crate::linalg::{apply, exp_kernel, expect_shape, lift, matmul, row_sums, scale, Mat, Res};
use crate::ml24::{check_index, Layer};

/// Which parameter an oracle derivative is taken with respect to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Param {
    /// The input `X`, at the given occurrence(s).
    X(Occurrence),
    /// `W = W_Q W_K^T`.
    W,
    /// `W_V`.
    Wv,
}

/// Which copy of `X` is seeded (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Occurrence {
    /// Every occurrence: the true derivative with respect to `X`.
    All,
    /// Only the queries `X_q` in `tau X_q W X_k^T`.
    Query,
    /// Only the keys `X_k`.
    Key,
    /// Only the values `X_v` in `h = X_v W_V`.
    Value,
}

/// Which part of the quotient `s = N / D` is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The whole derivative.
    Total,
    /// `dN / D`.
    Numerator,
    /// `-s dD / D`.
    Normaliser,
}

/// `N = exp(S) (X_v W_V)` and `D = exp(S) 1` in dual numbers, with the entry
/// `rc` of `param` seeded.
fn seeded(
    layer: &Layer,
    param: Param,
    rc: (usize, usize),
    prec: u32,
) -> Res<(Mat<Dual>, Vec<Dual>)> {
    let base = layer.lift::<Dual>(prec)?;
    let (mut xq, mut xk, mut xv) = (base.x.clone(), base.x.clone(), base.x.clone());
    let (mut w, mut wv) = (base.w.clone(), base.wv.clone());
    let seed = |m: &mut Mat<Dual>| -> Res<()> {
        check_index("row", rc.0, m.nrows())?;
        check_index("column", rc.1, m.ncols())?;
        m[rc] = Dual::variable(m[rc].val.clone());
        Ok(())
    };
    match param {
        Param::X(occ) => {
            if matches!(occ, Occurrence::All | Occurrence::Query) {
                seed(&mut xq)?;
            }
            if matches!(occ, Occurrence::All | Occurrence::Key) {
                seed(&mut xk)?;
            }
            if matches!(occ, Occurrence::All | Occurrence::Value) {
                seed(&mut xv)?;
            }
        }
        Param::W => seed(&mut w)?,
        Param::Wv => seed(&mut wv)?,
    }
    let s = scale(
        &base.tau,
        &matmul(&matmul(&xq, &w, prec)?, &xk.transpose(), prec)?,
    );
    let a = apply(&exp_kernel, &s)?;
    let h = matmul(&xv, &wv, prec)?;
    Ok((matmul(&a, &h, prec)?, row_sums(&a, prec)))
}

/// The selected part of `ds/dtheta` from the duals of `N` and `D`.
fn part_of(n: &Mat<Dual>, d: &[Dual], part: Part) -> Mat<Interval> {
    Mat::from_fn(n.nrows(), n.ncols(), |i, j| {
        let num = &n[(i, j)].der / &d[i].val;
        let s = &n[(i, j)].val / &d[i].val;
        let den = -(&s * &d[i].der / &d[i].val);
        match part {
            Part::Total => &num + &den,
            Part::Numerator => num,
            Part::Normaliser => den,
        }
    })
}

/// `ds / dtheta` (`n x d_v`) for the single entry `theta = param[rc]`, by one
/// forward pass in dual numbers.
pub fn ds_by_dual(
    layer: &Layer,
    param: Param,
    rc: (usize, usize),
    part: Part,
    prec: u32,
) -> Res<Mat<Interval>> {
    let (n, d) = seeded(layer, param, rc, prec)?;
    Ok(part_of(&n, &d, part))
}

/// The shape of a parameter.
fn param_shape(layer: &Layer, param: Param) -> (usize, usize) {
    match param {
        Param::X(_) => layer.x.shape(),
        Param::W => layer.w.shape(),
        Param::Wv => layer.w_v.shape(),
    }
}

/// `dL/dtheta` for `L = <G, s>` (so `dL/ds = G`), every entry of `param` by
/// its own dual-number forward pass. `g` must be `n x d_v`.
pub fn grad_by_dual(
    layer: &Layer,
    g: &Mat<f64>,
    param: Param,
    part: Part,
    prec: u32,
) -> Res<Mat<Interval>> {
    expect_shape("G", g, Some(layer.n()), Some(layer.d_v()))?;
    let gi = lift::<Interval>("G", g, prec)?;
    let (r, c) = param_shape(layer, param);
    let mut out = Vec::with_capacity(r * c);
    for j in 0..c {
        for i in 0..r {
            let ds = ds_by_dual(layer, param, (i, j), part, prec)?;
            out.push(
                ds.iter()
                    .zip(gi.iter())
                    .fold(Interval::zero(prec), |acc, (x, y)| acc + x * y),
            );
        }
    }
    Ok(Mat::from_vec(r, c, out))
}

/// `f` (`n x n`) as enclosures, from the oracle's own forward code.
pub fn attention_matrix(layer: &Layer, prec: u32) -> Res<Mat<Interval>> {
    let l = layer.lift::<Interval>(prec)?;
    Ok(l.forward(&exp_kernel)?.f)
}

/// `s` (`n x d_v`) as enclosures, from the oracle's own forward code.
pub fn output(layer: &Layer, prec: u32) -> Res<Mat<Interval>> {
    let l = layer.lift::<Interval>(prec)?;
    Ok(l.forward(&exp_kernel)?.s)
}

/// The gradient of a scalar function of one matrix argument by dual numbers:
/// for each entry of `point` (enclosures of the argument), one evaluation of `f` with that entry seeded
/// (the generic form of the oracle, used for the blocks of Lemmas H.1, H.2,
/// J.3, K.2 and for AS24).
pub fn grad_scalar(
    point: &Mat<Interval>,
    f: &dyn Fn(&Mat<Dual>) -> Res<Dual>,
) -> Res<Mat<Interval>> {
    let base = point.map(Dual::constant);
    let mut out = Vec::with_capacity(point.len());
    for j in 0..point.ncols() {
        for i in 0..point.nrows() {
            let mut m = base.clone();
            m[(i, j)] = Dual::variable(m[(i, j)].val.clone());
            out.push(f(&m)?.der);
        }
    }
    Ok(Mat::from_vec(point.nrows(), point.ncols(), out))
}

/// `<a, b>` summed over all entries (the pairing `L = <G, s>`).
pub fn pairing<T: crate::linalg::LemmaScalar>(a: &Mat<T>, b: &Mat<T>, prec: u32) -> Res<T> {
    if a.shape() != b.shape() {
        return Err(crate::linalg::shape_err(format!(
            "pairing of {:?} and {:?}",
            a.shape(),
            b.shape()
        )));
    }
    Ok(a.iter()
        .zip(b.iter())
        .fold(T::zero(prec), |acc, (x, y)| acc.plus(&x.times(y))))
}
