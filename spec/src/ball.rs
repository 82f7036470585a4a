//! Double-double midpoint-radius balls: a fast enclosure type for references too large
//! for MPFR (docs/math.md §5.2: an f64 exact computation plus a rigorous rounding bound
//! is an enclosure too; here the computation runs in about 106 bits and carries its
//! bound along).
//!
//! A [`Ball`] `{hi, lo, rad}` stands for the real interval `[m - rad, m + rad]` with
//! `m = hi + lo` (the exact sum of two `f64`s, `|lo| <= ulp(hi)`). Every operation
//! returns a ball that contains the exact result of the operation applied to any
//! members of its operands, like [`crate::interval::Interval`] but in fixed precision:
//!
//! * the midpoint is computed by error-free transformations (`two_sum`, `two_prod` by
//!   FMA) with relative error about `4 u^2`, `u = 2^-53`; the radius adds a generous
//!   `2^-100` (64 `u^2`) of the operands' magnitudes per operation, plus `2^-1000`
//!   absolute for underflow, so no tight error analysis of the double-double steps
//!   is relied on;
//! * radii are computed in `f64` round-to-nearest and then enlarged by `1 + 2^-45`
//!   (plus the smallest subnormal), an upper bound for any radius expression of
//!   fewer than 256 non-negative terms;
//! * `exp`, `recip`, `sqrt` and `ln` are built from the ball `+` and `x` themselves
//!   (argument reduction by `ln 2 / 64` as a ball and a table of `2^(j/64)` balls from
//!   MPFR, Taylor series with its remainder in the radius, Newton-refined midpoints
//!   whose residuals are enclosed), so no libm accuracy claim enters: `f64` library
//!   functions only give starting guesses.
//!
//! Nothing here trusts the FPU beyond IEEE 754 round-to-nearest `+ - x /`, `sqrt` and
//! `fma`. A ball whose radius is infinite or whose midpoint left the `f64` range is
//! useless but still "contains" its value; operations that would need a bounded
//! operand (reciprocal of a ball containing 0, `sqrt`/`ln` of a ball reaching 0 or
//! below, `exp` beyond 709) return `None`. The tests compare every operation with
//! 256-bit MPFR intervals.

use crate::interval::Interval;
use rug::float::Round;
use rug::{Float, Rational};

/// `2^e` for a normal exponent `e`, exactly.
const fn pow2(e: i64) -> f64 {
    f64::from_bits(((1023 + e) as u64) << 52)
}
/// `2^-100`: the relative rounding allowance of one double-double operation.
const ROUND: f64 = pow2(-100);
/// `2^-1000`: the absolute allowance for underflow in one operation.
const TINY: f64 = pow2(-1000);
/// `1 + 2^-45`: enlarges a radius computed in round-to-nearest into an upper bound.
const UP: f64 = 1.0 + pow2(-45);
/// `1 - 2^-45`: shrinks a positive lower bound computed in round-to-nearest.
const DOWN: f64 = 1.0 - pow2(-45);

/// A radius expression rounded to nearest, made an upper bound: `x (1 + 2^-45)` plus
/// the smallest normal (which also covers a few underflowing steps inside `x`); a NaN
/// (`0 * inf` from an unbounded operand) becomes `+inf`, the honest radius.
#[inline]
fn up(x: f64) -> f64 {
    if x.is_nan() {
        f64::INFINITY
    } else {
        x * UP + f64::MIN_POSITIVE
    }
}

/// A positive quantity rounded to nearest, made a lower bound (0 if it is tiny).
#[inline]
fn down(x: f64) -> f64 {
    if x > 1e-290 {
        x * DOWN
    } else {
        0.0
    }
}

/// `a + b = s + e` exactly (Knuth).
#[inline]
fn two_sum(a: f64, b: f64) -> (f64, f64) {
    let s = a + b;
    let bb = s - a;
    (s, (a - (s - bb)) + (b - bb))
}

/// `a b = p + e` exactly unless the product underflows (FMA).
#[inline]
fn two_prod(a: f64, b: f64) -> (f64, f64) {
    let p = a * b;
    (p, a.mul_add(b, -p))
}

