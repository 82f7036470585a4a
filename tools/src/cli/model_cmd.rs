//! `polyattn model`: the loss and the gradient of every parameter and of the input of
//! a multi-layer transformer ([`polyattn::model`]), attention through the chosen engine.
//!
//! Files (names and shapes in [`polyattn::model::params`] and [`polyattn::model::file`]):
//! - `--weights W.safetensors`: every parameter plus the configuration in
//!   `__metadata__` (`n_layers`, `n_heads`, `d_model`, `d_ff`, `activation`
//!   gelu|relu, `layer_norm` true|false, `causal` true|false, `loss`
//!   mse|cross-entropy, `vocab` for cross-entropy or token input);
//! - `--input X.safetensors`: `x` `[n, d_model]` or `tokens` `[n]`; `y` `[n, d_model]`
//!   (MSE) or `labels` `[n]` (cross-entropy); ids as F64/F32 integers;
//! - `--output G.safetensors`: `loss` `[1]`, `grad.<name>` for every parameter and, for a
//!   feature input (not tokens: their gradient is `grad.embedding`),
//!   `grad.x` (dL/dT_0), in the compute dtype; metadata `engines`, `degrees`,
//!   `attention_bounds`, `engines_json` (per layer: engine, reason, per-head plan and
//!   bounds), `engine_requested`, `gradient`, `dtype`, the model configuration and
//!   `polyattn_version`.
//!
//! With `--init`, the weights and input files are first *written* from a seeded
//! initialiser (shape options below) and then, if `--output` is given, run.

use super::{EngineArg, GradientArg};
use clap::ValueEnum;
use polyattn::attention::poly::{Accuracy, PolyConfig};
use polyattn::error::{Error, Result};
use polyattn::io::{write_tensors, DType, TensorFile};
use polyattn::model::file::{
    batch_tensors, engine_metadata, gradient_tensors, model_tensors, read_batch, read_model,
};
use polyattn::model::sensitivity::{propagated_bound, PropagatedBound};
use polyattn::model::{
    Activation, Batch, EngineChoice, LossKind, Model, ModelConfig, PolySettings, Source, Target,
};
use polyattn::rng::SplitMix64;
use polyattn::scalar::Real;
use polyattn::tensor::Matrix;
use std::path::PathBuf;

/// Activations on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ActivationArg {
    /// GELU, tanh form.
    Gelu,
    /// ReLU.
    Relu,
}

/// Losses on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LossArg {
    /// 1/(2n) ||T_m - Y||_F^2.
    Mse,
    /// mean_i -log softmax(LNf(T_m) W_out)_{i, y_i}.
    CrossEntropy,
}

/// Compute dtypes on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DtypeArg {
    /// binary32.
    F32,
    /// binary64.
    F64,
}

