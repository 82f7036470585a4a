//! Laws of the interval type: containment of the exact result (exact rational
//! arithmetic where the operation is rational, 1024-bit directed rounding
//! otherwise), `lo <= hi`, exact conversion of `f64`, and inclusion
//! monotonicity.

use polyattn_spec::Interval;
use quickcheck::{Arbitrary, Gen, QuickCheck, Testable};
use rug::float::Round;
use rug::{Float, Rational};

/// Working precisions under test: below, at and above `f64`'s 53 bits.
const PRECS: [u32; 3] = [24, 53, 128];
/// Precision of the comparison values for transcendental functions.
const HIGH: u32 = 1024;

fn qc<A: Testable>(prop: A) {
    QuickCheck::new().tests(600).quickcheck(prop);
}

/// A finite `f64` drawn from a mix that covers the whole exponent range
/// (including subnormals), moderate values, and awkward special values.
#[derive(Clone, Copy, Debug)]
struct Num(f64);

impl Arbitrary for Num {
    fn arbitrary(g: &mut Gen) -> Num {
        let bits = u64::arbitrary(g);
        let x = match u8::arbitrary(g) % 4 {
            0 => f64::from_bits(bits),
            1 => (bits as i32 % (1 << 20)) as f64 / f64::powi(2.0, (bits >> 40) as i32 % 24),
            2 => {
                let mantissa = 1.0 + (bits >> 11) as f64 / (1u64 << 53) as f64;
                let exp = (bits % 121) as i32 - 60;
                let sign = if bits & (1 << 7) == 0 { 1.0 } else { -1.0 };
                sign * mantissa * f64::powi(2.0, exp)
            }
            _ => *g
                .choose(&[
                    0.0,
                    -0.0,
                    1.0,
                    -1.0,
                    f64::MIN_POSITIVE,
                    5e-324,
                    f64::MAX,
                    f64::MIN,
                ])
                .unwrap_or(&0.0),
        };
        Num(if x.is_finite() { x } else { 0.5 })
    }
}

fn exact(x: f64) -> Rational {
    Rational::from_f64(x).unwrap()
}

fn iv(x: f64, prec: u32) -> Interval {
    Interval::from_f64(x, prec)
}

fn well_formed(i: &Interval) -> bool {
    !i.lo().is_nan() && !i.hi().is_nan() && i.lo() <= i.hi()
}

fn contains_q(i: &Interval, q: &Rational) -> bool {
    well_formed(i) && i.lo() <= q && q <= i.hi()
}

/// `true` when `i` contains the 1024-bit enclosure `[f(Down), f(Up)]` of a
/// function value, hence the value itself.
fn contains_high(i: &Interval, f: impl Fn(Round) -> Float) -> bool {
    well_formed(i) && *i.lo() <= f(Round::Down) && f(Round::Up) <= *i.hi()
}

/// `2^-k` as an `f64` (k up to 1074, reaching subnormals).
fn pow2_neg(k: u16) -> f64 {
    let k = i32::from(k % 1075);
    f64::powi(2.0, -k.min(1000)) * f64::powi(2.0, -(k - k.min(1000)))
}

#[test]
fn from_f64_is_exact_from_53_bits() {
    fn prop(x: Num) -> bool {
        let x = x.0;
        let p53 = iv(x, 53);
        let p128 = iv(x, 128);
        let p24 = iv(x, 24);
        p53.is_point()
            && p128.is_point()
            && *p53.lo() == x
            && p128.lo_f64() == x
            && p128.hi_f64() == x
            && p24.contains_f64(x)
            && p53.width_f64() == 0.0
    }
    qc(prop as fn(Num) -> bool);
}

