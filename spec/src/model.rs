//! The multi-layer reference (docs/math.md §7; ML24 Def 1.3, Def 3.3,
//! Appendices J and K): the forward pass and every gradient of a small
//! pre-layer-norm transformer as interval enclosures, and an independent
//! dual-number oracle for those gradients.
//!
//! # The model
//!
//! Row-vector convention (`x W + b`); `n` tokens, width `d_model`, `h` heads of
//! width `d_head = d_model / h`, `m` layers:
//!
//! ```text
//! T_0 = X  (n x d_model)   or   T_0 = E[tokens]  (rows of the embedding)
//! for l = 1..m:
//!     G   = LN1_l(T_{l-1})
//!     Q = G Wq,  K = G Wk,  V = G Wv                       (each d_model x d_model)
//!     O_h = softmax(tau Q_h K_h^T + mask) V_h              per head h (docs/math.md §2),
//!                                                          Q_h = columns h*d_head.. of Q,
//!                                                          tau = 1 / sqrt(d_head)
//!     A   = [O_1, ..., O_h] Wo                             (ML24 Appendix K)
//!     Z_l = T_{l-1} + A                                    (residual, ML24 Appendix J)
//!     H   = LN2_l(Z_l),  U = H W1 + b1
//!     T_l = Z_l + act(U) W2 + b2                           (MLP block, ML24 Appendix H)
//! MSE:  L = 1/(2n) ||T_m - Y||_F^2
//! CE:   L = mean_i -log softmax(LNf(T_m) W_out)_{i, y_i}
//! ```
//!
//! In the paper notation of docs/math.md §1.3, head `h` of layer `l` is ML24's
//! attention layer with `X = LN1_l(T_{l-1})`, `W = Wq_h Wk_h^T`,
//! `W_V = Wv_h` and scale `tau`, so `s = O_h` and `G = dL/dO_h`; ML24 Def 1.3
//! and Def 3.3 chain `m` such layers with the blocks `g_i`, here the MLP with
//! its residual (docs/math.md §7.1).
//!
//! `LN(x) = (x - mean(x)) / sqrt(var(x) + 1e-5) * gain + bias` per row, with
//! the biased variance (mean of squared deviations) and `1e-5` the exact
//! decimal `1/100000`. With layer norm switched off every `LN` is the
//! identity and has no parameters. The activation is GELU in its tanh form,
//! `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))` (constants exact: `pi`
//! enclosed by MPFR, `0.044715 = 44715/10^6`), or ReLU with derivative `0` at
//! `0`. The causal mask is top-left aligned (key `j` visible to query `i` iff
//! `j <= i`, so no row is ever fully masked).
//!
//! # Parameters
//!
//! By name (also the production crate's safetensors names), per layer `l`
//! (0-based): `layers.{l}.ln1.gain`, `layers.{l}.ln1.bias` (layer norm only),
//! `layers.{l}.attn.wq`, `.wk`, `.wv`, `.wo`, `layers.{l}.ln2.gain`,
//! `layers.{l}.ln2.bias` (layer norm only), `layers.{l}.mlp.w1`, `.b1`, `.w2`,
//! `.b2`; then `lnf.gain`, `lnf.bias` (cross-entropy with layer norm only: the
//! MSE loss reads `T_m` directly), `head.w_out` (cross-entropy only) and
//! `embedding` (`vocab x d_model`, token input only). Vectors (gains, biases)
//! are `1 x k` matrices here and shape `[k]` in a safetensors file; see
//! [`parameter_shapes`]. Gradients carry the same names prefixed `grad.`, plus
//! `grad.x` for a feature input `X`.
//!
//! # Two routes to the gradient
//!
//! The forward pass and the closed-form backward are written once, generically
//! over [`Num`] ([`Field`], the lemma modules' arithmetic trait, extended by
//! `sqrt`, `ln` and ReLU), and run in [`Interval`], [`Dual`] and [`Ball`]
//! arithmetic. Attention never stores an `n x n` matrix: each head keeps its rows'
//! softmax shifts and normalisers and the backward recomputes `P_h` row by row;
//! rows run in parallel, with sums in a fixed order.
//! * [`gradients`] runs it in intervals and applies the closed-form backward of
//!   each piece (loss, layer norm, MLP, residual, multi-head attention through
//!   the attention backward of docs/math.md §2.3) to the recorded enclosures.
//! * [`gradients_by_dual_numbers`] runs the *same* forward code once per
//!   parameter entry in dual numbers seeded on that entry, and reads `dL/dθ`
//!   off the loss. It uses no closed form (docs/math.md §5.2: the oracle), and
//!   costs one forward pass per entry: meant for tiny instances (a few
//!   hundred entries take about a second in a release build; the largest
//!   sizes below would take hours).
//! * [`loss_and_gradients_ball`] runs the closed-form route in double-double
//!   balls: the enclosure for large models (n = 16 384 in minutes).
//!
//! The MPFR routes are meant for `n <= 32`, `d_model <= 16`, `m <= 4` (larger
//! inputs are accepted, only slow). Widths: the inputs are exact, so all width is
//! rounding, amplified layer by layer by interval arithmetic. At the default
//! 128 bits a three-layer model of width 4 keeps gradient widths near `1e-24`
//! relative, but at the largest sizes they reach `1e-5`; use a higher
//! precision there, or let [`gradients_to_width`] pick one (about 190 bits
//! gives `1e-25` at the largest sizes).
//!
//! Every `f64` input is converted exactly; every result encloses the exact
//! real value (docs/math.md §5.2). Softmax rows are shifted by a *point* (the
//! largest midpoint of the row's score enclosures), exact in real arithmetic,
//! as in [`crate::attention`].

use std::collections::BTreeMap;

use rug::float::{Constant, Round};
use rug::{Float, Rational};

use crate::attention::SpecError;
use crate::ball::Ball;
use crate::dual::Dual;
use crate::interval::Interval;
use crate::linalg::{
    add, check_prec, degenerate, expect_shape, hadamard, lift, matmul, scale, shape_err, sub,
    zeros, Field, Mat, Res,
};
use crate::ml24::blocks::tanh;

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

/// What kind of entry a parameter holds (fixes its distribution in
/// [`random_parameters`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// A layer-norm gain (vector).
    Gain,
    /// A bias (vector): layer-norm bias, `b1`, `b2`.
    Bias,
    /// A weight matrix or the embedding.
    Matrix,
}

/// Name and shape of one parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamShape {
    /// The parameter's name.
    pub name: String,
    /// Rows of its matrix here (`1` for a vector).
    pub rows: usize,
    /// Columns of its matrix here.
    pub cols: usize,
    /// What it holds.
    pub kind: ParamKind,
}

impl ParamShape {
    /// The shape in a safetensors file: `[cols]` for a vector, `[rows, cols]`
    /// for a matrix.
    pub fn dims(&self) -> Vec<usize> {
        match self.kind {
            ParamKind::Gain | ParamKind::Bias => vec![self.cols],
            ParamKind::Matrix => vec![self.rows, self.cols],
        }
    }
}

