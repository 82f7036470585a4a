//! ML24 Appendix C.5, Lemmas C.17-C.19: the entry bounds on `f`, `h = X W_V`
//! and `s = f h`, the place where the papers' hypothesis "every entry of `X`,
//! `W`, `W_V` has `O(log n)` bits" acts. Read as a bound on magnitudes, that
//! hypothesis says `||X||_inf, ||W_V||_inf <= poly(n)`, and these lemmas carry
//! it to `||h||_inf, ||s||_inf <= poly(n)`, which later absorbs the `n`, `d`
//! factors of the error analysis (Appendices E, H).
//!
//! Each function returns the measured `||.||_inf` (entrywise maximum) of the
//! exact (`exp`) quantity on a layer, as an enclosure, beside the explicit
//! bound that the lemma's proof chain gives (the `poly(n)` left unexpanded in
//! the statement) and the sharper bound that holds in general:
//!
//! * C.17: `||f||_inf <= 1` (rows of `f` are probability vectors).
//! * C.18: printed chain `||X W_V||_inf <= n ||X||_inf ||W_V||_inf`; the sum
//!   in `(X W_V)_ij` runs over the `d` columns of `X`, so the bound that holds
//!   for every shape is `d ||X||_inf ||W_V||_inf` (the printed one follows
//!   from it only when `d <= n`).
//! * C.19: printed chain `||f h||_inf <= n ||f||_inf ||h||_inf`; since the
//!   rows of `f` are convex weights, `||f h||_inf <= ||h||_inf` already.

use crate::bounds::max_abs;
use crate::interval::Interval;
use crate::linalg::{lift, matmul, Mat, Res};
use crate::ml24::oracle::attention_matrix;
use crate::ml24::Layer;

/// A measured entry bound: the quantity's `||.||_inf` and two bounds.
#[derive(Clone, Debug, PartialEq)]
pub struct EntryBound {
    /// Enclosure of the measured `||.||_inf`.
    pub measured: Interval,
    /// The bound as the lemma's proof chain states it.
    pub printed: Interval,
    /// The bound that holds for every shape (equal to `printed` for C.17).
    pub general: Interval,
}

fn count(k: usize, prec: u32) -> Interval {
    Interval::from_f64(k as f64, prec)
}

/// ML24 Lemma C.17: `||f||_inf <= 1`.
pub fn lemma_c17_f_bound(layer: &Layer, prec: u32) -> Res<EntryBound> {
    let f = attention_matrix(layer, prec)?;
    Ok(EntryBound {
        measured: max_abs(&f, prec),
        printed: Interval::one(prec),
        general: Interval::one(prec),
    })
}

/// ML24 Lemma C.18: `||h||_inf` against `n ||X|| ||W_V||` (printed) and
/// `d ||X|| ||W_V||` (general).
pub fn lemma_c18_h_bound(layer: &Layer, prec: u32) -> Res<EntryBound> {
    layer.validate()?;
    let x = lift::<Interval>("X", &layer.x, prec)?;
    let wv = lift::<Interval>("W_V", &layer.w_v, prec)?;
    let h = matmul(&x, &wv, prec)?;
    let norms = max_abs(&x, prec).mul(&max_abs(&wv, prec));
    Ok(EntryBound {
        measured: max_abs(&h, prec),
        printed: count(layer.n(), prec).mul(&norms),
        general: count(layer.d(), prec).mul(&norms),
    })
}

/// ML24 Lemma C.19: `||s||_inf` against `n ||f|| ||h||` (printed) and
/// `||h||` (general).
pub fn lemma_c19_s_bound(layer: &Layer, prec: u32) -> Res<EntryBound> {
    let f = attention_matrix(layer, prec)?;
    let x = lift::<Interval>("X", &layer.x, prec)?;
    let wv = lift::<Interval>("W_V", &layer.w_v, prec)?;
    let h: Mat<Interval> = matmul(&x, &wv, prec)?;
    let s = matmul(&f, &h, prec)?;
    let hn = max_abs(&h, prec);
    Ok(EntryBound {
        measured: max_abs(&s, prec),
        printed: count(layer.n(), prec).mul(&max_abs(&f, prec)).mul(&hn),
        general: hn,
    })
}