/// Arguments of `polyattn model`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Start from seeded random files:\n  polyattn model --init \
    --weights W.safetensors --input X.safetensors --n 64 --d-model 16 --layers 2 \
    --heads 2 --causal\nthen: polyattn model --weights W.safetensors --input \
    X.safetensors --output G.safetensors --engine poly --eps 1e-8"
)]
pub struct ModelArgs {
    /// Weights safetensors file (parameters + configuration in __metadata__); written
    /// with --init.
    #[arg(long)]
    pub weights: PathBuf,
    /// Input safetensors file (`x` or `tokens`; `y` or `labels`); written with --init.
    #[arg(long)]
    pub input: PathBuf,
    /// Output safetensors file: `loss`, every `grad.*` (required unless --init).
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Attention engine: one for all layers, or one per layer comma separated
    /// (e.g. `poly,exact`). auto = poly where certified and predicted faster, else
    /// exact (the reason is recorded).
    #[arg(long, value_enum, value_delimiter = ',', default_value = "exact")]
    pub engine: Vec<EngineArg>,
    /// Polynomial engine: target bound on max |O~ - O| per head (default 1e-6).
    #[arg(long, conflicts_with = "degree", allow_hyphen_values = true)]
    pub eps: Option<f64>,
    /// Polynomial engine: use this degree.
    #[arg(long)]
    pub degree: Option<usize>,
    /// Polynomial engine: which approximate gradient.
    #[arg(long, value_enum, default_value_t = GradientArg::Substituted)]
    pub gradient: GradientArg,
    /// Compute dtype (default: the weights file's, or f64 with --init).
    #[arg(long, value_enum)]
    pub dtype: Option<DtypeArg>,
    /// Write seeded random weights and input to --weights and --input first.
    #[arg(long)]
    pub init: bool,
    /// --init: sequence length n.
    #[arg(long, default_value_t = 16)]
    pub n: usize,
    /// --init: model width.
    #[arg(long, default_value_t = 8)]
    pub d_model: usize,
    /// --init: number of layers.
    #[arg(long, default_value_t = 2)]
    pub layers: usize,
    /// --init: heads per layer.
    #[arg(long, default_value_t = 2)]
    pub heads: usize,
    /// --init: MLP width (default 4 d_model).
    #[arg(long)]
    pub d_ff: Option<usize>,
    /// --init: activation.
    #[arg(long, value_enum, default_value_t = ActivationArg::Gelu)]
    pub activation: ActivationArg,
    /// --init: switch layer norm off.
    #[arg(long)]
    pub no_layer_norm: bool,
    /// --init: causal mask.
    #[arg(long)]
    pub causal: bool,
    /// --init: loss.
    #[arg(long, value_enum, default_value_t = LossArg::Mse)]
    pub loss: LossArg,
    /// --init: vocabulary size (cross-entropy, token input).
    #[arg(long, default_value_t = 16)]
    pub vocab: usize,
    /// --init: token input (an embedding) instead of x.
    #[arg(long)]
    pub tokens: bool,
    /// --init: random seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// --init: scale W_Q and W_K by this factor (below 1: bounded scores, the
    /// polynomial engine's regime; the demo and the sweeps use 0.25).
    #[arg(long, default_value_t = 1.0, allow_hyphen_values = true)]
    pub qk_scale: f64,
}

/// Runs the subcommand.
pub fn run(args: &ModelArgs) -> Result<()> {
    if args.init {
        polyattn::output::check_output(&args.weights, &[])?;
        polyattn::output::check_output(&args.input, &[])?;
        polyattn::output::check_distinct_outputs(&args.weights, &args.input)?;
    }
    if let Some(output) = &args.output {
        polyattn::output::check_output(output, &[&args.weights, &args.input])?;
        if args.init {
            polyattn::output::check_distinct_outputs(&args.weights, output)?;
            polyattn::output::check_distinct_outputs(&args.input, output)?;
        }
    }
    if args.init {
        match args.dtype.unwrap_or(DtypeArg::F64) {
            DtypeArg::F32 => init::<f32>(args)?,
            DtypeArg::F64 => init::<f64>(args)?,
        }
        outln!(
            "wrote {} and {}",
            args.weights.display(),
            args.input.display()
        );
    }
    let Some(output) = &args.output else {
        if args.init {
            return Ok(());
        }
        return Err(Error::InvalidParameter {
            name: "--output",
            value: "none".into(),
            reason: "give the gradients file to write (or --init to write starting files)".into(),
        });
    };
    let weights = TensorFile::read(&args.weights)?;
    let input = TensorFile::read(&args.input)?;
    let dtype = match args.dtype {
        Some(DtypeArg::F32) => DType::F32,
        Some(DtypeArg::F64) => DType::F64,
        None => weights
            .get("layers.0.attn.wq")
            .map(|t| t.dtype())
            .unwrap_or(DType::F64),
    };
    match dtype {
        DType::F16 | DType::BF16 | DType::F32 => compute::<f32>(args, &weights, &input, output),
        DType::F64 => compute::<f64>(args, &weights, &input, output),
    }
}

