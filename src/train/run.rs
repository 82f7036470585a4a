//! The training loop: seeded, reproducible bit for bit, with metrics as JSON lines and
//! checkpoints that resume the uninterrupted run exactly.
//!
//! One step `s` (1-based) on a batch of `B` sequences at training-stream positions
//! `pos .. pos + B` ([`super::mqar`]):
//!
//! ```text
//! L      = sum_b sum_i w_i CE_{b,i},   w_i = 1 / (labelled positions in the batch)
//!          (PyTorch's cross-entropy with reduction "mean" and ignore_index)
//! g      = dL/dtheta through the configured engine, sequences summed in order
//! g      <- clip(g, max_norm)          (optional, global 2-norm)
//! theta  <- AdamW(theta, g, lr = schedule(s - 1))
//! ```
//!
//! Reproducibility: the data are a function of (seed, position); the initial
//! parameters of (init seed, configuration); each sequence's loss and gradient are one
//! fixed sequence of floating-point operations (the engines and [`crate::model::dense`]
//! do not depend on the thread count), and the sequences' gradients are summed in
//! batch order. So the same configuration gives the same bits, and a run resumed from a
//! checkpoint (parameters, AdamW moments and step, data position) continues exactly as
//! the uninterrupted run.
//!
//! Checkpoint (`safetensors`, written atomically): every parameter under its model name,
//! `adamw.m.<name>`, `adamw.v.<name>`; metadata: the model configuration's keys, and
//! `train.step`, `train.data_position`, `train.config` (the run's other settings as
//! JSON). Resuming from a checkpoint whose configuration differs in any field is
//! [`Error::CheckpointMismatch`].
//!
//! A non-finite loss, gradient or updated parameter stops the run with
//! [`Error::NonFiniteTraining`] before anything is replaced: the in-memory state and
//! the last checkpoint written stay those of the last good step.

use super::mqar::{query_accuracy, Mqar, Split};
use super::optim::{clip_grad_norm, AdamW, AdamWConfig, Schedule};
use crate::error::{Error, Result};
use crate::io::{write_tensors, AnyTensor, TensorFile};
use crate::model::{Batch, EngineChoice, LayerReport, Model, ModelConfig, Params, Source, Target};
use rayon::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Everything that defines a run (two runs with equal configurations compute the same
/// bits).
#[derive(Clone, Debug, PartialEq)]
pub struct TrainConfig {
    /// The model (cross-entropy, with `vocab` = the task's vocabulary).
    pub model: ModelConfig,
    /// The task.
    pub task: Mqar,
    /// Sequences per step.
    pub batch_size: usize,
    /// Steps of the run.
    pub steps: u64,
    /// The learning-rate schedule.
    pub schedule: Schedule,
    /// AdamW's other hyper-parameters.
    pub adamw: AdamWConfig,
    /// Global gradient-norm clipping (`None`: off).
    pub clip: Option<f64>,
    /// The parameter initialisation seed.
    pub init_seed: u64,
    /// The attention engine of every layer.
    pub engine: EngineChoice,
    /// Validate every this many steps (0: never).
    pub eval_every: u64,
    /// Validation sequences (the first ones of the validation stream).
    pub eval_sequences: usize,
    /// Write a checkpoint every this many steps (0: only at the end).
    pub checkpoint_every: u64,
}

#[derive(serde::Serialize)]
struct RunSettings<'a> {
    task: &'a Mqar,
    batch_size: usize,
    steps: u64,
    schedule: &'a Schedule,
    adamw: &'a AdamWConfig,
    clip: Option<f64>,
    init_seed: u64,
    engine: String,
}

impl TrainConfig {
    /// The settings other than the model's, as a JSON object with one key per field
    /// (the engine as its `Debug` form: every setting of the polynomial engine).
    pub fn settings_json(&self) -> String {
        let s = RunSettings {
            task: &self.task,
            batch_size: self.batch_size,
            steps: self.steps,
            schedule: &self.schedule,
            adamw: &self.adamw,
            clip: self.clip,
            init_seed: self.init_seed,
            engine: format!("{:?}", self.engine),
        };
        serde_json::to_string(&s).unwrap_or_default()
    }

