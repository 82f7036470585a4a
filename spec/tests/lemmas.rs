//! One test per lemma of the register (docs/math.md §6): each runs the
//! lemma's probe (its functions against the independent dual-number oracle,
//! the exact rational identities, and the epsilon check against `exp`) on
//! several random instances of different non-square shapes with a
//! non-symmetric `W`, and on a symmetric-`W` instance, and asserts the status
//! that docs/math.md §6 states for the lemma. Margins are printed
//! (`cargo test -- --nocapture`).
//!
//! Tolerances: none. Agreement means that the two enclosures of the same entry
//! overlap; they are certified (outward rounding at 128 bits), so overlap is
//! necessary for a correct formula and disjointness is a proof that a formula
//! is wrong. The epsilon check compares with a bound that interval arithmetic
//! propagates rigorously from `eps_P` (see `linalg::widened_kernel`).

use polyattn_spec::instance::{Instance, Shape};
use polyattn_spec::register::{entries, Entry, Probe};
use polyattn_spec::DEFAULT_PREC;

/// What docs/math.md §6 says about a lemma.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Correct as printed (or no separate printed form is encoded).
    Holds,
    /// The printed form is wrong, also for symmetric `W`.
    Erratum,
    /// The printed form is right only for symmetric `W`.
    OnlySymmetric,
}

/// Random instances: three seeds, three shapes (`n != d != d_v`).
fn general_instances() -> Vec<Instance> {
    vec![
        Instance::with_shape(11, Shape { n: 5, d: 3, d_v: 2 }, false),
        Instance::with_shape(22, Shape { n: 4, d: 2, d_v: 3 }, false),
        Instance::with_shape(33, Shape { n: 6, d: 3, d_v: 1 }, false),
    ]
}

fn entry(number: &str) -> Entry {
    entries()
        .into_iter()
        .find(|e| format!("{} {}", e.paper, e.number) == number)
        .unwrap_or_else(|| panic!("no register entry {number}"))
}

fn describe(p: &Probe) -> String {
    let mut s = String::new();
    if let Some(a) = p.correct {
        s += &format!(
            "correct: {} entries, {} disjoint, max width {:.1e}; ",
            a.entries, a.disjoint, a.max_width
        );
    }
    if let Some(a) = p.printed {
        s += &format!(
            "printed: {} of {} disjoint, margin {:.3e} (rel. {:.3e}); ",
            a.disjoint, a.entries, a.margin, a.rel_margin
        );
    }
    if let Some(e) = p.exact {
        s += &format!("exact identity: {e}; ");
    }
    if let Some(e) = p.printed_exact {
        s += &format!("printed exact identity: {e}; ");
    }
    if let Some(b) = p.bound {
        s += &format!(
            "measured/bound in [{:.3e}, {:.3e}]; ",
            b.ratio_lo, b.ratio_hi
        );
    }
    if let Some(b) = p.printed_bound {
        s += &format!(
            "measured/printed bound in [{:.3e}, {:.3e}]; ",
            b.ratio_lo, b.ratio_hi
        );
    }
    if let Some(e) = p.eps {
        s += &format!(
            "eps_P {:.2e}, bound {:.2e}, measured {:.2e}, consistent {}",
            e.eps_p, e.bound, e.measured, e.consistent
        );
    }
    s
}

