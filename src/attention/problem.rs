//! A validated attention problem: shapes agree, nothing is empty or non-finite, and
//! no intermediate can overflow the compute dtype. Engines take a [`Problem`] and
//! can then run without further checks.

use super::{AttentionConfig, Mask};
use crate::error::{Error, Result};
use crate::scalar::Real;
use crate::tensor::{check_finite, check_nonempty, MatRef};

/// One head's inputs, checked: `q` is `n_q x d`, `k` is `n_k x d`, `v` is `n_k x d_v`.
#[derive(Clone, Copy, Debug)]
pub struct Problem<'a, T> {
    /// Queries, `n_q x d`.
    pub q: MatRef<'a, T>,
    /// Keys, `n_k x d`.
    pub k: MatRef<'a, T>,
    /// Values, `n_k x d_v`.
    pub v: MatRef<'a, T>,
    /// The scale tau actually used: `config.scale_for(d)` rounded once to `T`.
    pub tau: T,
    /// The mask.
    pub mask: Mask,
    /// An additive score bias, `n_q x n_k` (`S_ij = tau q_i . k_j + b_ij`): PyTorch's
    /// float `attn_mask`, ALiBi, or a boolean mask as `0` / `-inf` (`-inf` hides the
    /// key). Finite or `-inf`; `None`: no bias. The polynomial engine takes key padding
    /// only (`poly::key_padding`).
    pub bias: Option<MatRef<'a, T>>,
    /// The softcap `c` actually used (`config.softcap` rounded once to `T`; finite and
    /// positive): each score is `c tanh(tau q_i . k_j / c)` before the bias is added
    /// (docs/math.md §1.4). Exact engine only.
    pub softcap: Option<T>,
}

impl<'a, T: Real> Problem<'a, T> {
    /// Validates the inputs of one head (see the module docs for what is checked).
    pub fn new(
        q: MatRef<'a, T>,
        k: MatRef<'a, T>,
        v: MatRef<'a, T>,
        config: &AttentionConfig,
    ) -> Result<Self> {
        // Emptiness and shapes are checked by `from_finite` (an empty input has no
        // entry to fail here).
        check_finite("q", &q.shape(), q.as_slice())?;
        check_finite("k", &k.shape(), k.as_slice())?;
        check_finite("v", &v.shape(), v.as_slice())?;
        Self::from_finite(q, k, v, config)
    }

    /// [`Problem::new`] for inputs whose entries the caller has already checked to be
    /// finite (the multi-head entry points check whole stacks once, so that an error
    /// names the head): every other check of `new` is made here.
    pub(crate) fn from_finite(
        q: MatRef<'a, T>,
        k: MatRef<'a, T>,
        v: MatRef<'a, T>,
        config: &AttentionConfig,
    ) -> Result<Self> {
        check_nonempty("q", &q.shape())?;
        check_nonempty("k", &k.shape())?;
        check_nonempty("v", &v.shape())?;
        same("k columns (head dim d, from q)", q.cols(), k.cols())?;
        same("v rows (n_k, from k)", k.rows(), v.rows())?;
        let tau64 = config.scale_for(q.cols());
        let tau = T::from_f64(tau64);
        if !tau64.is_finite() || !tau.is_finite() {
            return Err(Error::InvalidParameter {
                name: "scale",
                value: tau64.to_string(),
                reason: format!("the scale must be finite in {}", T::DTYPE),
            });
        }
        let softcap = match config.softcap {
            None => None,
            Some(c64) => {
                let c = T::from_f64(c64);
                // A normal c: the capped score's error bound 6u c (`exact::softcap`)
                // assumes the product c t rounds relatively, which fails below the
                // normal range.
                if !(c64.is_finite() && c.is_finite() && c.to_f64() >= T::MIN_NORMAL) {
                    return Err(Error::InvalidParameter {
                        name: "softcap",
                        value: c64.to_string(),
                        reason: format!(
                            "the softcap must be finite and at least {:e} (normal) in {}",
                            T::MIN_NORMAL,
                            T::DTYPE
                        ),
                    });
                }
                Some(c)
            }
        };
        let p = Self {
            q,
            k,
            v,
            tau,
            mask: config.mask,
            bias: None,
            softcap,
        };
        p.check_forward_range()?;
        Ok(p)
    }