/// A double-double ball `[hi + lo - rad, hi + lo + rad]`; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ball {
    hi: f64,
    lo: f64,
    rad: f64,
}

impl Ball {
    /// The point `x` (exact; `None` for NaN or infinities).
    pub fn from_f64(x: f64) -> Option<Ball> {
        x.is_finite().then_some(Ball {
            hi: x,
            lo: 0.0,
            rad: 0.0,
        })
    }

    /// Zero.
    pub const ZERO: Ball = Ball {
        hi: 0.0,
        lo: 0.0,
        rad: 0.0,
    };

    /// One.
    pub const ONE: Ball = Ball {
        hi: 1.0,
        lo: 0.0,
        rad: 0.0,
    };

    /// A ball containing the interval `iv` (its ends rounded outward through a
    /// 256-bit midpoint); `None` for an unbounded interval or one beyond the `f64`
    /// range.
    pub fn from_interval(iv: &Interval) -> Option<Ball> {
        if !iv.is_bounded() {
            return None;
        }
        let prec = iv.prec().max(256) + 8;
        let mid = Float::with_val(prec, iv.lo() + iv.hi()) / 2u32;
        let hi = mid.to_f64();
        let rest = Float::with_val(prec, &mid - hi);
        let lo = rest.to_f64();
        let miss = Float::with_val(prec, &rest - lo).abs();
        let half = Float::with_val(prec, iv.hi() - iv.lo()) / 2u32;
        let rad = Float::with_val(prec, half + miss).to_f64_round(Round::Up);
        let b = Ball {
            hi,
            lo,
            rad: up(rad),
        };
        b.is_finite().then_some(b)
    }

    /// A ball containing the rational `q`.
    pub fn from_rational(q: &Rational) -> Option<Ball> {
        let lo = Float::with_val_round(256, q, Round::Down).0;
        let hi = Float::with_val_round(256, q, Round::Up).0;
        Ball::from_interval(&Interval::point(lo).hull(&Interval::point(hi)))
    }

    /// The whole real line's stand-in: midpoint 0, infinite radius.
    pub fn whole() -> Ball {
        Ball {
            hi: 0.0,
            lo: 0.0,
            rad: f64::INFINITY,
        }
    }

    /// The same ball with its radius enlarged by `r >= 0`.
    pub fn widened(&self, r: f64) -> Ball {
        Ball {
            rad: up(self.rad + r),
            ..*self
        }
    }

    /// The midpoint's leading part (the nearest `f64` to the midpoint, up to a
    /// rounding of its low part).
    pub fn mid_f64(&self) -> f64 {
        self.hi + self.lo
    }

    /// The radius.
    pub fn rad(&self) -> f64 {
        self.rad
    }

    /// The same midpoint with radius 0 (a member of the ball).
    pub fn midpoint(&self) -> Ball {
        Ball { rad: 0.0, ..*self }
    }

    /// A lower bound on every member, as an `f64` (rounded down).
    pub fn lo_f64(&self) -> f64 {
        let m = self.hi + self.lo;
        (m - up(self.rad + m.abs() * f64::EPSILON)).next_down()
    }

    /// An upper bound on every member, as an `f64` (rounded up).
    pub fn hi_f64(&self) -> f64 {
        let m = self.hi + self.lo;
        (m + up(self.rad + m.abs() * f64::EPSILON)).next_up()
    }

    /// The ball as a 256-bit MPFR interval containing it.
    pub fn to_interval(&self) -> Interval {
        let prec = 256;
        let m = Float::with_val(prec, self.hi) + self.lo;
        let lo = Float::with_val_round(prec, &m - self.rad, Round::Down).0;
        let hi = Float::with_val_round(prec, &m + self.rad, Round::Up).0;
        Interval::point(lo).hull(&Interval::point(hi))
    }

    /// True when the midpoint and the radius are finite.
    pub fn is_finite(&self) -> bool {
        self.hi.is_finite() && self.lo.is_finite() && self.rad.is_finite()
    }

