//! The lemmas of ML24 (Liang, Sha, Shi, Song, Zhou, *Multi-Layer Transformers
//! Gradient Can be Approximated in Almost Linear Time*, arXiv 2408.13233 v2;
//! lemma numbers are v2's) as executable reference math.
//!
//! Notation of docs/math.md §1.3 (the paper's): one layer takes `X` (`n x d`),
//! `W = W_Q W_K^T` (`d x d`, not symmetric in general) and `W_V` (`d x d_v`):
//!
//! ```text
//! f = D^-1 exp(tau X W X^T)   h = X W_V   s = f h
//! G = dL/ds (n x d_v)   q = G h^T   K = (G o s) 1   p = f o q - diag(K) f
//! ```
//!
//! The paper's gradient lemmas drop the score scale `tau` (its Definitions
//! 1.2/C.3 use `1/d`); every function here takes `tau` and puts it where the
//! chain rule puts it. The `_printed` functions put it in the same place as
//! the corrected form, so that with `tau = 1` they are the paper's text and
//! for any `tau` they differ from the corrected form only by the misprint.
//!
//! A loss `L` enters only through `G`: every gradient is that of
//! `L = <G, s>`, which has `dL/ds = G` for any differentiable loss at the
//! point where `G` is evaluated (ML24 Lemma 3.4/C.4).
//!
//! Submodules: [`terms`] (Lemmas D.1, D.3..D.14, D.17), [`weights`] (Lemmas
//! 3.4/C.4, F.3, F.4, G.1..G.3), [`low_rank`] (Fact C.2, Lemmas C.13, E.2..E.10,
//! F.5, I.3, I.6, the suffix-sum product, Algorithm 1 lines 19 and 22,
//! Algorithm 2), [`blocks`] (Lemmas H.1, H.2, J.3, K.2), [`causal`] (Lemmas I.7,
//! I.8), [`degree`] (Lemma
//! I.1's rank side), [`entry_bounds`]
//! (Lemmas C.17-C.19) and [`oracle`] (the
//! independent derivative oracle for all of them).

pub mod blocks;
pub mod causal;
pub mod degree;
pub mod entry_bounds;
pub mod low_rank;
pub mod oracle;
pub mod terms;
pub mod weights;

use crate::linalg::{
    apply, diag_left, expect_shape, hadamard, lift, lift_scalar, matmul, normalise_rows, row_sums,
    scale, sub, Kernel, LemmaScalar, Mat, Res,
};

/// One attention layer in paper notation (docs/math.md §1.3). Every entry is an
/// exact `f64` (a dyadic rational).
#[derive(Clone, Debug, PartialEq)]
pub struct Layer {
    /// `X`, `n x d`.
    pub x: Mat<f64>,
    /// `W = W_Q W_K^T`, `d x d`.
    pub w: Mat<f64>,
    /// `W_V`, `d x d_v`.
    pub w_v: Mat<f64>,
    /// The score scale `tau`.
    pub tau: f64,
}

impl Layer {
    /// Number of tokens `n`.
    pub fn n(&self) -> usize {
        self.x.nrows()
    }
    /// Model width `d`.
    pub fn d(&self) -> usize {
        self.x.ncols()
    }
    /// Value width `d_v`.
    pub fn d_v(&self) -> usize {
        self.w_v.ncols()
    }

    /// Checks the shapes (`W` is `d x d`, `W_V` has `d` rows). Finiteness is
    /// checked when the entries are converted.
    pub fn validate(&self) -> Res<()> {
        expect_shape("W", &self.w, Some(self.d()), Some(self.d()))?;
        expect_shape("W_V", &self.w_v, Some(self.d()), None)
    }

    /// The layer's entries in `T`.
    pub(crate) fn lift<T: LemmaScalar>(&self, prec: u32) -> Res<LayerT<T>> {
        crate::linalg::check_prec(prec)?;
        self.validate()?;
        Ok(LayerT {
            x: lift("X", &self.x, prec)?,
            w: lift("W", &self.w, prec)?,
            wv: lift("W_V", &self.w_v, prec)?,
            tau: lift_scalar("tau", self.tau, prec)?,
            prec,
        })
    }
}

