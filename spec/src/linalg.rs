//! Small generic matrix algebra shared by the lemma modules ([`crate::ml24`],
//! [`crate::as24`]).
//!
//! Every lemma is written once over the [`LemmaScalar`] trait, which is implemented
//! by three number types:
//! * [`Interval`]: certified enclosures of real numbers (the `exp` world);
//! * [`Dual`]: enclosures with a derivative (the oracle's arithmetic);
//! * [`rug::Rational`]: exact rationals (the polynomial world of docs/math.md
//!   §5.1, question 1: a factored form must equal the direct form *exactly*).
//!
//! The helpers here are the matrix product, Hadamard product, row-wise
//! Kronecker product (ML24 Fact C.2), diagonal scalings, row sums, the
//! attention kernel (`exp` or a polynomial `P` with rational coefficients,
//! docs/math.md §3.2), the low-rank factors of docs/math.md §3.3, and the comparison of
//! two enclosure matrices ([`agreement`]) used by every test and by the register.
//!
//! All matrix helpers check shapes and answer [`SpecError::ShapeMismatch`]
//! instead of panicking.

use std::fmt;

use nalgebra::DMatrix;
use rug::float::Round;
use rug::{Complete, Float, Integer, Rational};

use crate::attention::SpecError;
use crate::ball::Ball;
use crate::dual::Dual;
use crate::interval::Interval;

/// Result type of the lemma modules.
pub type Res<T> = Result<T, SpecError>;

/// The precision argument passed where the arithmetic is exact rationals (it
/// is ignored by [`Rational`], but must be a valid MPFR precision because the
/// shared entry points check it).
pub const EXACT: u32 = 64;

/// A dynamic matrix of some [`LemmaScalar`].
pub type Mat<T> = DMatrix<T>;

/// The arithmetic a lemma needs: a field with a precision-carrying zero, an
/// exact embedding of `f64` and of rationals, and (where the type has one) the
/// exponential.
pub trait LemmaScalar: Clone + PartialEq + fmt::Debug + 'static {
    /// The exact value of a finite `f64` (`None` for NaN or infinities). For
    /// [`Interval`] and [`Dual`] the conversion is exact when `prec >= 53`.
    fn from_f64(x: f64, prec: u32) -> Option<Self>;
    /// The rational `q`: exactly for [`Rational`], as the tightest outward
    /// enclosure at `prec` bits for [`Interval`] and [`Dual`] (a constant).
    fn from_rational(q: &Rational, prec: u32) -> Self;
    /// Sum.
    fn plus(&self, other: &Self) -> Self;
    /// Difference.
    fn minus(&self, other: &Self) -> Self;
    /// Product.
    fn times(&self, other: &Self) -> Self;
    /// Negation.
    fn negate(&self) -> Self;
    /// Reciprocal; `None` when the value is (or, for an enclosure, may be) zero.
    fn recip(&self) -> Option<Self>;
    /// Exponential; `None` for a type that has none (exact rationals).
    fn exp(&self) -> Option<Self>;
    /// Zero at `prec` bits.
    fn zero(prec: u32) -> Self {
        Self::from_rational(&Rational::new(), prec)
    }
    /// One at `prec` bits.
    fn one(prec: u32) -> Self {
        Self::from_rational(&Rational::from(1), prec)
    }
}

impl Interval {
    /// The tightest `prec`-bit interval containing the rational `q` (a point
    /// when `q` is representable, e.g. a dyadic rational with a short numerator).
    ///
    /// # Panics
    /// If `prec` is outside `rug::float::prec_min()..=rug::float::prec_max()`.
    pub fn from_rational(q: &Rational, prec: u32) -> Interval {
        let lo = Float::with_val_round(prec, q, Round::Down).0;
        let hi = Float::with_val_round(prec, q, Round::Up).0;
        Interval::point(lo).hull(&Interval::point(hi))
    }
}

