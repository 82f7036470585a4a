//! Shared test support: seeded problems, a plain f64 reference for magnitudes, the
//! derived rounding allowance of the exact engine, and the enclosure check. The code
//! lives in the library (`polyattn_tools::fuzzing::enclosure`, shared with the
//! `exact_vs_reference` fuzz target); the wrappers here panic instead of returning a
//! violation, as tests want.
#![allow(dead_code, unused_imports)]

use polyattn::Real;
use polyattn_spec::Interval;
use polyattn_tools::fuzzing::enclosure as lib;
pub use polyattn_tools::fuzzing::enclosure::{
    allowance, case, reference, spec_mask, spec_problem, tau_of, Allowance, Case, Computed,
    Enclosures, Reference,
};

/// Runs the exact engine in `T`; panics on an engine error.
pub fn run_engine<T: Real>(c: &Case) -> Computed {
    lib::run_engine::<T>(c).unwrap_or_else(|e| panic!("exact engine: {e}"))
}

/// MPFR enclosures at 128 bits of the exact results for dtype `T`'s inputs and tau.
pub fn enclosures<T: Real>(c: &Case) -> Enclosures {
    lib::enclosures::<T>(c).unwrap_or_else(|e| panic!("{e}"))
}

/// For one tensor: the worst `outside / allowance`, the worst tightness, and the
/// index of the worst excess (see the library's `worst_excess`).
pub fn worst_excess(name: &str, ys: &[f64], ivs: &[Interval], allow: &[f64]) -> (f64, f64, usize) {
    lib::worst_excess(name, ys, ivs, allow).unwrap_or_else(|e| panic!("{e}"))
}

/// Checks every output of the engine in `T` against the spec enclosure widened by the
/// derived allowance; returns the worst tightness; panics on a violation.
pub fn check_case<T: Real>(c: &Case) -> f64 {
    lib::check_case::<T>(c).unwrap_or_else(|e| panic!("{e}"))
}

/// [`check_case`] for given results; panics on a violation.
pub fn check_against(c: &Case, got: &Computed, enc: &Enclosures, allow: &Allowance) -> f64 {
    lib::check_against(c, got, enc, allow).unwrap_or_else(|e| panic!("{e}"))
}
