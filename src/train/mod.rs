//! Training the model of [`crate::model`] (docs/math.md §7.5): AdamW with decoupled
//! weight decay, global-norm clipping and a warm-up + cosine schedule ([`optim`]); the
//! multi-query associative recall task ([`mqar`]); the seeded, bit-reproducible loop with
//! JSON-lines metrics and resumable safetensors checkpoints ([`run`]).
//!
//! The loss of a step is PyTorch's `cross_entropy(reduction = "mean", ignore_index)`
//! over the batch: the sum of the per-position losses at the labelled (query) positions
//! of all the batch's sequences, divided by their number. Every layer runs the engine
//! the run asks for ([`crate::model::EngineChoice`]); with cosine attention
//! ([`crate::model::CosineAttention`]) the polynomial engine plans for `R = tau_max`.

pub mod mqar;
pub mod optim;
pub mod run;

pub use mqar::{Mqar, Split};
pub use optim::{clip_grad_norm, AdamW, AdamWConfig, Schedule};
pub use run::{evaluate, train, Sinks, TrainConfig, TrainState};