impl LemmaScalar for Interval {
    fn from_f64(x: f64, prec: u32) -> Option<Self> {
        x.is_finite().then(|| Interval::from_f64(x, prec))
    }
    fn from_rational(q: &Rational, prec: u32) -> Self {
        Interval::from_rational(q, prec)
    }
    fn plus(&self, other: &Self) -> Self {
        self + other
    }
    fn minus(&self, other: &Self) -> Self {
        self - other
    }
    fn times(&self, other: &Self) -> Self {
        self * other
    }
    fn negate(&self) -> Self {
        -self
    }
    fn recip(&self) -> Option<Self> {
        (!self.contains_zero()).then(|| Interval::recip(self))
    }
    fn exp(&self) -> Option<Self> {
        Some(Interval::exp(self))
    }
}

impl LemmaScalar for Dual {
    fn from_f64(x: f64, prec: u32) -> Option<Self> {
        <Interval as LemmaScalar>::from_f64(x, prec).map(Dual::constant)
    }
    fn from_rational(q: &Rational, prec: u32) -> Self {
        Dual::constant(Interval::from_rational(q, prec))
    }
    fn plus(&self, other: &Self) -> Self {
        self + other
    }
    fn minus(&self, other: &Self) -> Self {
        self - other
    }
    fn times(&self, other: &Self) -> Self {
        self * other
    }
    fn negate(&self) -> Self {
        -self
    }
    fn recip(&self) -> Option<Self> {
        if self.val.contains_zero() {
            return None;
        }
        let one = Dual::constant(Interval::one(self.val.prec()));
        Some(&one / self)
    }
    fn exp(&self) -> Option<Self> {
        Some(Dual::exp(self))
    }
}

impl LemmaScalar for Ball {
    fn from_f64(x: f64, _prec: u32) -> Option<Self> {
        Ball::from_f64(x)
    }
    fn from_rational(q: &Rational, _prec: u32) -> Self {
        Ball::from_rational(q).unwrap_or_else(Ball::whole)
    }
    fn plus(&self, other: &Self) -> Self {
        self.add(other)
    }
    fn minus(&self, other: &Self) -> Self {
        self.sub(other)
    }
    fn times(&self, other: &Self) -> Self {
        self.mul(other)
    }
    fn negate(&self) -> Self {
        self.neg()
    }
    fn recip(&self) -> Option<Self> {
        Ball::recip(self)
    }
    fn exp(&self) -> Option<Self> {
        Ball::exp(self)
    }
    fn zero(_prec: u32) -> Self {
        Ball::ZERO
    }
    fn one(_prec: u32) -> Self {
        Ball::ONE
    }
}

impl LemmaScalar for Rational {
    fn from_f64(x: f64, _prec: u32) -> Option<Self> {
        Rational::from_f64(x)
    }
    fn from_rational(q: &Rational, _prec: u32) -> Self {
        q.clone()
    }
    fn plus(&self, other: &Self) -> Self {
        Rational::from(self + other)
    }
    fn minus(&self, other: &Self) -> Self {
        Rational::from(self - other)
    }
    fn times(&self, other: &Self) -> Self {
        Rational::from(self * other)
    }
    fn negate(&self) -> Self {
        Rational::from(-self)
    }
    fn recip(&self) -> Option<Self> {
        (!self.is_zero()).then(|| Rational::from(self.recip_ref()))
    }
    fn exp(&self) -> Option<Self> {
        None
    }
}

pub(crate) fn shape_err(what: String) -> SpecError {
    SpecError::ShapeMismatch { what }
}

pub(crate) fn degenerate(what: impl Into<String>) -> SpecError {
    SpecError::Degenerate { what: what.into() }
}

/// Checks that `m` is `rows x cols` (either may be `None` for "any").
pub fn expect_shape<T>(
    name: &str,
    m: &Mat<T>,
    rows: Option<usize>,
    cols: Option<usize>,
) -> Res<()> {
    let ok = rows.is_none_or(|r| r == m.nrows()) && cols.is_none_or(|c| c == m.ncols());
    if ok {
        Ok(())
    } else {
        let show = |x: Option<usize>| x.map_or("*".to_string(), |v| v.to_string());
        Err(shape_err(format!(
            "{name} is {} x {} but {} x {} is required",
            m.nrows(),
            m.ncols(),
            show(rows),
            show(cols)
        )))
    }
}

