//! The properties the fuzz campaigns check (the `fuzz/` crate, cargo-fuzz), kept in the
//! library so that the fuzz targets and the ordinary test `tests/fuzz_replay.rs` run
//! the same code: every corpus file and every regression input is replayed on stable
//! `cargo test`.
//!
//! Each target has a structured input built from raw bytes by the `arbitrary` crate
//! (`Arbitrary::arbitrary_take_rest`, as libFuzzer's `fuzz_target!` does) and a check
//! that returns an [`Outcome`] (what the input exercised) or a [`Violation`] (the
//! property failed; the fuzz target panics with it so libFuzzer records a crash):
//!
//! - [`poly_bound`]: the polynomial engine either refuses with a typed
//!   [`Error::PolyRefused`](polyattn::Error::PolyRefused) or its output and gradients lie
//!   within their certified bounds of the f64 exact reference widened by the
//!   reference's own rounding bound ([`polyattn::attention::exact::reference::exact_reference`]).
//! - `enclosure` (feature `certify`): the exact engine against the 128-bit MPFR
//!   enclosure of `polyattn-spec`, widened by the derived rounding allowance
//!   ([`enclosure::allowance`]), at scores up to |S| = 700.
//! - [`files`]: arbitrary bytes through the safetensors reader and the attention input
//!   loader, and arbitrary model configurations and weight files through the model
//!   loader: always `Ok` or a typed error, never a panic.

#[cfg(feature = "cuda")]
pub mod cuda_allowance;
#[cfg(feature = "certify")]
pub mod enclosure;
pub mod files;
pub mod poly_bound;
pub mod report_plot;

use arbitrary::{Arbitrary, Unstructured};
use serde::Serialize;

/// A failed property: what was checked, on which input, and by how much it failed.
#[derive(Clone, Debug, PartialEq)]
pub struct Violation(pub String);

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Violation {}

/// What one input exercised (for the campaign report's explored ranges).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Outcome {
    /// Sequence length n = max(n_q, n_k), when the input is an attention problem.
    pub n: Option<usize>,
    /// The entry bound B = max |entry| of Q and K actually drawn.
    pub entry_bound: Option<f64>,
    /// The largest |score| (exact_vs_reference) or the certified radius R (poly_bound).
    pub score_radius: Option<f64>,
    /// A typed refusal or error, when the engine or loader declined the input.
    pub refused: Option<String>,
    /// Degree chosen by the planner (poly_bound).
    pub degree: Option<usize>,
    /// Largest measured error / allowed error over all checked entries (at most 1).
    pub tightness: Option<f64>,
}

/// The fuzz targets, by the names of their `fuzz/fuzz_targets/*.rs` files.
pub const TARGETS: [&str; 5] = [
    "poly_bound",
    "exact_vs_reference",
    "safetensors_input",
    "model_config",
    "report_plot",
];

/// Decodes `bytes` as `T` the way libFuzzer's `fuzz_target!` does; `None` when the
/// bytes do not decode (the fuzz target then returns without checking anything).
pub fn decode<'a, T: Arbitrary<'a>>(bytes: &'a [u8]) -> Option<T> {
    T::arbitrary_take_rest(Unstructured::new(bytes)).ok()
}

/// Runs target `target`'s check on raw `bytes`: `Ok(None)` when the bytes do not
/// decode, `Ok(Some(outcome))` when the property holds, `Err` when it fails. Unknown
/// target names are a violation (a misnamed corpus folder must not pass silently).
pub fn run_target(target: &str, bytes: &[u8]) -> Result<Option<Outcome>, Violation> {
    match target {
        "poly_bound" => decode::<poly_bound::PolyBoundInput>(bytes)
            .map(|x| poly_bound::check(&x))
            .transpose(),
        #[cfg(feature = "certify")]
        "exact_vs_reference" => decode::<enclosure::ExactInput>(bytes)
            .map(|x| enclosure::check(&x))
            .transpose(),
        "safetensors_input" => decode::<files::SafetensorsInput>(bytes)
            .map(|x| files::check_safetensors(&x))
            .transpose(),
        "model_config" => decode::<files::ModelInput>(bytes)
            .map(|x| files::check_model(&x))
            .transpose(),
        "report_plot" => decode::<report_plot::ReportPlotInput>(bytes)
            .map(|x| report_plot::check(&x))
            .transpose(),
        #[cfg(not(feature = "certify"))]
        "exact_vs_reference" => Ok(None), // needs the MPFR reference (feature `certify`)
        other => Err(Violation(format!("unknown fuzz target `{other}`"))),
    }
}

