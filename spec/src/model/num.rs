//! [`Num`]: the arithmetic the model is written over ([`LemmaScalar`] plus square
//! root, logarithm and ReLU), with its implementations for [`Interval`],
//! [`Dual`] and [`Ball`], and the model's constants lifted into it.

use rug::float::{Constant, Round};
use rug::{Float, Rational};

use crate::ball::Ball;
use crate::dual::Dual;
use crate::interval::Interval;
use crate::linalg::{degenerate, LemmaScalar, Res};

use super::config::*;

/// [`LemmaScalar`] plus what the model needs beyond it; implemented by [`Interval`]
/// and [`Dual`] (the MPFR reference and its oracle) and by [`Ball`] (the fast
/// double-double enclosure for large `n`).
pub trait Num: LemmaScalar + Send + Sync {
    /// A constant (no dependence on any seeded input).
    fn constant(x: Interval) -> Self;
    /// The midpoint of the value as an `f64` (to choose a softmax shift).
    fn mid_f64(&self) -> f64;
    /// A point of the value (exact, no width, no derivative): a softmax shift.
    fn midpoint(&self) -> Self;
    /// Square root; `None` when no point of the value is `>= 0` (or, for a
    /// dual number, when the value may be `0`, where the derivative is
    /// undefined).
    fn sqrt(&self) -> Option<Self>;
    /// Natural logarithm; `None` when no point of the value is positive.
    fn ln(&self) -> Option<Self>;
    /// `max(x, 0)` with derivative `0` at `0`.
    fn relu(&self) -> Self;
    /// The set of `relu'(x)` over the value (`relu'(0) = 0`): `1`, `0` or `[0, 1]`.
    fn relu_slope(&self) -> Self;
}

/// The set `{relu'(x) : x in u}` with `relu'(0) = 0`: `[1, 1]`, `[0, 0]` or
/// `[0, 1]`.
pub(super) fn relu_slope(u: &Interval) -> Interval {
    let prec = u.prec();
    if *u.lo() > 0 {
        Interval::one(prec)
    } else if *u.hi() <= 0 {
        Interval::zero(prec)
    } else {
        Interval::zero(prec).hull(&Interval::one(prec))
    }
}

impl Num for Interval {
    fn constant(x: Interval) -> Self {
        x
    }
    fn mid_f64(&self) -> f64 {
        Interval::mid_f64(self)
    }
    fn midpoint(&self) -> Self {
        Interval::point(self.mid())
    }
    fn sqrt(&self) -> Option<Self> {
        Interval::sqrt(self)
    }
    fn ln(&self) -> Option<Self> {
        Interval::ln(self)
    }
    fn relu(&self) -> Self {
        self.max(&Interval::zero(self.prec()))
    }
    fn relu_slope(&self) -> Self {
        relu_slope(self)
    }
}

impl Num for Dual {
    fn constant(x: Interval) -> Self {
        Dual::constant(x)
    }
    fn mid_f64(&self) -> f64 {
        self.val.mid_f64()
    }
    fn midpoint(&self) -> Self {
        Dual::constant(Interval::point(self.val.mid()))
    }
    fn sqrt(&self) -> Option<Self> {
        // (sqrt u)' = u' / (2 sqrt u), defined only when u is bounded away from 0.
        if *self.val.lo() <= 0 {
            return None;
        }
        let val = self.val.sqrt()?;
        let der = &self.der / (&val + &val);
        Some(Dual { val, der })
    }
    fn ln(&self) -> Option<Self> {
        Dual::ln(self)
    }
    fn relu(&self) -> Self {
        let slope = relu_slope(&self.val);
        Dual {
            val: self.val.max(&Interval::zero(self.val.prec())),
            der: if slope.is_point() {
                &slope * &self.der
            } else {
                // Either slope: the derivative is u' or 0.
                self.der.hull(&Interval::zero(self.der.prec()))
            },
        }
    }
    fn relu_slope(&self) -> Self {
        Dual::constant(relu_slope(&self.val))
    }
}

