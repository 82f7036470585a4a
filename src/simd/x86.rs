//! x86-64 instruction sets: AVX-512 (F, DQ) and AVX2 (+ FMA). One register type per
//! set (`__m512` / `__m256`) holds either 16/8 f32 or 8/4 f64 lanes; every method
//! branches on the element type, a branch the compiler removes per instantiation.

// The AVX-512 intrinsics and `target_feature(enable = "avx512f")` are stable since
// Rust 1.89: the workspace's rust-version is 1.89 for this module.

use super::{Kernel, Lanes};
use crate::scalar::Real;
use std::any::TypeId;
use std::arch::x86_64::*;
use std::marker::PhantomData;

#[inline(always)]
fn is_f32<T: 'static>() -> bool {
    TypeId::of::<T>() == TypeId::of::<f32>()
}

/// AVX-512 lanes of `T` (f32 or f64): 16 f32 or 8 f64 per 512-bit register.
/// Only [`dispatch`](super::dispatch) creates it, after checking the CPU.
#[derive(Clone, Copy, Debug)]
pub struct Avx512<T>(PhantomData<T>);

/// AVX2 + FMA lanes of `T` (f32 or f64): 8 f32 or 4 f64 per 256-bit register.
/// Only [`dispatch`](super::dispatch) creates it, after checking the CPU.
#[derive(Clone, Copy, Debug)]
pub struct Avx2<T>(PhantomData<T>);

/// Runs `k` with [`Avx512`] lanes.
///
/// # Safety
/// The CPU must support AVX-512 F and DQ, AVX2 and FMA, and `T` must be f32 or f64.
#[target_feature(enable = "avx512f,avx512dq,avx2,fma")]
pub(super) unsafe fn run_avx512<T: Real, K: Kernel<T>>(k: K) -> K::Out {
    k.run(Avx512::<T>(PhantomData))
}

/// Runs `k` with [`Avx2`] lanes.
///
/// # Safety
/// The CPU must support AVX2 and FMA, and `T` must be f32 or f64.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn run_avx2<T: Real, K: Kernel<T>>(k: K) -> K::Out {
    k.run(Avx2::<T>(PhantomData))
}

// SAFETY (every `unsafe` block below): the token exists only after `dispatch` checked
// the CPU features these intrinsics need; pointer validity is the caller's contract
// stated on `Lanes`.
impl<T: Real> Lanes for Avx512<T> {
    type Elem = T;
    type R = __m512;
    const WIDTH: usize = 64 / std::mem::size_of::<T>();
    const REGISTERS: usize = 32;

