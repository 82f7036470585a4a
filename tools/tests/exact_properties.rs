//! Properties of the exact engine: random shapes and masks against the MPFR spec
//! (proptest), bitwise determinism across thread counts, multi-head equal to per-head,
//! mask identities, fully masked rows, and typed errors on bad input.

mod common;

use common::{case, check_case};
use polyattn::attention::{exact, AttentionConfig, Mask};
use polyattn::tensor::{Matrix, Tensor3};
use polyattn::Error;
use proptest::prelude::*;

fn mask_strategy() -> impl Strategy<Value = Mask> {
    prop_oneof![
        Just(Mask::None),
        Just(Mask::CausalTopLeft),
        Just(Mask::CausalBottomRight)
    ]
}

proptest! {
    // Case count comes from PROPTEST_CASES (default 256 is too many for MPFR
    // references; CI sets it). Without it, this config keeps 24.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(24),
        ..ProptestConfig::default()
    })]

    /// Random shapes (crossing the 64-row tile edges), masks, scales and magnitudes:
    /// f64 and f32 results lie within the spec enclosure plus the derived allowance.
    #[test]
    fn random_problems_are_enclosed(
        n_q in 1usize..80, n_k in 1usize..80, d in 1usize..9, d_v in 1usize..9,
        mask in mask_strategy(), scale in prop::option::of(0.05f64..3.0),
        s_max in prop::option::of(1e-3f64..60.0), seed in any::<u64>(),
    ) {
        check_case::<f64>(&case::<f64>(seed, (n_q, n_k, d, d_v), scale, mask, s_max));
        check_case::<f32>(&case::<f32>(seed, (n_q, n_k, d, d_v), scale, mask, s_max));
    }
}

fn mats(seed: u64, h: usize, n_q: usize, n_k: usize, d: usize, d_v: usize) -> [Tensor3<f64>; 4] {
    let mut r = polyattn::rng::SplitMix64::new(seed);
    let mut t =
        |rows, cols| Tensor3::from_vec(h, rows, cols, r.normal_vec(h * rows * cols, 1.0)).unwrap();
    [t(n_q, d), t(n_k, d), t(n_k, d_v), t(n_q, d_v)]
}

fn run_multihead(
    x: &[Tensor3<f64>; 4],
    cfg: &AttentionConfig,
) -> (exact::MultiHeadForward<f64>, exact::MultiHeadGradients<f64>) {
    let f = exact::forward_multihead(&x[0], &x[1], &x[2], cfg).unwrap();
    let g = exact::backward_multihead(&x[0], &x[1], &x[2], &f, &x[3], cfg).unwrap();
    (f, g)
}

/// Same inputs, 1, 2 and 3 threads: the same bits (several tiles in both directions).
#[test]
fn bitwise_deterministic_across_thread_counts() {
    let x = mats(1, 3, 150, 200, 16, 8);
    for mask in [Mask::None, Mask::CausalTopLeft, Mask::CausalBottomRight] {
        let cfg = AttentionConfig {
            scale: None,
            mask,
            softcap: None,
        };
        let runs: Vec<_> = [1, 2, 3]
            .iter()
            .map(|&t| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build()
                    .unwrap();
                pool.install(|| run_multihead(&x, &cfg))
            })
            .collect();
        for r in &runs[1..] {
            // PartialEq on f64 data: exact equality of every value (no NaN occurs).
            assert_eq!(
                r.0, runs[0].0,
                "{mask:?} forward differs between thread counts"
            );
            assert_eq!(
                r.1, runs[0].1,
                "{mask:?} backward differs between thread counts"
            );
        }
    }
}