/// A [`Layer`] converted to the arithmetic `T`.
#[derive(Clone, Debug)]
pub(crate) struct LayerT<T> {
    pub x: Mat<T>,
    pub w: Mat<T>,
    pub wv: Mat<T>,
    pub tau: T,
    pub prec: u32,
}

impl<T: LemmaScalar> LayerT<T> {
    /// `X W`, the query rows of the scores (`S_ij = tau (X W)_i . X_j`).
    pub fn xw(&self) -> Res<Mat<T>> {
        matmul(&self.x, &self.w, self.prec)
    }
    /// `X W^T`.
    pub fn xwt(&self) -> Res<Mat<T>> {
        matmul(&self.x, &self.w.transpose(), self.prec)
    }
    /// `S = tau X W X^T`.
    pub fn scores(&self) -> Res<Mat<T>> {
        Ok(scale(
            &self.tau,
            &matmul(&self.xw()?, &self.x.transpose(), self.prec)?,
        ))
    }
    /// `f`, `h`, `s` with the given kernel in place of `exp`.
    pub fn forward(&self, kernel: Kernel<'_, T>) -> Res<Fwd<T>> {
        let f = normalise_rows(&apply(kernel, &self.scores()?)?, self.prec)?;
        let h = matmul(&self.x, &self.wv, self.prec)?;
        let s = matmul(&f, &h, self.prec)?;
        Ok(Fwd { f, h, s })
    }
}

/// The forward quantities of docs/math.md §1.3.
#[derive(Clone, Debug)]
pub(crate) struct Fwd<T> {
    pub f: Mat<T>,
    pub h: Mat<T>,
    pub s: Mat<T>,
}

/// Everything a lemma needs: the layer, its forward, `G`, and the backward
/// quantities `q = G h^T`, `K = (G o s) 1`, `p = f o q - diag(K) f`.
#[derive(Clone, Debug)]
pub(crate) struct Eval<T> {
    pub l: LayerT<T>,
    pub fw: Fwd<T>,
    pub g: Mat<T>,
    pub q: Mat<T>,
    pub k: Vec<T>,
    /// `f o q`, the part of `p` through the numerator of `f` (called `p1`).
    pub p1: Mat<T>,
    pub p: Mat<T>,
}

impl<T: LemmaScalar> Eval<T> {
    /// Converts the inputs, runs the forward with `kernel` and forms the
    /// backward quantities. `g` must be `n x d_v`.
    pub fn new(layer: &Layer, g: &Mat<f64>, kernel: Kernel<'_, T>, prec: u32) -> Res<Eval<T>> {
        let l = layer.lift::<T>(prec)?;
        expect_shape("G", g, Some(layer.n()), Some(layer.d_v()))?;
        let g = lift("G", g, prec)?;
        let fw = l.forward(kernel)?;
        Self::from_parts(l, fw, g)
    }

    /// The backward quantities for a given forward.
    pub fn from_parts(l: LayerT<T>, fw: Fwd<T>, g: Mat<T>) -> Res<Eval<T>> {
        let prec = l.prec;
        let q = matmul(&g, &fw.h.transpose(), prec)?;
        let k = row_sums(&hadamard(&g, &fw.s)?, prec);
        let p1 = hadamard(&fw.f, &q)?;
        let p2 = diag_left(&k, &fw.f)?;
        let p = sub(&p1, &p2)?;
        Ok(Eval {
            l,
            fw,
            g,
            q,
            k,
            p1,
            p,
        })
    }

    pub fn prec(&self) -> u32 {
        self.l.prec
    }
}

/// The exact-`exp` evaluation in intervals (the usual entry point of a lemma).
pub(crate) fn eval_exp(
    layer: &Layer,
    g: &Mat<f64>,
    prec: u32,
) -> Res<Eval<crate::interval::Interval>> {
    Eval::new(layer, g, &crate::linalg::exp_kernel, prec)
}

/// Checks `0 <= i < n` for a named index.
pub(crate) fn check_index(name: &str, i: usize, n: usize) -> Res<()> {
    if i < n {
        Ok(())
    } else {
        Err(crate::linalg::shape_err(format!(
            "index {name} = {i} is out of range 0..{n}"
        )))
    }
}
