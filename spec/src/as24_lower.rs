//! AS24 Appendix E, the lower-bound side, run on small instances: the hard
//! instances of Lemma E.2's shape, the function `f(lambda)` of Lemma E.3 with
//! its derivative bounds, the Riemann sum of Lemma E.4, and the reduction of
//! Theorem 1.5 / E.5, which recovers the forward quantity `f(1)` from
//! gradient calls.
//!
//! Lemma E.3: for an `n x n` matrix `A` with entries in `[0, B]`, at least
//! half of each row equal to `B`, and `V` in `{0, 1}^{n x d}`,
//! `f(lambda) = ||diag(M 1)^-1 M V||_F^2` with `M = exp(lambda A)`. The paper
//! states `|f'| <= O(B n)` and proves `|f'| <= 8 B n` through
//! `a(lambda, i) <= n^2 e^{2 B lambda}` (its Eq. (9)); but `a` sums over the
//! `d` columns of `V`, so Eq. (9) needs a factor `d`, and so do both
//! derivative bounds. Written with `f_i = sum_l w_l^2`, `w_l` the softmax
//! mass row `i` puts on the ones of column `l`:
//!
//! * `f_i' = f_i u` with `u` a difference of two weighted means of values in
//!   `[0, 2B]`, so `|f'| <= 2 B sum_i f_i <= 2 B d n`;
//! * `f_i'' = f_i (u^2 + u')` with `u'` a difference of two variances of
//!   values in `[0, 2B]` (each in `[0, B^2]`), so `|f''| <= 5 B^2 d n`.
//!
//! The printed `8 B n` is therefore right only for small `d`: on the aligned
//! instance ([`HardInstance::aligned`], every row's `B` entries on the same
//! keys, every column of `V` their indicator) `f'` reaches `(8/27) B d n`,
//! above `8 B n` once `d > 27`.
//!
//! Lemma E.4: `t_m = sum_{i < m} f'(i/m) / m` is within `b/m` of
//! `f(1) - f(0)` when `|f''| <= b` on `[0, 1]`.
//!
//! Theorem E.5: with `A1 = Q`, `A2 = K`, `A3 = V`, `Y = I`, `E = 0` and
//! `X = lambda I`, AS24's loss is `L = f(lambda) / 2`, so
//! `f'(lambda) = 2 tr(dL/dX)`; `f(0) = sum_l |S_l|^2 / n` needs no
//! exponentials (`M` is all ones), and `f(1) ~ f(0) + t_m` from `m` gradient
//! calls. This module runs that reduction with AS24's closed-form gradient
//! (Lemma C.7) as the "algorithm" and reports how far the estimate lies from
//! `f(1)`.

use rug::Rational;

use crate::as24;
use crate::bounds::abs;
use crate::dual::Dual;
use crate::interval::Interval;
use crate::linalg::{degenerate, lift, matmul, normalise_rows, shape_err, LemmaScalar, Mat, Res};
use crate::model::SplitMix64;

/// A hard instance of Lemma E.2's shape: `A = Q K^T` with entries in
/// `[0, B]` and at least half of each row equal to `B`, and `V` in
/// `{0, 1}^{n x d}`. `Q` and `K` are `n x 2`: key `j` has `K_j = e_{j mod 2}`,
/// so `A_ij = Q_{i, j mod 2}`.
#[derive(Clone, Debug, PartialEq)]
pub struct HardInstance {
    /// `Q`, `n x 2`.
    pub q: Mat<f64>,
    /// `K`, `n x 2`.
    pub k: Mat<f64>,
    /// `V`, `n x d`, entries `0` or `1`.
    pub v: Mat<f64>,
    /// The entry bound `B`.
    pub b: f64,
}

fn keys(n: usize) -> Mat<f64> {
    Mat::from_fn(n, 2, |j, c| if j % 2 == c { 1.0 } else { 0.0 })
}

fn check_size(n: usize, d: usize, b: f64) -> Res<()> {
    if n < 2 || !n.is_multiple_of(2) || d == 0 {
        return Err(shape_err(format!(
            "hard instance needs an even n >= 2 and d >= 1, got n = {n}, d = {d}"
        )));
    }
    if !(b.is_finite() && b > 0.0) {
        return Err(degenerate(format!("entry bound B = {b} is not positive")));
    }
    Ok(())
}

