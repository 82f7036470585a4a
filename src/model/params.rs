//! The model's parameters: their names and shapes (the safetensors schema), a seeded
//! initialiser, and loading from a weights file with every tensor checked.
//!
//! Names (`l` is the 0-based layer): `layers.{l}.ln1.gain`, `layers.{l}.ln1.bias`
//! `[d_model]`; `layers.{l}.attn.wq`, `.wk` `[d_model, n_heads d_qk]`, `.wv`, `.wo`
//! `[d_model, d_model]`; `layers.{l}.attn.log_tau` `[n_heads]` (learnable cosine
//! temperature only);
//! `layers.{l}.ln2.gain`, `.ln2.bias` `[d_model]`; `layers.{l}.mlp.w1`
//! `[d_model, d_ff]`, `.mlp.b1` `[d_ff]`, `.mlp.w2` `[d_ff, d_model]`, `.mlp.b2`
//! `[d_model]`; `lnf.gain`, `lnf.bias` `[d_model]` and `head.w_out` `[d_model, vocab]`
//! (cross-entropy only); `embedding` `[vocab, d_model]` (token input only). Layer-norm
//! tensors exist only with `layer_norm = true`. The same structure holds gradients.

use super::config::{LossKind, ModelConfig};
use crate::error::{Error, Result};
use crate::io::{AnyTensor, TensorFile};
use crate::rng::SplitMix64;
use crate::scalar::Real;
use crate::tensor::{check_finite, Matrix};

/// Gain and bias of one layer norm, each of length `d_model`.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerNormParams<T> {
    /// The gain gamma in `LN(x) = xhat * gamma + beta`.
    pub gain: Vec<T>,
    /// The bias beta.
    pub bias: Vec<T>,
}

/// One block's parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerParams<T> {
    /// LN1 (absent when layer norm is off).
    pub ln1: Option<LayerNormParams<T>>,
    /// W_Q, `d_model x n_heads d_qk`.
    pub wq: Matrix<T>,
    /// W_K, `d_model x n_heads d_qk`.
    pub wk: Matrix<T>,
    /// W_V, `d_model x d_model`.
    pub wv: Matrix<T>,
    /// W_O, `d_model x d_model`.
    pub wo: Matrix<T>,
    /// `ln tau` per head, `[n_heads]` (learnable cosine attention only; the temperature
    /// is `min(exp(log_tau), tau_max)`).
    pub log_tau: Option<Vec<T>>,
    /// LN2 (absent when layer norm is off).
    pub ln2: Option<LayerNormParams<T>>,
    /// W1, `d_model x d_ff`.
    pub w1: Matrix<T>,
    /// b1, `d_ff`.
    pub b1: Vec<T>,
    /// W2, `d_ff x d_model`.
    pub w2: Matrix<T>,
    /// b2, `d_model`.
    pub b2: Vec<T>,
}

impl<T: Real> LayerParams<T> {
    /// The block's tensors with their file names (`{prefix}.ln1.gain`, ...,
    /// `{prefix}.mlp.b2`) and shapes, in schema order.
    pub fn slots_mut(&mut self, prefix: &str) -> Vec<SlotMut<'_, T>> {
        let mut out = Vec::new();
        ln_slots(&mut out, &format!("{prefix}.ln1"), &mut self.ln1);
        out.push(mat_slot(format!("{prefix}.attn.wq"), &mut self.wq));
        out.push(mat_slot(format!("{prefix}.attn.wk"), &mut self.wk));
        out.push(mat_slot(format!("{prefix}.attn.wv"), &mut self.wv));
        out.push(mat_slot(format!("{prefix}.attn.wo"), &mut self.wo));
        if let Some(t) = &mut self.log_tau {
            let h = t.len();
            out.push((format!("{prefix}.attn.log_tau"), vec![h], t));
        }
        ln_slots(&mut out, &format!("{prefix}.ln2"), &mut self.ln2);
        out.push(mat_slot(format!("{prefix}.mlp.w1"), &mut self.w1));
        let f = self.b1.len();
        out.push((format!("{prefix}.mlp.b1"), vec![f], &mut self.b1));
        out.push(mat_slot(format!("{prefix}.mlp.w2"), &mut self.w2));
        let d = self.b2.len();
        out.push((format!("{prefix}.mlp.b2"), vec![d], &mut self.b2));
        out
    }

    /// Every value of the block, concatenated in schema order (the vector the block's
    /// parameter-space norms act on).
    pub fn to_flat(&self) -> Vec<T> {
        let mut copy = self.clone();
        copy.slots_mut("")
            .into_iter()
            .flat_map(|(_, _, d)| d.to_vec())
            .collect()
    }

    /// The block with every value replaced from `flat` (schema order, as
    /// [`to_flat`](Self::to_flat) writes it); `None` when `flat` has the wrong length.
    pub fn with_flat(&self, flat: &[T]) -> Option<Self> {
        let mut out = self.clone();
        let mut rest = flat;
        for (_, _, d) in out.slots_mut("") {
            if rest.len() < d.len() {
                return None;
            }
            let (head, tail) = rest.split_at(d.len());
            d.copy_from_slice(head);
            rest = tail;
        }
        rest.is_empty().then_some(out)
    }
}

