//! Grouped-query and multi-query attention (k, v with fewer heads than q): checked
//! against the definition, an explicit expansion of k and v to one head per query
//! head followed by ordinary multi-head attention, with dK and dV summed over each
//! group in head order. The grouped path must give the same bits.

use polyattn::attention::poly::{self, Accuracy, GradientKind, PolyConfig};
use polyattn::attention::{exact, kv_group, AttentionConfig, Mask};
use polyattn::rng::SplitMix64;
use polyattn::tensor::Tensor3;
use polyattn::Real;

fn stack<T: Real>(h: usize, n: usize, d: usize, seed: u64, scale: f64) -> Tensor3<T> {
    let data = SplitMix64::new(seed)
        .normal_vec(h * n * d, scale)
        .into_iter()
        .map(T::from_f64)
        .collect();
    Tensor3::from_vec(h, n, d, data).unwrap()
}

/// Key/value head `h / g` copied for every query head `h`.
fn expand<T: Real>(t: &Tensor3<T>, g: usize) -> Tensor3<T> {
    let mut data = Vec::new();
    for h in 0..t.heads() * g {
        data.extend_from_slice(t.head(h / g).as_slice());
    }
    Tensor3::from_vec(t.heads() * g, t.rows(), t.cols(), data).unwrap()
}

/// Per-query-head gradients summed over groups of `g`, in head order.
fn reduce<T: Real>(t: &Tensor3<T>, g: usize) -> Vec<T> {
    let len = t.rows() * t.cols();
    let mut out = vec![T::from_f64(0.0); t.heads() / g * len];
    for h in 0..t.heads() {
        for (o, x) in out[(h / g) * len..(h / g + 1) * len]
            .iter_mut()
            .zip(t.head(h).as_slice())
        {
            *o += *x;
        }
    }
    out
}

fn check_exact<T: Real>() {
    let (n_q, n_k, d, d_v) = (9, 13, 4, 3);
    for (hq, hkv) in [(4, 2), (4, 1), (6, 3), (3, 3)] {
        let g = hq / hkv;
        for mask in [Mask::None, Mask::CausalTopLeft, Mask::CausalBottomRight] {
            let cfg = AttentionConfig {
                scale: None,
                mask,
                softcap: None,
            };
            let q = stack::<T>(hq, n_q, d, 1, 1.0);
            let k = stack::<T>(hkv, n_k, d, 2, 1.0);
            let v = stack::<T>(hkv, n_k, d_v, 3, 1.0);
            let d_o = stack::<T>(hq, n_q, d_v, 4, 1.0);
            let f = exact::forward_multihead(&q, &k, &v, &cfg).unwrap();
            let b = exact::backward_multihead(&q, &k, &v, &f, &d_o, &cfg).unwrap();
            let (ke, ve) = (expand(&k, g), expand(&v, g));
            let fe = exact::forward_multihead(&q, &ke, &ve, &cfg).unwrap();
            let be = exact::backward_multihead(&q, &ke, &ve, &fe, &d_o, &cfg).unwrap();
            assert_eq!(f, fe, "{hq}:{hkv} {mask:?} forward");
            assert_eq!(b.dq, be.dq, "{hq}:{hkv} {mask:?} dq");
            assert_eq!(b.dk.shape(), k.shape());
            assert_eq!(b.dv.shape(), v.shape());
            assert_eq!(b.dk.as_slice(), reduce(&be.dk, g), "{hq}:{hkv} {mask:?} dk");
            assert_eq!(b.dv.as_slice(), reduce(&be.dv, g), "{hq}:{hkv} {mask:?} dv");
        }
    }
}

#[test]
fn exact_grouped_heads_equal_the_expansion_f64() {
    check_exact::<f64>();
}

#[test]
fn exact_grouped_heads_equal_the_expansion_f32() {
    check_exact::<f32>();
}

#[test]
fn heads_that_do_not_divide_are_refused() {
    assert_eq!(kv_group(8, 2).unwrap(), 4);
    assert!(kv_group(8, 3).is_err());
    assert!(kv_group(8, 0).is_err());
    let q = stack::<f64>(4, 5, 2, 1, 1.0);
    let k = stack::<f64>(3, 5, 2, 2, 1.0);
    let cfg = AttentionConfig {
        scale: None,
        mask: Mask::None,
        softcap: None,
    };
    let e = exact::forward_multihead(&q, &k, &k, &cfg).unwrap_err();
    assert!(e.to_string().contains("divide"), "{e}");
    // v must have k's heads.
    let v = stack::<f64>(4, 5, 2, 3, 1.0);
    let k2 = stack::<f64>(2, 5, 2, 2, 1.0);
    assert!(exact::forward_multihead(&q, &k2, &v, &cfg).is_err());
}