/// Converts an `f64` matrix to `T` exactly; [`SpecError::NonFinite`] names the
/// first NaN or infinite entry.
pub fn lift<T: LemmaScalar>(name: &str, m: &Mat<f64>, prec: u32) -> Res<Mat<T>> {
    let mut out = Vec::with_capacity(m.len());
    for j in 0..m.ncols() {
        for i in 0..m.nrows() {
            let x = m[(i, j)];
            out.push(T::from_f64(x, prec).ok_or_else(|| SpecError::NonFinite {
                what: format!("{name}[({i}, {j})] = {x}"),
            })?);
        }
    }
    Ok(Mat::from_vec(m.nrows(), m.ncols(), out))
}

/// Converts one `f64` scalar exactly.
pub fn lift_scalar<T: LemmaScalar>(name: &str, x: f64, prec: u32) -> Res<T> {
    T::from_f64(x, prec).ok_or_else(|| SpecError::NonFinite {
        what: format!("{name} = {x}"),
    })
}

/// Checks that `prec` is a precision MPFR accepts.
pub fn check_prec(prec: u32) -> Res<()> {
    if (rug::float::prec_min()..=rug::float::prec_max()).contains(&prec) {
        Ok(())
    } else {
        Err(SpecError::InvalidPrecision { prec })
    }
}

/// The all-zero `r x c` matrix.
pub fn zeros<T: LemmaScalar>(r: usize, c: usize, prec: u32) -> Mat<T> {
    Mat::from_element(r, c, T::zero(prec))
}

/// Matrix product `a b`.
pub fn matmul<T: LemmaScalar>(a: &Mat<T>, b: &Mat<T>, prec: u32) -> Res<Mat<T>> {
    if a.ncols() != b.nrows() {
        return Err(shape_err(format!(
            "product of {} x {} and {} x {}",
            a.nrows(),
            a.ncols(),
            b.nrows(),
            b.ncols()
        )));
    }
    Ok(Mat::from_fn(a.nrows(), b.ncols(), |i, j| {
        (0..a.ncols()).fold(T::zero(prec), |acc, l| {
            acc.plus(&a[(i, l)].times(&b[(l, j)]))
        })
    }))
}

/// Product of a chain of matrices, left to right.
pub fn chain<T: LemmaScalar>(ms: &[&Mat<T>], prec: u32) -> Res<Mat<T>> {
    let Some((first, rest)) = ms.split_first() else {
        return Err(shape_err("empty product chain".into()));
    };
    rest.iter()
        .try_fold((*first).clone(), |acc, m| matmul(&acc, m, prec))
}

fn same_shape<T>(op: &str, a: &Mat<T>, b: &Mat<T>) -> Res<()> {
    if a.shape() == b.shape() {
        Ok(())
    } else {
        Err(shape_err(format!(
            "{op} of {} x {} and {} x {}",
            a.nrows(),
            a.ncols(),
            b.nrows(),
            b.ncols()
        )))
    }
}

/// Entry-wise sum.
pub fn add<T: LemmaScalar>(a: &Mat<T>, b: &Mat<T>) -> Res<Mat<T>> {
    same_shape("sum", a, b)?;
    Ok(a.zip_map(b, |x, y| x.plus(&y)))
}

/// Entry-wise difference.
pub fn sub<T: LemmaScalar>(a: &Mat<T>, b: &Mat<T>) -> Res<Mat<T>> {
    same_shape("difference", a, b)?;
    Ok(a.zip_map(b, |x, y| x.minus(&y)))
}

/// Hadamard (entry-wise) product `a o b`.
pub fn hadamard<T: LemmaScalar>(a: &Mat<T>, b: &Mat<T>) -> Res<Mat<T>> {
    same_shape("Hadamard product", a, b)?;
    Ok(a.zip_map(b, |x, y| x.times(&y)))
}

