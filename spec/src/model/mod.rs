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
//! over [`Num`] ([`LemmaScalar`](crate::linalg::LemmaScalar), the lemma modules' arithmetic trait, extended by
//! `sqrt`, `ln` and ReLU), and run in [`Interval`](crate::Interval), [`Dual`](crate::dual::Dual) and [`Ball`](crate::ball::Ball)
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

mod backward;
mod blocks;
mod config;
mod forward;
mod names;
mod num;
mod oracle;
mod random;
mod refine;

pub use backward::{gradients, loss_and_gradients_ball};
pub use config::{
    Activation, Config, Example, Gradients, Input, InputKind, LossKind, NamedShape, Params, Targets,
};
pub use forward::{forward, Forward};
pub use names::{gradient_shapes, parameter_shapes, ParamKind, ParamShape};
pub use num::Num;
pub use oracle::gradients_by_dual_numbers;
pub use random::{random_example, random_parameters, SplitMix64};
pub use refine::{gradients_to_width, max_relative_width};
