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
/// Every supported mask is an *interval* mask: query row `i` sees the keys
/// `key_range(i) = start_i..end_i`, and both ends are non-decreasing in `i`. With `n_q`
/// queries and `n_k` keys:
/// - [`Mask::None`]: every key (`0..n_k`).
/// - [`Mask::CausalTopLeft`]: key `j` iff `j <= i` (aligned at the first row; PyTorch's
///   `is_causal=True` convention).
/// - [`Mask::CausalBottomRight`]: key `j` iff `j <= i + n_k - n_q` (aligned at the last
///   row, as in decoding with a key cache; FlashAttention-2's convention).
/// - [`Mask::Window`]: a sliding window ([`Window`]), FlashAttention's `window_size`.
///
/// The first three are *prefix* masks (`start_i = 0`); the polynomial engine runs them
/// by the chunked prefix form and a window by the range form (docs/math.md §3.4); the
/// CUDA path takes prefix masks only and refuses a window with a typed error.
///
/// A row can see no key at all (bottom-right alignment with `n_q > n_k`, or a window
/// that lies outside `0..n_k`). Such a *fully masked row* has a defined result: its
/// output row is zero, its log-sum-exp is `-inf`, and it contributes nothing to any
/// gradient (its `dQ` row is zero). This matches the limit of attention as the row's
/// weights all vanish and is what FlashAttention returns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Mask {
    /// No mask.
    #[default]
    None,
    /// Causal, aligned at the top-left corner: `j <= i`.
    CausalTopLeft,
    /// Causal, aligned at the bottom-right corner: `j <= i + n_k - n_q`.
    CausalBottomRight,
    /// A sliding window around each query's diagonal.
    Window(Window),
}

/// Where a window's diagonal lies: query `i`'s diagonal key is `c_i = i` (top-left) or
/// `c_i = i + n_k - n_q` (bottom-right, FlashAttention's convention for windows).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Alignment {
    /// `c_i = i`.
    TopLeft,
    /// `c_i = i + n_k - n_q`.
    BottomRight,
}

/// A sliding window: query `i` sees key `j` iff `c_i - left <= j <= c_i + right`, `c_i`
/// the diagonal of [`Alignment`]; `None` leaves that side unbounded (FlashAttention's
/// `window_size = (left, right)` with `-1` for unbounded, bottom-right aligned).
/// `(None, Some(0))` is the causal mask of the same alignment; `(None, None)` is no mask.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Window {
    /// Keys before the diagonal that stay visible (`None`: all of them).
    pub left: Option<usize>,
    /// Keys after the diagonal that stay visible (`None`: all of them).
    pub right: Option<usize>,
    /// Where the diagonal lies.
    pub align: Alignment,
}

impl Window {
    /// The diagonal key of query `i`, as a signed number (it can lie outside the keys).
    fn diagonal(&self, i: usize, n_q: usize, n_k: usize) -> i128 {
        match self.align {
            Alignment::TopLeft => i as i128,
            Alignment::BottomRight => i as i128 + n_k as i128 - n_q as i128,
        }
    }
}

/// `x` clamped to `0..=hi`, as a `usize`.
fn clamp_index(x: i128, hi: usize) -> usize {
    x.clamp(0, hi as i128) as usize
}

impl Mask {
    /// The keys query row `i` may see, `start..end` (empty for a fully masked row).
    /// Both ends are non-decreasing in `i`.
    #[inline]
    pub fn key_range(self, i: usize, n_q: usize, n_k: usize) -> std::ops::Range<usize> {
        match self {
            Mask::None => 0..n_k,
            Mask::CausalTopLeft => 0..(i + 1).min(n_k),
            Mask::CausalBottomRight => 0..(i + 1 + n_k).saturating_sub(n_q).min(n_k),
            Mask::Window(w) => {
                let c = w.diagonal(i, n_q, n_k);
                let start = w.left.map_or(0, |l| clamp_index(c - l as i128, n_k));
                let end = w.right.map_or(n_k, |r| clamp_index(c + r as i128 + 1, n_k));
                // c - l <= c + r < c + r + 1, and clamping keeps the order: start <= end.
                start..end.max(start)
            }
        }
    }

    /// One past the last key that query row `i` may see.
    #[inline]
    pub fn key_end(self, i: usize, n_q: usize, n_k: usize) -> usize {
        self.key_range(i, n_q, n_k).end
    }

