//! # polyattn
//!
//! Transformer attention, forward and backward, computed exactly (tiled, online
//! softmax, never an `n x n` matrix) and, in later modules, approximately in almost
//! linear time by the polynomial method, with error bounds certified against an
//! arbitrary-precision reference (the `polyattn-spec` crate).
//!
//! The formulas are those of the design notes' MATH.md; each module cites its section.
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
pub mod model;
pub mod plot;
pub mod rng;
pub mod scalar;
pub mod simd;
pub mod storage;
pub mod tensor;

pub use error::{Error, Result};
pub use scalar::Real;
