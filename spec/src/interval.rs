//! Closed real intervals with MPFR end points and outward rounding.
//!
//! An [`Interval`] `[lo, hi]` stands for the set of real numbers `x` with
//! `lo <= x <= hi`. Every operation returns an interval that contains the exact
//! real result of the operation applied to every choice of points from its
//! operands (the *containment* guarantee). To keep that guarantee in finite
//! precision, lower ends are always rounded towards minus infinity
//! ([`Round::Down`]) and upper ends towards plus infinity ([`Round::Up`]).
//! This is the enclosure arithmetic described in docs/math.md §5.2.
//!
//! # Invariants
//!
//! * An interval is never empty: `lo <= hi`, and neither end is NaN.
//! * Ends may be infinite. `lo` is never `+inf` and `hi` is never `-inf`, so an
//!   infinite end only means "unbounded on that side"; the interval itself is a
//!   set of *finite* reals. The whole line `[-inf, +inf]` is the enclosure that
//!   says "nothing is known".
//! * Partial operations (division by an interval containing zero, `ln` and
//!   `sqrt` outside their domains) never produce NaN: division answers the whole
//!   line, `ln` and `sqrt` answer `None` when no point of the operand is in the
//!   domain.
//!
//! # Precision
//!
//! Each interval carries its precision in bits (the precision of its MPFR end
//! points). A unary operation keeps the precision of its operand; a binary one
//! works at the larger of its operands' precisions. Constructors take the
//! precision explicitly and panic if it is outside
//! `rug::float::prec_min()..=rug::float::prec_max()` (the only way they can
//! fail).

use std::cmp::Ordering;
use std::ops::{Add, Div, Mul, Neg, Sub};

use rug::float::{Round, Special};
use rug::Float;

/// Default working precision in bits for enclosures (a little over twice the
/// 53 bits of `f64`, so that results rounded to `f64` are certified with a
/// wide margin).
pub const DEFAULT_PREC: u32 = 128;

/// A closed, non-empty interval `[lo, hi]` of real numbers with MPFR end
/// points, maintained with outward rounding (see the module documentation for
/// the invariants and the containment guarantee).
///
/// `PartialEq` compares the end points: two intervals are equal when they are
/// the same set (regardless of precision).
#[derive(Clone, Debug, PartialEq)]
pub struct Interval {
    lo: Float,
    hi: Float,
}

/// Rounds a lazily evaluated MPFR expression to `prec` bits in direction `round`.
fn rounded<T>(prec: u32, value: T, round: Round) -> Float
where
    Float: rug::ops::AssignRound<T, Round = Round, Ordering = Ordering>,
{
    Float::with_val_round(prec, value, round).0
}

/// Product of two end points with the interval convention `0 * inf = 0`:
/// an infinite end is a limit that is never attained, and every finite point
/// times zero is zero.
fn mul_end(x: &Float, y: &Float, prec: u32, round: Round) -> Float {
    if x.is_zero() || y.is_zero() {
        Float::with_val(prec, 0)
    } else {
        rounded(prec, x * y, round)
    }
}

/// Smallest of four end-point candidates (a NaN candidate is skipped; cannot
/// arise while the interval invariants hold).
fn min_of(values: [Float; 4]) -> Float {
    let [first, rest @ ..] = values;
    rest.into_iter().fold(
        first,
        |acc, x| if x < acc || acc.is_nan() { x } else { acc },
    )
}

/// Largest of four end-point candidates (NaN skipped, as in [`min_of`]).
fn max_of(values: [Float; 4]) -> Float {
    let [first, rest @ ..] = values;
    rest.into_iter().fold(
        first,
        |acc, x| if x > acc || acc.is_nan() { x } else { acc },
    )
}

impl Interval {
    /// Builds an interval from computed ends, repairing anything that would
    /// break the invariants in the safe direction: a NaN lower end becomes
    /// `-inf`, a NaN upper end `+inf`, and a `+inf` lower end (resp. `-inf`
    /// upper end, from an overflow towards a limit that is never attained)
    /// is widened to the whole line on that side. Crossed ends cannot arise
    /// from the operations here; if they did, the result is the whole line.
    fn from_ends(mut lo: Float, mut hi: Float) -> Interval {
        if lo.is_nan() || (lo.is_infinite() && lo.is_sign_positive()) {
            lo = Float::with_val(lo.prec(), Special::NegInfinity);
        }
        if hi.is_nan() || (hi.is_infinite() && hi.is_sign_negative()) {
            hi = Float::with_val(hi.prec(), Special::Infinity);
        }
        if lo > hi {
            lo = Float::with_val(lo.prec(), Special::NegInfinity);
            hi = Float::with_val(hi.prec(), Special::Infinity);
        }
        Interval { lo, hi }
    }

