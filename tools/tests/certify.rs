//! The certification machinery: the f64 reference's a priori rounding bound really
//! encloses the exact result (checked against 128-bit MPFR enclosures, including
//! scores near 80 and every mask), and a certified report is self-consistent and
//! agrees between the MPFR and f64 references.

mod common;

use common::{case, enclosures};
use polyattn::attention::exact::reference::exact_reference_with_bias;
use polyattn::attention::poly::{Accuracy, GradientKind, PolyConfig};
use polyattn::attention::{Alignment, AttentionConfig, Mask};
use polyattn::rng::SplitMix64;
use polyattn::tensor::{Matrix, Tensor3};
use polyattn_spec::Interval;
use polyattn_tools::certify::report::{certify_attention, ReferenceChoice, ReferenceUsed};

/// |y_ref - exact| <= bound for every entry: the exact value lies in the MPFR
/// enclosure, so it suffices that the enclosure lies within y_ref +- bound.
fn assert_encloses(name: &str, y: &[f64], b: &[f64], ivs: &[Interval]) -> f64 {
    let mut worst: f64 = 0.0;
    for (i, ((y, b), iv)) in y.iter().zip(b).zip(ivs).enumerate() {
        let dist = (y - iv.lo_f64()).abs().max((iv.hi_f64() - y).abs());
        assert!(
            dist <= *b,
            "{name}[{i}]: |y - exact| up to {dist:e} > bound {b:e}"
        );
        if *b > 0.0 {
            worst = worst.max(dist / b);
        }
    }
    worst
}

/// Every mask, a sliding window in both alignments, and additive biases (noise with
/// a large spread, ALiBi, key padding as -inf).
#[test]
fn f64_reference_bound_encloses_the_exact_result() {
    let mut worst: f64 = 0.0;
    let mut seed = 0;
    let masks = [
        Mask::None,
        Mask::CausalTopLeft,
        Mask::CausalBottomRight,
        Mask::None.with_window(Some(4), Some(1), Alignment::BottomRight),
        Mask::None.with_window(Some(2), None, Alignment::TopLeft),
    ];
    for mask in masks {
        for &(dims, s_max) in &[
            ((20, 13, 3, 4), None),
            ((64, 70, 8, 8), None),
            ((33, 33, 4, 2), Some(80.0)),
            ((9, 40, 2, 5), Some(1e-8)),
        ] {
            for bias_kind in 0..4 {
                seed += 1;
                let (n_q, n_k) = (dims.0, dims.1);
                let mut r = SplitMix64::new(seed);
                let bias: Option<Vec<f64>> = match bias_kind {
                    0 => None,
                    1 => Some(r.normal_vec(n_q * n_k, 10.0)),
                    2 => Some(
                        (0..n_q * n_k)
                            .map(|ij| {
                                let (i, j) = ((ij / n_k) as f64, (ij % n_k) as f64);
                                -0.5 * (i + n_k as f64 - n_q as f64 - j).abs()
                            })
                            .collect(),
                    ),
                    _ => Some(
                        (0..n_q * n_k)
                            .map(|ij| {
                                if ij % n_k < 3 * n_k / 4 {
                                    0.0
                                } else {
                                    f64::NEG_INFINITY
                                }
                            })
                            .collect(),
                    ),
                };
                let c = case::<f64>(seed, dims, None, mask, s_max);
                let c = match bias {
                    Some(b) => c.with_bias::<f64>(b),
                    None => c,
                };
                worst = worst.max(check_reference(&c, dims, mask));
            }
        }
    }
    println!("worst |y_ref - exact| / bound = {worst:.3e}");
}

/// Under a softcap (with and without an ALiBi bias, every mask, the caps from near-
/// linear to saturated, scores up to 80): the f64 reference's bound, extended by the
/// cap's terms, still encloses the exact result.
#[test]
fn f64_reference_bound_encloses_softcapped_attention() {
    let mut worst: f64 = 0.0;
    let mut seed = 500;
    let masks = [
        Mask::None,
        Mask::CausalBottomRight,
        Mask::None.with_window(Some(4), Some(1), Alignment::BottomRight),
    ];
    for mask in masks {
        for &(dims, s_max, cap) in &[
            ((20, 13, 3, 4), Some(1.0), 30.0),
            ((64, 70, 8, 8), Some(10.0), 5.0),
            ((33, 33, 4, 2), Some(80.0), 20.0),
            ((9, 40, 2, 5), Some(1e-8), 0.5),
        ] {
            for alibi in [false, true] {
                seed += 1;
                let (n_q, n_k) = (dims.0, dims.1);
                let c = case::<f64>(seed, dims, None, mask, s_max).with_softcap::<f64>(cap);
                let c = if alibi {
                    c.with_bias::<f64>(
                        (0..n_q * n_k)
                            .map(|ij| {
                                let (i, j) = ((ij / n_k) as f64, (ij % n_k) as f64);
                                -0.5 * (i + n_k as f64 - n_q as f64 - j).abs()
                            })
                            .collect(),
                    )
                } else {
                    c
                };
                worst = worst.max(check_reference(&c, dims, mask));
            }
        }
    }
    println!("softcap: worst |y_ref - exact| / bound = {worst:.3e}");
}