#[test]
fn rational_operations_contain_the_exact_result() {
    fn prop(a: Num, b: Num) -> bool {
        let (qa, qb) = (exact(a.0), exact(b.0));
        PRECS.iter().all(|&p| {
            let (x, y) = (iv(a.0, p), iv(b.0, p));
            let div_ok = if b.0 == 0.0 {
                (&x / &y) == Interval::whole(p)
            } else {
                contains_q(&(&x / &y), &Rational::from(&qa / &qb))
            };
            contains_q(&(&x + &y), &Rational::from(&qa + &qb))
                && contains_q(&(&x - &y), &Rational::from(&qa - &qb))
                && contains_q(&(&x * &y), &Rational::from(&qa * &qb))
                && contains_q(&-&x, &Rational::from(-&qa))
                && div_ok
        })
    }
    qc(prop as fn(Num, Num) -> bool);
}

#[test]
fn cancellation_keeps_containment() {
    // (a + b) - a with |a| >> |b|, and a product of near-opposite sums
    // (a + e1)(e2 - a) + a^2, whose exact value is small.
    fn prop(a: Num, b: Num, k: u16) -> bool {
        let small = b.0 * pow2_neg(k);
        let (qa, qs) = (exact(a.0), exact(small));
        PRECS.iter().all(|&p| {
            let (x, s) = (iv(a.0, p), iv(small, p));
            let diff = &(&x + &s) - &x;
            let e2 = iv(small * 0.75, p);
            let prod = &(&(&x + &s) * &(&e2 - &x)) + &(&x * &x);
            let q_e2 = exact(small * 0.75);
            let q_prod =
                Rational::from(&qa + &qs) * Rational::from(&q_e2 - &qa) + Rational::from(&qa * &qa);
            contains_q(&diff, &qs) && contains_q(&prod, &q_prod)
        })
    }
    qc(prop as fn(Num, Num, u16) -> bool);
}

#[test]
fn division_by_tiny_numbers() {
    fn prop(a: Num, b: Num, k: u16) -> bool {
        let tiny = b.0 * pow2_neg(k);
        if tiny == 0.0 {
            return true;
        }
        let q = exact(a.0) / exact(tiny);
        PRECS
            .iter()
            .all(|&p| contains_q(&(iv(a.0, p) / iv(tiny, p)), &q))
    }
    qc(prop as fn(Num, Num, u16) -> bool);
}

#[test]
fn sum_and_dot_contain_the_exact_result() {
    fn prop(xs: Vec<Num>, ys: Vec<Num>) -> bool {
        let n = xs.len().min(ys.len());
        let (xs, ys) = (&xs[..n], &ys[..n]);
        let exact_sum = xs.iter().fold(Rational::new(), |acc, x| acc + exact(x.0));
        let exact_dot = xs
            .iter()
            .zip(ys)
            .fold(Rational::new(), |acc, (x, y)| acc + exact(x.0) * exact(y.0));
        PRECS.iter().all(|&p| {
            let a: Vec<Interval> = xs.iter().map(|x| iv(x.0, p)).collect();
            let b: Vec<Interval> = ys.iter().map(|y| iv(y.0, p)).collect();
            let dot = Interval::dot(&a, &b, p).unwrap();
            contains_q(&Interval::sum(&a, p), &exact_sum) && contains_q(&dot, &exact_dot)
        })
    }
    qc(prop as fn(Vec<Num>, Vec<Num>) -> bool);
}

/// Exponent arguments: moderate, near the `f64` overflow threshold, tiny, and
/// beyond MPFR's exponent range.
fn exp_arg(x: Num, kind: u8) -> f64 {
    let y = x.0;
    match kind % 4 {
        0 => y % 800.0,
        1 => 700.0 + (y % 50.0),
        2 => y * 1e-300 % 1e-10,
        _ => y,
    }
}

#[test]
fn exp_contains_the_high_precision_value() {
    fn prop(x: Num, kind: u8) -> bool {
        let a = exp_arg(x, kind);
        let high = |r| Float::with_val_round(HIGH, Float::with_val(HIGH, a).exp_ref(), r).0;
        PRECS.iter().all(|&p| contains_high(&iv(a, p).exp(), high))
    }
    qc(prop as fn(Num, u8) -> bool);
}