    /// Checks the pieces and that they fit: cross-entropy with `vocab` equal to the
    /// task's, a batch of at least one sequence, a positive clip norm.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        self.task.validate()?;
        self.adamw.validate()?;
        self.schedule.validate()?;
        let bad = |name: &'static str, value: String, reason: &str| Error::InvalidParameter {
            name,
            value,
            reason: reason.into(),
        };
        if self.model.loss != crate::model::LossKind::CrossEntropy
            || self.model.vocab != Some(self.task.vocab)
        {
            return Err(bad(
                "model",
                format!(
                    "loss {} vocab {:?}",
                    self.model.loss.name(),
                    self.model.vocab
                ),
                &format!(
                    "must be cross-entropy with vocab {} (the task's)",
                    self.task.vocab
                ),
            ));
        }
        if self.batch_size == 0 {
            return Err(bad("batch_size", "0".into(), "must be at least 1"));
        }
        if let Some(c) = self.clip {
            if !(c.is_finite() && c > 0.0) {
                return Err(bad("clip", c.to_string(), "must be finite and positive"));
            }
        }
        Ok(())
    }
}

/// The state of a run after some steps.
#[derive(Clone, Debug)]
pub struct TrainState {
    /// The parameters.
    pub params: Params<f64>,
    /// The optimiser (its `step` is the number of steps taken).
    pub opt: AdamW<f64>,
    /// The next training-stream position.
    pub data_position: u64,
}

impl TrainState {
    /// The state before step 1: [`Params::init`] with the init seed (with an
    /// embedding), zero moments, data position 0.
    pub fn new(cfg: &TrainConfig) -> Result<Self> {
        cfg.validate()?;
        let params = Params::init(&cfg.model, true, cfg.init_seed)?;
        let opt = AdamW::new(cfg.adamw, &params)?;
        Ok(Self {
            params,
            opt,
            data_position: 0,
        })
    }

    /// Steps taken.
    pub fn step(&self) -> u64 {
        self.opt.step
    }

    /// The checkpoint's tensors and metadata.
    fn tensors(&self, cfg: &TrainConfig) -> (Vec<(String, AnyTensor)>, HashMap<String, String>) {
        let mut out = Vec::new();
        for (prefix, p) in [
            ("", &self.params),
            ("adamw.m.", &self.opt.m),
            ("adamw.v.", &self.opt.v),
        ] {
            for (n, s, d) in p.named() {
                out.push((format!("{prefix}{n}"), AnyTensor::from_real(s, d)));
            }
        }
        let mut meta = cfg.model.to_metadata();
        meta.insert("train.step".into(), self.step().to_string());
        meta.insert("train.data_position".into(), self.data_position.to_string());
        meta.insert("train.config".into(), cfg.settings_json());
        (out, meta)
    }

    /// Writes the checkpoint to `path` atomically (the previous file stays whole until
    /// the new one replaces it).
    pub fn save(&self, cfg: &TrainConfig, path: &Path) -> Result<()> {
        let (t, m) = self.tensors(cfg);
        write_tensors(path, &t, &m)
    }

