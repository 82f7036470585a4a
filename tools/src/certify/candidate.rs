//! Certifying anyone's attention: a *candidate* file of results computed elsewhere
//! (FlashAttention, PyTorch SDPA, a custom kernel) against exact attention of the
//! input file's `q`, `k`, `v` (and `do`), with FlashAttention's acceptance rule beside
//! it (`polyattn certify --candidate`).
//!
//! # Inputs
//! `q` `[.., n_q, d]`, `k` `[.., n_k, d]`, `v` `[.., n_k, d_v]`, optional `do`
//! `[.., n_q, d_v]`, each of F16, BF16, F32 or F64 (mixed dtypes allowed): their values
//! are the exact inputs. Layout `bhsd` (PyTorch: `[batch, heads, seq, dim]`, or
//! `[heads, seq, dim]`, `[seq, dim]`) or `bshd` (FlashAttention: `[batch, seq, heads,
//! dim]` or `[seq, heads, dim]`) or `varlen` (FlashAttention's packed sequences:
//! `[total, heads, dim]`, offsets `cu_seqlens_q`, `cu_seqlens_k` as I32/I64 tensors of
//! the input file, lse `[heads, total_q]`; every sequence is its own problem, masks and
//! ALiBi in its own indices, and the statistics run over the packed rows; a position's
//! `batch` is then its sequence and `row` the packed row). The candidate holds any of `o` (shaped like `q` with
//! `d_v` columns), `lse` (`[batch, heads, n_q]` in bhsd and bshd, `[heads, total_q]` packed), `dq`, `dk`, `dv`
//! (like `q`, `k`, `v`; they need `do`), each in any of the four dtypes. `k` and `v`
//! may have fewer heads than `q` if they divide `q`'s (grouped-query attention, query
//! head `h` reads key/value head `h / g`, `g = H_q / H_kv`); `dk`, `dv` are then per
//! key/value head, the exact ones being the sums of the group's shares (enclosed by
//! [`polyattn::rounding::group_sum_radius`]). An optional `bias` `[n_q, n_k]` (every
//! head) or `[.., heads, n_q, n_k]` (q's batch dims and heads, head-major in bhsd and
//! bshd; none in the packed layout) is an additive score bias, finite or `-inf` (hides the key); an optional
//! `alibi_slopes` (FlashAttention's, [`crate::inputs::read_alibi_slopes`]) adds its
//! ALiBi bias ([`polyattn::attention::alibi_bias`]) to it. Semantics:
//! `S = tau Q K^T + bias` (tau = `--scale`, default `1/sqrt(d)`, as an f64), the mask
//! or window, `O = softmax(S) V`, `lse_i = ln sum_j exp(S_ij)`, gradients of `<dO, O>`.
//!
//! # Reference
//! Every exact value `y` is enclosed as `mid +- r`: by 128-bit MPFR interval
//! arithmetic ([`super::rows`]' `polyattn-spec`, feature `certify`) when
//! `heads n_q n_k (d + d_v) <= 4e6`, else by the f64 exact engine with its a priori
//! rounding bound ([`polyattn::attention::exact::reference`]). The report names the one used.
//!
//! # Certified quantities, per candidate tensor `c` (entries `e`, `m` of them)
//! ```text
//! upper_e = |c_e - mid_e| + r_e   >= |c_e - y_e|          certified max error: max_e upper_e
//! lower_e = max(|c_e - mid_e| - r_e, 0) <= |c_e - y_e|    certified lower bound: max_e lower_e
//! rel_F   = (||c - mid||_F + ||r||_F) / (||mid||_F - ||r||_F)  >= ||c - y||_F / ||y||_F
//!           (when ||mid||_F <= ||r||_F: the absolute ||c - mid||_F + ||r||_F >= ||c - y||_F)
//! bias over a set E (a row of one head, a column over all heads and rows, everything):
//!   mean_E(c - y) in [mean_E(c - mid) - mean_E(r) - s, mean_E(c - mid) + mean_E(r) + s]
//!   s = gamma_{|E|+2} (sum_E |c - mid| + sum_E r) / |E|   (the f64 summation's rounding)
//! ```
//! every sum and difference rounded outward (one step up, or the `(1 + 4 eps)` factor
//! on the Frobenius ratio). A bias is *certifiably nonzero* when its interval excludes 0.
//! The `up`/`down` steps make each f64 result a bound despite its own rounding.
//!
//! Non-finite candidate entries are findings: counted, the first positions listed, the
//! certified max error and the Frobenius bound `inf`; the other statistics use the
//! finite entries. Rows that see no key (bottom-right causal with `n_q > n_k`) are
//! defined here as `O = 0`, `lse = -inf`, zero dQ; a candidate's `lse = +inf`
//! (FlashAttention), `NaN` or `0` (PyTorch), and `NaN` outputs or dQ rows (PyTorch's
//! math backend) there are recognised as convention differences, reported apart and
//! left out of the statistics.
//!
//! # FlashAttention's rule
//! For a candidate tensor of dtype `X` (unit roundoff `u_X`: 2^-11 F16, 2^-8 BF16,
//! 2^-24 F32, 2^-53 F64), the baseline is plain attention in `X` as FlashAttention's
//! tests compute it ([`super::plain`], `attention_ref(upcast=False,
//! reorder_ops=True)`), certified against the same reference. An `lse` is usually
//! stored in f32 whatever the run's dtype: its baseline is that of the run's dtype
//! (`o`'s, else a gradient's; lse's own when it is alone), rounded to lse's dtype,
//! while its `atol` uses lse's own `u`.
//! ```text
//! atol = 2 u_X max_e (|mid_e| + r_e)          (twice X's rounding of the exact answer)
//! pass      iff  upper(candidate) <= 2 lower(baseline) + atol   (certified: true err <= 2 true baseline err + atol)
//! fail      iff  lower(candidate) >  2 upper(baseline) + atol
//! undecided otherwise (only when the reference's radii matter)
//! ```
//! and the same against the upcast baseline (PyTorch's math backend: every
//! intermediate in f32, the results rounded to `X`).
//!
//! # Hints
//! When a tensor fails, the report tests what would explain it: every entry off by
//! one factor (least squares), an lse whose rows all differ from the exact lse by a
//! common factor (`log2 e = 1.4427`: a base-2 lse; `1/tau`: the scale folded
//! differently), an `o` that matches exact attention with another scale (1, 1/d) or
//! another mask (`none`, `causal`, `causal-bottom-right`) within a tenth of its error.
//!
//! JSON schema `polyattn.certify.candidate/1`: the serialised [`CandidateReport`]
//! (fields in declaration order).

use super::plain::{plain_head, PlainHead, PlainRule};
use super::report::{ReferenceChoice, ReferenceUsed};
use crate::table::{markdown_table, sig3, sig3_down, sig3_up};
use polyattn::attention::exact::reference::exact_reference_with_bias;
use polyattn::attention::{exact, AttentionConfig, Mask};
use polyattn::error::{Error, Result};
use polyattn::io::{AnyTensor, DType, TensorFile};
use polyattn::tensor::{check_finite, check_nonempty, MatRef};
use rayon::prelude::*;
use serde::Serialize;
use std::time::Instant;

/// Where the head axis sits in 4-d files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `[batch, heads, seq, dim]` (PyTorch).
    Bhsd,
    /// `[batch, seq, heads, dim]` (FlashAttention).
    Bshd,
    /// FlashAttention's packed variable-length layout (`flash_attn_varlen_func`):
    /// `[total, heads, dim]`, sequence `b` the rows `cu[b]..cu[b + 1]`, the offsets
    /// from the input file's `cu_seqlens_q` and `cu_seqlens_k`; lse `[heads, total_q]`.
    Varlen,
}

impl Layout {
    /// `bhsd` or `bshd`.
    pub fn name(self) -> &'static str {
        match self {
            Layout::Bhsd => "bhsd",
            Layout::Bshd => "bshd",
            Layout::Varlen => "varlen",
        }
    }
}

/// Options of [`certify_candidate`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CandidateOptions {
    /// The mask.
    pub mask: Mask,
    /// tau (`None`: `1/sqrt(d)`).
    pub scale: Option<f64>,
    /// The files' layout.
    pub layout: Layout,
    /// The score softcap `c` (`c tanh(s / c)` before the bias; docs/math.md §1.4).
    pub softcap: Option<f64>,
    /// The reference (`Auto`: MPFR when small, else f64 with its bound; `Ball` is
    /// refused: it is for model reports).
    pub reference: ReferenceChoice,
}

/// The largest `heads n_q n_k (d + d_v)` certified by MPFR under `Auto`.
pub const MPFR_WORK_LIMIT: f64 = 4e6;

/// Tensor names a candidate may hold, in report order.
pub const CANDIDATE_TENSORS: [&str; 5] = ["o", "lse", "dq", "dk", "dv"];

/// A position in a tensor: batch, head, row, column (0 for lse).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Position {
    /// Batch index (0 without a batch dimension; the sequence under `--layout varlen`,
    /// where `row` is the packed row).
    pub batch: usize,
    /// Head index within the batch.
    pub head: usize,
    /// Row (query or key index).
    pub row: usize,
    /// Column (0 for lse).
    pub col: usize,
}

/// A certified range `[lo, hi]` in f64 (plain ends, not the spec's MPFR
/// `polyattn_spec::Interval`): the true value lies inside.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Range64 {
    /// Lower end.
    pub lo: f64,
    /// Upper end.
    pub hi: f64,
}

impl Range64 {
    /// Whether 0 lies outside.
    pub fn excludes_zero(&self) -> bool {
        self.lo > 0.0 || self.hi < 0.0
    }
    /// The distance of the interval from 0 (0 if it contains 0).
    pub fn magnitude_lower(&self) -> f64 {
        if self.excludes_zero() {
            self.lo.abs().min(self.hi.abs())
        } else {
            0.0
        }
    }
}

/// One of the worst entries.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WorstEntry {
    /// Where.
    pub at: Position,
    /// The candidate's value.
    pub candidate: f64,
    /// The reference midpoint.
    pub reference: f64,
    /// The reference radius.
    pub radius: f64,
    /// Certified upper bound on this entry's error.
    pub certified: f64,
}

/// A non-finite candidate entry.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NonFiniteEntry {
    /// Where.
    pub at: Position,
    /// `NaN`, `inf` or `-inf`.
    pub value: String,
}

/// Rows that see no key, by the candidate's convention.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Convention {
    /// `polyattn (lse -inf)`, `flashattention (lse +inf)`, `pytorch (NaN)`,
    /// `pytorch (lse 0)`.
    pub convention: String,
    /// How many such rows (over batch and heads).
    pub rows: usize,
    /// The first such row.
    pub first: Position,
}

/// One row's certified mean error.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RowBias {
    /// Where (col = 0).
    pub at: Position,
    /// The certified interval for mean_c (c - y) over the row.
    pub mean: Range64,
}

