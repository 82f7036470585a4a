//! The vectorised e^x of the SIMD paths (docs/math.md §2: every softmax weight is an
//! `exp`; docs/math.md §5.4: its error enters the enclosure allowance as an `exp`
//! within 1 ulp).
//!
//! Algorithm (one for f32 and f64, constants per type):
//!
//! ```text
//! x  <- clamp(x, X_LO, X_HI)            NaN stays NaN; -inf -> X_LO -> result 0
//! n  =  round(x log2 e)                 an integer
//! hi =  x - n LN2_HI                    exact (fused; LN2_HI has 9 / 32 significant
//!                                       bits, so n LN2_HI is exact, and hi is a
//!                                       multiple of ulp(x) below 2^p ulp(x))
//! lo =  -n LN2_LO                       LN2_HI + LN2_LO = ln 2 to about 2^-36 / 2^-86
//! r  =  hi + lo                         |r| <= ln2 / 2 (slightly more after rounding)
//! q  =  sum_{k=0}^{K} r^k / (k+2)!      Horner; K = 6 (f32) or 11 (f64): truncation
//!                                       below 0.003 / 0.05 ulp
//! y  =  1 + (hi + (r^2 q + lo))         = e^r; `lo` is carried separately so that the
//!                                       rounding of r only touches the small r^2 q term
//! e^x = y 2^n                           `ldexp`: exact for normal results; one
//!                                       rounding for subnormal ones
//! ```
//!
//! Error budget for a normal result (in ulps of the result, y in [0.7, 1.42]): the
//! final `1 + t` rounds by <= 0.5; `hi + u` by <= 0.25 (|t| < 0.42); r^2 q and `lo`
//! together by < 0.1 (they are below 0.1 in magnitude); truncation and the constants'
//! own rounding < 0.06. That is < 0.91 ulp, stated as [`EXP_MAX_ULPS_F32`] and
//! [`EXP_MAX_ULPS_F64`] = 1. Measured: f32 over every x in [-104, 0] (the ignored
//! `f32_exp_exhaustive` test, AVX-512 and AVX2) at most 0.849 ulp (x = -80.749) for normal
//! results and 0.746 subnormal spacings for subnormal ones; f64 against 128-bit MPFR on
//! 340 000 points (`f64_exp_within_stated_ulps`) at most 0.838 ulp. AVX2 gives the
//! same maxima at the same arguments. For results in the subnormal range the final `ldexp` adds one
//! rounding of at most half the subnormal spacing: the error is then below 1 ulp of the
//! unscaled y (relative 2u) plus half the smallest subnormal, exactly the "2u relative
//! plus eta absolute" per operation that `fuzzing::enclosure::allowance` already allows.
//!
//! Domain: every x (results overflow to +inf past ln(MAX)), tested on x <= 0 (the
//! engine's arguments: scores minus their running maximum or minus lse) and on
//! x in [0, 88] / [0, 709].

use super::Lanes;
use crate::scalar::Real;

/// The stated bound on the f32 SIMD exp's error, in ulps of the correctly rounded
/// result, for normal results (see the module docs for subnormal ones).
pub const EXP_MAX_ULPS_F32: f64 = 1.0;
/// The stated bound on the f64 SIMD exp's error, in ulps (as for f32).
pub const EXP_MAX_ULPS_F64: f64 = 1.0;

const LOG2E: f64 = std::f64::consts::LOG2_E;
/// 1 / (k + 2)! for k = 0..=11.
const INV_FACT: [f64; 12] = [
    1.0 / 2.0,
    1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 120.0,
    1.0 / 720.0,
    1.0 / 5040.0,
    1.0 / 40320.0,
    1.0 / 362880.0,
    1.0 / 3628800.0,
    1.0 / 39916800.0,
    1.0 / 479001600.0,
    1.0 / 6227020800.0,
];