    /// Reads a checkpoint written by [`save`](Self::save) for a run configured as `cfg`;
    /// any difference of configuration is [`Error::CheckpointMismatch`] naming the first
    /// field that differs.
    pub fn load(cfg: &TrainConfig, path: &Path) -> Result<Self> {
        cfg.validate()?;
        let file = TensorFile::read(path)?;
        let mismatch = |field: &str, ck: Option<&str>, run: &str| Error::CheckpointMismatch {
            path: path.to_path_buf(),
            field: field.into(),
            checkpoint: ck.unwrap_or("missing").into(),
            run: run.into(),
        };
        let want = cfg.model.to_metadata();
        let keys: std::collections::BTreeSet<&String> = want
            .keys()
            .chain(file.metadata.keys().filter(|k| !k.starts_with("train.")))
            .collect();
        for k in keys {
            let (a, b) = (file.metadata.get(k), want.get(k));
            if a != b {
                return Err(mismatch(
                    k,
                    a.map(|s| s.as_str()),
                    b.map_or("missing", |s| s.as_str()),
                ));
            }
        }
        let run: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(&cfg.settings_json()).unwrap_or_default();
        let ck: BTreeMap<String, serde_json::Value> = file
            .metadata
            .get("train.config")
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default();
        for (k, v) in &run {
            if ck.get(k) != Some(v) {
                let c = ck.get(k).map(|x| x.to_string());
                return Err(mismatch(k, c.as_deref(), &v.to_string()));
            }
        }
        let number = |k: &str| -> Result<u64> {
            let s = file.metadata.get(k);
            s.and_then(|s| s.parse().ok())
                .ok_or_else(|| mismatch(k, s.map(|s| s.as_str()), "a step count"))
        };
        let (step, data_position) = (number("train.step")?, number("train.data_position")?);
        let like = Params::<f64>::zeros(&cfg.model, true)?;
        let params = load_prefixed(&file, "", &like)?;
        let mut opt = AdamW::new(cfg.adamw, &like)?;
        opt.m = load_prefixed(&file, "adamw.m.", &like)?;
        opt.v = load_prefixed(&file, "adamw.v.", &like)?;
        opt.step = step;
        Model::new(cfg.model.clone(), params.clone())?;
        Ok(Self {
            params,
            opt,
            data_position,
        })
    }
}

/// Reads `prefix + name` for every tensor of `like`'s layout, shapes checked.
fn load_prefixed(file: &TensorFile, prefix: &str, like: &Params<f64>) -> Result<Params<f64>> {
    let mut p = like.clone();
    for (name, shape, data) in p.slots_mut() {
        let full = format!("{prefix}{name}");
        let t = file.get(&full)?;
        if t.shape() != shape.as_slice() {
            return Err(Error::ShapeMismatch {
                what: format!("checkpoint tensor `{full}`"),
                expected: format!("{shape:?}"),
                got: format!("{:?}", t.shape()),
            });
        }
        let v = t.to_f64_vec();
        crate::tensor::check_finite(&full, &shape, &v)?;
        data.copy_from_slice(&v);
    }
    Ok(p)
}

/// One layer's attention facts for the metrics (the largest degree and rank over the
/// heads when the polynomial engine ran).
#[derive(Clone, Debug, serde::Serialize)]
pub struct LayerMetrics {
    /// `exact` or `poly`.
    pub engine: &'static str,
    /// Max degree over heads.
    pub degree: Option<usize>,
    /// Max rank over heads.
    pub rank: Option<usize>,
    /// Max radius R over heads (the planner's).
    pub radius: Option<f64>,
    /// The temperatures of a cosine layer, per head.
    pub tau: Option<Vec<f64>>,
}

/// One step's metrics (one JSON line).
#[derive(Clone, Debug, serde::Serialize)]
pub struct StepMetrics {
    /// The step just taken (1-based).
    pub step: u64,
    /// The batch loss before the update.
    pub loss: f64,
    /// The learning rate used.
    pub lr: f64,
    /// The gradient's global 2-norm before clipping.
    pub grad_norm: f64,
    /// Input tokens per second of wall-clock time for this step.
    pub tokens_per_s: f64,
    /// Seconds this step took.
    pub step_s: f64,
    /// Per layer.
    pub layers: Vec<LayerMetrics>,
}

/// A validation result (one JSON line).
#[derive(Clone, Debug, serde::Serialize)]
pub struct EvalMetrics {
    /// After this many steps.
    pub step: u64,
    /// The mean cross-entropy over query positions.
    pub val_loss: f64,
    /// The fraction of query positions predicted right.
    pub val_accuracy: f64,
}