/// Every parameter of `cfg` with its shape, in model order: per layer `ln1`
/// (layer norm only), `attn.wq, wk, wv, wo`, `ln2` (layer norm only),
/// `mlp.w1, b1, w2, b2`; then `lnf` (cross-entropy with layer norm),
/// `head.w_out` (cross-entropy), `embedding` (tokens). Errors: as
/// [`Config::validate`].
pub fn parameter_shapes(cfg: &Config) -> Result<Vec<ParamShape>, SpecError> {
    cfg.validate()?;
    let d = cfg.d_model;
    let mut out = Vec::new();
    fn push(out: &mut Vec<ParamShape>, name: String, rows: usize, cols: usize, kind: ParamKind) {
        out.push(ParamShape {
            name,
            rows,
            cols,
            kind,
        });
    }
    let norm = |out: &mut Vec<ParamShape>, prefix: &str| {
        if cfg.layer_norm {
            push(out, format!("{prefix}.gain"), 1, d, ParamKind::Gain);
            push(out, format!("{prefix}.bias"), 1, d, ParamKind::Bias);
        }
    };
    for l in 0..cfg.n_layers {
        norm(&mut out, &format!("layers.{l}.ln1"));
        for w in ["wq", "wk", "wv", "wo"] {
            push(
                &mut out,
                format!("layers.{l}.attn.{w}"),
                d,
                d,
                ParamKind::Matrix,
            );
        }
        norm(&mut out, &format!("layers.{l}.ln2"));
        push(
            &mut out,
            format!("layers.{l}.mlp.w1"),
            d,
            cfg.d_ff,
            ParamKind::Matrix,
        );
        push(
            &mut out,
            format!("layers.{l}.mlp.b1"),
            1,
            cfg.d_ff,
            ParamKind::Bias,
        );
        push(
            &mut out,
            format!("layers.{l}.mlp.w2"),
            cfg.d_ff,
            d,
            ParamKind::Matrix,
        );
        push(
            &mut out,
            format!("layers.{l}.mlp.b2"),
            1,
            d,
            ParamKind::Bias,
        );
    }
    if cfg.loss == LossKind::CrossEntropy {
        norm(&mut out, "lnf");
        push(
            &mut out,
            "head.w_out".into(),
            d,
            cfg.vocab,
            ParamKind::Matrix,
        );
    }
    if cfg.input == InputKind::Tokens {
        push(
            &mut out,
            "embedding".into(),
            cfg.vocab,
            d,
            ParamKind::Matrix,
        );
    }
    Ok(out)
}

/// SplitMix64 (Steele, Lea, Flood 2014): the generator behind
/// [`random_parameters`] and [`random_example`], small enough to restate.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator whose state starts at `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    /// The next output: `state += 0x9E3779B97F4A7C15`, then the SplitMix64
    /// finaliser of the new state.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// `k - 32` for `k = next_u64() % 65`: uniform in `-32..=32`.
    pub fn small(&mut self) -> i64 {
        (self.next_u64() % 65) as i64 - 32
    }

    /// `next_u64() % bound` (`bound >= 1`; `0` gives `0`).
    pub fn below(&mut self, bound: usize) -> usize {
        match bound as u64 {
            0 => 0,
            b => (self.next_u64() % b) as usize,
        }
    }
}

/// A deterministic random parameter set for `cfg`, every entry an exact
/// dyadic rational. One [`SplitMix64`] stream started at `seed` is read
/// through the parameters in [`parameter_shapes`] order, each matrix in
/// row-major order, one draw `k = SplitMix64::small()` (uniform in
/// `-32..=32`) per entry:
/// * gains: `1 + k/128` (in `[0.75, 1.25]`);
/// * biases: `k/128` (in `[-0.25, 0.25]`);
/// * weight matrices and the embedding: `k/64` (in `[-0.5, 0.5]`).
///
/// Errors: as [`Config::validate`].
pub fn random_parameters(cfg: &Config, seed: u64) -> Result<Params, SpecError> {
    let mut rng = SplitMix64::new(seed);
    let mut out = Params::new();
    for s in parameter_shapes(cfg)? {
        let mut m = Mat::zeros(s.rows, s.cols);
        for i in 0..s.rows {
            for j in 0..s.cols {
                let k = rng.small() as f64;
                m[(i, j)] = match s.kind {
                    ParamKind::Gain => 1.0 + k / 128.0,
                    ParamKind::Bias => k / 128.0,
                    ParamKind::Matrix => k / 64.0,
                };
            }
        }
        out.insert(s.name, m);
    }
    Ok(out)
}

/// A deterministic random example of length `n` for `cfg`. One
/// [`SplitMix64`] stream started at `seed` gives first the input, then the
/// targets: `X` and `Y` entries `k/32` (`k = small()`, so in `[-1, 1]`), row
/// by row; token ids and labels `below(vocab)`. Errors: as
/// [`Config::validate`].
pub fn random_example(cfg: &Config, n: usize, seed: u64) -> Result<Example, SpecError> {
    cfg.validate()?;
    let mut rng = SplitMix64::new(seed);
    let dense = |rng: &mut SplitMix64| {
        let mut m = Mat::zeros(n, cfg.d_model);
        for i in 0..n {
            for j in 0..cfg.d_model {
                m[(i, j)] = rng.small() as f64 / 32.0;
            }
        }
        m
    };
    let input = match cfg.input {
        InputKind::Features => Input::Features(dense(&mut rng)),
        InputKind::Tokens => Input::Tokens((0..n).map(|_| rng.below(cfg.vocab)).collect()),
    };
    let targets = match cfg.loss {
        LossKind::Mse => Targets::Values(dense(&mut rng)),
        LossKind::CrossEntropy => Targets::Labels((0..n).map(|_| rng.below(cfg.vocab)).collect()),
    };
    Ok(Example { input, targets })
}

/// Checks the example against `cfg` and the parameters against
/// [`parameter_shapes`] (every name present, none extra, shapes equal, every
/// entry finite).
fn validate(cfg: &Config, params: &Params, ex: &Example, prec: u32) -> Res<()> {
    check_prec(prec)?;
    let shapes = parameter_shapes(cfg)?;
    let n = ex.n();
    if n == 0 {
        return Err(shape_err("the example has no tokens (n = 0)".into()));
    }
    let d = cfg.d_model;
    let in_vocab = |what: &str, ids: &[usize]| match ids.iter().position(|&t| t >= cfg.vocab) {
        Some(i) => Err(shape_err(format!(
            "{what}[{i}] = {} is not below vocab = {}",
            ids[i], cfg.vocab
        ))),
        None => Ok(()),
    };
    match (&ex.input, cfg.input) {
        (Input::Features(x), InputKind::Features) => {
            expect_shape("X", x, Some(n), Some(d))?;
            lift::<Interval>("X", x, prec)?;
        }
        (Input::Tokens(t), InputKind::Tokens) => in_vocab("tokens", t)?,
        _ => {
            return Err(shape_err(format!(
                "the example's input does not match the config's {:?}",
                cfg.input
            )))
        }
    }
    match (&ex.targets, cfg.loss) {
        (Targets::Values(y), LossKind::Mse) => {
            expect_shape("Y", y, Some(n), Some(d))?;
            lift::<Interval>("Y", y, prec)?;
        }
        (Targets::Labels(y), LossKind::CrossEntropy) => {
            if y.len() != n {
                return Err(shape_err(format!("{} labels for {n} tokens", y.len())));
            }
            in_vocab("labels", y)?;
        }
        _ => {
            return Err(shape_err(format!(
                "the example's targets do not match the config's {:?} loss",
                cfg.loss
            )))
        }
    }
    for s in &shapes {
        let m = params
            .get(&s.name)
            .ok_or_else(|| shape_err(format!("parameter {} is missing", s.name)))?;
        expect_shape(&s.name, m, Some(s.rows), Some(s.cols))?;
        lift::<Interval>(&s.name, m, prec)?;
    }
    if let Some(extra) = params
        .keys()
        .find(|k| !shapes.iter().any(|s| &s.name == *k))
    {
        return Err(shape_err(format!(
            "parameter {extra} is not part of this configuration"
        )));
    }
    Ok(())
}

