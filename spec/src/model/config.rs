//! The model's configuration and data: [`Config`] (the architecture), the
//! input and targets of one [`Example`], and the checks that a parameter set
//! and an example fit a configuration.

use std::collections::BTreeMap;

use crate::attention::SpecError;
use crate::interval::Interval;
use crate::linalg::{shape_err, Mat};

/// The MLP activation `act` (docs/math.md §7; ML24 Appendix H's `phi`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// GELU, tanh form: `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))`.
    Gelu,
    /// `max(x, 0)`, with derivative `0` at `x = 0`.
    Relu,
}

/// The loss on the last residual stream `T_m`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossKind {
    /// `L = 1/(2n) ||T_m - Y||_F^2` against targets `Y` (`n x d_model`).
    Mse,
    /// `L = mean_i -log softmax(LNf(T_m) W_out)_{i, y_i}` against labels `y`.
    CrossEntropy,
}

/// What the model reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    /// A real input `X` (`n x d_model`), `T_0 = X`; its gradient is `grad.x`.
    Features,
    /// Token ids, `T_0 = E[tokens]` (rows of `embedding`).
    Tokens,
}

/// The architecture (docs/math.md §7). The sequence length `n` is not part of it: it
/// is the length of the [`Example`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Number of layers `m` (`0` is allowed: then `T_m = T_0`).
    pub n_layers: usize,
    /// Number of heads `h`; must divide `d_model`.
    pub n_heads: usize,
    /// Width of the residual stream.
    pub d_model: usize,
    /// Hidden width of the MLP.
    pub d_ff: usize,
    /// Vocabulary size: rows of `embedding` (token input) and columns of
    /// `head.w_out` (cross-entropy). Ignored otherwise; must be at least 1
    /// where used.
    pub vocab: usize,
    /// The MLP activation.
    pub activation: Activation,
    /// Layer norm on (every `LN` as defined in the module documentation) or
    /// off (every `LN` the identity, without parameters).
    pub layer_norm: bool,
    /// Top-left causal mask (`true`) or none.
    pub causal: bool,
    /// The loss.
    pub loss: LossKind,
    /// The input.
    pub input: InputKind,
}

impl Config {
    /// `d_head = d_model / n_heads`.
    pub fn d_head(&self) -> usize {
        self.d_model.checked_div(self.n_heads).unwrap_or(0)
    }

    /// Checks that the sizes are usable: `d_model, d_ff, n_heads >= 1`,
    /// `n_heads` divides `d_model`, and `vocab >= 1` where it is used.
    pub fn validate(&self) -> Result<(), SpecError> {
        let bad = |what: String| Err(shape_err(what));
        if self.d_model == 0 || self.d_ff == 0 || self.n_heads == 0 {
            return bad(format!(
                "d_model = {}, d_ff = {}, n_heads = {}: all must be at least 1",
                self.d_model, self.d_ff, self.n_heads
            ));
        }
        if !self.d_model.is_multiple_of(self.n_heads) {
            return bad(format!(
                "n_heads = {} does not divide d_model = {}",
                self.n_heads, self.d_model
            ));
        }
        let uses_vocab = self.loss == LossKind::CrossEntropy || self.input == InputKind::Tokens;
        if uses_vocab && self.vocab == 0 {
            return bad("vocab = 0 with token input or cross-entropy loss".into());
        }
        Ok(())
    }
}

/// The model's input and the loss's targets for one sequence of `n` tokens.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// `X`, `n x d_model`, every entry finite.
    Features(Mat<f64>),
    /// Token ids, each `< vocab`.
    Tokens(Vec<usize>),
}

/// The loss's targets.
#[derive(Clone, Debug, PartialEq)]
pub enum Targets {
    /// `Y`, `n x d_model` (MSE).
    Values(Mat<f64>),
    /// Labels `y_i < vocab` (cross-entropy).
    Labels(Vec<usize>),
}

/// One training example: input and targets.
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    /// What the model reads.
    pub input: Input,
    /// What the loss compares with.
    pub targets: Targets,
}

impl Example {
    /// The sequence length `n`.
    pub fn n(&self) -> usize {
        match &self.input {
            Input::Features(x) => x.nrows(),
            Input::Tokens(t) => t.len(),
        }
    }
}

/// Parameters by name (see the module documentation); vectors are `1 x k`.
pub type Params = BTreeMap<String, Mat<f64>>;

/// A name with a `(rows, cols)` shape.
pub type NamedShape = (String, (usize, usize));

/// Gradient enclosures by name: `grad.<parameter name>`, and `grad.x` for a
/// feature input.
pub type Gradients = BTreeMap<String, Mat<Interval>>;
