//! Parameter and gradient names with their shapes, in model order (the
//! names are also the production crate's safetensors names).

use crate::attention::SpecError;

use super::config::*;
use crate::interval::Interval;
use crate::linalg::{check_prec, expect_shape, lift, shape_err, Res};

/// What kind of entry a parameter holds (fixes its distribution in
/// [`random_parameters`](super::random_parameters)).
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

/// Checks the example against `cfg` and the parameters against
/// [`parameter_shapes`] (every name present, none extra, shapes equal, every
/// entry finite).
pub(super) fn validate(cfg: &Config, params: &Params, ex: &Example, prec: u32) -> Res<()> {
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
