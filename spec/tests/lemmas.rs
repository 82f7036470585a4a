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
            p.correct.is_some() || p.exact.is_some() || p.eps.is_some(),
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
    ml24_e_d6: "ML24 Lemmas E.2..E.10 (D6)" => Holds,
    ml24_e_d7: "ML24 Lemmas E.2..E.10 (D7)" => Holds,
    ml24_e_d8: "ML24 Lemmas E.2..E.10 (D8)" => Holds,
    ml24_e_d2: "ML24 Lemmas E.2..E.10 (D2)" => Holds,
    ml24_e_d4: "ML24 Lemmas E.2..E.10 (D4)" => Holds,
    ml24_e_sum: "ML24 Lemmas E.2..E.10 (sum)" => Holds,
    ml24_f3: "ML24 Lemma F.3 (= AS24 B.1)" => Holds,
    ml24_f4: "ML24 Lemma F.4" => Holds,
    ml24_f5_alg1_line19: "ML24 Lemma F.5 / Alg. 1 line 19" => Erratum,
    ml24_g1: "ML24 Lemma G.1" => Holds,
    ml24_g2: "ML24 Lemma G.2" => Holds,
    ml24_g3: "ML24 Lemma G.3" => Erratum,
    ml24_alg1_line22: "ML24 Alg. 1 line 22 (low-rank G.3)" => Erratum,
    ml24_h2: "ML24 Lemma H.2" => Holds,
    ml24_grad_w_g: "ML24 dL/dW_g (H.2's weight counterpart; not in ML24)" => Holds,
    ml24_i3_alg2: "ML24 Lemma I.3 / Alg. 2" => Holds,
    ml24_suffix_product: "ML24 suffix-sum product (docs/math.md §3.5)" => Holds,
    ml24_i6: "ML24 Lemma I.6" => Holds,
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