fn layer_metrics(cfg: &ModelConfig, p: &Params<f64>, reports: &[LayerReport]) -> Vec<LayerMetrics> {
    reports
        .iter()
        .zip(&p.layers)
        .map(|(r, l)| LayerMetrics {
            engine: r.engine,
            degree: r.degree(),
            rank: r.heads.iter().map(|h| h.regime.rank).max(),
            radius: r.heads.iter().map(|h| h.regime.radius).reduce(f64::max),
            tau: cfg.cosine.map(|c| match &l.log_tau {
                Some(s) => s.iter().map(|&s| s.exp().min(c.tau_max)).collect(),
                None => vec![c.tau_init; cfg.n_heads],
            }),
        })
        .collect()
}

/// The first non-finite entry of `p` as (`prefix` + name + `[i]`, value).
fn first_non_finite(prefix: &str, p: &Params<f64>) -> Option<(String, f64)> {
    p.named().into_iter().find_map(|(n, _, d)| {
        d.iter()
            .position(|x| !x.is_finite())
            .map(|i| (format!("{prefix}{n}[{i}]"), d[i]))
    })
}

/// The sequences of a batch as model batches with the PyTorch-mean weights.
fn batches(
    task: &Mqar,
    split: Split,
    start: u64,
    count: usize,
) -> Vec<(Batch<f64>, super::mqar::Example)> {
    let exs: Vec<_> = (0..count as u64)
        .map(|b| task.example(split, start + b))
        .collect();
    let labelled: usize = exs
        .iter()
        .map(|e| e.query.iter().filter(|&&q| q).count())
        .sum();
    let w = 1.0 / labelled.max(1) as f64;
    exs.into_iter()
        .map(|e| {
            let weights = e.query.iter().map(|&q| if q { w } else { 0.0 }).collect();
            let b = Batch {
                source: Source::Tokens(e.tokens.clone()),
                target: Target::WeightedLabels(e.labels.clone(), weights),
            };
            (b, e)
        })
        .collect()
}

/// Maps an overflow inside the model to the training error (the step's tensors).
fn as_training_error(e: Error, step: u64, last: &Option<(PathBuf, u64)>) -> Error {
    let (tensor, value) = match e {
        Error::LayerNonFinite {
            layer,
            pass,
            tensor,
            value,
        } => (format!("layer {layer} ({pass}) {tensor}"), value),
        Error::NonFinite { what, index, value } => (format!("{what}{index}"), value),
        Error::Overflow {
            quantity, bound, ..
        } => (quantity, bound),
        other => return other,
    };
    non_finite(step, tensor, value, last)
}

fn non_finite(step: u64, tensor: String, value: f64, last: &Option<(PathBuf, u64)>) -> Error {
    Error::NonFiniteTraining {
        step,
        tensor,
        value,
        last_checkpoint: last.as_ref().map(|l| l.0.clone()),
        last_checkpoint_step: last.as_ref().map_or(0, |l| l.1),
    }
}

/// Mean query loss and accuracy over the first `cfg.eval_sequences` validation
/// sequences.
pub fn evaluate(cfg: &TrainConfig, params: &Params<f64>) -> Result<(f64, f64)> {
    let model = Model::new(cfg.model.clone(), params.clone())?;
    let bs = batches(&cfg.task, Split::Validation, 0, cfg.eval_sequences);
    let res: Vec<Result<(f64, usize, usize)>> = bs
        .par_iter()
        .map(|(b, e)| {
            let f = model.forward(b, &[cfg.engine])?;
            let z = model.logits(&f)?.map(|z| z.into_vec()).unwrap_or_default();
            let (r, t) = query_accuracy(&z, cfg.task.vocab, e);
            Ok((f.loss, r, t))
        })
        .collect();
    let (mut loss, mut right, mut total) = (0.0, 0, 0);
    for r in res {
        let (l, a, t) = r?;
        loss += l;
        right += a;
        total += t;
    }
    Ok((loss, right as f64 / total.max(1) as f64))
}

/// Where a run writes: the checkpoint file and the metrics sink.
pub struct Sinks<'a> {
    /// The checkpoint path (`None`: no checkpoints).
    pub checkpoint: Option<PathBuf>,
    /// One JSON line per step and per validation.
    pub metrics: &'a mut dyn Write,
}

