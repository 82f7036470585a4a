//! The whole model: input (embedding rows or given X), the blocks, the loss; forward
//! keeping what the backward needs, and the backward to every parameter and to X
//! (docs/math.md §7; ML24 Lemma 3.4 / C.4, the chain rule through the layers).

use super::block::{self, BlockCache};
use super::config::{LossKind, ModelConfig};
use super::dense::{mm, mm_nt, mm_tn};
use super::engine::{EngineChoice, LayerReport};
use super::layer_norm::{self, LnCache};
use super::loss;
use super::params::Params;
use crate::error::{Error, Result};
use crate::scalar::Real;
use crate::tensor::{check_finite, Matrix};

/// The model's input `T_0`.
#[derive(Clone, Debug, PartialEq)]
pub enum Source<T> {
    /// `T_0 = X`, `n x d_model`.
    Embeddings(Matrix<T>),
    /// `T_0 = E[tokens]` (row `tokens[i]` of the embedding), each token `< vocab`.
    Tokens(Vec<usize>),
}

/// What the loss compares against.
#[derive(Clone, Debug, PartialEq)]
pub enum Target<T> {
    /// `Y`, `n x d_model` (MSE).
    Regression(Matrix<T>),
    /// Class labels `y_i < vocab` (cross-entropy, mean over the n positions).
    Labels(Vec<usize>),
    /// Class labels with a weight per position (cross-entropy `L = sum_i w_i CE_i`):
    /// weight 0 ignores a position (PyTorch's `ignore_index`), and a batch of
    /// sequences with `w_i = 1 / (labelled positions in the whole batch)` summed over
    /// its sequences is PyTorch's `reduction = "mean"` over the batch. Weights must be
    /// finite and non-negative.
    WeightedLabels(Vec<usize>, Vec<T>),
}

/// One sequence: input and target, both of length `n`.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch<T> {
    /// The input.
    pub source: Source<T>,
    /// The target.
    pub target: Target<T>,
}

impl<T: Copy + Default> Batch<T> {
    /// The sequence length n.
    pub fn len(&self) -> usize {
        match &self.source {
            Source::Embeddings(x) => x.rows(),
            Source::Tokens(t) => t.len(),
        }
    }

    /// True when n = 0 (never valid).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A validated model: its configuration and parameters.
#[derive(Clone, Debug)]
pub struct Model<T> {
    config: ModelConfig,
    params: Params<T>,
}

/// The forward pass, with everything the backward needs.
#[derive(Clone, Debug)]
pub struct ForwardPass<T> {
    /// The loss L.
    pub loss: T,
    /// `T_m`, the last block's output.
    pub output: Matrix<T>,
    /// Per layer: the attention engine used and why (gradient bounds still empty).
    pub reports: Vec<LayerReport>,
    blocks: Vec<BlockCache<T>>,
    /// CE only: LNf's cache and `LNf(T_m)`.
    head: Option<(Option<LnCache<T>>, Matrix<T>)>,
    /// dL/dT_m (MSE) or dL/dlogits (CE).
    loss_grad: Matrix<T>,
    tokens: Option<Vec<usize>>,
}

/// The gradient of the loss with respect to every parameter and to `T_0`.
#[derive(Clone, Debug)]
pub struct Gradients<T> {
    /// dL/dtheta, laid out like the parameters (`embedding` only for token input).
    pub params: Params<T>,
    /// dL/dT_0 (`n x d_model`): dL/dX for given X, the gradient at the embedded rows
    /// for token input.
    pub dx: Matrix<T>,
    /// True for a feature input X (then [`named`](Self::named) lists `grad.x`); for
    /// token input the input's gradient is `grad.embedding`'s.
    pub feature_input: bool,
    /// Per layer: the engine used, with the polynomial engine's gradient bounds.
    pub reports: Vec<LayerReport>,
}

impl<T: Real> Gradients<T> {
    /// Every gradient as (`grad.` + parameter name, shape, data), then `grad.x` for a
    /// feature input (the names of the MPFR reference, `polyattn_spec::model`).
    pub fn named(&self) -> Vec<(String, Vec<usize>, Vec<T>)> {
        let mut out: Vec<_> = self
            .params
            .named()
            .into_iter()
            .map(|(n, s, d)| (format!("grad.{n}"), s, d))
            .collect();
        if self.feature_input {
            out.push((
                "grad.x".into(),
                self.dx.shape().to_vec(),
                self.dx.as_slice().to_vec(),
            ));
        }
        out
    }
}

fn bad_input(what: &str, expected: String, got: String) -> Error {
    Error::ShapeMismatch {
        what: what.into(),
        expected,
        got,
    }
}

fn check_indices(what: &str, idx: &[usize], limit: usize) -> Result<()> {
    match idx.iter().position(|&t| t >= limit) {
        None => Ok(()),
        Some(i) => Err(Error::BadIndex {
            what: what.into(),
            index: i,
            value: idx[i] as f64,
            limit,
        }),
    }
}

impl<T: Real> Model<T> {
    /// A model from a configuration and parameters, after checking that the
    /// parameters have exactly the configuration's names and shapes and are finite.
    pub fn new(config: ModelConfig, mut params: Params<T>) -> Result<Self> {
        let mut schema = Params::<T>::zeros(&config, params.embedding.is_some())?;
        let want: Vec<(String, Vec<usize>)> = schema
            .slots_mut()
            .into_iter()
            .map(|(n, s, _)| (n, s))
            .collect();
        let have = params.slots_mut();
        if have.len() != want.len() {
            let names: Vec<&String> = have.iter().map(|s| &s.0).collect();
            return Err(Error::ModelConfig {
                field: "parameters".into(),
                reason: format!(
                    "has {} tensors ({names:?}); the configuration needs {}",
                    have.len(),
                    want.len()
                ),
            });
        }
        for ((name, shape, data), (wname, wshape)) in have.into_iter().zip(&want) {
            if &name != wname || &shape != wshape {
                return Err(bad_input(
                    &format!("parameter `{name}`"),
                    format!("`{wname}` {wshape:?}"),
                    format!("{shape:?}"),
                ));
            }
            check_finite(&name, &shape, data)?;
        }
        Ok(Self { config, params })
    }

