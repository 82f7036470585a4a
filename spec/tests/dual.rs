//! The dual-number oracle on functions with known derivatives: the derivative
//! enclosure must contain the analytic derivative evaluated at 1024 bits.

use polyattn_spec::dual::Dual;
use polyattn_spec::Interval;
use rug::Float;

const HIGH: u32 = 1024;

/// A test function: its dual-number form and its analytic derivative in
/// high-precision floats.
struct Case {
    name: &'static str,
    f: fn(&Dual) -> Dual,
    df: fn(&Float) -> Float,
}

fn h(x: impl Into<f64>) -> Float {
    Float::with_val(HIGH, x.into())
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "x exp(x)",
            f: |x| x * &x.exp(),
            df: |x| Float::with_val(HIGH, x + 1u32) * Float::with_val(HIGH, x.exp_ref()),
        },
        Case {
            name: "ln(x) / x",
            f: |x| &x.ln().unwrap() / x,
            df: |x| {
                let ln = Float::with_val(HIGH, x.ln_ref());
                Float::with_val(HIGH, 1 - ln) / Float::with_val(HIGH, x * x)
            },
        },
        Case {
            name: "exp(x) / (1 + x^2)",
            f: |x| {
                let one = Dual::constant(Interval::one(x.val.prec()));
                &x.exp() / &(&one + &(x * x))
            },
            df: |x| {
                let e = Float::with_val(HIGH, x.exp_ref());
                let den = Float::with_val(HIGH, x * x) + 1u32;
                let num = Float::with_val(HIGH, x - 1u32).square();
                e * num / den.square()
            },
        },
        Case {
            name: "ln(1 + exp(x)) - x",
            f: |x| {
                let one = Dual::constant(Interval::one(x.val.prec()));
                &(&one + &x.exp()).ln().unwrap() - x
            },
            df: |x| {
                // 1 / (1 + exp(-x)) - 1
                let e = Float::with_val(HIGH, -x).exp();
                Float::with_val(HIGH, 1u32) / (e + 1u32) - 1u32
            },
        },
        Case {
            name: "exp(x exp(-x))",
            f: |x| (x * &(-x).exp()).exp(),
            df: |x| {
                let em = Float::with_val(HIGH, -x).exp();
                let inner = Float::with_val(HIGH, x * &em);
                let outer = inner.exp();
                outer * em * Float::with_val(HIGH, 1 - x)
            },
        },
    ]
}

#[test]
fn derivative_enclosures_contain_the_analytic_derivative() {
    let points = [0.1, 0.5, 1.0, 1.75, 3.0, 10.0, 123.456];
    for case in cases() {
        for &x in &points {
            let exact = (case.df)(&h(x));
            for prec in [53, 128] {
                let d = (case.f)(&Dual::variable(Interval::from_f64(x, prec)));
                assert!(
                    d.der.contains_float(&exact),
                    "{} at {x}, {prec} bits: {:?} does not contain {exact}",
                    case.name,
                    d.der
                );
                let scale = d.der.mag().max(d.val.mag()).max(1.0);
                let bound = if prec == 128 { 1e-30 } else { 1e-12 };
                assert!(
                    d.der.width_f64() <= bound * scale,
                    "{} at {x}, {prec} bits: too wide",
                    case.name
                );
            }
        }
    }
}

#[test]
fn constants_have_zero_derivative_and_variables_one() {
    let c = Dual::constant(Interval::from_f64(2.5, 64));
    let x = Dual::variable(Interval::from_f64(2.5, 64));
    assert_eq!(c.der, Interval::zero(64));
    assert_eq!(x.der, Interval::one(64));
    let y = &(&c * &x) - &c;
    assert!(y.der.contains_f64(2.5) && y.der.is_point());
}

#[test]
fn ln_outside_its_domain_is_none() {
    let x = Dual::variable(Interval::from_f64(-1.0, 64));
    assert!(x.ln().is_none());
    let z = Dual::variable(Interval::zero(64));
    assert!(z.ln().is_none());
}

#[test]
fn quotient_by_zero_is_the_whole_line() {
    let x = Dual::variable(Interval::from_f64(1.0, 64));
    let z = Dual::constant(Interval::zero(64));
    let q = &x / &z;
    assert_eq!(q.val, Interval::whole(64));
    assert_eq!(q.der, Interval::whole(64));
}
