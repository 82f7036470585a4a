//! Portable SIMD for the exact engine's tile kernels (docs/math.md §2) and a vectorised
//! `exp` with a stated error bound (docs/math.md §5.4: the rounding the
//! enclosure allowance must cover).
//!
//! One algorithm, several instruction sets: kernels are written once against the
//! [`Lanes`] trait (a register of `WIDTH` values of the element type `T`) and
//! instantiated per instruction set by [`dispatch`], which picks at run time:
//!
//! - [`Avx512`] (x86-64 with AVX-512 F/DQ and FMA): 16 f32 or 8 f64 lanes;
//! - [`Avx2`] (x86-64 with AVX2 and FMA): 8 f32 or 4 f64 lanes;
//! - [`Scalar`] (anything else, and any `Real` type other than f32/f64): one lane,
//!   libm's `exp`.
//!
//! A `Lanes` value is a zero-sized token that only [`dispatch`] creates, after the CPU
//! has been checked, so the safe methods on it cannot execute unsupported instructions.
//!
//! Determinism: a given instruction set produces the same bits for any thread count
//! (every kernel has one fixed operation order). The SIMD paths and the scalar fallback
//! may differ in the last bits (different summation orders within the bounds of
//! docs/math.md §5.4's gamma_k, and [`exp`](Lanes::exp) versus libm's), so results can
//! differ between CPUs with and without AVX-512/AVX2.

mod exp;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use exp::{EXP_MAX_ULPS_F32, EXP_MAX_ULPS_F64};
pub use scalar::Scalar;
#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2, Avx512};

use crate::scalar::Real;
use std::any::TypeId;

/// A SIMD register of [`WIDTH`](Lanes::WIDTH) values of `Self::Elem`, with the
/// operations the tile kernels use. Implementors are zero-sized tokens proving that the
/// CPU supports the instructions; only [`dispatch`] hands them out.
///
/// Pointer arguments must be valid for the number of elements the method reads or
/// writes (`WIDTH`, or `len` for the partial forms); that is why those are `unsafe`.
pub trait Lanes: Copy + Send + Sync + 'static {
    /// The element type.
    type Elem: Real;
    /// The register type.
    type R: Copy;
    /// Number of lanes.
    const WIDTH: usize;
    /// Number of architectural vector registers (sizes the microkernels' blocking).
    const REGISTERS: usize;

    /// All lanes equal to `x`.
    fn splat(self, x: Self::Elem) -> Self::R;
    /// Loads `WIDTH` elements from `p`.
    ///
    /// # Safety
    /// `p` must be valid for `WIDTH` reads.
    unsafe fn load(self, p: *const Self::Elem) -> Self::R;
    /// Loads `len < WIDTH` elements from `p`; the other lanes are `fill`.
    ///
    /// # Safety
    /// `p` must be valid for `len` reads.
    unsafe fn load_part(self, p: *const Self::Elem, len: usize, fill: Self::Elem) -> Self::R;
    /// Stores all lanes at `p`.
    ///
    /// # Safety
    /// `p` must be valid for `WIDTH` writes.
    unsafe fn store(self, p: *mut Self::Elem, x: Self::R);
    /// Stores the first `len < WIDTH` lanes at `p`.
    ///
    /// # Safety
    /// `p` must be valid for `len` writes.
    unsafe fn store_part(self, p: *mut Self::Elem, x: Self::R, len: usize);
    /// `a + b`.
    fn add(self, a: Self::R, b: Self::R) -> Self::R;
    /// `a - b`.
    fn sub(self, a: Self::R, b: Self::R) -> Self::R;
    /// `a * b`.
    fn mul(self, a: Self::R, b: Self::R) -> Self::R;
    /// `a * b + c` with one rounding (fused) on the SIMD paths, two on [`Scalar`].
    fn fma(self, a: Self::R, b: Self::R, c: Self::R) -> Self::R;
    /// Lane-wise maximum (`b` when either is NaN).
    fn max(self, a: Self::R, b: Self::R) -> Self::R;
    /// The largest lane (fixed reduction tree).
    fn reduce_max(self, x: Self::R) -> Self::Elem;
    /// The sum of the lanes (fixed reduction tree).
    fn reduce_add(self, x: Self::R) -> Self::Elem;
    /// Lane-wise minimum (`b` when either is NaN).
    fn min(self, a: Self::R, b: Self::R) -> Self::R;
    /// Rounds each lane to the nearest integer (ties to even).
    fn round(self, a: Self::R) -> Self::R;
    /// `y 2^n` for integer-valued `n` with one rounding, for the ranges the exp uses
    /// (`|n| <= 160` for f32, `|n| <= 1100` for f64).
    fn ldexp(self, y: Self::R, n: Self::R) -> Self::R;
    /// Lane-wise e^x within [`EXP_MAX_ULPS_F32`] / [`EXP_MAX_ULPS_F64`] (see
    /// `simd/exp.rs`); [`Scalar`] uses libm.
    fn exp(self, x: Self::R) -> Self::R;
}