/// [`Field`] plus what the model needs beyond it; implemented by [`Interval`]
/// and [`Dual`] (the MPFR reference and its oracle) and by [`Ball`] (the fast
/// double-double enclosure for large `n`).
pub trait Num: Field + Send + Sync {
    /// A constant (no dependence on any seeded input).
    fn constant(x: Interval) -> Self;
    /// The midpoint of the value as an `f64` (to choose a softmax shift).
    fn mid_f64(&self) -> f64;
    /// A point of the value (exact, no width, no derivative): a softmax shift.
    fn midpoint(&self) -> Self;
    /// Square root; `None` when no point of the value is `>= 0` (or, for a
    /// dual number, when the value may be `0`, where the derivative is
    /// undefined).
    fn sqrt(&self) -> Option<Self>;
    /// Natural logarithm; `None` when no point of the value is positive.
    fn ln(&self) -> Option<Self>;
    /// `max(x, 0)` with derivative `0` at `0`.
    fn relu(&self) -> Self;
    /// The set of `relu'(x)` over the value (`relu'(0) = 0`): `1`, `0` or `[0, 1]`.
    fn relu_slope(&self) -> Self;
}

/// The set `{relu'(x) : x in u}` with `relu'(0) = 0`: `[1, 1]`, `[0, 0]` or
/// `[0, 1]`.
fn relu_slope(u: &Interval) -> Interval {
    let prec = u.prec();
    if *u.lo() > 0 {
        Interval::one(prec)
    } else if *u.hi() <= 0 {
        Interval::zero(prec)
    } else {
        Interval::zero(prec).hull(&Interval::one(prec))
    }
}

impl Num for Interval {
    fn constant(x: Interval) -> Self {
        x
    }
    fn mid_f64(&self) -> f64 {
        Interval::mid_f64(self)
    }
    fn midpoint(&self) -> Self {
        Interval::point(self.mid())
    }
    fn sqrt(&self) -> Option<Self> {
        Interval::sqrt(self)
    }
    fn ln(&self) -> Option<Self> {
        Interval::ln(self)
    }
    fn relu(&self) -> Self {
        self.max(&Interval::zero(self.prec()))
    }
    fn relu_slope(&self) -> Self {
        relu_slope(self)
    }
}

impl Num for Dual {
    fn constant(x: Interval) -> Self {
        Dual::constant(x)
    }
    fn mid_f64(&self) -> f64 {
        self.val.mid_f64()
    }
    fn midpoint(&self) -> Self {
        Dual::constant(Interval::point(self.val.mid()))
    }
    fn sqrt(&self) -> Option<Self> {
        // (sqrt u)' = u' / (2 sqrt u), defined only when u is bounded away from 0.
        if *self.val.lo() <= 0 {
            return None;
        }
        let val = self.val.sqrt()?;
        let der = &self.der / (&val + &val);
        Some(Dual { val, der })
    }
    fn ln(&self) -> Option<Self> {
        Dual::ln(self)
    }
    fn relu(&self) -> Self {
        let slope = relu_slope(&self.val);
        Dual {
            val: self.val.max(&Interval::zero(self.val.prec())),
            der: if slope.is_point() {
                &slope * &self.der
            } else {
                // Either slope: the derivative is u' or 0.
                self.der.hull(&Interval::zero(self.der.prec()))
            },
        }
    }
    fn relu_slope(&self) -> Self {
        Dual::constant(relu_slope(&self.val))
    }
}

impl Num for Ball {
    fn constant(x: Interval) -> Self {
        // A constant's enclosure is bounded (it comes from a rational or from MPFR's
        // pi); an unbounded one would have failed earlier, so the whole line's
        // stand-in (an infinite radius) only keeps the type total.
        Ball::from_interval(&x).unwrap_or_else(Ball::whole)
    }
    fn mid_f64(&self) -> f64 {
        Ball::mid_f64(self)
    }
    fn midpoint(&self) -> Self {
        Ball::midpoint(self)
    }
    fn sqrt(&self) -> Option<Self> {
        Ball::sqrt(self)
    }
    fn ln(&self) -> Option<Self> {
        Ball::ln(self)
    }
    fn relu(&self) -> Self {
        Ball::relu(self)
    }
    fn relu_slope(&self) -> Self {
        if self.lo_f64() > 0.0 {
            Ball::ONE
        } else if self.hi_f64() <= 0.0 {
            Ball::ZERO
        } else {
            // [0, 1].
            Ball::ONE.scale_pow2(-1).widened(0.5)
        }
    }
}

/// The constants of the model as enclosures in `T` (lifted once from MPFR
/// enclosures at the working precision).
struct Consts<T> {
    prec: u32,
    /// `1e-5 = 1/100000` (layer norm).
    eps: T,
    /// `sqrt(2/pi)` (GELU).
    gelu_c: T,
    /// `0.044715` (GELU).
    gelu_k: T,
    /// `1 / sqrt(d_head)`.
    tau: T,
    /// `1 / n`.
    inv_n: T,
    /// `1/2` and `3` (GELU and its slope).
    half: T,
    three: T,
}

impl<T: Num> Consts<T> {
    fn new(cfg: &Config, n: usize, prec: u32) -> Res<Consts<T>> {
        let rat = |num: u64, den: u64| Interval::from_rational(&Rational::from((num, den)), prec);
        let pi = |round| Interval::point(Float::with_val_round(prec, Constant::Pi, round).0);
        let pi = pi(Round::Down).hull(&pi(Round::Up));
        let sqrt = |x: &Interval| {
            x.sqrt()
                .ok_or_else(|| degenerate("square root of a negative"))
        };
        let gelu_c = sqrt(&(Interval::from_f64(2.0, prec) / pi))?;
        let tau = sqrt(&Interval::from_f64(cfg.d_head() as f64, prec))?.recip();
        Ok(Consts {
            prec,
            eps: T::constant(rat(1, 100_000)),
            gelu_c: T::constant(gelu_c),
            gelu_k: T::constant(rat(44_715, 1_000_000)),
            tau: T::constant(tau),
            inv_n: T::constant(rat(1, n as u64)),
            half: T::constant(rat(1, 2)),
            three: T::constant(rat(3, 1)),
        })
    }
}

/// Lifted parameters by name.
type Weights<T> = BTreeMap<String, Mat<T>>;

/// Looks a lifted parameter up (present after [`validate`]; an error, not a
/// panic, otherwise).
fn param<'a, T>(w: &'a Weights<T>, name: &str) -> Res<&'a Mat<T>> {
    w.get(name)
        .ok_or_else(|| shape_err(format!("parameter {name} is missing")))
}

/// One layer norm's record: the normalised rows `xhat`, the reciprocal
/// standard deviations `rstd_i = 1/sqrt(var_i + eps)`, and the output.
struct LnTrace<T> {
    xhat: Mat<T>,
    rstd: Vec<T>,
    out: Mat<T>,
}

/// The sum of `terms`, left to right from zero.
fn sum<T: Field>(terms: impl Iterator<Item = T>, prec: u32) -> T {
    terms.fold(T::zero(prec), |a, x| a.plus(&x))
}

/// `LN(x)` row by row (docs/math.md §7): `xhat = (x - mean) rstd`, `out = xhat o
/// gain + bias`.
fn layer_norm<T: Num>(x: &Mat<T>, gain: &Mat<T>, bias: &Mat<T>, k: &Consts<T>) -> Res<LnTrace<T>> {
    let (n, d) = x.shape();
    let prec = k.prec;
    let inv_d = T::from_rational(&Rational::from((1, d as u64)), prec);
    let mut xhat = zeros::<T>(n, d, prec);
    let mut rstd = Vec::with_capacity(n);
    for i in 0..n {
        let mean = sum((0..d).map(|j| x[(i, j)].clone()), prec).times(&inv_d);
        let dev: Vec<T> = (0..d).map(|j| x[(i, j)].minus(&mean)).collect();
        let ss = sum(dev.iter().map(|v| v.times(v)), prec);
        let r = ss
            .times(&inv_d)
            .plus(&k.eps)
            .sqrt()
            .and_then(|s| s.recip())
            .ok_or_else(|| degenerate("layer norm: var + eps not bounded away from 0"))?;
        for (j, v) in dev.iter().enumerate() {
            xhat[(i, j)] = v.times(&r);
        }
        rstd.push(r);
    }
    let out = Mat::from_fn(n, d, |i, j| {
        xhat[(i, j)].times(&gain[(0, j)]).plus(&bias[(0, j)])
    });
    Ok(LnTrace { xhat, rstd, out })
}

