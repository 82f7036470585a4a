//! `polyattn attention`: forward (and backward) on tensors from a safetensors file.
//!
//! Input tensors: `q` `[.., n_q, d]`, `k` `[.., n_k, d]`, `v` `[.., n_k, d_v]`, optional
//! `do` `[.., n_q, d_v]`, all F32 or all F64, with the same leading dimensions (none,
//! `[heads]` or `[batch, heads]`). Output tensors, in the input's dtype: `o`
//! `[.., n_q, d_v]`, `lse` `[.., n_q]`, and with `do`: `dq`, `dk`, `dv` shaped like
//! `q`, `k`, `v`. Metadata strings: `engine`, `mask`, `scale`, `dtype`, `polyattn_version`.

use super::shapes::HeadShape;
use super::AttentionArgs;
use crate::attention::{exact, AttentionConfig};
use crate::error::{Error, Result};
use crate::io::{AnyTensor, DType, TensorFile};
use crate::scalar::Real;
use crate::tensor::{check_finite, check_nonempty, Tensor3};
use std::collections::HashMap;

/// Runs the subcommand: read, compute, write atomically.
pub fn run(args: &AttentionArgs) -> Result<()> {
    let file = TensorFile::read(&args.input)?;
    let config = AttentionConfig {
        scale: args.scale,
        mask: args.mask.into(),
    };
    let dtype = file.get("q")?.dtype();
    for name in ["k", "v", "do"] {
        if name == "do" && !file.contains(name) {
            continue;
        }
        let t = file.get(name)?;
        if t.dtype() != dtype {
            return Err(Error::MixedDtype {
                name: name.into(),
                dtype: t.dtype().name().into(),
                expected: dtype.name().into(),
            });
        }
    }
    let (tensors, tau) = match dtype {
        DType::F32 => compute::<f32>(&file, &config)?,
        DType::F64 => compute::<f64>(&file, &config)?,
    };
    let metadata = HashMap::from([
        ("engine".to_string(), args.engine.name().to_string()),
        ("mask".to_string(), config.mask.name().to_string()),
        ("scale".to_string(), format!("{tau:e}")),
        ("dtype".to_string(), dtype.name().to_string()),
        (
            "polyattn_version".to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
    ]);
    crate::io::write_tensors(&args.output, &tensors, &metadata)
}

/// A tensor of the file as a stack of heads, with its split shape.
fn load<T: Real>(file: &TensorFile, name: &str) -> Result<(HeadShape, Tensor3<T>)> {
    let t = file.get(name)?;
    let shape = HeadShape::of(name, t.shape())?;
    check_nonempty(name, t.shape())?;
    // The dtype was checked against `q`'s before; `to_real` cannot fail here, but an
    // error is still better than a panic if that ever changes.
    let data = t.to_real::<T>().ok_or_else(|| Error::MixedDtype {
        name: name.into(),
        dtype: t.dtype().name().into(),
        expected: T::DTYPE.into(),
    })?;
    // Checked here so that messages index the tensor as the file shapes it.
    check_finite(name, t.shape(), &data)?;
    let stack = Tensor3::from_vec(shape.heads()?, shape.rows, shape.cols, data)?;
    Ok((shape, stack))
}

/// Forward, and backward if `do` is present; returns the output tensors and the scale.
fn compute<T: Real>(
    file: &TensorFile,
    config: &AttentionConfig,
) -> Result<(Vec<(String, AnyTensor)>, f64)> {
    let (sq, q) = load::<T>(file, "q")?;
    let (sk, k) = load::<T>(file, "k")?;
    let (sv, v) = load::<T>(file, "v")?;
    sq.same_lead("k", &sk)?;
    sq.same_lead("v", &sv)?;
    let fwd = exact::forward_multihead(&q, &k, &v, config)?;
    let tau = T::from_f64(config.scale_for(sq.cols)).to_f64();
    let mut out = vec![
        (
            "o".to_string(),
            AnyTensor::from_real(sq.with_tail(&[sq.rows, sv.cols]), fwd.o.as_slice().to_vec()),
        ),
        (
            "lse".to_string(),
            AnyTensor::from_real(sq.with_tail(&[sq.rows]), fwd.lse.as_slice().to_vec()),
        ),
    ];
    if file.contains("do") {
        let (sdo, d_o) = load::<T>(file, "do")?;
        sq.same_lead("do", &sdo)?;
        let g = exact::backward_multihead(&q, &k, &v, &fwd, &d_o, config)?;
        out.push((
            "dq".into(),
            AnyTensor::from_real(sq.with_tail(&[sq.rows, sq.cols]), g.dq.into_vec()),
        ));
        out.push((
            "dk".into(),
            AnyTensor::from_real(sk.with_tail(&[sk.rows, sk.cols]), g.dk.into_vec()),
        ));
        out.push((
            "dv".into(),
            AnyTensor::from_real(sv.with_tail(&[sv.rows, sv.cols]), g.dv.into_vec()),
        ));
    }
    Ok((out, tau))
}