impl Num for Ball {
    fn constant(x: Interval) -> Self {
        // A constant's enclosure is bounded (it comes from a rational or from MPFR's
        // pi); an unbounded one would have failed earlier, so the whole line's
        // stand-in (an infinite radius) only keeps the type total.
        Ball::from_interval(&x).unwrap_or_else(Ball::whole)
    }
    fn mid_f64(&self) -> f64 {
        Ball::mid_f64(self)
    }
    fn midpoint(&self) -> Self {
        Ball::midpoint(self)
    }
    fn sqrt(&self) -> Option<Self> {
        Ball::sqrt(self)
    }
    fn ln(&self) -> Option<Self> {
        Ball::ln(self)
    }
    fn relu(&self) -> Self {
        Ball::relu(self)
    }
    fn relu_slope(&self) -> Self {
        if self.lo_f64() > 0.0 {
            Ball::ONE
        } else if self.hi_f64() <= 0.0 {
            Ball::ZERO
        } else {
            // [0, 1].
            Ball::ONE.scale_pow2(-1).widened(0.5)
        }
    }
}

/// The constants of the model as enclosures in `T` (lifted once from MPFR
/// enclosures at the working precision).
pub(super) struct Consts<T> {
    pub(super) prec: u32,
    /// `1e-5 = 1/100000` (layer norm).
    pub(super) eps: T,
    /// `sqrt(2/pi)` (GELU).
    pub(super) gelu_c: T,
    /// `0.044715` (GELU).
    pub(super) gelu_k: T,
    /// `1 / sqrt(d_head)`.
    pub(super) tau: T,
    /// `1 / n`.
    pub(super) inv_n: T,
    /// `1/2` and `3` (GELU and its slope).
    pub(super) half: T,
    pub(super) three: T,
}

impl<T: Num> Consts<T> {
    pub(super) fn new(cfg: &Config, n: usize, prec: u32) -> Res<Consts<T>> {
        let rat = |num: u64, den: u64| Interval::from_rational(&Rational::from((num, den)), prec);
        let pi = |round| Interval::point(Float::with_val_round(prec, Constant::Pi, round).0);
        let pi = pi(Round::Down).hull(&pi(Round::Up));
        let sqrt = |x: &Interval| {
            x.sqrt()
                .ok_or_else(|| degenerate("square root of a negative"))
        };
        let gelu_c = sqrt(&(Interval::from_f64(2.0, prec) / pi))?;
        let tau = sqrt(&Interval::from_f64(cfg.d_head() as f64, prec))?.recip();
        Ok(Consts {
            prec,
            eps: T::constant(rat(1, 100_000)),
            gelu_c: T::constant(gelu_c),
            gelu_k: T::constant(rat(44_715, 1_000_000)),
            tau: T::constant(tau),
            inv_n: T::constant(rat(1, n as u64)),
            half: T::constant(rat(1, 2)),
            three: T::constant(rat(3, 1)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relu_slope_covers_the_three_cases() {
        let p = 64;
        let iv = |lo: f64, hi: f64| Interval::from_f64_ends(lo, hi, p).unwrap();
        assert_eq!(relu_slope(&iv(0.5, 1.0)), Interval::one(p));
        assert_eq!(relu_slope(&iv(-1.0, 0.0)), Interval::zero(p));
        assert_eq!(relu_slope(&iv(0.0, 0.0)), Interval::zero(p));
        assert_eq!(relu_slope(&iv(-1.0, 1.0)), iv(0.0, 1.0));
    }

    #[test]
    fn dual_relu_at_zero_has_zero_derivative() {
        let z = Dual::variable(Interval::zero(64));
        assert_eq!(Num::relu(&z).der, Interval::zero(64));
        let pos = Dual::variable(Interval::from_f64(0.25, 64));
        assert_eq!(Num::relu(&pos).der, Interval::one(64));
    }
}
