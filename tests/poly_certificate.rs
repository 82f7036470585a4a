//! The certificate eps_P of the stored polynomial (docs/math.md §3.2) against MPFR: at
//! many points of [-R, R] (a dense grid, the end points, and seeded random points), the
//! relative error |P(x) - e^x| / e^x, evaluated in 128-bit interval arithmetic with
//! the coefficients exactly as stored, never exceeds the certified eps_P; and the
//! certificate is not loose by more than the sampling slack (its value is within 2x of
//! the largest error found).

use polyattn::attention::poly::polynomial::{ExpPoly, PolyKind};
use polyattn::rng::SplitMix64;
use polyattn_spec::Interval;

const PREC: u32 = 128;

/// Certified (lower, upper) bounds on |P(x) e^{-x} - 1| at the f64 point x, from a
/// 128-bit interval evaluation (Horner) with the stored coefficients.
fn rel_error(p: &ExpPoly, x: f64) -> (f64, f64) {
    let xi = Interval::from_f64(x, PREC);
    let px = p.coeffs.iter().rev().fold(Interval::zero(PREC), |acc, &c| {
        &(&acc * &xi) + &Interval::from_f64(c, PREC)
    });
    let r = &(&px / &xi.exp()) - &Interval::one(PREC);
    let (lo, hi) = (r.lo_f64(), r.hi_f64());
    let upper = lo.abs().max(hi.abs());
    let lower = if lo > 0.0 {
        lo
    } else if hi < 0.0 {
        -hi
    } else {
        0.0
    };
    (lower, upper)
}

#[test]
fn certified_eps_bounds_the_mpfr_error_everywhere_tested() {
    let mut rng = SplitMix64::new(99);
    for kind in [PolyKind::Chebyshev, PolyKind::Taylor] {
        for &(r, g) in &[
            (0.1, 2usize),
            (0.5, 4),
            (1.0, 6),
            (2.0, 9),
            (4.0, 12),
            (4.0, 17),
            (8.0, 20),
        ] {
            let p = ExpPoly::new(kind, g, r);
            let mut worst_lo = 0.0f64;
            let grid = (0..=2000).map(|i| -r + 2.0 * r * i as f64 / 2000.0);
            let random: Vec<f64> = (0..2000).map(|_| rng.range(-r, r)).collect();
            for x in grid.chain(random) {
                let (lower, upper) = rel_error(&p, x);
                assert!(
                    upper <= p.eps,
                    "{kind:?} R={r} g={g} x={x}: |P/e^x - 1| up to {upper:e} > eps_P {:e}",
                    p.eps
                );
                worst_lo = worst_lo.max(lower);
            }
            // Not vacuous: the certificate is within 2x of an error that really occurs
            // (the sampling slack is about 1%, the rounding terms far smaller), unless
            // the error is at the f64 rounding floor, where the rounding terms dominate.
            if p.eps > 1e-12 {
                assert!(
                    p.eps <= 2.0 * worst_lo,
                    "{kind:?} R={r} g={g}: eps_P {:e} vs worst found {:e}",
                    p.eps,
                    worst_lo
                );
            }
        }
    }
}
