//! The seeded model the demo, the sweeps and the tests share: a small causal pre-norm
//! stack whose `W_Q` and `W_K` are scaled down so every head's scores stay in the
//! polynomial engine's regime (score radius R near 0.5), its seeded batch, and the
//! polynomial engine choice that bounds each head's forward error by `eps`.

use crate::attention::poly::{Accuracy, GradientKind, PolyConfig};
use crate::error::Result;
use crate::model::{
    Activation, Batch, EngineChoice, LossKind, Model, ModelConfig, PolySettings, Source, Target,
};
use crate::rng::SplitMix64;
use crate::tensor::Matrix;

/// A seeded causal model (GELU, layer norm, MSE) with `W_Q`, `W_K` scaled by `qk_scale`
/// (bounded scores), and a seeded batch of length `n` (X, Y ~ N(0, 1)).
pub fn bounded_model(
    cfg: ModelConfig,
    qk_scale: f64,
    n: usize,
    seed: u64,
) -> Result<(Model<f64>, Batch<f64>)> {
    let mut params = Model::<f64>::init(cfg.clone(), false, seed)?.into_params();
    for l in &mut params.layers {
        l.wq.as_mut_slice().iter_mut().for_each(|w| *w *= qk_scale);
        l.wk.as_mut_slice().iter_mut().for_each(|w| *w *= qk_scale);
    }
    let model = Model::new(cfg.clone(), params)?;
    let mut r = SplitMix64::new(seed ^ 0x5eed);
    let d = cfg.d_model;
    let x = Matrix::from_vec(n, d, r.normal_vec(n * d, 1.0))?;
    let y = Matrix::from_vec(n, d, r.normal_vec(n * d, 1.0))?;
    Ok((
        model,
        Batch {
            source: Source::Embeddings(x),
            target: Target::Regression(y),
        },
    ))
}

/// The configuration the sweep and the demo use: `layers` layers, d_model = 16,
/// 4 heads of d_head = 4, d_ff = 32, GELU, layer norm, causal, MSE.
pub fn small_head_config(layers: usize) -> ModelConfig {
    ModelConfig {
        n_layers: layers,
        n_heads: 4,
        d_model: 16,
        d_ff: 32,
        activation: Activation::Gelu,
        layer_norm: true,
        causal: true,
        loss: LossKind::Mse,
        vocab: None,
        d_qk: None,
        cosine: None,
    }
}

/// The scale of W_Q and W_K that keeps R near 0.5 for [`small_head_config`].
pub const QK_SCALE: f64 = 0.25;

/// The polynomial engine choice of the sweep and the demo: bound `eps` per head on O.
pub fn poly_choice(eps: f64) -> EngineChoice {
    EngineChoice::Poly(PolySettings {
        config: PolyConfig {
            accuracy: Accuracy::Eps(eps),
            max_cost_ratio: f64::INFINITY,
            ..PolyConfig::default()
        },
        kind: GradientKind::Substituted,
    })
}