fn emit<S: serde::Serialize>(w: &mut dyn Write, x: &S) -> Result<()> {
    let line = serde_json::to_string(x).map_err(|e| Error::InvalidParameter {
        name: "metrics",
        value: String::new(),
        reason: e.to_string(),
    })?;
    // One write of the whole line, so a sink sees whole lines.
    w.write_all(format!("{line}\n").as_bytes())
        .map_err(Error::Stdout)
}

/// Trains from `state` until `min(until, cfg.steps)` steps are taken, writing metrics
/// and checkpoints to `sinks` (a checkpoint every `cfg.checkpoint_every` steps and one
/// at the stop); returns the final state. Stopping early (`until < cfg.steps`) and
/// resuming from the checkpoint gives the run that did not stop, bit for bit.
pub fn train(
    cfg: &TrainConfig,
    mut state: TrainState,
    sinks: Sinks<'_>,
    until: u64,
) -> Result<TrainState> {
    cfg.validate()?;
    let stop = until.min(cfg.steps);
    let mut last: Option<(PathBuf, u64)> = None;
    while state.step() < stop {
        let step = state.step() + 1;
        let t0 = Instant::now();
        let model = Model::new(cfg.model.clone(), state.params.clone())?;
        let bs = batches(&cfg.task, Split::Train, state.data_position, cfg.batch_size);
        let results: Vec<Result<_>> = bs
            .par_iter()
            .map(|(b, _)| model.loss_and_gradients(b, &[cfg.engine]))
            .collect();
        let mut loss = 0.0;
        let mut grads: Option<Params<f64>> = None;
        let mut reports = Vec::new();
        for r in results {
            let (l, g) = r.map_err(|e| as_training_error(e, step, &last))?;
            loss += l;
            reports = g.reports;
            match &mut grads {
                None => grads = Some(g.params),
                Some(acc) => {
                    let src = g.params.named();
                    for ((_, _, a), (_, _, b)) in acc.slots_mut().into_iter().zip(&src) {
                        a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
                    }
                }
            }
        }
        let Some(mut grads) = grads else {
            return Err(Error::InvalidParameter {
                name: "batch_size",
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        };
        if !loss.is_finite() {
            return Err(non_finite(step, "loss".into(), loss, &last));
        }
        if let Some((t, v)) = first_non_finite("grad.", &grads) {
            return Err(non_finite(step, t, v, &last));
        }
        let grad_norm = match cfg.clip {
            Some(c) => clip_grad_norm(&mut grads, c)?,
            None => clip_grad_norm(&mut grads, f64::INFINITY)?,
        };
        let lr = cfg.schedule.lr(step - 1);
        let mut next = state.clone();
        next.opt.step(&mut next.params, &grads, lr)?;
        if let Some((t, v)) = first_non_finite("", &next.params) {
            return Err(non_finite(step, format!("updated parameter {t}"), v, &last));
        }
        next.data_position += cfg.batch_size as u64;
        state = next;
        let dt = t0.elapsed().as_secs_f64();
        let tokens = (cfg.batch_size * cfg.task.seq_len) as f64;
        emit(
            sinks.metrics,
            &StepMetrics {
                step,
                loss,
                lr,
                grad_norm,
                tokens_per_s: tokens / dt.max(1e-9),
                step_s: dt,
                layers: layer_metrics(&cfg.model, &state.params, &reports),
            },
        )?;
        if cfg.eval_every > 0 && (step.is_multiple_of(cfg.eval_every) || step == stop) {
            let (val_loss, val_accuracy) = evaluate(cfg, &state.params)?;
            emit(
                sinks.metrics,
                &EvalMetrics {
                    step,
                    val_loss,
                    val_accuracy,
                },
            )?;
        }
        let due = cfg.checkpoint_every > 0 && step.is_multiple_of(cfg.checkpoint_every);
        if let Some(path) = &sinks.checkpoint {
            if due || step == stop {
                state.save(cfg, path)?;
                last = Some((path.clone(), step));
            }
        }
    }
    Ok(state)
}