    /// The point interval `[0, 0]` at `prec` bits.
    ///
    /// # Panics
    /// If `prec` is outside `rug::float::prec_min()..=rug::float::prec_max()`.
    pub fn zero(prec: u32) -> Interval {
        Interval::point(Float::with_val(prec, 0))
    }

    /// The point interval `[1, 1]` at `prec` bits.
    ///
    /// # Panics
    /// If `prec` is outside `rug::float::prec_min()..=rug::float::prec_max()`.
    pub fn one(prec: u32) -> Interval {
        Interval::point(Float::with_val(prec, 1))
    }

    /// The whole real line `[-inf, +inf]` at `prec` bits: the enclosure that
    /// carries no information.
    ///
    /// # Panics
    /// If `prec` is outside `rug::float::prec_min()..=rug::float::prec_max()`.
    pub fn whole(prec: u32) -> Interval {
        Interval {
            lo: Float::with_val(prec, Special::NegInfinity),
            hi: Float::with_val(prec, Special::Infinity),
        }
    }

    /// The interval containing exactly the value `x`, at `prec` bits.
    ///
    /// For finite `x` and `prec >= 53` the result is the point `[x, x]`
    /// (every `f64` is a dyadic rational with a 53-bit significand, so the
    /// conversion is exact). For `prec < 53` the ends are rounded outwards,
    /// giving the tightest `prec`-bit interval containing `x`.
    /// Non-finite inputs have no real value to contain; they are mapped to
    /// enclosures that stay honest: `+inf` gives `[f64::MAX, +inf]`, `-inf`
    /// gives `[-inf, -f64::MAX]`, and NaN the whole line.
    ///
    /// # Panics
    /// If `prec` is outside `rug::float::prec_min()..=rug::float::prec_max()`.
    pub fn from_f64(x: f64, prec: u32) -> Interval {
        if x.is_nan() {
            return Interval::whole(prec);
        }
        if x.is_infinite() {
            let big = Float::with_val_round(prec, f64::MAX.copysign(x), Round::Zero).0;
            let inf = Float::with_val(prec, x);
            return if x > 0.0 {
                Interval::from_ends(big, inf)
            } else {
                Interval::from_ends(inf, big)
            };
        }
        Interval::from_ends(rounded(prec, x, Round::Down), rounded(prec, x, Round::Up))
    }

    /// The interval `[lo, hi]` from two `f64` ends, each converted exactly when
    /// `prec >= 53` (outwards otherwise). Infinite ends are allowed
    /// (`-inf` for `lo`, `+inf` for `hi` mean unbounded on that side).
    ///
    /// Returns `None` when an end is NaN, when `lo > hi` (the empty set is not
    /// an interval here), when `lo == +inf`, or when `hi == -inf`.
    ///
    /// # Panics
    /// If `prec` is outside `rug::float::prec_min()..=rug::float::prec_max()`.
    pub fn from_f64_ends(lo: f64, hi: f64, prec: u32) -> Option<Interval> {
        let valid = lo <= hi && lo != f64::INFINITY && hi != f64::NEG_INFINITY;
        valid.then(|| Interval {
            lo: rounded(prec, lo, Round::Down),
            hi: rounded(prec, hi, Round::Up),
        })
    }

    /// The point interval `[x, x]` at the precision of `x` (exact). A
    /// non-finite `x` (NaN or an infinity) has no real value to contain and
    /// gives the whole line.
    pub fn point(x: Float) -> Interval {
        if !x.is_finite() {
            return Interval::whole(x.prec());
        }
        let lo = x.clone();
        Interval::from_ends(lo, x)
    }

    /// The lower end (rounded down when it was computed).
    pub fn lo(&self) -> &Float {
        &self.lo
    }

    /// The upper end (rounded up when it was computed).
    pub fn hi(&self) -> &Float {
        &self.hi
    }

    /// The working precision of this interval in bits.
    pub fn prec(&self) -> u32 {
        self.lo.prec().max(self.hi.prec())
    }

