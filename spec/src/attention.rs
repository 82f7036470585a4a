//! Exact single-head attention, forward and backward, as interval enclosures
//! (docs/math.md §2), and the dual-number gradient oracle (docs/math.md
//! §5.2).
//!
//! Notation of docs/math.md §1.1, §2.1: `Q` is `n_q x d`, `K` is `n_k x d`, `V` is
//! `n_k x d_v`, and
//!
//! ```text
//! S = tau Q K^T,  A = M o exp(S),  P = diag(A 1)^-1 A,  O = P V,  lse_i = ln (A 1)_i
//! ```
//!
//! Every `f64` input is converted exactly, and every result is an [`Interval`]
//! guaranteed to contain the exact real value.
//!
//! # Fully masked rows
//!
//! With [`Mask::CausalBottomRight`] and `n_q > n_k`, the queries
//! `i < n_q - n_k` see no key at all (and with `n_k = 0` no query does). As in
//! docs/math.md §1.2, this crate defines such a row as a zero row: its
//! output row is exactly `[0, 0]`, its `lse` is `None` (the production engine
//! reports `-inf`, the logarithm of the empty sum), and it contributes nothing
//! to any gradient (its row of `dQ` is exactly zero, and its row of `dO` does
//! not affect `dK` or `dV`).
//!
//! # Numerics
//!
//! Row `i` is computed as `exp(S_ij - m_i)` with `m_i` a *point* shift (the
//! largest midpoint of the row's score enclosures). Any shift is exact in real
//! arithmetic, and a point shift adds no width; it keeps the largest term near
//! `1`, so scores of size 700 and well beyond stay finite and tight. Then
//! `lse_i = m_i + ln(sum_j exp(S_ij - m_i))`.
//!
//! The forward pass is written once, generically over a private arithmetic
//! trait implemented by [`Interval`] and [`Dual`]; [`backward`] applies the
//! closed-form gradient of docs/math.md §2.3 to the interval forward, while
//! [`gradients_by_dual_numbers`] differentiates the very same forward code by
//! forward-mode dual numbers, entry by entry. The two therefore differ only in
//! how the derivative is obtained.

use std::cmp::Ordering;
use std::fmt;

use nalgebra::DMatrix;

use crate::dual::Dual;
use crate::interval::Interval;

/// Which key positions a query may attend to (docs/math.md §1.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mask {
    /// Every query sees every key.
    None,
    /// Causal, aligned at the top-left corner: key `j` is allowed for query `i`
    /// iff `j <= i`.
    CausalTopLeft,
    /// Causal, aligned at the bottom-right corner (the last query sees every
    /// key): key `j` is allowed for query `i` iff `j + n_q <= i + n_k`, that is
    /// `j <= i + n_k - n_q`. When `n_q > n_k` the first `n_q - n_k` queries see
    /// no key (fully masked rows; see the module documentation).
    CausalBottomRight,
    /// A sliding window: with the diagonal `c_i = i` (top-left) or `c_i = i + n_k -
    /// n_q` (bottom-right), key `j` is allowed for query `i` iff
    /// `c_i - left <= j <= c_i + right`; `None` leaves that side unbounded.
    Window {
        /// Keys before the diagonal that stay visible.
        left: Option<usize>,
        /// Keys after the diagonal that stay visible.
        right: Option<usize>,
        /// `true`: bottom-right alignment; `false`: top-left.
        bottom_right: bool,
    },
}

impl Mask {
    /// `true` when query `i` may attend to key `j` in a problem with `n_q`
    /// queries and `n_k` keys. The comparisons are done in `u128` and `i128`, so they
    /// cannot overflow or underflow for any `usize` arguments.
    pub fn allows(&self, i: usize, j: usize, n_q: usize, n_k: usize) -> bool {
        match *self {
            Mask::None => true,
            Mask::CausalTopLeft => j <= i,
            Mask::CausalBottomRight => j as u128 + n_q as u128 <= i as u128 + n_k as u128,
            Mask::Window {
                left,
                right,
                bottom_right,
            } => {
                let c = i as i128
                    + if bottom_right {
                        n_k as i128 - n_q as i128
                    } else {
                        0
                    };
                let j = j as i128;
                left.is_none_or(|l| c - l as i128 <= j) && right.is_none_or(|r| j <= c + r as i128)
            }
        }
    }
}