/// Scalar multiple `s a`.
pub fn scale<T: LemmaScalar>(s: &T, a: &Mat<T>) -> Mat<T> {
    a.map(|x| s.times(&x))
}

/// Negation `-a`.
pub fn neg<T: LemmaScalar>(a: &Mat<T>) -> Mat<T> {
    a.map(|x| x.negate())
}

/// Row-wise Kronecker product (ML24 Fact C.2, docs/math.md §3.5):
/// `(A (x) B)_{i, (a, b)} = A_ia B_ib`, column index `a * cols(B) + b`.
pub fn row_kron<T: LemmaScalar>(a: &Mat<T>, b: &Mat<T>) -> Res<Mat<T>> {
    if a.nrows() != b.nrows() {
        return Err(shape_err(format!(
            "row-wise Kronecker product of {} and {} rows",
            a.nrows(),
            b.nrows()
        )));
    }
    let cb = b.ncols();
    Ok(Mat::from_fn(a.nrows(), a.ncols() * cb, |i, col| {
        a[(i, col / cb)].times(&b[(i, col % cb)])
    }))
}

/// Horizontal concatenation `[a, b]`.
pub fn hcat<T: LemmaScalar>(a: &Mat<T>, b: &Mat<T>) -> Res<Mat<T>> {
    if a.nrows() != b.nrows() {
        return Err(shape_err(format!(
            "concatenation of {} and {} rows",
            a.nrows(),
            b.nrows()
        )));
    }
    let ca = a.ncols();
    Ok(Mat::from_fn(a.nrows(), ca + b.ncols(), |i, j| {
        if j < ca {
            a[(i, j)].clone()
        } else {
            b[(i, j - ca)].clone()
        }
    }))
}

/// `diag(v) a`: row `i` of `a` times `v_i`.
pub fn diag_left<T: LemmaScalar>(v: &[T], a: &Mat<T>) -> Res<Mat<T>> {
    if v.len() != a.nrows() {
        return Err(shape_err(format!(
            "diag of length {} times {} rows",
            v.len(),
            a.nrows()
        )));
    }
    Ok(Mat::from_fn(a.nrows(), a.ncols(), |i, j| {
        v[i].times(&a[(i, j)])
    }))
}

/// `a diag(v)`: column `j` of `a` times `v_j`.
pub fn diag_right<T: LemmaScalar>(a: &Mat<T>, v: &[T]) -> Res<Mat<T>> {
    if v.len() != a.ncols() {
        return Err(shape_err(format!(
            "{} columns times diag of length {}",
            a.ncols(),
            v.len()
        )));
    }
    Ok(Mat::from_fn(a.nrows(), a.ncols(), |i, j| {
        a[(i, j)].times(&v[j])
    }))
}

/// Row sums `a 1`.
pub fn row_sums<T: LemmaScalar>(a: &Mat<T>, prec: u32) -> Vec<T> {
    (0..a.nrows())
        .map(|i| (0..a.ncols()).fold(T::zero(prec), |acc, j| acc.plus(&a[(i, j)])))
        .collect()
}

/// Row `i` of `a` as a `1 x cols` matrix.
pub fn row<T: LemmaScalar>(a: &Mat<T>, i: usize) -> Mat<T> {
    Mat::from_fn(1, a.ncols(), |_, j| a[(i, j)].clone())
}

/// Column `j` of `a` as a `rows x 1` matrix.
pub fn col<T: LemmaScalar>(a: &Mat<T>, j: usize) -> Mat<T> {
    Mat::from_fn(a.nrows(), 1, |i, _| a[(i, j)].clone())
}

/// Reciprocals of a vector of normalisers; [`SpecError::Degenerate`] when one
/// is (or may be) zero.
pub fn recips<T: LemmaScalar>(what: &str, v: &[T]) -> Res<Vec<T>> {
    v.iter()
        .enumerate()
        .map(|(i, x)| {
            x.recip().ok_or_else(|| {
                degenerate(format!("{what}[{i}] is zero or not bounded away from it"))
            })
        })
        .collect()
}