/// All parameters of a model (or, with the same layout, their gradients).
#[derive(Clone, Debug, PartialEq)]
pub struct Params<T> {
    /// The blocks, layer 0 first.
    pub layers: Vec<LayerParams<T>>,
    /// The final layer norm LNf (cross-entropy with layer norm on).
    pub lnf: Option<LayerNormParams<T>>,
    /// The output head W_out, `d_model x vocab` (cross-entropy).
    pub w_out: Option<Matrix<T>>,
    /// The token embedding E, `vocab x d_model` (token input).
    pub embedding: Option<Matrix<T>>,
}

/// A named parameter tensor, borrowed mutably: name, shape, row-major data.
pub type SlotMut<'a, T> = (String, Vec<usize>, &'a mut [T]);

fn ln_zeros<T: Real>(on: bool, d: usize) -> Option<LayerNormParams<T>> {
    on.then(|| LayerNormParams {
        gain: vec![T::ZERO; d],
        bias: vec![T::ZERO; d],
    })
}

fn ln_slots<'a, T: Real>(
    out: &mut Vec<SlotMut<'a, T>>,
    prefix: &str,
    ln: &'a mut Option<LayerNormParams<T>>,
) {
    if let Some(ln) = ln {
        let d = ln.gain.len();
        out.push((format!("{prefix}.gain"), vec![d], &mut ln.gain));
        out.push((format!("{prefix}.bias"), vec![d], &mut ln.bias));
    }
}

fn mat_slot<'a, T: Real>(name: String, m: &'a mut Matrix<T>) -> SlotMut<'a, T> {
    let shape = m.shape().to_vec();
    (name, shape, m.as_mut_slice())
}

