//! The independent gradient oracle (docs/math.md §5.2): the same forward
//! code in dual numbers, once per parameter entry, no closed form.

use crate::attention::SpecError;
use crate::dual::Dual;
use crate::interval::Interval;
use crate::linalg::{shape_err, zeros, Mat, Res};

use super::blocks::*;
use super::config::*;
use super::forward::*;
use super::names::validate;
use super::num::*;

/// Gradient enclosures by the independent oracle (docs/math.md §5.2): for
/// every entry of every parameter (and of `X` for a feature input), one run of
/// the same generic forward pass as [`forward`] in [`Dual`] arithmetic, seeded
/// on that entry, gives `dL/dθ` as the loss's derivative part. No closed-form
/// gradient is used. Cost: one forward pass per entry (for the sizes of this
/// module, up to some ten thousand passes; meant for tests). Keys and errors
/// as [`gradients`](super::gradients); additionally [`SpecError::Degenerate`] if a layer norm's
/// variance enclosure is not bounded away from `-eps` (never for finite
/// inputs at useful precision).
pub fn gradients_by_dual_numbers(
    cfg: &Config,
    params: &Params,
    ex: &Example,
    prec: u32,
) -> Result<Gradients, SpecError> {
    validate(cfg, params, ex, prec)?;
    let k = Consts::new(cfg, ex.n(), prec)?;
    let (w, x) = lift_all::<Dual>(params, ex, prec)?;
    let loss_der = |w: &Weights<Dual>, x: Option<&Mat<Dual>>| -> Res<Interval> {
        let t0 = first_stream(w, x, ex)?;
        Ok(run(cfg, w, t0, &ex.targets, &k)?.loss.der)
    };
    let seed = |m: &mut Mat<Dual>, i: usize, j: usize| {
        m[(i, j)] = Dual::variable(m[(i, j)].val.clone());
    };
    let mut grads = Gradients::new();
    for (name, m) in &w {
        let mut g = zeros::<Interval>(m.nrows(), m.ncols(), prec);
        for i in 0..m.nrows() {
            for j in 0..m.ncols() {
                let mut ws = w.clone();
                let ms = ws
                    .get_mut(name)
                    .ok_or_else(|| shape_err(format!("parameter {name} is missing")))?;
                seed(ms, i, j);
                g[(i, j)] = loss_der(&ws, x.as_ref())?;
            }
        }
        grads.insert(format!("grad.{name}"), g);
    }
    if let Some(x) = &x {
        let mut g = zeros::<Interval>(x.nrows(), x.ncols(), prec);
        for i in 0..x.nrows() {
            for j in 0..x.ncols() {
                let mut xs = x.clone();
                seed(&mut xs, i, j);
                g[(i, j)] = loss_der(&w, Some(&xs))?;
            }
        }
        grads.insert("grad.x".into(), g);
    }
    Ok(grads)
}