    #[inline(always)]
    fn splat(self, x: T) -> __m512 {
        unsafe {
            if is_f32::<T>() {
                _mm512_set1_ps(x.to_f64() as f32)
            } else {
                _mm512_castpd_ps(_mm512_set1_pd(x.to_f64()))
            }
        }
    }
    #[inline(always)]
    unsafe fn load(self, p: *const T) -> __m512 {
        if is_f32::<T>() {
            _mm512_loadu_ps(p as *const f32)
        } else {
            _mm512_castpd_ps(_mm512_loadu_pd(p as *const f64))
        }
    }
    #[inline(always)]
    unsafe fn load_part(self, p: *const T, len: usize, fill: T) -> __m512 {
        let f = self.splat(fill);
        if is_f32::<T>() {
            let m: __mmask16 = ((1u32 << len) - 1) as u16;
            _mm512_mask_loadu_ps(f, m, p as *const f32)
        } else {
            let m: __mmask8 = ((1u32 << len) - 1) as u8;
            _mm512_castpd_ps(_mm512_mask_loadu_pd(
                _mm512_castps_pd(f),
                m,
                p as *const f64,
            ))
        }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut T, x: __m512) {
        if is_f32::<T>() {
            _mm512_storeu_ps(p as *mut f32, x)
        } else {
            _mm512_storeu_pd(p as *mut f64, _mm512_castps_pd(x))
        }
    }
    #[inline(always)]
    unsafe fn store_part(self, p: *mut T, x: __m512, len: usize) {
        if is_f32::<T>() {
            _mm512_mask_storeu_ps(p as *mut f32, ((1u32 << len) - 1) as u16, x)
        } else {
            let m = ((1u32 << len) - 1) as u8;
            _mm512_mask_storeu_pd(p as *mut f64, m, _mm512_castps_pd(x))
        }
    }
    #[inline(always)]
    fn add(self, a: __m512, b: __m512) -> __m512 {
        unsafe {
            if is_f32::<T>() {
                _mm512_add_ps(a, b)
            } else {
                _mm512_castpd_ps(_mm512_add_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)))
            }
        }
    }
    #[inline(always)]
    fn sub(self, a: __m512, b: __m512) -> __m512 {
        unsafe {
            if is_f32::<T>() {
                _mm512_sub_ps(a, b)
            } else {
                _mm512_castpd_ps(_mm512_sub_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)))
            }
        }
    }
    #[inline(always)]
    fn mul(self, a: __m512, b: __m512) -> __m512 {
        unsafe {
            if is_f32::<T>() {
                _mm512_mul_ps(a, b)
            } else {
                _mm512_castpd_ps(_mm512_mul_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)))
            }
        }
    }
    #[inline(always)]
    fn fma(self, a: __m512, b: __m512, c: __m512) -> __m512 {
        unsafe {
            if is_f32::<T>() {
                _mm512_fmadd_ps(a, b, c)
            } else {
                _mm512_castpd_ps(_mm512_fmadd_pd(
                    _mm512_castps_pd(a),
                    _mm512_castps_pd(b),
                    _mm512_castps_pd(c),
                ))
            }
        }
    }
    #[inline(always)]
    fn max(self, a: __m512, b: __m512) -> __m512 {
        unsafe {
            if is_f32::<T>() {
                _mm512_max_ps(a, b)
            } else {
                _mm512_castpd_ps(_mm512_max_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)))
            }
        }
    }
    #[inline(always)]
    fn reduce_max(self, x: __m512) -> T {
        unsafe {
            if is_f32::<T>() {
                T::from_f64(_mm512_reduce_max_ps(x) as f64)
            } else {
                T::from_f64(_mm512_reduce_max_pd(_mm512_castps_pd(x)))
            }
        }
    }
    #[inline(always)]
    fn reduce_add(self, x: __m512) -> T {
        unsafe {
            if is_f32::<T>() {
                T::from_f64(_mm512_reduce_add_ps(x) as f64)
            } else {
                T::from_f64(_mm512_reduce_add_pd(_mm512_castps_pd(x)))
            }
        }
    }
    #[inline(always)]
    fn exp(self, x: __m512) -> __m512 {
        super::exp::exp(self, x)
    }
    #[inline(always)]
    fn round(self, a: __m512) -> __m512 {
        unsafe {
            if is_f32::<T>() {
                _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a)
            } else {
                _mm512_castpd_ps(_mm512_roundscale_pd::<
                    { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
                >(_mm512_castps_pd(a)))
            }
        }
    }
    #[inline(always)]
    fn min(self, a: __m512, b: __m512) -> __m512 {
        unsafe {
            if is_f32::<T>() {
                _mm512_min_ps(a, b)
            } else {
                _mm512_castpd_ps(_mm512_min_pd(_mm512_castps_pd(a), _mm512_castps_pd(b)))
            }
        }
    }
    // y 2^n with one rounding (also into the subnormals): vscalefps/pd.
    #[inline(always)]
    fn ldexp(self, y: __m512, n: __m512) -> __m512 {
        unsafe {
            if is_f32::<T>() {
                _mm512_scalef_ps(y, n)
            } else {
                _mm512_castpd_ps(_mm512_scalef_pd(_mm512_castps_pd(y), _mm512_castps_pd(n)))
            }
        }
    }
}

impl<T: Real> Lanes for Avx2<T> {
    type Elem = T;
    type R = __m256;
    const WIDTH: usize = 32 / std::mem::size_of::<T>();
    const REGISTERS: usize = 16;