impl HardInstance {
    /// A seeded instance: row `i` puts `B` on the keys of one parity and
    /// `B k/4` (`k` in `0..4`) on the others; `V` has random bits except its
    /// first column, the indicator of the even keys. A column with as many
    /// even as odd ones receives softmax mass `1/2` for every `lambda`, so
    /// an all-random `V` can make `f` constant; the first column keeps `f`
    /// moving (every row's two score values differ). `n` even, `B` with a
    /// short binary expansion (so `B k/4` is exact).
    pub fn random(n: usize, d: usize, b: f64, seed: u64) -> Res<HardInstance> {
        check_size(n, d, b)?;
        let mut rng = SplitMix64::new(seed);
        let mut q = Mat::zeros(n, 2);
        for i in 0..n {
            let p = rng.below(2);
            q[(i, p)] = b;
            q[(i, 1 - p)] = b * rng.below(4) as f64 / 4.0;
        }
        let mut v = Mat::from_fn(n, d, |_, _| rng.below(2) as f64);
        for j in 0..n {
            v[(j, 0)] = if j % 2 == 0 { 1.0 } else { 0.0 };
        }
        Ok(HardInstance {
            q,
            k: keys(n),
            v,
            b,
        })
    }

    /// The instance where `|f'|` is largest: every row puts `B` on the even
    /// keys and `0` on the odd ones, every column of `V` is the indicator of
    /// the even keys.
    pub fn aligned(n: usize, d: usize, b: f64) -> Res<HardInstance> {
        check_size(n, d, b)?;
        Ok(HardInstance {
            q: Mat::from_fn(n, 2, |_, c| if c == 0 { b } else { 0.0 }),
            k: keys(n),
            v: Mat::from_fn(n, d, |j, _| if j % 2 == 0 { 1.0 } else { 0.0 }),
            b,
        })
    }

    /// `n`.
    pub fn n(&self) -> usize {
        self.v.nrows()
    }

    /// `d`, the columns of `V`.
    pub fn d(&self) -> usize {
        self.v.ncols()
    }

    /// `A = Q K^T` (exact: every product has one nonzero term).
    pub fn scores(&self) -> Mat<f64> {
        &self.q * self.k.transpose()
    }

    /// Whether the instance meets Lemma E.3's hypotheses: entries of `A` in
    /// `[0, B]`, at least half of each row equal to `B`, `V` in `{0, 1}`.
    pub fn meets_hypotheses(&self) -> bool {
        let a = self.scores();
        let rows_ok = a.row_iter().all(|r| {
            r.iter().all(|&x| (0.0..=self.b).contains(&x))
                && 2 * r.iter().filter(|&&x| x == self.b).count() >= r.len()
        });
        rows_ok && self.v.iter().all(|&x| x == 0.0 || x == 1.0)
    }

    /// AS24's problem at `X = lambda I` (Theorem E.5's reduction): `A1 = Q`,
    /// `A2 = K`, `A3 = V`, `Y = I`, `E = 0`.
    pub fn problem(&self, lambda: f64) -> as24::Problem {
        let (n, d) = (self.n(), self.d());
        as24::Problem {
            a1: self.q.clone(),
            a2: self.k.clone(),
            a3: self.v.clone(),
            x: Mat::identity(2, 2) * lambda,
            y: Mat::identity(d, d),
            e: Mat::zeros(n, d),
        }
    }
}

/// `f(lambda) = ||diag(M 1)^-1 M V||_F^2`, `M = exp(lambda A)`, in any
/// [`LemmaScalar`] (Lemma E.3's definition, written directly).
pub fn f_of<T: LemmaScalar>(a: &Mat<T>, v: &Mat<T>, lambda: &T, prec: u32) -> Res<T> {
    let mut m = Vec::with_capacity(a.len());
    for x in a.iter() {
        m.push(
            lambda
                .times(x)
                .exp()
                .ok_or_else(|| degenerate("exp unavailable"))?,
        );
    }
    let m = Mat::from_vec(a.nrows(), a.ncols(), m);
    let cv = matmul(&normalise_rows(&m, prec)?, v, prec)?;
    Ok(cv.iter().fold(T::zero(prec), |s, x| s.plus(&x.times(x))))
}

/// `lambda = num / den` as an enclosure.
pub fn lambda_at(num: u64, den: u64, prec: u32) -> Interval {
    Interval::from_rational(&Rational::from((num, den)), prec)
}

/// `f(lambda)` and `f'(lambda)` by forward-mode dual numbers.
pub fn f_and_slope(inst: &HardInstance, lambda: &Interval, prec: u32) -> Res<(Interval, Interval)> {
    let a = lift::<Dual>("A", &inst.scores(), prec)?;
    let v = lift::<Dual>("V", &inst.v, prec)?;
    let r = f_of(&a, &v, &Dual::variable(lambda.clone()), prec)?;
    Ok((r.val, r.der))
}