    /// `true` when `lo == hi` (a single real number).
    pub fn is_point(&self) -> bool {
        self.lo == self.hi
    }

    /// `true` when both ends are finite.
    pub fn is_bounded(&self) -> bool {
        self.lo.is_finite() && self.hi.is_finite()
    }

    /// Sum: `[a.lo + b.lo, a.hi + b.hi]`, rounded outwards, at the larger precision.
    pub fn add(&self, other: &Interval) -> Interval {
        let prec = self.prec().max(other.prec());
        Interval::from_ends(
            rounded(prec, &self.lo + &other.lo, Round::Down),
            rounded(prec, &self.hi + &other.hi, Round::Up),
        )
    }

    /// Difference: `[a.lo - b.hi, a.hi - b.lo]`, rounded outwards, at the larger
    /// precision.
    pub fn sub(&self, other: &Interval) -> Interval {
        let prec = self.prec().max(other.prec());
        Interval::from_ends(
            rounded(prec, &self.lo - &other.hi, Round::Down),
            rounded(prec, &self.hi - &other.lo, Round::Up),
        )
    }

    /// Product: the smallest and largest of the four end-point products, the
    /// former rounded down and the latter up, at the larger precision.
    /// Zero times an infinite end counts as zero (the infinite end is not a
    /// member of the interval), so e.g. `[0, 0] * [-inf, +inf] = [0, 0]`.
    pub fn mul(&self, other: &Interval) -> Interval {
        let prec = self.prec().max(other.prec());
        let (a, b) = (self, other);
        let corners = |round| {
            [
                mul_end(&a.lo, &b.lo, prec, round),
                mul_end(&a.lo, &b.hi, prec, round),
                mul_end(&a.hi, &b.lo, prec, round),
                mul_end(&a.hi, &b.hi, prec, round),
            ]
        };
        Interval::from_ends(min_of(corners(Round::Down)), max_of(corners(Round::Up)))
    }

    /// `true` when `0` is a member of the interval.
    pub fn contains_zero(&self) -> bool {
        self.lo <= 0 && self.hi >= 0
    }

    /// Quotient `a / b` at the larger precision.
    ///
    /// When the divisor contains zero (including the point `[0, 0]`) the set
    /// `{x / y : x in a, y in b, y != 0}` is unbounded or undefined, and the
    /// result is the whole line `[-inf, +inf]`: always a valid enclosure,
    /// never NaN. Otherwise, for bounded operands the result is the hull of
    /// the four end-point quotients, each rounded in its own direction (one
    /// rounding per end); with an unbounded operand it is `a * (1 / b)`.
    pub fn div(&self, other: &Interval) -> Interval {
        let prec = self.prec().max(other.prec());
        if other.contains_zero() {
            return Interval::whole(prec);
        }
        if !(self.is_bounded() && other.is_bounded()) {
            return self.mul(&other.recip());
        }
        let (a, b) = (self, other);
        let corners = |round| {
            [
                rounded(prec, &a.lo / &b.lo, round),
                rounded(prec, &a.lo / &b.hi, round),
                rounded(prec, &a.hi / &b.lo, round),
                rounded(prec, &a.hi / &b.hi, round),
            ]
        };
        Interval::from_ends(min_of(corners(Round::Down)), max_of(corners(Round::Up)))
    }

    /// Reciprocal `1 / a`: `[1 / hi, 1 / lo]` rounded outwards when `a` does not
    /// contain zero (`1 / inf = 0`); the whole line when it does.
    pub fn recip(&self) -> Interval {
        let prec = self.prec();
        if self.contains_zero() {
            return Interval::whole(prec);
        }
        Interval::from_ends(
            rounded(prec, 1 / &self.hi, Round::Down),
            rounded(prec, 1 / &self.lo, Round::Up),
        )
    }

    /// Negation `[-hi, -lo]` (exact).
    pub fn neg(&self) -> Interval {
        Interval::from_ends(-self.hi.clone(), -self.lo.clone())
    }

    /// Exponential `[exp(lo), exp(hi)]`, rounded outwards (exp is increasing).
    /// `exp(-inf) = 0`; an upper end beyond the exponent range of MPFR becomes
    /// `+inf` and a lower end that underflows becomes `0`, both still valid ends.
    pub fn exp(&self) -> Interval {
        let prec = self.prec();
        Interval::from_ends(
            rounded(prec, self.lo.exp_ref(), Round::Down),
            rounded(prec, self.hi.exp_ref(), Round::Up),
        )
    }