/// The layer norm named `prefix` when layer norm is on, else `None` (identity).
fn maybe_ln<T: Num>(
    cfg: &Config,
    w: &Weights<T>,
    prefix: &str,
    x: &Mat<T>,
    k: &Consts<T>,
) -> Res<Option<LnTrace<T>>> {
    if !cfg.layer_norm {
        return Ok(None);
    }
    let gain = param(w, &format!("{prefix}.gain"))?;
    let bias = param(w, &format!("{prefix}.bias"))?;
    layer_norm(x, gain, bias, k).map(Some)
}

/// A softmax row's pieces over the entries `zs`: the shift `c` (a *point*, the
/// largest midpoint of the row), `e_j = exp(z_j - c)` and `inv = 1 / sum_j e_j`,
/// so `p_j = e_j inv` (the shift is exact in real arithmetic).
fn softmax_parts<T: Num>(zs: &[T], prec: u32) -> Res<(T, Vec<T>, T)> {
    let c = zs
        .iter()
        .reduce(|a, b| if b.mid_f64() > a.mid_f64() { b } else { a })
        .ok_or_else(|| degenerate("softmax of an empty row"))?
        .midpoint();
    let es = zs
        .iter()
        .map(|z| {
            z.minus(&c)
                .exp()
                .ok_or_else(|| degenerate("exp unavailable"))
        })
        .collect::<Res<Vec<T>>>()?;
    let inv = sum(es.iter().cloned(), prec)
        .recip()
        .ok_or_else(|| degenerate("softmax normaliser not bounded away from 0"))?;
    Ok((c, es, inv))
}

/// A softmax row: `p_j = exp(z_j - c) / sum_j exp(z_j - c)` over the entries
/// `zs`, and `lse = c + ln sum_j exp(z_j - c)`.
fn softmax_row<T: Num>(zs: &[T], prec: u32) -> Res<(Vec<T>, T)> {
    let (c, es, inv) = softmax_parts(zs, prec)?;
    let lse = sum(es.iter().cloned(), prec)
        .ln()
        .ok_or_else(|| degenerate("softmax normaliser not positive"))?
        .plus(&c);
    Ok((es.iter().map(|e| e.times(&inv)).collect(), lse))
}

/// `act(u)` entry-wise.
fn activate<T: Num>(act: Activation, u: &T, k: &Consts<T>) -> Res<T> {
    match act {
        Activation::Relu => Ok(u.relu()),
        Activation::Gelu => {
            let prec = k.prec;
            let inner = u.plus(&k.gelu_k.times(&u.times(u).times(u)));
            let t = tanh(&k.gelu_c.times(&inner), prec)?;
            Ok(k.half.times(u).times(&T::one(prec).plus(&t)))
        }
    }
}

/// One head's softmax record: per query row the shift `c_i` and `1 / sum_j
/// exp(s_ij - c_i)`, from which the backward recomputes the row of `P_h`
/// (never stored: `n x n` per head would not fit at the sizes [`Ball`] reaches).
struct HeadTrace<T> {
    shift: Vec<T>,
    inv: Vec<T>,
}

/// The columns `c0 .. c0 + dh` of one head, and whether the mask is causal.
#[derive(Clone, Copy)]
struct HeadCols {
    c0: usize,
    dh: usize,
    causal: bool,
}

impl HeadCols {
    /// The keys row `i` sees (top-left causal: `0..=i`).
    fn keys(&self, i: usize, n: usize) -> usize {
        if self.causal {
            i + 1
        } else {
            n
        }
    }

    /// Row `i`'s scores `tau (q_i . k_j)` over the head's columns, `j < keys`.
    fn scores<T: Num>(&self, q: &Mat<T>, kk: &Mat<T>, tau: &T, i: usize, prec: u32) -> Vec<T> {
        (0..self.keys(i, kk.nrows()))
            .map(|j| {
                let cs = self.c0..self.c0 + self.dh;
                tau.times(&sum(cs.map(|c| q[(i, c)].times(&kk[(j, c)])), prec))
            })
            .collect()
    }

    /// Row `i` of `P_h` recomputed from the record: `exp(s_ij - c_i) inv_i`.
    fn probs<T: Num>(
        &self,
        (q, kk): (&Mat<T>, &Mat<T>),
        tau: &T,
        rec: &HeadTrace<T>,
        i: usize,
        prec: u32,
    ) -> Res<Vec<T>> {
        self.scores(q, kk, tau, i, prec)
            .iter()
            .map(|s| {
                s.minus(&rec.shift[i])
                    .exp()
                    .map(|e| e.times(&rec.inv[i]))
                    .ok_or_else(|| degenerate("exp unavailable"))
            })
            .collect()
    }
}

/// Rows `0..n` cut into at most this many contiguous blocks for the parallel
/// backward (a fixed count, so the sums, and the enclosures, do not depend on the
/// number of threads).
const ROW_BLOCKS: usize = 32;

/// The row blocks of [`ROW_BLOCKS`].
fn row_blocks(n: usize) -> Vec<std::ops::Range<usize>> {
    let b = n.clamp(1, ROW_BLOCKS);
    (0..b).map(|t| t * n / b..(t + 1) * n / b).collect()
}

/// Everything one layer's forward computes that its backward needs.
struct LayerTrace<T> {
    ln1: Option<LnTrace<T>>,
    /// `LN1(T_{l-1})`.
    g: Mat<T>,
    q: Mat<T>,
    k: Mat<T>,
    v: Mat<T>,
    /// Per head, the softmax record of `P_h` (causal entries are `0`).
    softmax: Vec<HeadTrace<T>>,
    /// `[O_1, ..., O_h]`, `n x d_model`.
    heads: Mat<T>,
    /// `Z_l`.
    z: Mat<T>,
    ln2: Option<LnTrace<T>>,
    /// `LN2(Z_l)`.
    h: Mat<T>,
    /// `U = H W1 + b1`.
    u: Mat<T>,
    /// `act(U)`.
    a: Mat<T>,
    /// `T_l`.
    out: Mat<T>,
}

/// The whole forward pass's record.
struct Trace<T> {
    t0: Mat<T>,
    layers: Vec<LayerTrace<T>>,
    /// Cross-entropy only: `LNf`, its output (`T_m` when layer norm is off),
    /// the logits and their row softmax.
    lnf: Option<LnTrace<T>>,
    hf: Option<Mat<T>>,
    logits: Option<Mat<T>>,
    probs: Option<Mat<T>>,
    loss: T,
}

/// `x + 1 b` (a row vector added to every row).
fn add_row<T: Num>(x: &Mat<T>, b: &Mat<T>) -> Mat<T> {
    Mat::from_fn(x.nrows(), x.ncols(), |i, j| x[(i, j)].plus(&b[(0, j)]))
}

