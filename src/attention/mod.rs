//! Attention for one head and for many, forward and backward (docs/math.md §1.2, §2).
//!
//! - [`exact`]: the tiled exact engine with an online softmax (docs/math.md §2);
//! - [`poly`]: the polynomial engine, its plan and its error bounds (docs/math.md §3,
//!   §4);
//! - `problem`: the validated problem every engine takes ([`Problem`]).
//!
//! Masks and the scale are shared by every engine and live here.

pub mod exact;
pub mod poly;
pub(crate) mod problem;

pub use problem::Problem;

/// Which keys each query may attend to.
///
/// Every supported mask is a *prefix* mask: query row `i` sees keys `0..key_end(i)`.
/// With `n_q` queries and `n_k` keys:
/// - [`Mask::None`]: every key (`key_end = n_k`).
/// - [`Mask::CausalTopLeft`]: key `j` iff `j <= i` (aligned at the first row; PyTorch's
///   `is_causal=True` convention).
/// - [`Mask::CausalBottomRight`]: key `j` iff `j <= i + n_k - n_q` (aligned at the last
///   row, as in decoding with a key cache; FlashAttention-2's convention).
///
/// When `n_q > n_k`, bottom-right alignment leaves rows `i < n_q - n_k` with no key at
/// all. Such a *fully masked row* has a defined result: its output row is zero, its
/// log-sum-exp is `-inf`, and it contributes nothing to any gradient (its `dQ` row is
/// zero). This matches the limit of attention as the row's weights all vanish and is
/// what FlashAttention returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mask {
    /// No mask.
    #[default]
    None,
    /// Causal, aligned at the top-left corner: `j <= i`.
    CausalTopLeft,
    /// Causal, aligned at the bottom-right corner: `j <= i + n_k - n_q`.
    CausalBottomRight,
}

impl Mask {
    /// One past the last key that query row `i` may see: keys `0..key_end` are visible.
    #[inline]
    pub fn key_end(self, i: usize, n_q: usize, n_k: usize) -> usize {
        match self {
            Mask::None => n_k,
            Mask::CausalTopLeft => (i + 1).min(n_k),
            Mask::CausalBottomRight => (i + 1 + n_k).saturating_sub(n_q).min(n_k),
        }
    }

    /// The first query row that sees key `j` (`n_q` if none does).
    pub fn first_query(self, j: usize, n_q: usize, n_k: usize) -> usize {
        // key_end is non-decreasing in i, so the rows that see j form a suffix.
        match self {
            Mask::None => 0,
            Mask::CausalTopLeft => j.min(n_q),
            Mask::CausalBottomRight => (j + n_q).saturating_sub(n_k).min(n_q),
        }
    }

    /// The name used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            Mask::None => "none",
            Mask::CausalTopLeft => "causal",
            Mask::CausalBottomRight => "causal-bottom-right",
        }
    }
}

/// Parameters shared by all engines.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AttentionConfig {
    /// The score scale tau in `S = tau * Q K^T`; `None` means `1 / sqrt(d)`.
    /// The value used is rounded once to the compute dtype (see [`Problem::tau`]).
    pub scale: Option<f64>,
    /// The mask.
    pub mask: Mask,
}

impl AttentionConfig {
    /// The scale tau for head dimension `d`, in f64: the given one, or `1 / sqrt(d)`.
    pub fn scale_for(&self, d: usize) -> f64 {
        self.scale.unwrap_or_else(|| 1.0 / (d as f64).sqrt())
    }
}

/// Grouped-query attention: the number of query heads sharing one key/value head,
/// `g = q_heads / kv_heads` (1 for ordinary multi-head attention, `q_heads` for
/// multi-query). Query head `h` reads key/value head `h / g`, PyTorch's
/// `enable_gqa` and FlashAttention's convention; a batch folded into the heads keeps
/// that mapping (`[b, h_q]` flattened to `b h_q + h` reads `b h_kv + h / g`, which is
/// `(b h_q + h) / g`). An error names both counts when `kv_heads` does not divide
/// `q_heads`; no heads on either side is [`crate::Error::Empty`].
pub fn kv_group(q_heads: usize, kv_heads: usize) -> crate::Result<usize> {
    // No heads at all is an empty input, not a grouping error.
    if q_heads == 0 || kv_heads == 0 {
        let (what, h) = if q_heads == 0 {
            ("q", q_heads)
        } else {
            ("k", kv_heads)
        };
        return Err(crate::Error::Empty {
            what: format!("{what} (no heads)"),
            shape: vec![h],
        });
    }
    if !q_heads.is_multiple_of(kv_heads) {
        return Err(crate::Error::ShapeMismatch {
            what: "k/v heads (grouped-query attention needs them to divide q's heads)".into(),
            expected: format!("a divisor of {q_heads}"),
            got: kv_heads.to_string(),
        });
    }
    Ok(q_heads / kv_heads)
}

/// Sums `[q_heads, rows, cols]` per-query-head gradients over each group of `g`
/// consecutive heads into `[q_heads / g, rows, cols]`, in head order (so the result
/// is the same bits whatever the thread count): how dK and dV reach a key/value head
/// that several query heads read.
pub fn sum_groups<T: crate::Real>(
    per_query: &crate::tensor::Tensor3<T>,
    g: usize,
) -> crate::Result<crate::tensor::Tensor3<T>> {
    let (h, r, c) = (per_query.heads(), per_query.rows(), per_query.cols());
    let mut out = crate::tensor::Tensor3::zeros(h / g.max(1), r, c)?;
    let len = r * c;
    for (j, dst) in out.as_mut_slice().chunks_mut(len.max(1)).enumerate() {
        for i in j * g..(j + 1) * g {
            for (d, s) in dst.iter_mut().zip(per_query.head(i).as_slice()) {
                *d += *s;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `first_query` is the inverse of `key_end`: row i sees j iff i >= first_query(j).
    #[test]
    fn first_query_inverts_key_end() {
        for mask in [Mask::None, Mask::CausalTopLeft, Mask::CausalBottomRight] {
            for n_q in 1..9 {
                for n_k in 1..9 {
                    for j in 0..n_k {
                        let f = mask.first_query(j, n_q, n_k);
                        for i in 0..n_q {
                            assert_eq!(
                                j < mask.key_end(i, n_q, n_k),
                                i >= f,
                                "{mask:?} {n_q} {n_k} {i} {j}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn bottom_right_leaves_early_rows_empty() {
        // n_q = 5, n_k = 3: rows 0 and 1 see nothing, row 4 sees all three keys.
        let m = Mask::CausalBottomRight;
        let ends: Vec<usize> = (0..5).map(|i| m.key_end(i, 5, 3)).collect();
        assert_eq!(ends, vec![0, 0, 1, 2, 3]);
        let ends: Vec<usize> = (0..3).map(|i| m.key_end(i, 3, 5)).collect();
        assert_eq!(ends, vec![3, 4, 5]);
        let ends: Vec<usize> = (0..3)
            .map(|i| Mask::CausalTopLeft.key_end(i, 3, 5))
            .collect();
        assert_eq!(ends, vec![1, 2, 3]);
    }
}
