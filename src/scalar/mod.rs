//! The floating-point scalar trait the production kernels are generic over.
//!
//! One algorithm, several number types: the exact engine is written once against
//! [`Real`] and instantiated for `f32` and `f64`. Every operation the kernels use is
//! listed here, so the rounding behaviour a test must allow for is visible in one place.
//!
//! [`Field`] is the arithmetic of the polynomial engine's low-rank algorithm, and
//! [`matmul`] the strided matrix products it is made of: a leaf module pair (they use
//! nothing above them), so every layer can take both.

pub mod matmul;

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{Add, AddAssign, Div, DivAssign, Mul, MulAssign, Neg, Sub, SubAssign};

/// A binary IEEE-754 floating-point type the engines compute in.
///
/// All arithmetic is the type's own correctly rounded arithmetic (round to nearest);
/// `exp` and `ln` are the platform's libm functions, within about one ulp.
pub trait Real:
    Copy
    + Send
    + Sync
    + Debug
    + Display
    + Default
    + PartialOrd
    + Sum
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + 'static
{
    /// Additive identity.
    const ZERO: Self;
    /// Multiplicative identity.
    const ONE: Self;
    /// Negative infinity: the log-sum-exp of a row that sees no key.
    const NEG_INFINITY: Self;
    /// Unit roundoff u = 2^-p (p = significand bits): |fl(x op y) - x op y| <= u |x op y|.
    const UNIT_ROUNDOFF: f64;
    /// The dtype name used in files and messages (`"F32"`, `"F64"`).
    const DTYPE: &'static str;
    /// The largest finite value, as f64.
    const MAX_FINITE: f64;
    /// The smallest positive normal value, as f64.
    const MIN_NORMAL: f64;

    /// Nearest value of this type (exact for f64 -> f64).
    fn from_f64(x: f64) -> Self;
    /// Exact widening to f64.
    fn to_f64(self) -> f64;
    /// e^x (libm).
    fn exp(self) -> Self;
    /// Natural logarithm (libm).
    fn ln(self) -> Self;
    /// Square root (correctly rounded).
    fn sqrt(self) -> Self;
    /// The larger of two values (IEEE maxNum: a NaN loses).
    fn max(self, other: Self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// True unless NaN or an infinity.
    fn is_finite(self) -> bool;
    /// True for NaN.
    fn is_nan(self) -> bool;
    /// Little-endian bytes of one value, appended to `out` (for files).
    fn write_le(self, out: &mut Vec<u8>);
    /// The value in the first `size_of::<Self>()` little-endian bytes of `b`.
    /// `b` must hold at least that many bytes; callers check lengths first.
    fn read_le(b: &[u8]) -> Self;
}

macro_rules! impl_real {
    ($t:ty, $name:literal, $mant:expr) => {
        impl Real for $t {
            const ZERO: Self = 0.0;
            const ONE: Self = 1.0;
            const NEG_INFINITY: Self = <$t>::NEG_INFINITY;
            const UNIT_ROUNDOFF: f64 = 1.0 / (1u64 << $mant) as f64;
            const DTYPE: &'static str = $name;
            const MAX_FINITE: f64 = <$t>::MAX as f64;
            const MIN_NORMAL: f64 = <$t>::MIN_POSITIVE as f64;
            #[inline]
            fn from_f64(x: f64) -> Self {
                x as $t
            }
            #[inline]
            fn to_f64(self) -> f64 {
                self as f64
            }
            #[inline]
            fn exp(self) -> Self {
                <$t>::exp(self)
            }
            #[inline]
            fn ln(self) -> Self {
                <$t>::ln(self)
            }
            #[inline]
            fn sqrt(self) -> Self {
                <$t>::sqrt(self)
            }
            #[inline]
            fn max(self, other: Self) -> Self {
                <$t>::max(self, other)
            }
            #[inline]
            fn abs(self) -> Self {
                <$t>::abs(self)
            }
            #[inline]
            fn is_finite(self) -> bool {
                <$t>::is_finite(self)
            }
            #[inline]
            fn is_nan(self) -> bool {
                <$t>::is_nan(self)
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

impl_real!(f32, "F32", 24);
impl_real!(f64, "F64", 53);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_roundoff_matches_machine_epsilon() {
        // u = eps / 2 for round-to-nearest.
        assert_eq!(<f32 as Real>::UNIT_ROUNDOFF, f32::EPSILON as f64 / 2.0);
        assert_eq!(<f64 as Real>::UNIT_ROUNDOFF, f64::EPSILON / 2.0);
    }

    #[test]
    fn le_round_trip() {
        let mut b = Vec::new();
        1.5f32.write_le(&mut b);
        (-2.25f64).write_le(&mut b);
        assert_eq!(f32::read_le(&b[..4]), 1.5);
        assert_eq!(f64::read_le(&b[4..]), -2.25);
    }
}

/// The arithmetic the polynomial engine's low-rank algorithm needs: a field with
/// exact integer constants. Implemented here for `f64` (the engine's only float
/// arithmetic for the algorithm: inputs of either dtype are widened, docs/math.md
/// §4.3); the tests implement it for exact rationals, the `bits` and `formats` sweeps
/// for MPFR and for narrow binary formats, so the
/// one generic algorithm can be checked with `==`
/// against the direct formula (docs/math.md §5.1, question 1).
///
/// Values are passed by `Clone` (free for floats), so non-`Copy` exact types work.
pub trait Field:
    Clone
    + Send
    + Sync
    + Debug
    + PartialEq
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + 'static
{
    /// 0.
    fn zero() -> Self;
    /// 1.
    fn one() -> Self;
    /// The integer `k` (exact for the integers that occur: multinomial coefficients).
    fn from_u64(k: u64) -> Self;
    /// True if the value is exactly zero.
    fn is_zero(&self) -> bool {
        *self == Self::zero()
    }
    /// C = A B (C += A B with `accumulate`) for strided matrices: the dense products
    /// the polynomial engine's contractions are made of (docs/math.md §3.4, §3.5). The
    /// default is a plain loop in the type's own arithmetic (exact for exact types); `f64`
    /// overrides it with packed SIMD kernels (the `gemm` crate).
    fn matmul(
        c: matmul::StridedMut<'_, Self>,
        a: matmul::Strided<'_, Self>,
        b: matmul::Strided<'_, Self>,
        accumulate: bool,
    ) {
        matmul::matmul_generic(c, a, b, accumulate)
    }
}

macro_rules! impl_field {
    ($t:ty) => {
        impl Field for $t {
            #[inline]
            fn zero() -> Self {
                0.0
            }
            #[inline]
            fn one() -> Self {
                1.0
            }
            #[inline]
            fn from_u64(k: u64) -> Self {
                k as $t
            }
            fn matmul(
                c: matmul::StridedMut<'_, Self>,
                a: matmul::Strided<'_, Self>,
                b: matmul::Strided<'_, Self>,
                accumulate: bool,
            ) {
                matmul::matmul_gemm(c, a, b, accumulate)
            }
        }
    };
}

impl_field!(f64);