/// The f64 reference with its bound for case `c`, checked against the MPFR
/// enclosures; returns the worst `|y_ref - exact| / bound`.
fn check_reference(c: &common::Case, dims: (usize, usize, usize, usize), mask: Mask) -> f64 {
    let (n_q, n_k, d, d_v) = dims;
    let m = |r, cc, x: &[f64]| Matrix::from_vec(r, cc, x.to_vec()).unwrap();
    let (q, k, v, g) = (
        m(n_q, d, &c.q),
        m(n_k, d, &c.k),
        m(n_k, d_v, &c.v),
        m(n_q, d_v, &c.d_o),
    );
    let bias = c.bias.as_ref().map(|b| m(n_q, n_k, b));
    let r = exact_reference_with_bias(
        q.view(),
        k.view(),
        v.view(),
        bias.as_ref().map(|b| b.view()),
        Some(g.view()),
        &AttentionConfig {
            scale: None,
            mask,
            softcap: c.softcap,
        },
    )
    .unwrap();
    let enc = enclosures::<f64>(c);
    let gr = r.grads.unwrap();
    [
        assert_encloses("o", &r.o, &r.bound_o, &enc.o),
        assert_encloses("dq", &gr.dq, &gr.bound_dq, &enc.dq),
        assert_encloses("dk", &gr.dk, &gr.bound_dk, &enc.dk),
        assert_encloses("dv", &gr.dv, &gr.bound_dv, &enc.dv),
    ]
    .into_iter()
    .fold(0.0, f64::max)
}

fn stacks(seed: u64, h: usize, n: usize, d: usize, scale: f64) -> [Tensor3<f64>; 4] {
    let mut r = SplitMix64::new(seed);
    let mut t = |s: f64| Tensor3::from_vec(h, n, d, r.normal_vec(h * n * d, s)).unwrap();
    [t(scale), t(scale), t(1.0), t(1.0)]
}

#[test]
fn reports_are_consistent_and_references_agree() {
    let [q, k, v, g] = stacks(7, 2, 90, 4, 0.4);
    for mask in [Mask::None, Mask::CausalTopLeft] {
        let cfg = PolyConfig {
            mask,
            accuracy: Accuracy::Eps(1e-5),
            ..PolyConfig::default()
        };
        let a = certify_attention(
            &q,
            &k,
            &v,
            Some(&g),
            &cfg,
            GradientKind::Substituted,
            ReferenceChoice::Mpfr,
        )
        .unwrap();
        let b = certify_attention(
            &q,
            &k,
            &v,
            Some(&g),
            &cfg,
            GradientKind::Substituted,
            ReferenceChoice::F64,
        )
        .unwrap();
        assert_eq!(a.reference, ReferenceUsed::Mpfr { prec: 128 });
        assert_eq!(b.reference, ReferenceUsed::F64WithBound);
        assert_eq!(a.tensors.len(), 4);
        for (ta, tb) in a.tensors.iter().zip(&b.tensors) {
            assert!(ta.a_priori_consistent && tb.a_priori_consistent, "{ta:?}");
            assert!(ta.certified_lower_max_abs <= ta.certified_max_abs);
            // Both certify the same computed values: each upper bound is at least the
            // other's lower bound.
            assert!(
                tb.certified_max_abs >= ta.certified_lower_max_abs,
                "{ta:?} {tb:?}"
            );
            assert!(
                ta.certified_max_abs >= tb.certified_lower_max_abs,
                "{ta:?} {tb:?}"
            );
            // The poly error dominates both references' radii here (eps 1e-5 vs
            // f64 rounding), so the two upper bounds nearly coincide.
            assert!(
                (ta.certified_max_abs - tb.certified_max_abs).abs() <= 1e-9,
                "{ta:?} {tb:?}"
            );
            assert!(ta.certified_max_abs <= ta.a_priori_total, "{ta:?}");
        }
        assert!(a.tensors[0].a_priori_total <= 1e-5);
        assert!(a.to_markdown().contains("| o |"));
        // The ball reference is for whole models: a typed refusal for a single head.
        let e = certify_attention(
            &q,
            &k,
            &v,
            Some(&g),
            &cfg,
            GradientKind::Substituted,
            ReferenceChoice::Ball,
        )
        .unwrap_err();
        assert!(e.to_string().contains("whole-model"), "{e}");
        // The plot's row profiles partition rows 1..=90 and keep each tensor's maxima.
        assert_eq!(a.row_profiles.len(), 4);
        for (p, t) in a.row_profiles.iter().zip(&a.tensors) {
            assert_eq!(p.name, t.name);
            assert_eq!(p.rows.last(), Some(&90));
            assert!(p.rows.windows(2).all(|w| w[0] < w[1]), "{:?}", p.rows);
            let max = |v: &[f64]| v.iter().cloned().fold(0.0f64, f64::max);
            assert_eq!(max(&p.certified), t.certified_max_abs, "{}", t.name);
            assert_eq!(max(&p.a_priori), t.a_priori_total, "{}", t.name);
        }
    }
}