/// Inputs of one attention head (docs/math.md §2.1). Every entry must be finite.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    /// Queries, `n_q x d`.
    pub q: DMatrix<f64>,
    /// Keys, `n_k x d`.
    pub k: DMatrix<f64>,
    /// Values, `n_k x d_v`.
    pub v: DMatrix<f64>,
    /// Score scale `tau` (docs/math.md §1.1: default `1/sqrt(d)`; any finite value).
    pub tau: f64,
    /// Which scores are kept.
    pub mask: Mask,
    /// Score softcapping: `Some(c)`, `c > 0` finite, replaces each score `s = tau <q_i,
    /// k_j>` by `c tanh(s / c)` before the bias (docs/math.md §1.4); `None`: no cap.
    pub softcap: Option<f64>,
}

impl Problem {
    /// Number of queries `n_q` (rows of `q`).
    pub fn n_q(&self) -> usize {
        self.q.nrows()
    }

    /// Number of keys `n_k` (rows of `k`).
    pub fn n_k(&self) -> usize {
        self.k.nrows()
    }

    /// Head dimension `d` (columns of `q`).
    pub fn d(&self) -> usize {
        self.q.ncols()
    }

    /// Value dimension `d_v` (columns of `v`).
    pub fn d_v(&self) -> usize {
        self.v.ncols()
    }

    /// Checks that the shapes agree (`k` has `d` columns, `v` has `n_k` rows)
    /// and that every entry and `tau` are finite.
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.k.ncols() != self.d() {
            return Err(shape(format!(
                "q is {} x {} but k is {} x {} (column counts must agree)",
                self.n_q(),
                self.d(),
                self.k.nrows(),
                self.k.ncols()
            )));
        }
        if self.v.nrows() != self.n_k() {
            return Err(shape(format!(
                "k has {} rows but v has {} (row counts must agree)",
                self.n_k(),
                self.v.nrows()
            )));
        }
        if !self.tau.is_finite() {
            return Err(SpecError::NonFinite {
                what: format!("tau = {}", self.tau),
            });
        }
        if let Some(c) = self.softcap {
            if !(c.is_finite() && c > 0.0) {
                return Err(SpecError::NonFinite {
                    what: format!("softcap = {c} (must be finite and positive)"),
                });
            }
        }
        check_finite("q", &self.q)?;
        check_finite("k", &self.k)?;
        check_finite("v", &self.v)
    }
}

/// Why a computation was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpecError {
    /// Matrix dimensions that do not fit together.
    ShapeMismatch {
        /// Which shapes disagree, and how.
        what: String,
    },
    /// An input entry that is NaN or infinite (no real value to enclose).
    NonFinite {
        /// Which entry, and its value.
        what: String,
    },
    /// A precision outside `rug::float::prec_min()..=rug::float::prec_max()`.
    InvalidPrecision {
        /// The precision asked for, in bits.
        prec: u32,
    },
    /// A quantity the formula divides by is zero (or its enclosure is not
    /// bounded away from zero), or an operation the number type lacks (`exp`
    /// of an exact rational) was asked for.
    Degenerate {
        /// What was degenerate.
        what: String,
    },
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SpecError::ShapeMismatch { what } => write!(f, "shape mismatch: {what}"),
            SpecError::NonFinite { what } => write!(f, "non-finite input: {what}"),
            SpecError::InvalidPrecision { prec } => write!(
                f,
                "precision {prec} bits is outside {}..={}",
                rug::float::prec_min(),
                rug::float::prec_max()
            ),
            SpecError::Degenerate { what } => write!(f, "degenerate input: {what}"),
        }
    }
}