/// Certified signed mean errors.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Bias {
    /// Over every finite entry.
    pub overall: Range64,
    /// Whether `overall` excludes 0: the mean error is certifiably nonzero.
    pub overall_nonzero: bool,
    /// Rows (of one head) whose interval excludes 0.
    pub rows_nonzero: usize,
    /// Rows counted.
    pub rows: usize,
    /// The rows with the largest certified |bias| (up to 5).
    pub top_rows: Vec<RowBias>,
    /// Per column (over batch, heads and rows): one interval per column.
    pub columns: Vec<Range64>,
    /// Columns whose interval excludes 0.
    pub columns_nonzero: usize,
}

/// FlashAttention's rule against one baseline.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Baseline {
    /// `attention_ref(upcast=False, reorder_ops=True)` or `upcast (f32)`.
    pub kind: String,
    /// The dtype it computes in: the candidate tensor's, and for `lse` the run's (o's,
    /// else a gradient's), its values then rounded to lse's own dtype.
    pub dtype: String,
    /// The baseline's certified max error (upper bound).
    pub certified_max_abs: f64,
    /// Its certified lower bound.
    pub certified_lower_max_abs: f64,
    /// candidate upper / baseline upper.
    pub ratio: f64,
    /// `pass`, `fail` or `undecided`.
    pub verdict: String,
}

/// One candidate tensor certified.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TensorCertificate {
    /// `o`, `lse`, `dq`, `dk` or `dv`.
    pub name: String,
    /// The candidate's dtype.
    pub dtype: String,
    /// Its file shape.
    pub shape: Vec<usize>,
    /// Entries certified (convention rows excluded).
    pub entries: usize,
    /// Certified upper bound on max |c - y| (`inf` with non-finite entries).
    pub certified_max_abs: f64,
    /// Certified lower bound on max |c - y| over the finite entries.
    pub certified_lower_max_abs: f64,
    /// Certified bound on ||c - y||_F / ||y||_F, or on ||c - y||_F (see `rel_fro_kind`).
    pub certified_rel_fro: f64,
    /// `relative`, or `absolute` where the exact tensor is (indistinguishable from) 0.
    pub rel_fro_kind: String,
    /// max (|mid| + r): an upper bound on max |y|.
    pub max_abs_exact: f64,
    /// The reference's largest radius.
    pub reference_radius: f64,
    /// The entries with the largest certified error (up to 5).
    pub worst: Vec<WorstEntry>,
    /// Count of NaN/inf entries (outside convention rows).
    pub nonfinite: usize,
    /// The first of them (up to 10).
    pub nonfinite_first: Vec<NonFiniteEntry>,
    /// Rows that see no key, by convention.
    pub conventions: Vec<Convention>,
    /// Certified mean errors.
    pub bias: Bias,
    /// `2 u_X max(|mid| + r)`.
    pub atol: f64,
    /// `u_X`.
    pub unit_roundoff: f64,
    /// Against `attention_ref(upcast=False, reorder_ops=True)` in the candidate's dtype.
    pub baseline: Baseline,
    /// Against the upcast baseline.
    pub upcast: Baseline,
    /// Convention-mismatch hints (empty when nothing suspicious).
    pub hints: Vec<String>,
}

/// The whole report.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CandidateReport {
    /// `polyattn.certify.candidate/1`.
    pub schema: String,
    /// The layout.
    pub layout: Layout,
    /// Input dtypes: q, k, v, do.
    pub input_dtypes: Vec<String>,
    /// batch, heads (per batch), n_q, n_k, d, d_v (`--layout varlen`: the sequences,
    /// heads, and the packed totals of query and key rows).
    pub shape: [usize; 6],
    /// `--layout varlen`: the sequence offsets (`cu_seqlens_q`, `cu_seqlens_k`);
    /// absent from the JSON otherwise. Positions in the report are packed rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cu_seqlens: Option<[Vec<usize>; 2]>,
    /// Key/value heads per batch (fewer than `shape[1]` under grouped-query attention).
    pub kv_heads: usize,
    /// The mask.
    pub mask: String,
    /// tau.
    pub scale: f64,
    /// The score softcap, when one was given (absent from the JSON otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub softcap: Option<f64>,
    /// The reference.
    pub reference: ReferenceUsed,
    /// The rule, in words.
    pub rule: String,
    /// Per candidate tensor.
    pub tensors: Vec<TensorCertificate>,
    /// Candidate tensors that were not certified (unknown names).
    pub ignored: Vec<String>,
    /// Seconds: reference, baselines, statistics. Not in the JSON or Markdown (which
    /// are reproducible to the byte): see [`CandidateReport::timings`].
    #[serde(skip)]
    pub seconds_reference: f64,
    /// See `seconds_reference`.
    #[serde(skip)]
    pub seconds_baselines: f64,
    /// See `seconds_reference`.
    #[serde(skip)]
    pub seconds_statistics: f64,
    /// Per tensor: certified error along the rows (plot data, not in the JSON).
    #[serde(skip)]
    pub row_profiles: Vec<RowProfile>,
    /// Every row's bias interval: (tensor, position, interval) (CSV, not in the JSON).
    #[serde(skip)]
    pub row_biases: Vec<(String, RowBias)>,
}

/// One tensor's certified errors along its rows: bucket `b` covers the rows up to
/// `rows[b]` (1-based, log-spaced), maximised over batch, heads, columns and the
/// bucket's rows.
#[derive(Clone, Debug, PartialEq)]
pub struct RowProfile {
    /// The tensor.
    pub name: String,
    /// Last row (1-based) of each bucket.
    pub rows: Vec<usize>,
    /// The candidate's certified error.
    pub candidate: Vec<f64>,
    /// The baseline's certified error.
    pub baseline: Vec<f64>,
}

/// The rule's statement, as written in reports.
pub const RULE: &str = "pass iff certified_max_abs(candidate) <= 2 * certified_lower(baseline) + atol, atol = 2 * u_dtype * max|exact|; fail iff certified_lower(candidate) > 2 * certified_max_abs(baseline) + atol; else undecided";

// ---------------------------------------------------------------------------------
// Geometry

/// A file tensor's shape in a layout: leading batch dims, heads (bshd only), rows, cols.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Geom {
    /// bhsd: every leading dim (heads included); bshd: the batch dims.
    lead: Vec<usize>,
    /// bshd: the head dim; bhsd: `None`.
    heads: Option<usize>,
    rows: usize,
    cols: usize,
}

impl Geom {
    fn of(name: &str, shape: &[usize], layout: Layout) -> Result<Self> {
        let r = shape.len();
        match layout {
            Layout::Bhsd if (2..=4).contains(&r) => Ok(Geom {
                lead: shape[..r - 2].to_vec(),
                heads: None,
                rows: shape[r - 2],
                cols: shape[r - 1],
            }),
            Layout::Bshd if (3..=4).contains(&r) => Ok(Geom {
                lead: shape[..r - 3].to_vec(),
                heads: Some(shape[r - 2]),
                rows: shape[r - 3],
                cols: shape[r - 1],
            }),
            Layout::Varlen if r == 3 => Ok(Geom {
                lead: Vec::new(),
                heads: Some(shape[1]),
                rows: shape[0],
                cols: shape[2],
            }),
            _ => Err(Error::ShapeMismatch {
                what: format!("rank of `{name}` (layout {})", layout.name()),
                expected: match layout {
                    Layout::Bhsd => "[seq, dim], [heads, seq, dim] or [batch, heads, seq, dim]",
                    Layout::Bshd => "[seq, heads, dim] or [batch, seq, heads, dim]",
                    Layout::Varlen => "[total, heads, dim] (packed sequences)",
                }
                .into(),
                got: format!("{shape:?}"),
            }),
        }
    }

    /// The batch dims (every leading dim but the heads) and the head count.
    fn batch_and_heads(&self) -> (&[usize], usize) {
        match self.heads {
            Some(h) => (&self.lead, h),
            None => match self.lead.split_last() {
                Some((h, b)) => (b, *h),
                None => (&[], 1),
            },
        }
    }

    /// Matrices in the stack.
    fn stack(&self) -> usize {
        self.lead.iter().product::<usize>() * self.heads.unwrap_or(1)
    }

    /// (batch count, heads per batch) for positions.
    fn batch_heads(&self) -> (usize, usize) {
        match self.heads {
            Some(h) => (self.lead.iter().product(), h),
            None => match self.lead.split_last() {
                Some((h, b)) => (b.iter().product(), *h),
                None => (1, 1),
            },
        }
    }

    fn with(&self, rows: usize, cols: usize) -> Geom {
        Geom {
            lead: self.lead.clone(),
            heads: self.heads,
            rows,
            cols,
        }
    }

    fn shape(&self) -> Vec<usize> {
        let mut s = self.lead.clone();
        match self.heads {
            Some(h) => s.extend([self.rows, h, self.cols]),
            None => s.extend([self.rows, self.cols]),
        }
        s
    }

    /// The lse shape: `[.., heads, rows]` in every layout (packed: `[heads, total_q]`).
    fn lse_shape(&self) -> Vec<usize> {
        let mut s = self.lead.clone();
        if let Some(h) = self.heads {
            s.push(h);
        }
        s.push(self.rows);
        s
    }

    /// Row-major file data to the stack `[stack][rows][cols]`.
    fn to_stack(&self, data: &[f64]) -> Vec<f64> {
        let Some(h) = self.heads else {
            return data.to_vec();
        };
        let (r, c) = (self.rows, self.cols);
        let b = self.lead.iter().product::<usize>();
        let mut out = vec![0.0; data.len()];
        for bi in 0..b {
            for s in 0..r {
                for hi in 0..h {
                    let src = ((bi * r + s) * h + hi) * c;
                    let dst = ((bi * h + hi) * r + s) * c;
                    out[dst..dst + c].copy_from_slice(&data[src..src + c]);
                }
            }
        }
        out
    }

    fn position(&self, stack_index: usize, row: usize, col: usize) -> Position {
        let (_, hpb) = self.batch_heads();
        Position {
            batch: stack_index / hpb.max(1),
            head: stack_index % hpb.max(1),
            row,
            col,
        }
    }
}

/// The other 4-d layout, for messages.
fn other_layout(layout: Layout) -> Option<Layout> {
    match layout {
        Layout::Bhsd => Some(Layout::Bshd),
        Layout::Bshd => Some(Layout::Bhsd),
        Layout::Varlen => None,
    }
}

/// An input tensor as an f64 stack, checked finite and non-empty.
fn load_input(file: &TensorFile, name: &str, layout: Layout) -> Result<(Geom, Vec<f64>, DType)> {
    let t = file.get(name)?;
    let g = Geom::of(name, t.shape(), layout)?;
    check_nonempty(name, t.shape())?;
    let data = t.to_f64_vec();
    check_finite(name, t.shape(), &data)?;
    Ok((g.clone(), g.to_stack(&data), t.dtype()))
}

