//! The two-level memory machine of docs/math.md §8 (IO24's model): a cache of `M`
//! words, explicitly managed, and an unbounded slow memory.
//!
//! Every word an algorithm computes with lives in a [`Buf`], and a `Buf` can only be
//! made by [`Sim::alloc`] or [`Sim::load`], which charge its size against the capacity:
//! if the words resident would exceed `M` the call fails, so an algorithm cannot keep
//! more than `M` words at once. [`Sim::load`] counts the words it reads from slow memory
//! and [`Sim::store`] the words it writes. Placing the inputs in slow memory
//! ([`Sim::put`]) and reading the results out ([`Sim::get`]) are outside the model and
//! cost nothing; so does allocating a slow array (its first store pays for its content).
//!
//! What the model does not see (and the algorithms here respect by construction): loop
//! indices and block sizes (control state, O(1) words), and the constant `tau`.

use crate::error::{Error, Result};
use crate::tensor::{MatRef, Matrix};

/// A handle to an array in slow memory (a row-major `rows x cols` matrix of f64).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SlowId(usize);

/// Words moved between the two levels, and the most words ever resident at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct IoCounts {
    /// Words read from slow memory into the cache.
    pub reads: u64,
    /// Words written from the cache to slow memory.
    pub writes: u64,
    /// The largest number of words resident in the cache at any time.
    pub peak: usize,
}

impl IoCounts {
    /// Total transfers, `reads + writes`: the quantity IO24's bounds are about.
    pub fn total(&self) -> u64 {
        self.reads + self.writes
    }
}

/// A block of words resident in the cache (`rows x cols`, row-major). It cannot be
/// cloned: the only ways to get one are [`Sim::alloc`] and [`Sim::load`], and
/// [`Sim::free`] gives its words back. Dropping a `Buf` without freeing it leaves its
/// words charged (conservative: it can only make an algorithm fail, never cheat).
#[derive(Debug)]
pub struct Buf {
    rows: usize,
    cols: usize,
    data: Vec<f64>,
}

impl Buf {
    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Entry `(i, j)`.
    #[inline]
    pub fn at(&self, i: usize, j: usize) -> f64 {
        self.data[i * self.cols + j]
    }
    /// Entry `(i, j)`, mutable.
    #[inline]
    pub fn at_mut(&mut self, i: usize, j: usize) -> &mut f64 {
        &mut self.data[i * self.cols + j]
    }
    /// The words, row-major.
    pub fn data(&self) -> &[f64] {
        &self.data
    }
    /// The words, row-major, mutable.
    pub fn data_mut(&mut self) -> &mut [f64] {
        &mut self.data
    }
}

/// One array of slow memory.
#[derive(Clone, Debug)]
struct SlowArray {
    rows: usize,
    cols: usize,
    data: Vec<f64>,
}

/// The simulator: capacity, resident words, counters and slow memory (docs/math.md §8).
#[derive(Debug)]
pub struct Sim {
    capacity: usize,
    resident: usize,
    counts: IoCounts,
    slow: Vec<SlowArray>,
}

impl Sim {
    /// A machine whose cache holds `capacity` (M) words; `M >= 1`.
    pub fn new(capacity: usize) -> Result<Self> {
        if capacity == 0 {
            return Err(Error::InvalidParameter {
                name: "cache capacity M",
                value: "0".into(),
                reason: "the cache must hold at least one word".into(),
            });
        }
        Ok(Self {
            capacity,
            resident: 0,
            counts: IoCounts::default(),
            slow: Vec::new(),
        })
    }

    /// The capacity `M` in words.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Words resident now.
    pub fn resident(&self) -> usize {
        self.resident
    }

    /// The counters so far.
    pub fn counts(&self) -> IoCounts {
        self.counts
    }

    /// Places an input matrix in slow memory (free: outside the model).
    pub fn put(&mut self, m: MatRef<'_, f64>) -> SlowId {
        self.slow.push(SlowArray {
            rows: m.rows(),
            cols: m.cols(),
            data: m.as_slice().to_vec(),
        });
        SlowId(self.slow.len() - 1)
    }

    /// A new slow array of zeros (free: its words are paid for when stored).
    pub fn slow_zeros(&mut self, rows: usize, cols: usize) -> Result<SlowId> {
        let m = Matrix::<f64>::zeros(rows, cols)?;
        Ok(self.put(m.view()))
    }

    /// Copies a slow array out (free: outside the model, for checking results).
    pub fn get(&self, id: SlowId) -> Result<Matrix<f64>> {
        let a = self.array(id)?;
        Matrix::from_vec(a.rows, a.cols, a.data.clone())
    }

    /// `[rows, cols]` of a slow array.
    pub fn shape(&self, id: SlowId) -> Result<[usize; 2]> {
        self.array(id).map(|a| [a.rows, a.cols])
    }

    fn array(&self, id: SlowId) -> Result<&SlowArray> {
        self.slow.get(id.0).ok_or_else(|| Error::InvalidParameter {
            name: "slow array id",
            value: id.0.to_string(),
            reason: format!("only {} slow arrays exist", self.slow.len()),
        })
    }