impl std::error::Error for SpecError {}

fn shape(what: String) -> SpecError {
    SpecError::ShapeMismatch { what }
}

fn check_finite(name: &str, m: &DMatrix<f64>) -> Result<(), SpecError> {
    let bad = (0..m.nrows())
        .flat_map(|i| (0..m.ncols()).map(move |j| (i, j)))
        .find(|&ij| !m[ij].is_finite());
    match bad {
        Some((i, j)) => Err(SpecError::NonFinite {
            what: format!("{name}[({i}, {j})] = {}", m[(i, j)]),
        }),
        None => Ok(()),
    }
}

fn check_prec(prec: u32) -> Result<(), SpecError> {
    if (rug::float::prec_min()..=rug::float::prec_max()).contains(&prec) {
        Ok(())
    } else {
        Err(SpecError::InvalidPrecision { prec })
    }
}

/// A bias is `n_q x n_k` with entries finite or `-inf`.
fn check_bias(p: &Problem, bias: Option<&DMatrix<f64>>) -> Result<(), SpecError> {
    let Some(b) = bias else { return Ok(()) };
    if b.shape() != (p.n_q(), p.n_k()) {
        return Err(shape(format!(
            "the bias is {} x {} but S is {} x {}",
            b.nrows(),
            b.ncols(),
            p.n_q(),
            p.n_k()
        )));
    }
    match b.iter().position(|x| x.is_nan() || *x == f64::INFINITY) {
        Some(at) => Err(SpecError::NonFinite {
            what: format!("bias entry {at} (column-major) = {}", b[at]),
        }),
        None => Ok(()),
    }
}

/// Validates the problem, the precision and (for the backward) `dO`'s shape.
fn check(p: &Problem, d_o: Option<&DMatrix<f64>>, prec: u32) -> Result<(), SpecError> {
    check_prec(prec)?;
    p.validate()?;
    if let Some(d_o) = d_o {
        if d_o.shape() != (p.n_q(), p.d_v()) {
            return Err(shape(format!(
                "dO is {} x {} but O is {} x {}",
                d_o.nrows(),
                d_o.ncols(),
                p.n_q(),
                p.d_v()
            )));
        }
        check_finite("dO", d_o)?;
    }
    Ok(())
}

/// Enclosures of the forward pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Forward {
    /// `O = P V`, `n_q x d_v`.
    pub o: DMatrix<Interval>,
    /// `lse_i = ln sum_j A_ij` per query; `None` for a fully masked row.
    pub lse: Vec<Option<Interval>>,
}

/// Enclosures of the gradients of a scalar loss `L` given `dO = dL/dO`.
#[derive(Clone, Debug, PartialEq)]
pub struct Grads {
    /// `dL/dQ`, `n_q x d`.
    pub dq: DMatrix<Interval>,
    /// `dL/dK`, `n_k x d`.
    pub dk: DMatrix<Interval>,
    /// `dL/dV`, `n_k x d_v`.
    pub dv: DMatrix<Interval>,
}

/// The arithmetic the generic forward pass needs; implemented by [`Interval`]
/// (plain enclosures) and [`Dual`] (enclosures with a derivative).
trait Arith: Clone + PartialEq + fmt::Debug + 'static {
    /// A quantity that does not depend on any seeded input.
    fn constant(x: Interval) -> Self;
    /// The enclosure of the value itself.
    fn value(&self) -> &Interval;
    fn plus(&self, other: &Self) -> Self;
    fn minus(&self, other: &Self) -> Self;
    fn times(&self, other: &Self) -> Self;
    fn over(&self, other: &Self) -> Self;
    fn exponential(&self) -> Self;
    fn hyperbolic_tangent(&self) -> Self;
}

