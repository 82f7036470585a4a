//! Width control: the largest relative width of a gradient set, and the
//! search for a working precision that reaches a target width.

use crate::attention::SpecError;
use crate::interval::Interval;
use crate::linalg::degenerate;

use super::backward::gradients;
use super::config::*;

/// The largest relative width among the matrices of `g`: for each matrix, its
/// widest entry's width divided by its largest magnitude (a matrix whose
/// entries are all points counts as `0`). This is the measure used by
/// [`gradients_to_width`] and by the tests.
pub fn max_relative_width(g: &Gradients) -> f64 {
    g.values()
        .map(|m| {
            let w = m.iter().map(Interval::width_f64).fold(0.0, f64::max);
            let s = m.iter().map(Interval::mag).fold(0.0, f64::max);
            if w == 0.0 {
                0.0
            } else if s > 0.0 {
                w / s
            } else {
                f64::INFINITY
            }
        })
        .fold(0.0, f64::max)
}

/// [`gradients`] at the least precision this search finds that brings
/// [`max_relative_width`] to at most `rel_width`, and that precision.
///
/// Why: inputs are exact, so every width comes from rounding, amplified
/// through the layers by interval arithmetic's absolute-value bounds (roughly
/// the product over the pieces of `|W|` norms, forward and back). The
/// amplification does not depend on the precision, so widths scale as
/// `2^-prec`: at 128 bits they are near `1e-24` relative for `m = 3`,
/// `d_model = 4`, but near `1e-5` for `m = 4`, `d_model = 16`, `n = 32`,
/// where 192 bits give `1e-25`. The search starts at `start_prec`, and after a
/// run that misses the target adds the bits the measured width says are
/// missing, plus 16 (so usually one retry), never fewer than 32.
///
/// Errors: as [`gradients`]; [`SpecError::Degenerate`] when `rel_width` is
/// not a positive finite number, or when the precision would pass
/// `max_prec` (the message gives the width reached).
pub fn gradients_to_width(
    cfg: &Config,
    params: &Params,
    ex: &Example,
    rel_width: f64,
    start_prec: u32,
    max_prec: u32,
) -> Result<(Gradients, u32), SpecError> {
    if !(rel_width.is_finite() && rel_width > 0.0) {
        return Err(degenerate(format!(
            "target relative width {rel_width} is not positive and finite"
        )));
    }
    let mut prec = start_prec;
    loop {
        let g = gradients(cfg, params, ex, prec)?;
        let w = max_relative_width(&g);
        if w <= rel_width {
            return Ok((g, prec));
        }
        let missing = if w.is_finite() {
            (w / rel_width).log2().ceil() as u32
        } else {
            prec
        };
        let next = prec.saturating_add(missing.saturating_add(16).max(32));
        if next > max_prec {
            return Err(degenerate(format!(
                "relative width {w:e} at {prec} bits; reaching {rel_width:e} needs more than \
                 max_prec = {max_prec} bits"
            )));
        }
        prec = next;
    }
}