/// `diag(a 1)^-1 a`: row normalisation (the softmax of docs/math.md §2.1 once the
/// kernel has been applied).
pub fn normalise_rows<T: LemmaScalar>(a: &Mat<T>, prec: u32) -> Res<Mat<T>> {
    let inv = recips("row sum", &row_sums(a, prec))?;
    diag_left(&inv, a)
}

/// The causal mask of docs/math.md §1.2 (top-left aligned, square): keeps `a_ij`
/// for `j <= i`, zero elsewhere.
pub fn causal<T: LemmaScalar>(a: &Mat<T>, prec: u32) -> Mat<T> {
    Mat::from_fn(a.nrows(), a.ncols(), |i, j| {
        if j <= i {
            a[(i, j)].clone()
        } else {
            T::zero(prec)
        }
    })
}

/// The exact real value of an `Interval`-free rational matrix as enclosures.
pub fn rational_to_intervals(m: &Mat<Rational>, prec: u32) -> Mat<Interval> {
    m.map(|q| Interval::from_rational(&q, prec))
}

/// A polynomial `P(x) = sum_t c_t x^t` with rational coefficients, the stand-in
/// for `exp` in the polynomial method (docs/math.md §3.2).
#[derive(Clone, Debug, PartialEq)]
pub struct Poly {
    /// Coefficients `c_0, c_1, ..., c_g`.
    pub coeffs: Vec<Rational>,
}

impl Poly {
    /// The Taylor polynomial of `exp` at 0 of degree `g`: `c_t = 1 / t!`
    /// (docs/math.md §3.2). For even `g` it is positive on the whole line, so every
    /// normaliser built from it is positive.
    pub fn taylor_exp(g: u32) -> Poly {
        let mut fact = Integer::from(1);
        let coeffs = (0..=g)
            .map(|t| {
                if t > 0 {
                    fact *= t;
                }
                Rational::from((Integer::from(1), fact.clone()))
            })
            .collect();
        Poly { coeffs }
    }

    /// The degree `g` (0 for the empty polynomial).
    pub fn degree(&self) -> usize {
        self.coeffs.len().saturating_sub(1)
    }

    /// `P(x)` by Horner's rule in `T`.
    pub fn eval<T: LemmaScalar>(&self, x: &T, prec: u32) -> T {
        self.coeffs.iter().rev().fold(T::zero(prec), |acc, c| {
            acc.times(x).plus(&T::from_rational(c, prec))
        })
    }

    /// A certified upper bound on the relative error of the Taylor polynomial
    /// of degree `g = self.degree()` on `|x| <= r` (docs/math.md §3.2):
    /// `|P(x) - e^x| <= r^(g+1) e^(2r) / (g+1)! * e^x` (Lagrange remainder
    /// `|x|^(g+1) e^|x| / (g+1)!`, divided by `e^x >= e^-r`). Only valid for the
    /// Taylor polynomial ([`Poly::taylor_exp`]); the caller is responsible for
    /// that.
    pub fn taylor_relative_error(&self, r: f64, prec: u32) -> f64 {
        let g1 = self.degree() as u32 + 1;
        let r = Interval::from_f64(r.abs(), prec);
        let mut num = Interval::one(prec);
        let mut fact = Interval::one(prec);
        for t in 1..=g1 {
            num = &num * &r;
            fact = &fact * &Interval::from_f64(f64::from(t), prec);
        }
        let two_r = &r + &r;
        (num * two_r.exp() / fact).hi_f64()
    }
}

/// The kernel applied to a score: `exp` or a polynomial (docs/math.md §2.1, §3.2).
pub type Kernel<'a, T> = &'a dyn Fn(&T) -> Res<T>;