fn init_config(args: &ModelArgs) -> ModelConfig {
    let loss = match args.loss {
        LossArg::Mse => LossKind::Mse,
        LossArg::CrossEntropy => LossKind::CrossEntropy,
    };
    ModelConfig {
        n_layers: args.layers,
        n_heads: args.heads,
        d_model: args.d_model,
        d_ff: args.d_ff.unwrap_or(4 * args.d_model),
        activation: match args.activation {
            ActivationArg::Gelu => Activation::Gelu,
            ActivationArg::Relu => Activation::Relu,
        },
        layer_norm: !args.no_layer_norm,
        causal: args.causal,
        loss,
        vocab: (args.tokens || loss == LossKind::CrossEntropy).then_some(args.vocab),
        d_qk: None,
        cosine: None,
    }
}

fn init<T: Real>(args: &ModelArgs) -> Result<()> {
    let cfg = init_config(args);
    if args.n == 0 {
        return Err(Error::InvalidParameter {
            name: "--n",
            value: "0".into(),
            reason: "the sequence length must be at least 1".into(),
        });
    }
    polyattn::tensor::checked_alloc_len("--init's input x [n, d_model]", &[args.n, cfg.d_model])?;
    // Peak: the parameters and x, y each held three times (the tensors, their
    // little-endian bytes, the serialised file), in the dtype's width.
    let values =
        cfg.parameter_count(args.tokens)? as f64 + 2.0 * (args.n as f64) * cfg.d_model as f64;
    super::check_memory(
        "model --init",
        3.0 * values * std::mem::size_of::<T>() as f64,
    )?;
    if !(args.qk_scale.is_finite() && args.qk_scale > 0.0) {
        return Err(Error::InvalidParameter {
            name: "--qk-scale",
            value: args.qk_scale.to_string(),
            reason: "must be positive and finite".into(),
        });
    }
    let mut params = Model::<T>::init(cfg.clone(), args.tokens, args.seed)?.into_params();
    let s = T::from_f64(args.qk_scale);
    for l in &mut params.layers {
        l.wq.as_mut_slice().iter_mut().for_each(|w| *w *= s);
        l.wk.as_mut_slice().iter_mut().for_each(|w| *w *= s);
    }
    let model = Model::new(cfg.clone(), params)?;
    let mut rng = SplitMix64::new(args.seed ^ 0x5EED_DA7A);
    let (n, d, vocab) = (args.n, cfg.d_model, args.vocab.max(1));
    let source = if args.tokens {
        Source::Tokens(random_ids(&mut rng, n, vocab))
    } else {
        Source::Embeddings(random_matrix(&mut rng, n, d)?)
    };
    let target = match cfg.loss {
        LossKind::Mse => Target::Regression(random_matrix(&mut rng, n, d)?),
        LossKind::CrossEntropy => Target::Labels(random_ids(&mut rng, n, vocab)),
    };
    let batch = Batch { source, target };
    model.check_batch(&batch)?;
    let (tensors, meta) = model_tensors(&model);
    write_tensors(&args.weights, &tensors, &meta)?;
    write_tensors(&args.input, &batch_tensors(&batch), &Default::default())
}

/// `rows x cols` standard normal entries.
fn random_matrix<T: Real>(rng: &mut SplitMix64, rows: usize, cols: usize) -> Result<Matrix<T>> {
    Matrix::from_fn(rows, cols, |_, _| T::from_f64(rng.normal()))
}

/// `n` uniform ids in `0..vocab` (`vocab >= 1`).
fn random_ids(rng: &mut SplitMix64, n: usize, vocab: usize) -> Vec<usize> {
    (0..n).map(|_| rng.int(0, vocab - 1)).collect()
}

fn engines(args: &ModelArgs) -> Vec<EngineChoice> {
    let config = PolyConfig {
        accuracy: match (args.eps, args.degree) {
            (_, Some(g)) => Accuracy::Degree(g),
            (Some(e), None) => Accuracy::Eps(e),
            (None, None) => PolyConfig::default().accuracy,
        },
        ..PolyConfig::default()
    };
    let settings = PolySettings {
        config,
        kind: args.gradient.into(),
    };
    // As in `polyattn attention --engine auto`: poly only where predicted faster.
    let auto = PolySettings {
        config: PolyConfig {
            max_cost_ratio: 1.0,
            cost_floor_flops: 0.0,
            ..config
        },
        ..settings
    };
    args.engine
        .iter()
        .map(|e| match e {
            EngineArg::Exact => EngineChoice::Exact,
            EngineArg::Poly => EngineChoice::Poly(settings),
            EngineArg::Auto => EngineChoice::Auto(auto),
        })
        .collect()
}

