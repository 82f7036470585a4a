//! Tile kernels: the small dense products the tiled engine is made of (docs/math.md §2:
//! `S = tau Q K^T`, `O += P V`, `dP = dO V^T`, `dV += P^T dO`, `dK += dS^T Q`,
//! `dQ += dS K`).
//!
//! Each kernel is written once, generic over [`Lanes`] (the element type and the
//! instruction set, see [`crate::simd`]), as register-blocked microkernels: `MR` rows
//! of the output times `NV` registers of columns, accumulated in registers over the
//! inner dimension with fused multiply-adds and stored once. Every output element is
//! a sum in one fixed order (inner index increasing), so results do not depend on how
//! tiles are scheduled across threads; docs/math.md §5.4's gamma_k bounds cover any order
//! and FMA, so the enclosure allowance is unchanged.
//!
//! Layouts are row-major. The key operand of `abt_packed` is a packed transpose
//! (`pack_transposed`): per key block, `d` rows of `BLOCK_K` keys, zero-padded, so that
//! the score tile's columns are whole registers.

use crate::scalar::Real;
use crate::simd::Lanes;

/// Rows of Q per tile (query block, B_r).
pub const BLOCK_Q: usize = 64;
/// Rows of K and V per tile (key block, B_c); a multiple of 4 x 16 (four AVX-512 f32
/// registers). `fuzzing::enclosure::allowance` counts rescales with this block size.
pub const BLOCK_K: usize = 64;

/// Rows per microkernel.
const MR: usize = 4;
/// Registers of columns per microkernel with 32 vector registers (AVX-512); half
/// that with 16 (AVX2), so that accumulators and operands stay in registers.
const NV: usize = 4;

/// Registers of columns per microkernel for `V`.
#[inline(always)]
fn nv<V: Lanes>() -> usize {
    if V::REGISTERS >= 32 {
        NV
    } else {
        NV / 2
    }
}
/// Rows per microkernel when the output has fewer than `NV` registers of columns
/// (small heads): enough independent accumulators to cover the FMA latency.
const MR_NARROW: usize = 8;

/// `x . y` summed left to right.
#[inline]
pub fn dot<T: Real>(x: &[T], y: &[T]) -> T {
    let mut s = T::ZERO;
    for (&a, &b) in x.iter().zip(y) {
        s += a * b;
    }
    s
}

/// `x *= alpha`.
#[inline]
pub fn scale<T: Real>(alpha: T, x: &mut [T]) {
    for xi in x {
        *xi *= alpha;
    }
}

