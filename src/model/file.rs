//! Models, inputs and gradients in safetensors files (names in [`super::params`]).
//!
//! - Weights file: every parameter tensor (F32 or F64) and the configuration in
//!   `__metadata__` (keys [`super::config::METADATA_KEYS`]; `vocab` only where needed).
//! - Input file: `x` `[n, d_model]` or `tokens` `[n]` (exactly one of them); `y`
//!   `[n, d_model]` for MSE or `labels` `[n]` for cross-entropy. Token ids and labels
//!   are stored as F64 or F32 holding integers in `0..vocab` (safetensors' I64 is not
//!   read: the crate's reader carries F32/F64 only). Weighted labels are written with a
//!   `weights` `[n]` tensor beside them ([`batch_tensors`]; [`read_batch`] reads plain
//!   labels only).
//! - Gradients file: `loss` `[1]`, `grad.<parameter name>` for every parameter, and
//!   `grad.x` `[n, d_model]` (dL/dT_0), in the compute dtype.

use super::config::ModelConfig;
use super::engine::LayerReport;
use super::params::{to_real, Params};
use super::stack::{Batch, Gradients, Model, Source, Target};
use crate::error::{Error, Result};
use crate::io::{AnyTensor, TensorFile};
use crate::scalar::Real;
use crate::tensor::{check_finite, Matrix};
use std::collections::HashMap;

/// Reads the model (configuration from `__metadata__`, then every parameter).
pub fn read_model<T: Real>(file: &TensorFile) -> Result<Model<T>> {
    let config = ModelConfig::from_metadata(&file.metadata)?;
    let params = Params::load(&config, file)?;
    Model::new(config, params)
}

fn matrix<T: Real>(file: &TensorFile, name: &str, cols: usize) -> Result<Matrix<T>> {
    let t = file.get(name)?;
    match t.shape() {
        &[n, c] if c == cols && n > 0 => {
            let data = to_real::<T>(t);
            check_finite(name, t.shape(), &data)?;
            Matrix::from_vec(n, c, data)
        }
        s => Err(Error::ShapeMismatch {
            what: format!("input tensor `{name}`"),
            expected: format!("[n, {cols}] with n >= 1"),
            got: format!("{s:?}"),
        }),
    }
}

fn indices(file: &TensorFile, name: &str, limit: usize) -> Result<Vec<usize>> {
    let t = file.get(name)?;
    if t.shape().len() != 1 || t.shape()[0] == 0 {
        return Err(Error::ShapeMismatch {
            what: format!("input tensor `{name}`"),
            expected: "[n] with n >= 1".into(),
            got: format!("{:?}", t.shape()),
        });
    }
    to_real::<f64>(t)
        .into_iter()
        .enumerate()
        .map(|(i, v)| {
            if v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < limit as f64 {
                Ok(v as usize)
            } else {
                Err(Error::BadIndex {
                    what: name.into(),
                    index: i,
                    value: v,
                    limit,
                })
            }
        })
        .collect()
}

/// Reads a batch for `model`: the source from `x` or `tokens`, the target from `y`
/// (MSE) or `labels` (cross-entropy); checked against the model.
pub fn read_batch<T: Real>(file: &TensorFile, model: &Model<T>) -> Result<Batch<T>> {
    let cfg = model.config();
    let vocab = cfg.vocab.unwrap_or(0);
    let source = match (file.contains("x"), file.contains("tokens")) {
        (true, true) => {
            return Err(Error::ModelConfig {
                field: "tokens".into(),
                reason: "and `x` are both in the input file; give exactly one".into(),
            })
        }
        (false, true) => {
            let limit = model.params().embedding.as_ref().map_or(0, |e| e.rows());
            if limit == 0 {
                return Err(Error::ModelConfig {
                    field: "embedding".into(),
                    reason: "is needed for token input but the weights file has none".into(),
                });
            }
            Source::Tokens(indices(file, "tokens", limit)?)
        }
        _ => Source::Embeddings(matrix(file, "x", cfg.d_model)?),
    };
    let target = match cfg.loss {
        super::config::LossKind::Mse => Target::Regression(matrix(file, "y", cfg.d_model)?),
        super::config::LossKind::CrossEntropy => Target::Labels(indices(file, "labels", vocab)?),
    };
    let batch = Batch { source, target };
    model.check_batch(&batch)?;
    Ok(batch)
}

/// The model's tensors and metadata, ready for [`crate::io::write_tensors`].
pub fn model_tensors<T: Real>(
    model: &Model<T>,
) -> (Vec<(String, AnyTensor)>, HashMap<String, String>) {
    let tensors = model
        .params()
        .named()
        .into_iter()
        .map(|(n, s, d)| (n, AnyTensor::from_real(s, d)))
        .collect();
    (tensors, model.config().to_metadata())
}

/// The batch's tensors (`x` in `T`'s dtype; `tokens`, `labels` as F64).
pub fn batch_tensors<T: Real>(batch: &Batch<T>) -> Vec<(String, AnyTensor)> {
    let ids = |v: &[usize]| AnyTensor::F64 {
        shape: vec![v.len()],
        data: v.iter().map(|&i| i as f64).collect(),
    };
    let mat = |m: &Matrix<T>| AnyTensor::from_real(m.shape().to_vec(), m.as_slice().to_vec());
    let mut out = vec![match &batch.source {
        Source::Embeddings(x) => ("x".to_string(), mat(x)),
        Source::Tokens(t) => ("tokens".to_string(), ids(t)),
    }];
    out.push(match &batch.target {
        Target::Regression(y) => ("y".to_string(), mat(y)),
        Target::Labels(l) => ("labels".to_string(), ids(l)),
        Target::WeightedLabels(l, _) => ("labels".to_string(), ids(l)),
    });
    if let Target::WeightedLabels(_, w) = &batch.target {
        out.push((
            "weights".to_string(),
            AnyTensor::from_real(vec![w.len()], w.clone()),
        ));
    }
    out
}

/// The gradients file's tensors: `loss` `[1]`, every `grad.*`.
pub fn gradient_tensors<T: Real>(loss: T, grads: &Gradients<T>) -> Vec<(String, AnyTensor)> {
    let mut out = vec![(
        "loss".to_string(),
        AnyTensor::from_real(vec![1], vec![loss]),
    )];
    out.extend(
        grads
            .named()
            .into_iter()
            .map(|(n, s, d)| (n, AnyTensor::from_real(s, d))),
    );
    out
}

/// Metadata describing the engines: `engines` (per layer, comma separated: `exact` or
/// `poly`), `degrees` (per layer: max degree over heads, `-` for exact),
/// `attention_bounds` (per layer: max of the heads' O/dQ/dK/dV bounds, `0` for exact)
/// and `engines_json` (the full per-layer, per-head reports).
pub fn engine_metadata(reports: &[LayerReport]) -> HashMap<String, String> {
    let join =
        |f: &dyn Fn(&LayerReport) -> String| reports.iter().map(f).collect::<Vec<_>>().join(",");
    HashMap::from([
        ("engines".to_string(), join(&|r| r.engine.to_string())),
        (
            "degrees".to_string(),
            join(&|r| r.degree().map_or("-".to_string(), |g| g.to_string())),
        ),
        (
            "attention_bounds".to_string(),
            join(&|r| format!("{:e}", r.max_bound())),
        ),
        (
            "engines_json".to_string(),
            serde_json::to_string(reports).unwrap_or_default(),
        ),
    ])
}
