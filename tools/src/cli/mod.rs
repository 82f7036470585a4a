//! The `polyattn` command line: argument types and the subcommands.
//!
//! Each subcommand returns `Result<(), Error>`; `main` prints one line for an error and
//! exits with status 1 (usage errors: clap's message and status 2). Nothing here
//! computes attention: it reads inputs, calls the library, and writes or prints
//! results. Everything printed goes through `outln!`/`out!`, which return
//! [`Error::Stdout`](polyattn::Error::Stdout) instead of panicking when standard output
//! cannot be written (a closed pipe, a full device).

/// Like `println!`, but a failed write returns `Err(Error::Stdout)` from the enclosing
/// function (which must return `Result<_, Error>`) instead of panicking.
macro_rules! outln {
    () => {
        $crate::cli::write_stdout(format_args!("\n"))?
    };
    ($($t:tt)*) => {
        $crate::cli::write_stdout(format_args!("{}\n", format_args!($($t)*)))?
    };
}

/// Like `print!`, with `outln!`'s error handling.
macro_rules! out {
    ($($t:tt)*) => {
        $crate::cli::write_stdout(format_args!($($t)*))?
    };
}

/// Writes to standard output and flushes (so that a closed pipe is seen at once and
/// the run stops instead of computing for nobody).
pub fn write_stdout(args: std::fmt::Arguments) -> polyattn::Result<()> {
    use std::io::Write;
    let mut o = std::io::stdout().lock();
    o.write_fmt(args)
        .and_then(|()| o.flush())
        .map_err(polyattn::Error::Stdout)
}

pub mod attention_cmd;
pub mod certify_cmd;
pub mod demo;
pub mod demo_model;
#[cfg(feature = "certify")]
pub mod lemmas;
pub mod model_cmd;
pub mod sweep;
pub mod train_cmd;

use clap::{Parser, Subcommand, ValueEnum};
use polyattn::attention::Mask;
use std::path::PathBuf;

/// Exact and polynomial-method attention with certified errors.
#[derive(Debug, Parser)]
#[command(
    name = "polyattn",
    version,
    about = "Exact and polynomial-method transformer attention with certified error bounds"
)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
    /// The most memory a run may use (e.g. 8G, 512M); a run whose estimated peak is
    /// larger is refused before it starts. Default: the smaller of MemAvailable and
    /// the cgroup's limit less its use.
    #[arg(long, global = true, value_parser = crate::memory::parse_size)]
    pub max_memory: Option<u64>,
}

/// The memory limit this process runs under (set once by the binary from
/// `--max-memory`; else what the machine leaves).
static MAX_MEMORY: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();

/// Records `--max-memory` (the first call wins).
pub fn set_max_memory(bytes: Option<u64>) {
    let _ = MAX_MEMORY.set(bytes);
}

/// Refuses a run whose estimated peak, `bytes`, exceeds the limit in force.
pub fn check_memory(what: &str, bytes: f64) -> polyattn::Result<()> {
    let requested = MAX_MEMORY.get().copied().flatten();
    crate::memory::check(what, bytes, crate::memory::limit(requested).as_ref())
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the built-in demonstration on a seeded random multi-head causal problem.
    Demo(demo::DemoArgs),
    /// Attention forward (and backward when `do` is given) on tensors from a file.
    Attention(AttentionArgs),
    /// Certify the polynomial engine on a file: certified errors of O (and dQ, dK, dV)
    /// against exact attention, a priori bounds, regimes; JSON, Markdown and a plot.
    /// With --candidate: certify someone else's results (FlashAttention, PyTorch, ...)
    /// against exact attention, with FlashAttention's acceptance rule.
    Certify(certify_cmd::CertifyArgs),
    /// Loss and gradients of a multi-layer transformer (every parameter and the input),
    /// attention through the exact or the polynomial engine; `--init` writes starting
    /// files.
    Model(model_cmd::ModelArgs),
    /// Train the model on multi-query associative recall (exact or polynomial engine,
    /// cosine attention with a capped temperature); metrics and checkpoints in --out.
    Train(train_cmd::TrainArgs),
    /// Parameter sweeps that write tables, JSON and plots (`sweep io`).
    Sweep(sweep::SweepArgs),
    /// The lemma register: every lemma of ML24/AS24 checked against the reference oracle.
    #[cfg(feature = "certify")]
    Lemmas(lemmas::LemmasArgs),
}

/// Arguments of `polyattn attention`.
#[derive(Debug, clap::Args)]
pub struct AttentionArgs {
    /// Input safetensors file with tensors `q`, `k`, `v` and optionally `do`.
    #[arg(long)]
    pub input: PathBuf,
    /// Output safetensors file: `o`, `lse`, and `dq`, `dk`, `dv` when `do` was given.
    #[arg(long)]
    pub output: PathBuf,
    /// The mask and window.
    #[command(flatten)]
    pub mask: MaskOpts,
    /// The score scale tau (default 1/sqrt(d)).
    #[arg(long, allow_hyphen_values = true)]
    pub scale: Option<f64>,
    /// Score softcapping C: each score s = tau q.k becomes C tanh(s / C) before the
    /// bias and the mask (Gemma 2; FlashAttention's softcap; 0 means none, as there).
    /// Exact engine only: poly refuses it, auto falls back.
    #[arg(long, allow_hyphen_values = true)]
    pub softcap: Option<f64>,
    /// The engine: exact, poly (polynomial method; refuses inputs it cannot certify),
    /// or auto (poly when it is certified and predicted faster, else exact).
    #[arg(long, value_enum, default_value_t = EngineArg::Exact)]
    pub engine: EngineArg,
    /// Polynomial-engine options.
    #[command(flatten)]
    pub poly: PolyArgs,
}

