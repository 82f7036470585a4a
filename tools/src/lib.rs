//! # polyattn-tools
//!
//! Everything around the `polyattn` engine that a library user does not need: the
//! `polyattn` command line ([`cli`]), certified error reports against the
//! arbitrary-precision reference of `polyattn-spec` ([`certify`]), the sweeps that
//! measure the papers' claims ([`harness`]) and their charts ([`plot`]), the tables and number formats of both ([`table`]), the
//! properties the fuzz targets check ([`fuzzing`]), the input files' conventions
//! (the stacked-tensor loader, shapes, score biases: [`inputs`]) and the run's memory
//! limit ([`memory`]). Imports point down only: this crate uses `polyattn` and
//! `polyattn-spec`; neither names it.
//!
//! Feature `certify` (default) links the MPFR reference (`rug`, GMP and MPFR built
//! from source); without it certification falls back to the engine's f64 enclosure
//! and says so. Feature `cuda` forwards to the engine's CUDA path.

pub mod certify;
pub mod cli;
pub mod fuzzing;
pub mod harness;
pub mod inputs;
pub mod memory;
pub mod plot;
pub mod table;
