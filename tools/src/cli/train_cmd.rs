//! `polyattn train`: trains the model of [`polyattn::model`] on multi-query associative
//! recall ([`polyattn::train`]) and writes `metrics.jsonl` (one JSON line per step and per
//! validation) and `checkpoint.safetensors` into `--out`. `--resume` continues from the
//! folder's checkpoint (same settings required: a checkpoint from another
//! configuration is refused). `--preset quick` is a run of a few seconds on 2 cores.

use clap::{Args, ValueEnum};
use polyattn::attention::poly::{Accuracy, PolyConfig};
use polyattn::error::{Error, Result};
use polyattn::model::{
    Activation, CosineAttention, EngineChoice, LossKind, ModelConfig, PolySettings,
};
use polyattn::train::{train, AdamWConfig, Mqar, Schedule, Sinks, TrainConfig, TrainState};
use std::io::Write;
use std::path::PathBuf;

/// The engine every layer runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TrainEngine {
    /// Exact attention.
    Exact,
    /// The certified polynomial engine (`--eps`).
    Poly,
    /// Polynomial where certified within the cost limits, else exact, per layer.
    Auto,
}

/// `polyattn train` options.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Output folder (created): metrics.jsonl and checkpoint.safetensors.
    #[arg(long)]
    pub out: PathBuf,
    /// Continue from the checkpoint in --out.
    #[arg(long)]
    pub resume: bool,
    /// The quick preset: 40 steps of 8 sequences, validation and a checkpoint every
    /// 20 (overrides --steps, --batch, --eval-every, --checkpoint-every); a few seconds
    /// on 2 cores with the exact engine.
    #[arg(long)]
    pub quick: bool,
    /// Attention engine.
    #[arg(long, value_enum, default_value = "exact")]
    pub engine: TrainEngine,
    /// The polynomial engine's certified accuracy per head (max |O~ - O|).
    #[arg(long, default_value_t = 1e-3)]
    pub eps: f64,
    /// The polynomial engine's gradient: the papers' (exact formula with P~
    /// substituted) or the exact gradient of the polynomial model.
    #[arg(long, value_enum, default_value = "substituted")]
    pub gradient: super::GradientArg,
    /// Cosine attention with this tau_max (learnable tau, initialised at tau_max / 2);
    /// without it, dot-product attention.
    #[arg(long)]
    pub tau_max: Option<f64>,
    /// Score width per head (default d_model / heads).
    #[arg(long)]
    pub d_qk: Option<usize>,
    /// Layers.
    #[arg(long, default_value_t = 2)]
    pub layers: usize,
    /// Heads.
    #[arg(long, default_value_t = 2)]
    pub heads: usize,
    /// Model width.
    #[arg(long, default_value_t = 32)]
    pub d_model: usize,
    /// Sequence length.
    #[arg(long, default_value_t = 32)]
    pub seq_len: usize,
    /// Key-value pairs per sequence.
    #[arg(long, default_value_t = 4)]
    pub pairs: usize,
    /// Vocabulary size.
    #[arg(long, default_value_t = 17)]
    pub vocab: usize,
    /// Sequences per step.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Steps.
    #[arg(long, default_value_t = 200)]
    pub steps: u64,
    /// Peak learning rate.
    #[arg(long, default_value_t = 3e-3)]
    pub lr: f64,
    /// Seed (data and initialisation).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Validate every this many steps.
    #[arg(long, default_value_t = 50)]
    pub eval_every: u64,
    /// Checkpoint every this many steps.
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: u64,
}

/// The run's configuration from the options.
pub fn config(a: &TrainArgs) -> TrainConfig {
    let (steps, batch, eval_every, checkpoint_every) = if a.quick {
        (40, 8, 20, 20)
    } else {
        (a.steps, a.batch, a.eval_every, a.checkpoint_every)
    };
    let settings = PolySettings {
        config: PolyConfig {
            accuracy: Accuracy::Eps(a.eps),
            ..PolyConfig::default()
        },
        kind: a.gradient.into(),
    };
    TrainConfig {
        model: ModelConfig {
            n_layers: a.layers,
            n_heads: a.heads,
            d_model: a.d_model,
            d_ff: 4 * a.d_model,
            activation: Activation::Gelu,
            layer_norm: true,
            causal: true,
            loss: LossKind::CrossEntropy,
            vocab: Some(a.vocab),
            d_qk: a.d_qk,
            cosine: a.tau_max.map(|t| CosineAttention {
                tau_max: t,
                tau_init: t / 2.0,
                learnable: true,
            }),
        },
        task: Mqar {
            vocab: a.vocab,
            seq_len: a.seq_len,
            pairs: a.pairs,
            seed: a.seed,
        },
        batch_size: batch,
        steps,
        schedule: Schedule {
            peak_lr: a.lr,
            min_lr: a.lr / 10.0,
            warmup: (steps / 10).max(1),
            total: steps,
        },
        adamw: AdamWConfig::default(),
        clip: Some(1.0),
        init_seed: a.seed,
        engine: match a.engine {
            TrainEngine::Exact => EngineChoice::Exact,
            TrainEngine::Poly => EngineChoice::Poly(settings),
            TrainEngine::Auto => EngineChoice::Auto(settings),
        },
        eval_every,
        eval_sequences: 64,
        checkpoint_every,
    }
}

/// Runs `polyattn train`.
pub fn run(a: &TrainArgs) -> Result<()> {
    let cfg = config(a);
    let io = |action: &'static str, path: PathBuf| {
        move |source| Error::Io {
            action,
            path,
            source,
        }
    };
    std::fs::create_dir_all(&a.out).map_err(io("write", a.out.clone()))?;
    let ckpt = a.out.join("checkpoint.safetensors");
    let metrics_path = a.out.join("metrics.jsonl");
    let state = if a.resume {
        let st = TrainState::load(&cfg, &ckpt)?;
        // Lines of steps after the checkpoint (a run stopped between checkpoints) are
        // dropped: the resumed run writes them again.
        let old = std::fs::read_to_string(&metrics_path).unwrap_or_default();
        let kept: String = old
            .lines()
            .filter(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .ok()
                    .and_then(|v| v["step"].as_u64())
                    .is_some_and(|s| s <= st.step())
            })
            .map(|l| format!("{l}\n"))
            .collect();
        polyattn::output::write_file(&metrics_path, kept.as_bytes())?;
        st
    } else {
        TrainState::new(&cfg)?
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(a.resume)
        .write(true)
        .truncate(!a.resume)
        .open(&metrics_path)
        .map_err(io("write", metrics_path.clone()))?;
    let mut tee = Tee {
        file: &mut file,
        every: cfg.eval_every.max(1),
    };
    let end = train(
        &cfg,
        state,
        Sinks {
            checkpoint: Some(ckpt.clone()),
            metrics: &mut tee,
        },
        u64::MAX,
    )?;
    let mut out = std::io::stdout();
    writeln!(
        out,
        "trained {} steps; metrics {}, checkpoint {}",
        end.step(),
        metrics_path.display(),
        ckpt.display()
    )
    .map_err(Error::Stdout)
}

/// Writes every line to the metrics file and the validation lines (and every
/// `every`-th step) to stdout as a progress log.
struct Tee<'a> {
    file: &'a mut std::fs::File,
    every: u64,
}

impl Write for Tee<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write_all(buf)?;
        let text = String::from_utf8_lossy(buf);
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let step = v["step"].as_u64().unwrap_or(0);
            if v.get("val_accuracy").is_some() || step.is_multiple_of(self.every) {
                let mut o = std::io::stdout();
                writeln!(o, "{line}")?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}