    /// An upper bound on `|x|` for every member `x`.
    pub fn mag(&self) -> f64 {
        up(self.hi.abs() * (1.0 + f64::EPSILON) + self.rad)
    }

    /// Builds `s + e` normalised (`|lo| <= ulp(hi) / 2`), with radius `rad`.
    #[inline]
    fn norm(s: f64, e: f64, rad: f64) -> Ball {
        let (hi, lo) = two_sum(s, e);
        Ball { hi, lo, rad }
    }

    /// `self + other`.
    pub fn add(&self, other: &Ball) -> Ball {
        let (s, e) = two_sum(self.hi, other.hi);
        let e = e + (self.lo + other.lo);
        let rad = up(self.rad + other.rad + ROUND * (self.hi.abs() + other.hi.abs()) + TINY);
        Ball::norm(s, e, rad)
    }

    /// `-self`.
    pub fn neg(&self) -> Ball {
        Ball {
            hi: -self.hi,
            lo: -self.lo,
            rad: self.rad,
        }
    }

    /// `self - other`.
    pub fn sub(&self, other: &Ball) -> Ball {
        self.add(&other.neg())
    }

    /// `self * other`: `|x y - a b| <= |a| r_b + |b| r_a + r_a r_b` for members
    /// `x, y` of balls around `a, b`.
    pub fn mul(&self, other: &Ball) -> Ball {
        let (p, e) = two_prod(self.hi, other.hi);
        let e = e + (self.hi * other.lo + self.lo * other.hi);
        let (ma, mb) = (
            self.hi.abs() * (1.0 + f64::EPSILON),
            other.hi.abs() * (1.0 + f64::EPSILON),
        );
        let rad =
            // (ma mb) ROUND, not ROUND ma mb: the allowance must not underflow first.
            up(ma * other.rad + mb * self.rad + self.rad * other.rad + (ma * mb) * ROUND + TINY);
        Ball::norm(p, e, rad)
    }

    /// `self * 2^k` (exact but for underflow, which the radius covers): steps of
    /// exact powers of two within the normal range (`2^-1022 .. 2^1022`), each losing
    /// at most `2^-1075` per part to underflow, which `TINY` covers.
    pub fn scale_pow2(&self, k: i32) -> Ball {
        let (mut b, mut k) = (*self, k);
        while k != 0 {
            let step = k.clamp(-1022, 1022);
            let f = pow2(step as i64);
            b = Ball {
                hi: b.hi * f,
                lo: b.lo * f,
                rad: up(b.rad * f + TINY),
            };
            k -= step;
        }
        b
    }

    /// `1 / self`; `None` when the ball may contain 0 (or its magnitude is tiny).
    pub fn recip(&self) -> Option<Ball> {
        let m_lo = down(self.hi.abs() * (1.0 - f64::EPSILON));
        let gap = down(m_lo - self.rad);
        if gap.is_nan() || gap <= 0.0 || !self.is_finite() {
            return None;
        }
        // Midpoint: q0 = 1/hi, one Newton step q = q0 + q0 (1 - m q0) in double-double.
        let q0 = 1.0 / self.hi;
        let point = self.midpoint();
        let q0b = Ball::from_f64(q0)?;
        let resid0 = Ball::ONE.sub(&point.mul(&q0b));
        let q = q0b.add(&q0b.mul(&resid0.midpoint())).midpoint();
        // |1/m - q| = |1 - m q| / |m|; |1/x - 1/m| <= r / (|m| (|m| - r)).
        let resid = Ball::ONE.sub(&point.mul(&q));
        // (r / m_lo) / gap, not r / (m_lo gap): the product may overflow to inf.
        let rad = up(resid.mag() / m_lo + (self.rad / m_lo) / gap);
        let b = Ball { rad, ..q };
        b.is_finite().then_some(b)
    }

    /// A positive lower bound on every member; `None` when the ball reaches 0 or below
    /// (or is not finite).
    fn positive_lower(&self) -> Option<f64> {
        let lower = down(self.hi * (1.0 - f64::EPSILON) - self.rad);
        (lower > 0.0 && self.is_finite()).then_some(lower)
    }

