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

/// Cosine attention (Swin V2's scaled cosine attention, docs/math.md §7.4): per head,
/// the rows of Q and K are normalised to unit length and the scores are
/// `S = tau q_hat k_hat^T` with `0 < tau <= tau_max`, so every `|S_ij| <= tau_max`
/// whatever the weights: the polynomial planner is given `R = tau_max`.
///
/// With `learnable`, each layer holds `attn.log_tau` `[n_heads]` (initialised to
/// `ln tau_init`) and `tau = min(exp(log_tau), tau_max)`: positive by construction,
/// capped by the clamp (whose gradient is 1 up to the cap, inclusive, and 0 past it,
/// as `torch.clamp`'s). Without it `tau = tau_init` for every head, no parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CosineAttention {
    /// The cap tau_max: finite and positive.
    pub tau_max: f64,
    /// The fixed tau, or the learnable tau's initial value: in `(0, tau_max]`.
    pub tau_init: f64,
    /// A learnable per-head tau (`attn.log_tau`) or a fixed one.
    pub learnable: bool,
}

/// Hyper-parameters of the pre-norm decoder stack (the definition is in
/// [`crate::model`]'s documentation).
#[derive(Clone, Debug, PartialEq)]
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
    /// The score (query/key) width per head `d_qk`; `None` is `d_head =
    /// d_model / n_heads`. W_Q and W_K are `d_model x n_heads d_qk`; values keep
    /// `d_v = d_head`. Below `d_head` it shrinks the polynomial engine's rank
    /// `C(d_qk + g, g)`, as Based's small feature dimension does.
    pub d_qk: Option<usize>,
    /// Cosine attention with a capped temperature, or (`None`) dot-product attention
    /// with `tau = 1/sqrt(d_qk)`.
    pub cosine: Option<CosineAttention>,
}