/// `y += alpha * x` (scalar reference form).
#[inline]
pub fn axpy<T: Real>(alpha: T, x: &[T], y: &mut [T]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// `out = alpha A B^T` (scalar reference form of [`abt_packed`]): `a` is `m x k`, `b`
/// is `n x k`, `out` is `m x n`.
pub fn abt<T: Real>(a: &[T], b: &[T], k: usize, alpha: T, out: &mut [T]) {
    let n = b.len() / k;
    for (a_row, out_row) in a.chunks_exact(k).zip(out.chunks_exact_mut(n)) {
        for (o, b_row) in out_row.iter_mut().zip(b.chunks_exact(k)) {
            *o = alpha * dot(a_row, b_row);
        }
    }
}

/// `out += A B` (scalar reference form of [`ab_acc_lanes`]): `a` is `m x k`, `b` is
/// `k x n`, `out` is `m x n`.
pub fn ab_acc<T: Real>(a: &[T], b: &[T], n: usize, out: &mut [T]) {
    let k = b.len() / n;
    for (a_row, out_row) in a.chunks_exact(k).zip(out.chunks_exact_mut(n)) {
        for (&a_ik, b_row) in a_row.iter().zip(b.chunks_exact(n)) {
            axpy(a_ik, b_row, out_row);
        }
    }
}

/// `out += A^T B` (scalar reference form of [`atb_acc_lanes`]): `a` is `m x k`, `b` is
/// `m x n`, `out` is `k x n`.
pub fn atb_acc<T: Real>(a: &[T], b: &[T], k: usize, out: &mut [T]) {
    let n = out.len() / k;
    for (a_row, b_row) in a.chunks_exact(k).zip(b.chunks_exact(n)) {
        for (&a_ik, out_row) in a_row.iter().zip(out.chunks_exact_mut(n)) {
            axpy(a_ik, b_row, out_row);
        }
    }
}

/// Packs the `n x d` row-major `m` as per-block transposes: block `b` holds, for
/// `l < d` and `j < BLOCK_K`, `m[(b BLOCK_K + j) d + l]` at `b d BLOCK_K + l BLOCK_K + j`
/// (zero past the last row). Length `ceil(n / BLOCK_K) d BLOCK_K`: O(n d) memory.
pub fn pack_transposed<T: Real>(m: &[T], d: usize) -> Vec<T> {
    let n = m.len() / d;
    let blocks = n.div_ceil(BLOCK_K);
    let mut out = vec![T::ZERO; blocks * d * BLOCK_K];
    for (b, blk) in out.chunks_exact_mut(d * BLOCK_K).enumerate() {
        let rows = BLOCK_K.min(n - b * BLOCK_K);
        for j in 0..rows {
            let row = &m[(b * BLOCK_K + j) * d..(b * BLOCK_K + j + 1) * d];
            for (l, &x) in row.iter().enumerate() {
                blk[l * BLOCK_K + j] = x;
            }
        }
    }
    out
}

/// `s = alpha A Kt`: `a` is `rows x d` (row-major), `kt` one packed block (`d x
/// BLOCK_K`, see [`pack_transposed`]), `s` is `rows x BLOCK_K`.
#[inline(always)]
pub fn abt_packed<V: Lanes>(
    v: V,
    a: &[V::Elem],
    d: usize,
    kt: &[V::Elem],
    alpha: V::Elem,
    s: &mut [V::Elem],
) {
    let rows = a.len() / d;
    assert!(
        kt.len() >= d * BLOCK_K
            && s.len() >= rows * BLOCK_K
            && BLOCK_K.is_multiple_of(NV * V::WIDTH)
    );
    let step = nv::<V>() * V::WIDTH;
    let mut r = 0;
    // SAFETY: the microkernels read rows [r, r + MR) of a (d each), kt's d x BLOCK_K
    // block and write rows of s, all within the lengths asserted above.
    unsafe {
        while r + MR <= rows {
            for c in (0..BLOCK_K).step_by(step) {
                abt_chunk::<V, MR>(
                    v,
                    a.as_ptr().add(r * d),
                    d,
                    kt.as_ptr().add(c),
                    alpha,
                    s.as_mut_ptr().add(r * BLOCK_K + c),
                );
            }
            r += MR;
        }
        while r < rows {
            for c in (0..BLOCK_K).step_by(step) {
                abt_chunk::<V, 1>(
                    v,
                    a.as_ptr().add(r * d),
                    d,
                    kt.as_ptr().add(c),
                    alpha,
                    s.as_mut_ptr().add(r * BLOCK_K + c),
                );
            }
            r += 1;
        }
    }
}

/// `M` rows times `nv::<V>()` registers of [`abt_packed`].
#[inline(always)]
unsafe fn abt_chunk<V: Lanes, const M: usize>(
    v: V,
    a: *const V::Elem,
    d: usize,
    kt: *const V::Elem,
    alpha: V::Elem,
    s: *mut V::Elem,
) {
    if V::REGISTERS >= 32 {
        abt_mk::<V, M, NV>(v, a, d, kt, alpha, s)
    } else {
        abt_mk::<V, M, { NV / 2 }>(v, a, d, kt, alpha, s)
    }
}

#[inline(always)]
unsafe fn abt_mk<V: Lanes, const M: usize, const Q: usize>(
    v: V,
    a: *const V::Elem,
    d: usize,
    kt: *const V::Elem,
    alpha: V::Elem,
    s: *mut V::Elem,
) {
    let w = V::WIDTH;
    let mut acc = [[v.splat(V::Elem::ZERO); Q]; M];
    for l in 0..d {
        let kl = kt.add(l * BLOCK_K);
        let mut b = [v.splat(V::Elem::ZERO); Q];
        for (c, bc) in b.iter_mut().enumerate() {
            *bc = v.load(kl.add(c * w));
        }
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let x = v.splat(*a.add(r * d + l));
            for c in 0..Q {
                acc_r[c] = v.fma(x, b[c], acc_r[c]);
            }
        }
    }
    let al = v.splat(alpha);
    for (r, acc_r) in acc.iter().enumerate() {
        for (c, &x) in acc_r.iter().enumerate() {
            v.store(s.add(r * BLOCK_K + c * w), v.mul(x, al));
        }
    }
}

