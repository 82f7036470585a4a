//! The one-lane fallback: plain `T` arithmetic and libm's `exp` (docs/math.md §5.4: exp
//! within 1 ulp is libm's own claim here).

use super::Lanes;
use crate::scalar::Real;
use std::marker::PhantomData;

/// One lane of `T`, for CPUs without AVX2 and for `Real` types other than f32/f64.
#[derive(Clone, Copy, Debug, Default)]
pub struct Scalar<T>(PhantomData<T>);

impl<T> Scalar<T> {
    /// The token (scalar code runs everywhere).
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T: Real> Lanes for Scalar<T> {
    type Elem = T;
    type R = T;
    const WIDTH: usize = 1;
    const REGISTERS: usize = 16;

    #[inline(always)]
    fn splat(self, x: T) -> T {
        x
    }
    #[inline(always)]
    unsafe fn load(self, p: *const T) -> T {
        *p
    }
    #[inline(always)]
    unsafe fn load_part(self, _p: *const T, _len: usize, fill: T) -> T {
        fill // len < WIDTH = 1 means len == 0
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut T, x: T) {
        *p = x;
    }
    #[inline(always)]
    unsafe fn store_part(self, _p: *mut T, _x: T, _len: usize) {}
    #[inline(always)]
    fn add(self, a: T, b: T) -> T {
        a + b
    }
    #[inline(always)]
    fn sub(self, a: T, b: T) -> T {
        a - b
    }
    #[inline(always)]
    fn mul(self, a: T, b: T) -> T {
        a * b
    }
    #[inline(always)]
    fn fma(self, a: T, b: T, c: T) -> T {
        a * b + c
    }
    #[inline(always)]
    fn max(self, a: T, b: T) -> T {
        if b >= a || a.is_nan() {
            b
        } else {
            a
        }
    }
    #[inline(always)]
    fn min(self, a: T, b: T) -> T {
        if b <= a || a.is_nan() {
            b
        } else {
            a
        }
    }
    #[inline(always)]
    fn round(self, a: T) -> T {
        T::from_f64(a.to_f64().round_ties_even())
    }
    #[inline(always)]
    fn ldexp(self, y: T, n: T) -> T {
        // Two exact-power factors keep every intermediate normal (see `exp`).
        let n = n.to_f64() as i32;
        let (n1, n2) = (n.div_euclid(2), n - n.div_euclid(2));
        y * T::from_f64(2f64.powi(n1)) * T::from_f64(2f64.powi(n2))
    }
    #[inline(always)]
    fn reduce_max(self, x: T) -> T {
        x
    }
    #[inline(always)]
    fn reduce_add(self, x: T) -> T {
        x
    }
    #[inline(always)]
    fn exp(self, x: T) -> T {
        x.exp()
    }
}