fn expect_shape(name: &str, t: &AnyTensor, want: Vec<usize>, layout: Layout) -> Result<()> {
    if t.shape() == want.as_slice() {
        return Ok(());
    }
    let mut what = format!("candidate `{name}` (layout {})", layout.name());
    if let (Some(other), true) = (
        other_layout(layout),
        name != "lse" && t.shape().len() == 4 && want.len() == 4,
    ) {
        let (a, b) = (t.shape(), &want);
        if a[0] == b[0] && a[1] == b[2] && a[2] == b[1] && a[3] == b[3] {
            what.push_str(&format!("; it is shaped for --layout {}", other.name()));
        }
    }
    Err(Error::ShapeMismatch {
        what,
        expected: format!("{want:?}"),
        got: format!("{:?}", t.shape()),
    })
}

// ---------------------------------------------------------------------------------
// Reference

/// Midpoints and radii of one head's exact o, lse, dq, dk, dv.
struct HeadRef {
    t: [(Vec<f64>, Vec<f64>); 5],
}

#[cfg(feature = "certify")]
fn mpfr_head(
    (q, k, v, d_o): (
        MatRef<'_, f64>,
        MatRef<'_, f64>,
        MatRef<'_, f64>,
        Option<MatRef<'_, f64>>,
    ),
    (tau, mask, bias, softcap): (f64, Mask, Option<MatRef<'_, f64>>, Option<f64>),
) -> Result<HeadRef> {
    use nalgebra::DMatrix;
    use polyattn_spec::attention as spec;
    let dm = |m: MatRef<'_, f64>| DMatrix::from_row_slice(m.rows(), m.cols(), m.as_slice());
    let sp = spec::Problem {
        q: dm(q),
        k: dm(k),
        v: dm(v),
        tau,
        mask: super::spec_mask(mask),
        softcap,
    };
    let err = |e: spec::SpecError| Error::InvalidParameter {
        name: "reference problem",
        value: "MPFR".into(),
        reason: e.to_string(),
    };
    let mid_rad = |iv: &polyattn_spec::Interval| {
        let (lo, hi) = (iv.lo_f64(), iv.hi_f64());
        let c = 0.5 * (lo + hi);
        (c, up((hi - c).max(c - lo)))
    };
    let split = |m: &DMatrix<polyattn_spec::Interval>| {
        let mut out = (Vec::with_capacity(m.len()), Vec::with_capacity(m.len()));
        for i in 0..m.nrows() {
            for j in 0..m.ncols() {
                let (c, r) = mid_rad(&m[(i, j)]);
                out.0.push(c);
                out.1.push(r);
            }
        }
        out
    };
    let bias = bias.map(dm);
    let f = spec::forward_with_bias(&sp, bias.as_ref(), 128).map_err(err)?;
    let lse = f
        .lse
        .iter()
        .map(|iv| match iv {
            Some(iv) => mid_rad(iv),
            None => (f64::NEG_INFINITY, 0.0),
        })
        .unzip();
    let mut t = [split(&f.o), lse, empty(), empty(), empty()];
    if let Some(g) = d_o {
        let b = spec::backward_with_bias(&sp, bias.as_ref(), &dm(g), 128).map_err(err)?;
        t[2] = split(&b.dq);
        t[3] = split(&b.dk);
        t[4] = split(&b.dv);
    }
    Ok(HeadRef { t })
}

fn empty() -> (Vec<f64>, Vec<f64>) {
    (Vec::new(), Vec::new())
}

fn f64_head(
    (q, k, v, d_o): (
        MatRef<'_, f64>,
        MatRef<'_, f64>,
        MatRef<'_, f64>,
        Option<MatRef<'_, f64>>,
    ),
    (tau, mask, bias, softcap): (f64, Mask, Option<MatRef<'_, f64>>, Option<f64>),
) -> Result<HeadRef> {
    let cfg = AttentionConfig {
        scale: Some(tau),
        mask,
        softcap,
    };
    let r = exact_reference_with_bias(q, k, v, bias, d_o, &cfg)?;
    let mut t = [
        (r.o, r.bound_o),
        (r.lse, r.bound_lse),
        empty(),
        empty(),
        empty(),
    ];
    if let Some(g) = r.grads {
        t[2] = (g.dq, g.bound_dq);
        t[3] = (g.dk, g.bound_dk);
        t[4] = (g.dv, g.bound_dv);
    }
    Ok(HeadRef { t })
}

/// Sums consecutive groups of `g` blocks of `len` entries (head order, f64).
fn group_sums(x: &[f64], g: usize, len: usize) -> Vec<f64> {
    x.chunks(g * len)
        .flat_map(|grp| {
            let mut acc = vec![0.0; len];
            for block in grp.chunks(len) {
                for (a, v) in acc.iter_mut().zip(block) {
                    *a += v;
                }
            }
            acc
        })
        .collect()
}

/// Enclosures of sums over groups of `g` heads: midpoints summed in f64, radii by
/// [`polyattn::rounding::group_sum_radius`] (the heads' radii plus the f64 summation's
/// rounding of the midpoints, rounded up; infinite radii stay infinite).
fn group_sums_enclosed(mid: &[f64], rad: &[f64], g: usize, len: usize) -> (Vec<f64>, Vec<f64>) {
    let abs: Vec<f64> = mid.iter().map(|m| m.abs()).collect();
    let (sums, rads, abss) = (
        group_sums(mid, g, len),
        group_sums(rad, g, len),
        group_sums(&abs, g, len),
    );
    let r = rads
        .iter()
        .zip(&abss)
        .map(|(&r, &a)| {
            up(polyattn::rounding::group_sum_radius(
                r,
                a,
                g,
                polyattn::rounding::U_F64,
            ))
        })
        .collect();
    (sums, r)
}

// ---------------------------------------------------------------------------------
// Statistics

/// `x` one step up (0 stays 0).
fn up(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        x
    } else {
        x.next_up()
    }
}

/// `x` one step down toward 0 for positive `x` (a lower bound), 0 stays 0.
fn down(x: f64) -> f64 {
    if x <= 0.0 || !x.is_finite() {
        x.max(0.0)
    } else {
        x.next_down()
    }
}

/// gamma_k in f64 ([`polyattn::rounding::gamma`]).
fn gamma(k: usize) -> f64 {
    polyattn::rounding::gamma(k, polyattn::rounding::U_F64)
}

/// A sum of squares kept as `scale^2 ssq` with `scale` a power of two (LAPACK's
/// scaled `nrm2`, with exact rescaling): no square overflows (each `|x| / scale` is
/// below 2) for any finite entries, up to f64::MAX.
///
/// Rounding: dividing by, and rescaling with, powers of two is exact except in the
/// subnormal range, where each operation loses at most `2^-1074` absolutely; `ssq` is
/// at least 1 once the largest entry is in (its `|x| / scale >= 1`), so these losses,
/// at most `3 n 2^-1074` for `n` entries, are covered by adding `1e-300` while
/// `n < 2^70`. The sum of `n` squares has relative error at most `gamma_{n+1}`.
#[derive(Clone, Copy, Default)]
struct SumSq {
    scale: f64,
    ssq: f64,
    n: usize,
    nonfinite: bool,
}

/// The power of two `2^floor(log2 a)` for normal `a`; `2^-1022` for a subnormal.
fn pow2_floor(a: f64) -> f64 {
    f64::from_bits(a.to_bits() & 0x7FF0_0000_0000_0000).max(f64::MIN_POSITIVE)
}

impl SumSq {
    fn add(&mut self, x: f64) {
        self.n += 1;
        let a = x.abs();
        if !a.is_finite() {
            self.nonfinite = true;
            return;
        }
        if a == 0.0 {
            return;
        }
        let s = pow2_floor(a);
        if s > self.scale {
            if self.scale > 0.0 {
                let r = self.scale / s; // exact: powers of two
                self.ssq = self.ssq * r * r;
            }
            self.scale = s;
        }
        let t = a / self.scale;
        self.ssq += t * t;
    }
    /// (scale, an upper bound on the sum of squares / scale^2).
    fn upper(&self) -> (f64, f64) {
        if self.nonfinite {
            return (1.0, f64::INFINITY);
        }
        let e = gamma(self.n + 1);
        (
            self.scale,
            up(up(self.ssq * (1.0 + e)) * (1.0 + 2.0 * f64::EPSILON) + 1e-300),
        )
    }
    /// (scale, a lower bound on the sum of squares / scale^2).
    fn lower(&self) -> (f64, f64) {
        let e = gamma(self.n + 1);
        (self.scale, down(down(self.ssq / (1.0 + e)) - 1e-300))
    }
}

/// `sqrt(ssq) scale / big` rounded up (`up_dir`) or down; `big` a power of two at
/// least `scale`, so the quotient is exact or below `2^-1022` (then the `2^-1000`
/// margin of 1e-300 covers it).
fn scaled_norm((scale, ssq): (f64, f64), big: f64, up_dir: bool) -> f64 {
    if scale == 0.0 {
        return 0.0;
    }
    let r = scale / big;
    if up_dir {
        up(up(up(ssq.sqrt()) * r) + 1e-300)
    } else {
        down(down(down(ssq.sqrt()) * r) - 1e-300)
    }
}

/// One tensor's data in stack order, with which entries are excluded (conventions).
struct Entries<'a> {
    name: &'a str,
    /// Stack size, rows, cols.
    dims: (usize, usize, usize),
    cand: Vec<f64>,
    mid: Vec<f64>,
    rad: Vec<f64>,
    /// Entries in rows that see no key, set apart by convention.
    skip: Vec<bool>,
}

/// Accumulates running sums for a certified mean.
#[derive(Clone, Copy, Default)]
struct MeanAcc {
    diff: f64,
    abs_diff: f64,
    rad: f64,
    n: usize,
}

impl MeanAcc {
    fn add(&mut self, diff: f64, rad: f64) {
        self.diff += diff;
        self.abs_diff += diff.abs();
        self.rad += rad;
        self.n += 1;
    }
    fn interval(&self) -> Range64 {
        if self.n == 0 {
            return Range64 { lo: 0.0, hi: 0.0 };
        }
        let n = self.n as f64;
        // The sums of n terms are each within gamma_{n-1} of theirs; the differences,
        // the division and the products add a few roundings: gamma_{n+2} times the
        // exact sum of |c - mid| + r, itself at most (1 + gamma_n) times the computed
        // one, is at most gamma_{2n+4} times the computed sum. Infinite (the interval
        // then certifies nothing) once (2n + 4) u >= 1.
        let slack = up(up(gamma(2 * self.n + 4) * up(self.abs_diff + self.rad)) / n);
        let w = up(up(self.rad / n) * (1.0 + 2.0 * f64::EPSILON) + slack);
        let m = self.diff / n;
        Range64 {
            lo: (m - w).next_down(),
            hi: (m + w).next_up(),
        }
    }
}

/// The certified error of candidate `c` against `mid +- r`: 0 when both are the same
/// infinity (an lse of `-inf` where no key is seen), `inf` when either is not finite.
fn upper(c: f64, mid: f64, r: f64) -> f64 {
    // A radius that is negative, NaN or infinite certifies nothing.
    if !(r >= 0.0 && r.is_finite()) {
        return f64::INFINITY;
    }
    if c == mid {
        return r;
    }
    if !c.is_finite() || !mid.is_finite() {
        return f64::INFINITY;
    }
    up(up((c - mid).abs()) + r)
}