    /// The query rows that see key `j`, `first..end` (a contiguous range because both
    /// ends of [`Mask::key_range`] are non-decreasing in `i`; empty if no row does).
    pub fn query_range(self, j: usize, n_q: usize, n_k: usize) -> std::ops::Range<usize> {
        match self {
            Mask::None => 0..n_q,
            Mask::CausalTopLeft => j.min(n_q)..n_q,
            Mask::CausalBottomRight => (j + n_q).saturating_sub(n_k).min(n_q)..n_q,
            Mask::Window(w) => {
                // end_i > j  <=>  c_i + right >= j;  start_i <= j  <=>  c_i - left <= j,
                // with c_i = i + off.
                let off = w.diagonal(0, n_q, n_k);
                let first = w
                    .right
                    .map_or(0, |r| clamp_index(j as i128 - r as i128 - off, n_q));
                let end = w
                    .left
                    .map_or(n_q, |l| clamp_index(j as i128 + l as i128 - off + 1, n_q));
                first..end.max(first)
            }
        }
    }

    /// The first query row that sees key `j` (`n_q` if none does, for a prefix mask).
    pub fn first_query(self, j: usize, n_q: usize, n_k: usize) -> usize {
        self.query_range(j, n_q, n_k).start
    }

    /// This mask limited to a sliding window `(left, right)` (FlashAttention's
    /// `window_size`, `None` = unbounded): a causal mask keeps its alignment and caps
    /// `right` at 0 (as FlashAttention does with `causal=True`); no mask takes `align`.
    /// The result is canonical: a window that is no mask or a causal one becomes that
    /// prefix mask (so `(None, Some(0))` runs through every engine as causal). A window
    /// given to a window intersects the sides and keeps the first window's alignment
    /// (`align` is not used then): combine windows of one alignment only.
    pub fn with_window(self, left: Option<usize>, right: Option<usize>, align: Alignment) -> Mask {
        let (right, align) = match self {
            Mask::CausalTopLeft => (Some(0), Alignment::TopLeft),
            Mask::CausalBottomRight => (Some(0), Alignment::BottomRight),
            Mask::Window(w) => (
                match (w.right, right) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                },
                w.align,
            ),
            Mask::None => (right, align),
        };
        let left = match self {
            Mask::Window(Window { left: Some(a), .. }) => Some(left.map_or(a, |b| a.min(b))),
            _ => left,
        };
        match (left, right, align) {
            (None, None, _) => Mask::None,
            (None, Some(0), Alignment::TopLeft) => Mask::CausalTopLeft,
            (None, Some(0), Alignment::BottomRight) => Mask::CausalBottomRight,
            _ => Mask::Window(Window { left, right, align }),
        }
    }

    /// Whether every row's keys start at key 0 (no mask or a causal one): the masks the
    /// polynomial engine runs by its chunked prefix form (a window takes the range form)
    /// and the only ones the CUDA path takes.
    pub fn is_prefix(self) -> bool {
        !matches!(self, Mask::Window(_))
    }

    /// The name used on the command line and in files: `none`, `causal`,
    /// `causal-bottom-right`, or for a window `window(LEFT,RIGHT)` (bottom-right) or
    /// `window-top-left(LEFT,RIGHT)`, with `-1` for an unbounded side
    /// (FlashAttention's `window_size`).
    pub fn name(self) -> String {
        match self {
            Mask::None => "none".into(),
            Mask::CausalTopLeft => "causal".into(),
            Mask::CausalBottomRight => "causal-bottom-right".into(),
            Mask::Window(w) => {
                let side = |x: Option<usize>| x.map_or("-1".to_string(), |v| v.to_string());
                let kind = match w.align {
                    Alignment::BottomRight => "window",
                    Alignment::TopLeft => "window-top-left",
                };
                format!("{kind}({},{})", side(w.left), side(w.right))
            }
        }
    }
}

impl std::str::FromStr for Mask {
    type Err = crate::Error;

    /// Parses what [`Mask::name`] writes (also `causal-top-left`); a window's sides are
    /// counts of keys or `-1` (unbounded), and the result is canonical (see
    /// [`Mask::with_window`]).
    fn from_str(s: &str) -> crate::Result<Mask> {
        let bad = |reason: String| crate::Error::InvalidParameter {
            name: "mask",
            value: s.to_string(),
            reason,
        };
        match s {
            "none" => return Ok(Mask::None),
            "causal" | "causal-top-left" => return Ok(Mask::CausalTopLeft),
            "causal-bottom-right" => return Ok(Mask::CausalBottomRight),
            _ => {}
        }
        let (align, rest) = if let Some(r) = s.strip_prefix("window-top-left(") {
            (Alignment::TopLeft, r)
        } else if let Some(r) = s.strip_prefix("window(") {
            (Alignment::BottomRight, r)
        } else {
            return Err(bad(
                "expected none, causal, causal-bottom-right, window(LEFT,RIGHT) \
                 or window-top-left(LEFT,RIGHT)"
                    .into(),
            ));
        };
        let inner = rest
            .strip_suffix(')')
            .ok_or_else(|| bad("a window ends with `)`".into()))?;
        let (l, r) = parse_window(inner).map_err(|e| match e {
            crate::Error::InvalidParameter { reason, .. } => bad(reason),
            e => e,
        })?;
        Ok(Mask::None.with_window(l, r, align))
    }
}