    /// Reserves `rows x cols` words of cache, zeroed. Fails if more than `M` words
    /// would then be resident.
    pub fn alloc(&mut self, rows: usize, cols: usize) -> Result<Buf> {
        let words = rows
            .checked_mul(cols)
            .ok_or_else(|| Error::SizeOverflow(format!("{rows} x {cols} cache words")))?;
        if self.resident + words > self.capacity {
            return Err(Error::InvalidParameter {
                name: "cache capacity M",
                value: self.capacity.to_string(),
                reason: format!(
                    "allocating {words} words with {} already resident exceeds it",
                    self.resident
                ),
            });
        }
        self.resident += words;
        self.counts.peak = self.counts.peak.max(self.resident);
        Ok(Buf {
            rows,
            cols,
            data: vec![0.0; words],
        })
    }

    /// Gives a buffer's words back to the cache.
    pub fn free(&mut self, buf: Buf) {
        self.resident -= buf.rows * buf.cols;
    }

    /// Checks that the `rows x cols` rectangle at `(r0, c0)` lies inside array `id`.
    fn check_rect(&self, id: SlowId, r0: usize, c0: usize, rows: usize, cols: usize) -> Result<()> {
        let a = self.array(id)?;
        if r0 + rows > a.rows || c0 + cols > a.cols {
            return Err(Error::ShapeMismatch {
                what: format!("slow array {} block", id.0),
                expected: format!("inside {} x {}", a.rows, a.cols),
                got: format!("rows {r0}..{}, cols {c0}..{}", r0 + rows, c0 + cols),
            });
        }
        Ok(())
    }

    /// Loads the `rows x cols` block of array `id` at `(r0, c0)` into a new buffer,
    /// counting `rows * cols` words read.
    pub fn load(
        &mut self,
        id: SlowId,
        r0: usize,
        c0: usize,
        rows: usize,
        cols: usize,
    ) -> Result<Buf> {
        self.check_rect(id, r0, c0, rows, cols)?;
        let mut buf = self.alloc(rows, cols)?;
        let a = &self.slow[id.0];
        for (i, dst) in buf.data.chunks_exact_mut(cols.max(1)).enumerate() {
            let src = (r0 + i) * a.cols + c0;
            dst.copy_from_slice(&a.data[src..src + cols]);
        }
        self.counts.reads += (rows * cols) as u64;
        Ok(buf)
    }

    /// Writes `buf` to array `id` at `(r0, c0)`, counting its words written.
    pub fn store(&mut self, buf: &Buf, id: SlowId, r0: usize, c0: usize) -> Result<()> {
        let (rows, cols) = (buf.rows, buf.cols);
        self.check_rect(id, r0, c0, rows, cols)?;
        let a = &mut self.slow[id.0];
        for (i, src) in buf.data.chunks_exact(cols.max(1)).enumerate() {
            let dst = (r0 + i) * a.cols + c0;
            a.data[dst..dst + cols].copy_from_slice(src);
        }
        self.counts.writes += (rows * cols) as u64;
        Ok(())
    }

    /// Stores `buf` and frees it.
    pub fn store_free(&mut self, buf: Buf, id: SlowId, r0: usize, c0: usize) -> Result<()> {
        self.store(&buf, id, r0, c0)?;
        self.free(buf);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_more_than_capacity() {
        let mut sim = Sim::new(10).unwrap();
        let a = sim.alloc(2, 4).unwrap();
        assert!(matches!(
            sim.alloc(1, 3),
            Err(Error::InvalidParameter {
                name: "cache capacity M",
                ..
            })
        ));
        let x = sim.slow_zeros(4, 4).unwrap();
        assert!(sim.load(x, 0, 0, 1, 3).is_err(), "8 + 3 > 10 words");
        let b = sim.load(x, 0, 0, 1, 2).unwrap(); // exactly 10
        assert_eq!(sim.resident(), 10);
        sim.free(a);
        sim.free(b);
        assert_eq!(sim.resident(), 0);
        assert_eq!(sim.counts().peak, 10);
        assert!(Sim::new(0).is_err());
    }

    #[test]
    fn counts_words_and_moves_them() {
        let m = Matrix::from_fn(3, 4, |i, j| (10 * i + j) as f64).unwrap();
        let mut sim = Sim::new(100).unwrap();
        let x = sim.put(m.view());
        let y = sim.slow_zeros(3, 4).unwrap();
        let b = sim.load(x, 1, 1, 2, 3).unwrap();
        assert_eq!(b.at(1, 2), 23.0);
        sim.store_free(b, y, 0, 0).unwrap();
        assert_eq!(sim.counts().reads, 6);
        assert_eq!(sim.counts().writes, 6);
        assert_eq!(sim.get(y).unwrap().at(1, 0), 21.0);
        // Out-of-range blocks are errors, not panics.
        assert!(sim.load(x, 2, 0, 2, 1).is_err());
        let c = sim.alloc(1, 5).unwrap();
        assert!(sim.store(&c, y, 0, 0).is_err());
    }
}