/// The derivative bounds of Lemma E.3.
#[derive(Clone, Debug, PartialEq)]
pub struct E3Bounds {
    /// The proof's `|f'| <= 8 B n` (as printed).
    pub slope_printed: Interval,
    /// `|f'| <= 2 B d n` (module docs).
    pub slope: Interval,
    /// `|f''| <= 5 B^2 d n` (module docs; the paper gives `O(B^2 n)`, no
    /// constant).
    pub curvature: Interval,
}

/// Lemma E.3's bounds for `inst`.
pub fn lemma_e3_bounds(inst: &HardInstance, prec: u32) -> E3Bounds {
    let c = |x: f64| Interval::from_f64(x, prec);
    let (b, n, d) = (c(inst.b), c(inst.n() as f64), c(inst.d() as f64));
    E3Bounds {
        slope_printed: c(8.0).mul(&b).mul(&n),
        slope: c(2.0).mul(&b).mul(&d).mul(&n),
        curvature: c(5.0).mul(&b).mul(&b).mul(&d).mul(&n),
    }
}

/// Lemma E.4's sum `t_m = sum_{i < m} f'(i/m) / m` from the slopes
/// `f'(0), f'(1/m), ..., f'((m-1)/m)`.
pub fn lemma_e4_riemann_sum(slopes: &[Interval], prec: u32) -> Res<Interval> {
    if slopes.is_empty() {
        return Err(degenerate("a Riemann sum of no points"));
    }
    let m = Interval::from_f64(slopes.len() as f64, prec);
    Ok(Interval::sum(slopes, prec).div(&m))
}

/// The slopes `f'(i/m)`, `i < m`, by dual numbers.
pub fn slopes_by_dual(inst: &HardInstance, m: u64, prec: u32) -> Res<Vec<Interval>> {
    (0..m)
        .map(|i| Ok(f_and_slope(inst, &lambda_at(i, m, prec), prec)?.1))
        .collect()
}

/// `f(0) = sum_l |S_l|^2 / n` without exponentials (`M` is all ones, so
/// every row of `diag(M 1)^-1 M V` is the column means of `V`).
pub fn f_at_zero(inst: &HardInstance, prec: u32) -> Interval {
    let n = inst.n() as u64;
    let mut s = Rational::new();
    for col in inst.v.column_iter() {
        let ones = col.iter().filter(|&&x| x == 1.0).count() as u64;
        s += Rational::from((ones * ones, n));
    }
    Interval::from_rational(&s, prec)
}

/// Theorem E.5's number of gradient calls for `n`: the least power of two
/// `m >= (log2 n)^4` (a power of two, so that every `lambda = i/m` is exact
/// in `f64` for the gradient algorithm's input `X = lambda I`).
pub fn theorem_e5_calls(n: usize) -> u64 {
    let l = (n.max(2) as f64).log2();
    (l.powi(4).ceil() as u64).next_power_of_two()
}

/// One run of Theorem E.5's reduction.
#[derive(Clone, Debug, PartialEq)]
pub struct Reduction {
    /// `f'(i/m) = 2 tr(dL/dX)` from AS24's gradient (Lemma C.7) at
    /// `X = (i/m) I`, `i < m`.
    pub slopes_by_gradient: Vec<Interval>,
    /// `f(0) + t_m`: the reduction's answer for `f(1)`.
    pub estimate: Interval,
    /// `f(1)` by the forward formula.
    pub exact: Interval,
    /// `|estimate - f(1)|`.
    pub error: Interval,
    /// Lemma E.4's bound `b / m` with `b = 5 B^2 d n` (Lemma E.3, corrected).
    pub bound: Interval,
}

/// Theorem 1.5 / E.5's reduction on `inst` with `m` gradient calls.
pub fn theorem_e5_reduction(inst: &HardInstance, m: u64, prec: u32) -> Res<Reduction> {
    if m == 0 {
        return Err(degenerate("the reduction needs at least one gradient call"));
    }
    let two = Interval::from_f64(2.0, prec);
    let mut slopes = Vec::with_capacity(m as usize);
    for i in 0..m {
        let g = as24::lemma_c7_grad_x(&inst.problem(i as f64 / m as f64), prec)?;
        slopes.push(two.mul(&Interval::sum(
            &[g[(0, 0)].clone(), g[(1, 1)].clone()],
            prec,
        )));
    }
    let estimate = f_at_zero(inst, prec).add(&lemma_e4_riemann_sum(&slopes, prec)?);
    let exact = f_and_slope(inst, &Interval::one(prec), prec)?.0;
    let error = abs(&estimate.sub(&exact));
    let bound = lemma_e3_bounds(inst, prec)
        .curvature
        .div(&Interval::from_f64(m as f64, prec));
    Ok(Reduction {
        slopes_by_gradient: slopes,
        estimate,
        exact,
        error,
        bound,
    })
}