/// The certified lower bound matching [`upper`] (`inf` for a finite value against an
/// infinite exact one or the reverse; 0 for NaN).
fn lower(c: f64, mid: f64, r: f64) -> f64 {
    if c == mid || c.is_nan() || !(r >= 0.0 && r.is_finite()) {
        return 0.0;
    }
    if !c.is_finite() || !mid.is_finite() {
        return if mid.is_finite() { f64::INFINITY } else { 0.0 };
    }
    down(down((c - mid).abs()) - r)
}

/// (certified max error, certified lower bound) of `vals` against the reference,
/// skipping `skip` entries.
fn max_errors(vals: &[f64], e: &Entries<'_>) -> (f64, f64) {
    let (mut hi, mut lo) = (0.0f64, 0.0f64);
    for (i, &y) in vals.iter().enumerate() {
        if e.skip[i] {
            continue;
        }
        hi = hi.max(upper(y, e.mid[i], e.rad[i]));
        lo = lo.max(lower(y, e.mid[i], e.rad[i]));
    }
    (hi, lo)
}

/// Log-spaced row buckets (as in the certify report's profile): last row of each.
fn row_buckets(rows: usize) -> Vec<usize> {
    let nb = 200usize;
    let mut ends: Vec<usize> = (1..=nb)
        .map(|b| {
            let t = b as f64 / nb as f64;
            ((rows as f64).powf(t).round() as usize).clamp(1, rows.max(1))
        })
        .collect();
    ends.dedup();
    ends
}

struct Stats {
    cert: TensorCertificate,
    profile: (Vec<usize>, Vec<f64>, Vec<f64>),
    row_biases: Vec<RowBias>,
}

#[allow(clippy::too_many_arguments)]
fn tensor_stats(
    e: &Entries<'_>,
    geom: &Geom,
    (dtype, base_dtype): (DType, DType),
    file_shape: Vec<usize>,
    conventions: Vec<Convention>,
    baseline: &[f64],
    upcast: &[f64],
) -> Stats {
    let (stack, rows, cols) = e.dims;
    let (mut cert_max, mut lower_max) = (0.0f64, 0.0f64);
    let (mut diff2, mut rad2, mut mid2) = (SumSq::default(), SumSq::default(), SumSq::default());
    let mut max_exact = 0.0f64;
    let mut nonfinite = 0usize;
    let mut nonfinite_first = Vec::new();
    let mut worst: Vec<(f64, usize)> = Vec::new();
    let mut overall = MeanAcc::default();
    let mut col_acc = vec![MeanAcc::default(); cols];
    let mut row_biases = Vec::with_capacity(stack * rows);
    let ends = row_buckets(rows);
    let mut prof_c = vec![0.0f64; ends.len()];
    let mut prof_b = vec![0.0f64; ends.len()];
    let mut entries = 0usize;
    for s in 0..stack {
        let mut bucket = 0usize;
        for r in 0..rows {
            while ends[bucket] < r + 1 {
                bucket += 1;
            }
            let mut row_acc = MeanAcc::default();
            for (c, col) in col_acc.iter_mut().enumerate() {
                let i = (s * rows + r) * cols + c;
                if e.skip[i] {
                    continue;
                }
                entries += 1;
                let (y, mid, rad) = (e.cand[i], e.mid[i], e.rad[i]);
                prof_b[bucket] = prof_b[bucket].max(upper(baseline[i], mid, rad));
                if y == mid && !mid.is_finite() {
                    continue; // lse -inf where no key is seen, as defined: no error
                }
                if !y.is_finite() || !mid.is_finite() {
                    // NaN/inf, or a finite lse where the exact one is -inf.
                    nonfinite += 1;
                    if nonfinite_first.len() < 10 {
                        nonfinite_first.push(NonFiniteEntry {
                            at: geom.position(s, r, c),
                            value: if mid.is_finite() {
                                format!("{y}")
                            } else {
                                format!("{y} (exact {mid})")
                            },
                        });
                    }
                    cert_max = f64::INFINITY;
                    lower_max = lower_max.max(lower(y, mid, rad));
                    prof_c[bucket] = f64::INFINITY;
                    continue;
                }
                max_exact = max_exact.max(up(mid.abs() + rad));
                rad2.add(rad);
                mid2.add(mid);
                let u = upper(y, mid, rad);
                cert_max = cert_max.max(u);
                lower_max = lower_max.max(lower(y, mid, rad));
                prof_c[bucket] = prof_c[bucket].max(u);
                let d = y - mid;
                diff2.add(d);
                row_acc.add(d, rad);
                col.add(d, rad);
                overall.add(d, rad);
                if worst.len() < 5 || u > worst[worst.len() - 1].0 {
                    worst.push((u, i));
                    worst.sort_by(|a, b| b.0.total_cmp(&a.0));
                    worst.truncate(5);
                }
            }
            if row_acc.n > 0 {
                row_biases.push(RowBias {
                    at: geom.position(s, r, 0),
                    mean: row_acc.interval(),
                });
            }
        }
    }
    // Frobenius: the three norms as scaled sums of squares (no square overflows, see
    // SumSq), each relative to the largest scale `big` (a power of two), so the ratio
    // needs no unscaled norm; `(1 + 2 eps)` covers the quotient's rounding, `up`/`down`
    // every other step. The absolute form is scaled back by `big` (inf on overflow).
    let big = [diff2.scale, rad2.scale, mid2.scale]
        .into_iter()
        .fold(f64::MIN_POSITIVE, f64::max);
    let (num, den) = (
        up(scaled_norm(diff2.upper(), big, true) + scaled_norm(rad2.upper(), big, true)),
        down(scaled_norm(mid2.lower(), big, false) - scaled_norm(rad2.upper(), big, true)),
    );
    let (rel, kind) = if nonfinite > 0 || diff2.nonfinite || rad2.nonfinite {
        (f64::INFINITY, "relative")
    } else if den > 0.0 {
        (up(num / den) * (1.0 + 2.0 * f64::EPSILON), "relative")
    } else {
        (up(num * big), "absolute")
    };
    let col_iv: Vec<Range64> = col_acc.iter().map(MeanAcc::interval).collect();
    let mut top_rows: Vec<RowBias> = row_biases
        .iter()
        .filter(|b| b.mean.excludes_zero())
        .cloned()
        .collect();
    top_rows.sort_by(|a, b| {
        b.mean
            .magnitude_lower()
            .total_cmp(&a.mean.magnitude_lower())
    });
    top_rows.truncate(5);
    let overall_iv = overall.interval();
    let u_x = dtype.unit_roundoff();
    let atol = up(2.0 * u_x * max_exact);
    let judge = |kind: &str, vals: &[f64]| {
        let (b_hi, b_lo) = max_errors(vals, e);
        let verdict = if cert_max <= down(2.0 * b_lo + atol) {
            "pass"
        } else if nonfinite > 0 || lower_max > up(2.0 * b_hi + atol) {
            "fail"
        } else {
            "undecided"
        };
        Baseline {
            kind: kind.into(),
            dtype: base_dtype.name().into(),
            certified_max_abs: b_hi,
            certified_lower_max_abs: b_lo,
            ratio: if b_hi > 0.0 {
                cert_max / b_hi
            } else {
                f64::INFINITY
            },
            verdict: verdict.into(),
        }
    };
    let baseline_rule = judge(
        "attention_ref(upcast=False, reorder_ops=True) in the candidate's dtype",
        baseline,
    );
    let upcast_rule = judge("upcast: intermediates in f32, results rounded", upcast);
    Stats {
        cert: TensorCertificate {
            name: e.name.into(),
            dtype: dtype.name().into(),
            shape: file_shape,
            entries,
            certified_max_abs: cert_max,
            certified_lower_max_abs: lower_max,
            certified_rel_fro: rel,
            rel_fro_kind: kind.into(),
            max_abs_exact: max_exact,
            reference_radius: e.rad.iter().cloned().fold(0.0, f64::max),
            worst: worst
                .into_iter()
                .map(|(u, i)| WorstEntry {
                    at: geom.position(i / (rows * cols), (i / cols) % rows, i % cols),
                    candidate: e.cand[i],
                    reference: e.mid[i],
                    radius: e.rad[i],
                    certified: u,
                })
                .collect(),
            nonfinite,
            nonfinite_first,
            conventions,
            bias: Bias {
                overall: overall_iv,
                overall_nonzero: overall_iv.excludes_zero(),
                rows_nonzero: row_biases.iter().filter(|b| b.mean.excludes_zero()).count(),
                rows: row_biases.len(),
                top_rows,
                columns_nonzero: col_iv.iter().filter(|c| c.excludes_zero()).count(),
                columns: col_iv,
            },
            atol,
            unit_roundoff: u_x,
            baseline: baseline_rule,
            upcast: upcast_rule,
            hints: Vec::new(),
        },
        profile: (ends, prof_c, prof_b),
        row_biases,
    }
}

// ---------------------------------------------------------------------------------
// The run

/// The inputs as stacks.
struct Inputs {
    geoms: [Geom; 3],
    /// Query heads per key/value head (1 without grouped-query attention).
    group: usize,
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    d_o: Option<Vec<f64>>,
    /// The independent problems in the stack's rows: one covering every row, or one
    /// per sequence of the packed layout (`--layout varlen`).
    segs: Vec<Seg>,
    /// The query and key offsets the sequences came from (`[0, n_q]`, `[0, n_k]` when
    /// unpacked).
    offsets: [Vec<usize>; 2],
    dtypes: Vec<String>,
}

/// One attention problem inside the stack's rows: query rows `q` against key rows `k`
/// of every head, with its additive score bias (one `q.len() x k.len()` matrix shared
/// by every head, or one per query head in the stack's order).
struct Seg {
    q: std::ops::Range<usize>,
    k: std::ops::Range<usize>,
    bias: Option<(bool, Vec<f64>)>,
}

/// One head's q, k, v and dO.
type HeadViews<'a> = (
    MatRef<'a, f64>,
    MatRef<'a, f64>,
    MatRef<'a, f64>,
    Option<MatRef<'a, f64>>,
);