/// e^x lane-wise by the algorithm above, for `V::Elem` f32 or f64.
#[inline(always)]
pub(crate) fn exp<V: Lanes>(v: V, x: V::R) -> V::R {
    let is_f32 = std::mem::size_of::<V::Elem>() == 4;
    let c = |a: f64| v.splat(V::Elem::from_f64(a));
    let (x_lo, x_hi, ln2_hi, ln2_lo, terms) = if is_f32 {
        // 0.693359375 = 355 / 512; ln 2 - 355/512 rounded to f32.
        (-110.0, 89.0, 0.693359375, -2.121_944_400_546_905_8e-4, 7)
    } else {
        (
            -760.0,
            710.0,
            f64::from_bits(0x3FE6_2E42_FEE0_0000),
            f64::from_bits(0x3DEA_39EF_3579_3C76),
            12,
        )
    };
    // max(lo, x) and min(hi, .) return their second operand on NaN: NaN survives.
    let x = v.min(c(x_hi), v.max(c(x_lo), x));
    let n = v.round(v.mul(x, c(LOG2E)));
    let hi = v.fma(n, c(-ln2_hi), x);
    let lo = v.mul(n, c(-ln2_lo));
    let r = v.add(hi, lo);
    let mut q = c(INV_FACT[terms - 1]);
    for &k in INV_FACT[..terms - 1].iter().rev() {
        q = v.fma(q, r, c(k));
    }
    let r2 = v.mul(r, r);
    let t = v.add(hi, v.fma(r2, q, lo));
    let y = v.add(c(1.0), t);
    v.ldexp(y, n)
}

#[cfg(test)]
mod tests {
    use crate::simd::{exp_slice_with, Isa};

    /// |y - e^x| in ulps of e^x's binade (f32: reference from f64 exp, whose own error
    /// is 2^-29 f32 ulps). Subnormal results count in subnormal spacings.
    fn ulps_f32(x: f32, y: f32) -> f64 {
        let r = (x as f64).exp();
        let ulp = if r < f32::MIN_POSITIVE as f64 {
            f32::from_bits(1) as f64
        } else {
            2f64.powi(r.log2().floor() as i32 - 23)
        };
        (y as f64 - r).abs() / ulp
    }

    fn isas() -> Vec<Isa> {
        vec![Isa::Avx512, Isa::Avx2]
    }

    /// A stride through every f32 in [-110, 88.7] plus the special values: the error
    /// stays within the stated bound (normal results) and the subnormal allowance.
    #[test]
    fn f32_exp_within_stated_ulps() {
        let mut xs: Vec<f32> = Vec::new();
        // All negative floats down to -110 by bit pattern, stride 61; positives too.
        let stop = (-110.0f32).to_bits();
        let mut b = 0x8000_0000u32;
        while b <= stop {
            xs.push(f32::from_bits(b));
            b += 61;
        }
        let mut b = 0u32;
        while f32::from_bits(b) < 88.7 {
            xs.push(f32::from_bits(b));
            b += 61;
        }
        xs.extend([
            f32::NEG_INFINITY,
            -0.0,
            0.0,
            -1e-45,
            -87.0,
            -103.0,
            -103.97,
            -104.0,
        ]);
        for isa in isas() {
            let mut ys = vec![0.0f32; xs.len()];
            if exp_slice_with(isa, &xs, &mut ys).is_none() {
                continue;
            }
            let (mut worst, mut worst_sub) = (0.0f64, 0.0f64);
            for (&x, &y) in xs.iter().zip(&ys) {
                let e = ulps_f32(x, y);
                if (x as f64).exp() < f32::MIN_POSITIVE as f64 {
                    worst_sub = worst_sub.max(e);
                } else {
                    worst = worst.max(e);
                }
            }
            eprintln!("f32 exp {isa:?}: max {worst:.4} ulp (normal), {worst_sub:.4} (subnormal)");
            assert!(worst <= super::EXP_MAX_ULPS_F32, "{isa:?}: {worst} ulp");
            // 1 ulp of the unscaled value (<= 1 spacing here) + half a spacing.
            assert!(worst_sub <= 1.5, "{isa:?}: subnormal {worst_sub}");
            let mut sp = [0.0f32; 3];
            exp_slice_with(isa, &[f32::NEG_INFINITY, f32::NAN, 100.0], &mut sp).unwrap();
            assert_eq!(sp[0], 0.0);
            assert!(sp[1].is_nan());
            assert_eq!(sp[2], f32::INFINITY);
        }
    }