/// docs/math.md §7.3's propagated bounds on `||grad.x - dX_exact||_F` and on each layer's
/// weight gradients (see
/// [`polyattn::model::sensitivity`]) for an f64 run in which some layer ran the
/// polynomial engine, with the MSE loss, a feature input and dot-product attention;
/// `None` otherwise (a cosine-attention model runs, and its output simply has no such
/// bound: the propagation does not carry the normalisation's Jacobian).
fn dx_bound(
    weights: &TensorFile,
    input: &TensorFile,
    reports: &[polyattn::model::LayerReport],
    dtype: &str,
) -> Result<Option<PropagatedBound>> {
    if dtype != "F64" || reports.iter().all(|r| r.heads.is_empty()) {
        return Ok(None);
    }
    let model = read_model::<f64>(weights)?;
    let batch = read_batch(input, &model)?;
    if model.config().loss != LossKind::Mse
        || !matches!(batch.source, Source::Embeddings(_))
        || model.config().cosine.is_some()
    {
        return Ok(None);
    }
    Ok(Some(propagated_bound(&model, &batch, reports, 20)?))
}

fn compute<T: Real>(
    args: &ModelArgs,
    weights: &TensorFile,
    input: &TensorFile,
    output: &std::path::Path,
) -> Result<()> {
    let model = read_model::<T>(weights)?;
    let batch = read_batch(input, &model)?;
    // Peak of the exact path: parameters, gradients and the output's copies (3x the
    // parameters), each layer's cached activations (LN outputs, q, k, v, o, the
    // residual and the MLP's hidden pre- and post-activation: about 8 d_model + 3 d_ff
    // values per token) and the input, target and top gradient. The polynomial
    // engine's features (n x rank per head, rank <= its limit) come on top for the
    // layer being computed.
    let c = model.config();
    let n = batch.len() as f64;
    let tokens = matches!(batch.source, polyattn::model::Source::Tokens(_));
    let values = 3.0 * c.parameter_count(tokens)? as f64
        + n * c.n_layers as f64 * (8 * c.d_model + 3 * c.d_ff) as f64
        + 4.0 * n * c.d_model as f64;
    super::check_memory("polyattn model", values * std::mem::size_of::<T>() as f64)?;
    let (loss, grads) = model.loss_and_gradients(&batch, &engines(args))?;
    let mut meta = engine_metadata(&grads.reports);
    meta.extend(model.config().to_metadata());
    let requested: Vec<String> = args
        .engine
        .iter()
        .map(|e| format!("{e:?}").to_lowercase())
        .collect();
    meta.insert("engine_requested".into(), requested.join(","));
    meta.insert(
        "gradient".into(),
        polyattn::attention::poly::GradientKind::from(args.gradient)
            .name()
            .into(),
    );
    meta.insert("dtype".into(), T::DTYPE.into());
    meta.insert("polyattn_version".into(), env!("CARGO_PKG_VERSION").into());
    if let Some(b) = dx_bound(weights, input, &grads.reports, T::DTYPE)? {
        meta.insert("dx_error_bound".into(), format!("{:e}", b.dx_bound));
        let per_layer: Vec<String> = b
            .layers
            .iter()
            .map(|t| format!("{:e}", t.weight_bound))
            .collect();
        meta.insert("weight_error_bounds".into(), per_layer.join(","));
        meta.insert(
            "dx_error_bound_json".into(),
            serde_json::to_string(&b).unwrap_or_default(),
        );
    }
    write_tensors(output, &gradient_tensors(loss, &grads), &meta)?;
    outln!(
        "loss = {:e}; engines per layer: {}; degrees: {}; wrote {}",
        loss.to_f64(),
        meta["engines"],
        meta["degrees"],
        output.display()
    );
    Ok(())
}