/// The polynomial engine's key padding certified: a bias hiding keys (columns all
/// -inf) under a causal mask and a window, against both references applied with the
/// bias; the a priori bounds hold entry by entry (`a_priori_consistent`), and the
/// certified errors of O stay below the requested eps.
#[test]
fn key_padding_is_certified_against_the_biased_references() {
    let [q, k, v, g] = stacks(8, 2, 70, 4, 0.4);
    let hidden = |j: usize| j % 9 == 4 || j >= 66;
    let bias = Tensor3::from_vec(
        1,
        70,
        70,
        (0..70 * 70)
            .map(|e| {
                if hidden(e % 70) {
                    f64::NEG_INFINITY
                } else {
                    0.0
                }
            })
            .collect(),
    )
    .unwrap();
    let window = Mask::None.with_window(
        Some(20),
        Some(3),
        polyattn::attention::Alignment::BottomRight,
    );
    for mask in [Mask::CausalTopLeft, window] {
        let cfg = PolyConfig {
            mask,
            accuracy: Accuracy::Eps(1e-5),
            max_cost_ratio: f64::INFINITY,
            ..PolyConfig::default()
        };
        for reference in [ReferenceChoice::Mpfr, ReferenceChoice::F64] {
            let r = polyattn_tools::certify::report::certify_attention_with_bias(
                &q,
                &k,
                &v,
                Some(&bias),
                Some(&g),
                &cfg,
                GradientKind::Substituted,
                reference,
            )
            .unwrap();
            for t in &r.tensors {
                assert!(t.a_priori_consistent, "{mask:?} {reference:?} {t:?}");
            }
            // Keys 4, 13, ..., 58 (j % 9 == 4) and 66..70 hidden, in both heads.
            assert_eq!(r.hidden_keys, Some(vec![11, 11]));
            assert!(r.to_markdown().contains("hidden keys per head [11, 11]"));
            // Certified within 1e-5 with the bias on both sides, while the padding
            // moves O by more than 1e-2 (checked below): neither side dropped it.
            assert!(r.tensors[0].certified_max_abs <= 1e-5, "{:?}", r.tensors[0]);
        }
        let with =
            polyattn::attention::poly::forward_multihead_with_bias(&q, &k, &v, Some(&bias), &cfg)
                .unwrap();
        let without = polyattn::attention::poly::forward_multihead(&q, &k, &v, &cfg).unwrap();
        let moved = with[0]
            .o
            .as_slice()
            .iter()
            .zip(without[0].o.as_slice())
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(moved > 1e-2, "{moved}");
    }
}