/// Parses a window `LEFT,RIGHT` (FlashAttention's `window_size`): each side a count of
/// keys, or `-1` for unbounded (`None`).
pub fn parse_window(s: &str) -> crate::Result<(Option<usize>, Option<usize>)> {
    let bad = |reason: String| crate::Error::InvalidParameter {
        name: "window",
        value: s.to_string(),
        reason,
    };
    let side = |x: &str| -> crate::Result<Option<usize>> {
        match x.trim() {
            "-1" => Ok(None),
            t => t.parse::<usize>().map(Some).map_err(|_| {
                bad(format!(
                    "window side {t:?}: expected a count of keys >= 0, or -1 for unbounded"
                ))
            }),
        }
    };
    let (l, r) = s
        .split_once(',')
        .ok_or_else(|| bad("expected LEFT,RIGHT (e.g. 128,0 or -1,-1)".into()))?;
    Ok((side(l)?, side(r)?))
}

/// Parameters shared by all engines.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct AttentionConfig {
    /// The score scale tau in `S = tau * Q K^T`; `None` means `1 / sqrt(d)`.
    /// The value used is rounded once to the compute dtype (see [`Problem::tau`]).
    pub scale: Option<f64>,
    /// The mask.
    pub mask: Mask,
    /// Score softcapping (Gemma 2, FlashAttention's `softcap`): with `Some(c)`, `c > 0`,
    /// each score becomes `c tanh(tau q_i . k_j / c)` before the bias and the mask
    /// (docs/math.md §1.4); `c` is rounded once to the compute dtype and must then be
    /// finite and normal (at least the dtype's smallest normal value). `None`: no cap
    /// (FlashAttention's `softcap=0.0`; the CLI and Python map 0 to `None`).
    /// Exact engine only; the polynomial engine and the CUDA kernels refuse it.
    pub softcap: Option<f64>,
}

impl AttentionConfig {
    /// The scale tau for head dimension `d`, in f64: the given one, or `1 / sqrt(d)`.
    pub fn scale_for(&self, d: usize) -> f64 {
        self.scale.unwrap_or_else(|| 1.0 / (d as f64).sqrt())
    }
}

/// Checks that multi-head stacks are non-empty and finite, an error naming the entry
/// as `[head, row, column]` of its stack: the one entry check of the multi-head entry
/// points, which then build each head's problem with [`Problem::from_finite`].
pub(crate) fn check_stacks<T: crate::Real>(
    stacks: &[(&str, &crate::tensor::Tensor3<T>)],
) -> crate::Result<()> {
    for (name, t) in stacks {
        crate::tensor::check_nonempty(name, &t.shape())?;
        crate::tensor::check_finite(name, &t.shape(), t.as_slice())?;
    }
    Ok(())
}

/// Checks that every stack of a multi-head call has `h` heads (named in the error)
/// and that `h >= 1`: with [`check_stacks`], the multi-head checks of the CPU
/// engines and the CUDA host API.
pub(crate) fn same_heads(h: usize, others: &[(&str, usize)]) -> crate::Result<()> {
    for &(name, n) in others {
        if n != h {
            return Err(crate::Error::ShapeMismatch {
                what: format!("{name} heads"),
                expected: h.to_string(),
                got: n.to_string(),
            });
        }
    }
    if h == 0 {
        return Err(crate::Error::Empty {
            what: "q".into(),
            shape: vec![0],
        });
    }
    Ok(())
}