    /// A model with [`Params::init`]'s seeded random parameters.
    pub fn init(config: ModelConfig, with_embedding: bool, seed: u64) -> Result<Self> {
        let params = Params::init(&config, with_embedding, seed)?;
        Self::new(config, params)
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// The parameters.
    pub fn params(&self) -> &Params<T> {
        &self.params
    }

    /// The parameters, consuming the model.
    pub fn into_params(self) -> Params<T> {
        self.params
    }

    /// Checks a batch against the model: n >= 1, X `n x d_model` and finite, tokens
    /// and labels `< vocab` (tokens need an embedding), a target matching the loss.
    pub fn check_batch(&self, batch: &Batch<T>) -> Result<()> {
        let (n, d) = (batch.len(), self.config.d_model);
        if n == 0 {
            return Err(Error::Empty {
                what: "input sequence".into(),
                shape: vec![0],
            });
        }
        match &batch.source {
            Source::Embeddings(x) => {
                if x.cols() != d {
                    return Err(bad_input(
                        "x",
                        format!("[{n}, {d}]"),
                        format!("{:?}", x.shape()),
                    ));
                }
                check_finite("x", &x.shape(), x.as_slice())?;
            }
            Source::Tokens(t) => match &self.params.embedding {
                Some(e) => check_indices("tokens", t, e.rows())?,
                None => {
                    return Err(Error::ModelConfig {
                        field: "embedding".into(),
                        reason: "is needed for token input but the model has none".into(),
                    })
                }
            },
        }
        match (&batch.target, self.config.loss) {
            (Target::Regression(y), LossKind::Mse) => {
                if y.shape() != [n, d] {
                    return Err(bad_input(
                        "y",
                        format!("[{n}, {d}]"),
                        format!("{:?}", y.shape()),
                    ));
                }
                check_finite("y", &y.shape(), y.as_slice())
            }
            (Target::Labels(l), LossKind::CrossEntropy) => {
                if l.len() != n {
                    return Err(bad_input(
                        "labels",
                        format!("[{n}]"),
                        format!("[{}]", l.len()),
                    ));
                }
                check_indices("labels", l, self.config.vocab.unwrap_or(0))
            }
            (Target::WeightedLabels(l, w), LossKind::CrossEntropy) => {
                for (what, len) in [("labels", l.len()), ("weights", w.len())] {
                    if len != n {
                        return Err(bad_input(what, format!("[{n}]"), format!("[{len}]")));
                    }
                }
                check_finite("weights", &[n], w)?;
                if let Some(i) = w.iter().position(|&x| x < T::ZERO) {
                    return Err(Error::NonFinite {
                        what: "weights (must be >= 0)".into(),
                        index: format!("[{i}]"),
                        value: w[i].to_f64(),
                    });
                }
                check_indices("labels", l, self.config.vocab.unwrap_or(0))
            }
            (_, loss) => Err(Error::ModelConfig {
                field: "loss".into(),
                reason: format!(
                    "= {} needs {}",
                    loss.name(),
                    match loss {
                        LossKind::Mse => "a target `y` [n, d_model]",
                        LossKind::CrossEntropy => "class `labels` [n]",
                    }
                ),
            }),
        }
    }

    fn engine_for<'a>(&self, engines: &'a [EngineChoice], l: usize) -> Result<&'a EngineChoice> {
        match engines.len() {
            1 => Ok(&engines[0]),
            m if m == self.config.n_layers => Ok(&engines[l]),
            m => Err(Error::InvalidParameter {
                name: "engines",
                value: format!("{m} entries"),
                reason: format!(
                    "give one engine for all layers or one per layer ({})",
                    self.config.n_layers
                ),
            }),
        }
    }

