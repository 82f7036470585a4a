//! Dense matrix products, the building block of the chunked low-rank contractions
//! (docs/math.md §3.4, §3.5): chunk states R^T X, state applications L Z and the in-chunk
//! kernel blocks L R^T are all small GEMMs.
//!
//! One entry point, [`Field::matmul`]: its default is
//! [`matmul_generic`], a plain triple loop in the type's own arithmetic (exact for
//! exact types, which is what lets the algorithm be checked with `==` against the
//! direct formulas, docs/math.md §5.1, question 1); `f64` overrides it with
//! [`matmul_gemm`] (packed SIMD kernels of the `gemm` crate, runtime CPU dispatch,
//! single-threaded: the callers parallelise over independent products, so every result
//! is the same for any thread count).
//!
//! Rounding: a product entry is a sum of k terms whatever the order the kernel adds
//! them in, so the polynomial engine's a priori estimate (`poly::rho::rounding_rho`:
//! gamma_k over the longest chain of additions) covers any blocking of the sum.

use super::Field;

/// A read-only strided matrix: entry (i, j) is `data[i * rs + j * cs]`.
#[derive(Clone, Copy, Debug)]
pub struct Strided<'a, S> {
    /// The storage (every addressed entry lies inside it).
    pub data: &'a [S],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

/// A writable strided matrix: entry (i, j) is `data[i * rs + j * cs]`.
#[derive(Debug)]
pub struct StridedMut<'a, S> {
    /// The storage.
    pub data: &'a mut [S],
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

/// One past the largest index a `rows x cols` view with strides `rs`, `cs` addresses
/// (0 when empty).
fn extent(rows: usize, cols: usize, rs: usize, cs: usize) -> usize {
    if rows == 0 || cols == 0 {
        0
    } else {
        (rows - 1) * rs + (cols - 1) * cs + 1
    }
}

impl<'a, S> Strided<'a, S> {
    /// A row-major `rows x cols` matrix (row stride `cols`).
    pub fn row_major(data: &'a [S], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }
    /// The transpose (a view, no copy).
    pub fn t(self) -> Self {
        Self {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }
    fn in_bounds(&self) -> bool {
        extent(self.rows, self.cols, self.rs, self.cs) <= self.data.len()
    }
}

impl<'a, S> StridedMut<'a, S> {
    /// A row-major `rows x cols` matrix (row stride `cols`).
    pub fn row_major(data: &'a mut [S], rows: usize, cols: usize) -> Self {
        Self {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }
    fn in_bounds(&self) -> bool {
        extent(self.rows, self.cols, self.rs, self.cs) <= self.data.len()
    }
}

fn check_shapes<S>(c: &StridedMut<'_, S>, a: &Strided<'_, S>, b: &Strided<'_, S>) {
    assert!(
        a.rows == c.rows && b.cols == c.cols && a.cols == b.rows,
        "matmul: shapes {}x{} = {}x{} * {}x{}",
        c.rows,
        c.cols,
        a.rows,
        a.cols,
        b.rows,
        b.cols
    );
    assert!(
        a.in_bounds() && b.in_bounds() && c.in_bounds(),
        "matmul: a view addresses past its storage"
    );
}

/// C = A B, or C += A B with `accumulate`, in `S`'s own arithmetic: entry (i, j) adds
/// A_il B_lj for l = 0, 1, ... in order (terms with A_il = 0 are skipped: exact for
/// exact types, and the same value for floats unless B holds infinities or NaN).
pub fn matmul_generic<S: Field>(
    c: StridedMut<'_, S>,
    a: Strided<'_, S>,
    b: Strided<'_, S>,
    accumulate: bool,
) {
    check_shapes(&c, &a, &b);
    let StridedMut {
        data, rs, cs, rows, ..
    } = c;
    for i in 0..rows {
        for j in 0..b.cols {
            let mut acc = if accumulate {
                data[i * rs + j * cs].clone()
            } else {
                S::zero()
            };
            for l in 0..a.cols {
                let x = &a.data[i * a.rs + l * a.cs];
                if !x.is_zero() {
                    acc = acc + x.clone() * b.data[l * b.rs + j * b.cs].clone();
                }
            }
            data[i * rs + j * cs] = acc;
        }
    }
}

/// [`matmul_generic`] for `f64` by the `gemm` crate (single-threaded; the
/// result depends only on the shapes, strides and the CPU's feature set).
pub fn matmul_gemm<T: Field + Copy>(
    c: StridedMut<'_, T>,
    a: Strided<'_, T>,
    b: Strided<'_, T>,
    accumulate: bool,
) {
    check_shapes(&c, &a, &b);
    let (m, n, k) = (c.rows, c.cols, a.cols);
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    c.data[i * c.rs + j * c.cs] = T::zero();
                }
            }
        }
        return;
    }
    let s = |x: usize| x as isize;
    // SAFETY: check_shapes verified that every entry each view addresses lies inside
    // its slice (non-negative strides, extent <= len); `c` is a unique borrow, so the
    // destination aliases neither operand; T is f64 (the only implementor calling
    // this), which gemm supports.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.data.as_mut_ptr(),
            s(c.cs),
            s(c.rs),
            accumulate,
            a.data.as_ptr(),
            s(a.cs),
            s(a.rs),
            b.data.as_ptr(),
            s(b.cs),
            s(b.rs),
            T::one(),
            T::one(),
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// gemm and the generic loop agree (small integers: exact in f64, so ==), for
    /// transposed views, accumulation and degenerate sizes.
    #[test]
    fn gemm_matches_the_generic_loop() {
        for &(m, n, k) in &[(1, 1, 1), (3, 5, 7), (17, 9, 33), (64, 3, 0), (0, 4, 2)] {
            let a: Vec<f64> = (0..m * k).map(|x| ((x * 7) % 11) as f64 - 5.0).collect();
            let b: Vec<f64> = (0..k * n).map(|x| ((x * 5) % 13) as f64 - 6.0).collect();
            let c0: Vec<f64> = (0..m * n).map(|x| (x % 3) as f64).collect();
            for acc in [false, true] {
                // A given transposed (stored k x m), B row-major.
                let at: Vec<f64> = (0..k * m).map(|x| a[(x % m) * k + x / m]).collect();
                let (mut c1, mut c2) = (c0.clone(), c0.clone());
                matmul_generic(
                    StridedMut::row_major(&mut c1, m, n),
                    Strided::row_major(&a, m, k),
                    Strided::row_major(&b, k, n),
                    acc,
                );
                matmul_gemm(
                    StridedMut::row_major(&mut c2, m, n),
                    Strided::row_major(&at, k, m).t(),
                    Strided::row_major(&b, k, n),
                    acc,
                );
                assert_eq!(c1, c2, "m={m} n={n} k={k} acc={acc}");
            }
        }
    }
}
