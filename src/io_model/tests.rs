//! Every simulated algorithm against the exact engine, and the sparse path against
//! an element-level mask the engine also has.

use super::*;
use crate::attention::{exact, AttentionConfig, Mask};
use crate::rng::SplitMix64;

struct Case {
    q: Matrix<f64>,
    k: Matrix<f64>,
    v: Matrix<f64>,
    d_o: Matrix<f64>,
    tau: f64,
}

fn case(n_q: usize, n_k: usize, d: usize, d_v: usize, seed: u64) -> Case {
    let mut r = SplitMix64::new(seed);
    let mut m = |rows, cols| Matrix::from_vec(rows, cols, r.normal_vec(rows * cols, 1.0)).unwrap();
    Case {
        q: m(n_q, d),
        k: m(n_k, d),
        v: m(n_k, d_v),
        d_o: m(n_q, d_v),
        tau: 1.0 / (d as f64).sqrt(),
    }
}

fn max_abs(m: &Matrix<f64>) -> f64 {
    m.as_slice().iter().fold(0.0, |a, x| a.max(x.abs()))
}

/// Checks `got` against the engine's `want` entry by entry to within
/// `k u scale`, where (standard forward error analysis, u = 2^-53):
/// - `k = 2 (n_q + n_k + d + d_v) + 10 (1 + 2 s_max)`: every result is a chain of at
///   most four sums of lengths `n_q`, `n_k`, `d`, `d_v` (each contributing at most
///   `len u` relative to the sum of absolute terms), and `exp` of an argument whose
///   rounding error is at most `u |S - m| <= 2 s_max u`, in both implementations;
/// - `scale` bounds the sum of absolute terms of that output: `max|V|` for `O` (the
///   weights sum to 1), `n_q max|dO|` for `dV`, and `tau max|K or Q| (sum of |dS|)`
///   with `sum_j |dS_ij| <= 2 d_v max|dO| max|V|` over a row (for `dQ`) and `n_q` times
///   that over a column (for `dK`).
fn check(name: &str, got: &Matrix<f64>, want: &Matrix<f64>, k: f64, scale: f64) {
    let tol = k * f64::EPSILON / 2.0 * scale;
    assert_eq!(got.shape(), want.shape(), "{name}");
    for (i, (a, b)) in got.as_slice().iter().zip(want.as_slice()).enumerate() {
        assert!((a - b).abs() <= tol, "{name}[{i}]: {a} vs {b}, tol {tol:e}");
    }
}

/// The factor `k` and the scales of `O, dQ, dK, dV` of [`check`]'s allowance.
fn allowance(c: &Case) -> (f64, [f64; 4]) {
    let (n_q, n_k, d, d_v) = (c.q.rows(), c.k.rows(), c.q.cols(), c.v.cols());
    let s_max = c.tau * d as f64 * max_abs(&c.q) * max_abs(&c.k);
    let k = 2.0 * (n_q + n_k + d + d_v) as f64 + 10.0 * (1.0 + 2.0 * s_max);
    let ds_row = 2.0 * d_v as f64 * max_abs(&c.d_o) * max_abs(&c.v);
    let scales = [
        max_abs(&c.v),
        c.tau * max_abs(&c.k) * ds_row,
        c.tau * max_abs(&c.q) * ds_row * n_q as f64,
        n_q as f64 * max_abs(&c.d_o),
    ];
    (k, scales)
}

fn against_engine(alg: Algorithm, c: &Case, mask: Mask, pattern: &Pattern, capacity: usize) -> Run {
    let cfg = AttentionConfig {
        scale: Some(c.tau),
        mask,
        softcap: None,
    };
    let f = exact::forward(c.q.view(), c.k.view(), c.v.view(), &cfg).unwrap();
    let g = exact::backward(c.q.view(), c.k.view(), c.v.view(), &f, c.d_o.view(), &cfg).unwrap();
    let r = run(
        alg,
        c.q.view(),
        c.k.view(),
        c.v.view(),
        c.d_o.view(),
        c.tau,
        pattern,
        capacity,
    )
    .unwrap();
    let (k, sc) = allowance(c);
    let tag = format!("{} M={capacity} {mask:?}", alg.name());
    check(&format!("{tag} o"), &r.o, &f.o, k, sc[0]);
    for (i, (a, b)) in r.lse.iter().zip(&f.lse).enumerate() {
        // lse = m + ln l: error k u (1 + |lse|); -inf only for fully masked rows.
        let ok = a == b || (a - b).abs() <= k * f64::EPSILON * (1.0 + b.abs());
        assert!(ok, "{tag} lse[{i}]: {a} vs {b}");
    }
    check(&format!("{tag} dq"), &r.dq, &g.dq, k, sc[1]);
    check(&format!("{tag} dk"), &r.dk, &g.dk, k, sc[2]);
    check(&format!("{tag} dv"), &r.dv, &g.dv, k, sc[3]);
    assert!(r.fwd.peak <= capacity && r.bwd.peak <= capacity);
    r
}