    /// `sqrt(self)`; `None` when the ball reaches 0 or below.
    pub fn sqrt(&self) -> Option<Ball> {
        let lower = self.positive_lower()?;
        // Midpoint: s0 = sqrt(hi), s = s0 + (m - s0^2) / (2 s0).
        let s0 = Ball::from_f64(self.hi.sqrt())?;
        let point = self.midpoint();
        let corr = point
            .sub(&s0.mul(&s0))
            .midpoint()
            .mul(&Ball::from_f64(0.5 / s0.hi)?);
        let s = s0.add(&corr.midpoint()).midpoint();
        // |sqrt(m) - s| = |m - s^2| / (sqrt(m) + s) <= |m - s^2| / s;
        // |sqrt(x) - sqrt(m)| = |x - m| / (sqrt(x) + sqrt(m)) <= r / (2 sqrt(m - r)).
        let resid = point.sub(&s.mul(&s));
        let s_lo = down(s.hi * (1.0 - f64::EPSILON));
        let root_lo = down(lower.sqrt());
        if s_lo <= 0.0 || root_lo <= 0.0 {
            return None;
        }
        let rad = up(resid.mag() / s_lo + self.rad / down(root_lo + root_lo));
        let b = Ball { rad, ..s };
        b.is_finite().then_some(b)
    }

    /// `e^self`; `None` when the ball reaches beyond 709 (the `f64` range).
    pub fn exp(&self) -> Option<Ball> {
        if !self.is_finite() || self.hi + self.rad > 709.0 {
            return None;
        }
        // Far below: e^x < e^-690 < 2.3e-300 for every member; [0 +- 1e-298] encloses it.
        if self.hi + self.rad < -690.0 {
            return Some(Ball {
                hi: 0.0,
                lo: 0.0,
                rad: 1.0e-298,
            });
        }
        let em = exp_point(&self.midpoint())?;
        // |e^x - e^m| <= e^m (e^r - 1) for |x - m| <= r.
        let r = self.rad;
        let expm1_r = if r <= 0.5 {
            r * (1.0 + r)
        } else {
            r * 3f64.powi(r.ceil() as i32)
        };
        let rad = up(em.rad + em.mag() * expm1_r);
        let b = Ball { rad, ..em };
        b.is_finite().then_some(b)
    }

    /// `ln(self)`; `None` when the ball reaches 0 or below.
    pub fn ln(&self) -> Option<Ball> {
        self.positive_lower()?;
        // ln x = y0 + ln z with z = x e^-y0 near 1; ln z = 2 atanh w, w = (z-1)/(z+1),
        // = 2 (w + w^3/3 + ...): keep 2 w + 2 w^3 / 3, the rest (< |w|^5 for |w| < 1/2)
        // goes into the radius.
        let y0 = Ball::from_f64(self.hi.ln())?;
        let z = self.mul(&y0.neg().exp()?);
        let w = z.sub(&Ball::ONE).mul(&z.add(&Ball::ONE).recip()?);
        let wm = w.mag();
        if wm.is_nan() || wm >= 0.5 {
            return None;
        }
        let w3 = w.mul(&w).mul(&w);
        let series = w.add(&w3.mul(&Ball::from_rational(&Rational::from((1, 3)))?));
        let two_series = series.add(&series);
        let tail = Ball {
            hi: 0.0,
            lo: 0.0,
            rad: up(2.0 * wm.powi(5)),
        };
        let b = y0.add(&two_series).add(&tail);
        b.is_finite().then_some(b)
    }

    /// `max(self, 0)`: the ball itself, zero, or a ball around `[0, m + r]`.
    pub fn relu(&self) -> Ball {
        if self.lo_f64() >= 0.0 {
            *self
        } else if self.hi_f64() <= 0.0 {
            Ball::ZERO
        } else {
            let top = self.hi_f64();
            Ball {
                hi: 0.5 * top,
                lo: 0.0,
                rad: up(0.5 * top),
            }
        }
    }
}