#[test]
fn ln_contains_the_high_precision_value() {
    // Near 1 (x = 1 + t 2^-k) and anywhere positive.
    fn prop(x: Num, k: u16, near_one: bool) -> bool {
        let a = if near_one {
            1.0 + (x.0 % 1.0) * pow2_neg(k % 60)
        } else {
            x.0.abs()
        };
        if a <= 0.0 {
            return iv(a, 53).ln().is_none();
        }
        let high = |r| Float::with_val_round(HIGH, Float::with_val(HIGH, a).ln_ref(), r).0;
        PRECS
            .iter()
            .all(|&p| iv(a, p).ln().is_some_and(|l| contains_high(&l, high)))
    }
    qc(prop as fn(Num, u16, bool) -> bool);
}

#[test]
fn sqrt_contains_the_high_precision_value() {
    fn prop(x: Num) -> bool {
        let a = x.0.abs();
        let high = |r| Float::with_val_round(HIGH, Float::with_val(HIGH, a).sqrt_ref(), r).0;
        PRECS
            .iter()
            .all(|&p| iv(a, p).sqrt().is_some_and(|s| contains_high(&s, high)))
    }
    qc(prop as fn(Num) -> bool);
}

/// The interval spanned by two numbers.
fn span(a: f64, b: f64, prec: u32) -> Interval {
    Interval::from_f64_ends(a.min(b), a.max(b), prec).unwrap()
}

#[test]
fn inclusion_is_monotone() {
    // a subset of b implies f(a) subset of f(b).
    fn prop(x: Num, y: Num, s: u16, t: u16, c: Num) -> bool {
        let (lo, hi) = (x.0.min(y.0) % 1e100, x.0.max(y.0) % 1e100);
        let (lo, hi) = (lo.min(hi), lo.max(hi));
        let at = |f: u16| (lo + (hi - lo) * (f as f64 / 65535.0)).clamp(lo, hi);
        let p = 53;
        let big = span(lo, hi, p);
        let small = span(at(s), at(t), p);
        let other = span(c.0, c.0 + 1.5, p);
        let clamp = |v: f64| v.clamp(-700.0, 700.0);
        let exp_big = span(clamp(lo), clamp(hi), p);
        let exp_small = span(clamp(at(s)), clamp(at(t)), p);
        big.contains(&small)
            && (&big + &other).contains(&(&small + &other))
            && (&other - &big).contains(&(&other - &small))
            && (&big * &other).contains(&(&small * &other))
            && (&other / &big).contains(&(&other / &small))
            && exp_big.exp().contains(&exp_small.exp())
    }
    qc(prop as fn(Num, Num, u16, u16, Num) -> bool);
}

#[test]
fn lo_never_exceeds_hi() {
    fn prop(a: Num, b: Num, c: Num) -> bool {
        let p = 53;
        let x = span(a.0, b.0, p);
        let y = iv(c.0, p);
        let results = [
            &x + &y,
            &x - &y,
            &x * &y,
            &x / &y,
            &y / &x,
            x.exp(),
            x.max(&y),
            x.hull(&y),
        ];
        results.iter().all(well_formed)
            && x.ln().is_none_or(|l| well_formed(&l))
            && x.sqrt().is_none_or(|s| well_formed(&s))
            && x.lo_f64() <= x.hi_f64()
    }
    qc(prop as fn(Num, Num, Num) -> bool);
}

#[test]
fn f64_views_bound_the_ends() {
    fn prop(a: Num, b: Num) -> bool {
        let x = &iv(a.0, 128) / &iv(3.0, 128) + iv(b.0, 128);
        let (lo, hi) = (x.lo_f64(), x.hi_f64());
        let mid = x.mid_f64();
        *x.lo() >= lo
            && *x.hi() <= hi
            && lo <= mid
            && mid <= hi
            && x.width_f64() >= 0.0
            && x.mag() >= lo.abs().min(f64::MAX)
            && x.mag() >= hi.abs().min(f64::MAX)
    }
    qc(prop as fn(Num, Num) -> bool);
}