#[test]
fn poly_grouped_heads_equal_the_expansion_and_stay_in_their_bounds() {
    let (hq, hkv, n, d) = (4, 2, 64, 4);
    let g = hq / hkv;
    let q = stack::<f64>(hq, n, d, 1, 0.3);
    let k = stack::<f64>(hkv, n, d, 2, 0.3);
    let v = stack::<f64>(hkv, n, d, 3, 1.0);
    let d_o = stack::<f64>(hq, n, d, 4, 1.0);
    let cfg = PolyConfig {
        mask: Mask::CausalTopLeft,
        accuracy: Accuracy::Eps(1e-6),
        ..PolyConfig::default()
    };
    let f = poly::forward_multihead(&q, &k, &v, &cfg).unwrap();
    let (ke, ve) = (expand(&k, g), expand(&v, g));
    let fe = poly::forward_multihead(&q, &ke, &ve, &cfg).unwrap();
    for (a, b) in f.iter().zip(&fe) {
        assert_eq!(a.o, b.o);
    }
    let kind = GradientKind::Substituted;
    let gr = poly::backward_multihead(&q, &k, &v, &f, &d_o, kind, &cfg).unwrap();
    let ge = poly::backward_multihead(&q, &ke, &ve, &fe, &d_o, kind, &cfg).unwrap();
    for (a, b) in gr.iter().zip(&ge) {
        assert_eq!(a.dk, b.dk);
        assert_eq!(a.dv, b.dv);
    }
    // Each query head's certified share against the exact engine's share.
    let acfg = AttentionConfig {
        scale: None,
        mask: Mask::CausalTopLeft,
        softcap: None,
    };
    let xf = exact::forward_multihead(&q, &ke, &ve, &acfg).unwrap();
    let xb = exact::backward_multihead(&q, &ke, &ve, &xf, &d_o, &acfg).unwrap();
    for (h, a) in gr.iter().enumerate() {
        let exact_dk = xb.dk.head(h).as_slice();
        for (e, (&y, &x)) in a.dk.as_slice().iter().zip(exact_dk).enumerate() {
            // The bound covers |poly - exact real|; the exact f64 engine is itself
            // within ~1e-14 of the real value at n = 64 (tests/exact_enclosure.rs), so
            // 1e-12 absolute is a generous allowance for comparing against it.
            assert!(
                (y - x).abs() <= a.bound_dk.total[e] + 1e-12,
                "head {h} entry {e}: |{y} - {x}| > {}",
                a.bound_dk.total[e]
            );
        }
    }
}

/// A non-finite entry in a multi-head call is reported once, as `[head, row, column]`
/// of its stack (key/value stacks by their own head index), by both engines.
#[test]
fn multihead_non_finite_entries_name_their_head() {
    use polyattn::Error;
    let (q, k, v) = (
        stack::<f64>(4, 9, 3, 1, 0.3),
        stack::<f64>(2, 9, 3, 2, 0.3),
        stack::<f64>(2, 9, 3, 3, 1.0),
    );
    let expect = |e: Error, what: &str, index: &str| match e {
        Error::NonFinite {
            what: w, index: i, ..
        } => {
            assert_eq!((w.as_str(), i.as_str()), (what, index))
        }
        other => panic!("expected NonFinite, got {other}"),
    };
    let cfg = AttentionConfig::default();
    let pcfg = PolyConfig {
        accuracy: Accuracy::Degree(3),
        ..Default::default()
    };
    let mut bad_q = q.clone();
    bad_q.as_mut_slice()[3 * 27 + 2 * 3 + 1] = f64::NAN;
    expect(
        exact::forward_multihead(&bad_q, &k, &v, &cfg).unwrap_err(),
        "q",
        "[3, 2, 1]",
    );
    expect(
        poly::forward_multihead(&bad_q, &k, &v, &pcfg).unwrap_err(),
        "q",
        "[3, 2, 1]",
    );
    let mut bad_v = v.clone();
    bad_v.as_mut_slice()[27 + 8 * 3] = f64::INFINITY;
    expect(
        exact::forward_multihead(&q, &k, &bad_v, &cfg).unwrap_err(),
        "v",
        "[1, 8, 0]",
    );
    expect(
        poly::forward_multihead(&q, &k, &bad_v, &pcfg).unwrap_err(),
        "v",
        "[1, 8, 0]",
    );
    // The backward's dO likewise.
    let f = poly::forward_multihead(&q, &k, &v, &pcfg).unwrap();
    let mut d_o = stack::<f64>(4, 9, 3, 4, 1.0);
    d_o.as_mut_slice()[2 * 27] = f64::NAN;
    expect(
        poly::backward_multihead(&q, &k, &v, &f, &d_o, GradientKind::Substituted, &pcfg)
            .unwrap_err(),
        "do",
        "[2, 0, 0]",
    );
}
