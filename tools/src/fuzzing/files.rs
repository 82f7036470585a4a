//! The file targets: arbitrary bytes through the safetensors reader and the CLI's
//! attention input loader (`safetensors_input`), and arbitrary model configurations
//! and weight/input files through the model loader (`model_config`). The property:
//! every call returns `Ok` or a typed [`Error`]; nothing panics; and whatever loads
//! and computes gives finite results (the loaders' checks promise finite inputs in
//! range).

use super::{pick, Outcome, Violation};
use crate::inputs::stacks::{input_dtype, load_all};
use arbitrary::{Arbitrary, Unstructured};
use polyattn::attention::poly::{self, PolyConfig};
use polyattn::attention::{exact, AttentionConfig, Mask};
use polyattn::error::{Error, Result};
use polyattn::io::{AnyTensor, DType, TensorFile};
use polyattn::model::file::{model_tensors, read_batch, read_model};
use polyattn::model::{Activation, EngineChoice, LossKind, Model, ModelConfig, PolySettings};
use polyattn::rng::SplitMix64;
use polyattn::scalar::Real;
use safetensors::Dtype;
use std::collections::HashMap;
use std::path::Path;

/// Serialises `tensors` and `metadata` as safetensors bytes (in memory).
pub fn serialize(
    tensors: &[(String, AnyTensor)],
    metadata: &HashMap<String, String>,
) -> Result<Vec<u8>> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, t)| match t {
            AnyTensor::F16 { data, .. } => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
            AnyTensor::BF16 { data, .. } => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
            AnyTensor::F32 { data, .. } => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
            AnyTensor::F64 { data, .. } => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        })
        .collect();
    let bad = |reason: String| Error::BadFile {
        path: "<memory>".into(),
        reason,
    };
    let mut views = Vec::with_capacity(tensors.len());
    for ((name, t), b) in tensors.iter().zip(&bytes) {
        let dtype = match t.dtype() {
            DType::F16 => Dtype::F16,
            DType::BF16 => Dtype::BF16,
            DType::F32 => Dtype::F32,
            DType::F64 => Dtype::F64,
        };
        let view = safetensors::tensor::TensorView::new(dtype, t.shape().to_vec(), b)
            .map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        views.push((name.clone(), view));
    }
    let meta = (!metadata.is_empty()).then(|| metadata.clone());
    safetensors::serialize(views, meta).map_err(|e| bad(e.to_string()))
}

/// The `safetensors_input` target's input: engine options, then the file's bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct SafetensorsInput {
    /// The mask the loaded problem is run with.
    pub mask: Mask,
    /// The file's bytes (everything after the options).
    pub bytes: Vec<u8>,
}

impl<'a> Arbitrary<'a> for SafetensorsInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let mask = pick(
            u,
            &[Mask::None, Mask::CausalTopLeft, Mask::CausalBottomRight],
        )?;
        let rest = u.len();
        Ok(Self {
            mask,
            bytes: u.bytes(rest)?.to_vec(),
        })
    }
}

/// Largest number of head elements the target computes on (keeps one run fast; the
/// loader itself is always run).
const MAX_WORK: usize = 1 << 16;

fn finite_or_violation(what: &str, xs: &[f64]) -> std::result::Result<(), Violation> {
    match xs.iter().position(|x| !x.is_finite()) {
        Some(i) => Err(Violation(format!(
            "{what}[{i}] = {} is not finite although the engine accepted the inputs",
            xs[i]
        ))),
        None => Ok(()),
    }
}

fn attention_on<T: Real>(
    file: &TensorFile,
    mask: Mask,
    out: &mut Outcome,
) -> std::result::Result<(), Violation> {
    let x = match load_all::<T>(file) {
        Ok(x) => x,
        Err(e) => {
            out.refused = Some(e.to_string());
            return Ok(());
        }
    };
    out.n = Some(x.q.rows().max(x.k.rows()));
    let work = x.q.heads() * x.q.rows() * x.k.rows() * (x.q.cols() + x.v.cols());
    if work > MAX_WORK {
        out.refused = Some(format!(
            "loaded; {work} multiply-adds is past the target's budget"
        ));
        return Ok(());
    }
    let cfg = AttentionConfig {
        scale: None,
        mask,
        softcap: None,
    };
    let to64 = |v: &[T]| v.iter().map(|z| z.to_f64()).collect::<Vec<_>>();
    match exact::forward_multihead(&x.q, &x.k, &x.v, &cfg) {
        Ok(f) => {
            finite_or_violation("o", &to64(f.o.as_slice()))?;
            if let Some(d_o) = &x.d_o {
                match exact::backward_multihead(&x.q, &x.k, &x.v, &f, d_o, &cfg) {
                    Ok(g) => {
                        finite_or_violation("dq", &to64(g.dq.as_slice()))?;
                        finite_or_violation("dk", &to64(g.dk.as_slice()))?;
                        finite_or_violation("dv", &to64(g.dv.as_slice()))?;
                    }
                    Err(e) => out.refused = Some(e.to_string()),
                }
            }
        }
        Err(e) => out.refused = Some(e.to_string()),
    }
    let pcfg = PolyConfig {
        mask,
        ..PolyConfig::default()
    };
    match poly::forward_multihead(&x.q, &x.k, &x.v, &pcfg) {
        Ok(heads) => {
            for h in &heads {
                finite_or_violation("poly o", &to64(h.o.as_slice()))?;
            }
        }
        Err(e) => out.refused = Some(e.to_string()),
    }
    Ok(())
}