    /// Hyperbolic tangent `[tanh(lo), tanh(hi)]`, rounded outwards (tanh is
    /// increasing; `tanh(+-inf) = +-1`).
    pub fn tanh(&self) -> Interval {
        let prec = self.prec();
        Interval::from_ends(
            rounded(prec, self.lo.tanh_ref(), Round::Down),
            rounded(prec, self.hi.tanh_ref(), Round::Up),
        )
    }

    /// `sech^2 = 1 / cosh^2`, the derivative of tanh, enclosed without the cancellation
    /// of `1 - tanh^2` (whose width near saturation is that of 1, far above the value):
    /// cosh is even and increasing in `|x|`, so with `[a, b]` the range of `|x|`,
    /// `cosh` lies in `[cosh a, cosh b]` (rounded outwards) and the rest is outward
    /// interval arithmetic. Relative width stays `O(2^-prec)` at any `x`.
    pub fn sech_squared(&self) -> Interval {
        let prec = self.prec();
        let (a, b) = if self.lo >= 0 {
            (self.lo.clone(), self.hi.clone())
        } else if self.hi <= 0 {
            (-self.hi.clone(), -self.lo.clone())
        } else {
            let m = if -self.lo.clone() > self.hi {
                -self.lo.clone()
            } else {
                self.hi.clone()
            };
            (Float::with_val(prec, 0), m)
        };
        let cosh = Interval::from_ends(
            rounded(prec, a.cosh_ref(), Round::Down),
            rounded(prec, b.cosh_ref(), Round::Up),
        );
        (&cosh * &cosh).recip()
    }

    /// Natural logarithm of the part of the interval inside the domain
    /// `(0, +inf)`.
    ///
    /// Returns `None` when `hi <= 0`: no point of the interval has a real
    /// logarithm, so there is nothing to enclose (the empty set, which this type
    /// does not represent). When `lo <= 0 < hi` the lower end is `-inf` (the
    /// logarithm is unbounded below near 0) and the upper end is `ln(hi)`
    /// rounded up. Otherwise `[ln(lo), ln(hi)]`, rounded outwards.
    pub fn ln(&self) -> Option<Interval> {
        let prec = self.prec();
        if self.hi <= 0 {
            return None;
        }
        let lo = if self.lo <= 0 {
            Float::with_val(prec, Special::NegInfinity)
        } else {
            rounded(prec, self.lo.ln_ref(), Round::Down)
        };
        Some(Interval::from_ends(
            lo,
            rounded(prec, self.hi.ln_ref(), Round::Up),
        ))
    }

    /// Square root of the part of the interval inside the domain `[0, +inf)`.
    ///
    /// Returns `None` when `hi < 0` (no point has a real square root). When
    /// `lo < 0 <= hi` the lower end is `0`. Otherwise `[sqrt(lo), sqrt(hi)]`,
    /// rounded outwards.
    pub fn sqrt(&self) -> Option<Interval> {
        let prec = self.prec();
        if self.hi < 0 {
            return None;
        }
        let lo = if self.lo <= 0 {
            Float::with_val(prec, 0)
        } else {
            rounded(prec, self.lo.sqrt_ref(), Round::Down)
        };
        Some(Interval::from_ends(
            lo,
            rounded(prec, self.hi.sqrt_ref(), Round::Up),
        ))
    }

    /// Enclosure of `max(x, y)` for `x` in `self`, `y` in `other`:
    /// `[max(a.lo, b.lo), max(a.hi, b.hi)]` (exact, at the larger precision).
    pub fn max(&self, other: &Interval) -> Interval {
        let prec = self.prec().max(other.prec());
        let pick = |x: &Float, y: &Float| Float::with_val(prec, if x >= y { x } else { y });
        Interval::from_ends(pick(&self.lo, &other.lo), pick(&self.hi, &other.hi))
    }

    /// Smallest interval containing both `self` and `other` (their convex hull),
    /// at the larger precision (exact).
    pub fn hull(&self, other: &Interval) -> Interval {
        let prec = self.prec().max(other.prec());
        let lo = if self.lo <= other.lo {
            &self.lo
        } else {
            &other.lo
        };
        let hi = if self.hi >= other.hi {
            &self.hi
        } else {
            &other.hi
        };
        Interval::from_ends(Float::with_val(prec, lo), Float::with_val(prec, hi))
    }