    #[inline(always)]
    fn splat(self, x: T) -> __m256 {
        unsafe {
            if is_f32::<T>() {
                _mm256_set1_ps(x.to_f64() as f32)
            } else {
                _mm256_castpd_ps(_mm256_set1_pd(x.to_f64()))
            }
        }
    }
    #[inline(always)]
    unsafe fn load(self, p: *const T) -> __m256 {
        if is_f32::<T>() {
            _mm256_loadu_ps(p as *const f32)
        } else {
            _mm256_castpd_ps(_mm256_loadu_pd(p as *const f64))
        }
    }
    #[inline(always)]
    unsafe fn load_part(self, p: *const T, len: usize, fill: T) -> __m256 {
        let m = part_mask::<T>(len);
        let f = self.splat(fill);
        if is_f32::<T>() {
            let x = _mm256_maskload_ps(p as *const f32, m);
            _mm256_blendv_ps(f, x, _mm256_castsi256_ps(m))
        } else {
            let x = _mm256_castpd_ps(_mm256_maskload_pd(p as *const f64, m));
            _mm256_blendv_ps(f, x, _mm256_castsi256_ps(m))
        }
    }
    #[inline(always)]
    unsafe fn store(self, p: *mut T, x: __m256) {
        if is_f32::<T>() {
            _mm256_storeu_ps(p as *mut f32, x)
        } else {
            _mm256_storeu_pd(p as *mut f64, _mm256_castps_pd(x))
        }
    }
    #[inline(always)]
    unsafe fn store_part(self, p: *mut T, x: __m256, len: usize) {
        let m = part_mask::<T>(len);
        if is_f32::<T>() {
            _mm256_maskstore_ps(p as *mut f32, m, x)
        } else {
            _mm256_maskstore_pd(p as *mut f64, m, _mm256_castps_pd(x))
        }
    }
    #[inline(always)]
    fn add(self, a: __m256, b: __m256) -> __m256 {
        unsafe {
            if is_f32::<T>() {
                _mm256_add_ps(a, b)
            } else {
                _mm256_castpd_ps(_mm256_add_pd(_mm256_castps_pd(a), _mm256_castps_pd(b)))
            }
        }
    }
    #[inline(always)]
    fn sub(self, a: __m256, b: __m256) -> __m256 {
        unsafe {
            if is_f32::<T>() {
                _mm256_sub_ps(a, b)
            } else {
                _mm256_castpd_ps(_mm256_sub_pd(_mm256_castps_pd(a), _mm256_castps_pd(b)))
            }
        }
    }
    #[inline(always)]
    fn mul(self, a: __m256, b: __m256) -> __m256 {
        unsafe {
            if is_f32::<T>() {
                _mm256_mul_ps(a, b)
            } else {
                _mm256_castpd_ps(_mm256_mul_pd(_mm256_castps_pd(a), _mm256_castps_pd(b)))
            }
        }
    }
    #[inline(always)]
    fn fma(self, a: __m256, b: __m256, c: __m256) -> __m256 {
        unsafe {
            if is_f32::<T>() {
                _mm256_fmadd_ps(a, b, c)
            } else {
                _mm256_castpd_ps(_mm256_fmadd_pd(
                    _mm256_castps_pd(a),
                    _mm256_castps_pd(b),
                    _mm256_castps_pd(c),
                ))
            }
        }
    }
    #[inline(always)]
    fn max(self, a: __m256, b: __m256) -> __m256 {
        unsafe {
            if is_f32::<T>() {
                _mm256_max_ps(a, b)
            } else {
                _mm256_castpd_ps(_mm256_max_pd(_mm256_castps_pd(a), _mm256_castps_pd(b)))
            }
        }
    }
    #[inline(always)]
    fn reduce_max(self, x: __m256) -> T {
        unsafe {
            if is_f32::<T>() {
                let h = _mm_max_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
                let h = _mm_max_ps(h, _mm_movehl_ps(h, h));
                let h = _mm_max_ss(h, _mm_shuffle_ps::<1>(h, h));
                T::from_f64(_mm_cvtss_f32(h) as f64)
            } else {
                let x = _mm256_castps_pd(x);
                let h = _mm_max_pd(_mm256_castpd256_pd128(x), _mm256_extractf128_pd::<1>(x));
                let h = _mm_max_sd(h, _mm_unpackhi_pd(h, h));
                T::from_f64(_mm_cvtsd_f64(h))
            }
        }
    }
    #[inline(always)]
    fn reduce_add(self, x: __m256) -> T {
        unsafe {
            if is_f32::<T>() {
                let h = _mm_add_ps(_mm256_castps256_ps128(x), _mm256_extractf128_ps::<1>(x));
                let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
                let h = _mm_add_ss(h, _mm_shuffle_ps::<1>(h, h));
                T::from_f64(_mm_cvtss_f32(h) as f64)
            } else {
                let x = _mm256_castps_pd(x);
                let h = _mm_add_pd(_mm256_castpd256_pd128(x), _mm256_extractf128_pd::<1>(x));
                let h = _mm_add_sd(h, _mm_unpackhi_pd(h, h));
                T::from_f64(_mm_cvtsd_f64(h))
            }
        }
    }
    #[inline(always)]
    fn exp(self, x: __m256) -> __m256 {
        super::exp::exp(self, x)
    }
    #[inline(always)]
    fn round(self, a: __m256) -> __m256 {
        unsafe {
            if is_f32::<T>() {
                _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(a)
            } else {
                _mm256_castpd_ps(_mm256_round_pd::<
                    { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
                >(_mm256_castps_pd(a)))
            }
        }
    }
    #[inline(always)]
    fn min(self, a: __m256, b: __m256) -> __m256 {
        unsafe {
            if is_f32::<T>() {
                _mm256_min_ps(a, b)
            } else {
                _mm256_castpd_ps(_mm256_min_pd(_mm256_castps_pd(a), _mm256_castps_pd(b)))
            }
        }
    }
    // y 2^n as (y 2^n1) 2^n2 with n1 = floor(n / 2): both factors are normal over
    // the clamped range, the first product is exact, the second rounds once.
    #[inline(always)]
    fn ldexp(self, y: __m256, n: __m256) -> __m256 {
        unsafe {
            if is_f32::<T>() {
                let ni = _mm256_cvtps_epi32(n);
                let n1 = _mm256_srai_epi32::<1>(ni);
                let n2 = _mm256_sub_epi32(ni, n1);
                let bias = _mm256_set1_epi32(127);
                let p1 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n1, bias)));
                let p2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(_mm256_add_epi32(n2, bias)));
                _mm256_mul_ps(_mm256_mul_ps(y, p1), p2)
            } else {
                let ni = _mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(_mm256_castps_pd(n)));
                // n1 = floor(n / 2) (AVX2 has no 64-bit arithmetic shift).
                let n1 = _mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(_mm256_floor_pd(_mm256_mul_pd(
                    _mm256_castps_pd(n),
                    _mm256_set1_pd(0.5),
                ))));
                let n2 = _mm256_sub_epi64(ni, n1);
                let bias = _mm256_set1_epi64x(1023);
                let p1 = _mm256_castsi256_pd(_mm256_slli_epi64::<52>(_mm256_add_epi64(n1, bias)));
                let p2 = _mm256_castsi256_pd(_mm256_slli_epi64::<52>(_mm256_add_epi64(n2, bias)));
                _mm256_castpd_ps(_mm256_mul_pd(_mm256_mul_pd(_mm256_castps_pd(y), p1), p2))
            }
        }
    }
}

/// The AVX2 lane mask selecting the first `len` lanes of `T`.
#[inline(always)]
unsafe fn part_mask<T: 'static>(len: usize) -> __m256i {
    if is_f32::<T>() {
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(len as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    } else {
        _mm256_cmpgt_epi64(
            _mm256_set1_epi64x(len as i64),
            _mm256_setr_epi64x(0, 1, 2, 3),
        )
    }
}
