//! Owned row-major matrices, borrowed views, and stacks of matrices (heads).
//!
//! The production kernels work on contiguous row-major storage: row `i` of an
//! `rows x cols` matrix is `data[i * cols .. (i + 1) * cols]`. A [`Tensor3`] is a stack
//! of equally shaped matrices (`[heads, rows, cols]`, head-major), the layout of
//! PyTorch's contiguous `[heads, n, d]` tensors.

use crate::error::{Error, Result};
use crate::scalar::Real;

/// A borrowed row-major matrix.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a, T> {
    rows: usize,
    cols: usize,
    data: &'a [T],
}

impl<'a, T: Copy> MatRef<'a, T> {
    /// A view of `data` as a `rows x cols` matrix; `data.len()` must equal `rows * cols`.
    pub fn new(rows: usize, cols: usize, data: &'a [T]) -> Result<Self> {
        let want = rows
            .checked_mul(cols)
            .ok_or_else(|| Error::SizeOverflow(format!("{rows} x {cols} elements")))?;
        if data.len() != want {
            return Err(Error::ShapeMismatch {
                what: "matrix data length".into(),
                expected: format!("{rows} x {cols} = {want}"),
                got: data.len().to_string(),
            });
        }
        Ok(Self { rows, cols, data })
    }
    /// Number of rows.
    #[inline]
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Number of columns.
    #[inline]
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// The whole storage, row-major.
    #[inline]
    pub fn as_slice(&self) -> &'a [T] {
        self.data
    }
    /// Row `i` (panics if `i >= rows`; internal indexing only).
    #[inline]
    pub fn row(&self, i: usize) -> &'a [T] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
    /// Rows `start..end` as one contiguous slice.
    #[inline]
    pub fn rows_slice(&self, start: usize, end: usize) -> &'a [T] {
        &self.data[start * self.cols..end * self.cols]
    }
    /// Entry `(i, j)`.
    #[inline]
    pub fn at(&self, i: usize, j: usize) -> T {
        self.data[i * self.cols + j]
    }
    /// `[rows, cols]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }
}

/// An owned row-major matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix<T> {
    rows: usize,
    cols: usize,
    data: Vec<T>,
}

impl<T: Copy + Default> Matrix<T> {
    /// A `rows x cols` matrix of `T::default()` (zero for floats).
    pub fn zeros(rows: usize, cols: usize) -> Result<Self> {
        let n = rows
            .checked_mul(cols)
            .ok_or_else(|| Error::SizeOverflow(format!("{rows} x {cols} elements")))?;
        Ok(Self {
            rows,
            cols,
            data: vec![T::default(); n],
        })
    }
    /// Takes ownership of row-major `data`; its length must be `rows * cols`.
    pub fn from_vec(rows: usize, cols: usize, data: Vec<T>) -> Result<Self> {
        MatRef::new(rows, cols, &data)?;
        Ok(Self { rows, cols, data })
    }
    /// Builds entry `(i, j)` as `f(i, j)`.
    pub fn from_fn(rows: usize, cols: usize, mut f: impl FnMut(usize, usize) -> T) -> Result<Self> {
        let mut m = Self::zeros(rows, cols)?;
        for i in 0..rows {
            for j in 0..cols {
                m.data[i * cols + j] = f(i, j);
            }
        }
        Ok(m)
    }
    /// A borrowed view.
    #[inline]
    pub fn view(&self) -> MatRef<'_, T> {
        MatRef {
            rows: self.rows,
            cols: self.cols,
            data: &self.data,
        }
    }
    /// Number of rows.
    #[inline]
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Number of columns.
    #[inline]
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Entry `(i, j)`.
    #[inline]
    pub fn at(&self, i: usize, j: usize) -> T {
        self.data[i * self.cols + j]
    }
    /// Row `i`.
    #[inline]
    pub fn row(&self, i: usize) -> &[T] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }
    /// The storage, row-major.
    #[inline]
    pub fn as_slice(&self) -> &[T] {
        &self.data
    }
    /// The storage, row-major, mutable.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.data
    }
    /// The storage, consumed.
    pub fn into_vec(self) -> Vec<T> {
        self.data
    }
    /// `[rows, cols]`.
    pub fn shape(&self) -> [usize; 2] {
        [self.rows, self.cols]
    }
}

/// A stack of `heads` matrices of one shape `rows x cols`, stored head-major
/// (`[heads, rows, cols]` contiguous).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor3<T> {
    heads: usize,
    rows: usize,
    cols: usize,
    data: Vec<T>,
}