/// The whole-model report (`polyattn certify --weights`): against the MPFR enclosure of
/// the model, the exact engine's own certified error is rounding-sized, the polynomial
/// run's certified error is its measured distance from the exact run up to that
/// rounding, and grad.x's and every weight gradient's error lie below docs/math.md §7.3's
/// propagated bounds; forcing the
/// f64 reference is reported as measured, not certified.
#[test]
fn model_report_certifies_every_gradient() {
    use polyattn::model::fixtures::{bounded_model, poly_choice, small_head_config};
    use polyattn_tools::certify::model_report::{certify_model, ModelReference};
    let (model, batch) = bounded_model(small_head_config(2), 0.25, 40, 5).unwrap();
    let r = certify_model(&model, &batch, &[poly_choice(1e-6)], ReferenceChoice::Auto).unwrap();
    assert!(
        matches!(r.reference, ModelReference::Mpfr { .. }),
        "{:?}",
        r.reference
    );
    assert!(r.layers.iter().all(|l| l.engine == "poly"));
    assert_eq!(r.tensors[0].name, "loss");
    for t in &r.tensors {
        // f64 rounding of the exact engine: a few hundred operations deep, values O(1):
        // 1e-12 (1 + max|exact|) is ~1e4 u of margin, and any formula error is O(1).
        assert!(
            t.exact_engine_max_abs_error <= 1e-12 * (1.0 + t.max_abs_value),
            "{t:?}"
        );
        // Triangle inequality through the exact f64 run.
        assert!(
            t.max_abs_error <= t.poly_part_max_abs + t.exact_engine_max_abs_error + 1e-15,
            "{t:?}"
        );
        assert!(
            t.poly_part_max_abs > 0.0,
            "the polynomial engine ran: {t:?}"
        );
    }
    let dx = r.tensors.iter().find(|t| t.name == "grad.x").unwrap();
    assert!(dx.a_priori_fro_bound.unwrap() >= dx.fro_error, "{dx:?}");
    // Every parameter gradient of both layers has its layer's propagated bound, and
    // each tensor's certified Frobenius error lies below it.
    for t in r
        .tensors
        .iter()
        .filter(|t| t.name.starts_with("grad.layers."))
    {
        assert!(t.a_priori_fro_bound.unwrap() >= t.fro_error, "{t:?}");
    }
    // The double-double ball reference certifies the same run: its bounds and MPFR's
    // differ only by the two enclosures' widths (here below 1e-15 of each tensor's
    // largest entry, far below the polynomial part) plus f64 rounding of the ends.
    let b = certify_model(&model, &batch, &[poly_choice(1e-6)], ReferenceChoice::Ball).unwrap();
    let ModelReference::Ball { max_rel_radius } = b.reference else {
        panic!("{:?}", b.reference)
    };
    assert!(max_rel_radius < 1e-15, "{max_rel_radius}");
    assert!(b.reference_text().contains("certified"));
    for (tb, tm) in b.tensors.iter().zip(&r.tensors) {
        assert_eq!(tb.name, tm.name);
        let slack = 1e-15 * (1.0 + tm.max_abs_value);
        assert!(
            (tb.max_abs_error - tm.max_abs_error).abs() <= slack,
            "{tb:?} {tm:?}"
        );
    }
    let f = certify_model(&model, &batch, &[poly_choice(1e-6)], ReferenceChoice::F64).unwrap();
    assert_eq!(f.reference, ModelReference::F64Exact);
    assert!(f.reference_text().contains("not certified"));
    assert!(r.to_markdown().contains("certified"));
    let dir = std::env::temp_dir().join(format!("polyattn-model-plot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = std::fs::read_to_string(r.write_plot(&dir).unwrap()).unwrap();
    for series in [
        "certified max |y - exact|",
        "exact engine, own error",
        "propagated bound",
    ] {
        assert!(svg.contains(series), "{series}");
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A bias gap past f64's range flushes P to 0: the exact dV of the hidden-by-bias key
/// is e^-1000 / (1 + e^-1000) ~ 5e-435 > 0, so its radius must not be 0 (it is
/// subnormal-sized: the underflow term). And an entry the mask hides never counts: a
/// -1e300 bias there leaves every bound finite.
#[test]
fn underflow_and_hidden_bias_entries() {
    let m = |r, c, x: Vec<f64>| Matrix::from_vec(r, c, x).unwrap();
    let (q, k) = (m(1, 1, vec![0.0]), m(2, 1, vec![0.0, 0.0]));
    let (v, g) = (m(2, 1, vec![1.0, 2.0]), m(1, 1, vec![1.0]));
    let bias = m(1, 2, vec![0.0, -1000.0]);
    let cfg = AttentionConfig::default();
    let r = exact_reference_with_bias(
        q.view(),
        k.view(),
        v.view(),
        Some(bias.view()),
        Some(g.view()),
        &cfg,
    )
    .unwrap();
    let gr = r.grads.unwrap();
    assert_eq!(gr.dv[1], 0.0);
    assert!(gr.bound_dv[1] > 0.0, "the flushed e^-1000 must be covered");
    // A window hides column 0 from every row; a huge bias there must not matter.
    let (n_q, n_k) = (4, 6);
    let mut r = SplitMix64::new(5);
    let mut mk = |rows, cols| m(rows, cols, r.normal_vec(rows * cols, 1.0));
    let (q, k, v, g) = (mk(n_q, 3), mk(n_k, 3), mk(n_k, 2), mk(n_q, 2));
    let mut b = vec![0.0; n_q * n_k];
    b[0] = -1e300;
    let bias = m(n_q, n_k, b);
    let mask = Mask::None.with_window(Some(1), Some(0), Alignment::BottomRight);
    let cfg = AttentionConfig {
        scale: None,
        mask,
        softcap: None,
    };
    assert!(!(0..n_q).any(|i| mask.key_range(i, n_q, n_k).contains(&0)));
    let r = exact_reference_with_bias(
        q.view(),
        k.view(),
        v.view(),
        Some(bias.view()),
        Some(g.view()),
        &cfg,
    )
    .unwrap();
    assert!(r.bound_o.iter().all(|b| b.is_finite()));
    assert!(r.grads.unwrap().bound_dk.iter().all(|b| b.is_finite()));
}