impl Inputs {
    /// Head `h`'s matrices restricted to sequence `s` (the stack lengths were checked
    /// when loading; a view that does not fit is still a typed error).
    fn part(&self, h: usize, s: usize) -> Result<HeadViews<'_>> {
        let [gq, gk, gv] = &self.geoms;
        let seg = &self.segs[s];
        // Rows `rows` of matrix `m` of a stack of `total x c` matrices.
        fn part<'a>(
            x: &'a [f64],
            m: usize,
            total: usize,
            c: usize,
            rows: &std::ops::Range<usize>,
        ) -> Result<MatRef<'a, f64>> {
            let base = m * total * c;
            let data = x
                .get(base + rows.start * c..base + rows.end * c)
                .unwrap_or(&[]);
            MatRef::new(rows.len(), c, data)
        }
        let g = match &self.d_o {
            Some(g) => Some(part(g, h, gq.rows, gv.cols, &seg.q)?),
            None => None,
        };
        // Query head h reads key/value head h / group ([`polyattn::attention::kv_group`];
        // the stack is batch-major in every layout, so this holds across batches).
        let kv = h / self.group.max(1);
        Ok((
            part(&self.q, h, gq.rows, gq.cols, &seg.q)?,
            part(&self.k, kv, gk.rows, gk.cols, &seg.k)?,
            part(&self.v, kv, gv.rows, gv.cols, &seg.k)?,
            g,
        ))
    }

    /// Head `h`'s bias in sequence `s`, if any.
    fn bias(&self, h: usize, s: usize) -> Result<Option<MatRef<'_, f64>>> {
        let seg = &self.segs[s];
        let Some((shared, b)) = &seg.bias else {
            return Ok(None);
        };
        let (r, c) = (seg.q.len(), seg.k.len());
        let at = if *shared { 0 } else { h };
        Ok(Some(MatRef::new(
            r,
            c,
            b.get(at * r * c..(at + 1) * r * c).unwrap_or(&[]),
        )?))
    }

    /// `heads (d + d_v) sum_s n_q,s n_k,s`: the reference's work, for `Auto`.
    fn work(&self) -> f64 {
        let [gq, _, gv] = &self.geoms;
        let pairs: usize = self.segs.iter().map(|s| s.q.len() * s.k.len()).sum();
        (gq.stack() * pairs * (gq.cols + gv.cols)) as f64
    }

    /// `f` on every (head, sequence) part in parallel (`empty(n_k)` for a sequence with
    /// keys but no query), the parts of each head joined in row order by `join`: one
    /// result per stacked query head.
    fn per_head<R: Send>(
        &self,
        f: impl Fn(HeadViews<'_>, Option<MatRef<'_, f64>>) -> Result<R> + Sync,
        empty: impl Fn(usize) -> R + Sync,
        join: impl Fn(Vec<R>) -> R,
    ) -> Result<Vec<R>> {
        let (stack, n) = (self.geoms[0].stack(), self.segs.len());
        let mut parts: Vec<R> = (0..stack * n)
            .into_par_iter()
            .map(|i| {
                let (h, s) = (i / n, i % n);
                if self.segs[s].q.is_empty() {
                    return Ok(empty(self.segs[s].k.len()));
                }
                f(self.part(h, s)?, self.bias(h, s)?)
            })
            .collect::<Result<_>>()?;
        let mut out = Vec::with_capacity(stack);
        for _ in 0..stack {
            let rest = parts.split_off(n);
            out.push(join(std::mem::replace(&mut parts, rest)));
        }
        Ok(out)
    }

    /// Whether each stacked row (every head alike) sees no key under `mask`, which
    /// applies within each sequence.
    fn sees_none(&self, mask: Mask) -> Vec<bool> {
        let mut out = Vec::with_capacity(self.geoms[0].rows);
        for seg in &self.segs {
            let (n_q, n_k) = (seg.q.len(), seg.k.len());
            out.extend((0..n_q).map(|i| mask.key_range(i, n_q, n_k).is_empty()));
        }
        out
    }
}

/// Concatenates vectors in order.
fn concat(parts: impl IntoIterator<Item = Vec<f64>>) -> Vec<f64> {
    parts.into_iter().flatten().collect()
}

impl HeadRef {
    /// A sequence with `n_k` keys and no query: its keys' exact dK, dV are zero (with
    /// gradients), nothing else has entries.
    fn keys_only(n_k: usize, (d, d_v): (usize, usize), grads: bool) -> Self {
        let zeros = |c: usize| {
            if grads {
                (vec![0.0; n_k * c], vec![0.0; n_k * c])
            } else {
                empty()
            }
        };
        HeadRef {
            t: [empty(), empty(), empty(), zeros(d), zeros(d_v)],
        }
    }

    /// The parts of one head, in row order (one part, the unpacked case, moves as is).
    fn join(parts: Vec<HeadRef>) -> Self {
        let mut parts = parts.into_iter();
        let mut head = parts.next().unwrap_or(HeadRef {
            t: Default::default(),
        });
        for p in parts {
            for (ti, pi) in head.t.iter_mut().zip(p.t) {
                ti.0.extend(pi.0);
                ti.1.extend(pi.1);
            }
        }
        head
    }
}

/// The plain baseline of a sequence with `n_k` keys and no query (zero dK, dV).
fn plain_keys_only(n_k: usize, (d, d_v): (usize, usize), grads: bool) -> PlainHead {
    PlainHead {
        o: Vec::new(),
        lse: Vec::new(),
        grads: grads.then(|| [Vec::new(), vec![0.0; n_k * d], vec![0.0; n_k * d_v]]),
    }
}

/// The parts of one head's plain baseline, in row order.
fn plain_join(parts: Vec<PlainHead>) -> PlainHead {
    let mut parts = parts.into_iter();
    let mut head = parts.next().unwrap_or(PlainHead {
        o: Vec::new(),
        lse: Vec::new(),
        grads: None,
    });
    for p in parts {
        head.o.extend(p.o);
        head.lse.extend(p.lse);
        // Every part has gradients or none does (`need_grads` is one flag).
        if let (Some(hg), Some(pg)) = (head.grads.as_mut(), p.grads) {
            for (a, b) in hg.iter_mut().zip(pg) {
                a.extend(b);
            }
        }
    }
    head
}

/// The packed layout's sequence offsets `name` (an I32 or I64 tensor of `batch + 1`
/// entries): 0 first, never decreasing, `total` last (the packed tensor's rows).
fn read_offsets(file: &TensorFile, name: &'static str, total: usize) -> Result<Vec<usize>> {
    let (shape, v) = file.get_integers(name).map_err(|e| match e {
        Error::MissingTensor { path, present, .. } => Error::MissingTensor {
            name: name.into(),
            path,
            present: format!("{present} (--layout varlen needs cu_seqlens_q and cu_seqlens_k, FlashAttention's cumulative sequence offsets)"),
        },
        e => e,
    })?;
    let shown = |v: &[i64]| match v.len() {
        0..=8 => format!("{v:?}"),
        n => format!("{:?} ... ({n} entries)", &v[..8]),
    };
    let bad = |reason: String| Error::InvalidParameter {
        name,
        value: shown(v),
        reason,
    };
    if shape.len() != 1 || v.len() < 2 {
        return Err(bad(format!(
            "shape {shape:?}: the offsets are a 1-d tensor of batch + 1 >= 2 entries"
        )));
    }
    if v[0] != 0 || v.windows(2).any(|w| w[1] < w[0]) || v[v.len() - 1] != total as i64 {
        return Err(bad(format!(
            "offsets must start at 0, never decrease and end at {total} (the packed tensor's rows)"
        )));
    }
    Ok(v.iter().map(|&x| x as usize).collect())
}

/// The file's `bias` plus, when it holds `alibi_slopes`
/// ([`crate::inputs::read_alibi_slopes`]), FlashAttention's ALiBi bias
/// ([`polyattn::attention::alibi_bias`]), one matrix per stacked query head, summed in
/// f64 (exact for f32 slopes).
fn load_bias_and_alibi(
    file: &TensorFile,
    gq: &Geom,
    n_k: usize,
) -> Result<Option<(bool, Vec<f64>)>> {
    let (batch, heads) = gq.batch_and_heads();
    let lead: Vec<usize> = batch.iter().copied().chain([heads]).collect();
    let bias = crate::inputs::read_bias(file, &lead, (gq.rows, n_k))?.map(|b| (b.shared, b.data));
    let Some(slopes) = crate::inputs::read_alibi_slopes(file, batch, heads)? else {
        return Ok(bias);
    };
    let (stack, n_q) = (gq.stack(), gq.rows);
    let out = crate::inputs::add_alibi(&slopes, stack, (n_q, n_k), |h, i, j| match &bias {
        Some((true, b)) => b[i * n_k + j],
        Some((false, b)) => b[(h * n_q + i) * n_k + j],
        None => 0.0,
    })?;
    Ok(Some((false, out)))
}

fn load_inputs(file: &TensorFile, layout: Layout) -> Result<Inputs> {
    let (gq, q, tq) = load_input(file, "q", layout)?;
    let (gk, k, tk) = load_input(file, "k", layout)?;
    let (gv, v, tv) = load_input(file, "v", layout)?;
    // Batch dims equal to q's; heads equal to q's or dividing them (grouped-query and
    // multi-query attention); v's heads equal to k's.
    let (q_batch, q_heads) = gq.batch_and_heads();
    let (k_batch, k_heads) = gk.batch_and_heads();
    let same = |name: &str, g: &Geom, heads_ok: bool| -> Result<()> {
        let (batch, _) = g.batch_and_heads();
        if g.lead.len() != gq.lead.len() || batch != q_batch || !heads_ok {
            return Err(Error::ShapeMismatch {
                what: format!(
                    "batch/head dimensions of `{name}` (layout {})",
                    layout.name()
                ),
                expected: format!(
                    "those of `q` {:?}, or with heads dividing q's {q_heads} (grouped-query attention){}",
                    gq.shape(),
                    if name == "v" { ", and v's heads equal to k's" } else { "" }
                ),
                got: format!("{:?}", g.shape()),
            });
        }
        Ok(())
    };
    same("k", &gk, k_heads > 0 && q_heads % k_heads == 0)?;
    let (_, v_heads) = gv.batch_and_heads();
    same("v", &gv, v_heads == k_heads && k_batch == q_batch)?;
    let group = polyattn::attention::kv_group(q_heads, k_heads)?;
    let dim = |what: &str, want: usize, got: usize| -> Result<()> {
        if want != got {
            return Err(Error::ShapeMismatch {
                what: what.into(),
                expected: want.to_string(),
                got: got.to_string(),
            });
        }
        Ok(())
    };
    dim("`k` head dimension d (must equal `q`'s)", gq.cols, gk.cols)?;
    dim(
        "`v` sequence length n_k (must equal `k`'s)",
        gk.rows,
        gv.rows,
    )?;
    let mut dtypes = vec![tq.name().into(), tk.name().into(), tv.name().into()];
    let d_o = if file.contains("do") {
        let (gdo, d_o, tdo) = load_input(file, "do", layout)?;
        let want = gq.with(gq.rows, gv.cols);
        if gdo != want {
            return Err(Error::ShapeMismatch {
                what: format!("`do` (layout {})", layout.name()),
                expected: format!("{:?}", want.shape()),
                got: format!("{:?}", gdo.shape()),
            });
        }
        dtypes.push(tdo.name().into());
        Some(d_o)
    } else {
        None
    };
    if layout != Layout::Varlen && (file.contains("cu_seqlens_q") || file.contains("cu_seqlens_k"))
    {
        return Err(Error::InvalidParameter {
            name: "layout",
            value: layout.name().into(),
            reason: "the input file holds cu_seqlens_q / cu_seqlens_k (FlashAttention's packed sequences): pass --layout varlen, or remove them".into(),
        });
    }
    let (segs, offsets) = if layout == Layout::Varlen {
        load_sequences(file, &gq, &gk)?
    } else {
        let seg = Seg {
            q: 0..gq.rows,
            k: 0..gk.rows,
            bias: load_bias_and_alibi(file, &gq, gk.rows)?,
        };
        (vec![seg], [vec![0, gq.rows], vec![0, gk.rows]])
    };
    Ok(Inputs {
        geoms: [gq, gk, gv],
        group,
        q,
        k,
        v,
        d_o,
        segs,
        offsets,
        dtypes,
    })
}

