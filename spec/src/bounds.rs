//! Certified comparison of a measured quantity with a stated bound: the check
//! behind the register's rows for inequalities (entry bounds, derivative
//! bounds, the error of a Riemann sum), where a lemma states `|q| <= b`
//! rather than an identity.
//!
//! The quantity and the bound are both enclosures; [`BoundCheck`] keeps the
//! enclosure of their ratio `|q| / b`. The bound is proven on an instance when
//! the ratio's upper end is at most `1`, and proven *wrong* when its lower end
//! exceeds `1`; anything in between decides nothing.

use crate::interval::Interval;
use crate::linalg::{degenerate, Mat, Res};

/// The ratio `|q| / b` of a measured quantity to a stated bound, enclosed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BoundCheck {
    /// Certified lower bound on `|q| / b` (rounded down).
    pub ratio_lo: f64,
    /// Certified upper bound on `|q| / b` (rounded up).
    pub ratio_hi: f64,
}

impl BoundCheck {
    /// `|q| / b` for an enclosure `q` of the quantity and `b` of the bound,
    /// which must be positive ([`crate::attention::SpecError::Degenerate`]
    /// otherwise).
    pub fn new(q: &Interval, b: &Interval) -> Res<BoundCheck> {
        if b.lo_f64() <= 0.0 {
            return Err(degenerate("a stated bound is not positive"));
        }
        let ratio = abs(q).div(b);
        Ok(BoundCheck {
            ratio_lo: ratio.lo_f64(),
            ratio_hi: ratio.hi_f64(),
        })
    }

    /// The largest of `|q_ij| / b` over a matrix `q`.
    pub fn of_max(q: &Mat<Interval>, b: &Interval) -> Res<BoundCheck> {
        let parts = q
            .iter()
            .map(|x| BoundCheck::new(x, b))
            .collect::<Res<Vec<_>>>()?;
        Ok(BoundCheck::worst(&parts))
    }

    /// The worst of several checks (the largest ratios); a check with ratio
    /// `0` when `parts` is empty.
    pub fn worst(parts: &[BoundCheck]) -> BoundCheck {
        parts.iter().fold(
            BoundCheck {
                ratio_lo: 0.0,
                ratio_hi: 0.0,
            },
            |a, p| BoundCheck {
                ratio_lo: a.ratio_lo.max(p.ratio_lo),
                ratio_hi: a.ratio_hi.max(p.ratio_hi),
            },
        )
    }

    /// The bound is proven on the instance: `|q| <= b` for every value in the
    /// enclosures.
    pub fn holds(&self) -> bool {
        self.ratio_hi <= 1.0
    }

    /// The bound is proven wrong on the instance: `|q| > b` for every value
    /// in the enclosures.
    pub fn violated(&self) -> bool {
        self.ratio_lo > 1.0
    }
}

/// An enclosure of `|x|` for `x` in `q` (`max(x, -x)`, exact).
pub fn abs(q: &Interval) -> Interval {
    q.max(&q.neg())
}

/// An enclosure of `max_ij |m_ij|` (the entrywise infinity norm
/// `||m||_inf` of the papers).
pub fn max_abs(m: &Mat<Interval>, prec: u32) -> Interval {
    m.iter()
        .map(abs)
        .fold(Interval::zero(prec), |a, x| a.max(&x))
}