/// Runs the `safetensors_input` property: parse, check dtypes, load every head stack,
/// and run the exact and polynomial engines on what loads.
pub fn check_safetensors(x: &SafetensorsInput) -> std::result::Result<Outcome, Violation> {
    let mut out = Outcome::default();
    let file = match TensorFile::parse(Path::new("<fuzz>"), &x.bytes) {
        Ok(f) => f,
        Err(e) => {
            out.refused = Some(e.to_string());
            return Ok(out);
        }
    };
    match input_dtype(&file) {
        Ok(DType::F16 | DType::BF16 | DType::F32) => attention_on::<f32>(&file, x.mask, &mut out)?,
        Ok(DType::F64) => attention_on::<f64>(&file, x.mask, &mut out)?,
        Err(e) => out.refused = Some(e.to_string()),
    }
    Ok(out)
}

/// One metadata value: absent, valid, a size at the edge of `usize`, or any string.
#[derive(Clone, Debug, PartialEq)]
pub enum MetaValue {
    /// The key is not in `__metadata__`.
    Absent,
    /// The configuration's own value.
    Valid,
    /// A huge size (2^32, 2^62, usize::MAX) or an overflowing one.
    Huge(String),
    /// Arbitrary text.
    Text(String),
}

/// How the weights file departs from the configuration's parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightsEdit {
    /// Exactly the parameters.
    None,
    /// One tensor removed.
    Drop(usize),
    /// One tensor's first dimension changed by +1.
    Reshape(usize),
    /// One tensor's first entry replaced by NaN.
    NaN(usize),
    /// An extra tensor the configuration has no use for.
    Extra,
    /// Every tensor stored as F32.
    AsF32,
}

/// The `model_config` target's input.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelInput {
    /// The configuration the weights are generated for (small: at most 2 layers,
    /// d_model <= 8).
    pub config: ModelConfig,
    /// What `__metadata__` says for each key of
    /// [`METADATA_KEYS`](polyattn::model::config::METADATA_KEYS) and `vocab`, in order.
    pub fields: Vec<MetaValue>,
    /// The weights file's departure from the parameters.
    pub edit: WeightsEdit,
    /// Input length n (0..=12; 0 is an empty input).
    pub n: usize,
    /// Token input instead of `x`.
    pub tokens: bool,
    /// Compute in f32 (else f64).
    pub f32: bool,
    /// Engine for every layer: 0 exact, 1 poly, 2 auto.
    pub engine: u8,
    /// Seed of weights and inputs.
    pub seed: u64,
}

/// Metadata keys the target writes, in [`ModelInput::fields`] order.
pub const KEYS: [&str; 9] = [
    "n_layers",
    "n_heads",
    "d_model",
    "d_ff",
    "activation",
    "layer_norm",
    "causal",
    "loss",
    "vocab",
];