    /// Sum of a slice, accumulated left to right with outward rounding, at
    /// `prec` bits or the largest precision among the terms if that is larger.
    /// The empty sum is `[0, 0]`.
    ///
    /// # Panics
    /// If `prec` is outside `rug::float::prec_min()..=rug::float::prec_max()`.
    pub fn sum(terms: &[Interval], prec: u32) -> Interval {
        terms.iter().fold(Interval::zero(prec), |acc, t| acc.add(t))
    }

    /// Dot product `sum_i a_i * b_i` at `prec` bits (or more, as for
    /// [`Interval::sum`]). Returns `None` when the slices differ in length.
    ///
    /// # Panics
    /// If `prec` is outside `rug::float::prec_min()..=rug::float::prec_max()`.
    pub fn dot(a: &[Interval], b: &[Interval], prec: u32) -> Option<Interval> {
        (a.len() == b.len()).then(|| {
            a.iter()
                .zip(b)
                .fold(Interval::zero(prec), |acc, (x, y)| acc.add(&x.mul(y)))
        })
    }

    /// `true` when the two intervals share at least one point. Two enclosures
    /// of the same real number always overlap; disjoint enclosures prove that
    /// they enclose different numbers.
    pub fn overlaps(&self, other: &Interval) -> bool {
        self.lo <= other.hi && other.lo <= self.hi
    }

    /// `true` when every point of `other` is in `self`.
    pub fn contains(&self, other: &Interval) -> bool {
        self.lo <= other.lo && other.hi <= self.hi
    }

    /// `true` when the real number `x` is in the interval (`false` for NaN and
    /// for infinities, which are never members).
    pub fn contains_float(&self, x: &Float) -> bool {
        x.is_finite() && self.lo <= *x && *x <= self.hi
    }

    /// `true` when the real number `x` is in the interval (`false` for NaN and
    /// for infinities, which are never members).
    pub fn contains_f64(&self, x: f64) -> bool {
        x.is_finite() && self.lo <= x && self.hi >= x
    }

    /// The lower end rounded down to `f64` (so it is still a valid lower bound;
    /// `-inf` if it is below `-f64::MAX`).
    pub fn lo_f64(&self) -> f64 {
        self.lo.to_f64_round(Round::Down)
    }

    /// The upper end rounded up to `f64` (still a valid upper bound; `+inf` if it
    /// is above `f64::MAX`).
    pub fn hi_f64(&self) -> f64 {
        self.hi.to_f64_round(Round::Up)
    }

    /// A representative point of the interval at its precision, rounded to
    /// nearest: `(lo + hi) / 2` for a bounded interval, `0` for the whole line,
    /// and the finite end for a half line. For bounded intervals it is a member
    /// (the midpoint lies between two floats of this precision, which are
    /// members).
    pub fn mid(&self) -> Float {
        let prec = self.prec();
        match (self.lo.is_finite(), self.hi.is_finite()) {
            (true, true) => {
                let sum = Float::with_val(prec + 1, &self.lo + &self.hi);
                Float::with_val(prec, sum / 2u32)
            }
            (false, false) => Float::with_val(prec, 0),
            (true, false) => self.lo.clone(),
            (false, true) => self.hi.clone(),
        }
    }

    /// [`Interval::mid`] rounded to the nearest `f64` (not guaranteed to be a
    /// member when the interval is narrower than an `f64` ulp; `+-inf` if the
    /// midpoint is beyond the `f64` range).
    pub fn mid_f64(&self) -> f64 {
        self.mid().to_f64()
    }

    /// Width `hi - lo` rounded up to `f64` (an upper bound on the true width;
    /// `+inf` for an unbounded interval).
    pub fn width_f64(&self) -> f64 {
        let w = rounded(self.prec(), &self.hi - &self.lo, Round::Up);
        w.to_f64_round(Round::Up)
    }

    /// Magnitude `max(|lo|, |hi|)` (the largest absolute value of a member),
    /// rounded up to `f64`.
    pub fn mag(&self) -> f64 {
        let lo = self.lo.to_f64_round(Round::Down).abs();
        let hi = self.hi.to_f64_round(Round::Up).abs();
        lo.max(hi)
    }
}

