//! # polyattn
//!
//! The engine: transformer attention, forward and backward, computed exactly (tiled,
//! online softmax, never an `n x n` matrix) and approximately in almost linear time by
//! the polynomial method, each with an a priori bound on its error; a multi-layer
//! transformer whose attention runs through either engine. No command line, plots or
//! arbitrary-precision arithmetic live here: the `polyattn` binary, the sweeps and the
//! certification reports are the `polyattn-tools` crate (`tools/`), and the
//! arbitrary-precision reference everything is checked against is `polyattn-spec`
//! (`spec/`), which this crate never depends on (it is only a dev-dependency of the
//! tests).
//!
//! The formulas are those of `docs/math.md`; each module cites its section.
//!
//! Modules:
//! - `attention`: the exact engine (with its f64 enclosure of exact attention,
//!   `attention::exact::reference`) and the polynomial engine, one head or many, and
//!   their error bounds (docs/math.md §1-§4, §5.3);
//! - `model`: a multi-layer transformer whose attention runs through either engine,
//!   and the propagated error bound (docs/math.md §7);
//! - `io_model`: attention's I/O complexity in a simulated two-level memory
//!   (docs/math.md §8);
//! - `cuda` (feature `cuda`): the f16 GPU kernels and their rounding allowances;
//! - `simd`: the vectorised tile kernels and `exp` of the exact engine;
//! - `scalar`, `tensor`: the number types and the matrices everything works on;
//! - `io`, `storage`, `output`: safetensors files (f64, f32, f16, bf16), and writing
//!   files atomically;
//! - `train`: training the model (AdamW, schedules, clipping, the recall task,
//!   checkpoints; docs/math.md §7.4-§7.5);
//! - `rounding`: unit roundoffs and `gamma_k`, shared by every rounding bound;
//! - `rng`: a seeded generator; `error`: the crate's one error type.
//!
//! ```
//! use polyattn::attention::{exact, AttentionConfig, Mask};
//! use polyattn::tensor::Matrix;
//!
//! let q = Matrix::from_fn(4, 2, |i, j| (i + j) as f64 * 0.1).unwrap();
//! let k = Matrix::from_fn(5, 2, |i, j| (i * j) as f64 * 0.2).unwrap();
//! let v = Matrix::from_fn(5, 3, |i, j| i as f64 - j as f64).unwrap();
//! let cfg = AttentionConfig { scale: None, mask: Mask::CausalBottomRight, softcap: None };
//! let out = exact::forward(q.view(), k.view(), v.view(), &cfg).unwrap();
//! assert_eq!(out.o.shape(), [4, 3]);
//! ```

pub mod attention;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod error;
pub mod io;
pub mod io_model;
pub mod model;
pub mod output;
pub mod rng;
pub mod rounding;
pub mod scalar;
pub mod simd;
pub mod storage;
pub mod tensor;
pub mod train;

pub use error::{Error, Result};
pub use scalar::Real;