/// The backward's key-block groups (`exact::backward`'s module doc): with n_k = 1100
/// there are 18 key blocks, more than the (at most 8) groups, so groups hold several
/// blocks and dQ is reduced over several partials. One head, so the groups themselves
/// run in parallel; f64 and f32, every mask, n_q != n_k: the same bits for 1, 2, 3 and
/// 5 threads.
#[test]
fn backward_bitwise_deterministic_with_more_key_blocks_than_groups() {
    fn check<T: polyattn::Real>(x: &[Tensor3<T>; 4]) {
        for mask in [Mask::None, Mask::CausalTopLeft, Mask::CausalBottomRight] {
            let cfg = AttentionConfig {
                scale: None,
                mask,
                softcap: None,
            };
            let f = exact::forward_multihead(&x[0], &x[1], &x[2], &cfg).unwrap();
            let runs: Vec<_> = [1, 2, 3, 5]
                .iter()
                .map(|&t| {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(t)
                        .build()
                        .unwrap();
                    pool.install(|| {
                        exact::backward_multihead(&x[0], &x[1], &x[2], &f, &x[3], &cfg).unwrap()
                    })
                })
                .collect();
            for (r, t) in runs[1..].iter().zip([2, 3, 5]) {
                for (name, a, b) in [
                    ("dq", &r.dq, &runs[0].dq),
                    ("dk", &r.dk, &runs[0].dk),
                    ("dv", &r.dv, &runs[0].dv),
                ] {
                    let same = a.as_slice().len() == b.as_slice().len()
                        && a.as_slice()
                            .iter()
                            .zip(b.as_slice())
                            .all(|(x, y)| x.to_f64().to_bits() == y.to_f64().to_bits());
                    assert!(
                        same,
                        "{} {mask:?} {name}: {t} threads differ from 1",
                        T::DTYPE
                    );
                }
            }
        }
    }
    let x = mats(4, 1, 700, 1100, 16, 8);
    check::<f64>(&x);
    let x32 = x.clone().map(|t| {
        let data = t.as_slice().iter().map(|&v| v as f32).collect();
        Tensor3::from_vec(t.heads(), t.rows(), t.cols(), data).unwrap()
    });
    check::<f32>(&x32);
}

/// Multi-head results equal single-head results head by head, bit for bit.
#[test]
fn multihead_equals_per_head() {
    let x = mats(2, 4, 70, 90, 5, 6);
    let cfg = AttentionConfig {
        scale: Some(0.4),
        mask: Mask::CausalBottomRight,
        softcap: None,
    };
    let (f, g) = run_multihead(&x, &cfg);
    for h in 0..4 {
        let (q, k, v, d_o) = (x[0].head(h), x[1].head(h), x[2].head(h), x[3].head(h));
        let f1 = exact::forward(q, k, v, &cfg).unwrap();
        let g1 = exact::backward(q, k, v, &f1, d_o, &cfg).unwrap();
        assert_eq!(f.o.head(h).as_slice(), f1.o.as_slice());
        assert_eq!(f.lse.row(h), &f1.lse[..]);
        assert_eq!(g.dq.head(h).as_slice(), g1.dq.as_slice());
        assert_eq!(g.dk.head(h).as_slice(), g1.dk.as_slice());
        assert_eq!(g.dv.head(h).as_slice(), g1.dv.as_slice());
    }
}

/// With n_q == n_k both causal alignments are the same mask: the same bits.
#[test]
fn causal_alignments_agree_on_square_problems() {
    let x = mats(3, 2, 77, 77, 8, 8);
    let a = run_multihead(
        &x,
        &AttentionConfig {
            scale: None,
            mask: Mask::CausalTopLeft,
            softcap: None,
        },
    );
    let b = run_multihead(
        &x,
        &AttentionConfig {
            scale: None,
            mask: Mask::CausalBottomRight,
            softcap: None,
        },
    );
    assert_eq!(a, b);
}

/// Bottom-right with n_q > n_k: the first n_q - n_k rows see nothing: O = 0,
/// lse = -inf, dQ = 0, and their dO does not change dK or dV.
#[test]
fn fully_masked_rows_are_defined() {
    let x = mats(4, 1, 10, 4, 3, 2);
    let cfg = AttentionConfig {
        scale: None,
        mask: Mask::CausalBottomRight,
        softcap: None,
    };
    let (f, g) = run_multihead(&x, &cfg);
    for i in 0..6 {
        assert!(f.o.head(0).row(i).iter().all(|&z| z == 0.0));
        assert_eq!(f.lse.row(0)[i], f64::NEG_INFINITY);
        assert!(g.dq.head(0).row(i).iter().all(|&z| z == 0.0));
    }
    assert!(f.lse.row(0)[6..].iter().all(|z| z.is_finite()));
    let mut x2 = x.clone();
    x2[3].as_mut_slice()[..6 * 2]
        .iter_mut()
        .for_each(|z| *z = 1e3);
    let (_, g2) = run_multihead(&x2, &cfg);
    assert_eq!(g.dk, g2.dk);
    assert_eq!(g.dv, g2.dv);
}