/// The packed layout's sequences: `cu_seqlens_q`, `cu_seqlens_k` read and checked, each
/// sequence with its ALiBi bias when the file has `alibi_slopes` (`[heads]`, or
/// `[batch, heads]`: one row per sequence). A `bias` has no packed form and is refused;
/// so is a sequence with queries and no key.
fn load_sequences(file: &TensorFile, gq: &Geom, gk: &Geom) -> Result<(Vec<Seg>, [Vec<usize>; 2])> {
    if file.contains("bias") {
        return Err(Error::InvalidParameter {
            name: "bias",
            value: "present".into(),
            reason: "the packed variable-length layout has no bias tensor (FlashAttention's varlen functions take none): give alibi_slopes or a window instead".into(),
        });
    }
    let cq = read_offsets(file, "cu_seqlens_q", gq.rows)?;
    let ck = read_offsets(file, "cu_seqlens_k", gk.rows)?;
    if cq.len() != ck.len() {
        return Err(Error::ShapeMismatch {
            what: "sequences in cu_seqlens_k (must equal cu_seqlens_q's)".into(),
            expected: (cq.len() - 1).to_string(),
            got: (ck.len() - 1).to_string(),
        });
    }
    let (batch, heads) = (cq.len() - 1, gq.heads.unwrap_or(1));
    let slopes = crate::inputs::read_alibi_slopes(file, &[batch], heads)?;
    let mut segs = Vec::with_capacity(batch);
    for b in 0..batch {
        let (q, k) = (cq[b]..cq[b + 1], ck[b]..ck[b + 1]);
        if !q.is_empty() && k.is_empty() {
            return Err(Error::InvalidParameter {
                name: "cu_seqlens_k",
                value: format!("sequence {b}: keys {}..{}", k.start, k.end),
                reason: format!("sequence {b} has {} queries and no key", q.len()),
            });
        }
        let bias = match &slopes {
            Some(s) if !q.is_empty() => {
                let mine = if s.len() == heads {
                    &s[..]
                } else {
                    &s[b * heads..(b + 1) * heads]
                };
                let data =
                    crate::inputs::add_alibi(mine, heads, (q.len(), k.len()), |_, _, _| 0.0)?;
                Some((false, data))
            }
            _ => None,
        };
        if !(q.is_empty() && k.is_empty()) {
            segs.push(Seg { q, k, bias });
        }
    }
    // q was checked non-empty, so some sequence has a query.
    Ok((segs, [cq, ck]))
}

/// Certifies the candidate's tensors against exact attention of `input`'s `q`, `k`,
/// `v` (`do`): see the module doc for every quantity.
pub fn certify_candidate(
    input: &TensorFile,
    candidate: &TensorFile,
    opts: &CandidateOptions,
) -> Result<CandidateReport> {
    let layout = opts.layout;
    let x = load_inputs(input, layout)?;
    let [gq, gk, gv] = x.geoms.clone();
    let (stack, n_q, n_k, d, d_v) = (gq.stack(), gq.rows, gk.rows, gq.cols, gv.cols);
    let tau = opts.scale.unwrap_or(1.0 / (d as f64).sqrt());
    if !tau.is_finite() {
        return Err(Error::InvalidParameter {
            name: "scale",
            value: format!("{tau}"),
            reason: "the score scale must be finite".into(),
        });
    }
    // The candidate's tensors: shape and dtype checked before any work.
    let shapes = [
        gq.with(n_q, d_v).shape(),
        gq.lse_shape(),
        gq.shape(),
        gk.shape(),
        gv.shape(),
    ];
    let geoms = [
        gq.with(n_q, d_v),
        gq.with(n_q, 1),
        gq.clone(),
        gk.clone(),
        gv.clone(),
    ];
    let mut present: Vec<(usize, DType, Vec<f64>)> = Vec::new();
    for (ti, name) in CANDIDATE_TENSORS.iter().enumerate() {
        if !candidate.contains(name) {
            continue;
        }
        let t = candidate.get(name)?;
        expect_shape(name, t, shapes[ti].clone(), layout)?;
        if ti >= 2 && x.d_o.is_none() {
            return Err(Error::MissingTensor {
                name: "do".into(),
                path: input_path(input),
                present: format!(
                    "{} (the candidate's `{name}` is a gradient: certifying it needs the dO it was computed with)",
                    input.names().join(", ")
                ),
            });
        }
        let data = t.to_f64_vec();
        let stacked = if ti == 1 {
            data
        } else {
            geoms[ti].to_stack(&data)
        };
        present.push((ti, t.dtype(), stacked));
    }
    if present.is_empty() {
        return Err(Error::MissingTensor {
            name: "o, lse, dq, dk or dv".into(),
            path: input_path(candidate),
            present: candidate.names().join(", "),
        });
    }
    let ignored: Vec<String> = candidate
        .names()
        .into_iter()
        .filter(|n| !CANDIDATE_TENSORS.contains(&n.as_str()))
        .collect();
    let need_grads = present.iter().any(|p| p.0 >= 2);
    let work = x.work();
    if matches!(opts.reference, ReferenceChoice::Mpfr) && !cfg!(feature = "certify") {
        return Err(Error::InvalidParameter {
            name: "reference",
            value: "mpfr".into(),
            reason: "this build has no MPFR reference (feature `certify` of polyattn-tools is off); use --reference f64 or auto".into(),
        });
    }
    let use_mpfr = cfg!(feature = "certify")
        && match opts.reference {
            ReferenceChoice::Mpfr => true,
            ReferenceChoice::F64 => false,
            ReferenceChoice::Auto => work <= MPFR_WORK_LIMIT,
            ReferenceChoice::Ball => {
                return Err(Error::InvalidParameter {
                    name: "reference",
                    value: "ball".into(),
                    reason: "a candidate is certified against MPFR or the f64 exact engine with its rounding bound (auto, mpfr or f64)".into(),
                })
            }
        };
    let mask = opts.mask;
    // Reference, per head, in parallel.
    let t0 = Instant::now();
    let heads: Vec<HeadRef> = x.per_head(
        |(q, k, v, g), b| {
            let g = if need_grads { g } else { None };
            #[cfg(feature = "certify")]
            if use_mpfr {
                return mpfr_head((q, k, v, g), (tau, mask, b, opts.softcap));
            }
            f64_head((q, k, v, g), (tau, mask, b, opts.softcap))
        },
        |n_k| HeadRef::keys_only(n_k, (d, d_v), need_grads),
        HeadRef::join,
    )?;
    let t_ref = t0.elapsed().as_secs_f64();
    // Baselines, per dtype present and rule.
    let t1 = Instant::now();
    // The run's dtype: o's, else a gradient's; an lse (usually f32 whatever the run)
    // gets the baseline of the run's dtype, rounded to its own.
    let run_dtype = present
        .iter()
        .find(|p| p.0 != 1)
        .or(present.first())
        .map_or(DType::F32, |p| p.1);
    let mut dtypes: Vec<DType> = present
        .iter()
        .map(|p| if p.0 == 1 { run_dtype } else { p.1 })
        .collect();
    dtypes.sort();
    dtypes.dedup();
    let mut baselines: Vec<(DType, PlainRule, Vec<PlainHead>)> = Vec::new();
    for &dt in &dtypes {
        for rule in [PlainRule::Storage, PlainRule::Upcast] {
            let hs: Vec<PlainHead> = x.per_head(
                |(q, k, v, g), b| {
                    let g = if need_grads { g } else { None };
                    Ok(plain_head(
                        (
                            q.as_slice(),
                            k.as_slice(),
                            v.as_slice(),
                            g.map(|g| g.as_slice()),
                        ),
                        (q.rows(), k.rows(), d, d_v),
                        (tau, mask, b.map(|b| b.as_slice()), opts.softcap),
                        dt,
                        rule,
                    ))
                },
                |n_k| plain_keys_only(n_k, (d, d_v), need_grads),
                plain_join,
            )?;
            baselines.push((dt, rule, hs));
        }
    }
    let t_base = t1.elapsed().as_secs_f64();
    let t2 = Instant::now();
    let sees_none = x.sees_none(mask);
    let mut tensors = Vec::new();
    let mut row_profiles = Vec::new();
    let mut row_biases = Vec::new();
    for (ti, dt, cand) in present {
        let name = CANDIDATE_TENSORS[ti];
        let g = &geoms[ti];
        let (rows, cols) = (g.rows, g.cols);
        let gather = |f: &dyn Fn(&HeadRef) -> &Vec<f64>| -> Vec<f64> {
            heads.iter().flat_map(|h| f(h).iter().copied()).collect()
        };
        let (mut mid, mut rad) = (gather(&|h| &h.t[ti].0), gather(&|h| &h.t[ti].1));
        // Grouped-query attention: a key/value head's exact dK, dV are the sums of its
        // query heads' shares.
        let kv_sum = ti >= 3 && x.group > 1;
        if kv_sum {
            (mid, rad) = group_sums_enclosed(&mid, &rad, x.group, rows * cols);
        }
        let base_dt = if ti == 1 { run_dtype } else { dt };
        let pick = |rule: PlainRule| -> Vec<f64> {
            baselines
                .iter()
                .find(|b| b.0 == base_dt && b.1 == rule)
                .map(|b| {
                    let raw: Vec<f64> =
                        b.2.iter()
                            .flat_map(|p| {
                                let v: &[f64] = match ti {
                                    0 => &p.o,
                                    1 => &p.lse,
                                    _ => p.grads.as_ref().map_or(&[][..], |gr| &gr[ti - 2][..]),
                                };
                                v.iter().copied()
                            })
                            .collect();
                    // The plain baseline with GQA repeats k, v per query head and sums
                    // the shares (as autograd through `repeat_interleave` does, with a
                    // float accumulator), rounded to the dtype once.
                    let raw = if kv_sum {
                        group_sums(&raw, x.group, rows * cols)
                    } else {
                        raw
                    };
                    raw.into_iter().map(|x| dt.round(x)).collect()
                })
                .unwrap_or_default()
        };
        let (base, upc) = (pick(PlainRule::Storage), pick(PlainRule::Upcast));
        for (what, len) in [
            ("reference", mid.len()),
            ("baseline", base.len()),
            ("upcast baseline", upc.len()),
        ] {
            if len != cand.len() {
                // Cannot happen after the shape checks; a typed error rather than a panic.
                return Err(Error::ShapeMismatch {
                    what: format!("{what} of `{name}`"),
                    expected: format!("{} entries (the candidate's)", cand.len()),
                    got: len.to_string(),
                });
            }
        }
        // Rows that see no key (only query-indexed tensors have them).
        let mut skip = vec![false; cand.len()];
        let mut conv: Vec<Convention> = Vec::new();
        if matches!(ti, 0..=2) {
            for s in 0..stack {
                for r in 0..rows {
                    if !sees_none[r] {
                        continue;
                    }
                    let row = &cand[(s * rows + r) * cols..(s * rows + r + 1) * cols];
                    let label = if ti == 1 {
                        let l = row[0];
                        if l == f64::NEG_INFINITY {
                            Some("polyattn (lse -inf)")
                        } else if l == f64::INFINITY {
                            Some("flashattention (lse +inf)")
                        } else if l.is_nan() {
                            Some("pytorch (lse NaN)")
                        } else if l == 0.0 {
                            Some("pytorch (lse 0)")
                        } else {
                            None
                        }
                    } else if row.iter().any(|v| v.is_nan()) {
                        Some("pytorch (NaN row)")
                    } else {
                        None
                    };
                    match label {
                        Some(label) => {
                            for sk in &mut skip[(s * rows + r) * cols..(s * rows + r + 1) * cols] {
                                *sk = true;
                            }
                            match conv.iter_mut().find(|c| c.convention == label) {
                                Some(c) => c.rows += 1,
                                None => conv.push(Convention {
                                    convention: label.into(),
                                    rows: 1,
                                    first: g.position(s, r, 0),
                                }),
                            }
                        }
                        None if ti == 1 => {
                            // A finite lse where the exact one is -inf: an infinite error.
                        }
                        None => {}
                    }
                }
            }
        }
        // lse rows with exact -inf that are not set apart: the error is infinite
        // unless the candidate is -inf too (handled as a convention above).
        let e = Entries {
            name,
            dims: (g.stack(), rows, cols),
            cand,
            mid,
            rad,
            skip,
        };
        let shape = if ti == 1 { gq.lse_shape() } else { g.shape() };
        let mut st = tensor_stats(&e, g, (dt, base_dt), shape, conv, &base, &upc);
        if layout == Layout::Varlen {
            // Name each position's sequence (the packed row stays the row).
            let offsets = &x.offsets[usize::from(ti >= 3)];
            let seq = |p: &mut Position| {
                p.batch = offsets[1..].partition_point(|&end| end <= p.row);
            };
            st.cert.worst.iter_mut().for_each(|w| seq(&mut w.at));
            st.cert
                .nonfinite_first
                .iter_mut()
                .for_each(|n| seq(&mut n.at));
            st.cert
                .conventions
                .iter_mut()
                .for_each(|c| seq(&mut c.first));
            st.cert
                .bias
                .top_rows
                .iter_mut()
                .for_each(|b| seq(&mut b.at));
            st.row_biases.iter_mut().for_each(|b| seq(&mut b.at));
        }
        if st.cert.baseline.verdict != "pass" && st.cert.certified_max_abs.is_finite() {
            st.cert.hints = hints(&e, ti, &x, (tau, mask, opts.softcap))?;
        }
        row_profiles.push(RowProfile {
            name: name.to_string(),
            rows: st.profile.0,
            candidate: st.profile.1,
            baseline: st.profile.2,
        });
        row_biases.extend(st.row_biases.into_iter().map(|b| (name.to_string(), b)));
        tensors.push(st.cert);
    }
    let (batch, hpb) = gq.batch_heads();
    Ok(CandidateReport {
        schema: "polyattn.certify.candidate/1".into(),
        layout,
        input_dtypes: x.dtypes.clone(),
        shape: [
            if layout == Layout::Varlen {
                // The sequences, empty ones included.
                x.offsets[0].len() - 1
            } else {
                batch
            },
            hpb,
            n_q,
            n_k,
            d,
            d_v,
        ],
        cu_seqlens: (layout == Layout::Varlen).then(|| x.offsets.clone()),
        kv_heads: hpb / x.group.max(1),
        mask: mask.name(),
        scale: tau,
        softcap: opts.softcap,
        reference: if use_mpfr {
            ReferenceUsed::Mpfr { prec: 128 }
        } else {
            ReferenceUsed::F64WithBound
        },
        rule: RULE.into(),
        tensors,
        ignored,
        seconds_reference: t_ref,
        seconds_baselines: t_base,
        seconds_statistics: t2.elapsed().as_secs_f64(),
        row_profiles,
        row_biases,
    })
}

