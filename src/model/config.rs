//! The model's hyper-parameters, their validation, and their form in a weights file's
//! `__metadata__` (docs/math.md §7; ML24 Def 1.3).

use crate::attention::Mask;
use crate::error::{Error, Result};
use std::collections::HashMap;

/// The MLP's activation `act` in `T_l = Z_l + act(LN2(Z_l) W1 + b1) W2 + b2`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// GELU, tanh form: `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
    Gelu,
    /// ReLU: `max(x, 0)`; its derivative at 0 is taken as 0.
    Relu,
}

impl Activation {
    /// The name in files and on the command line (`gelu`, `relu`).
    pub fn name(self) -> &'static str {
        match self {
            Activation::Gelu => "gelu",
            Activation::Relu => "relu",
        }
    }
}

/// The loss at the top of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LossKind {
    /// `L = 1/(2n) ||T_m - Y||_F^2` against a target `Y` (`n x d_model`).
    Mse,
    /// `L = mean_i -log softmax(LNf(T_m) W_out)_{i, y_i}` against labels `y_i` in
    /// `0..vocab`, through a final layer norm `LNf` and an output head `W_out`.
    CrossEntropy,
}

impl LossKind {
    /// The name in files and on the command line (`mse`, `cross-entropy`).
    pub fn name(self) -> &'static str {
        match self {
            LossKind::Mse => "mse",
            LossKind::CrossEntropy => "cross-entropy",
        }
    }
}

/// Hyper-parameters of the pre-norm decoder stack (the definition is in
/// [`crate::model`]'s documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelConfig {
    /// Number of layers m (0 is allowed: then `T_m = T_0`).
    pub n_layers: usize,
    /// Attention heads h per layer; `d_model` must be a multiple of it.
    pub n_heads: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Hidden width of the MLP.
    pub d_ff: usize,
    /// The MLP's activation.
    pub activation: Activation,
    /// Layer norms on (with gain and bias) or off (`LN` = identity, no parameters).
    pub layer_norm: bool,
    /// Causal (top-left: query i sees keys j <= i) or no mask.
    pub causal: bool,
    /// The loss.
    pub loss: LossKind,
    /// Vocabulary size: rows of the embedding (token input) and columns of the output
    /// head (cross-entropy). Required for cross-entropy; `None` otherwise allowed.
    pub vocab: Option<usize>,
}