/// Multi-head attention of one layer on `g` (docs/math.md §2 per head, ML24
/// Appendix K): returns `Q, K, V`, the heads' softmax records and
/// `[O_1, ..., O_h]`. Rows run in parallel (each row's arithmetic is the same
/// whatever the thread count).
#[allow(clippy::type_complexity)]
fn attention<T: Num>(
    cfg: &Config,
    w: &Weights<T>,
    l: usize,
    g: &Mat<T>,
    k: &Consts<T>,
) -> Res<(Mat<T>, Mat<T>, Mat<T>, Vec<HeadTrace<T>>, Mat<T>)> {
    use rayon::prelude::*;
    let prec = k.prec;
    let proj = |name: &str| matmul(g, param(w, &format!("layers.{l}.attn.{name}"))?, prec);
    let (q, kk, v) = (proj("wq")?, proj("wk")?, proj("wv")?);
    let (n, dh) = (g.nrows(), cfg.d_head());
    let mut heads = zeros::<T>(n, cfg.d_model, prec);
    let mut records = Vec::with_capacity(cfg.n_heads);
    for hd in 0..cfg.n_heads {
        let cols = HeadCols {
            c0: hd * dh,
            dh,
            causal: cfg.causal,
        };
        let rows = (0..n)
            .into_par_iter()
            .map(|i| {
                let (c, es, inv) = softmax_parts(&cols.scores(&q, &kk, &k.tau, i, prec), prec)?;
                let p: Vec<T> = es.iter().map(|e| e.times(&inv)).collect();
                let o: Vec<T> = (cols.c0..cols.c0 + dh)
                    .map(|c| {
                        sum(
                            p.iter().enumerate().map(|(j, pj)| pj.times(&v[(j, c)])),
                            prec,
                        )
                    })
                    .collect();
                Ok((c, inv, o))
            })
            .collect::<Vec<_>>()
            // The first failing row in row order, whatever the scheduling.
            .into_iter()
            .collect::<Res<Vec<_>>>()?;
        let mut rec = HeadTrace {
            shift: Vec::with_capacity(n),
            inv: Vec::with_capacity(n),
        };
        for (i, (c, inv, o)) in rows.into_iter().enumerate() {
            rec.shift.push(c);
            rec.inv.push(inv);
            for (t, x) in o.into_iter().enumerate() {
                heads[(i, cols.c0 + t)] = x;
            }
        }
        records.push(rec);
    }
    Ok((q, kk, v, records, heads))
}

/// The forward pass from `T_0`, recording everything (docs/math.md §7).
fn run<T: Num>(
    cfg: &Config,
    w: &Weights<T>,
    t0: Mat<T>,
    targets: &Targets,
    k: &Consts<T>,
) -> Res<Trace<T>> {
    let prec = k.prec;
    let mut layers = Vec::with_capacity(cfg.n_layers);
    let mut t = t0.clone();
    for l in 0..cfg.n_layers {
        let p = |name: &str| param(w, &format!("layers.{l}.{name}"));
        let ln1 = maybe_ln(cfg, w, &format!("layers.{l}.ln1"), &t, k)?;
        let g = ln1.as_ref().map_or_else(|| t.clone(), |ln| ln.out.clone());
        let (q, kk, v, softmax, heads) = attention(cfg, w, l, &g, k)?;
        let z = add(&t, &matmul(&heads, p("attn.wo")?, prec)?)?;
        let ln2 = maybe_ln(cfg, w, &format!("layers.{l}.ln2"), &z, k)?;
        let h = ln2.as_ref().map_or_else(|| z.clone(), |ln| ln.out.clone());
        let u = add_row(&matmul(&h, p("mlp.w1")?, prec)?, p("mlp.b1")?);
        let mut a = Vec::with_capacity(u.len());
        for x in u.iter() {
            a.push(activate(cfg.activation, x, k)?);
        }
        let a = Mat::from_vec(u.nrows(), u.ncols(), a);
        let out = add(&z, &add_row(&matmul(&a, p("mlp.w2")?, prec)?, p("mlp.b2")?))?;
        t = out.clone();
        layers.push(LayerTrace {
            ln1,
            g,
            q,
            k: kk,
            v,
            softmax,
            heads,
            z,
            ln2,
            h,
            u,
            a,
            out,
        });
    }
    let mut trace = Trace {
        t0,
        layers,
        lnf: None,
        hf: None,
        logits: None,
        probs: None,
        loss: T::zero(prec),
    };
    match targets {
        Targets::Values(y) => {
            let y = lift::<T>("Y", y, prec)?;
            let r = sub(&t, &y)?;
            let ss = sum(r.iter().map(|x| x.times(x)), prec);
            trace.loss = ss.times(&k.half).times(&k.inv_n);
        }
        Targets::Labels(y) => {
            let lnf = maybe_ln(cfg, w, "lnf", &t, k)?;
            let hf = lnf.as_ref().map_or_else(|| t.clone(), |ln| ln.out.clone());
            let logits = matmul(&hf, param(w, "head.w_out")?, prec)?;
            let mut probs = zeros::<T>(logits.nrows(), logits.ncols(), prec);
            let mut total = T::zero(prec);
            for (i, &yi) in y.iter().enumerate() {
                let row: Vec<T> = logits.row(i).iter().cloned().collect();
                let (p, lse) = softmax_row(&row, prec)?;
                total = total.plus(&lse.minus(&logits[(i, yi)]));
                for (j, pj) in p.into_iter().enumerate() {
                    probs[(i, j)] = pj;
                }
            }
            trace.loss = total.times(&k.inv_n);
            trace.lnf = lnf;
            trace.hf = Some(hf);
            trace.logits = Some(logits);
            trace.probs = Some(probs);
        }
    }
    Ok(trace)
}

/// The checked inputs lifted to `T` and the forward pass over them: the
/// common start of [`forward`] and the gradients.
fn trace_in<T: Num>(
    cfg: &Config,
    params: &Params,
    ex: &Example,
    prec: u32,
) -> Res<(Consts<T>, Weights<T>, Trace<T>)> {
    validate(cfg, params, ex, prec)?;
    let k = Consts::new(cfg, ex.n(), prec)?;
    let (w, x) = lift_all::<T>(params, ex, prec)?;
    let t0 = first_stream(&w, x.as_ref(), ex)?;
    let tr = run(cfg, &w, t0, &ex.targets, &k)?;
    Ok((k, w, tr))
}

/// The parameters lifted to `T`, and `T_0`.
fn lift_all<T: Num>(params: &Params, ex: &Example, prec: u32) -> Res<(Weights<T>, Option<Mat<T>>)> {
    let mut w = BTreeMap::new();
    for (name, m) in params {
        w.insert(name.clone(), lift::<T>(name, m, prec)?);
    }
    let x = match &ex.input {
        Input::Features(x) => Some(lift::<T>("X", x, prec)?),
        Input::Tokens(_) => None,
    };
    Ok((w, x))
}

/// `T_0`: `X` itself, or the embedding rows of the tokens.
fn first_stream<T: Num>(w: &Weights<T>, x: Option<&Mat<T>>, ex: &Example) -> Res<Mat<T>> {
    match (&ex.input, x) {
        (Input::Tokens(t), _) => {
            let e = param(w, "embedding")?;
            Ok(Mat::from_fn(t.len(), e.ncols(), |i, j| {
                e[(t[i], j)].clone()
            }))
        }
        (Input::Features(_), Some(x)) => Ok(x.clone()),
        (Input::Features(_), None) => Err(shape_err("feature input not lifted".into())),
    }
}

/// Enclosures of the forward pass.
#[derive(Clone, Debug, PartialEq)]
pub struct Forward {
    /// The loss `L`.
    pub loss: Interval,
    /// The residual streams `T_0, T_1, ..., T_m` (`m + 1` matrices, `n x d_model`).
    pub t: Vec<Mat<Interval>>,
    /// The post-attention streams `Z_1, ..., Z_m`.
    pub z: Vec<Mat<Interval>>,
    /// Cross-entropy only: the logits `LNf(T_m) W_out` (`n x vocab`).
    pub logits: Option<Mat<Interval>>,
}

impl Forward {
    /// `T_m`, the model's output (the last of `t`; `None` only for a
    /// hand-built value with an empty `t`).
    pub fn output(&self) -> Option<&Mat<Interval>> {
        self.t.last()
    }
}