    /// This problem with an additive score bias `b` (`n_q x n_k`; see [`Problem::bias`]):
    /// errors on a shape mismatch, a NaN or `+inf` entry, or scores `|tau q.k + b|` that
    /// could overflow `T`.
    pub fn with_bias(mut self, bias: Option<MatRef<'a, T>>) -> Result<Self> {
        let Some(b) = bias else {
            self.bias = None;
            return Ok(self);
        };
        if b.shape() != [self.n_q(), self.n_k()] {
            return Err(Error::ShapeMismatch {
                what: "attention bias (attn_mask)".into(),
                expected: format!("[{}, {}] (n_q, n_k)", self.n_q(), self.n_k()),
                got: format!("{:?}", b.shape()),
            });
        }
        if let Some(at) =
            (b.as_slice().iter()).position(|x| x.is_nan() || x.to_f64() == f64::INFINITY)
        {
            return Err(Error::NonFinite {
                what: "attention bias (attn_mask; -inf hides a key, NaN and +inf are refused)"
                    .into(),
                index: format!("[{}, {}]", at / self.n_k(), at % self.n_k()),
                value: b.as_slice()[at].to_f64(),
            });
        }
        self.bias = Some(b);
        ensure_range::<T>(
            "the biased scores tau * q_i . k_j + b_ij",
            self.score_radius(),
        )?;
        Ok(self)
    }

    /// The largest finite `|b_ij|` over the keys row `i` sees (0 without a bias): the
    /// entries the mask hides are never added, so they do not count.
    pub fn bias_row_max(&self, i: usize) -> f64 {
        self.bias.map_or(0.0, |b| {
            b.row(i)[self.key_range(i)]
                .iter()
                .filter(|x| x.is_finite())
                .map(|x| x.to_f64().abs())
                .fold(0.0, f64::max)
        })
    }

    /// Number of queries.
    #[inline]
    pub fn n_q(&self) -> usize {
        self.q.rows()
    }
    /// Number of keys.
    #[inline]
    pub fn n_k(&self) -> usize {
        self.k.rows()
    }
    /// Head dimension of queries and keys.
    #[inline]
    pub fn d(&self) -> usize {
        self.q.cols()
    }
    /// Head dimension of values.
    #[inline]
    pub fn d_v(&self) -> usize {
        self.v.cols()
    }
    /// The keys visible to query `i` (see [`Mask::key_range`]).
    #[inline]
    pub fn key_range(&self, i: usize) -> std::ops::Range<usize> {
        self.mask.key_range(i, self.n_q(), self.n_k())
    }
    /// One past the last key visible to query `i`.
    #[inline]
    pub fn key_end(&self, i: usize) -> usize {
        self.mask.key_end(i, self.n_q(), self.n_k())
    }
    /// The queries that see key `j` (see [`Mask::query_range`]).
    #[inline]
    pub fn query_range(&self, j: usize) -> std::ops::Range<usize> {
        self.mask.query_range(j, self.n_q(), self.n_k())
    }
    /// The first query that sees key `j`.
    #[inline]
    pub fn first_query(&self, j: usize) -> usize {
        self.mask.first_query(j, self.n_q(), self.n_k())
    }
    /// Query `i`'s visible columns `lo..hi` of the key block `j0..j0 + cols`, relative
    /// to `j0` (`lo <= hi <= cols`; empty when the row sees none of those keys).
    #[inline]
    pub fn visible_cols(&self, i: usize, j0: usize, cols: usize) -> (usize, usize) {
        let r = self.key_range(i);
        let lo = r.start.saturating_sub(j0).min(cols);
        let hi = r.end.saturating_sub(j0).min(cols);
        (lo, hi.max(lo))
    }

    /// The rigorous exponent radius R = |tau| max_i ||q_i|| max_j ||k_j|| (docs/math.md
    /// §3.1), at most the softcap `c` with one, plus the largest finite visible `|b_ij|`
    /// with a bias, computed in f64 (rounded to nearest: a guard, not a certificate).
    pub fn score_radius(&self) -> f64 {
        let bias = (0..self.n_q())
            .map(|i| self.bias_row_max(i))
            .fold(0.0, f64::max);
        let raw = self.raw_score_radius();
        match self.softcap {
            Some(c) => raw.min(c.to_f64()) + bias,
            None => raw + bias,
        }
    }

    /// `|tau| max_i ||q_i|| max_j ||k_j||`, the radius of the scores before the softcap
    /// and the bias.
    pub fn raw_score_radius(&self) -> f64 {
        self.tau.to_f64().abs() * max_row_norm(self.q) * max_row_norm(self.k)
    }