fn check(number: &str, expect: Expect) {
    let e = entry(number);
    for inst in general_instances() {
        let p = (e.probe)(&inst, DEFAULT_PREC).expect("probe runs");
        println!("{number} seed {} (general W): {}", inst.seed, describe(&p));
        assert!(
            p.correct_holds(),
            "{number}: corrected form fails on seed {}",
            inst.seed
        );
        assert!(
            p.correct.is_some() || p.exact.is_some() || p.eps.is_some() || p.bound.is_some(),
            "{number}: nothing was checked"
        );
        match expect {
            Expect::Holds => assert_ne!(
                p.printed_wrong(),
                Some(true),
                "{number}: printed form wrong"
            ),
            Expect::Erratum | Expect::OnlySymmetric => assert_eq!(
                p.printed_wrong(),
                Some(true),
                "{number}: printed form not proven wrong on seed {}",
                inst.seed
            ),
        }
    }
    let sym = Instance::random(44, true);
    let p = (e.probe)(&sym, DEFAULT_PREC).expect("probe runs");
    println!("{number} seed 44 (symmetric W): {}", describe(&p));
    assert!(
        p.correct_holds(),
        "{number}: corrected form fails for symmetric W"
    );
    match expect {
        Expect::Holds => assert_ne!(p.printed_wrong(), Some(true)),
        Expect::Erratum => assert_eq!(
            p.printed_wrong(),
            Some(true),
            "{number}: right for symmetric W"
        ),
        Expect::OnlySymmetric => assert_eq!(
            p.printed_wrong(),
            Some(false),
            "{number}: printed form should hold for symmetric W"
        ),
    }
}

macro_rules! lemma_tests {
    ($($name:ident: $number:literal => $expect:ident,)*) => {
        $(
            #[test]
            fn $name() {
                check($number, Expect::$expect);
            }
        )*

        /// Every register entry has its own test above.
        #[test]
        fn every_register_entry_is_tested() {
            let tested = [$($number),*];
            for e in entries() {
                let key = format!("{} {}", e.paper, e.number);
                assert!(tested.contains(&key.as_str()), "untested register entry {key}");
            }
            assert_eq!(tested.len(), entries().len());
        }
    };
}