/// Enclosures of `L`, of every residual stream `T_l` (`T_m` the output), of
/// every `Z_l` and of the logits, at `prec` bits (docs/math.md §7).
///
/// Errors: [`SpecError::ShapeMismatch`] for a bad configuration, a missing,
/// extra or misshapen parameter, an input or targets of the wrong kind or
/// shape, `n = 0`, or a token or label `>= vocab`; [`SpecError::NonFinite`]
/// for a NaN or infinite entry; [`SpecError::InvalidPrecision`];
/// [`SpecError::Degenerate`] if a normaliser's enclosure is not bounded away
/// from zero (only with enclosures far too wide to be useful).
pub fn forward(
    cfg: &Config,
    params: &Params,
    ex: &Example,
    prec: u32,
) -> Result<Forward, SpecError> {
    let (_, _, tr) = trace_in::<Interval>(cfg, params, ex, prec)?;
    let mut t = vec![tr.t0];
    let mut z = Vec::with_capacity(tr.layers.len());
    for l in tr.layers {
        t.push(l.out);
        z.push(l.z);
    }
    Ok(Forward {
        loss: tr.loss,
        t,
        z,
        logits: tr.logits,
    })
}

/// Column sums as a `1 x cols` matrix (the gradient of a bias `1 b`).
fn col_sums<T: Field>(m: &Mat<T>, prec: u32) -> Mat<T> {
    Mat::from_fn(1, m.ncols(), |_, j| {
        sum((0..m.nrows()).map(|i| m[(i, j)].clone()), prec)
    })
}

/// `x^T y`.
fn tmul<T: Field>(x: &Mat<T>, y: &Mat<T>, prec: u32) -> Res<Mat<T>> {
    matmul(&x.transpose(), y, prec)
}

/// `x y^T`.
fn mult<T: Field>(x: &Mat<T>, y: &Mat<T>, prec: u32) -> Res<Mat<T>> {
    matmul(x, &y.transpose(), prec)
}

/// Backward of a layer norm (when on): given `dy = dL/dout`, records
/// `grad.{prefix}.gain = 1^T (dy o xhat)` and `grad.{prefix}.bias = 1^T dy`,
/// and returns `dL/dx` row by row,
/// `dx = rstd (g - mean(g) - xhat mean(g o xhat))` with `g = dy o gain`.
/// When layer norm is off, `dx = dy`.
fn ln_backward<T: Num>(
    ln: Option<&LnTrace<T>>,
    w: &Weights<T>,
    prefix: &str,
    dy: Mat<T>,
    grads: &mut BTreeMap<String, Mat<T>>,
    prec: u32,
) -> Res<Mat<T>> {
    let Some(ln) = ln else { return Ok(dy) };
    let gain = param(w, &format!("{prefix}.gain"))?;
    grads.insert(
        format!("grad.{prefix}.gain"),
        col_sums(&hadamard(&dy, &ln.xhat)?, prec),
    );
    grads.insert(format!("grad.{prefix}.bias"), col_sums(&dy, prec));
    let (n, d) = dy.shape();
    let inv_d = T::from_rational(&Rational::from((1, d as u64)), prec);
    let mut dx = zeros::<T>(n, d, prec);
    for i in 0..n {
        let g: Vec<T> = (0..d).map(|j| dy[(i, j)].times(&gain[(0, j)])).collect();
        let mean_g = sum(g.iter().cloned(), prec).times(&inv_d);
        let mean_gx = sum(
            g.iter()
                .enumerate()
                .map(|(j, gj)| gj.times(&ln.xhat[(i, j)])),
            prec,
        )
        .times(&inv_d);
        for (j, gj) in g.iter().enumerate() {
            let centred = gj.minus(&mean_g).minus(&ln.xhat[(i, j)].times(&mean_gx));
            dx[(i, j)] = ln.rstd[i].times(&centred);
        }
    }
    Ok(dx)
}

/// `act'(u)` entry-wise. GELU:
/// `0.5 (1 + t) + 0.5 x (1 - t^2) c (1 + 3 k x^2)` with
/// `t = tanh(c (x + k x^3))`, `c = sqrt(2/pi)`, `k = 0.044715`.
fn activation_slope<T: Num>(act: Activation, u: &T, k: &Consts<T>) -> Res<T> {
    let prec = k.prec;
    match act {
        Activation::Relu => Ok(u.relu_slope()),
        Activation::Gelu => {
            let one = T::one(prec);
            let x2 = u.times(u);
            let t = tanh(
                &k.gelu_c.times(&u.plus(&k.gelu_k.times(&x2).times(u))),
                prec,
            )?;
            let first = k.half.times(&one.plus(&t));
            let sech2 = one.minus(&t.times(&t));
            let inner = k
                .gelu_c
                .times(&one.plus(&k.three.times(&k.gelu_k).times(&x2)));
            Ok(first.plus(&k.half.times(u).times(&sech2).times(&inner)))
        }
    }
}

/// One head's attention backward (docs/math.md §2.3), streamed row by row with `P_h`
/// recomputed from its softmax record: `dV = P^T dO`, `dP = dO V^T`,
/// `delta = rowsum(dO o O)`, `dS = P o (dP - delta 1^T)`, `dQ = tau dS K`,
/// `dK = tau dS^T Q`. Row blocks ([`row_blocks`]) run in parallel; each keeps its
/// own partial `dS^T Q` and `P^T dO`, summed in block order. Returns the head's
/// `(dQ, dK, dV)`, each `n x d_head`.
#[allow(clippy::too_many_arguments)]
fn head_backward<T: Num>(
    cols: HeadCols,
    lt: &LayerTrace<T>,
    rec: &HeadTrace<T>,
    dheads: &Mat<T>,
    k: &Consts<T>,
) -> Res<(Mat<T>, Mat<T>, Mat<T>)> {
    use rayon::prelude::*;
    let (prec, n, dh, c0) = (k.prec, lt.g.nrows(), cols.dh, cols.c0);
    let block = |rows: std::ops::Range<usize>| -> Res<(Vec<T>, Vec<T>, Vec<T>)> {
        let (mut dq, mut dst_q, mut pt_do) = (
            Vec::with_capacity(rows.len() * dh),
            vec![T::zero(prec); n * dh],
            vec![T::zero(prec); n * dh],
        );
        for i in rows {
            let p = cols.probs((&lt.q, &lt.k), &k.tau, rec, i, prec)?;
            let d_o: Vec<T> = (c0..c0 + dh).map(|c| dheads[(i, c)].clone()).collect();
            let delta = sum(
                d_o.iter()
                    .enumerate()
                    .map(|(t, g)| g.times(&lt.heads[(i, c0 + t)])),
                prec,
            );
            let ds: Vec<T> = p
                .iter()
                .enumerate()
                .map(|(j, pij)| {
                    let dp = sum(
                        d_o.iter()
                            .enumerate()
                            .map(|(t, g)| g.times(&lt.v[(j, c0 + t)])),
                        prec,
                    );
                    pij.times(&dp.minus(&delta))
                })
                .collect();
            for t in 0..dh {
                let acc = sum(
                    ds.iter()
                        .enumerate()
                        .map(|(j, s)| s.times(&lt.k[(j, c0 + t)])),
                    prec,
                );
                dq.push(k.tau.times(&acc));
            }
            for (j, (s, pij)) in ds.iter().zip(&p).enumerate() {
                for (t, g) in d_o.iter().enumerate() {
                    let e = j * dh + t;
                    dst_q[e] = dst_q[e].plus(&s.times(&lt.q[(i, c0 + t)]));
                    pt_do[e] = pt_do[e].plus(&pij.times(g));
                }
            }
        }
        Ok((dq, dst_q, pt_do))
    };
    let parts = row_blocks(n)
        .into_par_iter()
        .map(block)
        .collect::<Vec<_>>()
        .into_iter()
        .collect::<Res<Vec<_>>>()?;
    let mut dq = Vec::with_capacity(n * dh);
    let (mut dst_q, mut pt_do) = (vec![T::zero(prec); n * dh], vec![T::zero(prec); n * dh]);
    for (q_rows, a, b) in parts {
        dq.extend(q_rows);
        for e in 0..n * dh {
            dst_q[e] = dst_q[e].plus(&a[e]);
            pt_do[e] = pt_do[e].plus(&b[e]);
        }
    }
    let rows = |v: Vec<T>| Mat::from_row_iterator(n, dh, v);
    let dk = scale(&k.tau, &rows(dst_q));
    Ok((rows(dq), dk, rows(pt_do)))
}