/// `out += A B`: `a` is `rows x kk` with row stride `lda` (`kk <= lda`), `b` is
/// `kk x n` row-major, `out` is `rows x n` row-major.
#[inline(always)]
pub fn ab_acc_lanes<V: Lanes>(
    v: V,
    a: &[V::Elem],
    lda: usize,
    kk: usize,
    b: &[V::Elem],
    n: usize,
    out: &mut [V::Elem],
) {
    let rows = out.len() / n;
    assert!(kk <= lda && a.len() >= (rows.max(1) - 1) * lda + kk && b.len() >= kk * n);
    // SAFETY: reads a's rows [r, r + M) (kk each, stride lda), b's kk rows and columns
    // [c, c + width) < n; writes the same block of out.
    unsafe {
        let mut r = 0;
        while n < nv::<V>() * V::WIDTH && r + MR_NARROW <= rows {
            ab_cols::<V, MR_NARROW>(
                v,
                a.as_ptr().add(r * lda),
                lda,
                1,
                kk,
                b.as_ptr(),
                n,
                out.as_mut_ptr().add(r * n),
            );
            r += MR_NARROW;
        }
        while r + MR <= rows {
            ab_cols::<V, MR>(
                v,
                a.as_ptr().add(r * lda),
                lda,
                1,
                kk,
                b.as_ptr(),
                n,
                out.as_mut_ptr().add(r * n),
            );
            r += MR;
        }
        while r < rows {
            ab_cols::<V, 1>(
                v,
                a.as_ptr().add(r * lda),
                lda,
                1,
                kk,
                b.as_ptr(),
                n,
                out.as_mut_ptr().add(r * n),
            );
            r += 1;
        }
    }
}

/// `M` output rows, all columns, of [`ab_acc_lanes`] (`a_i = lda, a_t = 1`) or
/// [`atb_acc_lanes`] (`a_i = 1, a_t = lda`); see [`ab_mk`].
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn ab_cols<V: Lanes, const M: usize>(
    v: V,
    a: *const V::Elem,
    a_i: usize,
    a_t: usize,
    kk: usize,
    b: *const V::Elem,
    n: usize,
    out: *mut V::Elem,
) {
    let w = V::WIDTH;
    let mut c = 0;
    while V::REGISTERS >= 32 && c + NV * w <= n {
        ab_mk::<V, M, NV>(v, a, a_i, a_t, kk, b.add(c), n, out.add(c), w);
        c += NV * w;
    }
    while c + NV / 2 * w <= n {
        ab_mk::<V, M, { NV / 2 }>(v, a, a_i, a_t, kk, b.add(c), n, out.add(c), w);
        c += NV / 2 * w;
    }
    while c + w <= n {
        ab_mk::<V, M, 1>(v, a, a_i, a_t, kk, b.add(c), n, out.add(c), w);
        c += w;
    }
    if c < n {
        ab_mk::<V, M, 1>(v, a, a_i, a_t, kk, b.add(c), n, out.add(c), n - c);
    }
}

/// The shared microkernel of [`ab_acc_lanes`] and [`atb_acc_lanes`]: for `i < M` output rows and
/// `Q` registers of columns (the last one `last` lanes wide),
/// `out[i][:] += sum_{t < kk} a[t * a_t + i * a_i] b[t][:]` (`b` row stride `n`).
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn ab_mk<V: Lanes, const M: usize, const Q: usize>(
    v: V,
    a: *const V::Elem,
    a_i: usize,
    a_t: usize,
    kk: usize,
    b: *const V::Elem,
    n: usize,
    out: *mut V::Elem,
    last: usize,
) {
    let w = V::WIDTH;
    let z = V::Elem::ZERO;
    let full = last == w;
    let mut acc = [[v.splat(z); Q]; M];
    for (i, acc_i) in acc.iter_mut().enumerate() {
        for (c, x) in acc_i.iter_mut().enumerate() {
            let p = out.add(i * n + c * w);
            *x = if full || c + 1 < Q {
                v.load(p)
            } else {
                v.load_part(p, last, z)
            };
        }
    }
    for t in 0..kk {
        let bt = b.add(t * n);
        let mut bv = [v.splat(z); Q];
        for (c, x) in bv.iter_mut().enumerate() {
            let p = bt.add(c * w);
            *x = if full || c + 1 < Q {
                v.load(p)
            } else {
                v.load_part(p, last, z)
            };
        }
        for (i, acc_i) in acc.iter_mut().enumerate() {
            let x = v.splat(*a.add(t * a_t + i * a_i));
            for c in 0..Q {
                acc_i[c] = v.fma(x, bv[c], acc_i[c]);
            }
        }
    }
    for (i, acc_i) in acc.iter().enumerate() {
        for (c, &x) in acc_i.iter().enumerate() {
            let p = out.add(i * n + c * w);
            if full || c + 1 < Q {
                v.store(p, x)
            } else {
                v.store_part(p, x, last)
            }
        }
    }
}

