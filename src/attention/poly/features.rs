//! Symmetric-monomial feature maps (docs/math.md §3.3; ML24 Lemma C.13, AS23).
//!
//! For multi-indices alpha in N^d with |alpha| <= g, listed by degree:
//!
//! ```text
//! U[i, alpha] = c_|alpha| (|alpha|! / alpha!) x_i^alpha        (query side)
//! V[j, alpha] = y_j^alpha                                        (key side)
//! (U V^T)_ij  = sum_t c_t (x_i . y_j)^t = P(x_i . y_j)          (multinomial theorem)
//! ```
//!
//! with x = tau q and y = k, or a balanced rescaling x = tau lambda q, y = k / lambda
//! (same products, entries of similar size). Rank r = C(d + g, g).
//!
//! The monomials are generated without index tables beyond one entry per monomial:
//! monomial m of degree t is its parent (degree t - 1) times x_var, with var no smaller
//! than the parent's last variable, so each monomial appears once. The multinomial
//! weight follows incrementally: t!/alpha'! = (t-1)!/alpha! * t / (alpha_var + 1).

use crate::error::{Error, Result};
use crate::scalar::Field;

/// The monomials of degree <= g in d variables, in graded order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Monomials {
    d: usize,
    degree: usize,
    /// For monomial m > 0: (parent index, variable, power of that variable in m).
    links: Vec<(u32, u32, u32)>,
    /// The degree of each monomial.
    degrees: Vec<u32>,
    /// |alpha|! / alpha! for each monomial (exact: at most g! for g <= 20 fits u64).
    weights: Vec<u64>,
    /// Start of each degree's block: monomials of degree t are `starts[t]..starts[t+1]`.
    starts: Vec<usize>,
}

/// C(d + g, g) with overflow checking: the rank of the feature map.
pub fn rank(d: usize, g: usize) -> Option<usize> {
    // C(d+g, g) = prod_{t=1..g} (d + t) / t, exact at each step.
    let mut r: u128 = 1;
    for t in 1..=g as u128 {
        r = r.checked_mul(d as u128 + t)? / t;
        if r > usize::MAX as u128 {
            return None;
        }
    }
    usize::try_from(r).ok()
}

impl Monomials {
    /// The monomials of degree <= `degree` in `d` variables; errors if the rank exceeds
    /// `max_rank` (tables and features are r entries per row) or the degree exceeds 20
    /// (multinomial weights must stay exact in u64).
    pub fn new(d: usize, degree: usize, max_rank: usize) -> Result<Self> {
        let r =
            rank(d, degree)
                .filter(|&r| r <= max_rank)
                .ok_or_else(|| Error::InvalidParameter {
                    name: "degree",
                    value: degree.to_string(),
                    reason: format!("rank C(d + g, g) with d = {d} exceeds the limit {max_rank}"),
                })?;
        if degree > 20 {
            return Err(Error::InvalidParameter {
                name: "degree",
                value: degree.to_string(),
                reason: "degrees above 20 are not supported (multinomial weights)".into(),
            });
        }
        let mut links = Vec::with_capacity(r);
        let mut degrees = Vec::with_capacity(r);
        let mut weights = Vec::with_capacity(r);
        let mut last_var = Vec::with_capacity(r);
        let mut starts = vec![0usize];
        links.push((0, 0, 0));
        degrees.push(0);
        weights.push(1);
        last_var.push(0u32);
        starts.push(1);
        for t in 1..=degree {
            let (lo, hi) = (starts[t - 1], starts[t]);
            for parent in lo..hi {
                for var in last_var[parent]..d as u32 {
                    let same = parent > 0 && t > 1 && last_var[parent] == var;
                    let power = if same { links[parent].2 + 1 } else { 1 };
                    links.push((parent as u32, var, power));
                    degrees.push(t as u32);
                    weights.push(weights[parent] * t as u64 / power as u64);
                    last_var.push(var);
                }
            }
            starts.push(links.len());
        }
        Ok(Self {
            d,
            degree,
            links,
            degrees,
            weights,
            starts,
        })
    }

    /// Number of monomials, r.
    pub fn len(&self) -> usize {
        self.links.len()
    }

    /// Always false (the constant monomial is always present).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The largest degree.
    pub fn degree(&self) -> usize {
        self.degree
    }

    /// Number of variables.
    pub fn vars(&self) -> usize {
        self.d
    }

    /// The number of monomials of degree <= t (a prefix of the list).
    pub fn prefix_len(&self, t: usize) -> usize {
        self.starts[(t + 1).min(self.degree + 1)]
    }

    /// Writes x^alpha for every monomial into `out` (length `len()`), `x` of length d.
    pub fn powers<S: Field>(&self, x: &[S], out: &mut [S]) {
        out[0] = S::one();
        for m in 1..out.len() {
            let (parent, var, _) = self.links[m];
            out[m] = out[parent as usize].clone() * x[var as usize].clone();
        }
    }

