//! Storage formats of tensors in files (IEEE binary16, bfloat16, binary32, binary64):
//! one generic description ([`Storage`]) used to read, write and round values.
//!
//! Every format's values convert to `f64` exactly. [`round_to`] rounds an `f64` to a
//! format with round-to-nearest-even, correctly (one rounding of the exact value:
//! the result is computed in `f64` by scaling with a power of two, which is exact, and
//! `round_ties_even`; subnormals of the target and overflow to infinity as IEEE 754
//! says), so it does not inherit the double rounding of a conversion through `f32`.

use half::{bf16, f16};

/// A floating-point storage format: its precision and range, and its bytes.
pub trait Storage: Copy + Send + Sync + 'static {
    /// The safetensors name (`F16`, `BF16`, `F32`, `F64`).
    const NAME: &'static str;
    /// Significand bits including the implicit one (11, 8, 24, 53).
    const PRECISION: u32;
    /// The exponent of the smallest normal number (-14, -126, -126, -1022).
    const EMIN: i32;
    /// The exponent of the largest finite number (15, 127, 127, 1023).
    const EMAX: i32;
    /// The value, exactly.
    fn to_f64(self) -> f64;
    /// `x` rounded to nearest even (the argument is already representable when it
    /// comes from [`round_to`], so this conversion is exact there).
    fn from_f64_exact(x: f64) -> Self;
    /// Little-endian bytes of one value, appended to `out`.
    fn write_le(self, out: &mut Vec<u8>);
    /// The value in the first `size_of::<Self>()` bytes of `b` (callers check lengths).
    fn read_le(b: &[u8]) -> Self;
    /// Unit roundoff `u = 2^-PRECISION`.
    fn unit_roundoff() -> f64 {
        pow2(-(Self::PRECISION as i32))
    }
    /// `x` rounded to this format, to nearest even.
    fn round(x: f64) -> Self {
        Self::from_f64_exact(round_to(x, Self::PRECISION, Self::EMIN, Self::EMAX))
    }
}

/// `2^k` built from its bits, exactly (no libm `exp2`, whose accuracy the standard
/// library does not promise): a normal number for `-1022 <= k <= 1023`, a subnormal
/// down to `2^-1074`, 0 below, `+inf` above.
pub fn pow2(k: i32) -> f64 {
    if k > 1023 {
        f64::INFINITY
    } else if k >= -1022 {
        f64::from_bits(((k + 1023) as u64) << 52)
    } else if k >= -1074 {
        f64::from_bits(1u64 << (k + 1074))
    } else {
        0.0
    }
}

/// `x` rounded to nearest even into the format with `precision` significand bits and
/// exponents `emin..=emax`, returned as the (exactly representable) `f64`.
pub fn round_to(x: f64, precision: u32, emin: i32, emax: i32) -> f64 {
    if !x.is_finite() || x == 0.0 || precision >= 53 {
        return x;
    }
    let a = x.abs();
    // Exponent of a: 2^e <= a < 2^(e+1), clamped at emin (the subnormal spacing).
    // (An f64 subnormal reads as -1023; every target's emin is above that.)
    let e = (a.to_bits() >> 52) as i32 - 1023;
    let q = e.max(emin) - (precision as i32 - 1); // spacing 2^q
                                                  // Exact: power-of-two scalings (pow2 is exact) with results in the normal range
                                                  // (|x| 2^-q < 2^precision, and r is a multiple of 2^q of at most 2^(e+1)).
    let scaled = x * pow2(-q);
    let r = scaled.round_ties_even() * pow2(q);
    // Overflow: beyond max + half an ulp rounds to infinity (ties to even go up too,
    // as the largest finite significand is odd).
    // Exact: 2 - 2^(1-p) has p <= 53 significant bits, times a power of two.
    let max = (2.0 - pow2(1 - precision as i32)) * pow2(emax);
    if r.abs() > max {
        f64::INFINITY.copysign(x)
    } else {
        r
    }
}

macro_rules! native {
    ($t:ty, $name:literal, $p:expr, $emin:expr, $emax:expr) => {
        impl Storage for $t {
            const NAME: &'static str = $name;
            const PRECISION: u32 = $p;
            const EMIN: i32 = $emin;
            const EMAX: i32 = $emax;
            fn to_f64(self) -> f64 {
                self as f64
            }
            fn from_f64_exact(x: f64) -> Self {
                x as $t
            }
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
            fn read_le(b: &[u8]) -> Self {
                let mut a = [0u8; std::mem::size_of::<$t>()];
                a.copy_from_slice(&b[..std::mem::size_of::<$t>()]);
                <$t>::from_le_bytes(a)
            }
        }
    };
}