    /// Every f32 x <= 0 (about 1.1e9 values; a few seconds in release):
    /// `cargo test --release --lib exhaustive -- --ignored --nocapture` (scripts/test.sh
    /// runs it, so CI does).
    #[test]
    #[ignore]
    fn f32_exp_exhaustive() {
        let stop = (-104.0f32).to_bits();
        for isa in isas() {
            let mut worst = (0.0f64, 0.0f32);
            let mut worst_sub = (0.0f64, 0.0f32);
            let mut xs = vec![0.0f32; 1 << 20];
            let mut ys = vec![0.0f32; 1 << 20];
            // An ISA this CPU lacks is skipped before anything is measured (the CI
            // machine of stop 22 had no AVX-512: the old loop scored its untouched
            // zero outputs and failed with 2^23 ulps at x = -0).
            if exp_slice_with(isa, &xs[..1], &mut ys[..1]).is_none() {
                eprintln!("f32 exp {isa:?} exhaustive: skipped, not supported by this CPU");
                continue;
            }
            let mut b = 0x8000_0000u32;
            while b <= stop {
                let len = xs.len().min((stop - b + 1) as usize);
                for (i, x) in xs[..len].iter_mut().enumerate() {
                    *x = f32::from_bits(b + i as u32);
                }
                exp_slice_with(isa, &xs[..len], &mut ys[..len]).expect("support was checked above");
                for (&x, &y) in xs[..len].iter().zip(&ys[..len]) {
                    let e = ulps_f32(x, y);
                    let w = if (x as f64).exp() < f32::MIN_POSITIVE as f64 {
                        &mut worst_sub
                    } else {
                        &mut worst
                    };
                    if e > w.0 {
                        *w = (e, x);
                    }
                }
                b += len as u32;
            }
            eprintln!("f32 exp {isa:?} exhaustive: normal {worst:?}, subnormal {worst_sub:?}");
            assert!(worst.0 <= super::EXP_MAX_ULPS_F32);
        }
    }

    /// f64 against 128-bit MPFR: random x over [-746, 0] and [0, 709], tiny |x|, and
    /// the special values.
    #[test]
    fn f64_exp_within_stated_ulps() {
        use rug::Float;
        let mut rng = crate::rng::SplitMix64::new(7);
        let mut xs: Vec<f64> = (0..200_000).map(|_| rng.range(-746.0, 0.0)).collect();
        xs.extend((0..50_000).map(|_| rng.range(-1.0, 1.0)));
        xs.extend((0..50_000).map(|_| rng.range(0.0, 709.0)));
        xs.extend((0..20_000).map(|i| -(2f64.powi(-(i % 1000))) * rng.uniform()));
        xs.extend((0..20_000).map(|_| rng.range(-745.2, -708.0)));
        for isa in isas() {
            let mut ys = vec![0.0f64; xs.len()];
            if exp_slice_with(isa, &xs, &mut ys).is_none() {
                continue;
            }
            let (mut worst, mut worst_sub) = (0.0f64, 0.0f64);
            for (&x, &y) in xs.iter().zip(&ys) {
                let r = Float::with_val(128, x).exp();
                let rf = r.to_f64();
                // The spacing of the binade holding e^x (subnormal spacing below).
                let ulp = f64::from_bits(rf.to_bits() + 1) - rf;
                // Divide in MPFR: near the underflow threshold the difference itself is
                // below f64's subnormal spacing.
                let e = ((Float::with_val(128, y) - &r).abs() / ulp).to_f64();
                if rf < f64::MIN_POSITIVE {
                    worst_sub = worst_sub.max(e);
                } else {
                    worst = worst.max(e);
                }
            }
            eprintln!("f64 exp {isa:?}: max {worst:.4} ulp (normal), {worst_sub:.4} (subnormal)");
            assert!(worst <= super::EXP_MAX_ULPS_F64, "{isa:?}: {worst} ulp");
            assert!(worst_sub <= 1.5, "{isa:?}: subnormal {worst_sub}");
            let mut sp = [0.0f64; 3];
            exp_slice_with(isa, &[f64::NEG_INFINITY, f64::NAN, 800.0], &mut sp).unwrap();
            assert_eq!(sp[0], 0.0);
            assert!(sp[1].is_nan());
            assert_eq!(sp[2], f64::INFINITY);
        }
    }
}
