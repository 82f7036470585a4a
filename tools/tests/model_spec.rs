//! The production model's f64 exact-engine loss and gradients against the MPFR
//! interval reference `polyattn_spec::model` (docs/math.md §5.1, question 3: how much did
//! rounding add), on the same parameters and inputs.
//!
//! Tolerance: the certified error of an f64 result y against the enclosure [lo, hi]
//! of the exact real value is max(|y - lo|, |y - hi|). We require it to be at most
//! 1e-10 (1 + max |g|) per tensor, the acceptance level for matching an
//! independent float64 autodiff (~1e-10). An a priori f64 rounding bound for the
//! whole model would be u = 1.1e-16 times sums of absolute values amplified by the
//! layer norms' 1/sqrt(var + 1e-5) and the weights' norms, layer by layer; the FD
//! test (tests/model.rs) shows such amplification is modest at these sizes, and the
//! 1e-10 level leaves ~5 orders of magnitude above u for it while staying far below
//! the size of any formula error.

use polyattn::model::{
    Activation, Batch, EngineChoice, LossKind, Model, ModelConfig, Source, Target,
};
use polyattn::rng::SplitMix64;
use polyattn::tensor::Matrix;
use polyattn_spec::model as spec;
use polyattn_tools::certify::model_ref::{spec_matrix, spec_problem};

fn case(cfg: ModelConfig, tokens: bool, n: usize, seed: u64) {
    let model = Model::<f64>::init(cfg.clone(), tokens, seed).unwrap();
    let mut r = SplitMix64::new(seed + 7);
    let (d, vocab) = (cfg.d_model, cfg.vocab.unwrap_or(1));
    let source = if tokens {
        Source::Tokens((0..n).map(|_| r.int(0, vocab - 1)).collect())
    } else {
        Source::Embeddings(Matrix::from_fn(n, d, |_, _| r.normal()).unwrap())
    };
    let target = match cfg.loss {
        LossKind::Mse => Target::Regression(Matrix::from_fn(n, d, |_, _| r.normal()).unwrap()),
        LossKind::CrossEntropy => Target::Labels((0..n).map(|_| r.int(0, vocab - 1)).collect()),
    };
    let batch = Batch { source, target };
    let (loss, grads) = model
        .loss_and_gradients(&batch, &[EngineChoice::Exact])
        .unwrap();

    let (scfg, params, ex) = spec_problem(&model, &batch).unwrap();
    let prec = 160;
    let fwd = spec::forward(&scfg, &params, &ex, prec).unwrap();
    let loss_err = (loss - fwd.loss.lo_f64())
        .abs()
        .max((loss - fwd.loss.hi_f64()).abs());
    assert!(
        loss_err <= 1e-10 * (1.0 + loss.abs()),
        "loss error {loss_err:e}"
    );
    let reference = spec::gradients(&scfg, &params, &ex, prec).unwrap();
    let ours = grads.named();
    let mut names: Vec<&String> = ours.iter().map(|(n, _, _)| n).collect();
    names.sort();
    assert_eq!(
        names,
        reference.keys().collect::<Vec<_>>(),
        "gradient names"
    );
    let mut worst = 0.0f64;
    for (name, shape, data) in &ours {
        let enc = &reference[name];
        let g = spec_matrix(shape, data).unwrap();
        assert_eq!(g.shape(), enc.shape(), "{name}");
        let scale = 1.0 + enc.iter().map(|iv| iv.mag()).fold(0.0, f64::max);
        for (y, iv) in g.iter().zip(enc.iter()) {
            let err = (y - iv.lo_f64()).abs().max((y - iv.hi_f64()).abs());
            assert!(
                err <= 1e-10 * scale,
                "{name}: {y} vs [{}, {}]: certified error {err:e}",
                iv.lo_f64(),
                iv.hi_f64()
            );
            worst = worst.max(err / scale);
        }
    }
    eprintln!("{cfg:?} tokens={tokens}: loss err {loss_err:e}, max grad err / scale {worst:e}");
}

fn cfg(
    n_layers: usize,
    n_heads: usize,
    d_model: usize,
    activation: Activation,
    layer_norm: bool,
    causal: bool,
    loss: LossKind,
) -> ModelConfig {
    ModelConfig {
        n_layers,
        n_heads,
        d_model,
        d_ff: 2 * d_model,
        activation,
        layer_norm,
        causal,
        loss,
        vocab: Some(5),
        d_qk: None,
        cosine: None,
    }
}

#[test]
fn matches_mpfr_reference_mse() {
    case(
        cfg(2, 2, 4, Activation::Gelu, true, true, LossKind::Mse),
        false,
        6,
        1,
    );
    case(
        cfg(1, 1, 6, Activation::Relu, false, false, LossKind::Mse),
        false,
        5,
        2,
    );
}

#[test]
fn matches_mpfr_reference_cross_entropy() {
    case(
        cfg(
            3,
            2,
            4,
            Activation::Gelu,
            true,
            true,
            LossKind::CrossEntropy,
        ),
        true,
        7,
        3,
    );
    case(
        cfg(
            2,
            1,
            4,
            Activation::Relu,
            true,
            false,
            LossKind::CrossEntropy,
        ),
        false,
        3,
        4,
    );
}
