//! Fixtures shared by the model's library tests (`tests/model.rs`) and its
//! command-line tests (`tools/tests/model_cli.rs`): small configurations, seeded
//! batches and a model in the polynomial regime.
#![allow(dead_code)]

use polyattn::model::{Activation, Batch, LossKind, Model, ModelConfig, Params, Source, Target};
use polyattn::rng::SplitMix64;
use polyattn::tensor::Matrix;

#[allow(clippy::too_many_arguments)]
pub fn config(
    n_layers: usize,
    n_heads: usize,
    d_model: usize,
    d_ff: usize,
    activation: Activation,
    layer_norm: bool,
    causal: bool,
    loss: LossKind,
) -> ModelConfig {
    ModelConfig {
        n_layers,
        n_heads,
        d_model,
        d_ff,
        activation,
        layer_norm,
        causal,
        loss,
        vocab: (loss == LossKind::CrossEntropy).then_some(5),
        d_qk: None,
        cosine: None,
    }
}

/// A seeded batch of length `n` for `model` (tokens when the model has an embedding).
pub fn batch(model: &Model<f64>, n: usize, seed: u64) -> Batch<f64> {
    let cfg = model.config();
    let mut r = SplitMix64::new(seed);
    let d = cfg.d_model;
    let vocab = cfg.vocab.unwrap_or(1);
    let source = if model.params().embedding.is_some() {
        Source::Tokens((0..n).map(|_| r.int(0, vocab - 1)).collect())
    } else {
        Source::Embeddings(Matrix::from_fn(n, d, |_, _| r.normal()).unwrap())
    };
    let target = match cfg.loss {
        LossKind::Mse => Target::Regression(Matrix::from_fn(n, d, |_, _| r.normal()).unwrap()),
        LossKind::CrossEntropy => Target::Labels((0..n).map(|_| r.int(0, vocab - 1)).collect()),
    };
    Batch { source, target }
}

/// A model in the polynomial regime: W_Q, W_K scaled by 1/2 so that the exponent
/// radius R stays near 1-2 and small eps needs modest degrees.
pub fn poly_model(cfg: ModelConfig, tokens: bool, seed: u64) -> Model<f64> {
    let mut p = Params::<f64>::init(&cfg, tokens, seed).unwrap();
    for l in &mut p.layers {
        for w in [&mut l.wq, &mut l.wk] {
            w.as_mut_slice().iter_mut().for_each(|x| *x *= 0.5);
        }
    }
    Model::new(cfg, p).unwrap()
}
