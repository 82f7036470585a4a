//! docs/math.md §5.1, question 1: is the algebra right? The polynomial engine's one
//! generic low-rank algorithm, run on exact rationals with a rational polynomial, must
//! equal the direct O(n^2) formula with P in place of exp (computed independently by the
//! spec crate) with `==`: forward, both gradient kinds, every mask, n_q != n_k, chunk
//! sizes that split the sequence unevenly.

use num_rational::BigRational;
use num_traits::{One, Zero};
use polyattn::attention::poly::core::{backward, forward, GradientKind, LowRankProblem};
use polyattn::attention::poly::features::Monomials;
use polyattn::attention::{Alignment, Mask};
use polyattn::rng::SplitMix64;
use polyattn::scalar::Field;
use polyattn_spec::attention::Mask as SpecMask;
use polyattn_spec::poly_attention::{RationalGradient, RationalProblem};
use std::ops::{Add, Div, Mul, Neg, Sub};

/// Exact rationals as a `Field` (a newtype: the orphan rule keeps the impl here).
#[derive(Clone, Debug, PartialEq)]
struct Q(BigRational);

macro_rules! binop {
    ($tr:ident, $f:ident) => {
        impl $tr for Q {
            type Output = Q;
            fn $f(self, o: Q) -> Q {
                Q(self.0.$f(o.0))
            }
        }
    };
}
binop!(Add, add);
binop!(Sub, sub);
binop!(Mul, mul);
binop!(Div, div);
impl Neg for Q {
    type Output = Q;
    fn neg(self) -> Q {
        Q(-self.0)
    }
}
impl Field for Q {
    fn zero() -> Self {
        Q(BigRational::zero())
    }
    fn one() -> Self {
        Q(BigRational::one())
    }
    fn from_u64(k: u64) -> Self {
        Q(BigRational::from_integer(k.into()))
    }
}

/// Small dyadic rationals k/8 with |k| <= 12: exact, and varied enough to catch any
/// misplaced index.
fn rationals(r: &mut SplitMix64, n: usize) -> Vec<BigRational> {
    (0..n)
        .map(|_| BigRational::new((r.int(0, 24) as i64 - 12).into(), 8.into()))
        .collect()
}

fn spec_mask(m: Mask) -> SpecMask {
    match m {
        Mask::None => SpecMask::None,
        Mask::CausalTopLeft => SpecMask::CausalTopLeft,
        Mask::CausalBottomRight => SpecMask::CausalBottomRight,
        Mask::Window(w) => SpecMask::Window {
            left: w.left,
            right: w.right,
            bottom_right: w.align == Alignment::BottomRight,
        },
    }
}

fn wrap(v: &[BigRational]) -> Vec<Q> {
    v.iter().cloned().map(Q).collect()
}
fn unwrap(v: Vec<Q>) -> Vec<BigRational> {
    v.into_iter().map(|q| q.0).collect()
}