/// `x -> exp(x)`; for rationals, which have no `exp`, an error.
pub fn exp_kernel<T: LemmaScalar>(x: &T) -> Res<T> {
    x.exp()
        .ok_or_else(|| degenerate("exp is not available in exact rational arithmetic"))
}

/// Applies the kernel entry-wise.
pub fn apply<T: LemmaScalar>(k: Kernel<'_, T>, s: &Mat<T>) -> Res<Mat<T>> {
    let mut out = Vec::with_capacity(s.len());
    for x in s.iter() {
        out.push(k(x)?);
    }
    Ok(Mat::from_vec(s.nrows(), s.ncols(), out))
}

/// Multi-indices `alpha` in `N^d` with `|alpha| <= g`, in graded order.
fn multi_indices(d: usize, g: usize) -> Vec<Vec<u32>> {
    fn rec(d: usize, left: u32, prefix: &mut Vec<u32>, out: &mut Vec<Vec<u32>>) {
        if prefix.len() == d {
            out.push(prefix.clone());
            return;
        }
        for a in 0..=left {
            prefix.push(a);
            rec(d, left - a, prefix, out);
            prefix.pop();
        }
    }
    let mut out = Vec::new();
    rec(d, g as u32, &mut Vec::new(), &mut out);
    out.sort_by_key(|a| a.iter().sum::<u32>());
    out
}

/// The low-rank factors of docs/math.md §3.3 for scores `tau q_i . k_j`:
/// `U[i, alpha] = c_|alpha| tau^|alpha| (|alpha|! / alpha!) q_i^alpha`,
/// `V[j, alpha] = k_j^alpha`, so that `(U V^T)_ij = P(tau q_i . k_j)` exactly
/// (multinomial theorem). Rank `C(d + g, g)`.
pub fn poly_factors<T: LemmaScalar>(
    q: &Mat<T>,
    k: &Mat<T>,
    tau: &T,
    p: &Poly,
    prec: u32,
) -> Res<(Mat<T>, Mat<T>)> {
    if q.ncols() != k.ncols() {
        return Err(shape_err(format!(
            "queries have {} columns, keys {}",
            q.ncols(),
            k.ncols()
        )));
    }
    if p.coeffs.is_empty() {
        return Err(degenerate("the polynomial has no coefficients"));
    }
    let alphas = multi_indices(q.ncols(), p.degree());
    let coef: Vec<T> = alphas
        .iter()
        .map(|a| {
            let t = a.iter().sum::<u32>();
            let mut m = Integer::factorial(t).complete();
            for &ai in a {
                m /= Integer::factorial(ai).complete();
            }
            let c = &p.coeffs[t as usize] * Rational::from(m);
            let tau_t = (0..t).fold(T::one(prec), |acc, _| acc.times(tau));
            T::from_rational(&c, prec).times(&tau_t)
        })
        .collect();
    let mono = |x: &Mat<T>, i: usize, a: &[u32]| {
        a.iter().enumerate().fold(T::one(prec), |acc, (c, &e)| {
            (0..e).fold(acc, |acc2, _| acc2.times(&x[(i, c)]))
        })
    };
    let u = Mat::from_fn(q.nrows(), alphas.len(), |i, col| {
        coef[col].times(&mono(q, i, &alphas[col]))
    });
    let v = Mat::from_fn(k.nrows(), alphas.len(), |j, col| mono(k, j, &alphas[col]));
    Ok((u, v))
}

/// How a claimed enclosure matrix compares with the oracle's, entry by entry.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Agreement {
    /// Number of entries compared.
    pub entries: usize,
    /// Entries whose two enclosures are disjoint (each one proves the claim
    /// wrong at that entry).
    pub disjoint: usize,
    /// Certified lower bound on the largest gap between two disjoint
    /// enclosures (`0` when all overlap): the claim misses the true value by at
    /// least this much at some entry.
    pub margin: f64,
    /// `margin` divided by the largest magnitude among the oracle's entries
    /// (`0` when that is `0`), rounded to nearest: a readable size of the miss.
    pub rel_margin: f64,
    /// The largest width among both matrices' enclosures (rounded up).
    pub max_width: f64,
}