impl Arith for Interval {
    fn constant(x: Interval) -> Self {
        x
    }
    fn value(&self) -> &Interval {
        self
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
    fn over(&self, other: &Self) -> Self {
        self / other
    }
    fn exponential(&self) -> Self {
        self.exp()
    }
    fn hyperbolic_tangent(&self) -> Self {
        self.tanh()
    }
}

impl Arith for Dual {
    fn constant(x: Interval) -> Self {
        Dual::constant(x)
    }
    fn value(&self) -> &Interval {
        &self.val
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
    fn over(&self, other: &Self) -> Self {
        self / other
    }
    fn exponential(&self) -> Self {
        self.exp()
    }
    fn hyperbolic_tangent(&self) -> Self {
        self.tanh()
    }
}

/// The inputs of [`Problem`] in some arithmetic `T`.
#[derive(Clone)]
struct Inputs<T> {
    q: DMatrix<T>,
    k: DMatrix<T>,
    v: DMatrix<T>,
    tau: T,
    mask: Mask,
    /// The softcap `c` (exact: an f64 lifted at `prec >= 53`).
    softcap: Option<T>,
    /// The additive score bias (`-inf` hides a key), kept in f64 and lifted per use.
    bias: Option<DMatrix<f64>>,
    prec: u32,
}

/// Converts an `f64` matrix exactly (for `prec >= 53`) to interval constants.
fn intervals(m: &DMatrix<f64>, prec: u32) -> DMatrix<Interval> {
    m.map(|x| Interval::from_f64(x, prec))
}

impl<T: Arith> Inputs<T> {
    fn new(p: &Problem, bias: Option<&DMatrix<f64>>, prec: u32) -> Inputs<T> {
        let lift = |m: &DMatrix<f64>| intervals(m, prec).map(T::constant);
        Inputs {
            q: lift(&p.q),
            k: lift(&p.k),
            v: lift(&p.v),
            tau: T::constant(Interval::from_f64(p.tau, prec)),
            mask: p.mask,
            softcap: p.softcap.map(|c| T::constant(Interval::from_f64(c, prec))),
            bias: bias.cloned(),
            prec,
        }
    }

    /// Whether query `i` sees key `j`: the mask allows it and the bias is not `-inf`.
    fn visible(&self, i: usize, j: usize) -> bool {
        let (n_q, n_k) = (self.q.nrows(), self.k.nrows());
        self.mask.allows(i, j, n_q, n_k)
            && self
                .bias
                .as_ref()
                .is_none_or(|b| b[(i, j)] != f64::NEG_INFINITY)
    }

    fn zero(&self) -> T {
        T::constant(Interval::zero(self.prec))
    }

    /// `tau <q_i, k_j>`, the score before the softcap and the bias.
    fn raw_score(&self, i: usize, j: usize) -> T {
        let dot = (0..self.q.ncols()).fold(self.zero(), |acc, c| {
            acc.plus(&self.q[(i, c)].times(&self.k[(j, c)]))
        });
        self.tau.times(&dot)
    }

    /// `S_ij = cap(tau <q_i, k_j>) + b_ij` with `cap(s) = c tanh(s / c)` under a
    /// softcap and the identity without one (docs/math.md §1.4, §2.1).
    fn score(&self, i: usize, j: usize) -> T {
        let raw = self.raw_score(i, j);
        let s = match &self.softcap {
            Some(c) => c.times(&raw.over(c).hyperbolic_tangent()),
            None => raw,
        };
        match &self.bias {
            // Exact: the bias is an f64, lifted exactly (prec >= 53).
            Some(b) => s.plus(&T::constant(Interval::from_f64(b[(i, j)], self.prec))),
            None => s,
        }
    }