/// The metadata keys of a model configuration, in the order they are written.
pub const METADATA_KEYS: [&str; 9] = [
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

fn bad(field: &str, reason: impl Into<String>) -> Error {
    Error::ModelConfig {
        field: field.into(),
        reason: reason.into(),
    }
}

impl ModelConfig {
    /// The head width `d_head = d_model / n_heads`.
    pub fn d_head(&self) -> usize {
        self.d_model / self.n_heads.max(1)
    }

    /// The attention mask: [`Mask::CausalTopLeft`] when causal, else [`Mask::None`].
    pub fn mask(&self) -> Mask {
        if self.causal {
            Mask::CausalTopLeft
        } else {
            Mask::None
        }
    }

    /// Checks every field: `n_heads`, `d_model`, `d_ff` at least 1, `d_model % n_heads == 0`, a vocabulary
    /// for cross-entropy.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("n_heads", self.n_heads),
            ("d_model", self.d_model),
            ("d_ff", self.d_ff),
        ] {
            if v == 0 {
                return Err(bad(name, "must be at least 1, got 0"));
            }
        }
        if !self.d_model.is_multiple_of(self.n_heads) {
            return Err(bad(
                "n_heads",
                format!(
                    "= {} does not divide d_model = {} (heads split d_model column-wise)",
                    self.n_heads, self.d_model
                ),
            ));
        }
        match (self.loss, self.vocab) {
            (_, Some(0)) => Err(bad("vocab", "must be at least 1, got 0")),
            (LossKind::CrossEntropy, None) => Err(bad(
                "vocab",
                "is required with loss = cross-entropy (columns of head.w_out)",
            )),
            _ => Ok(()),
        }
    }

    /// The number of parameter values the configuration has (with an embedding when
    /// `with_embedding`), by checked arithmetic: a size that overflows `usize` is an
    /// error, so a malformed configuration is refused before anything is allocated.
    pub fn parameter_count(&self, with_embedding: bool) -> Result<usize> {
        let overflow = || Error::SizeOverflow(format!("the parameters of {self:?}"));
        let (d, f) = (self.d_model, self.d_ff);
        let mul = |a: usize, b: usize| a.checked_mul(b).ok_or_else(overflow);
        let add = |a: usize, b: usize| a.checked_add(b).ok_or_else(overflow);
        let ln = if self.layer_norm { mul(4, d)? } else { 0 };
        let per_layer = add(
            add(mul(4, mul(d, d)?)?, add(mul(2, mul(d, f)?)?, add(f, d)?)?)?,
            ln,
        )?;
        let mut total = mul(self.n_layers, per_layer)?;
        let vocab = self.vocab.unwrap_or(0);
        if self.loss == LossKind::CrossEntropy {
            total = add(total, mul(d, vocab)?)?;
            if self.layer_norm {
                total = add(total, mul(2, d)?)?;
            }
        }
        if with_embedding {
            total = add(total, mul(vocab, d)?)?;
        }
        Ok(total)
    }

    /// The configuration as `__metadata__` strings (`vocab` only when set).
    pub fn to_metadata(&self) -> HashMap<String, String> {
        let mut m = HashMap::from([
            ("n_layers".to_string(), self.n_layers.to_string()),
            ("n_heads".to_string(), self.n_heads.to_string()),
            ("d_model".to_string(), self.d_model.to_string()),
            ("d_ff".to_string(), self.d_ff.to_string()),
            ("activation".to_string(), self.activation.name().to_string()),
            ("layer_norm".to_string(), self.layer_norm.to_string()),
            ("causal".to_string(), self.causal.to_string()),
            ("loss".to_string(), self.loss.name().to_string()),
        ]);
        if let Some(v) = self.vocab {
            m.insert("vocab".into(), v.to_string());
        }
        m
    }

    /// Parses and validates a configuration from `__metadata__` strings; every field
    /// but `vocab` is required. Other keys are ignored.
    pub fn from_metadata(m: &HashMap<String, String>) -> Result<Self> {
        let get = |k: &str| {
            m.get(k).map(|s| s.trim()).ok_or_else(|| {
                bad(
                    k,
                    "is missing from the weights file's __metadata__ (needed: n_layers, \
                     n_heads, d_model, d_ff, activation, layer_norm, causal, loss, and \
                     vocab for cross-entropy)",
                )
            })
        };
        let size = |k: &str| -> Result<usize> {
            let s = get(k)?;
            s.parse::<usize>()
                .map_err(|_| bad(k, format!("= {s:?} is not a non-negative integer")))
        };
        let flag = |k: &str| -> Result<bool> {
            match get(k)? {
                "true" => Ok(true),
                "false" => Ok(false),
                s => Err(bad(k, format!("= {s:?}; expected true or false"))),
            }
        };
        let activation = match get("activation")? {
            "gelu" => Activation::Gelu,
            "relu" => Activation::Relu,
            s => return Err(bad("activation", format!("= {s:?}; expected gelu or relu"))),
        };
        let loss = match get("loss")? {
            "mse" => LossKind::Mse,
            "cross-entropy" => LossKind::CrossEntropy,
            s => {
                return Err(bad(
                    "loss",
                    format!("= {s:?}; expected mse or cross-entropy"),
                ))
            }
        };
        let vocab = if m.contains_key("vocab") {
            Some(size("vocab")?)
        } else {
            None
        };
        let c = Self {
            n_layers: size("n_layers")?,
            n_heads: size("n_heads")?,
            d_model: size("d_model")?,
            d_ff: size("d_ff")?,
            activation,
            layer_norm: flag("layer_norm")?,
            causal: flag("causal")?,
            loss,
            vocab,
        };
        c.validate()?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ModelConfig {
        ModelConfig {
            n_layers: 2,
            n_heads: 2,
            d_model: 6,
            d_ff: 5,
            activation: Activation::Gelu,
            layer_norm: true,
            causal: true,
            loss: LossKind::CrossEntropy,
            vocab: Some(7),
        }
    }

    #[test]
    fn metadata_round_trip() {
        let c = cfg();
        assert_eq!(ModelConfig::from_metadata(&c.to_metadata()).unwrap(), c);
    }

    #[test]
    fn every_field_is_checked() {
        for key in METADATA_KEYS {
            let mut m = cfg().to_metadata();
            m.insert(key.into(), "bogus".into());
            let e = ModelConfig::from_metadata(&m).unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
            m.remove(key);
            let e = ModelConfig::from_metadata(&m).unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
        let mut m = cfg().to_metadata();
        m.insert("n_heads".into(), "4".into());
        let e = ModelConfig::from_metadata(&m).unwrap_err().to_string();
        assert!(e.contains("does not divide"), "{e}");
    }
}
