//! `polyattn-spec`: the arbitrary-precision reference for `polyattn`.
//!
//! This crate states the mathematics of `docs/math.md` (in the repository
//! root) as executable code whose answers are *certified*: every real-valued
//! result is an [`Interval`] with MPFR end points, rounded outwards, that is
//! guaranteed to contain the exact real value (docs/math.md §5.2). The
//! production crate's fast `f16`/`f32`/`f64` results are judged against these
//! enclosures.
//!
//! A reference is only useful if it is independent of what it checks, so this
//! crate never depends on the production crate `polyattn` and shares no code
//! with it: the formulas here are written from docs/math.md directly, and gradients
//! are checked against a second, formula-free route (forward-mode [`dual`]
//! numbers over intervals) rather than against another closed form.
//!
//! Modules:
//! * [`interval`]: the enclosure type [`Interval`] over `rug::Float`.
//! * [`ball`]: double-double midpoint-radius balls, a faster enclosure type for
//!   references too large for MPFR (docs/math.md §5.2).
//! * [`dual`]: dual numbers over intervals, the derivative oracle.
//! * [`attention`]: single-head attention forward, closed-form backward and
//!   the dual-number gradient oracle (docs/math.md §2).
//! * [`linalg`]: generic matrix algebra over intervals, dual numbers and exact
//!   rationals (products, Hadamard and row-wise Kronecker products, the
//!   polynomial kernel and its low-rank factors, enclosure comparison).
//! * [`ml24`] and [`as24`]: one function per lemma of the two papers
//!   (docs/math.md §6), corrected and, where misprinted, as printed.
//! * [`as24_lower`]: AS24's lower-bound side (Appendix E) on small hard
//!   instances: the derivative bounds of Lemma E.3, the Riemann sum of Lemma
//!   E.4 and the reduction of Theorem 1.5 / E.5.
//! * [`bounds`]: certified comparison of a measured quantity with a stated
//!   bound, for the lemmas that state inequalities.
//! * [`poly_attention`]: attention and both approximate gradients with a
//!   polynomial in place of `exp`, by the direct `O(n^2)` formulas in exact
//!   rationals (docs/math.md §3.5, §5.1).
//! * [`model`]: the multi-layer transformer, forward and every gradient, in
//!   intervals, dual numbers and balls (docs/math.md §7); one file per job
//!   (configuration, parameter names, random instances, the number trait,
//!   forward, closed-form backward, dual-number oracle, precision search).
//! * [`instance`]: seeded random test instances with exact dyadic entries.
//! * [`rng`]: the one seeded generator (SplitMix64) of the instances, models and tests.
//! * [`register`]: the lemma register, every status measured by running the
//!   lemma functions against the oracle (the table, the probes and the
//!   Markdown/JSON/text renderings in separate files).
//!
//! # Example
//!
//! ```
//! use nalgebra::DMatrix;
//! use polyattn_spec::attention::{backward, forward, gradients_by_dual_numbers, Mask, Problem};
//! use polyattn_spec::DEFAULT_PREC;
//!
//! let p = Problem {
//!     q: DMatrix::from_row_slice(2, 2, &[0.5, -1.0, 2.0, 0.25]),
//!     k: DMatrix::from_row_slice(3, 2, &[1.0, 0.0, -0.5, 1.5, 0.75, 0.75]),
//!     v: DMatrix::from_row_slice(3, 1, &[1.0, -2.0, 4.0]),
//!     tau: 1.0 / 2f64.sqrt(),
//!     mask: Mask::CausalBottomRight,
//!     softcap: None,
//! };
//! let f = forward(&p, DEFAULT_PREC)?;
//! assert!(f.o[(0, 0)].width_f64() < 1e-30);
//!
//! let d_o = DMatrix::from_element(2, 1, 1.0);
//! let closed = backward(&p, &d_o, DEFAULT_PREC)?;
//! let oracle = gradients_by_dual_numbers(&p, &d_o, DEFAULT_PREC)?;
//! assert!(closed.dq.iter().zip(oracle.dq.iter()).all(|(a, b)| a.overlaps(b)));
//! # Ok::<(), polyattn_spec::attention::SpecError>(())
//! ```

#![warn(missing_docs)]

pub mod as24;
pub mod as24_lower;
pub mod attention;
pub mod ball;
pub mod bounds;
pub mod dual;
pub mod instance;
pub mod interval;
pub mod linalg;
pub mod ml24;
pub mod model;
pub mod poly_attention;
pub mod register;
pub mod rng;

pub use interval::{Interval, DEFAULT_PREC};