/// The decoded structured input of `bytes` for `target`, as `Debug` text (for crash
/// reports); "undecodable" when the bytes do not decode.
pub fn describe(target: &str, bytes: &[u8]) -> String {
    fn show<'a, T: Arbitrary<'a> + std::fmt::Debug>(b: &'a [u8]) -> String {
        decode::<T>(b).map_or_else(|| "undecodable".to_string(), |x| format!("{x:#?}"))
    }
    match target {
        "poly_bound" => show::<poly_bound::PolyBoundInput>(bytes),
        #[cfg(feature = "certify")]
        "exact_vs_reference" => show::<enclosure::ExactInput>(bytes),
        "safetensors_input" => show::<files::SafetensorsInput>(bytes),
        "model_config" => show::<files::ModelInput>(bytes),
        "report_plot" => show::<report_plot::ReportPlotInput>(bytes),
        other => format!("unknown target {other}"),
    }
}

/// `lo * (hi / lo)^t` for `t` in [0, 1] taken from a `u16`: log-uniform spread.
pub(crate) fn log_spread(u: &mut Unstructured<'_>, lo: f64, hi: f64) -> arbitrary::Result<f64> {
    let t = f64::from(u.arbitrary::<u16>()?) / f64::from(u16::MAX);
    Ok(lo * (hi / lo).powf(t))
}

/// One of `items`, chosen by one byte.
pub(crate) fn pick<T: Copy>(u: &mut Unstructured<'_>, items: &[T]) -> arbitrary::Result<T> {
    Ok(*u.choose(items)?)
}

/// `|got - want| <= allowed` with a margin for evaluating the comparison itself in
/// f64: the subtraction and the sum forming `allowed` each round by at most a relative
/// 2^-53, so `(1 + 4u)` covers both. NaN anywhere fails.
pub(crate) fn within(got: f64, want: f64, allowed: f64) -> bool {
    let u = f64::EPSILON / 2.0;
    (got - want).abs() <= allowed * (1.0 + 4.0 * u)
}

/// Checks `got` against `want` entry by entry with allowance `a + b`; returns the
/// worst `|got - want| / (a + b)` or a violation naming the worst entry.
pub(crate) fn check_entries(
    what: &str,
    got: &[f64],
    want: &[f64],
    bound: &[f64],
    ref_bound: &[f64],
) -> Result<f64, Violation> {
    if got.len() != want.len() || bound.len() != got.len() || ref_bound.len() != got.len() {
        return Err(Violation(format!(
            "{what}: lengths differ (got {}, reference {}, bound {}, reference bound {})",
            got.len(),
            want.len(),
            bound.len(),
            ref_bound.len()
        )));
    }
    let mut tight: f64 = 0.0;
    for (i, (((&g, &w), &b), &rb)) in got.iter().zip(want).zip(bound).zip(ref_bound).enumerate() {
        if !g.is_finite() {
            return Err(Violation(format!("{what}[{i}] = {g} is not finite")));
        }
        if b.is_nan() || b < 0.0 {
            return Err(Violation(format!(
                "{what}[{i}]: certified bound {b} is not a non-negative number"
            )));
        }
        let allowed = b + rb;
        if !within(g, w, allowed) {
            return Err(Violation(format!(
                "{what}[{i}] = {g:e}, reference {w:e}: |difference| {:e} exceeds certified bound {b:e} + reference rounding bound {rb:e}",
                (g - w).abs()
            )));
        }
        if allowed > 0.0 && allowed.is_finite() {
            tight = tight.max((g - w).abs() / allowed);
        }
    }
    Ok(tight)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn within_rejects_nan_and_excess() {
        assert!(within(1.0, 1.0, 0.0));
        assert!(within(1.0, 1.5, 0.5));
        assert!(!within(1.0, 1.5, 0.25));
        assert!(!within(f64::NAN, 1.0, 1.0));
        assert!(!within(1.0, 1.0, f64::NAN));
    }

    #[test]
    fn check_entries_names_the_worst_entry() {
        let ok = check_entries("o", &[1.0, 2.0], &[1.0, 2.5], &[0.0, 1.0], &[0.0, 0.0]);
        assert_eq!(ok, Ok(0.5));
        let bad = check_entries("o", &[1.0, 2.0], &[1.0, 2.5], &[0.0, 0.1], &[0.0, 0.1]);
        assert!(bad.unwrap_err().0.starts_with("o[1]"));
        assert!(check_entries("o", &[f64::INFINITY], &[1.0], &[1.0], &[1.0]).is_err());
    }

    #[test]
    fn unknown_target_is_a_violation() {
        assert!(run_target("no_such_target", &[0u8; 8]).is_err());
    }
}
