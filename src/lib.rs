//! # polyattn
//!
//! Transformer attention, forward and backward, computed exactly (tiled, online
//! softmax, never an `n x n` matrix) and approximately in almost linear time by the
//! polynomial method, with error bounds certified against an arbitrary-precision
//! reference (the `polyattn-spec` crate).
//!
//! The formulas are those of `docs/math.md`; each module cites its section.
//!
//! Modules:
//! - `attention`: the exact engine and the polynomial engine, one head or many, and
//!   their error bounds (docs/math.md §1-§4);
//! - `model`: a multi-layer transformer whose attention runs through either engine,
//!   and the propagated error bound (docs/math.md §7);
//! - `certify`: certified errors against enclosures of the exact result
//!   (docs/math.md §5);
//! - `io_model`: attention's I/O complexity in a simulated two-level memory
//!   (docs/math.md §8);
//! - `cuda` (feature `cuda`): the f16 GPU kernels and their rounding allowances;
//! - `simd`: the vectorised tile kernels and `exp` of the exact engine;
//! - `scalar`, `tensor`: the number types and the matrices everything works on;
//! - `io`, `output`, `memory`: safetensors files, safe file writing, memory limits;
//! - `cli`, `harness`, `plot`: the command line, the sweeps and their charts;
//! - `fuzzing`: the properties the fuzz targets check; `rng`: a seeded generator;
//! - `error`: the crate's one error type.
//!
//! ```
//! use polyattn::attention::{exact, AttentionConfig, Mask};
//! use polyattn::tensor::Matrix;
//!
//! let q = Matrix::from_fn(4, 2, |i, j| (i + j) as f64 * 0.1).unwrap();
//! let k = Matrix::from_fn(5, 2, |i, j| (i * j) as f64 * 0.2).unwrap();
//! let v = Matrix::from_fn(5, 3, |i, j| i as f64 - j as f64).unwrap();
//! let cfg = AttentionConfig { scale: None, mask: Mask::CausalBottomRight };
//! let out = exact::forward(q.view(), k.view(), v.view(), &cfg).unwrap();
//! assert_eq!(out.o.shape(), [4, 3]);
//! ```

pub mod attention;
pub mod certify;
pub mod cli;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod error;
pub mod fuzzing;
pub mod harness;
pub mod io;
pub mod io_model;
pub mod memory;
pub mod model;
pub mod output;
pub mod plot;
pub mod rng;
pub mod scalar;
pub mod simd;
pub mod storage;
pub mod tensor;
pub mod train;

pub use error::{Error, Result};
pub use scalar::Real;