impl<T: Copy + Default> Tensor3<T> {
    /// Zeros of shape `[heads, rows, cols]`.
    pub fn zeros(heads: usize, rows: usize, cols: usize) -> Result<Self> {
        let n = checked_len(&[heads, rows, cols])?;
        Ok(Self {
            heads,
            rows,
            cols,
            data: vec![T::default(); n],
        })
    }
    /// Takes ownership of head-major `data`; its length must be `heads * rows * cols`.
    pub fn from_vec(heads: usize, rows: usize, cols: usize, data: Vec<T>) -> Result<Self> {
        let n = checked_len(&[heads, rows, cols])?;
        if data.len() != n {
            return Err(Error::ShapeMismatch {
                what: "tensor data length".into(),
                expected: format!("{heads} x {rows} x {cols} = {n}"),
                got: data.len().to_string(),
            });
        }
        Ok(Self {
            heads,
            rows,
            cols,
            data,
        })
    }
    /// Number of matrices.
    #[inline]
    pub fn heads(&self) -> usize {
        self.heads
    }
    /// Rows of each matrix.
    #[inline]
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Columns of each matrix.
    #[inline]
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// `[heads, rows, cols]`.
    pub fn shape(&self) -> [usize; 3] {
        [self.heads, self.rows, self.cols]
    }
    /// Matrix `h` as a view.
    pub fn head(&self, h: usize) -> MatRef<'_, T> {
        let len = self.rows * self.cols;
        MatRef {
            rows: self.rows,
            cols: self.cols,
            data: &self.data[h * len..(h + 1) * len],
        }
    }
    /// The storage, head-major.
    #[inline]
    pub fn as_slice(&self) -> &[T] {
        &self.data
    }
    /// The storage, mutable.
    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.data
    }
    /// The storage, consumed.
    pub fn into_vec(self) -> Vec<T> {
        self.data
    }
}

/// The most values one tensor the crate allocates from user-given sizes may hold:
/// 2^31 (16 GiB of f64). Larger requests get [`Error::SizeOverflow`] instead of an
/// out-of-memory abort.
pub const MAX_VALUES: usize = 1 << 31;

/// The product of `dims` when it is at most [`MAX_VALUES`], else a
/// [`Error::SizeOverflow`] naming `what` and the shape: the check to make before
/// allocating a tensor whose size comes from user input.
pub fn checked_alloc_len(what: &str, dims: &[usize]) -> Result<usize> {
    match checked_len(dims) {
        Ok(len) if len <= MAX_VALUES => Ok(len),
        _ => Err(Error::SizeOverflow(format!(
            "{what} of shape {dims:?} would hold more than 2^31 values"
        ))),
    }
}

/// The product of `dims`, or a [`Error::SizeOverflow`] naming them.
pub fn checked_len(dims: &[usize]) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| Error::SizeOverflow(format!("shape {dims:?} has too many elements")))
}

/// Checks that every entry of `data` (shaped `shape`, row-major) is finite; the error
/// names `what` and the multi-index of the first offender.
pub fn check_finite<T: Real>(what: &str, shape: &[usize], data: &[T]) -> Result<()> {
    match data.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(flat) => Err(Error::NonFinite {
            what: what.to_string(),
            index: format_index(shape, flat),
            value: data[flat].to_f64(),
        }),
    }
}

/// Checks that no dimension of `shape` is zero.
pub fn check_nonempty(what: &str, shape: &[usize]) -> Result<()> {
    if shape.contains(&0) {
        return Err(Error::Empty {
            what: what.to_string(),
            shape: shape.to_vec(),
        });
    }
    Ok(())
}

/// `flat` as a multi-index `[i, j, ...]` of a row-major array of `shape` (how every
/// [`Error::NonFinite`] names its entry).
pub fn format_index(shape: &[usize], mut flat: usize) -> String {
    let mut idx = vec![0usize; shape.len()];
    for (k, &d) in shape.iter().enumerate().rev() {
        if d > 0 {
            idx[k] = flat % d;
            flat /= d;
        }
    }
    let parts: Vec<String> = idx.iter().map(|i| i.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_is_located() {
        let data = [0.0f64, 1.0, 2.0, f64::NAN, 4.0, 5.0];
        let e = check_finite("q", &[2, 3], &data).unwrap_err();
        assert_eq!(e.to_string(), "q[1, 0] is NaN: inputs must be finite");
    }

    #[test]
    fn wrong_length_is_rejected() {
        assert!(Matrix::<f64>::from_vec(2, 3, vec![0.0; 5]).is_err());
        assert!(Tensor3::<f64>::from_vec(2, 2, 2, vec![0.0; 8]).is_ok());
    }

    #[test]
    fn overflow_is_an_error() {
        assert!(matches!(
            checked_len(&[usize::MAX, 2]),
            Err(Error::SizeOverflow(_))
        ));
    }
}
