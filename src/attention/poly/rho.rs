//! The relative-perturbation formulas shared by the planner ([`super::plan`]) and the
//! bounds ([`super::bound`]): how far P~ may be from P given the polynomial's certified
//! eps_P, how far rounding moves it, and the two bounds on max |O~ - O| that choose the
//! degree (docs/math.md §4.1, §4.3, §3.6). A leaf: it depends on the polynomial alone.

use super::polynomial::ExpPoly;

/// A priori relative perturbation of P~'s entries from rounding, for the f64
/// arithmetic the engine computes in: 2 gamma_k kappa with k = r + n_k + 8 summands
/// on any path and kappa = (sum_t |c_t| R^t) e^R / (1 - eps_P) the cancellation
/// factor (sum_a |U_ia V_ja| over the value P~_ij >= e^{-R} (1 - eps_P)).
pub fn rounding_rho(poly: &ExpPoly, r: usize, n_k: usize) -> f64 {
    let u = f64::EPSILON / 2.0;
    let k = (r + n_k + 8) as f64;
    let gamma = k * u / (1.0 - k * u);
    let abs_sum: f64 = poly
        .coeffs
        .iter()
        .enumerate()
        .map(|(t, c)| c.abs() * poly.radius.powi(t as i32))
        .sum();
    let kappa = abs_sum * poly.radius.exp() / (1.0 - poly.eps).max(f64::MIN_POSITIVE);
    2.0 * gamma * kappa
}

/// rho = 2 eps / (1 - eps): |P~_ij - P_ij| <= rho P_ij when every A~_ij is within
/// relative eps of A_ij (docs/math.md §4.1).
pub fn rho_of(eps: f64) -> f64 {
    if eps >= 1.0 {
        f64::INFINITY
    } else {
        2.0 * eps / (1.0 - eps)
    }
}

/// The planner's a priori bound on max |O~ - O| for `poly` at rank `r`: `(rho (1 + rho)
/// + u_out) max|V|` with `rho = rho_of(eps_P) + rounding_rho` (P-weighted |V| replaced
/// by its maximum, so it never exceeds what the engine's reported bound can be, up to
/// the output rounding). The degree the planner picks is the smallest that meets eps
/// by this bound ([`super::plan::plan`]).
pub fn output_a_priori(poly: &ExpPoly, r: usize, n_k: usize, v_max: f64, u_out: f64) -> f64 {
    let rho = rho_of(poly.eps) + rounding_rho(poly, r, n_k);
    (rho * (1.0 + rho) + u_out) * v_max
}

/// A rigorous floor (up to a 1% margin for its own rounding) of max_ic of the total
/// bound [`super::bound::output`] reports for the polynomial `poly` (of any degree) on this problem,
/// given `mean_abs_v` = max_ic of the mean of |V_jc| over the keys row i sees; +inf
/// when `poly` certifies nothing. Used only to skip a forward whose bound could not
/// meet a target: a wrong answer costs time, never a bound.
///
/// Derivation: every |S_ij| <= R (docs/math.md §3.1) and A~_ij is within relative eps_P of
/// e^{S_ij}, so A~_ij >= (1 - eps_P) e^{-R} and the m_i visible terms of D~_i sum to at
/// most m_i (1 + eps_P) e^R; hence P~_ij >= (1 - eps_P) / (1 + eps_P) e^{-2R} / m_i and
/// W_ic = (P~ |V|)_ic >= (1 - eps_P) / (1 + eps_P) e^{-2R} mean_{j visible} |V_jc|.
/// The reported bound rho_t (1 + rho_t) (1 + rr) W_ic + u |O~_ic| is at least
/// rho_P (1 + rho_P) W_ic.
pub fn output_floor(poly: &ExpPoly, mean_abs_v: f64) -> f64 {
    if poly.eps.is_nan() || poly.eps >= 1.0 {
        return f64::INFINITY;
    }
    let rho = rho_of(poly.eps);
    let w = (1.0 - poly.eps) / (1.0 + poly.eps) * (-2.0 * poly.radius).exp() * mean_abs_v;
    0.99 * rho * (1.0 + rho) * w
}