impl<T: Real> Params<T> {
    /// All-zero parameters for `config`, with an embedding when `with_embedding`
    /// (which needs `vocab`). The configuration is validated first.
    pub fn zeros(config: &ModelConfig, with_embedding: bool) -> Result<Self> {
        config.validate()?;
        // Refuse absurd sizes before allocating (a malformed file or flag must give an
        // error, not an out-of-memory abort): 2^31 values is 16 GiB of f64.
        let count = config.parameter_count(with_embedding)?;
        if count > 1 << 31 {
            return Err(Error::SizeOverflow(format!(
                "the configuration has {count} parameter values (more than 2^31)"
            )));
        }
        let (d, f, ln) = (config.d_model, config.d_ff, config.layer_norm);
        let qk = config.qk_width();
        let learn_tau = config.cosine.is_some_and(|c| c.learnable);
        let vocab = || {
            config.vocab.ok_or_else(|| Error::ModelConfig {
                field: "vocab".into(),
                reason: "is required for token input (rows of the embedding)".into(),
            })
        };
        let layers = (0..config.n_layers)
            .map(|_| {
                Ok(LayerParams {
                    ln1: ln_zeros(ln, d),
                    wq: Matrix::zeros(d, qk)?,
                    wk: Matrix::zeros(d, qk)?,
                    wv: Matrix::zeros(d, d)?,
                    wo: Matrix::zeros(d, d)?,
                    log_tau: learn_tau.then(|| vec![T::ZERO; config.n_heads]),
                    ln2: ln_zeros(ln, d),
                    w1: Matrix::zeros(d, f)?,
                    b1: vec![T::ZERO; f],
                    w2: Matrix::zeros(f, d)?,
                    b2: vec![T::ZERO; d],
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let ce = config.loss == LossKind::CrossEntropy;
        Ok(Self {
            layers,
            lnf: ln_zeros(ln && ce, d),
            w_out: if ce {
                Some(Matrix::zeros(d, vocab()?)?)
            } else {
                None
            },
            embedding: if with_embedding {
                Some(Matrix::zeros(vocab()?, d)?)
            } else {
                None
            },
        })
    }

    /// Every tensor with its file name and shape, in schema order (layers first).
    /// The single source of the names: loading, writing, initialising and the
    /// gradients' names all go through it.
    pub fn slots_mut(&mut self) -> Vec<SlotMut<'_, T>> {
        let mut out = Vec::new();
        for (l, p) in self.layers.iter_mut().enumerate() {
            out.extend(p.slots_mut(&format!("layers.{l}")));
        }
        ln_slots(&mut out, "lnf", &mut self.lnf);
        if let Some(w) = &mut self.w_out {
            out.push(mat_slot("head.w_out".into(), w));
        }
        if let Some(e) = &mut self.embedding {
            out.push(mat_slot("embedding".into(), e));
        }
        out
    }

    /// Every tensor as (name, shape, data copy), in schema order.
    pub fn named(&self) -> Vec<(String, Vec<usize>, Vec<T>)> {
        let mut copy = self.clone();
        copy.slots_mut()
            .into_iter()
            .map(|(n, s, d)| (n, s, d.to_vec()))
            .collect()
    }

    /// The total number of scalar parameters.
    pub fn len(&self) -> usize {
        self.named().iter().map(|(_, _, d)| d.len()).sum()
    }

    /// True when there are no parameters (never, for a valid configuration).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Seeded random parameters (SplitMix64, `seed`): every weight matrix
    /// `W ~ N(0, 1/rows)` (fan-in scaling, so activations stay O(1)), the embedding
    /// `N(0, 1)`, layer-norm gains `1 + 0.1 N(0, 1)`, every bias `0.1 N(0, 1)`. Gains and
    /// biases are perturbed from the usual 1 and 0 so that tests see their gradients
    /// act on generic values. A learnable cosine temperature starts at
    /// `log_tau = ln tau_init` for every head (no random draw: the draws of the other
    /// tensors are those of the same configuration without it).
    pub fn init(config: &ModelConfig, with_embedding: bool, seed: u64) -> Result<Self> {
        let mut p = Self::zeros(config, with_embedding)?;
        let mut rng = SplitMix64::new(seed);
        let log_tau0 = config.cosine.map_or(0.0, |c| c.tau_init.ln());
        for (name, shape, data) in p.slots_mut() {
            if name.ends_with(".log_tau") {
                data.fill(T::from_f64(log_tau0));
                continue;
            }
            let (base, scale) = if name.ends_with(".gain") {
                (1.0, 0.1)
            } else if name.ends_with("bias") || name.ends_with(".b1") || name.ends_with(".b2") {
                (0.0, 0.1)
            } else if name == "embedding" {
                (0.0, 1.0)
            } else {
                (0.0, 1.0 / (shape[0] as f64).sqrt())
            };
            for x in data.iter_mut() {
                *x = T::from_f64(base + scale * rng.normal());
            }
        }
        Ok(p)
    }

    /// Loads the parameters of `config` from `file`: with an embedding iff the file
    /// has `embedding`. Every expected tensor must be present with its exact shape and
    /// finite values; F32 and F64 are both accepted and converted to `T`; a tensor the
    /// configuration has no use for is an error (it usually means a configuration
    /// mismatch, e.g. `ln1` tensors with `layer_norm = false`).
    pub fn load(config: &ModelConfig, file: &TensorFile) -> Result<Self> {
        // The file must hold at least as many values as the configuration needs; checked
        // before allocating, so huge sizes in the metadata cannot exhaust memory.
        let with_embedding = file.contains("embedding");
        let needed = config.parameter_count(with_embedding)?;
        let held: usize = file
            .names()
            .iter()
            .filter_map(|n| file.get(n).ok())
            .map(|t| t.shape().iter().product::<usize>())
            .sum();
        // Small shortfalls fall through to the per-tensor checks below, which name the
        // missing or misshapen tensor; only sizes worth refusing before allocating
        // (over 2^24 values, 128 MiB of f64) are refused here.
        if needed > held && needed > 1 << 24 {
            return Err(Error::ModelConfig {
                field: "n_layers/d_model/d_ff/vocab".into(),
                reason: format!("describe {needed} parameter values but the file holds {held}"),
            });
        }
        let mut p = Self::zeros(config, with_embedding)?;
        let mut expected = Vec::new();
        for (name, shape, data) in p.slots_mut() {
            let t = file.get(&name)?;
            if t.shape() != shape.as_slice() {
                return Err(Error::ShapeMismatch {
                    what: format!("weights tensor `{name}`"),
                    expected: format!("{shape:?}"),
                    got: format!("{:?}", t.shape()),
                });
            }
            let values = to_real::<T>(t);
            check_finite(&format!("weights tensor `{name}`"), &shape, &values)?;
            data.copy_from_slice(&values);
            expected.push(name);
        }
        if let Some(extra) = file.names().into_iter().find(|n| !expected.contains(n)) {
            return Err(Error::ModelConfig {
                field: extra,
                reason: format!(
                    "is in the weights file but is not a parameter of this configuration \
                     (n_layers = {}, layer_norm = {}, loss = {})",
                    config.n_layers,
                    config.layer_norm,
                    config.loss.name()
                ),
            });
        }
        Ok(p)
    }
}

/// A tensor's values as `T`, from any stored dtype (through f64: exact for every dtype
/// to f64, one rounding for F64 to f32).
pub fn to_real<T: Real>(t: &AnyTensor) -> Vec<T> {
    t.to_f64_vec().into_iter().map(T::from_f64).collect()
}

#[cfg(test)]
mod tests {
    use super::super::config::Activation;
    use super::*;

    #[test]
    fn schema_names_and_shapes() {
        let cfg = ModelConfig {
            n_layers: 2,
            n_heads: 1,
            d_model: 4,
            d_ff: 3,
            activation: Activation::Relu,
            layer_norm: true,
            causal: false,
            loss: LossKind::CrossEntropy,
            vocab: Some(5),
            d_qk: None,
            cosine: None,
        };
        let p = Params::<f64>::zeros(&cfg, true).unwrap();
        let named = p.named();
        let names: Vec<&str> = named.iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(names.len(), 2 * 12 + 2 + 1 + 1);
        assert_eq!(
            &names[..4],
            [
                "layers.0.ln1.gain",
                "layers.0.ln1.bias",
                "layers.0.attn.wq",
                "layers.0.attn.wk"
            ]
        );
        assert_eq!(
            &names[names.len() - 4..],
            ["lnf.gain", "lnf.bias", "head.w_out", "embedding"]
        );
        let shape = |n: &str| named.iter().find(|(m, _, _)| m == n).unwrap().1.clone();
        assert_eq!(shape("layers.1.mlp.w1"), vec![4, 3]);
        assert_eq!(shape("layers.1.mlp.w2"), vec![3, 4]);
        assert_eq!(shape("head.w_out"), vec![4, 5]);
        assert_eq!(shape("embedding"), vec![5, 4]);
        let off = ModelConfig {
            layer_norm: false,
            loss: LossKind::Mse,
            ..cfg
        };
        let names: Vec<String> = Params::<f64>::zeros(&off, false)
            .unwrap()
            .named()
            .into_iter()
            .map(|t| t.0)
            .collect();
        assert_eq!(names.len(), 2 * 8);
        assert!(names.iter().all(|n| !n.contains("ln")));
    }
}