/// `out += A^T B`: `a` is `rows x cols` with row stride `lda` (`cols <= lda`), `b` is
/// `rows x n` row-major, `out` is `cols x n` row-major.
#[inline(always)]
pub fn atb_acc_lanes<V: Lanes>(
    v: V,
    a: &[V::Elem],
    lda: usize,
    cols: usize,
    b: &[V::Elem],
    n: usize,
    out: &mut [V::Elem],
) {
    let rows = b.len() / n;
    assert!(cols <= lda && out.len() >= cols * n && a.len() >= (rows.max(1) - 1) * lda + cols);
    // SAFETY: reads a's columns [i, i + M) of rows < rows, b's rows and columns < n;
    // writes out's rows [i, i + M) < cols.
    unsafe {
        let mut i = 0;
        let (ap, op) = (a.as_ptr(), out.as_mut_ptr());
        while n < nv::<V>() * V::WIDTH && i + MR_NARROW <= cols {
            ab_cols::<V, MR_NARROW>(v, ap.add(i), 1, lda, rows, b.as_ptr(), n, op.add(i * n));
            i += MR_NARROW;
        }
        while i + MR <= cols {
            ab_cols::<V, MR>(v, ap.add(i), 1, lda, rows, b.as_ptr(), n, op.add(i * n));
            i += MR;
        }
        while i < cols {
            ab_cols::<V, 1>(v, ap.add(i), 1, lda, rows, b.as_ptr(), n, op.add(i * n));
            i += 1;
        }
    }
}

/// e^x of one value with the lanes' exp (the same function as the tiles use).
#[inline(always)]
pub(super) fn exp1<V: Lanes>(v: V, x: V::Elem) -> V::Elem {
    v.reduce_max(v.exp(v.splat(x)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::{dispatch_with, Isa, Kernel};

    struct Products<'a> {
        a: &'a [f64],
        b: &'a [f64],
        n: usize,
    }

    const R: usize = 19; // rows of a
    const K: usize = 13; // columns of a

    /// Runs the three products on small integer data with one instruction set.
    impl Kernel<f64> for Products<'_> {
        type Out = (Vec<f64>, Vec<f64>, Vec<f64>);
        fn run<V: Lanes<Elem = f64>>(self, v: V) -> Self::Out {
            let (a, b, n) = (self.a, self.b, self.n);
            let kt = pack_transposed(&b[..n * K], K); // b as n keys of K
            let mut s = vec![0.0; R * BLOCK_K];
            abt_packed(v, a, K, &kt[..K * BLOCK_K], 2.0, &mut s);
            let mut ab = vec![1.0; R * n];
            ab_acc_lanes(v, a, K, K, &b[..K * n], n, &mut ab);
            let mut atb = vec![0.0; K * n];
            atb_acc_lanes(v, a, K, K, &b[..R * n], n, &mut atb);
            (s, ab, atb)
        }
    }

    #[test]
    fn products_agree_with_definitions() {
        // Small integers: every product and sum is exact, so == is the right test.
        // Widths n cover full, half and partial registers and the narrow kernels.
        let a: Vec<f64> = (0..R * K).map(|x| (x % 7) as f64 - 2.0).collect();
        let b: Vec<f64> = (0..R * 70).map(|x| (x % 5) as f64 - 1.0).collect();
        for n in [5usize, 9, 21, 37, 64, 70] {
            for isa in [Isa::Scalar, Isa::Avx2, Isa::Avx512] {
                let Some((s, ab, atb)) = dispatch_with(isa, Products { a: &a, b: &b, n }) else {
                    continue;
                };
                for i in 0..R {
                    for j in 0..BLOCK_K {
                        let want = if j < n.min(BLOCK_K) {
                            2.0 * (0..K).map(|l| a[i * K + l] * b[j * K + l]).sum::<f64>()
                        } else {
                            0.0
                        };
                        assert_eq!(s[i * BLOCK_K + j], want, "{isa:?} abt n={n}");
                    }
                    for j in 0..n {
                        let want: f64 = (0..K).map(|l| a[i * K + l] * b[l * n + j]).sum();
                        assert_eq!(ab[i * n + j], 1.0 + want, "{isa:?} ab n={n}");
                    }
                }
                for i in 0..K {
                    for j in 0..n {
                        let want: f64 = (0..R).map(|l| a[l * K + i] * b[l * n + j]).sum();
                        assert_eq!(atb[i * n + j], want, "{isa:?} atb n={n}");
                    }
                }
                // The scalar reference forms agree too.
                let mut ab2 = vec![1.0; R * n];
                ab_acc(&a, &b[..K * n], n, &mut ab2);
                assert_eq!(ab, ab2);
                let mut atb2 = vec![0.0; K * n];
                atb_acc(&a, &b[..R * n], K, &mut atb2);
                assert_eq!(atb, atb2);
            }
        }
    }
}
