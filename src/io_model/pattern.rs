//! Which score entries an algorithm computes: a prefix mask of the exact engine
//! ([`Mask`]) or a block-sparse mask (docs/math.md §8, sparse attention).

use crate::attention::Mask;
use crate::error::{Error, Result};
use crate::rng::SplitMix64;

/// A mask of nonzero `block x block` blocks of the `n_q x n_k` score matrix: entry
/// `(i, j)` is visible iff block `(i / block, j / block)` is nonzero.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockMask {
    block: usize,
    nb_k: usize,
    nonzero: Vec<bool>,
}

impl BlockMask {
    /// A mask with `nonzero(bi, bj)` for each block of an `n_q x n_k` matrix.
    pub fn from_fn(
        block: usize,
        n_q: usize,
        n_k: usize,
        mut nonzero: impl FnMut(usize, usize) -> bool,
    ) -> Result<Self> {
        if block == 0 {
            return Err(Error::InvalidParameter {
                name: "mask block size",
                value: "0".into(),
                reason: "blocks must be at least 1 x 1".into(),
            });
        }
        let (nb_q, nb_k) = (n_q.div_ceil(block), n_k.div_ceil(block));
        let nonzero = (0..nb_q * nb_k)
            .map(|b| nonzero(b / nb_k, b % nb_k))
            .collect();
        Ok(Self {
            block,
            nb_k,
            nonzero,
        })
    }

    /// Each block nonzero with probability `density`, independently (seeded).
    pub fn random(block: usize, n_q: usize, n_k: usize, density: f64, seed: u64) -> Result<Self> {
        if !(0.0..=1.0).contains(&density) {
            return Err(Error::InvalidParameter {
                name: "density",
                value: density.to_string(),
                reason: "must lie in [0, 1]".into(),
            });
        }
        let mut rng = SplitMix64::new(seed);
        Self::from_fn(block, n_q, n_k, |_, _| rng.uniform() < density)
    }

    /// A band of blocks `|bi - bj| <= half_width` (block-diagonal for 0): local
    /// attention, the most structured sparse pattern.
    pub fn band(block: usize, n_q: usize, n_k: usize, half_width: usize) -> Result<Self> {
        Self::from_fn(block, n_q, n_k, |a, b| a.abs_diff(b) <= half_width)
    }

    /// The block side.
    pub fn block(&self) -> usize {
        self.block
    }

    #[inline]
    fn get(&self, bi: usize, bj: usize) -> bool {
        self.nonzero[bi * self.nb_k + bj]
    }
}

/// The visible score entries of an algorithm.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// One of the exact engine's prefix masks (dense for [`Mask::None`]).
    Prefix(Mask),
    /// A block-sparse mask.
    Blocks(BlockMask),
}

impl Pattern {
    /// Whether score `(i, j)` of an `n_q x n_k` matrix is visible.
    #[inline]
    pub fn visible(&self, i: usize, j: usize, n_q: usize, n_k: usize) -> bool {
        match self {
            Pattern::Prefix(m) => m.key_range(i, n_q, n_k).contains(&j),
            Pattern::Blocks(b) => b.get(i / b.block, j / b.block),
        }
    }

    /// Whether any score in rows `rows` and columns `cols` is visible: tiles where
    /// this is false are skipped (no I/O, no work).
    pub fn any_in(
        &self,
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
        n_q: usize,
        n_k: usize,
    ) -> bool {
        if rows.is_empty() || cols.is_empty() {
            return false;
        }
        match self {
            // Both ends of the rows' key ranges are non-decreasing in i (for a prefix
            // mask the start is 0): the tile is nonempty iff the first row starts
            // before `cols.end`, the last row ends after `cols.start`, and some row's
            // range meets the columns (checked row by row only when the first two hold).
            Pattern::Prefix(m) => {
                m.key_range(rows.start, n_q, n_k).start < cols.end
                    && cols.start < m.key_end(rows.end - 1, n_q, n_k)
                    && rows.clone().any(|i| {
                        let r = m.key_range(i, n_q, n_k);
                        r.start < cols.end && cols.start < r.end
                    })
            }
            Pattern::Blocks(b) => {
                let (bi, bj) = (rows.start / b.block, cols.start / b.block);
                let (ei, ej) = ((rows.end - 1) / b.block, (cols.end - 1) / b.block);
                (bi..=ei).any(|x| (bj..=ej).any(|y| b.get(x, y)))
            }
        }
    }

    /// The number of visible scores, `Z_QK` in the sparse bound of docs/math.md §8.
    pub fn nnz(&self, n_q: usize, n_k: usize) -> u64 {
        (0..n_q)
            .map(|i| match self {
                Pattern::Prefix(m) => m.key_range(i, n_q, n_k).len() as u64,
                Pattern::Blocks(_) => {
                    (0..n_k).filter(|&j| self.visible(i, j, n_q, n_k)).count() as u64
                }
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_in_agrees_with_visible() {
        let pats = [
            Pattern::Prefix(Mask::None),
            Pattern::Prefix(Mask::CausalTopLeft),
            Pattern::Prefix(Mask::CausalBottomRight),
            Pattern::Blocks(BlockMask::random(3, 11, 9, 0.4, 5).unwrap()),
            Pattern::Blocks(BlockMask::band(4, 11, 9, 0).unwrap()),
        ];
        let (n_q, n_k) = (11, 9);
        for p in &pats {
            for (r0, r1) in [(0, 4), (3, 11), (5, 6), (0, 11)] {
                for (c0, c1) in [(0, 3), (2, 9), (8, 9), (4, 7)] {
                    let want = (r0..r1).any(|i| (c0..c1).any(|j| p.visible(i, j, n_q, n_k)));
                    assert_eq!(
                        p.any_in(r0..r1, c0..c1, n_q, n_k),
                        want,
                        "{p:?} {r0} {r1} {c0} {c1}"
                    );
                }
            }
        }
        assert_eq!(Pattern::Prefix(Mask::CausalTopLeft).nnz(4, 4), 10);
        assert_eq!(
            Pattern::Blocks(BlockMask::band(2, 4, 4, 0).unwrap()).nnz(4, 4),
            8
        );
    }
}