    /// Query-side features: `out[m] = c_deg(m) * weight(m) * x^alpha(m)` for the first
    /// `out.len()` monomials, with `coeffs[t]` the coefficient of degree t (missing
    /// degrees count as 0).
    pub fn query_features<S: Field>(&self, x: &[S], coeffs: &[S], out: &mut [S]) {
        self.powers(x, out);
        for (m, o) in out.iter_mut().enumerate() {
            let t = self.degrees[m] as usize;
            let c = coeffs.get(t).cloned().unwrap_or_else(S::zero);
            *o = c * S::from_u64(self.weights[m]) * o.clone();
        }
    }
    /// Per-monomial query weights `c_deg(m) * |alpha|!/alpha!` for the first `width`
    /// monomials (missing degrees count as 0): query features are these times x^alpha.
    pub fn query_weights<S: Field>(&self, coeffs: &[S], width: usize) -> Vec<S> {
        (0..width)
            .map(|m| {
                let c = coeffs
                    .get(self.degrees[m] as usize)
                    .cloned()
                    .unwrap_or_else(S::zero);
                c * S::from_u64(self.weights[m])
            })
            .collect()
    }

    /// [`Self::powers`] for `nb` points at once, feature-major: `x` holds the points'
    /// coordinates as `x[v * nb + i]` (d x nb), `out` receives x_i^alpha(m) at
    /// `out[m * nb + i]` for the first `out.len() / nb` monomials. Each monomial is one
    /// contiguous product of two rows (its parent's and a variable's), which compilers
    /// vectorise for floats.
    pub fn powers_block<S: Field>(&self, x: &[S], nb: usize, out: &mut [S]) {
        if nb == 0 {
            return;
        }
        let width = out.len() / nb;
        out[..nb].iter_mut().for_each(|o| *o = S::one());
        for m in 1..width {
            let (parent, var, _) = self.links[m];
            let (head, tail) = out.split_at_mut(m * nb);
            let src = &head[parent as usize * nb..(parent as usize + 1) * nb];
            let xv = &x[var as usize * nb..(var as usize + 1) * nb];
            for ((o, a), b) in tail[..nb].iter_mut().zip(src).zip(xv) {
                *o = a.clone() * b.clone();
            }
        }
    }

    /// [`Self::query_features`] for `nb` points at once (layouts as in
    /// [`Self::powers_block`]), with `weights` from [`Self::query_weights`] (its length
    /// is the number of monomials written).
    pub fn query_block<S: Field>(&self, x: &[S], nb: usize, weights: &[S], out: &mut [S]) {
        let out = &mut out[..weights.len() * nb];
        self.powers_block(x, nb, out);
        if nb == 0 {
            return;
        }
        for (row, w) in out.chunks_exact_mut(nb).zip(weights) {
            row.iter_mut().for_each(|o| *o = w.clone() * o.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_match_math_md_table() {
        // docs/math.md §3.3's table of r = C(d + g, g).
        let table = [
            (4, 2, 15),
            (4, 8, 495),
            (8, 3, 165),
            (8, 6, 3003),
            (12, 4, 1820),
            (16, 8, 735471),
        ];
        for (d, g, r) in table {
            assert_eq!(rank(d, g), Some(r));
        }
        assert_eq!(Monomials::new(8, 3, 1 << 20).unwrap().len(), 165);
    }

    #[test]
    fn features_reproduce_the_polynomial_of_the_dot_product() {
        // Small integers: every product is exact in f64, so == holds.
        let m = Monomials::new(3, 4, 1000).unwrap();
        let c = [1.0, 2.0, -1.0, 3.0, 0.5];
        let (x, y) = ([1.0, -2.0, 3.0], [2.0, 1.0, -1.0]);
        let (mut u, mut v) = (vec![0.0; m.len()], vec![0.0; m.len()]);
        m.query_features(&x, &c, &mut u);
        m.powers(&y, &mut v);
        // The block forms give the same numbers (feature-major, two points).
        let (xb, mut ub, mut vb) = (
            [1.0, 0.5, -2.0, 1.0, 3.0, 0.0],
            vec![0.0; 2 * m.len()],
            vec![0.0; 2 * m.len()],
        );
        m.query_block(&xb, 2, &m.query_weights(&c, m.len()), &mut ub);
        m.powers_block(&xb, 2, &mut vb);
        for t in 0..m.len() {
            assert_eq!(ub[2 * t], u[t]);
            let mut p1 = vec![0.0; m.len()];
            m.powers(&[0.5, 1.0, 0.0], &mut p1);
            assert_eq!(vb[2 * t + 1], p1[t]);
        }
        let dot: f64 = u.iter().zip(&v).map(|(a, b)| a * b).sum();
        let s: f64 = x.iter().zip(&y).map(|(a, b)| a * b).sum();
        let p: f64 = c
            .iter()
            .enumerate()
            .map(|(t, ct)| ct * s.powi(t as i32))
            .sum();
        assert_eq!(dot, p);
    }

    #[test]
    fn rank_limit_is_a_typed_error() {
        assert!(Monomials::new(16, 8, 100_000).is_err());
        assert!(Monomials::new(2, 21, usize::MAX).is_err());
    }
}