#[test]
fn domain_edges_and_infinities() {
    let p = 64;
    let whole = Interval::whole(p);
    let zero = Interval::zero(p);
    assert_eq!(&Interval::one(p) / &zero, whole);
    assert_eq!(&Interval::one(p) / &span(-1.0, 2.0, p), whole);
    assert_eq!(&zero * &whole, zero, "0 * unbounded is exactly 0");
    assert!(span(-2.0, -1.0, p).ln().is_none());
    assert!(span(-2.0, 0.0, p).ln().is_none());
    let l = span(-1.0, 1.0, p).ln().unwrap();
    assert!(l.lo().is_infinite() && *l.hi() == 0);
    assert!(span(-2.0, -1.0, p).sqrt().is_none());
    assert_eq!(span(-1.0, 4.0, p).sqrt().unwrap(), span(0.0, 2.0, p));
    let up = Interval::from_f64(f64::INFINITY, p);
    assert!(up.hi().is_infinite() && up.lo_f64() >= 1e308);
    assert_eq!(Interval::from_f64(f64::NAN, p), whole);
    assert!(Interval::from_f64_ends(2.0, 1.0, p).is_none());
    assert!(Interval::from_f64_ends(f64::NAN, 1.0, p).is_none());
    assert!(!whole.contains_f64(f64::INFINITY) && !whole.contains_f64(f64::NAN));
    assert!(whole.contains_f64(1e308));
    assert_eq!(whole.mid_f64(), 0.0);
    assert_eq!(whole.width_f64(), f64::INFINITY);
    // exp of an unbounded interval and of a huge one stays well formed.
    let e = span(-1.0, 1.0, p).add(&whole).exp();
    assert!(*e.lo() == 0 && e.hi().is_infinite());
    let huge = Interval::from_f64(1e300, p).exp();
    assert!(huge.hi().is_infinite() && huge.lo().is_finite());
    // Division with unbounded operands.
    let q = &span(-5.0, 5.0, p).hull(&whole) / &span(2.0, 4.0, p);
    assert_eq!(q, whole);
    let pos_unbounded = Interval::from_f64(2.0, p).hull(&Interval::from_f64(f64::INFINITY, p));
    let q = &span(1.0, 3.0, p) / &pos_unbounded;
    assert!(*q.lo() == 0 && q.hi_f64() == 1.5);
}

#[test]
fn mixed_precisions_use_the_larger() {
    let a = Interval::from_f64(1.0, 24);
    let b = Interval::from_f64(3.0, 200);
    assert_eq!((&a / &b).prec(), 200);
    assert_eq!((&a + &b).prec(), 200);
    assert_eq!(a.max(&b).prec(), 200);
    assert_eq!(a.exp().prec(), 24);
    let third = &a / &b;
    assert!(third.width_f64() < 1e-59);
}

#[test]
fn overlaps_hull_max_and_dot_lengths() {
    let p = 53;
    let a = span(0.0, 1.0, p);
    let b = span(1.0, 2.0, p);
    let c = span(1.5, 3.0, p);
    assert!(a.overlaps(&b) && b.overlaps(&c) && !a.overlaps(&c));
    assert_eq!(a.hull(&c), span(0.0, 3.0, p));
    assert_eq!(a.max(&c), c);
    assert_eq!(span(-3.0, 0.5, p).max(&a), span(0.0, 1.0, p));
    assert_eq!(span(-3.0, 0.5, p).mag(), 3.0);
    assert!(Interval::dot(std::slice::from_ref(&a), &[a.clone(), b], p).is_none());
    assert_eq!(Interval::sum(&[], p), Interval::zero(p));
}
