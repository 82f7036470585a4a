//! The rounding-error constants every a priori bound is built from (docs/math.md §5):
//! unit roundoffs and Higham's `gamma_k = k u / (1 - k u)`, which bounds the relative
//! error of `k` successive roundings (`prod (1 + delta_i)^{+-1} = 1 + theta_k`,
//! `|theta_k| <= gamma_k` while `k u < 1`).
//!
//! Trusted: the formula and its guard. `gamma` returns `+inf` once `k u >= 1`, where no
//! bound of that form holds, so a bound built from it degrades to "unbounded" instead
//! of turning negative. The f64 evaluation of `k u / (1 - k u)` rounds; callers that need
//! a rigorous upper bound fold that into their own slack (each says how).

/// f64's unit roundoff, 2^-53.
pub const U_F64: f64 = f64::EPSILON / 2.0;
/// f32's unit roundoff, 2^-24.
pub const U_F32: f64 = f32::EPSILON as f64 / 2.0;

/// gamma_k = k u / (1 - k u) for unit roundoff `u`; `+inf` once `k u >= 1`.
pub fn gamma(k: usize, u: f64) -> f64 {
    let ku = k as f64 * u;
    if ku >= 1.0 {
        f64::INFINITY
    } else {
        ku / (1.0 - ku)
    }
}

/// The radius of a sum over a group of `g` terms (grouped-query attention's dK, dV: the
/// query heads sharing one key/value head), from `rad_sum` (the f64 sum of the terms'
/// radii) and `abs_sum` (the f64 sum of the terms' absolute values), when the terms
/// were added recursively in a format of unit roundoff `u_vals`:
///
/// ```text
/// |fl(sum y_i) - sum exact_i| <= sum r_i + gamma_{g-1}(u_vals) sum |y_i|
/// ```
///
/// `rad_sum` and `abs_sum` each carry `g - 1` f64 roundings (each computed sum is at
/// least exact / (1 + gamma_{g-1})); gamma's evaluation, one product, one sum and the
/// product by the factor (itself rounded) add at most 7 more: the factor
/// `1 + gamma_{g+6}` (f64 `u`) makes the result an upper bound.
///
/// Underflow needs no absolute term: with f64 terms, an addition whose result is
/// subnormal is exact, so the summation error is nonzero only once some partial sum
/// reaches 2^-1021, and then `gamma * abs_sum` is far above the subnormal range; with
/// f32 terms the product is at least about 2^-150, a normal f64.
///
/// No summation (g <= 1) adds nothing (an infinite `abs_sum` is then no 0 * inf);
/// any NaN gives `+inf` (no bound).
pub fn group_sum_radius(rad_sum: f64, abs_sum: f64, g: usize, u_vals: f64) -> f64 {
    let gamma_vals = gamma(g.saturating_sub(1), u_vals);
    let summation = if gamma_vals == 0.0 {
        0.0
    } else {
        gamma_vals * abs_sum
    };
    let r = (rad_sum + summation) * (1.0 + gamma(g + 6, U_F64));
    if r.is_nan() {
        f64::INFINITY
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gamma_is_infinite_once_ku_reaches_one() {
        assert_eq!(gamma(0, U_F64), 0.0);
        assert_eq!(gamma(1 << 53, U_F64), f64::INFINITY);
        assert!(gamma((1 << 53) - 2, U_F64).is_finite());
        assert_eq!(gamma(1 << 24, U_F32), f64::INFINITY);
        // 2 u / (1 - 2 u) for u = 2^-24, by hand.
        assert_eq!(gamma(2, U_F32), 2.0f64.powi(-23) / (1.0 - 2.0f64.powi(-23)));
    }

    #[test]
    fn group_radius_covers_the_summation_error() {
        // One term: nothing is added, the radius passes through (times the f64 slack).
        let r = group_sum_radius(1.0, 5.0, 1, U_F32);
        assert!((1.0..1.0 + 1e-14).contains(&r));
        // Degenerate inputs never give NaN (found by review): 0 * inf, inf * gamma.
        assert_eq!(
            group_sum_radius(1.0, f64::INFINITY, 1, U_F64),
            1.0 * (1.0 + gamma(7, U_F64))
        );
        assert_eq!(
            group_sum_radius(0.0, 0.0, (1 << 24) + 1, U_F32),
            f64::INFINITY
        );
        assert_eq!(group_sum_radius(f64::NAN, 1.0, 2, U_F64), f64::INFINITY);
        // Three f32 terms whose f32 sum rounds: 1 + 2^-24 + 2^-24 is 1 in f32 (ties to
        // even twice), the exact sum is 1 + 2^-23; the radius with zero term radii must
        // cover that 2^-23.
        let ys = [1.0f32, 2f32.powi(-24), 2f32.powi(-24)];
        let fl = ys.iter().fold(0.0f32, |a, &y| a + y) as f64;
        let exact: f64 = ys.iter().map(|&y| y as f64).sum();
        let abs: f64 = ys.iter().map(|&y| (y as f64).abs()).sum();
        assert_eq!(fl, 1.0);
        assert!((fl - exact).abs() <= group_sum_radius(0.0, abs, 3, U_F32));
    }
}
