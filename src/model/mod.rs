//! A multi-layer pre-norm transformer whose backward runs attention through the exact
//! or the polynomial engine, layer by layer (docs/math.md §7; ML24 Def 1.3, Lemmas 3.4,
//! J.3, K.2).
//!
//! The model, in the row-vector convention `x W + b`:
//!
//! ```text
//! T_0 = X  (n x d_model)   or   E[tokens]  (rows of the embedding)
//! for l = 1..m:
//!     A   = MHA_l(LN1_l(T_{l-1}))      Q = x W_Q, K = x W_K (d_model x h d_qk),
//!                                      V = x W_V (d_model x d_model), split column-wise
//!                                      into h heads (d_qk and d_v = d_model/h columns;
//!                                      d_qk = d_v unless set), causal (top-left) or no
//!                                      mask, out = concat(heads) W_O;
//!                                      dot-product: S = q k^T / sqrt(d_qk);
//!                                      cosine: S = tau q_hat k_hat^T, unit rows,
//!                                      0 < tau <= tau_max (fixed, or min(exp(log_tau),
//!                                      tau_max) learnable per head), so |S| <= tau_max
//!     Z_l = T_{l-1} + A
//!     T_l = Z_l + act(LN2_l(Z_l) W1_l + b1_l) W2_l + b2_l
//! MSE: L = 1/(2n) ||T_m - Y||_F^2
//! CE:  L = mean_i -log softmax(LNf(T_m) W_out)_{i, y_i}
//! LN(x) = (x - mean(x)) / sqrt(var(x) + 1e-5) * gain + bias  (per row, biased var),
//!         or the identity when layer norm is off
//! act = GELU (tanh form) or ReLU
//! ```
//!
//! Modules, one job each: [`config`] (hyper-parameters and metadata), [`params`]
//! (names, shapes, initialiser, loading), [`dense`] (products), [`layer_norm`],
//! [`mlp`], [`engine`] (engine choice and report), [`mha`], [`loss`], [`block`],
//! [`stack`] (the model), [`fixtures`] (the seeded example model of the demo, sweeps and tests), [`sensitivity`] (error propagation through the layers),
//! [`mod@file`] (safetensors in and out).
//!
//! Engines: [`EngineChoice::Exact`], [`EngineChoice::Poly`] or [`EngineChoice::Auto`],
//! one for all layers or one per layer. A layer's engine runs both its attention
//! forward and backward; with the polynomial engine the loss and every downstream
//! activation are those of the approximate forward, and the gradient is ML24's
//! ALTGrad (P~ substituted, docs/math.md §3.5) or the polynomial model's own gradient.
//! [`LayerReport`] records per layer which engine ran, why, and the per-head plan and
//! a priori bounds (docs/math.md §4); [`sensitivity`] propagates those bounds through the
//! layers (docs/math.md §7.3's `sum_l e_l prod_{k<l} kappa_k`, from the actual
//! activations).
//!
//! ```
//! use polyattn::model::{Activation, Batch, EngineChoice, LossKind, Model, ModelConfig,
//!     Source, Target};
//! use polyattn::tensor::Matrix;
//!
//! let cfg = ModelConfig { n_layers: 2, n_heads: 2, d_model: 4, d_ff: 8,
//!     activation: Activation::Gelu, layer_norm: true, causal: true,
//!     loss: LossKind::CrossEntropy, vocab: Some(5), d_qk: None, cosine: None };
//! let model = Model::<f64>::init(cfg, true, 7).unwrap();
//! let batch = Batch { source: Source::Tokens(vec![0, 3, 1]),
//!     target: Target::Labels(vec![3, 1, 4]) };
//! let (loss, g) = model.loss_and_gradients(&batch, &[EngineChoice::Exact]).unwrap();
//! assert!(loss > 0.0);
//! assert_eq!(g.dx.shape(), [3, 4]);
//! ```

pub mod block;
pub mod config;
pub mod dense;
pub mod engine;
pub mod file;
pub mod fixtures;
pub mod layer_norm;
pub mod loss;
pub mod mha;
pub mod mlp;
pub mod params;
pub mod sensitivity;
pub mod stack;

pub use config::{Activation, CosineAttention, LossKind, ModelConfig};
pub use engine::{EngineChoice, HeadReport, LayerReport, PolySettings, Scores};
pub use params::{LayerNormParams, LayerParams, Params};
pub use stack::{Batch, ForwardPass, Gradients, Model, Source, Target};