/// `ln 2` as a ball (from 256-bit MPFR, computed once).
fn ln2() -> Ball {
    use std::sync::OnceLock;
    static LN2: OnceLock<Ball> = OnceLock::new();
    *LN2.get_or_init(|| {
        let lo = Float::with_val_round(256, rug::float::Constant::Log2, Round::Down).0;
        let hi = Float::with_val_round(256, rug::float::Constant::Log2, Round::Up).0;
        Ball::from_interval(&Interval::point(lo).hull(&Interval::point(hi)))
            .unwrap_or_else(Ball::whole)
    })
}

/// Table steps per octave and Taylor degree of [`exp_point`]: `|r| <= ln 2 / 128`, so
/// the remainder `|r|^11 / 11!` is below `3e-33`, under the double-double's own `2^-106`.
const EXP_TABLE: usize = 64;
const EXP_DEGREE: usize = 10;

/// `2^(j/64)` for `j < 64`, as balls from 256-bit MPFR (computed once).
fn exp2_table() -> &'static [Ball] {
    use std::sync::OnceLock;
    static T: OnceLock<Vec<Ball>> = OnceLock::new();
    T.get_or_init(|| {
        (0..EXP_TABLE)
            .map(|j| {
                let e = Rational::from((j as u32, EXP_TABLE as u32));
                let lo = Float::with_val_round(256, &e, Round::Down).0;
                let hi = Float::with_val_round(256, &e, Round::Up).0;
                let two = Interval::from_f64(2.0, 256);
                // 2^x = e^(x ln 2), monotone: the ends give an enclosure.
                let ln2 = two.ln().unwrap_or_else(|| Interval::whole(256));
                let ends = |x: Float| (&Interval::point(x) * &ln2).exp();
                Ball::from_interval(&ends(lo).hull(&ends(hi))).unwrap_or_else(Ball::whole)
            })
            .collect()
    })
}

/// `1/j!` for `j <= EXP_DEGREE`, as balls (computed once by [`Ball::from_rational`]).
fn inv_factorials() -> &'static [Ball] {
    use std::sync::OnceLock;
    static F: OnceLock<Vec<Ball>> = OnceLock::new();
    F.get_or_init(|| {
        let mut fact = rug::Integer::from(1);
        (0..=EXP_DEGREE)
            .map(|j| {
                if j > 0 {
                    fact *= j as u32;
                }
                Ball::from_rational(&Rational::from((1, fact.clone()))).unwrap_or_else(Ball::whole)
            })
            .collect()
    })
}

