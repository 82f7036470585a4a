//! Deterministic random parameters and examples from the spec's SplitMix64
//! generator ([`crate::rng`]), with exact dyadic entries.

use crate::attention::SpecError;
use crate::linalg::Mat;

use super::config::*;
use super::names::*;

pub use crate::rng::SplitMix64;

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