/// FlashAttention's ALiBi bias (its `alibi_slopes`) of query `i` and key `j`:
/// `-slope |i + n_k - n_q - j|`, bottom-right aligned whatever the mask (docs/math.md
/// §1.2's additive bias). Computed in f64: exact for f32 slopes while `n_q, n_k <
/// 2^29` (24 + 29 bits).
pub fn alibi_bias(slope: f64, (n_q, n_k): (usize, usize), i: usize, j: usize) -> f64 {
    -slope * (i as f64 + n_k as f64 - n_q as f64 - j as f64).abs()
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

    /// Every window of small sides in both alignments, and the prefix masks.
    fn all_masks() -> Vec<Mask> {
        let mut m = vec![Mask::None, Mask::CausalTopLeft, Mask::CausalBottomRight];
        let sides = [None, Some(0), Some(1), Some(2), Some(5)];
        for align in [Alignment::TopLeft, Alignment::BottomRight] {
            for left in sides {
                for right in sides {
                    m.push(Mask::Window(Window { left, right, align }));
                }
            }
        }
        m
    }

    /// The definition, written independently of `key_range`: FlashAttention's window
    /// rule `c - left <= j <= c + right` in signed integers.
    fn sees(mask: Mask, i: usize, j: usize, n_q: usize, n_k: usize) -> bool {
        let (i, j, n_q, n_k) = (i as i64, j as i64, n_q as i64, n_k as i64);
        match mask {
            Mask::None => true,
            Mask::CausalTopLeft => j <= i,
            Mask::CausalBottomRight => j <= i + n_k - n_q,
            Mask::Window(w) => {
                let c = match w.align {
                    Alignment::TopLeft => i,
                    Alignment::BottomRight => i + n_k - n_q,
                };
                w.left.is_none_or(|l| c - l as i64 <= j)
                    && w.right.is_none_or(|r| j <= c + r as i64)
            }
        }
    }

    /// key_range and query_range hold exactly the visible pairs, their ends are
    /// non-decreasing (what the tiled engine's block skipping relies on), and
    /// first_query inverts key_end for the prefix masks.
    #[test]
    fn ranges_match_the_definition() {
        for mask in all_masks() {
            for n_q in 1..10 {
                for n_k in 1..10 {
                    let mut last = (0, 0);
                    for i in 0..n_q {
                        let r = mask.key_range(i, n_q, n_k);
                        assert!(r.start <= r.end && r.end <= n_k, "{mask:?}");
                        assert!(
                            r.start >= last.0 && r.end >= last.1,
                            "{mask:?} {n_q} {n_k} {i}"
                        );
                        last = (r.start, r.end);
                        for j in 0..n_k {
                            assert_eq!(
                                r.contains(&j),
                                sees(mask, i, j, n_q, n_k),
                                "{mask:?} {n_q} {n_k} {i} {j}"
                            );
                        }
                    }
                    let mut last = (0, 0);
                    for j in 0..n_k {
                        let r = mask.query_range(j, n_q, n_k);
                        assert!(r.start <= r.end && r.end <= n_q, "{mask:?}");
                        assert!(
                            r.start >= last.0 && r.end >= last.1,
                            "{mask:?} {n_q} {n_k} {j}"
                        );
                        last = (r.start, r.end);
                        for i in 0..n_q {
                            assert_eq!(
                                r.contains(&i),
                                sees(mask, i, j, n_q, n_k),
                                "{mask:?} {n_q} {n_k} {i} {j}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Names parse back to the same mask; windows are canonical (a window that is a
    /// prefix mask becomes it), and a causal mask caps the window's right side at 0.
    #[test]
    fn names_round_trip_and_windows_are_canonical() {
        for mask in all_masks() {
            let parsed: Mask = mask.name().parse().unwrap();
            let canon = Mask::None.with_window(
                match mask {
                    Mask::Window(w) => w.left,
                    _ => None,
                },
                match mask {
                    Mask::Window(w) => w.right,
                    Mask::None => None,
                    _ => Some(0),
                },
                match mask {
                    Mask::Window(w) => w.align,
                    Mask::CausalTopLeft => Alignment::TopLeft,
                    _ => Alignment::BottomRight,
                },
            );
            assert_eq!(parsed, canon, "{}", mask.name());
            // The canonical form sees the same keys.
            for (n_q, n_k) in [(3, 7), (7, 3), (5, 5)] {
                for i in 0..n_q {
                    assert_eq!(parsed.key_range(i, n_q, n_k), mask.key_range(i, n_q, n_k));
                }
            }
        }
        let w = |l, r, align| Mask::None.with_window(l, r, align);
        assert_eq!(w(None, None, Alignment::TopLeft), Mask::None);
        assert_eq!(w(None, Some(0), Alignment::TopLeft), Mask::CausalTopLeft);
        assert_eq!(
            w(None, Some(0), Alignment::BottomRight),
            Mask::CausalBottomRight
        );
        assert_eq!(
            Mask::CausalTopLeft.with_window(Some(4), Some(9), Alignment::BottomRight),
            Mask::Window(Window {
                left: Some(4),
                right: Some(0),
                align: Alignment::TopLeft
            })
        );
        assert_eq!(
            "window(128,0)".parse::<Mask>().unwrap().name(),
            "window(128,0)"
        );
        assert_eq!(
            "window(-1,0)".parse::<Mask>().unwrap(),
            Mask::CausalBottomRight
        );
        for bad in [
            "window(1)",
            "window(-2,0)",
            "window(a,0)",
            "window(1,2",
            "sliding",
            "",
        ] {
            assert!(
                matches!(
                    bad.parse::<Mask>(),
                    Err(crate::Error::InvalidParameter { name: "mask", .. })
                ),
                "{bad}"
            );
        }
        assert!(parse_window("3,-1").unwrap() == (Some(3), None));
        assert!(parse_window("3;1").is_err());
    }

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