    /// The unnormalised softmax of row `i`, or `None` for a fully masked row.
    fn softmax_row(&self, i: usize) -> Option<SoftmaxRow<T>> {
        let scores: Vec<(usize, T)> = (0..self.k.nrows())
            .filter(|&j| self.visible(i, j))
            .map(|j| (j, self.score(i, j)))
            .collect();
        let shift = scores
            .iter()
            .map(|(_, s)| s.value().mid())
            .max_by(|a, b| a.partial_cmp(b).unwrap_or(Ordering::Equal))?;
        let shift = Interval::point(shift);
        let c = T::constant(shift.clone());
        let terms: Vec<(usize, T)> = scores
            .into_iter()
            .map(|(j, s)| (j, s.minus(&c).exponential()))
            .collect();
        let sum = terms.iter().fold(self.zero(), |acc, (_, e)| acc.plus(e));
        Some(SoftmaxRow { terms, sum, shift })
    }

    /// Output row `O_i = sum_j exp(S_ij - m_i) V_j / sum_j exp(S_ij - m_i)`.
    fn output_row(&self, row: &SoftmaxRow<T>) -> Vec<T> {
        (0..self.v.ncols())
            .map(|c| {
                let num = row.terms.iter().fold(self.zero(), |acc, (j, e)| {
                    acc.plus(&e.times(&self.v[(*j, c)]))
                });
                num.over(&row.sum)
            })
            .collect()
    }