/// The optional metadata keys: `d_qk` (absent: `d_head`), and for cosine attention
/// `attention = cosine` with `tau_max`, `tau_init`, `tau_learnable` (absent: `attention
/// = dot`). Files written before these existed load as dot-product attention with
/// `d_qk = d_head`.
pub const OPTIONAL_METADATA_KEYS: [&str; 5] =
    ["d_qk", "attention", "tau_max", "tau_init", "tau_learnable"];

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

    /// The score width per head `d_qk` (`d_head` unless set).
    pub fn d_qk(&self) -> usize {
        self.d_qk.unwrap_or_else(|| self.d_head())
    }

    /// The columns of W_Q and W_K, `n_heads d_qk`.
    pub fn qk_width(&self) -> usize {
        self.n_heads * self.d_qk()
    }

    /// The radius the polynomial planner is given as a floor: `tau_max` for cosine
    /// attention (every score is within it by construction), 0 otherwise (the planner
    /// measures the data).
    pub fn radius_floor(&self) -> f64 {
        self.cosine.map_or(0.0, |c| c.tau_max)
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
        if self.d_qk == Some(0) {
            return Err(bad("d_qk", "must be at least 1, got 0"));
        }
        if let Some(c) = self.cosine {
            if !(c.tau_max.is_finite() && c.tau_max > 0.0) {
                return Err(bad(
                    "tau_max",
                    format!("= {} must be finite and positive", c.tau_max),
                ));
            }
            if !(c.tau_init > 0.0 && c.tau_init <= c.tau_max) {
                return Err(bad(
                    "tau_init",
                    format!("= {} must be in (0, tau_max = {}]", c.tau_init, c.tau_max),
                ));
            }
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
        let qk = mul(self.n_heads, self.d_qk())?;
        let attn = add(mul(2, mul(d, qk)?)?, mul(2, mul(d, d)?)?)?;
        let tau = if self.cosine.is_some_and(|c| c.learnable) {
            self.n_heads
        } else {
            0
        };
        let per_layer = add(
            add(add(attn, tau)?, add(mul(2, mul(d, f)?)?, add(f, d)?)?)?,
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
        if let Some(v) = self.d_qk {
            m.insert("d_qk".into(), v.to_string());
        }
        if let Some(c) = self.cosine {
            // f64's Display is the shortest string that parses back to the same value.
            m.insert("attention".into(), "cosine".into());
            m.insert("tau_max".into(), c.tau_max.to_string());
            m.insert("tau_init".into(), c.tau_init.to_string());
            m.insert("tau_learnable".into(), c.learnable.to_string());
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
        let d_qk = if m.contains_key("d_qk") {
            Some(size("d_qk")?)
        } else {
            None
        };
        let real = |k: &str| -> Result<f64> {
            let s = get(k)?;
            s.parse::<f64>()
                .map_err(|_| bad(k, format!("= {s:?} is not a number")))
        };
        let cosine = match m.get("attention").map(|s| s.trim()) {
            None | Some("dot") => None,
            Some("cosine") => Some(CosineAttention {
                tau_max: real("tau_max")?,
                tau_init: real("tau_init")?,
                learnable: flag("tau_learnable")?,
            }),
            Some(s) => return Err(bad("attention", format!("= {s:?}; expected dot or cosine"))),
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
            d_qk,
            cosine,
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
            d_qk: None,
            cosine: None,
        }
    }

    fn cosine_cfg() -> ModelConfig {
        ModelConfig {
            d_qk: Some(2),
            cosine: Some(CosineAttention {
                tau_max: 4.5,
                tau_init: 0.1 + 0.2, // not a short decimal: the round trip must be exact
                learnable: true,
            }),
            ..cfg()
        }
    }

    #[test]
    fn cosine_metadata_round_trip_and_old_files_load() {
        let c = cosine_cfg();
        assert_eq!(ModelConfig::from_metadata(&c.to_metadata()).unwrap(), c);
        // A file written before the optional keys existed: dot-product, d_qk = d_head.
        let mut m = cfg().to_metadata();
        for k in OPTIONAL_METADATA_KEYS {
            assert!(
                !m.contains_key(k),
                "{k} written for a default configuration"
            );
        }
        let old = ModelConfig::from_metadata(&m).unwrap();
        assert_eq!((old.d_qk(), old.cosine), (3, None));
        m.insert("attention".into(), "dot".into());
        assert_eq!(ModelConfig::from_metadata(&m).unwrap(), cfg());
    }

    #[test]
    fn cosine_fields_are_checked() {
        for key in OPTIONAL_METADATA_KEYS {
            let mut m = cosine_cfg().to_metadata();
            m.insert(key.into(), "bogus".into());
            let e = ModelConfig::from_metadata(&m).unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
            if key != "d_qk" && key != "attention" {
                m.remove(key);
                let e = ModelConfig::from_metadata(&m).unwrap_err().to_string();
                assert!(e.contains(key), "{key}: {e}");
            }
        }
        let with = |tau_max: f64, tau_init: f64| ModelConfig {
            cosine: Some(CosineAttention {
                tau_max,
                tau_init,
                learnable: false,
            }),
            ..cfg()
        };
        for (mx, init, field) in [
            (0.0, 0.0, "tau_max"),
            (f64::INFINITY, 1.0, "tau_max"),
            (f64::NAN, 1.0, "tau_max"),
            (2.0, 3.0, "tau_init"),
            (2.0, 0.0, "tau_init"),
            (2.0, f64::NAN, "tau_init"),
        ] {
            let e = with(mx, init).validate().unwrap_err().to_string();
            assert!(e.contains(field), "{mx} {init}: {e}");
        }
        let e = ModelConfig {
            d_qk: Some(0),
            ..cfg()
        }
        .validate()
        .unwrap_err();
        assert!(e.to_string().contains("d_qk"), "{e}");
    }

    #[test]
    fn parameter_count_matches_the_schema() {
        use crate::model::Params;
        for c in [cfg(), cosine_cfg()] {
            let p = Params::<f64>::zeros(&c, true).unwrap();
            assert_eq!(c.parameter_count(true).unwrap(), p.len(), "{c:?}");
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