lemma_tests! {
    ml24_c4_chain_rule: "ML24 Lemma 3.4 / C.4" => Holds,
    ml24_d1_same_row: "ML24 Lemma D.1 (i0 = i1, C1..C5)" => OnlySymmetric,
    ml24_d1_other_rows: "ML24 Lemma D.1 (i0 != i1, C6..C8)" => Erratum,
    ml24_d3_b6: "ML24 Lemma D.3 (B6)" => Erratum,
    ml24_d4_b7: "ML24 Lemma D.4 (B7)" => Erratum,
    ml24_d5_b8: "ML24 Lemma D.5 (B8)" => Erratum,
    ml24_d6_b2: "ML24 Lemma D.6 (B2)" => OnlySymmetric,
    ml24_d7_b4: "ML24 Lemma D.7 (B4)" => OnlySymmetric,
    ml24_d8: "ML24 Lemma D.8" => Erratum,
    ml24_d9: "ML24 Lemma D.9" => Erratum,
    ml24_d10_d6: "ML24 Lemma D.10 (D6)" => Erratum,
    ml24_d11_d7: "ML24 Lemma D.11 (D7)" => Erratum,
    ml24_d12_d8: "ML24 Lemma D.12 (D8)" => Erratum,
    ml24_d13_d2: "ML24 Lemma D.13 (D2)" => OnlySymmetric,
    ml24_d14_d4: "ML24 Lemma D.14 (D4)" => OnlySymmetric,
    ml24_d17: "ML24 Lemma D.17" => Erratum,
    ml24_c13: "ML24 Lemma C.13" => Holds,
    ml24_c17: "ML24 Lemma C.17" => Holds,
    ml24_c18: "ML24 Lemma C.18" => Holds,
    ml24_c19: "ML24 Lemma C.19" => Holds,
    ml24_e_d6: "ML24 Lemmas E.2..E.10 (D6)" => Erratum,
    ml24_e_d7: "ML24 Lemmas E.2..E.10 (D7)" => Erratum,
    ml24_e_d8: "ML24 Lemmas E.2..E.10 (D8)" => Erratum,
    ml24_e_d2: "ML24 Lemmas E.2..E.10 (D2)" => OnlySymmetric,
    ml24_e_d4: "ML24 Lemmas E.2..E.10 (D4)" => OnlySymmetric,
    ml24_e_sum: "ML24 Lemmas E.2..E.10 (sum)" => Erratum,
    ml24_f3: "ML24 Lemma F.3 (= AS24 B.1)" => Holds,
    ml24_f4: "ML24 Lemma F.4" => Holds,
    ml24_f5_alg1_line19: "ML24 Lemma F.5 / Alg. 1 line 19" => Erratum,
    ml24_g1: "ML24 Lemma G.1" => Holds,
    ml24_g2: "ML24 Lemma G.2" => Holds,
    ml24_g3: "ML24 Lemma G.3" => Erratum,
    ml24_alg1_line22: "ML24 Alg. 1 line 22 (low-rank G.3)" => Erratum,
    ml24_h2: "ML24 Lemma H.2" => Holds,
    ml24_grad_w_g: "ML24 dL/dW_g (H.2's weight counterpart; not in ML24)" => Holds,
    ml24_i1_rank: "ML24 Lemma I.1 (rank side; degree not checkable)" => Holds,
    ml24_i3_alg2: "ML24 Lemma I.3 / Alg. 2" => Holds,
    ml24_suffix_product: "ML24 suffix-sum product (docs/math.md §3.5)" => Holds,
    ml24_i6: "ML24 Lemma I.6" => Holds,
    ml24_i7_i8_causal_grad_x: "ML24 Lemmas I.7 (parts 1-3) + I.8 (parts 1-2), causal dL/dX" => Erratum,
    ml24_i7_causal_grad_wv: "ML24 Lemma I.7 part 4, causal dL/dW_V" => Erratum,
    ml24_i8_causal_grad_w: "ML24 Lemma I.8 part 3, causal dL/dW" => Holds,
    ml24_j3: "ML24 Lemma J.3" => Holds,
    ml24_k2: "ML24 Lemma K.2" => Holds,
    ml24_fact_c2: "ML24 Fact C.2" => Holds,
    as24_b1_part1: "AS24 Lemma B.1 part 2" => Holds,
    as24_b1_part2: "AS24 Lemma B.1 part 3" => Holds,
    as24_b1_part3: "AS24 Lemma B.1 part 4" => Holds,
    as24_b1_part4: "AS24 Lemma B.1 part 5 (its proof's d alpha^-1 step)" => Holds,
    as24_b1_part5: "AS24 Lemma B.1 part 5" => Holds,
    as24_b1_part6: "AS24 Lemma B.1 part 6" => Holds,
    as24_b1_part7: "AS24 Lemma B.1 part 7" => Holds,
    as24_b1_part8: "AS24 Lemma B.1 part 8 (summed over j0, i0)" => Holds,
    as24_c7: "AS24 Lemma C.7" => Holds,
    as24_d1: "AS24 Lemma D.1" => Holds,
    as24_d3: "AS24 Lemma D.3" => Erratum,
    as24_d4: "AS24 Lemma D.4" => Holds,
    as24_d5: "AS24 Lemma D.5" => Erratum,
    as24_theorem_1_6: "AS24 Theorem 1.6 (algorithm)" => Holds,
    as24_e3: "AS24 Lemma E.3" => Erratum,
    as24_e4: "AS24 Lemma E.4" => Holds,
    as24_e5_reduction: "AS24 Theorem 1.5 / E.5 (reduction, n = 8)" => Holds,
}

/// The register measures the statuses docs/math.md §6 records, renders them, and its
/// JSON parses back with one object per row.
#[test]
fn register_renders_and_lists_the_known_errata() {
    let rows = polyattn_spec::register::rows(DEFAULT_PREC).expect("register runs");
    let md = polyattn_spec::register::to_markdown(&rows);
    let json = polyattn_spec::register::to_json(&rows);
    let parsed: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(parsed.as_array().map(Vec::len), Some(rows.len()));
    for r in &rows {
        assert!(md.contains(r.number), "markdown misses {}", r.number);
        assert_ne!(
            r.status,
            polyattn_spec::register::Status::Fails,
            "{}",
            r.number
        );
    }
    // The main errata of docs/math.md §6 show as errata with a positive
    // certified margin.
    for number in [
        "ML24 Lemma D.1 (i0 != i1, C6..C8)",
        "ML24 Lemma D.17",
        "ML24 Lemma G.3",
        "ML24 Alg. 1 line 22 (low-rank G.3)",
        "ML24 Lemma F.5 / Alg. 1 line 19",
        "AS24 Lemma D.3",
        "AS24 Lemma D.5",
    ] {
        let r = rows
            .iter()
            .find(|r| format!("{} {}", r.paper, r.number) == number)
            .expect("row");
        assert_eq!(
            r.status,
            polyattn_spec::register::Status::Erratum,
            "{number}"
        );
        assert!(r.printed_margin.is_some_and(|m| m > 0.0), "{number}");
        println!("{number}: margin {:?}", r.printed_margin);
    }
}