    /// The forward pass: `O` and each row's softmax data (`None` when masked).
    fn forward(&self) -> (DMatrix<T>, Vec<Option<SoftmaxRow<T>>>) {
        let (n_q, d_v) = (self.q.nrows(), self.v.ncols());
        let rows: Vec<Option<SoftmaxRow<T>>> = (0..n_q).map(|i| self.softmax_row(i)).collect();
        let mut o = DMatrix::from_element(n_q, d_v, self.zero());
        for (i, row) in rows.iter().enumerate() {
            if let Some(row) = row {
                for (c, x) in self.output_row(row).into_iter().enumerate() {
                    o[(i, c)] = x;
                }
            }
        }
        (o, rows)
    }
}

/// Row `i` of `A` shifted by the point `m_i`: the allowed keys'
/// `exp(S_ij - m_i)`, their sum, and `m_i`.
struct SoftmaxRow<T> {
    terms: Vec<(usize, T)>,
    sum: T,
    shift: Interval,
}

impl SoftmaxRow<Interval> {
    /// `lse_i = m_i + ln(sum)`. The sum contains a term enclosing
    /// `exp(S_ij - m_i)` with `m_i` inside `S_ij`'s enclosure, so it is
    /// positive; should `ln` still find no positive point, the whole line is
    /// returned (an honest, if useless, enclosure).
    fn lse(&self) -> Interval {
        match self.sum.ln() {
            Some(l) => &self.shift + &l,
            None => Interval::whole(self.sum.prec()),
        }
    }
}

/// Enclosures of `O` and `lse` (docs/math.md §2.1) at `prec` bits.
///
/// Errors: [`SpecError::ShapeMismatch`] when `k` does not have `d` columns or
/// `v` does not have `n_k` rows; [`SpecError::NonFinite`] for a NaN or infinite
/// input; [`SpecError::InvalidPrecision`] for a precision MPFR cannot use.
/// Fully masked rows give an exactly zero output row and `lse = None`.
pub fn forward(p: &Problem, prec: u32) -> Result<Forward, SpecError> {
    forward_with_bias(p, None, prec)
}

/// [`forward`] with an additive score bias `b` (`n_q x n_k`): `S_ij = tau q_i . k_j +
/// b_ij`, a `-inf` entry hiding key `j` from query `i` (as a mask does). Errors as for
/// [`forward`], and for a bias of the wrong shape or with a NaN or `+inf` entry.
pub fn forward_with_bias(
    p: &Problem,
    bias: Option<&DMatrix<f64>>,
    prec: u32,
) -> Result<Forward, SpecError> {
    check(p, None, prec)?;
    check_bias(p, bias)?;
    let (o, rows) = Inputs::<Interval>::new(p, bias, prec).forward();
    let lse = rows
        .iter()
        .map(|r| r.as_ref().map(SoftmaxRow::lse))
        .collect();
    Ok(Forward { o, lse })
}

/// Enclosure of the attention matrix `P = diag(A 1)^-1 A` (`n_q x n_k`,
/// docs/math.md §2.1). Masked entries, and whole fully masked rows, are exactly `0`.
/// Errors as for [`forward`].
pub fn probabilities(p: &Problem, prec: u32) -> Result<DMatrix<Interval>, SpecError> {
    check(p, None, prec)?;
    let (_, rows) = Inputs::<Interval>::new(p, None, prec).forward();
    Ok(probability_matrix(&rows, p.n_k(), prec))
}

fn probability_matrix(
    rows: &[Option<SoftmaxRow<Interval>>],
    n_k: usize,
    prec: u32,
) -> DMatrix<Interval> {
    let mut pm = DMatrix::from_element(rows.len(), n_k, Interval::zero(prec));
    for (i, row) in rows.iter().enumerate() {
        let Some(row) = row else { continue };
        for (j, e) in &row.terms {
            pm[(i, *j)] = e / &row.sum;
        }
    }
    pm
}

/// Interval matrix product `a b` at `prec` bits (shapes are the caller's
/// responsibility: `a.ncols() == b.nrows()`).
fn matmul(a: &DMatrix<Interval>, b: &DMatrix<Interval>, prec: u32) -> DMatrix<Interval> {
    DMatrix::from_fn(a.nrows(), b.ncols(), |i, j| {
        (0..a.ncols()).fold(Interval::zero(prec), |acc, l| acc + &a[(i, l)] * &b[(l, j)])
    })
}

/// Gradient enclosures by the closed-form backward of docs/math.md §2.3, in interval
/// arithmetic at `prec` bits:
///
/// ```text
/// dV = P^T dO,  dP = dO V^T,  delta = rowsum(dO o O),  dS = P o (dP - delta 1^T),
/// dQ = tau dS K,  dK = tau dS^T Q
/// ```
///
/// `d_o` must be `n_q x d_v` and finite ([`SpecError::ShapeMismatch`],
/// [`SpecError::NonFinite`]); other errors as for [`forward`]. A fully masked
/// row has `P`'s row exactly zero, hence contributes exactly nothing.
pub fn backward(p: &Problem, d_o: &DMatrix<f64>, prec: u32) -> Result<Grads, SpecError> {
    backward_with_bias(p, None, d_o, prec)
}

/// [`backward`] with an additive score bias (see [`forward_with_bias`]); the bias
/// is a constant (it gets no gradient).
pub fn backward_with_bias(
    p: &Problem,
    bias: Option<&DMatrix<f64>>,
    d_o: &DMatrix<f64>,
    prec: u32,
) -> Result<Grads, SpecError> {
    check(p, Some(d_o), prec)?;
    check_bias(p, bias)?;
    let inputs = Inputs::<Interval>::new(p, bias, prec);
    let (o, rows) = inputs.forward();
    let pm = probability_matrix(&rows, p.n_k(), prec);
    let d_o = intervals(d_o, prec);
    let dv = matmul(&pm.transpose(), &d_o, prec);
    let dp = matmul(&d_o, &inputs.v.transpose(), prec);
    let delta: Vec<Interval> = (0..p.n_q())
        .map(|i| {
            (0..p.d_v()).fold(Interval::zero(prec), |acc, c| {
                acc + &d_o[(i, c)] * &o[(i, c)]
            })
        })
        .collect();
    // Under a softcap, dS of the raw score: times d(c tanh(s / c))/ds = sech^2(s / c)
    // (as 1 / cosh^2: `1 - tanh^2` would cancel to a width of 2^-prec near saturation).
    let slope = |i: usize, j: usize| {
        inputs
            .softcap
            .as_ref()
            .map(|c| inputs.raw_score(i, j).over(c).sech_squared())
    };
    let ds = DMatrix::from_fn(p.n_q(), p.n_k(), |i, j| {
        let g = &pm[(i, j)] * (&dp[(i, j)] - &delta[i]);
        match slope(i, j) {
            Some(s) => g * s,
            None => g,
        }
    });
    let tau = &inputs.tau;
    let dq = matmul(&ds, &inputs.k, prec).map(|x| tau * x);
    let dk = matmul(&ds.transpose(), &inputs.q, prec).map(|x| tau * x);
    Ok(Grads { dq, dk, dv })
}

/// Which input matrix an oracle derivative is taken with respect to.
#[derive(Clone, Copy)]
enum Which {
    Q,
    K,
    V,
}

/// `d <dO, O> / d x` for the single input entry `x = which[(r, c)]`, by one
/// forward pass in dual numbers seeded on that entry.
fn seeded_derivative(
    base: &Inputs<Dual>,
    d_o: &DMatrix<Interval>,
    which: Which,
    (r, c): (usize, usize),
) -> Interval {
    let mut inputs = base.clone();
    let m = match which {
        Which::Q => &mut inputs.q,
        Which::K => &mut inputs.k,
        Which::V => &mut inputs.v,
    };
    m[(r, c)] = Dual::variable(m[(r, c)].val.clone());
    let (o, _) = inputs.forward();
    o.iter()
        .zip(d_o.iter())
        .fold(Interval::zero(base.prec), |acc, (x, g)| acc + &x.der * g)
}

/// Gradient enclosures by the independent oracle (docs/math.md §5.2): for each
/// entry `x` of `Q`, `K` and `V`, one forward pass in [`Dual`] arithmetic seeded
/// on `x` gives `d<dO, O>/dx = dL/dx`. Uses no closed-form gradient. Costs
/// `O(n_q n_k (d + d_v))` per entry, for `(n_q + n_k) d + n_k d_v` entries:
/// meant for small problems. Errors as for [`backward`].
pub fn gradients_by_dual_numbers(
    p: &Problem,
    d_o: &DMatrix<f64>,
    prec: u32,
) -> Result<Grads, SpecError> {
    check(p, Some(d_o), prec)?;
    let base = Inputs::<Dual>::new(p, None, prec);
    let d_o = intervals(d_o, prec);
    let grad = |which, m: &DMatrix<f64>| {
        DMatrix::from_fn(m.nrows(), m.ncols(), |r, c| {
            seeded_derivative(&base, &d_o, which, (r, c))
        })
    };
    Ok(Grads {
        dq: grad(Which::Q, &p.q),
        dk: grad(Which::K, &p.k),
        dv: grad(Which::V, &p.v),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shift_is_a_point_and_the_largest_term_is_near_one() {
        let p = Problem {
            q: DMatrix::from_row_slice(2, 1, &[3.0, -40.0]),
            k: DMatrix::from_row_slice(3, 1, &[1.0, 20.0, -0.5]),
            v: DMatrix::from_element(3, 1, 1.0),
            tau: 0.7,
            mask: Mask::None,
            softcap: None,
        };
        let inputs = Inputs::<Interval>::new(&p, None, 96);
        for i in 0..2 {
            let row = inputs.softmax_row(i).unwrap();
            assert!(row.shift.is_point());
            let top = row
                .terms
                .iter()
                .map(|(_, e)| e.hi_f64())
                .fold(0.0, f64::max);
            assert!((top - 1.0).abs() < 1e-20, "largest term {top}");
            assert!(row.sum.lo_f64() >= 1.0 - 1e-20);
        }
    }

    #[test]
    fn matmul_of_points_is_exact_for_small_integers() {
        let a = intervals(&DMatrix::from_row_slice(2, 2, &[1.0, 2.0, 3.0, 4.0]), 64);
        let b = intervals(&DMatrix::from_row_slice(2, 1, &[5.0, 6.0]), 64);
        let c = matmul(&a, &b, 64);
        assert_eq!(
            c,
            intervals(&DMatrix::from_row_slice(2, 1, &[17.0, 39.0]), 64)
        );
    }
}