/// Causal work skipping changes no result: a causal problem equals the unmasked one
/// on the rows whose visible keys are all keys (the last row).
#[test]
fn last_causal_row_equals_unmasked_row() {
    let x = mats(5, 1, 130, 130, 4, 4);
    let (fc, _) = run_multihead(
        &x,
        &AttentionConfig {
            scale: None,
            mask: Mask::CausalTopLeft,
            softcap: None,
        },
    );
    let (fu, _) = run_multihead(
        &x,
        &AttentionConfig {
            scale: None,
            mask: Mask::None,
            softcap: None,
        },
    );
    assert_eq!(fc.o.head(0).row(129), fu.o.head(0).row(129));
}

fn m(rows: usize, cols: usize, v: f64) -> Matrix<f64> {
    Matrix::from_vec(rows, cols, vec![v; rows * cols]).unwrap()
}

#[test]
fn bad_inputs_give_typed_errors() {
    let cfg = AttentionConfig::default();
    let (q, k, v) = (m(3, 2, 0.5), m(4, 2, 0.5), m(4, 3, 0.5));
    // d mismatch
    let e = exact::forward(q.view(), m(4, 3, 0.5).view(), v.view(), &cfg).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    // n_k mismatch
    let e = exact::forward(q.view(), k.view(), m(5, 3, 0.5).view(), &cfg).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    // empty
    let e = exact::forward(m(0, 2, 0.5).view(), k.view(), v.view(), &cfg).unwrap_err();
    assert!(matches!(e, Error::Empty { .. }), "{e}");
    // NaN and infinity, located
    let mut bad = q.clone();
    bad.as_mut_slice()[3] = f64::NAN;
    let e = exact::forward(bad.view(), k.view(), v.view(), &cfg).unwrap_err();
    assert_eq!(e.to_string(), "q[1, 1] is NaN: inputs must be finite");
    let mut bad = v.clone();
    bad.as_mut_slice()[11] = f64::INFINITY;
    let e = exact::forward(q.view(), k.view(), bad.view(), &cfg).unwrap_err();
    assert!(matches!(e, Error::NonFinite { .. }), "{e}");
    // non-finite scale
    let e = exact::forward(
        q.view(),
        k.view(),
        v.view(),
        &AttentionConfig {
            scale: Some(f64::NAN),
            mask: Mask::None,
            softcap: None,
        },
    )
    .unwrap_err();
    assert!(matches!(e, Error::InvalidParameter { .. }), "{e}");
    // scores beyond f32's range
    let big = Matrix::from_vec(2, 2, vec![1e19f32; 4]).unwrap();
    let e = exact::forward(big.view(), big.view(), big.view(), &cfg).unwrap_err();
    assert!(matches!(e, Error::Overflow { .. }), "{e}");
    // backward: wrong dO shape
    let f = exact::forward(q.view(), k.view(), v.view(), &cfg).unwrap();
    let e =
        exact::backward(q.view(), k.view(), v.view(), &f, m(3, 2, 1.0).view(), &cfg).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    // multi-head: head counts differ
    let t = |h, r, c| Tensor3::from_vec(h, r, c, vec![0.1; h * r * c]).unwrap();
    let e = exact::forward_multihead(&t(2, 3, 2), &t(3, 4, 2), &t(2, 4, 3), &cfg).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    let e = exact::forward_multihead(&t(0, 3, 2), &t(0, 4, 2), &t(0, 4, 3), &cfg).unwrap_err();
    assert!(matches!(e, Error::Empty { .. }), "{e}");
}