fn check(
    seed: u64,
    (n_q, n_k, d, d_v): (usize, usize, usize, usize),
    degree: usize,
    mask: Mask,
    chunk: usize,
) {
    let mut r = SplitMix64::new(seed);
    let (q, k, v, d_o) = (
        rationals(&mut r, n_q * d),
        rationals(&mut r, n_k * d),
        rationals(&mut r, n_k * d_v),
        rationals(&mut r, n_q * d_v),
    );
    // A polynomial positive on the scores' range: 1 + x + x^2/2 + ... with a rational
    // perturbation, so nothing special about Taylor coefficients is relied on.
    let coeffs: Vec<BigRational> = (0..=degree)
        .map(|t| {
            let fact: i64 = (1..=t as i64).product();
            BigRational::new(1.into(), fact.into())
                + BigRational::new(1.into(), (100 + t as i64).into())
        })
        .collect();
    let tau = BigRational::new(3.into(), 4.into());
    let spec = RationalProblem {
        q: q.clone(),
        k: k.clone(),
        v: v.clone(),
        dims: (n_q, n_k, d, d_v),
        tau: tau.clone(),
        coeffs: coeffs.clone(),
        mask: spec_mask(mask),
    };
    let (qw, kw, vw, dow) = (wrap(&q), wrap(&k), wrap(&v), wrap(&d_o));
    // x = (tau / 2) q, y = 2 k: a b = tau, exercising the scaling path.
    let p = LowRankProblem {
        q: &qw,
        k: &kw,
        v: &vw,
        n_q,
        n_k,
        d,
        d_v,
        tau: Q(tau.clone()),
        query_scale: Q(tau.clone() / BigRational::from_integer(2.into())),
        key_scale: Q(BigRational::from_integer(2.into())),
        coeffs: wrap(&coeffs),
        mask,
        chunk,
        keys: None,
    };
    let mon = Monomials::new(d, degree, 10_000).unwrap();
    let f = forward(&p, &mon);
    let want = spec.forward();
    let ctx = format!("{mask:?} n_q={n_q} n_k={n_k} d={d} d_v={d_v} g={degree} chunk={chunk}");
    assert_eq!(unwrap(f.o.clone()), want.o, "O: {ctx}");
    assert_eq!(unwrap(f.norm.clone()), want.norm, "D: {ctx}");
    for (kind, skind) in [
        (GradientKind::Substituted, RationalGradient::Substituted),
        (
            GradientKind::PolynomialModel,
            RationalGradient::PolynomialModel,
        ),
    ] {
        let g = backward(&p, &mon, &f, &dow, kind);
        let w = spec.backward(&d_o, skind);
        assert_eq!(unwrap(g.dv), w.dv, "dV {kind:?}: {ctx}");
        assert_eq!(unwrap(g.dq), w.dq, "dQ {kind:?}: {ctx}");
        assert_eq!(unwrap(g.dk), w.dk, "dK {kind:?}: {ctx}");
    }
}

#[test]
fn low_rank_equals_direct_formula_exactly() {
    let mut seed = 0;
    let window = |l, r, a| Mask::None.with_window(l, r, a);
    for mask in [
        Mask::None,
        Mask::CausalTopLeft,
        Mask::CausalBottomRight,
        // Sliding windows: the range form (two segment scans per row).
        window(Some(2), Some(1), Alignment::BottomRight),
        window(Some(3), Some(0), Alignment::TopLeft),
        window(None, Some(2), Alignment::TopLeft),
        window(Some(1), None, Alignment::BottomRight),
    ] {
        for &(shape, g, chunk) in &[
            ((1, 1, 1, 1), 1, 1),
            ((5, 5, 2, 3), 3, 2),
            ((7, 4, 2, 2), 2, 3),
            ((4, 9, 3, 2), 2, 4),
            ((9, 6, 1, 4), 4, 5),
            ((6, 6, 3, 1), 3, 64),
            // The cost model's chunk (0), the direct in-chunk kernel (g (d + 2) <= r).
            ((40, 37, 4, 2), 2, 0),
        ] {
            seed += 1;
            check(seed, shape, g, mask, chunk);
        }
    }
}

/// The two gradient kinds are different objects (the test above would pass vacuously
/// if the backward ignored the kind).
#[test]
fn gradient_kinds_differ() {
    let spec = RationalProblem {
        q: vec![BigRational::one(); 2],
        k: vec![
            BigRational::new(1.into(), 2.into()),
            BigRational::new((-1).into(), 3.into()),
        ],
        v: vec![BigRational::one(), BigRational::from_integer(3.into())],
        dims: (2, 2, 1, 1),
        tau: BigRational::one(),
        coeffs: vec![
            BigRational::one(),
            BigRational::one(),
            BigRational::new(1.into(), 2.into()),
        ],
        mask: SpecMask::None,
    };
    let d_o = vec![BigRational::one(), BigRational::from_integer(2.into())];
    let a = spec.backward(&d_o, RationalGradient::Substituted);
    let b = spec.backward(&d_o, RationalGradient::PolynomialModel);
    assert_ne!(a.dq, b.dq);
    assert_eq!(a.dv, b.dv, "dV is the same for both kinds");
}
