//! Conventions of the input files shared by the commands that read them (`attention`,
//! `certify`, `certify --candidate`): the optional score bias (`bias`, `alibi_slopes`),
//! the stacked-tensor loader ([`stacks`]) and the leading-dimension shapes
//! ([`shapes`]).

pub mod shapes;
pub mod stacks;

use polyattn::attention::alibi_bias;
use polyattn::error::{Error, Result};
use polyattn::io::TensorFile;

/// The file's optional `alibi_slopes` (FlashAttention's; any float dtype, read exactly
/// as f64): shape `[heads]` (one slope per head, shared by the batch) or `batch ++
/// [heads]` (q's leading dimensions); `[]` or `[1]` when q has none. Slope of stacked
/// matrix `h` (batch-major, heads last): `slopes[h % slopes.len()]`. Errors name the
/// tensor: a wrong shape, or a slope that is not finite.
pub fn read_alibi_slopes(
    file: &TensorFile,
    batch: &[usize],
    heads: usize,
) -> Result<Option<Vec<f64>>> {
    if !file.contains("alibi_slopes") {
        return Ok(None);
    }
    let t = file.get("alibi_slopes")?;
    let shape = t.shape().to_vec();
    let full: Vec<usize> = batch.iter().copied().chain([heads]).collect();
    let ok = (shape == [heads] || shape == full || (heads == 1 && shape.is_empty()))
        && t.shape().iter().product::<usize>() > 0;
    if !ok {
        return Err(Error::ShapeMismatch {
            what: "`alibi_slopes`".into(),
            expected: format!("[{heads}] (q's heads) or {full:?} (q's batch and heads)"),
            got: format!("{shape:?}"),
        });
    }
    let slopes = t.to_f64_vec();
    if let Some(i) = slopes.iter().position(|x| !x.is_finite()) {
        return Err(Error::NonFinite {
            what: "alibi_slopes".into(),
            index: format!("[{i}] (flat)"),
            value: slopes[i],
        });
    }
    Ok(Some(slopes))
}

/// `base(h, i, j) + alibi_bias(slope_h, i, j)` for every stacked matrix `h < stack`
/// (slope `slopes[h % slopes.len()]`, [`read_alibi_slopes`]), row-major `[stack, n_q,
/// n_k]`, summed in f64 (the ALiBi term is exact for f32 slopes, [`alibi_bias`]).
pub fn add_alibi(
    slopes: &[f64],
    stack: usize,
    (n_q, n_k): (usize, usize),
    base: impl Fn(usize, usize, usize) -> f64,
) -> Result<Vec<f64>> {
    let len = polyattn::tensor::checked_len(&[stack, n_q, n_k])?;
    let mut out = Vec::with_capacity(len);
    for h in 0..stack {
        let s = slopes[h % slopes.len().max(1)];
        for i in 0..n_q {
            for j in 0..n_k {
                out.push(base(h, i, j) + alibi_bias(s, (n_q, n_k), i, j));
            }
        }
    }
    Ok(out)
}

/// The file's optional `bias` tensor (an additive score bias: PyTorch's float
/// `attn_mask`, FlashAttention's `attn_bias`), read exactly as f64.
#[derive(Clone, Debug, PartialEq)]
pub struct FileBias {
    /// `true`: one `[n_q, n_k]` matrix for every head; `false`: one per stacked query
    /// head (batch-major, heads last, as q's leading dimensions).
    pub shared: bool,
    /// The entries, row-major.
    pub data: Vec<f64>,
}

impl FileBias {
    /// Entry (`i`, `j`) of stacked query head `h`'s matrix.
    pub fn at(&self, h: usize, (n_q, n_k): (usize, usize), i: usize, j: usize) -> f64 {
        let h = if self.shared { 0 } else { h };
        self.data[(h * n_q + i) * n_k + j]
    }
}

/// Reads the file's optional `bias`: shape `[n_q, n_k]` (every head) or `lead ++ [n_q,
/// n_k]` (`lead` = q's batch dimensions and heads, in that order whatever the layout:
/// FlashAttention's `attn_bias` and PyTorch's masks are head-major). Entries are finite
/// or `-inf` (hides the key); a NaN or `+inf` is an error naming its index in the
/// file's shape. (The engines check the entries again after rounding them to the
/// compute dtype, where a huge finite f64 entry can become infinite.)
pub fn read_bias(
    file: &TensorFile,
    lead: &[usize],
    (n_q, n_k): (usize, usize),
) -> Result<Option<FileBias>> {
    if !file.contains("bias") {
        return Ok(None);
    }
    let t = file.get("bias")?;
    let shared = [n_q, n_k];
    let full: Vec<usize> = lead.iter().copied().chain(shared).collect();
    let is_shared = t.shape() == shared;
    if !is_shared && t.shape() != full.as_slice() {
        return Err(Error::ShapeMismatch {
            what: "`bias` (an additive score bias)".into(),
            expected: format!("{shared:?} (every head) or {full:?} (q's leading dims, n_q, n_k)"),
            got: format!("{:?}", t.shape()),
        });
    }
    let data = t.to_f64_vec();
    if let Some(at) = data.iter().position(|x| x.is_nan() || *x == f64::INFINITY) {
        return Err(Error::NonFinite {
            what: "bias (-inf hides a key; NaN and +inf are refused)".into(),
            index: polyattn::tensor::format_index(t.shape(), at),
            value: data[at],
        });
    }
    Ok(Some(FileBias {
        shared: is_shared,
        data,
    }))
}