fn input_path(f: &TensorFile) -> std::path::PathBuf {
    f.path().to_path_buf()
}

/// Hints for a failing tensor (module doc, "Hints").
fn hints(
    e: &Entries<'_>,
    ti: usize,
    x: &Inputs,
    (tau, mask, softcap): (f64, Mask, Option<f64>),
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let idx: Vec<usize> = (0..e.cand.len())
        .filter(|&i| !e.skip[i] && e.cand[i].is_finite() && e.mid[i].is_finite())
        .collect();
    if idx.is_empty() {
        return Ok(out);
    }
    let dist = |other: &dyn Fn(usize) -> f64| {
        idx.iter()
            .map(|&i| (e.cand[i] - other(i)).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let err = dist(&|i| e.mid[i]);
    if err == 0.0 {
        return Ok(out);
    }
    // One factor for everything.
    let (cm, mm) = idx.iter().fold((0.0, 0.0), |(a, b), &i| {
        (a + e.cand[i] * e.mid[i], b + e.mid[i] * e.mid[i])
    });
    if mm > 0.0 {
        let alpha = cm / mm;
        if (alpha - 1.0).abs() > 1e-3 && dist(&|i| alpha * e.mid[i]) <= 0.1 * err {
            out.push(format!(
                "`{}`: every entry is about {alpha:.5} x the exact value (a constant factor{})",
                e.name,
                factor_name(alpha, tau)
            ));
        }
    }
    // lse: a common ratio per row.
    if ti == 1 {
        let mut ratios: Vec<f64> = idx
            .iter()
            .filter(|&&i| e.mid[i].abs() > 1e-3)
            .map(|&i| e.cand[i] / e.mid[i])
            .collect();
        if !ratios.is_empty() {
            ratios.sort_by(f64::total_cmp);
            let med = ratios[ratios.len() / 2];
            let spread = ratios
                .iter()
                .map(|r| (r / med - 1.0).abs())
                .fold(0.0, f64::max);
            if (med - 1.0).abs() > 1e-3 && spread < 0.02 && out.is_empty() {
                out.push(format!(
                    "`lse`: every row is about {med:.5} x the exact lse{}",
                    factor_name(med, tau)
                ));
            }
        }
    }
    // o: another scale or mask explains it.
    if ti == 0 {
        let gq = &x.geoms[0];
        let d = gq.cols;
        let mut alts: Vec<(String, f64, Mask, Option<f64>)> = vec![
            ("scale 1 (no scaling)".into(), 1.0, mask, softcap),
            (
                format!("scale 1/d = {}", 1.0 / d as f64),
                1.0 / d as f64,
                mask,
                softcap,
            ),
            (
                format!("scale 1/sqrt(d) = {:.6}", 1.0 / (d as f64).sqrt()),
                1.0 / (d as f64).sqrt(),
                mask,
                softcap,
            ),
        ];
        for m in [Mask::None, Mask::CausalTopLeft, Mask::CausalBottomRight] {
            if m != mask {
                alts.push((format!("mask {}", m.name()), tau, m, softcap));
            }
        }
        if softcap.is_some() {
            alts.push(("no softcap".into(), tau, mask, None));
        }
        for (what, t, m, cap) in alts {
            if (t - tau).abs() <= 1e-12 * tau.abs() && m == mask && cap == softcap {
                continue;
            }
            let cfg = AttentionConfig {
                scale: Some(t),
                mask: m,
                softcap: cap,
            };
            let alt = x.per_head(
                |(q, k, v, _), b| Ok(exact::forward_with_bias(q, k, v, b, &cfg)?.o.into_vec()),
                |_| Vec::new(),
                concat,
            );
            let Ok(alt) = alt else { continue };
            let alt = concat(alt);
            if alt.len() != e.cand.len() {
                continue;
            }
            let dd = dist(&|i| alt[i]);
            if dd <= 0.1 * err {
                out.push(format!(
                    "`o` matches exact attention with {what} (Frobenius distance {} against {} from the requested one): a scale, mask or softcap convention mismatch?",
                    sig3(dd),
                    sig3(err)
                ));
            }
        }
    }
    Ok(out)
}

fn factor_name(f: f64, tau: f64) -> String {
    let near = |a: f64, b: f64| (a / b - 1.0).abs() < 0.01;
    if near(f, std::f64::consts::LOG2_E) {
        "; log2 e = 1.4427: a base-2 log?".into()
    } else if near(f, std::f64::consts::LN_2) {
        "; ln 2 = 0.6931: natural log expected, base-2 given the other way?".into()
    } else if near(f, 1.0 / tau) {
        format!("; 1/tau = {:.5}: the scale folded differently?", 1.0 / tau)
    } else if near(f, tau) {
        format!("; tau = {tau:.5}: the scale folded differently?")
    } else if near(f, std::f64::consts::LOG2_E / tau) || near(f, tau * std::f64::consts::LOG2_E) {
        "; log2 e with the scale folded (FlashAttention's base-2 softmax)?".into()
    } else {
        String::new()
    }
}

// ---------------------------------------------------------------------------------
// Rendering

impl CandidateReport {
    /// Column names of [`Self::tensor_rows`].
    pub const HEADERS: [&'static str; 11] = [
        "tensor",
        "dtype",
        "certified max error",
        "certified lower bound",
        "rel. Frobenius",
        "baseline error",
        "ratio",
        "rule",
        "upcast error",
        "ratio (upcast)",
        "rule (upcast)",
    ];

    /// One row per candidate tensor.
    pub fn tensor_rows(&self) -> Vec<Vec<String>> {
        self.tensors
            .iter()
            .map(|t| {
                vec![
                    t.name.clone(),
                    t.dtype.clone(),
                    // Certified bounds rounded outward; the ratios are not bounds.
                    sig3_up(t.certified_max_abs),
                    sig3_down(t.certified_lower_max_abs),
                    if t.rel_fro_kind == "absolute" {
                        format!("{} (abs.)", sig3_up(t.certified_rel_fro))
                    } else {
                        sig3_up(t.certified_rel_fro)
                    },
                    sig3_up(t.baseline.certified_max_abs),
                    sig3(t.baseline.ratio),
                    t.baseline.verdict.clone(),
                    sig3_up(t.upcast.certified_max_abs),
                    sig3(t.upcast.ratio),
                    t.upcast.verdict.clone(),
                ]
            })
            .collect()
    }

    /// Every hint line of every tensor.
    pub fn hint_lines(&self) -> Vec<String> {
        self.tensors.iter().flat_map(|t| t.hints.clone()).collect()
    }

    /// The reference in words.
    pub fn reference_text(&self) -> String {
        match self.reference {
            ReferenceUsed::Mpfr { prec } => format!("MPFR interval enclosures at {prec} bits"),
            ReferenceUsed::F64WithBound => {
                "the exact engine in f64 with its a priori rounding bound".into()
            }
        }
    }

    /// Every row's bias interval as CSV: `tensor,batch,head,row,lo,hi`.
    pub fn row_bias_csv(&self) -> String {
        let mut s = String::from("tensor,batch,head,row,lo,hi\n");
        for (name, b) in &self.row_biases {
            s.push_str(&format!(
                "{name},{},{},{},{:e},{:e}\n",
                b.at.batch, b.at.head, b.at.row, b.mean.lo, b.mean.hi
            ));
        }
        s
    }

    /// Whether [`Self::write_plot`] has something to draw (a positive, normal, finite
    /// error somewhere).
    pub fn has_plot(&self) -> bool {
        self.row_profiles.iter().any(|p| {
            p.candidate
                .iter()
                .chain(&p.baseline)
                .any(|&y| y.is_finite() && y >= f64::MIN_POSITIVE)
        })
    }

    /// Writes `rows.svg`: each tensor's certified error along the rows (maximum over
    /// batch, heads, columns and a log-spaced bucket of rows) and its baseline's.
    pub fn write_plot(&self, dir: &std::path::Path) -> Result<std::path::PathBuf> {
        use crate::plot::{LogLogChart, Series, Style};
        let mut series = Vec::new();
        for p in &self.row_profiles {
            let (name, c, b) = (&p.name, &p.candidate, &p.baseline);
            let pts = |v: &[f64]| -> Vec<(f64, f64)> {
                p.rows
                    .iter()
                    .map(|&r| r as f64)
                    .zip(v.iter().copied())
                    .filter(|&(_, y)| y.is_finite() && y >= f64::MIN_POSITIVE)
                    .collect()
            };
            series.push(Series {
                name: format!("{name}: candidate (certified)"),
                points: pts(c),
                style: Style::Line,
            });
            series.push(Series {
                name: format!("{name}: baseline (certified)"),
                points: pts(b),
                style: Style::Reference,
            });
        }
        let [b, h, n_q, _, _, _] = self.shape;
        let path = dir.join("rows.svg");
        LogLogChart {
            title: format!(
                "Candidate's certified error along the rows ({b} x {h} heads, n = {n_q}, mask {})",
                self.mask
            ),
            x_label: "row (max over heads, columns and a log-spaced bucket of rows)".into(),
            y_label: "max |candidate - exact|".into(),
            series,
        }
        .write_svg(&path, 900, 560)?;
        Ok(path)
    }

    /// The wall times, kept apart from the reproducible report (`timings.json`).
    pub fn timings(&self) -> serde_json::Value {
        serde_json::json!({
            "seconds_reference": self.seconds_reference,
            "seconds_baselines": self.seconds_baselines,
            "seconds_statistics": self.seconds_statistics,
        })
    }

    /// The report as Markdown.
    pub fn to_markdown(&self) -> String {
        let [b, h, n_q, n_k, d, d_v] = self.shape;
        let kv = if self.kv_heads == h {
            String::new()
        } else {
            format!(
                " ({} key/value heads: grouped-query attention)",
                self.kv_heads
            )
        };
        let (b, n_q, n_k) = match &self.cu_seqlens {
            Some(_) => (
                format!("{b} packed sequences"),
                format!("{n_q} (total)"),
                format!("{n_k} (total)"),
            ),
            None => (b.to_string(), n_q.to_string(), n_k.to_string()),
        };
        let mut s = format!(
            "# Certified error of a candidate attention\n\n{b} x {h} head(s){kv}, n_q = {n_q}, n_k = {n_k}, d = {d}, d_v = {d_v}, mask {}, scale {:e}{}, layout {}; inputs {}.\nReference: {}.\nWall times are in `timings.json`.\n\n",
            self.mask,
            self.scale,
            self.softcap.map_or(String::new(), |c| format!(", softcap {c:e}")),
            self.layout.name(),
            self.input_dtypes.join("/"),
            self.reference_text(),
        );
        s.push_str("Every error is certified: an upper (or lower) bound on the distance to the exact real result. *Baseline*: plain attention in the candidate's dtype as FlashAttention's tests compute it (`attention_ref(upcast=False, reorder_ops=True)`); *upcast*: the same in f32, rounded at the end. Rule: ");
        s.push_str(RULE);
        s.push_str(".\n\n");
        s.push_str(&markdown_table(&Self::HEADERS, &self.tensor_rows()));
        if self.has_plot() {
            s.push_str("\n![certified error along the rows](rows.svg)\n");
        }
        for t in &self.tensors {
            s.push_str(&format!(
                "\n## `{}` ({}, shape {:?})\n\n- entries: {}; max |exact| <= {}; reference radius <= {}; atol = 2 u max|exact| = {} (u = {:e})\n",
                t.name,
                t.dtype,
                t.shape,
                t.entries,
                sig3_up(t.max_abs_exact),
                sig3_up(t.reference_radius),
                sig3_up(t.atol),
                t.unit_roundoff
            ));
            let bias = &t.bias;
            s.push_str(&format!(
                "- mean error (bias) over everything in [{:e}, {:e}]: {}\n- rows with a certifiably nonzero bias: {} of {}; columns: {} of {}\n",
                bias.overall.lo,
                bias.overall.hi,
                if bias.overall_nonzero {
                    "certifiably nonzero"
                } else {
                    "not certifiably nonzero"
                },
                bias.rows_nonzero,
                bias.rows,
                bias.columns_nonzero,
                bias.columns.len()
            ));
            for r in &bias.top_rows {
                s.push_str(&format!(
                    "  - batch {}, head {}, row {}: bias in [{:e}, {:e}]\n",
                    r.at.batch, r.at.head, r.at.row, r.mean.lo, r.mean.hi
                ));
            }
            if t.nonfinite > 0 {
                s.push_str(&format!("- **{} non-finite entries**, first:", t.nonfinite));
                for n in &t.nonfinite_first {
                    s.push_str(&format!(
                        " ({}, {}, {}, {}) = {};",
                        n.at.batch, n.at.head, n.at.row, n.at.col, n.value
                    ));
                }
                s.push('\n');
            }
            for c in &t.conventions {
                s.push_str(&format!(
                    "- rows that see no key: {} row(s) follow the {} convention (first: batch {}, head {}, row {}); exact: O = 0, lse = -inf\n",
                    c.rows, c.convention, c.first.batch, c.first.head, c.first.row
                ));
            }
            for hnt in &t.hints {
                s.push_str(&format!("- hint: {hnt}\n"));
            }
            if !t.worst.is_empty() {
                s.push_str("\nWorst entries:\n\n");
                let rows: Vec<Vec<String>> = t
                    .worst
                    .iter()
                    .map(|w| {
                        vec![
                            w.at.batch.to_string(),
                            w.at.head.to_string(),
                            w.at.row.to_string(),
                            w.at.col.to_string(),
                            format!("{:e}", w.candidate),
                            format!("{:e}", w.reference),
                            sig3_up(w.radius),
                            sig3_up(w.certified),
                        ]
                    })
                    .collect();
                s.push_str(&markdown_table(
                    &[
                        "batch",
                        "head",
                        "row",
                        "col",
                        "candidate",
                        "reference",
                        "radius",
                        "certified error",
                    ],
                    &rows,
                ));
            }
        }
        if !self.ignored.is_empty() {
            s.push_str(&format!(
                "\nNot certified (unknown names): {}\n",
                self.ignored.join(", ")
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(cand: Vec<f64>, mid: Vec<f64>, rad: Vec<f64>) -> TensorCertificate {
        let m = cand.len();
        let e = Entries {
            name: "o",
            dims: (1, 1, m),
            cand,
            mid: mid.clone(),
            rad,
            skip: vec![false; m],
        };
        let geom = Geom::of("o", &[1, m], Layout::Bhsd).unwrap();
        tensor_stats(
            &e,
            &geom,
            (DType::F64, DType::F64),
            vec![1, m],
            Vec::new(),
            &mid,
            &mid,
        )
        .cert
    }

    /// Entries above 1e154 square to infinity: the unscaled sums made the relative
    /// Frobenius bound inf or NaN (inf / inf). Scaled, it is the same as for the
    /// entries divided by 1e200 (a ratio, scale-free): 1e-3 here, up to rounding.
    #[test]
    fn frobenius_ratio_of_huge_entries_is_finite() {
        let mid = vec![3e200, 4e200];
        let cand = vec![3e200 * (1.0 + 1e-3), 4e200 * (1.0 + 1e-3)];
        let c = stats(cand, mid, vec![0.0, 0.0]);
        assert_eq!(c.rel_fro_kind, "relative");
        let r = c.certified_rel_fro;
        // The exact ratio is 1e-3; the bound is above it by its rounding slack only
        // (a few ulps of the inputs' 1e-3 relative perturbation: 1e-12 is generous).
        // Above: the slack factors (1 + gamma_3)(1 + 2 eps) and `up` steps, about 1e-15.
        assert!(
            (1e-3 * (1.0 - 1e-12)..=1e-3 * (1.0 + 1e-9)).contains(&r),
            "{r}"
        );
        // Near f64::MAX too.
        let big = f64::MAX / 4.0;
        let c = stats(vec![big * 1.5], vec![big], vec![0.0]);
        assert!(
            (c.certified_rel_fro - 0.5).abs() <= 1e-12,
            "{}",
            c.certified_rel_fro
        );
        // The absolute form (||mid|| <= ||r||) scaled back: ||c - mid|| + ||r||.
        let c = stats(vec![2e200], vec![0.0], vec![1e200]);
        assert_eq!(c.rel_fro_kind, "absolute");
        assert!(c.certified_rel_fro >= 3e200 && c.certified_rel_fro <= 3e200 * (1.0 + 1e-12));
    }

    /// gamma goes to inf (no bound of its form holds) once k u >= 1, instead of a
    /// negative or meaningless value; the bias slack uses gamma_{2n+4}, so its
    /// interval stays an enclosure for any n (n > 1e8 included).
    #[test]
    fn gamma_and_bias_slack_stay_valid_for_any_n() {
        let u = f64::EPSILON / 2.0;
        assert_eq!(gamma(1usize << 53), f64::INFINITY);
        assert_eq!(gamma(usize::MAX), f64::INFINITY);
        assert!(gamma((1usize << 53) - 2) > 1e15); // 1 - k u = 2^-52
        let n = 200_000_000usize;
        // gamma_k - k u = (k u)^2 / (1 - k u) <= 2 (k u)^2 here (k u about 4.4e-8).
        let ku = (2 * n + 4) as f64 * u;
        assert!((gamma(2 * n + 4) - ku).abs() <= 2.0 * ku * ku);
        // A mean of n equal terms 1: the interval contains 1 and has the slack's width.
        let acc = MeanAcc {
            diff: n as f64,
            abs_diff: n as f64,
            rad: 0.0,
            n,
        };
        let iv = acc.interval();
        assert!(iv.lo <= 1.0 && iv.hi >= 1.0);
        assert!(iv.hi - 1.0 >= gamma(2 * n + 4) * (1.0 - 1e-9), "{iv:?}");
        // Past 1/u: the slack is infinite, the interval certifies nothing.
        let acc = MeanAcc {
            n: 1usize << 53,
            ..acc
        };
        assert_eq!(acc.interval().hi, f64::INFINITY);
        assert!(!acc.interval().excludes_zero());
    }
}