    /// A priori bounds of the forward's intermediates must stay well inside T's range:
    /// the unscaled dot products, the scores, and the running sums `sum_j p_j v_j`
    /// (each `p_j <= 1` after the max shift).
    fn check_forward_range(&self) -> Result<()> {
        let qk = max_row_norm(self.q) * max_row_norm(self.k);
        ensure_range::<T>("the dot products q_i . k_j", qk)?;
        ensure_range::<T>("the scores tau * q_i . k_j", self.raw_score_radius())?;
        ensure_range::<T>("the scores after softcap and bias", self.score_radius())?;
        ensure_range::<T>(
            "the softmax accumulators n_k * max|v|",
            self.n_k() as f64 * max_abs(self.v),
        )
    }

    /// Validates the backward's extra inputs: `o` (`n_q x d_v`), `lse` (`n_q`), and
    /// `d_o` (`n_q x d_v`), and bounds its intermediates (dP = dO V^T, dS, the sums).
    pub fn check_backward_inputs(
        &self,
        o: MatRef<'_, T>,
        lse: &[T],
        d_o: MatRef<'_, T>,
    ) -> Result<()> {
        self.check_backward(o, lse, d_o, true)
    }

    /// [`Problem::check_backward_inputs`] for a `d_o` whose entries the caller has
    /// already checked to be finite (the multi-head entry points check the whole `do`
    /// stack once, so that an error names the head).
    pub(crate) fn check_backward_finite_do(
        &self,
        o: MatRef<'_, T>,
        lse: &[T],
        d_o: MatRef<'_, T>,
    ) -> Result<()> {
        self.check_backward(o, lse, d_o, false)
    }

    fn check_backward(
        &self,
        o: MatRef<'_, T>,
        lse: &[T],
        d_o: MatRef<'_, T>,
        scan_do: bool,
    ) -> Result<()> {
        let want = format!("[{}, {}]", self.n_q(), self.d_v());
        for (name, m, scan) in [("o", o, true), ("do", d_o, scan_do)] {
            if m.shape() != [self.n_q(), self.d_v()] {
                return Err(Error::ShapeMismatch {
                    what: name.to_string(),
                    expected: want.clone(),
                    got: format!("{:?}", m.shape()),
                });
            }
            if scan {
                check_finite(name, &m.shape(), m.as_slice())?;
            }
        }
        same("lse length (n_q)", self.n_q(), lse.len())?;
        if let Some(i) = lse
            .iter()
            .position(|x| x.is_nan() || *x == T::from_f64(f64::INFINITY))
        {
            return Err(Error::NonFinite {
                what: "lse".into(),
                index: format!("[{i}]"),
                value: lse[i].to_f64(),
            });
        }
        let dp = max_row_norm(d_o) * max_row_norm(self.v);
        ensure_range::<T>("dP = dO V^T", 2.0 * dp)?;
        let tau = self.tau.to_f64().abs();
        ensure_range::<T>("dV = P^T dO", self.n_q() as f64 * max_abs(d_o))?;
        ensure_range::<T>(
            "dQ = tau dS K",
            2.0 * dp * max_row_norm(self.k).max(tau * max_row_norm(self.k)),
        )?;
        ensure_range::<T>(
            "dK = tau dS^T Q",
            2.0 * dp * self.n_q() as f64 * max_row_norm(self.q).max(tau * max_row_norm(self.q)),
        )
    }
}

fn same(what: &str, expected: usize, got: usize) -> Result<()> {
    if expected != got {
        return Err(Error::ShapeMismatch {
            what: what.to_string(),
            expected: expected.to_string(),
            got: got.to_string(),
        });
    }
    Ok(())
}

/// Fails if `bound` is not below half of `T`'s largest finite value (the factor two
/// leaves room for the shift `s - max` and for the last rounding).
fn ensure_range<T: Real>(quantity: &str, bound: f64) -> Result<()> {
    let limit = T::MAX_FINITE / 2.0;
    if bound.is_finite() && bound <= limit {
        Ok(())
    } else {
        Err(Error::Overflow {
            quantity: quantity.to_string(),
            bound,
            dtype: T::DTYPE,
        })
    }
}

/// max_i ||row_i||_2 in f64.
pub(crate) fn max_row_norm<T: Real>(m: MatRef<'_, T>) -> f64 {
    (0..m.rows())
        .map(|i| {
            m.row(i)
                .iter()
                .map(|x| x.to_f64() * x.to_f64())
                .sum::<f64>()
                .sqrt()
        })
        .fold(0.0, f64::max)
}

/// max |entry| in f64.
fn max_abs<T: Real>(m: MatRef<'_, T>) -> f64 {
    m.as_slice()
        .iter()
        .map(|x| x.to_f64().abs())
        .fold(0.0, f64::max)
}