/// Backward of one layer (docs/math.md §7.2 and §2.3; ML24 Lemmas H.1/H.2 for the MLP,
/// J.3 for the residuals, K.2 for the heads): given `dT = dL/dT_l`, records
/// this layer's parameter gradients and returns `dL/dT_{l-1}`.
fn layer_backward<T: Num>(
    cfg: &Config,
    w: &Weights<T>,
    l: usize,
    lt: &LayerTrace<T>,
    dt: Mat<T>,
    grads: &mut BTreeMap<String, Mat<T>>,
    k: &Consts<T>,
) -> Res<Mat<T>> {
    let prec = k.prec;
    let p = |name: &str| param(w, &format!("layers.{l}.{name}"));
    let mut put = |name: &str, m: Mat<T>| {
        grads.insert(format!("grad.layers.{l}.{name}"), m);
    };
    // MLP: T = Z + act(U) W2 + b2, U = H W1 + b1.
    put("mlp.b2", col_sums(&dt, prec));
    put("mlp.w2", tmul(&lt.a, &dt, prec)?);
    let da = mult(&dt, p("mlp.w2")?, prec)?;
    let mut slope = Vec::with_capacity(lt.u.len());
    for x in lt.u.iter() {
        slope.push(activation_slope(cfg.activation, x, k)?);
    }
    let du = hadamard(&da, &Mat::from_vec(lt.u.nrows(), lt.u.ncols(), slope))?;
    put("mlp.w1", tmul(&lt.h, &du, prec)?);
    put("mlp.b1", col_sums(&du, prec));
    let dh = mult(&du, p("mlp.w1")?, prec)?;
    let dz_mlp = ln_backward(
        lt.ln2.as_ref(),
        w,
        &format!("layers.{l}.ln2"),
        dh,
        grads,
        prec,
    )?;
    let dz = add(&dt, &dz_mlp)?;
    // Attention: Z = T + [O_1..O_h] Wo.
    grads.insert(
        format!("grad.layers.{l}.attn.wo"),
        tmul(&lt.heads, &dz, prec)?,
    );
    let dheads = mult(&dz, p("attn.wo")?, prec)?;
    let (n, dh_) = (lt.g.nrows(), cfg.d_head());
    let mut dq = zeros::<T>(n, cfg.d_model, prec);
    let mut dk = dq.clone();
    let mut dv = dq.clone();
    for (hd, rec) in lt.softmax.iter().enumerate() {
        let cols = HeadCols {
            c0: hd * dh_,
            dh: dh_,
            causal: cfg.causal,
        };
        let (dqh, dkh, dvh) = head_backward(cols, lt, rec, &dheads, k)?;
        dq.view_mut((0, cols.c0), (n, dh_)).copy_from(&dqh);
        dk.view_mut((0, cols.c0), (n, dh_)).copy_from(&dkh);
        dv.view_mut((0, cols.c0), (n, dh_)).copy_from(&dvh);
    }
    let mut dg = zeros::<T>(n, cfg.d_model, prec);
    for (name, d) in [("wq", &dq), ("wk", &dk), ("wv", &dv)] {
        grads.insert(
            format!("grad.layers.{l}.attn.{name}"),
            tmul(&lt.g, d, prec)?,
        );
        dg = add(&dg, &mult(d, p(&format!("attn.{name}"))?, prec)?)?;
    }
    let dt_attn = ln_backward(
        lt.ln1.as_ref(),
        w,
        &format!("layers.{l}.ln1"),
        dg,
        grads,
        prec,
    )?;
    add(&dz, &dt_attn)
}

/// The loss and the gradient of every parameter (and `X`) in `T` arithmetic:
/// the closed-form backward of [`gradients`], generic over the enclosure type.
fn loss_and_gradients_in<T: Num>(
    cfg: &Config,
    params: &Params,
    ex: &Example,
    prec: u32,
) -> Res<(T, BTreeMap<String, Mat<T>>)> {
    let (k, w, tr) = trace_in::<T>(cfg, params, ex, prec)?;
    let mut grads = BTreeMap::new();
    let t_m = tr.layers.last().map_or(&tr.t0, |l| &l.out);
    let mut dt = match &ex.targets {
        Targets::Values(y) => scale(&k.inv_n, &sub(t_m, &lift::<T>("Y", y, prec)?)?),
        Targets::Labels(y) => {
            let (Some(hf), Some(probs)) = (&tr.hf, &tr.probs) else {
                return Err(degenerate("cross-entropy trace incomplete"));
            };
            let mut dlogits = probs.clone();
            for (i, &yi) in y.iter().enumerate() {
                dlogits[(i, yi)] = dlogits[(i, yi)].minus(&T::one(prec));
            }
            let dlogits = scale(&k.inv_n, &dlogits);
            grads.insert("grad.head.w_out".into(), tmul(hf, &dlogits, prec)?);
            let dhf = mult(&dlogits, param(&w, "head.w_out")?, prec)?;
            ln_backward(tr.lnf.as_ref(), &w, "lnf", dhf, &mut grads, prec)?
        }
    };
    for (l, lt) in tr.layers.iter().enumerate().rev() {
        dt = layer_backward(cfg, &w, l, lt, dt, &mut grads, &k)?;
    }
    match &ex.input {
        Input::Features(_) => {
            grads.insert("grad.x".into(), dt);
        }
        Input::Tokens(t) => {
            let e = param(&w, "embedding")?;
            let mut de = zeros::<T>(e.nrows(), e.ncols(), prec);
            for (i, &tok) in t.iter().enumerate() {
                for j in 0..e.ncols() {
                    de[(tok, j)] = de[(tok, j)].plus(&dt[(i, j)]);
                }
            }
            grads.insert("grad.embedding".into(), de);
        }
    }
    Ok((tr.loss, grads))
}

/// Gradient enclosures of `L` with respect to every parameter (and `X` for a
/// feature input) by the closed-form reverse-mode backward of each piece,
/// applied to the interval forward pass at `prec` bits: the loss
/// (`dT_m = (T_m - Y)/n`, or `d logits = (softmax - onehot)/n`), layer norm,
/// the MLP (ML24 Lemmas H.1, H.2), the residual connections (ML24 Lemma J.3)
/// and multi-head attention through the attention backward of docs/math.md §2.3
/// per head (ML24 Lemma K.2); ML24 Lemma 3.4/C.4 chains the layers. The
/// embedding's gradient adds the rows of `dL/dT_0` of every occurrence of a
/// token. Keys as in [`Gradients`]. Errors: as [`forward`].
pub fn gradients(
    cfg: &Config,
    params: &Params,
    ex: &Example,
    prec: u32,
) -> Result<Gradients, SpecError> {
    loss_and_gradients_in::<Interval>(cfg, params, ex, prec).map(|(_, g)| g)
}