macro_rules! half_format {
    ($t:ty, $name:literal, $p:expr, $emin:expr, $emax:expr) => {
        impl Storage for $t {
            const NAME: &'static str = $name;
            const PRECISION: u32 = $p;
            const EMIN: i32 = $emin;
            const EMAX: i32 = $emax;
            fn to_f64(self) -> f64 {
                <$t>::to_f64(self)
            }
            fn from_f64_exact(x: f64) -> Self {
                <$t>::from_f64(x)
            }
            fn write_le(self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_bits().to_le_bytes());
            }
            fn read_le(b: &[u8]) -> Self {
                <$t>::from_bits(u16::from_le_bytes([b[0], b[1]]))
            }
        }
    };
}

native!(f32, "F32", 24, -126, 127);
native!(f64, "F64", 53, -1022, 1023);
half_format!(f16, "F16", 11, -14, 15);
half_format!(bf16, "BF16", 8, -126, 127);

#[cfg(test)]
mod tests {
    use super::*;

    /// The formats' constants against their bit patterns: unit roundoff, largest
    /// finite value (and the overflow threshold: max + half an ulp rounds to inf),
    /// smallest subnormal.
    #[test]
    fn format_constants_are_exact() {
        assert_eq!(
            <f16 as Storage>::unit_roundoff(),
            f64::from_bits(0x3F40_0000_0000_0000)
        ); // 2^-11
        assert_eq!(
            <bf16 as Storage>::unit_roundoff(),
            f64::from_bits(0x3F70_0000_0000_0000)
        ); // 2^-8
        assert_eq!(<f64 as Storage>::unit_roundoff(), f64::EPSILON / 2.0);
        let f16_max = f64::from(f16::MAX);
        assert_eq!(f16_max, 65504.0);
        assert_eq!(round_to(f16_max, 11, -14, 15), f16_max);
        assert_eq!(round_to(65519.99, 11, -14, 15), f16_max);
        assert_eq!(round_to(65520.0, 11, -14, 15), f64::INFINITY);
        let bf16_max = f64::from(bf16::MAX);
        assert_eq!(round_to(bf16_max, 8, -126, 127), bf16_max);
        assert_eq!(
            round_to(-bf16_max * (1.0 + 1.0 / 256.0), 8, -126, 127),
            f64::NEG_INFINITY
        );
        assert_eq!(
            round_to(f64::from(f16::from_bits(1)), 11, -14, 15),
            f64::from(f16::from_bits(1))
        );
        assert_eq!(pow2(-1074), f64::from_bits(1));
        assert_eq!(pow2(1023), f64::from_bits(0x7FE0_0000_0000_0000));
        assert_eq!((pow2(-1075), pow2(1024)), (0.0, f64::INFINITY));
    }

    #[test]
    fn rounding_matches_the_native_conversions() {
        let xs = [
            1.0 + 3.0 * f64::EPSILON,
            0.1,
            -1e-30,
            3.4e38,
            3.41e38,
            65519.0,
            65520.0,
            6.0e-8,
            2.98e-8,
            1e-45,
        ];
        for x in xs {
            assert_eq!(round_to(x, 24, -126, 127), (x as f32) as f64, "{x}");
        }
        // f16: 65520 is the overflow tie (rounds to infinity), 65519 to 65504.
        assert_eq!(<f16 as Storage>::round(65519.0).to_f64(), 65504.0);
        assert!(<f16 as Storage>::round(65520.0).to_f64().is_infinite());
        // Smallest f16 subnormal 2^-24: a value just above half of it rounds up.
        assert_eq!(
            <f16 as Storage>::round(2f64.powi(-25) * 1.0000001).to_f64(),
            2f64.powi(-24)
        );
        assert_eq!(<f16 as Storage>::round(2f64.powi(-25)).to_f64(), 0.0); // tie to even (zero)
                                                                           // bf16: 1 + 2^-8 is a tie (to 1); just above it rounds up, even when the
                                                                           // excess lies in the low 32 bits of the f64.
        assert_eq!(<bf16 as Storage>::round(1.0 + 2f64.powi(-8)).to_f64(), 1.0);
        assert_eq!(
            <bf16 as Storage>::round(1.0 + 2f64.powi(-8) + 2f64.powi(-40)).to_f64(),
            1.0 + 2f64.powi(-7)
        );
    }
}