/// Every algorithm, both cache regimes (d = 8: d^2 = 64; FlashAttention's backward
/// needs 2 (d + d_v) + (2 d + d_v) + 4 = 60 words at least), every prefix mask, sizes
/// that no block divides.
#[test]
fn every_algorithm_matches_the_exact_engine() {
    for (n_q, n_k, d, d_v) in [(37, 29, 8, 6), (23, 41, 8, 8), (50, 50, 16, 16)] {
        let c = case(n_q, n_k, d, d_v, (n_q * 100 + n_k) as u64);
        let min_m = 2 * (d + d_v) + 2 * d + d_v + 4;
        for capacity in [min_m, d * d - 1, 4 * d * d, 12 * d * d] {
            for mask in [Mask::None, Mask::CausalTopLeft, Mask::CausalBottomRight] {
                for alg in Algorithm::ALL {
                    against_engine(alg, &c, mask, &Pattern::Prefix(mask), capacity.max(min_m));
                }
            }
        }
    }
}

/// The block-sparse path at element granularity: a 1 x 1 block mask equal to the
/// causal mask must give the engine's causal results, and an all-ones mask of any
/// block size its unmasked ones, with the same transfers as the dense pattern.
#[test]
fn block_masks_reproduce_the_engine_masks() {
    let (n, d) = (30, 8);
    let c = case(n, n, d, d, 9);
    let causal = Pattern::Blocks(BlockMask::from_fn(1, n, n, |i, j| j <= i).unwrap());
    let ones = Pattern::Blocks(BlockMask::from_fn(7, n, n, |_, _| true).unwrap());
    for alg in Algorithm::ALL {
        for capacity in [60, 300] {
            against_engine(alg, &c, Mask::CausalTopLeft, &causal, capacity);
            let a = against_engine(alg, &c, Mask::None, &ones, capacity);
            let b = against_engine(alg, &c, Mask::None, &Pattern::Prefix(Mask::None), capacity);
            assert_eq!((a.fwd, a.bwd), (b.fwd, b.bwd));
        }
    }
}

/// A sparse block mask (with an empty block row, hence fully masked rows): all three
/// algorithms agree with each other, the empty rows follow the engine's convention,
/// and FlashAttention moves fewer words than on the dense pattern.
#[test]
fn block_sparse_algorithms_agree() {
    let (n, d, b) = (48, 8, 8);
    let c = case(n, n, d, d, 3);
    let mask = BlockMask::from_fn(b, n, n, |bi, bj| bi != 2 && (bi + 2 * bj) % 3 == 0).unwrap();
    let pat = Pattern::Blocks(mask);
    let runs: Vec<Run> = Algorithm::ALL
        .iter()
        .map(|&a| {
            run(
                a,
                c.q.view(),
                c.k.view(),
                c.v.view(),
                c.d_o.view(),
                c.tau,
                &pat,
                200,
            )
            .unwrap()
        })
        .collect();
    // Two computations, each within `check`'s allowance of the exact values: their
    // difference is within twice it.
    let (k, sc) = allowance(&c);
    for r in &runs[1..] {
        let pairs = [
            (&r.o, &runs[0].o),
            (&r.dq, &runs[0].dq),
            (&r.dk, &runs[0].dk),
            (&r.dv, &runs[0].dv),
        ];
        for ((x, y), s) in pairs.into_iter().zip(sc) {
            check("sparse", x, y, 2.0 * k, s);
        }
        for (i, &lse) in r.lse.iter().enumerate().take(3 * b).skip(2 * b) {
            assert_eq!(lse, f64::NEG_INFINITY);
            assert!(r.o.row(i).iter().chain(r.dq.row(i)).all(|&x| x == 0.0));
        }
    }
    let dense = run(
        Algorithm::Flash,
        c.q.view(),
        c.k.view(),
        c.v.view(),
        c.d_o.view(),
        c.tau,
        &Pattern::Prefix(Mask::None),
        200,
    )
    .unwrap();
    assert!(runs[1].fwd.total() < dense.fwd.total() && runs[1].bwd.total() < dense.bwd.total());
}

/// FlashAttention's block sizes follow docs/math.md §8's rule where it fits and shrink
/// only as much as the hard capacity requires.
#[test]
fn flash_blocks_fit_the_capacity() {
    for (d, capacity) in [(8, 60), (16, 200), (64, 4096), (64, 65536), (32, 100_000)] {
        let dims = Dims {
            n_q: 10_000,
            n_k: 10_000,
            d,
            d_v: d,
        };
        for (fb, ws) in [
            (FlashBlocks::forward(capacity, &dims).unwrap(), 1usize),
            (FlashBlocks::backward(capacity, &dims).unwrap(), 2),
        ] {
            assert!(fb.b_c <= capacity.div_ceil(4 * d) && fb.b_r == fb.b_c.min(d));
            let words = |r: usize, c: usize| ws * c * 2 * d + r * (ws + 1) * d + ws * r * c + 2 * r;
            assert!(words(fb.b_r, fb.b_c) <= capacity);
            let (r1, c1) = ((fb.b_c + 1).min(d), fb.b_c + 1);
            assert!(c1 > capacity.div_ceil(4 * d) || words(r1, c1) > capacity);
        }
    }
    let dims = Dims {
        n_q: 10,
        n_k: 10,
        d: 8,
        d_v: 8,
    };
    assert!(FlashBlocks::backward(59, &dims).is_err());
}