/// Options of the polynomial engine shared by the subcommands that run it.
#[derive(Debug, clap::Args)]
pub struct PolyArgs {
    /// Polynomial engine: target bound on max |O~ - O| (absolute, entrywise).
    #[arg(long, conflicts_with = "degree", allow_hyphen_values = true)]
    pub eps: Option<f64>,
    /// Polynomial engine: use this degree and report the bound it certifies.
    #[arg(long)]
    pub degree: Option<usize>,
    /// Polynomial engine: which approximate gradient (see the README).
    #[arg(long, value_enum, default_value_t = GradientArg::Substituted)]
    pub gradient: GradientArg,
    /// Polynomial engine: refuse when its predicted FLOPs exceed this multiple of the
    /// exact engine's. Default: no limit when the engine is named (`--engine poly`
    /// runs whatever it can certify within the rank limit; the predicted cost is
    /// printed on stderr and recorded), 1 for `--engine auto` (poly only where
    /// predicted faster).
    #[arg(long)]
    pub max_cost_ratio: Option<f64>,
}

impl PolyArgs {
    /// The engine configuration these options and a mask/scale describe.
    pub fn config(&self, mask: Mask, scale: Option<f64>) -> polyattn::attention::poly::PolyConfig {
        use polyattn::attention::poly::{Accuracy, PolyConfig};
        PolyConfig {
            scale,
            mask,
            accuracy: match (self.eps, self.degree) {
                (_, Some(g)) => Accuracy::Degree(g),
                (Some(e), None) => Accuracy::Eps(e),
                (None, None) => PolyConfig::default().accuracy,
            },
            max_cost_ratio: self.max_cost_ratio.unwrap_or(f64::INFINITY),
            // A ratio the user named is a hard limit: the library's floor (small
            // problems are never refused for cost) does not apply to it.
            cost_floor_flops: if self.max_cost_ratio.is_some() {
                0.0
            } else {
                PolyConfig::default().cost_floor_flops
            },
            ..PolyConfig::default()
        }
    }
}

/// The polynomial engine's gradient kinds on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GradientArg {
    /// The exact gradient formula with P~ substituted for P (the papers' gradient).
    Substituted,
    /// The exact gradient of the polynomial model (autodiff of the approximate forward).
    PolynomialModel,
}

impl From<GradientArg> for polyattn::attention::poly::GradientKind {
    fn from(g: GradientArg) -> Self {
        match g {
            GradientArg::Substituted => Self::Substituted,
            GradientArg::PolynomialModel => Self::PolynomialModel,
        }
    }
}

/// Mask names on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MaskArg {
    /// No mask.
    None,
    /// Causal, top-left aligned: key j visible to query i iff j <= i.
    Causal,
    /// Causal, bottom-right aligned: j <= i + n_k - n_q.
    CausalBottomRight,
}

impl From<MaskArg> for Mask {
    fn from(m: MaskArg) -> Self {
        match m {
            MaskArg::None => Mask::None,
            MaskArg::Causal => Mask::CausalTopLeft,
            MaskArg::CausalBottomRight => Mask::CausalBottomRight,
        }
    }
}

/// The mask options shared by the subcommands that compute attention.
#[derive(Debug, Clone, clap::Args)]
pub struct MaskOpts {
    /// The mask.
    #[arg(long, value_enum, default_value_t = MaskArg::None)]
    pub mask: MaskArg,
    /// A sliding window LEFT,RIGHT (FlashAttention's window_size; -1 = unbounded): key
    /// j is visible to query i iff c - LEFT <= j <= c + RIGHT, c = i + n_k - n_q
    /// (bottom-right aligned, FlashAttention's convention). With --mask causal the
    /// window is top-left aligned (c = i) and RIGHT is capped at 0, with
    /// --mask causal-bottom-right RIGHT is capped at 0. The exact and the polynomial
    /// engine (its range form, about twice the unmasked cost) take it.
    #[arg(long, value_name = "LEFT,RIGHT", value_parser = parse_window, allow_hyphen_values = true)]
    pub window: Option<(Option<usize>, Option<usize>)>,
}

impl MaskOpts {
    /// The engine's mask these options describe.
    pub fn mask(&self) -> Mask {
        let base = Mask::from(self.mask);
        match self.window {
            None => base,
            Some((l, r)) => base.with_window(l, r, polyattn::attention::Alignment::BottomRight),
        }
    }
}

/// Parses `LEFT,RIGHT` with `-1` for an unbounded side (clap shows the message).
/// `--softcap C` as the engine takes it: FlashAttention's convention that a softcap
/// of 0 means none (`softcap=0.0` is its default), anything else passed on (and
/// validated by the engine: finite, normal, positive).
pub fn softcap_of(arg: Option<f64>) -> Option<f64> {
    arg.filter(|&c| c != 0.0)
}

fn parse_window(s: &str) -> std::result::Result<(Option<usize>, Option<usize>), String> {
    polyattn::attention::parse_window(s).map_err(|e| e.to_string())
}

/// Engine names on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EngineArg {
    /// The tiled exact engine.
    Exact,
    /// The polynomial engine (refuses what it cannot certify).
    Poly,
    /// The polynomial engine where certified and predicted faster, else exact.
    Auto,
}