impl Agreement {
    /// `true` when every entry's enclosures overlap.
    pub fn agrees(&self) -> bool {
        self.disjoint == 0
    }
}

/// Certified lower bound on the distance between two intervals (`0` when they
/// overlap).
pub fn gap(a: &Interval, b: &Interval) -> f64 {
    let prec = a.prec().max(b.prec());
    let d1 = Float::with_val_round(prec, a.lo() - b.hi(), Round::Down).0;
    let d2 = Float::with_val_round(prec, b.lo() - a.hi(), Round::Down).0;
    let d = if d1 > d2 { d1 } else { d2 };
    if d > 0 {
        d.to_f64_round(Round::Down)
    } else {
        0.0
    }
}

/// Compares `claimed` with `oracle` entry by entry (see [`Agreement`]).
pub fn agreement(claimed: &Mat<Interval>, oracle: &Mat<Interval>) -> Res<Agreement> {
    same_shape("comparison", claimed, oracle)?;
    let mut a = Agreement {
        entries: claimed.len(),
        disjoint: 0,
        margin: 0.0,
        rel_margin: 0.0,
        max_width: 0.0,
    };
    let mut scale = 0.0f64;
    for (c, o) in claimed.iter().zip(oracle.iter()) {
        if !c.overlaps(o) {
            a.disjoint += 1;
        }
        a.margin = a.margin.max(gap(c, o));
        a.max_width = a.max_width.max(c.width_f64()).max(o.width_f64());
        scale = scale.max(o.mag());
    }
    if scale > 0.0 {
        a.rel_margin = a.margin / scale;
    }
    Ok(a)
}

/// Merges agreements of several comparisons (sums counts, takes maxima).
pub fn merge(parts: &[Agreement]) -> Agreement {
    parts.iter().fold(
        Agreement {
            entries: 0,
            disjoint: 0,
            margin: 0.0,
            rel_margin: 0.0,
            max_width: 0.0,
        },
        |acc, p| Agreement {
            entries: acc.entries + p.entries,
            disjoint: acc.disjoint + p.disjoint,
            margin: acc.margin.max(p.margin),
            rel_margin: acc.rel_margin.max(p.rel_margin),
            max_width: acc.max_width.max(p.max_width),
        },
    )
}