/// `e^m` for a point ball `m` in [-686, 709]: `m = (64 q + j) ln 2 / 64 + r` with
/// `0 <= j < 64`, so `e^m = 2^q 2^(j/64) e^r`; `e^r` by its Taylor polynomial of degree
/// [`EXP_DEGREE`] plus the remainder bound, `2^(j/64)` from a table of balls; every
/// step in ball arithmetic.
fn exp_point(m: &Ball) -> Option<Ball> {
    let k = (m.hi * (EXP_TABLE as f64 / std::f64::consts::LN_2)).round();
    let r = m.sub(&ln2().scale_pow2(-6).mul(&Ball::from_f64(k)?));
    let rm = r.mag();
    if rm.is_nan() || rm > 0.006 {
        return None;
    }
    let inv = inv_factorials();
    let mut p = inv[EXP_DEGREE];
    for c in inv[..EXP_DEGREE].iter().rev() {
        p = p.mul(&r).add(c);
    }
    // Remainder: sum_{j > N} |r|^j / j! <= 2 |r|^(N+1) / (N+1)! for |r| <= 0.01.
    let mut bound = 2.0 * rm.powi(EXP_DEGREE as i32 + 1);
    for j in 1..=(EXP_DEGREE + 1) {
        bound /= j as f64;
    }
    // Twice the bound: covers the f64 rounding of the bound's own computation.
    let p = p.widened(2.0 * bound);
    let (q, j) = (
        (k as i64).div_euclid(EXP_TABLE as i64),
        (k as i64).rem_euclid(EXP_TABLE as i64),
    );
    let out = p.mul(&exp2_table()[j as usize]).scale_pow2(q as i32);
    out.is_finite().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: u32 = 256;

    fn iv(b: &Ball) -> Interval {
        b.to_interval()
    }

    /// `b` encloses the MPFR interval `x` and its radius is at most `max_rad`.
    fn check(name: &str, b: Option<Ball>, x: &Interval, max_rad: f64) {
        let b = b.unwrap_or_else(|| panic!("{name}: no ball"));
        assert!(iv(&b).contains(x), "{name}: {b:?} misses {x:?}");
        assert!(b.rad() <= max_rad, "{name}: radius {} > {max_rad}", b.rad());
    }

    /// Uniform in [0, 1) from index `i`: SplitMix64's output for state `i G + C - G`
    /// (so its first step lands on `i G + C`), 53 bits.
    fn pseudo(i: u64) -> f64 {
        const G: u64 = 0x9E37_79B9_7F4A_7C15;
        let state = i.wrapping_mul(G).wrapping_add(0x1234_5678).wrapping_sub(G);
        (crate::rng::SplitMix64::new(state).next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    #[test]
    fn arithmetic_encloses_mpfr() {
        for i in 0..2000u64 {
            let a = (pseudo(i) - 0.5) * 10f64.powi((i % 9) as i32 - 4);
            let b = (pseudo(i + 7919) - 0.5) * 10f64.powi((i % 7) as i32 - 3);
            let (ba, bb) = (Ball::from_f64(a).unwrap(), Ball::from_f64(b).unwrap());
            let (ia, ib) = (Interval::from_f64(a, P), Interval::from_f64(b, P));
            // Chains of a few operations so the low parts are exercised; radii are
            // a few ROUND (2^-100) of the terms' magnitudes.
            let s = ba.add(&bb).mul(&ba).sub(&bb);
            let is = &(&(&ia + &ib) * &ia) - &ib;
            let terms = (a.abs() + b.abs()) * a.abs() + b.abs();
            check("add-mul-sub", Some(s), &is, 1e-29 * terms + 1e-290);
            let q = s.recip();
            if let Some(q) = q {
                // 1/x moves by r / x^2 for a radius r: relative radius carried over.
                let sm = s.mid_f64().abs();
                check(
                    "recip",
                    Some(q),
                    &is.recip(),
                    2.0 * (s.rad() / sm + 1e-29) / sm,
                );
            }
            let x = a.clamp(-600.0, 600.0) * 3.0;
            let e = Ball::from_f64(x).unwrap().mul(&ba.add(&Ball::ONE));
            let ie = &Interval::from_f64(x, P) * &(&ia + &Interval::one(P));
            if ie.hi_f64() < 700.0 && ie.lo_f64() > -600.0 {
                // e^x moves by e^x r; the reduction and 8 squarings cost < 2^-90.
                let ex = ie.exp().mag();
                check("exp", e.exp(), &ie.exp(), ex * (2.0 * e.rad() + 1e-27));
            }
            let sq = ba.mul(&ba).add(&bb.mul(&bb));
            let isq = &(&ia * &ia) + &(&ib * &ib);
            if sq.lo_f64() > 0.0 {
                let m = sq.mid_f64();
                check(
                    "sqrt",
                    sq.sqrt(),
                    &isq.sqrt().unwrap(),
                    m.sqrt() * (sq.rad() / m + 1e-28),
                );
                check(
                    "ln",
                    sq.ln(),
                    &isq.ln().unwrap(),
                    2.0 * sq.rad() / m + 2e-27 * (1.0 + m.ln().abs()),
                );
            }
        }
    }

    #[test]
    fn radii_propagate_and_refusals_are_typed() {
        let x = Ball::from_interval(&Interval::from_f64_ends(0.9, 1.1, P).unwrap()).unwrap();
        let ix = x.to_interval();
        // Each radius near the derivative at 1 times 0.1 (e, 1, 1/2, 1), not more
        // than the second-order terms above it.
        check("exp of a wide ball", x.exp(), &ix.exp(), 0.3);
        check("recip of a wide ball", x.recip(), &ix.recip(), 0.12);
        check("sqrt of a wide ball", x.sqrt(), &ix.sqrt().unwrap(), 0.06);
        check("ln of a wide ball", x.ln(), &ix.ln().unwrap(), 0.12);
        let around0 = Ball::from_interval(&Interval::from_f64_ends(-0.1, 0.2, P).unwrap()).unwrap();
        assert!(around0.recip().is_none());
        assert!(around0.sqrt().is_none());
        assert!(around0.ln().is_none());
        assert!(Ball::from_f64(710.0).unwrap().exp().is_none());
        assert!(Ball::from_f64(f64::NAN).is_none());
        // Far below the range: a tiny ball around 0 that still contains e^-800.
        let tiny = Ball::from_f64(-800.0).unwrap().exp().unwrap();
        assert!(tiny
            .to_interval()
            .contains(&Interval::from_f64(-800.0, P).exp()));
        let r = around0.relu();
        assert!(r.lo_f64() <= 0.0 && r.hi_f64() >= 0.2);
        assert_eq!(Ball::from_f64(-3.0).unwrap().relu(), Ball::ZERO);
    }

    /// The cases an independent review of this module found unsound (each failed
    /// before its fix), kept as regressions.
    #[test]
    fn reviewed_edge_cases_enclose() {
        // exp just above the "far below" cut-off: e^-686.1 = 1.07e-298.
        let x = Ball::from_f64(-686.1).unwrap();
        let e = x.exp().unwrap();
        assert!(
            e.to_interval()
                .contains(&Interval::from_f64(-686.1, P).exp()),
            "{e:?}"
        );
        // recip of a huge, wide ball: |m| (|m| - r) overflows.
        for (m, r) in [(1e200, 5e199), (1.5e308, 5e307)] {
            let b = Ball::from_f64(m).unwrap().widened(r);
            let q = b.recip().unwrap();
            let iv = b.to_interval();
            for end in [iv.lo().clone(), iv.hi().clone()] {
                let inv = Interval::point(end).recip();
                assert!(q.to_interval().contains(&inv), "{m} +- {r}: {q:?}");
            }
        }
        // mul: the rounding allowance must not underflow before it is scaled up.
        let a = Ball::from_f64(1.2345e-300).unwrap();
        let big = Rational::from((rug::ops::Pow::pow(rug::Integer::from(10), 290u32), 3));
        let b = Ball::from_rational(&big).unwrap().midpoint();
        let exact = &Interval::from_f64(1.2345e-300, P) * &b.to_interval();
        assert!(a.mul(&b).to_interval().contains(&exact), "{:?}", a.mul(&b));
        // scale_pow2 below 2^-1023 (powi would give 0 here).
        let s = Ball::from_f64(2f64.powi(60))
            .unwrap()
            .scale_pow2(std::hint::black_box(-1030));
        assert!(s.to_interval().contains_f64(2f64.powi(-970)), "{s:?}");
        assert!(!Ball::whole().scale_pow2(-2000).rad().is_nan());
        // An unbounded operand times zero: an infinite radius, never NaN.
        let z = Ball::whole().mul(&Ball::ZERO);
        assert!(z.rad().is_infinite(), "{z:?}");
        assert!(Ball::whole().exp().is_none() && Ball::whole().ln().is_none());
    }

    #[test]
    fn constants_and_conversions_enclose() {
        let third = Ball::from_rational(&Rational::from((1, 3))).unwrap();
        assert!(third
            .to_interval()
            .contains(&Interval::from_rational(&Rational::from((1, 3)), P)));
        // About 2^-106 relative: the double-double's own precision.
        assert!(third.rad() < 1e-32);
        assert!(third.lo_f64() < 1.0 / 3.0 && third.hi_f64() > 1.0 / 3.0);
        let l = ln2();
        let ref_ln2 = Interval::from_f64(2.0, P).ln().unwrap();
        assert!(l.to_interval().contains(&ref_ln2), "{l:?}");
    }
}