    /// The forward pass: `T_0`, the blocks (layer `l` through `engines[l]`, or
    /// `engines[0]` for all), the loss and its gradient at the top.
    pub fn forward(&self, batch: &Batch<T>, engines: &[EngineChoice]) -> Result<ForwardPass<T>> {
        self.check_batch(batch)?;
        let (mut t, tokens) = match &batch.source {
            Source::Embeddings(x) => (x.clone(), None),
            Source::Tokens(tok) => {
                // check_batch ensured the embedding exists and every token is in range.
                let e = self
                    .params
                    .embedding
                    .as_ref()
                    .ok_or_else(|| Error::ModelConfig {
                        field: "embedding".into(),
                        reason: "missing".into(),
                    })?;
                let d = self.config.d_model;
                let data = tok.iter().flat_map(|&i| e.row(i).to_vec()).collect();
                (Matrix::from_vec(tok.len(), d, data)?, Some(tok.clone()))
            }
        };
        let mut blocks = Vec::with_capacity(self.config.n_layers);
        let mut reports = Vec::with_capacity(self.config.n_layers);
        for (l, p) in self.params.layers.iter().enumerate() {
            let (next, cache, report) =
                block::forward(&self.config, p, self.engine_for(engines, l)?, &t)
                    .map_err(|e| inside_layer(e, l, "forward"))?;
            blocks.push(cache);
            reports.push(report);
            t = next;
        }
        let (loss, loss_grad, head) = match &batch.target {
            Target::Regression(y) => {
                let (l, g) = loss::mse(&t, y)?;
                (l, g, None)
            }
            Target::Labels(_) | Target::WeightedLabels(..) => {
                let (labels, weights) = match &batch.target {
                    Target::WeightedLabels(l, w) => (l.as_slice(), Some(w.as_slice())),
                    Target::Labels(l) => (l.as_slice(), None),
                    // Not reached: this arm matched a labels target.
                    Target::Regression(_) => (&[][..], None),
                };
                let (xf, ln) = layer_norm::forward(self.params.lnf.as_ref(), &t)?;
                let w_out = self
                    .params
                    .w_out
                    .as_ref()
                    .ok_or_else(|| Error::ModelConfig {
                        field: "head.w_out".into(),
                        reason: "is needed for cross-entropy".into(),
                    })?;
                let z = mm(&xf, w_out)?;
                let (l, g) = match weights {
                    Some(w) => loss::cross_entropy_weighted(&z, labels, w)?,
                    None => loss::cross_entropy(&z, labels)?,
                };
                (l, g, Some((ln, xf)))
            }
        };
        Ok(ForwardPass {
            loss,
            output: t,
            reports,
            blocks,
            head,
            loss_grad,
            tokens,
        })
    }