/// Stacks `1 x c` (or any same-width) matrices vertically.
pub fn vstack<T: LemmaScalar>(parts: &[Mat<T>]) -> Res<Mat<T>> {
    let Some(first) = parts.first() else {
        return Err(shape_err("empty stack".into()));
    };
    let c = first.ncols();
    if parts.iter().any(|p| p.ncols() != c) {
        return Err(shape_err("stacked matrices differ in width".into()));
    }
    let rows: usize = parts.iter().map(|p| p.nrows()).sum();
    let mut out = Vec::with_capacity(rows);
    for p in parts {
        for i in 0..p.nrows() {
            out.push(row(p, i));
        }
    }
    Ok(Mat::from_fn(rows, c, |i, j| out[i][(0, j)].clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn factors_reproduce_the_polynomial_kernel_exactly() {
        let prec = 64;
        let q = lift::<Rational>(
            "q",
            &Mat::from_row_slice(2, 2, &[0.5, -1.0, 0.25, 2.0]),
            prec,
        )
        .unwrap();
        let k = lift::<Rational>(
            "k",
            &Mat::from_row_slice(3, 2, &[1.0, 0.5, -0.75, 1.5, 2.0, -1.0]),
            prec,
        )
        .unwrap();
        let tau = Rational::from((1, 3));
        let p = Poly::taylor_exp(5);
        let (u, v) = poly_factors(&q, &k, &tau, &p, prec).unwrap();
        assert_eq!(u.ncols(), 21); // C(2 + 5, 5)
        let uv = matmul(&u, &v.transpose(), prec).unwrap();
        let s = scale(&tau, &matmul(&q, &k.transpose(), prec).unwrap());
        let direct = s.map(|x| p.eval(&x, prec));
        assert_eq!(uv, direct);
    }

    #[test]
    fn taylor_bound_covers_the_actual_error() {
        let p = Poly::taylor_exp(6);
        let bound = p.taylor_relative_error(1.0, 128);
        for x in [-1.0, -0.5, 0.3, 1.0] {
            let px = p.eval(&Interval::from_f64(x, 128), 128);
            let ex = Interval::from_f64(x, 128).exp();
            let rel = ((&px - &ex) / &ex).mag();
            assert!(rel <= bound, "x = {x}: {rel} > {bound}");
        }
    }
}

/// The enclosure `P(x) [1/(1+eps), 1/(1-eps)]` of `exp(x)` for `|x| <= r`,
/// valid when `|P(x) - e^x| <= eps e^x` there (docs/math.md §3.2): `e^x` lies in
/// `[P/(1+eps), P/(1-eps)]`, and so does `P(x)` itself. Evaluating a direct
/// formula with this kernel encloses both the exact (`exp`) value and the
/// polynomial one, so its width bounds their distance: the "stated epsilon"
/// propagated rigorously by interval arithmetic. A score whose enclosure
/// leaves `[-r, r]` is an error (the bound does not apply there).
pub fn widened_kernel(
    p: &Poly,
    r: f64,
    eps: f64,
    prec: u32,
) -> Res<impl Fn(&Interval) -> Res<Interval> + '_> {
    if !(eps.is_finite() && (0.0..1.0).contains(&eps)) {
        return Err(degenerate(format!(
            "relative error bound {eps} is not in [0, 1)"
        )));
    }
    let e = Interval::from_f64(eps, prec);
    let one = Interval::one(prec);
    let factor = (&one / (&one + &e)).hull(&(&one / (&one - &e)));
    Ok(move |x: &Interval| {
        if x.mag() > r {
            return Err(degenerate(format!("score {x:?} outside [-{r}, {r}]")));
        }
        Ok(p.eval(x, prec) * &factor)
    })
}

/// How a low-rank polynomial result compares with the exact (`exp`) value
/// (docs/math.md §5.1, question 2).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpsCheck {
    /// The polynomial's relative error bound `eps_P` on the score range.
    pub eps_p: f64,
    /// Largest width of the widened enclosure (see [`widened_kernel`]): a
    /// certified bound on `|low-rank P value - exact value|` per entry.
    pub bound: f64,
    /// Largest distance between the midpoints of the low-rank `P` enclosure
    /// and the oracle's `exp` enclosure.
    pub measured: f64,
    /// Whether every entry of the low-rank result and of the oracle overlaps
    /// the widened enclosure (both must, by construction).
    pub consistent: bool,
}

/// Builds an [`EpsCheck`] from the widened direct evaluation, the low-rank
/// result with `P` (in intervals) and the oracle's `exp` enclosure.
pub fn eps_check(
    eps_p: f64,
    widened: &Mat<Interval>,
    low_rank: &Mat<Interval>,
    oracle: &Mat<Interval>,
) -> Res<EpsCheck> {
    same_shape("eps check", widened, low_rank)?;
    same_shape("eps check", widened, oracle)?;
    let mut c = EpsCheck {
        eps_p,
        bound: 0.0,
        measured: 0.0,
        consistent: true,
    };
    for ((w, l), o) in widened.iter().zip(low_rank.iter()).zip(oracle.iter()) {
        c.consistent &= w.overlaps(l) && w.overlaps(o);
        c.bound = c.bound.max(w.width_f64());
        c.measured = c.measured.max((l.mid_f64() - o.mid_f64()).abs());
    }
    Ok(c)
}

/// The largest magnitude among a matrix's enclosures (rounded up): the
/// radius `R` of docs/math.md §3.1 when applied to the scores.
pub fn max_mag(m: &Mat<Interval>) -> f64 {
    m.iter().map(Interval::mag).fold(0.0, f64::max)
}
