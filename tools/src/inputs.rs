//! Conventions of the input files shared by the commands that read them (`attention`,
//! `certify`, `certify --candidate`).

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