/// Implements a binary operator for every combination of owned and borrowed
/// operands by delegating to the inherent method of the same meaning.
macro_rules! binary_op {
    ($trait:ident, $method:ident) => {
        impl $trait<&Interval> for &Interval {
            type Output = Interval;
            fn $method(self, rhs: &Interval) -> Interval {
                Interval::$method(self, rhs)
            }
        }
        impl $trait<Interval> for &Interval {
            type Output = Interval;
            fn $method(self, rhs: Interval) -> Interval {
                Interval::$method(self, &rhs)
            }
        }
        impl $trait<&Interval> for Interval {
            type Output = Interval;
            fn $method(self, rhs: &Interval) -> Interval {
                Interval::$method(&self, rhs)
            }
        }
        impl $trait<Interval> for Interval {
            type Output = Interval;
            fn $method(self, rhs: Interval) -> Interval {
                Interval::$method(&self, &rhs)
            }
        }
    };
}

binary_op!(Add, add);
binary_op!(Sub, sub);
binary_op!(Mul, mul);
binary_op!(Div, div);

impl Neg for &Interval {
    type Output = Interval;
    fn neg(self) -> Interval {
        Interval::neg(self)
    }
}

impl Neg for Interval {
    type Output = Interval;
    fn neg(self) -> Interval {
        Interval::neg(&self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sech_squared_encloses_and_stays_tight_at_saturation() {
        for x in [-3.0, -0.5, 0.0, 1e-9, 0.75, 20.0, 50.0, 400.0] {
            let iv = Interval::from_f64(x, 128).sech_squared();
            // Against 1 / cosh^2 at 256 bits (the point's true value lies inside).
            let c = Float::with_val(256, x).cosh();
            let want = Float::with_val(256, 1) / (Float::with_val(256, &c * &c));
            assert!(iv.contains_float(&want), "{x}: {iv:?}");
            // Relative width ~2^-120 even where sech^2 ~ e^{-2x} (1 - tanh^2 would
            // have width ~2^-128 absolute, i.e. relative 1e+300 at x = 400).
            let rel = (Float::with_val(256, iv.hi() - iv.lo()) / &want).to_f64();
            assert!(rel < 1e-30, "{x}: relative width {rel:e}");
        }
        // Straddling zero: [0, max |x|] for |x|, so the top is sech^2(0) = 1.
        let iv = Interval::from_f64_ends(-1.0, 2.0, 64)
            .unwrap()
            .sech_squared();
        assert!(iv.contains_f64(1.0) && iv.contains_f64(1.0 / 2f64.cosh().powi(2)));
    }

    #[test]
    fn from_ends_repairs_towards_the_whole_line() {
        let p = 32;
        let nan = Float::with_val(p, Special::Nan);
        let one = Float::with_val(p, 1);
        let repaired = Interval::from_ends(nan.clone(), one.clone());
        assert!(repaired.lo().is_infinite() && *repaired.hi() == 1);
        let repaired = Interval::from_ends(one.clone(), nan);
        assert!(*repaired.lo() == 1 && repaired.hi().is_infinite());
        let crossed = Interval::from_ends(one, Float::with_val(p, -1));
        assert_eq!(crossed, Interval::whole(p));
        let pos_inf = Float::with_val(p, Special::Infinity);
        let repaired = Interval::from_ends(pos_inf.clone(), pos_inf);
        assert!(repaired.lo().is_infinite() && repaired.lo().is_sign_negative());
    }

    #[test]
    fn mid_of_a_narrow_interval_is_a_member() {
        for prec in [2, 7, 53, 128] {
            let third = &Interval::one(prec) / &Interval::from_f64(3.0, prec);
            let m = third.mid();
            assert!(third.contains_float(&m), "{prec}: {third:?} {m}");
            let tiny = Interval::from_f64(f64::MIN_POSITIVE, prec).hull(&third);
            assert!(tiny.contains_float(&tiny.mid()));
        }
    }

    #[test]
    fn products_with_zero_and_infinite_ends() {
        let p = 53;
        let half_line =
            Interval::from_ends(Float::with_val(p, 0), Float::with_val(p, Special::Infinity));
        let neg = Interval::from_f64_ends(-2.0, -1.0, p).unwrap();
        let prod = &half_line * &neg;
        assert!(prod.lo().is_infinite() && *prod.hi() == 0);
        assert!(!prod.hi().is_nan());
    }
}
