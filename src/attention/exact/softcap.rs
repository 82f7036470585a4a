//! Score softcapping (Gemma 2; FlashAttention's `softcap`): a score `s = tau q_i . k_j`
//! becomes `c tanh(s / c)` before the bias and the mask (docs/math.md §1.4). Every
//! capped score lies in `(-c, c)`, whatever the weights.
//!
//! The engine evaluates `tanh` through the SIMD `exp` of [`crate::simd`] (within 1 ulp,
//! so within `2u` relative), never through libm, so that its error is proven like the
//! rest of the engine's (docs/math.md §5.4). With `y = fl(s / c)`, `e = exp(-2 |y|)`:
//!
//! ```text
//! t = sign(y) fl(fl(1 - e) / fl(1 + e))        tanh(y)
//! s' = fl(c t)                                 the capped score
//! g = fl(4 e / fl(fl(1 + e) fl(1 + e)))        sech^2(y) = 1 - tanh^2(y), the slope
//! ```
//!
//! Errors (first order, u the unit roundoff of `T`):
//! - `|t - tanh(s / c)| <= 2u / 2 + gamma_3 + 0.45 u (1 + u) <= 4.5u`: the exp's error
//!   moves `(1 - e) / (1 + e)` by at most `2 e / (1 + e)^2 * 2u <= u`, the three
//!   operations by `gamma_3 |t|`, and the rounding of `y` by `sech^2(xi) u |s / c| <=
//!   0.45 u (1 + u)` (`max_x x sech^2 x < 0.448`). So `|s' - c tanh(s / c)| <= 6u c`
//!   (one more `u c` for the product), an absolute error: near `s = 0` the formula
//!   loses the relative accuracy `tanh` itself would have (`1 - e` cancels), which is
//!   the price of a proven bound.
//! - The capped score is 1-Lipschitz in `s`: an error `delta` of the computed `s` moves
//!   it by at most `delta sech^2 <= delta`.
//! - `g` is relative-accurate: `e` enters `4e / (1 + e)^2` with relative sensitivity
//!   `(1 - e) / (1 + e) <= 1`, so the exp adds `2u` relative, the four operations
//!   `gamma_4`, and the rounding of `y` at most `2 u |y|` relative (`|d ln sech^2 / dy|
//!   = 2 |tanh| <= 2`); an error `delta` of `s` adds `2 delta / c` relative. Below the
//!   normal range `e` (and so `g`) may also err by an absolute `4 eta`.
//!
//! The problem requires a normal `c` (at least the dtype's smallest normal value): for
//! a subnormal `c` the product `c t` would err absolutely, not by `u c`.
//!
//! The backward multiplies `dS` by `g` (`d(c tanh(s / c)) / ds = sech^2(s / c)`), then
//! by `tau` as without a cap.

use crate::scalar::Real;
use crate::simd::Lanes;

/// Caps the visible columns `lo..hi` of a score row in place (`row[j] = c tanh(row[j] /
/// c)`) and, when `slope` is given, writes `sech^2(row[j] / c)` into its columns
/// `lo..hi` (see the module docs for the formulas and their errors).
#[inline(always)]
pub(super) fn cap_row<V: Lanes>(
    v: V,
    c: V::Elem,
    (lo, hi): (usize, usize),
    row: &mut [V::Elem],
    mut slope: Option<&mut [V::Elem]>,
) {
    let one = V::Elem::ONE;
    let two = one + one;
    let four = two + two;
    for j in lo..hi {
        let y = row[j] / c;
        let a = if y < V::Elem::ZERO { -y } else { y };
        let e = super::tile::exp1(v, -(two * a));
        let den = one + e;
        let t = (one - e) / den;
        row[j] = c * if y < V::Elem::ZERO { -t } else { t };
        if let Some(g) = slope.as_deref_mut() {
            g[j] = four * e / (den * den);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::{dispatch, Kernel};

    struct Cap<'a> {
        c: f64,
        row: &'a mut [f64],
        slope: &'a mut [f64],
    }

    impl Kernel<f64> for Cap<'_> {
        type Out = ();
        fn run<V: Lanes<Elem = f64>>(self, v: V) {
            let n = self.row.len();
            cap_row(v, self.c, (0, n), self.row, Some(self.slope));
        }
    }

    /// The capped scores and slopes against f64's libm `tanh` within the stated
    /// absolute bound 6u c and relative bound (2u + gamma_4 + 2u |y|) (libm's own
    /// error, at most a few ulps, is far inside those).
    #[test]
    fn capped_scores_and_slopes_within_the_stated_bounds() {
        let u = f64::EPSILON / 2.0;
        for &c in &[0.5, 1.0, 30.0, 50.0] {
            let xs: Vec<f64> = (-400..=400).map(|i| i as f64 * 0.37 * c / 20.0).collect();
            let mut row = xs.clone();
            let mut slope = vec![0.0; xs.len()];
            dispatch(Cap {
                c,
                row: &mut row,
                slope: &mut slope,
            });
            for ((&x, &s), &g) in xs.iter().zip(&row).zip(&slope) {
                let t = (x / c).tanh();
                assert!(
                    (s - c * t).abs() <= 6.0 * u * c,
                    "c {c} x {x}: {s} vs {}",
                    c * t
                );
                assert!(s.abs() <= c, "capped score {s} above c = {c}");
                let y = (x / c).abs();
                // sech^2 through libm's cosh (relative-accurate, unlike 1 - t^2 near
                // saturation): the stated bound plus 8u for cosh's own error and an
                // absolute 4 eta for subnormal e.
                let want = 1.0 / (y.cosh() * y.cosh());
                let tol =
                    (2.0 * u + 5.0 * u + 2.0 * u * y + 8.0 * u) * want + 4.0 * f64::from_bits(1);
                assert!((g - want).abs() <= tol, "c {c} x {x}: slope {g} vs {want}");
            }
        }
    }

    #[test]
    fn zero_and_saturation_are_exact() {
        let mut row = vec![0.0, 1e6, -1e6];
        let mut slope = vec![0.0; 3];
        dispatch(Cap {
            c: 50.0,
            row: &mut row,
            slope: &mut slope,
        });
        assert_eq!(row, vec![0.0, 50.0, -50.0]);
        assert_eq!(slope, vec![1.0, 0.0, 0.0]);
    }
}