    /// The backward pass from a [`forward`](Self::forward) of this model: the
    /// gradient of the loss with respect to every parameter and to `T_0`.
    pub fn backward(&self, fwd: &ForwardPass<T>) -> Result<Gradients<T>> {
        Ok(self.backward_trace(fwd)?.0)
    }

    /// [`backward`](Self::backward), also returning `dL/dT_l` for `l = 0..=m`
    /// (index `m` is the loss gradient at the top, index 0 equals `dx`).
    pub(crate) fn backward_trace(
        &self,
        fwd: &ForwardPass<T>,
    ) -> Result<(Gradients<T>, Vec<Matrix<T>>)> {
        let mut grads = Params::<T>::zeros(&self.config, self.params.embedding.is_some())?;
        let mut dt = match (&fwd.head, &self.params.w_out) {
            (None, _) => fwd.loss_grad.clone(),
            (Some((ln, xf)), Some(w_out)) => {
                grads.w_out = Some(mm_tn(xf, &fwd.loss_grad)?);
                let dxf = mm_nt(&fwd.loss_grad, w_out)?;
                let (dt, g_lnf) =
                    layer_norm::backward(self.params.lnf.as_ref(), ln.as_ref(), &dxf)?;
                grads.lnf = g_lnf;
                dt
            }
            (Some(_), None) => {
                return Err(Error::ModelConfig {
                    field: "head.w_out".into(),
                    reason: "is needed for cross-entropy".into(),
                })
            }
        };
        let mut reports = fwd.reports.clone();
        let mut trace = vec![dt.clone()];
        for l in (0..self.config.n_layers).rev() {
            let (d_prev, g) = block::backward(
                &self.config,
                &self.params.layers[l],
                &fwd.blocks[l],
                &dt,
                &mut reports[l],
            )
            .map_err(|e| inside_layer(e, l, "backward"))?;
            grads.layers[l] = g;
            dt = d_prev;
            trace.push(dt.clone());
        }
        trace.reverse();
        if let (Some(tokens), Some(de)) = (&fwd.tokens, grads.embedding.as_mut()) {
            let d = self.config.d_model;
            let de = de.as_mut_slice();
            for (i, &tok) in tokens.iter().enumerate() {
                for (a, &b) in de[tok * d..(tok + 1) * d].iter_mut().zip(dt.row(i)) {
                    *a += b;
                }
            }
        }
        Ok((
            Gradients {
                params: grads,
                dx: dt,
                feature_input: fwd.tokens.is_none(),
                reports,
            },
            trace,
        ))
    }

    /// The logits `LNf(T_m) W_out` (`n x vocab`) of a cross-entropy forward pass;
    /// `None` for MSE.
    pub fn logits(&self, fwd: &ForwardPass<T>) -> Result<Option<Matrix<T>>> {
        match (&fwd.head, &self.params.w_out) {
            (Some((_, xf)), Some(w_out)) => Ok(Some(mm(xf, w_out)?)),
            _ => Ok(None),
        }
    }

    /// The loss alone (a forward pass).
    pub fn loss(&self, batch: &Batch<T>, engines: &[EngineChoice]) -> Result<T> {
        Ok(self.forward(batch, engines)?.loss)
    }

    /// The loss and all gradients: [`forward`](Self::forward) then
    /// [`backward`](Self::backward).
    pub fn loss_and_gradients(
        &self,
        batch: &Batch<T>,
        engines: &[EngineChoice],
    ) -> Result<(T, Gradients<T>)> {
        let fwd = self.forward(batch, engines)?;
        let g = self.backward(&fwd)?;
        Ok((fwd.loss, g))
    }
}

/// An error raised on a tensor computed inside layer `l` (its attention's q, k, v, the
/// MLP's activations): the names the attention engine checks (`q`, `k`, ...) are the
/// layer's internal tensors, not the user's input, so the error says which layer and
/// pass computed them.
fn inside_layer(e: Error, layer: usize, pass: &'static str) -> Error {
    match e {
        Error::NonFinite { what, index, value } => Error::LayerNonFinite {
            layer,
            pass,
            tensor: format!("{what}{index}"),
            value,
        },
        Error::Overflow {
            quantity,
            bound,
            dtype,
        } => Error::Overflow {
            quantity: format!("layer {layer} ({pass}): {quantity}"),
            bound,
            dtype,
        },
        other => other,
    }
}