impl<'a> Arbitrary<'a> for ModelInput {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let n_heads = u.int_in_range(1..=4)?;
        let d_model = n_heads * u.int_in_range(1..=2)?;
        let loss = pick(u, &[LossKind::Mse, LossKind::CrossEntropy])?;
        let config = ModelConfig {
            n_layers: u.int_in_range(0..=2)?,
            n_heads,
            d_model,
            d_ff: u.int_in_range(1..=6)?,
            activation: pick(u, &[Activation::Gelu, Activation::Relu])?,
            layer_norm: u.arbitrary()?,
            causal: u.arbitrary()?,
            loss,
            vocab: match loss {
                LossKind::CrossEntropy => Some(u.int_in_range(1..=5)?),
                LossKind::Mse => pick(u, &[None, Some(3)])?,
            },
            d_qk: None,
            cosine: None,
        };
        let mut fields = Vec::with_capacity(KEYS.len());
        for _ in KEYS {
            fields.push(match u.int_in_range(0u8..=15)? {
                0 => MetaValue::Absent,
                1 => MetaValue::Huge(
                    pick(
                        u,
                        &[
                            "4294967296",
                            "4611686018427387904",
                            "18446744073709551615",
                            "18446744073709551616",
                            "-1",
                            "0",
                        ],
                    )?
                    .to_string(),
                ),
                2 => MetaValue::Text(u.arbitrary::<String>()?),
                _ => MetaValue::Valid,
            });
        }
        let count = u.int_in_range(0..=40usize)?;
        let edit = match u.int_in_range(0u8..=9)? {
            0 => WeightsEdit::Drop(count),
            1 => WeightsEdit::Reshape(count),
            2 => WeightsEdit::NaN(count),
            3 => WeightsEdit::Extra,
            4 => WeightsEdit::AsF32,
            _ => WeightsEdit::None,
        };
        Ok(Self {
            config,
            fields,
            edit,
            n: u.int_in_range(0..=12)?,
            tokens: u.arbitrary()?,
            f32: u.arbitrary()?,
            engine: u.int_in_range(0..=2)?,
            seed: u.arbitrary()?,
        })
    }
}

/// The weights and input files of `x` as safetensors bytes.
pub fn model_files(x: &ModelInput) -> Result<(Vec<u8>, Vec<u8>)> {
    let cfg = &x.config;
    let with_embedding = x.tokens && cfg.vocab.is_some();
    let model = Model::<f64>::init(cfg.clone(), with_embedding, x.seed)?;
    let (mut tensors, valid_meta) = model_tensors(&model);
    let mut meta = HashMap::new();
    for (key, field) in KEYS.iter().zip(&x.fields) {
        match field {
            MetaValue::Absent => {}
            MetaValue::Valid => {
                if let Some(v) = valid_meta.get(*key) {
                    meta.insert(key.to_string(), v.clone());
                }
            }
            MetaValue::Huge(s) | MetaValue::Text(s) => {
                meta.insert(key.to_string(), s.clone());
            }
        }
    }
    let len = tensors.len().max(1);
    match x.edit {
        WeightsEdit::None => {}
        WeightsEdit::Drop(i) if !tensors.is_empty() => {
            tensors.remove(i % len);
        }
        WeightsEdit::Reshape(i) if !tensors.is_empty() => {
            let (_, t) = &mut tensors[i % len];
            let mut shape = t.shape().to_vec();
            let per_row: usize = shape[1..].iter().product();
            shape[0] += 1;
            let data = match &*t {
                AnyTensor::F64 { data, .. } => {
                    let mut d = data.clone();
                    d.extend(std::iter::repeat_n(0.5, per_row));
                    d
                }
                other => other.to_f64_vec(),
            };
            *t = AnyTensor::from_real::<f64>(shape, data);
        }
        WeightsEdit::NaN(i) if !tensors.is_empty() => {
            if let (_, AnyTensor::F64 { data, .. }) = &mut tensors[i % len] {
                if let Some(v) = data.first_mut() {
                    *v = f64::NAN;
                }
            }
        }
        WeightsEdit::Extra => tensors.push((
            "layers.99.unused".into(),
            AnyTensor::from_real::<f64>(vec![1], vec![1.0]),
        )),
        WeightsEdit::AsF32 => {
            for (_, t) in &mut tensors {
                if let AnyTensor::F64 { shape, data } = t {
                    let d32: Vec<f32> = data.iter().map(|&v| v as f32).collect();
                    *t = AnyTensor::from_real::<f32>(shape.clone(), d32);
                }
            }
        }
        _ => {}
    }
    let weights = serialize(&tensors, &meta)?;
    // The input: x or tokens, then y or labels; n = 0 makes empty tensors.
    let mut r = SplitMix64::new(x.seed ^ 0xfeed);
    let d = cfg.d_model;
    let vocab = cfg.vocab.unwrap_or(1);
    let mut input = Vec::new();
    if x.tokens {
        let ids = (0..x.n).map(|_| r.int(0, vocab + 1) as f64).collect();
        input.push(("tokens".into(), AnyTensor::from_real::<f64>(vec![x.n], ids)));
    } else {
        let xs = r.normal_vec(x.n * d, 1.0);
        input.push(("x".into(), AnyTensor::from_real::<f64>(vec![x.n, d], xs)));
    }
    match cfg.loss {
        LossKind::Mse => {
            let ys = r.normal_vec(x.n * d, 1.0);
            input.push(("y".into(), AnyTensor::from_real::<f64>(vec![x.n, d], ys)));
        }
        LossKind::CrossEntropy => {
            let ls = (0..x.n).map(|_| r.int(0, vocab) as f64).collect();
            input.push(("labels".into(), AnyTensor::from_real::<f64>(vec![x.n], ls)));
        }
    }
    let input = serialize(&input, &HashMap::new())?;
    Ok((weights, input))
}