/// A computation generic over the instruction set, run by [`dispatch`] with the best
/// [`Lanes`] for `T` on this CPU (Rust has no generic closures, hence a trait).
pub trait Kernel<T: Real> {
    /// The result.
    type Out;
    /// Runs the computation with lanes `v`. Implementations should be
    /// `#[inline(always)]` so that the instruction set's code is generated inline.
    fn run<V: Lanes<Elem = T>>(self, v: V) -> Self::Out;
}

/// Which instruction set [`dispatch`] uses for `T` on this CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// [`Avx512`].
    Avx512,
    /// [`Avx2`].
    Avx2,
    /// [`Scalar`].
    Scalar,
}

/// True when `T` is `f32` or `f64`, the types the SIMD paths implement.
#[inline(always)]
pub(crate) fn is_simd_type<T: 'static>() -> bool {
    TypeId::of::<T>() == TypeId::of::<f32>() || TypeId::of::<T>() == TypeId::of::<f64>()
}

/// The instruction set [`dispatch`] picks for `T` here. `POLYATTN_SIMD=scalar|avx2`
/// (read once) caps it, for testing and for comparing paths.
pub fn isa<T: Real>() -> Isa {
    if !is_simd_type::<T>() {
        return Isa::Scalar;
    }
    detected()
}

fn detected() -> Isa {
    use std::sync::OnceLock;
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let cap = std::env::var("POLYATTN_SIMD").unwrap_or_default();
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 = std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma");
            let avx512 = avx2
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512dq");
            match cap.as_str() {
                "scalar" => Isa::Scalar,
                "avx2" if avx2 => Isa::Avx2,
                _ if avx512 => Isa::Avx512,
                _ if avx2 => Isa::Avx2,
                _ => Isa::Scalar,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = cap;
            Isa::Scalar
        }
    })
}

/// Runs `k` with the best [`Lanes`] for `T` on this CPU (see [`isa`]).
#[inline]
pub fn dispatch<T: Real, K: Kernel<T>>(k: K) -> K::Out {
    match isa::<T>() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `isa` checked the CPU features and that T is f32 or f64.
        Isa::Avx512 => unsafe { x86::run_avx512(k) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above.
        Isa::Avx2 => unsafe { x86::run_avx2(k) },
        _ => k.run(Scalar::<T>::new()),
    }
}

/// Runs `k` with a given instruction set if this CPU and `T` support it (tests compare
/// the paths); `None` otherwise.
pub fn dispatch_with<T: Real, K: Kernel<T>>(isa: Isa, k: K) -> Option<K::Out> {
    if isa == Isa::Scalar {
        return Some(k.run(Scalar::<T>::new()));
    }
    #[cfg(target_arch = "x86_64")]
    {
        if !is_simd_type::<T>() {
            return None;
        }
        let avx2 = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        let avx512 = avx2
            && std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512dq");
        match isa {
            // SAFETY: features checked just above, T is f32 or f64.
            Isa::Avx512 if avx512 => Some(unsafe { x86::run_avx512(k) }),
            // SAFETY: as above.
            Isa::Avx2 if avx2 => Some(unsafe { x86::run_avx2(k) }),
            _ => None,
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

/// `out[i] = e^{x[i]}` with the best [`Lanes::exp`] here (a convenience for tests and
/// for measuring the exp's error).
pub fn exp_slice<T: Real>(x: &[T], out: &mut [T]) {
    dispatch(ExpSlice { x, out });
}

/// `out[i] = e^{x[i]}` with a given instruction set (`None` if unsupported here).
pub fn exp_slice_with<T: Real>(isa: Isa, x: &[T], out: &mut [T]) -> Option<()> {
    dispatch_with(isa, ExpSlice { x, out })
}

struct ExpSlice<'a, T> {
    x: &'a [T],
    out: &'a mut [T],
}

impl<T: Real> Kernel<T> for ExpSlice<'_, T> {
    type Out = ();
    #[inline(always)]
    fn run<V: Lanes<Elem = T>>(self, v: V) {
        let n = self.x.len().min(self.out.len());
        let w = V::WIDTH;
        let mut i = 0;
        // SAFETY: every access is within [0, n) of both slices.
        unsafe {
            while i + w <= n {
                let y = v.exp(v.load(self.x.as_ptr().add(i)));
                v.store(self.out.as_mut_ptr().add(i), y);
                i += w;
            }
            if i < n {
                let y = v.exp(v.load_part(self.x.as_ptr().add(i), n - i, T::ZERO));
                v.store_part(self.out.as_mut_ptr().add(i), y, n - i);
            }
        }
    }
}