/// The loss and every gradient as double-double [`Ball`]s: the same forward and
/// closed-form backward as [`forward`] and [`gradients`], in about 106-bit
/// arithmetic that carries a rigorous bound of its own rounding (docs/math.md §5.2: an
/// enclosure of the exact real values, like the MPFR one, but fast enough for
/// `n` in the tens of thousands). Attention never stores an `n x n` matrix (each
/// head keeps its rows' softmax shifts and normalisers and recomputes `P_h`), and
/// its rows run in parallel with sums in a fixed order (the result does not
/// depend on the number of threads). The widths are about `2^-106` times the
/// amplification of rounding through the layers (see [`gradients_to_width`]):
/// near `1e-25` relative for two layers of width 16. Errors: as [`gradients`];
/// [`SpecError::Degenerate`] also when a score leaves `exp`'s range (beyond 709
/// above the row's largest) or a normaliser's ball reaches 0.
pub fn loss_and_gradients_ball(
    cfg: &Config,
    params: &Params,
    ex: &Example,
) -> Result<(Ball, BTreeMap<String, Mat<Ball>>), SpecError> {
    loss_and_gradients_in::<Ball>(cfg, params, ex, 256)
}

/// Gradient enclosures by the independent oracle (docs/math.md §5.2): for
/// every entry of every parameter (and of `X` for a feature input), one run of
/// the same generic forward pass as [`forward`] in [`Dual`] arithmetic, seeded
/// on that entry, gives `dL/dθ` as the loss's derivative part. No closed-form
/// gradient is used. Cost: one forward pass per entry (for the sizes of this
/// module, up to some ten thousand passes; meant for tests). Keys and errors
/// as [`gradients`]; additionally [`SpecError::Degenerate`] if a layer norm's
/// variance enclosure is not bounded away from `-eps` (never for finite
/// inputs at useful precision).
pub fn gradients_by_dual_numbers(
    cfg: &Config,
    params: &Params,
    ex: &Example,
    prec: u32,
) -> Result<Gradients, SpecError> {
    validate(cfg, params, ex, prec)?;
    let k = Consts::new(cfg, ex.n(), prec)?;
    let (w, x) = lift_all::<Dual>(params, ex, prec)?;
    let loss_der = |w: &Weights<Dual>, x: Option<&Mat<Dual>>| -> Res<Interval> {
        let t0 = first_stream(w, x, ex)?;
        Ok(run(cfg, w, t0, &ex.targets, &k)?.loss.der)
    };
    let seed = |m: &mut Mat<Dual>, i: usize, j: usize| {
        m[(i, j)] = Dual::variable(m[(i, j)].val.clone());
    };
    let mut grads = Gradients::new();
    for (name, m) in &w {
        let mut g = zeros::<Interval>(m.nrows(), m.ncols(), prec);
        for i in 0..m.nrows() {
            for j in 0..m.ncols() {
                let mut ws = w.clone();
                let ms = ws
                    .get_mut(name)
                    .ok_or_else(|| shape_err(format!("parameter {name} is missing")))?;
                seed(ms, i, j);
                g[(i, j)] = loss_der(&ws, x.as_ref())?;
            }
        }
        grads.insert(format!("grad.{name}"), g);
    }
    if let Some(x) = &x {
        let mut g = zeros::<Interval>(x.nrows(), x.ncols(), prec);
        for i in 0..x.nrows() {
            for j in 0..x.ncols() {
                let mut xs = x.clone();
                seed(&mut xs, i, j);
                g[(i, j)] = loss_der(&w, Some(&xs))?;
            }
        }
        grads.insert("grad.x".into(), g);
    }
    Ok(grads)
}

/// The largest relative width among the matrices of `g`: for each matrix, its
/// widest entry's width divided by its largest magnitude (a matrix whose
/// entries are all points counts as `0`). This is the measure used by
/// [`gradients_to_width`] and by the tests.
pub fn max_relative_width(g: &Gradients) -> f64 {
    g.values()
        .map(|m| {
            let w = m.iter().map(Interval::width_f64).fold(0.0, f64::max);
            let s = m.iter().map(Interval::mag).fold(0.0, f64::max);
            if w == 0.0 {
                0.0
            } else if s > 0.0 {
                w / s
            } else {
                f64::INFINITY
            }
        })
        .fold(0.0, f64::max)
}

/// [`gradients`] at the least precision this search finds that brings
/// [`max_relative_width`] to at most `rel_width`, and that precision.
///
/// Why: inputs are exact, so every width comes from rounding, amplified
/// through the layers by interval arithmetic's absolute-value bounds (roughly
/// the product over the pieces of `|W|` norms, forward and back). The
/// amplification does not depend on the precision, so widths scale as
/// `2^-prec`: at 128 bits they are near `1e-24` relative for `m = 3`,
/// `d_model = 4`, but near `1e-5` for `m = 4`, `d_model = 16`, `n = 32`,
/// where 192 bits give `1e-25`. The search starts at `start_prec`, and after a
/// run that misses the target adds the bits the measured width says are
/// missing, plus 16 (so usually one retry), never fewer than 32.
///
/// Errors: as [`gradients`]; [`SpecError::Degenerate`] when `rel_width` is
/// not a positive finite number, or when the precision would pass
/// `max_prec` (the message gives the width reached).
pub fn gradients_to_width(
    cfg: &Config,
    params: &Params,
    ex: &Example,
    rel_width: f64,
    start_prec: u32,
    max_prec: u32,
) -> Result<(Gradients, u32), SpecError> {
    if !(rel_width.is_finite() && rel_width > 0.0) {
        return Err(degenerate(format!(
            "target relative width {rel_width} is not positive and finite"
        )));
    }
    let mut prec = start_prec;
    loop {
        let g = gradients(cfg, params, ex, prec)?;
        let w = max_relative_width(&g);
        if w <= rel_width {
            return Ok((g, prec));
        }
        let missing = if w.is_finite() {
            (w / rel_width).log2().ceil() as u32
        } else {
            prec
        };
        let next = prec.saturating_add(missing.saturating_add(16).max(32));
        if next > max_prec {
            return Err(degenerate(format!(
                "relative width {w:e} at {prec} bits; reaching {rel_width:e} needs more than \
                 max_prec = {max_prec} bits"
            )));
        }
        prec = next;
    }
}

/// The gradient keys of `cfg`: `grad.<name>` for every parameter of
/// [`parameter_shapes`], plus `grad.x` for a feature input, each with its
/// `(rows, cols)` (sorted by key, as a [`Gradients`] map iterates). `n` is
/// the sequence length (the rows of `grad.x`). Errors: as
/// [`Config::validate`].
pub fn gradient_shapes(cfg: &Config, n: usize) -> Result<Vec<NamedShape>, SpecError> {
    let mut out: Vec<NamedShape> = parameter_shapes(cfg)?
        .into_iter()
        .map(|s| (format!("grad.{}", s.name), (s.rows, s.cols)))
        .collect();
    if cfg.input == InputKind::Features {
        out.push(("grad.x".into(), (n, cfg.d_model)));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relu_slope_covers_the_three_cases() {
        let p = 64;
        let iv = |lo: f64, hi: f64| Interval::from_f64_ends(lo, hi, p).unwrap();
        assert_eq!(relu_slope(&iv(0.5, 1.0)), Interval::one(p));
        assert_eq!(relu_slope(&iv(-1.0, 0.0)), Interval::zero(p));
        assert_eq!(relu_slope(&iv(0.0, 0.0)), Interval::zero(p));
        assert_eq!(relu_slope(&iv(-1.0, 1.0)), iv(0.0, 1.0));
    }

    #[test]
    fn dual_relu_at_zero_has_zero_derivative() {
        let z = Dual::variable(Interval::zero(64));
        assert_eq!(Num::relu(&z).der, Interval::zero(64));
        let pos = Dual::variable(Interval::from_f64(0.25, 64));
        assert_eq!(Num::relu(&pos).der, Interval::one(64));
    }
}