/// Bad inputs are refused with an error, never a panic.
#[test]
fn bad_inputs_are_errors() {
    use nalgebra::DMatrix;
    use polyattn_spec::attention::SpecError;
    use polyattn_spec::linalg::Poly;
    use polyattn_spec::ml24::{low_rank, terms};
    let inst = Instance::random(5, false);
    let l = &inst.layer;
    let wrong_g = DMatrix::from_element(l.n() + 1, l.d_v(), 1.0);
    assert!(matches!(
        terms::lemma_d17_grad_x(l, &wrong_g, DEFAULT_PREC),
        Err(SpecError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        terms::lemma_d1_ds_dx(l, (0, 0), (l.n(), 0), DEFAULT_PREC),
        Err(SpecError::ShapeMismatch { .. })
    ));
    let mut nan = l.clone();
    nan.x[(1, 1)] = f64::NAN;
    assert!(matches!(
        terms::lemma_d17_grad_x(&nan, &inst.g, DEFAULT_PREC),
        Err(SpecError::NonFinite { .. })
    ));
    assert!(matches!(
        terms::lemma_d17_grad_x(l, &inst.g, 0),
        Err(SpecError::InvalidPrecision { .. })
    ));
    let empty = Poly { coeffs: vec![] };
    assert!(matches!(
        low_rank::lemma_e_low_rank_grad_x(l, &inst.g, &empty),
        Err(SpecError::Degenerate { .. })
    ));
    // P(x) = x makes the normaliser of an all-zero row zero: an error, not a
    // division by zero.
    let identity = Poly {
        coeffs: vec![rug::Rational::new(), rug::Rational::from(1)],
    };
    let mut zero_row = l.clone();
    zero_row.x.row_mut(0).fill(0.0);
    assert!(matches!(
        low_rank::lemma_e1_low_rank_f(&zero_row, &identity),
        Err(SpecError::Degenerate { .. })
    ));
}

/// Lemma C.18's printed chain `n ||X|| ||W_V||` is not a bound when `d > n`:
/// with `X`, `W_V` all ones (`n = 2`, `d = 4`) every entry of `X W_V` is
/// exactly `4 = d > n`. The expected values are worked out here by hand.
#[test]
fn c18_printed_chain_fails_when_d_exceeds_n() {
    use nalgebra::DMatrix;
    use polyattn_spec::bounds::BoundCheck;
    use polyattn_spec::ml24::entry_bounds::lemma_c18_h_bound;
    use polyattn_spec::ml24::Layer;
    let layer = Layer {
        x: DMatrix::from_element(2, 4, 1.0),
        w: DMatrix::from_element(4, 4, 1.0),
        w_v: DMatrix::from_element(4, 1, 1.0),
        tau: 1.0,
    };
    let b = lemma_c18_h_bound(&layer, DEFAULT_PREC).expect("runs");
    assert!(b.measured.contains_f64(4.0) && b.measured.width_f64() == 0.0);
    assert!(b.printed.contains_f64(2.0) && b.general.contains_f64(4.0));
    let printed = BoundCheck::new(&b.measured, &b.printed).expect("check");
    let general = BoundCheck::new(&b.measured, &b.general).expect("check");
    assert!(printed.violated(), "{printed:?}");
    assert!(general.holds(), "{general:?}");
}

/// Lemma E.3's `f'` on the aligned instance against its closed form, worked
/// out here independently: every row puts softmax mass `w = e^{lambda B} /
/// (e^{lambda B} + 1)` on the even keys, every entry of `C V` is `w`, so
/// `f = n d w^2` and `f' = 2 n d B w^2 (1 - w)`. At `lambda = 11/16`, `B = 1`,
/// `n = 4`, `d = 32` that is about `37.9 > 8 B n = 32`: the printed bound
/// fails. Tolerance `1e-12` relative: the closed form is evaluated in `f64`
/// with a handful of roundings (each `<= 2^-53` relative), far below it.
#[test]
fn e3_slope_matches_closed_form_and_beats_printed_bound() {
    use polyattn_spec::as24_lower::{f_and_slope, lambda_at, HardInstance};
    let (n, d, b) = (4.0, 32.0, 1.0);
    let h = HardInstance::aligned(4, 32, b).expect("instance");
    assert!(h.meets_hypotheses());
    let lambda = 11.0 / 16.0;
    let e = f64::exp(lambda * b);
    let w = e / (e + 1.0);
    let f = n * d * w * w;
    let slope = 2.0 * n * d * b * w * w * (1.0 - w);
    let (fv, sv) = f_and_slope(&h, &lambda_at(11, 16, DEFAULT_PREC), DEFAULT_PREC).expect("runs");
    assert!(
        (fv.mid_f64() - f).abs() <= 1e-12 * f,
        "{} vs {f}",
        fv.mid_f64()
    );
    assert!(
        (sv.mid_f64() - slope).abs() <= 1e-12 * slope,
        "{} vs {slope}",
        sv.mid_f64()
    );
    assert!(slope > 8.0 * b * n && sv.lo_f64() > 8.0 * b * n);
    assert!(sv.hi_f64() <= 2.0 * b * d * n);
}

/// `f(lambda)` written a second time, plainly in `f64` (test-side, no spec
/// code), for finite differences.
fn f_plain(a: &nalgebra::DMatrix<f64>, v: &nalgebra::DMatrix<f64>, lambda: f64) -> f64 {
    let n = a.nrows();
    let mut total = 0.0;
    for i in 0..n {
        let m: Vec<f64> = (0..n).map(|j| (lambda * a[(i, j)]).exp()).collect();
        let z: f64 = m.iter().sum();
        for l in 0..v.ncols() {
            let cv: f64 = (0..n).map(|j| m[j] * v[(j, l)]).sum::<f64>() / z;
            total += cv * cv;
        }
    }
    total
}

/// Theorem E.5's reduction on three seeds. Its gradient-derived slope at
/// `lambda = 1/2` matches a central difference of the plain `f64` `f`: step
/// `h = 1e-4`, truncation `h^2/6 |f'''|`. Per row `f_i = e^g` with `g` the
/// difference of two cumulant generating functions of values in `[0, 2B]`,
/// so `|g'| <= 2B`, `|g''| <= B^2` (variances), `|g'''| <= 4 B^3` (third
/// central moments, each at most `2B * B^2`), and `f_i''' = (g''' + 3 g' g''
/// + g'^3) f_i` gives `|f'''| <= 18 B^3 d n = 3456` here: truncation
/// `<= 5.8e-6`, plus rounding `~ 1e-16 f / h <= 3e-11`; tolerance `1e-5`.
/// Its fast `f(0)` and the forward `f(1)` match the plain `f` (a few hundred
/// `f64` roundings on values `<= n d = 24`, so `1e-12 * 24` absolute is
/// generous). It uses `m = 128 >= (log2 8)^4 = 81` calls (worked by hand)
/// and its answer lies within Lemma E.4's `b/m`.
#[test]
fn e5_reduction_recovers_forward_value() {
    use polyattn_spec::as24_lower::{
        f_at_zero, theorem_e5_calls, theorem_e5_reduction, HardInstance,
    };
    assert_eq!(theorem_e5_calls(8), 128);
    assert_eq!(theorem_e5_calls(16), 256);
    for seed in [1, 2, 3] {
        let h = HardInstance::random(8, 3, 2.0, seed).expect("instance");
        assert!(h.meets_hypotheses());
        let a = h.scores();
        let r = theorem_e5_reduction(&h, 128, DEFAULT_PREC).expect("runs");
        // Not a constant f (which would make every check trivial).
        assert!((r.exact.mid_f64() - f_plain(&a, &h.v, 0.0)).abs() > 1e-3);
        let step = 1e-4;
        let fd = (f_plain(&a, &h.v, 0.5 + step) - f_plain(&a, &h.v, 0.5 - step)) / (2.0 * step);
        let s = r.slopes_by_gradient[64].mid_f64();
        assert!(
            (s - fd).abs() <= 1e-5,
            "seed {seed}: slope {s} vs difference {fd}"
        );
        let f0 = f_at_zero(&h, DEFAULT_PREC).mid_f64();
        let tol = 1e-12 * 24.0;
        assert!((f0 - f_plain(&a, &h.v, 0.0)).abs() <= tol);
        assert!((r.exact.mid_f64() - f_plain(&a, &h.v, 1.0)).abs() <= tol);
        assert!(
            r.error.hi_f64() <= r.bound.lo_f64(),
            "seed {seed}: {:?}",
            r.error
        );
        println!(
            "seed {seed}: f(1) = {:.6}, estimate {:.6}, error {:.2e}, bound b/m {:.2e}",
            r.exact.mid_f64(),
            r.estimate.mid_f64(),
            r.error.hi_f64(),
            r.bound.lo_f64()
        );
    }
}

/// Lemma E.4's sum on a function whose integral is known: slopes of
/// `f(lambda) = lambda^2` at `i/m` are `2i/m`, so `t_m = (m - 1)/m` exactly,
/// and `|t_m - (f(1) - f(0))| = 1/m`, within `b/m` for `b = |f''| = 2`. A sum
/// with a wrong divisor or a missing point would miss `(m - 1)/m`.
#[test]
fn e4_riemann_sum_of_a_known_integral() {
    use polyattn_spec::as24_lower::{lambda_at, lemma_e4_riemann_sum};
    use polyattn_spec::Interval;
    for m in [1u64, 3, 16, 81] {
        let slopes: Vec<Interval> = (0..m).map(|i| lambda_at(2 * i, m, DEFAULT_PREC)).collect();
        let t = lemma_e4_riemann_sum(&slopes, DEFAULT_PREC).expect("sum");
        let expected = lambda_at(m - 1, m, DEFAULT_PREC);
        assert!(
            t.overlaps(&expected) && t.width_f64() < 1e-30,
            "m = {m}: {t:?}"
        );
        assert!((1.0 - t.mid_f64()) <= 2.0 / m as f64);
    }
    assert!(lemma_e4_riemann_sum(&[], DEFAULT_PREC).is_err());
}

/// Lemma I.1's rank side: for `d = 3` and the degree-4 polynomial the
/// factors have `C(7, 4) = 35` columns and the lemma allows `C(14, 8) = 3003`
/// (binomials worked by hand); the product is `P(scores)` exactly. The degree
/// terms for `eps = e^-8`, `R = 2`: printed `8 / ln(8/2) = 5.771`, with `R^2`
/// `8 / ln(8/4) = 11.542`, second term `R^2 = 4` (to 1e-3, the digits given).
#[test]
fn i1_rank_and_degree_terms() {
    use polyattn_spec::ml24::degree::{lemma_i1_degree_terms, lemma_i1_low_rank};
    let inst = Instance::with_shape(11, Shape { n: 5, d: 3, d_v: 2 }, false);
    let c = lemma_i1_low_rank(&inst.layer, &inst.poly_exact).expect("runs");
    assert_eq!(inst.poly_exact.degree(), 4);
    assert_eq!(c.rank, 35);
    assert_eq!(c.rank_bound, 3003);
    assert!(c.product == c.direct);
    let (printed, squared) = lemma_i1_degree_terms((-8.0f64).exp(), 2.0);
    let (printed, squared) = (printed.expect("defined"), squared.expect("defined"));
    assert!((printed[0] - 5.771).abs() < 1e-3 && (printed[1] - 4.0).abs() < 1e-12);
    assert!((squared[0] - 11.542).abs() < 1e-3);
    // log(1/eps) / R^2 <= 1: the corrected first term is undefined there.
    assert!(lemma_i1_degree_terms(0.5, 2.0).1.is_none());
}
