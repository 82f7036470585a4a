//! How file tensors of rank 2, 3 or 4 map onto stacks of heads.
//!
//! `[n, d]` is one head; `[h, n, d]` is `h` heads; `[b, h, n, d]` is `b * h` heads.
//! Outputs keep the input's leading dimensions.

use polyattn::error::{Error, Result};

/// A file tensor's shape split into leading dimensions and one matrix shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeadShape {
    /// Dimensions before the last two (empty, `[h]` or `[b, h]`).
    pub lead: Vec<usize>,
    /// Rows of each matrix.
    pub rows: usize,
    /// Columns of each matrix.
    pub cols: usize,
}

impl HeadShape {
    /// Splits `shape` of tensor `name`; rank must be 2, 3 or 4.
    pub fn of(name: &str, shape: &[usize]) -> Result<Self> {
        match shape.len() {
            2..=4 => {
                let r = shape.len();
                Ok(Self {
                    lead: shape[..r - 2].to_vec(),
                    rows: shape[r - 2],
                    cols: shape[r - 1],
                })
            }
            r => Err(Error::ShapeMismatch {
                what: format!("rank of `{name}`"),
                expected: "2 ([n, d]), 3 ([heads, n, d]) or 4 ([batch, heads, n, d])".into(),
                got: format!("{r} (shape {shape:?})"),
            }),
        }
    }

    /// The number of matrices: the product of the leading dimensions.
    pub fn heads(&self) -> Result<usize> {
        polyattn::tensor::checked_len(&self.lead)
    }

    /// The file shape of an output with these leading dimensions and trailing `tail`.
    pub fn with_tail(&self, tail: &[usize]) -> Vec<usize> {
        self.lead.iter().chain(tail).copied().collect()
    }

    /// Errors unless `other` (of tensor `name`) has the same leading dimensions.
    pub fn same_lead(&self, name: &str, other: &HeadShape) -> Result<()> {
        if self.lead != other.lead {
            return Err(Error::ShapeMismatch {
                what: format!("leading (head/batch) dimensions of `{name}`"),
                expected: format!("{:?} (from `q`)", self.lead),
                got: format!("{:?}", other.lead),
            });
        }
        Ok(())
    }

    /// Like [`HeadShape::same_lead`] for `k` and `v` under grouped-query attention:
    /// the same leading dimensions but the last (the heads), which must divide
    /// `q`'s (query head `h` reads key/value head `h / g`).
    pub fn same_lead_grouped(&self, name: &str, other: &HeadShape) -> Result<()> {
        let (m, o) = (&self.lead, &other.lead);
        let divides = m.len() == o.len()
            && m.split_last()
                .zip(o.split_last())
                .is_none_or(|((a, ra), (b, rb))| ra == rb && *b > 0 && a % b == 0);
        if !divides {
            return Err(Error::ShapeMismatch {
                what: format!("leading (batch/head) dimensions of `{name}`"),
                expected: format!(
                    "{:?} (from `q`), or fewer heads dividing q's (grouped-query attention)",
                    self.lead
                ),
                got: format!("{:?}", other.lead),
            });
        }
        Ok(())
    }
}
