//! Forward-mode dual numbers over [`Interval`]s: the independent derivative
//! oracle of docs/math.md §5.2.
//!
//! A [`Dual`] `(val, der)` represents a function `u` of one real parameter `t`
//! at a fixed `t0`: `val` encloses `u(t0)` and `der` encloses `u'(t0)`. Each
//! operation applies the elementary rule of differentiation (sum, product,
//! quotient, chain rule for `exp` and `ln`) in interval arithmetic, so when the
//! inputs' enclosures are correct, the output's are too: `der` contains the
//! true derivative. No closed-form gradient of any composite formula is used;
//! a derivative obtained this way is therefore independent evidence against
//! which hand-derived gradient formulas are checked.

use std::ops::{Add, Div, Mul, Neg, Sub};

use crate::interval::Interval;

/// A value together with its derivative with respect to one seeded input, both
/// as enclosures.
#[derive(Clone, Debug, PartialEq)]
pub struct Dual {
    /// Enclosure of the value `u(t0)`.
    pub val: Interval,
    /// Enclosure of the derivative `u'(t0)`.
    pub der: Interval,
}

impl Dual {
    /// A quantity that does not depend on the seeded input: derivative `[0, 0]`
    /// (at the value's precision).
    pub fn constant(val: Interval) -> Dual {
        let der = Interval::zero(val.prec());
        Dual { val, der }
    }

    /// The seeded input itself: derivative `[1, 1]` (at the value's precision).
    pub fn variable(val: Interval) -> Dual {
        let der = Interval::one(val.prec());
        Dual { val, der }
    }

    /// Sum rule: `(u + v)' = u' + v'`.
    pub fn add(&self, other: &Dual) -> Dual {
        Dual {
            val: &self.val + &other.val,
            der: &self.der + &other.der,
        }
    }

    /// Difference rule: `(u - v)' = u' - v'`.
    pub fn sub(&self, other: &Dual) -> Dual {
        Dual {
            val: &self.val - &other.val,
            der: &self.der - &other.der,
        }
    }

    /// Product rule: `(u v)' = u' v + u v'`.
    pub fn mul(&self, other: &Dual) -> Dual {
        Dual {
            val: &self.val * &other.val,
            der: &self.der * &other.val + &self.val * &other.der,
        }
    }

    /// Quotient rule in the form `(u / v)' = (u' - (u / v) v') / v`.
    /// When `v`'s enclosure contains zero both parts are the whole line (see
    /// [`Interval::div`]).
    pub fn div(&self, other: &Dual) -> Dual {
        let val = &self.val / &other.val;
        let der = (&self.der - &val * &other.der) / &other.val;
        Dual { val, der }
    }

    /// Negation: `(-u)' = -u'`.
    pub fn neg(&self) -> Dual {
        Dual {
            val: -&self.val,
            der: -&self.der,
        }
    }

    /// Chain rule for the exponential: `(exp u)' = exp(u) u'`.
    pub fn exp(&self) -> Dual {
        let val = self.val.exp();
        let der = &val * &self.der;
        Dual { val, der }
    }

    /// Chain rule for the hyperbolic tangent: `(tanh u)' = sech^2(u) u' = (1 - tanh^2 u) u'`.
    pub fn tanh(&self) -> Dual {
        let val = self.val.tanh();
        // 1 - tanh^2 as sech^2 (no cancellation near saturation).
        let der = &self.val.sech_squared() * &self.der;
        Dual { val, der }
    }

    /// Chain rule for the natural logarithm: `(ln u)' = u' / u`.
    /// `None` when no point of `u`'s enclosure is positive (as
    /// [`Interval::ln`]); when the enclosure reaches down to zero or below, the
    /// derivative is the whole line.
    pub fn ln(&self) -> Option<Dual> {
        let val = self.val.ln()?;
        let der = &self.der / &self.val;
        Some(Dual { val, der })
    }
}

/// Implements a binary operator on `Dual` for owned and borrowed operands by
/// delegating to the inherent method of the same meaning.
macro_rules! binary_op {
    ($trait:ident, $method:ident) => {
        impl $trait<&Dual> for &Dual {
            type Output = Dual;
            fn $method(self, rhs: &Dual) -> Dual {
                Dual::$method(self, rhs)
            }
        }
        impl $trait<Dual> for &Dual {
            type Output = Dual;
            fn $method(self, rhs: Dual) -> Dual {
                Dual::$method(self, &rhs)
            }
        }
        impl $trait<&Dual> for Dual {
            type Output = Dual;
            fn $method(self, rhs: &Dual) -> Dual {
                Dual::$method(&self, rhs)
            }
        }
        impl $trait<Dual> for Dual {
            type Output = Dual;
            fn $method(self, rhs: Dual) -> Dual {
                Dual::$method(&self, &rhs)
            }
        }
    };
}

binary_op!(Add, add);
binary_op!(Sub, sub);
binary_op!(Mul, mul);
binary_op!(Div, div);

impl Neg for &Dual {
    type Output = Dual;
    fn neg(self) -> Dual {
        Dual::neg(self)
    }
}

impl Neg for Dual {
    type Output = Dual;
    fn neg(self) -> Dual {
        Dual::neg(&self)
    }
}