fn run_model<T: Real>(
    weights: &TensorFile,
    input: &TensorFile,
    engine: u8,
    out: &mut Outcome,
) -> std::result::Result<(), Violation> {
    let result = read_model::<T>(weights).and_then(|m| {
        let batch = read_batch(input, &m)?;
        let settings = PolySettings::default();
        let choice = match engine {
            0 => EngineChoice::Exact,
            1 => EngineChoice::Poly(settings),
            _ => EngineChoice::Auto(settings),
        };
        m.loss_and_gradients(&batch, &[choice])
    });
    match result {
        Ok((loss, grads)) => {
            if !loss.is_finite() {
                return Err(Violation(format!(
                    "loss = {} on a valid model",
                    loss.to_f64()
                )));
            }
            for (name, _, data) in grads.named() {
                let v: Vec<f64> = data.iter().map(|z| z.to_f64()).collect();
                finite_or_violation(&format!("gradient {name}"), &v)?;
            }
        }
        Err(e) => out.refused = Some(e.to_string()),
    }
    Ok(())
}

/// Runs the `model_config` property: build the files, read the model and the batch,
/// and run loss and gradients.
pub fn check_model(x: &ModelInput) -> std::result::Result<Outcome, Violation> {
    let mut out = Outcome {
        n: Some(x.n),
        ..Outcome::default()
    };
    let (w, i) = match model_files(x) {
        Ok(f) => f,
        Err(e) => {
            out.refused = Some(format!("generator: {e}"));
            return Ok(out);
        }
    };
    let parse = |b: &[u8]| TensorFile::parse(Path::new("<fuzz>"), b);
    let (w, i) = match (parse(&w), parse(&i)) {
        (Ok(w), Ok(i)) => (w, i),
        (Err(e), _) | (_, Err(e)) => {
            out.refused = Some(e.to_string());
            return Ok(out);
        }
    };
    if x.f32 {
        run_model::<f32>(&w, &i, x.engine, &mut out)?;
    } else {
        run_model::<f64>(&w, &i, x.engine, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_bytes_are_a_typed_error() {
        for bytes in [
            vec![],
            vec![0u8; 3],
            vec![255u8; 64],
            b"\x08\0\0\0\0\0\0\0{}      ".to_vec(),
        ] {
            let out = check_safetensors(&SafetensorsInput {
                mask: Mask::None,
                bytes,
            })
            .unwrap();
            assert!(out.refused.is_some(), "{out:?}");
        }
    }

    #[test]
    fn a_valid_file_loads_and_runs() {
        let t = |n: usize, d: usize, s: f64| {
            AnyTensor::from_real::<f64>(
                vec![2, n, d],
                (0..2 * n * d).map(|i| s * i as f64).collect(),
            )
        };
        let bytes = serialize(
            &[
                ("q".into(), t(3, 2, 0.1)),
                ("k".into(), t(4, 2, 0.05)),
                ("v".into(), t(4, 1, 1.0)),
            ],
            &HashMap::new(),
        )
        .unwrap();
        let out = check_safetensors(&SafetensorsInput {
            mask: Mask::CausalTopLeft,
            bytes,
        })
        .unwrap();
        assert_eq!(out.n, Some(4));
        assert!(out.refused.is_none(), "{out:?}");
    }

    fn model_input() -> ModelInput {
        ModelInput {
            config: ModelConfig {
                n_layers: 1,
                n_heads: 2,
                d_model: 4,
                d_ff: 3,
                activation: Activation::Gelu,
                layer_norm: true,
                causal: true,
                loss: LossKind::Mse,
                vocab: None,
                d_qk: None,
                cosine: None,
            },
            fields: vec![MetaValue::Valid; KEYS.len()],
            edit: WeightsEdit::None,
            n: 5,
            tokens: false,
            f32: false,
            engine: 0,
            seed: 1,
        }
    }

    #[test]
    fn a_valid_model_runs_and_edits_are_typed_errors() {
        let out = check_model(&model_input()).unwrap();
        assert!(out.refused.is_none(), "{out:?}");
        for edit in [
            WeightsEdit::Drop(0),
            WeightsEdit::Reshape(2),
            WeightsEdit::NaN(1),
            WeightsEdit::Extra,
        ] {
            let out = check_model(&ModelInput {
                edit,
                ..model_input()
            })
            .unwrap();
            assert!(out.refused.is_some(), "{edit:?}: {out:?}");
        }
    }
}
