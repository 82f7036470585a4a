//! The bridge from a production [`Model`] and [`Batch`] to the MPFR interval reference
//! of the whole model, `polyattn_spec::model` (docs/math.md §5.3, §7): the
//! same configuration, parameters and example in the spec's types, and its gradient
//! enclosures under our gradient names (`grad.<parameter>`, `grad.x`).

use nalgebra::DMatrix;
use polyattn::error::{Error, Result};
use polyattn::model::{Activation, Batch, LossKind, Model, ModelConfig, Source, Target};
use polyattn::tensor::Matrix;
use polyattn_spec::model as spec;

/// The spec's configuration for `cfg` (`tokens`: the input is token ids).
pub fn spec_config(cfg: &ModelConfig, tokens: bool) -> spec::Config {
    spec::Config {
        n_layers: cfg.n_layers,
        n_heads: cfg.n_heads,
        d_model: cfg.d_model,
        d_ff: cfg.d_ff,
        vocab: cfg.vocab.unwrap_or(0),
        activation: match cfg.activation {
            Activation::Gelu => spec::Activation::Gelu,
            Activation::Relu => spec::Activation::Relu,
        },
        layer_norm: cfg.layer_norm,
        causal: cfg.causal,
        loss: match cfg.loss {
            LossKind::Mse => spec::LossKind::Mse,
            LossKind::CrossEntropy => spec::LossKind::CrossEntropy,
        },
        input: if tokens {
            spec::InputKind::Tokens
        } else {
            spec::InputKind::Features
        },
    }
}

/// A row-major tensor of shape `[k]` (as `1 x k`) or `[r, c]` as the spec's matrix.
pub fn spec_matrix(shape: &[usize], data: &[f64]) -> Result<DMatrix<f64>> {
    let (r, c) = match shape {
        [k] => (1, *k),
        [r, c] => (*r, *c),
        s => {
            return Err(Error::ShapeMismatch {
                what: "model tensor".into(),
                expected: "[k] or [rows, cols]".into(),
                got: format!("{s:?}"),
            })
        }
    };
    Ok(DMatrix::from_row_slice(r, c, data))
}

fn m2(m: &Matrix<f64>) -> Result<DMatrix<f64>> {
    spec_matrix(&m.shape(), m.as_slice())
}

/// The spec's configuration, parameters and example for `model` on `batch`.
pub fn spec_problem(
    model: &Model<f64>,
    batch: &Batch<f64>,
) -> Result<(spec::Config, spec::Params, spec::Example)> {
    let tokens = matches!(batch.source, Source::Tokens(_));
    let cfg = model.config();
    if cfg.cosine.is_some() || cfg.d_qk() != cfg.d_head() {
        // The reference (polyattn_spec::model) has dot-product heads with d_qk = d_v.
        return Err(Error::InvalidParameter {
            name: "attention",
            value: format!(
                "{} with d_qk = {}",
                if cfg.cosine.is_some() {
                    "cosine"
                } else {
                    "dot"
                },
                cfg.d_qk()
            ),
            reason: "the MPFR model reference has dot-product attention with d_qk = d_v \
                     only"
                .into(),
        });
    }
    let params = model
        .params()
        .named()
        .into_iter()
        .map(|(name, shape, data)| Ok((name, spec_matrix(&shape, &data)?)))
        .collect::<Result<spec::Params>>()?;
    let ex = spec::Example {
        input: match &batch.source {
            Source::Embeddings(x) => spec::Input::Features(m2(x)?),
            Source::Tokens(t) => spec::Input::Tokens(t.clone()),
        },
        targets: match &batch.target {
            Target::Regression(y) => spec::Targets::Values(m2(y)?),
            Target::Labels(l) => spec::Targets::Labels(l.clone()),
            Target::WeightedLabels(..) => {
                return Err(Error::InvalidParameter {
                    name: "target",
                    value: "weighted labels".into(),
                    reason: "the MPFR model reference takes plain labels (mean over all \
                             positions)"
                        .into(),
                })
            }
        },
    };
    Ok((spec_config(model.config(), tokens), params, ex))
}

/// The MPFR loss and gradient enclosures of `model` on `batch`, at the smallest
/// precision from 128 bits up (at most 2048) whose widths are below `rel_width`
/// relative ([`spec::gradients_to_width`]); also returns the precision used.
pub fn spec_enclosures(
    model: &Model<f64>,
    batch: &Batch<f64>,
    rel_width: f64,
) -> Result<(polyattn_spec::interval::Interval, spec::Gradients, u32)> {
    let (cfg, params, ex) = spec_problem(model, batch)?;
    let err = |e: polyattn_spec::attention::SpecError| Error::InvalidParameter {
        name: "reference",
        value: "MPFR model enclosure".into(),
        reason: e.to_string(),
    };
    let (g, prec) =
        spec::gradients_to_width(&cfg, &params, &ex, rel_width, 128, 2048).map_err(err)?;
    let loss = spec::forward(&cfg, &params, &ex, prec).map_err(err)?.loss;
    Ok((loss, g, prec))
}

/// The double-double ball loss and gradient enclosures of `model` on `batch`
/// ([`spec::loss_and_gradients_ball`]: rigorous like MPFR, streaming attention,
/// rows in parallel).
pub fn spec_balls(
    model: &Model<f64>,
    batch: &Batch<f64>,
) -> Result<(
    polyattn_spec::ball::Ball,
    std::collections::BTreeMap<String, DMatrix<polyattn_spec::ball::Ball>>,
)> {
    let (cfg, params, ex) = spec_problem(model, batch)?;
    spec::loss_and_gradients_ball(&cfg, &params, &ex).map_err(|e| Error::InvalidParameter {
        name: "reference",
        value: "double-double ball model enclosure".into(),
        reason: e.to_string(),
    })
}
