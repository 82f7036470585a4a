//! Attention enclosures (docs/math.md §2): the closed-form backward agrees with
//! the dual-number oracle, enclosures are tight, large scores stay finite,
//! fully masked rows are zero rows, and the oracle rejects wrong formulas.

use nalgebra::DMatrix;
use polyattn_spec::attention::{
    backward, forward, gradients_by_dual_numbers, probabilities, Grads, Mask, Problem, SpecError,
};
use polyattn_spec::{Interval, DEFAULT_PREC};

/// Test inputs from the spec's generator (SplitMix64).
struct Rng(polyattn_spec::rng::SplitMix64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(polyattn_spec::rng::SplitMix64::new(seed))
    }

    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `[0, 1)`, 53 random bits.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[-scale, scale)`.
    fn sym(&mut self, scale: f64) -> f64 {
        scale * (2.0 * self.unit() - 1.0)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    fn matrix(&mut self, rows: usize, cols: usize, scale: f64) -> DMatrix<f64> {
        DMatrix::from_fn(rows, cols, |_, _| self.sym(scale))
    }
}

const MASKS: [Mask; 3] = [Mask::None, Mask::CausalTopLeft, Mask::CausalBottomRight];

/// Shapes and settings of one random problem.
struct Dims {
    n_q: usize,
    n_k: usize,
    d: usize,
    d_v: usize,
    tau: f64,
    mask: Mask,
}

fn problem(rng: &mut Rng, dims: &Dims, scale: f64) -> Problem {
    Problem {
        q: rng.matrix(dims.n_q, dims.d, scale),
        k: rng.matrix(dims.n_k, dims.d, scale),
        v: rng.matrix(dims.n_k, dims.d_v, 1.0),
        tau: dims.tau,
        mask: dims.mask,
        softcap: None,
    }
}

fn random_dims(rng: &mut Rng, case: usize) -> Dims {
    let n_q = rng.range(1, 7);
    // Every other case forces n_q != n_k.
    let n_k = if case.is_multiple_of(2) {
        (n_q + rng.range(1, 6)) % 7 + 1
    } else {
        rng.range(1, 7)
    };
    let d = rng.range(1, 4);
    let taus = [1.0 / (d as f64).sqrt(), 0.3, 2.0];
    Dims {
        n_q,
        n_k,
        d,
        d_v: rng.range(1, 4),
        tau: taus[case % 3],
        mask: MASKS[(case / 3) % 3],
    }
}

fn pairs(a: &Grads, b: &Grads) -> Vec<(&'static str, (usize, usize), Interval, Interval)> {
    let mats = [
        ("dq", &a.dq, &b.dq),
        ("dk", &a.dk, &b.dk),
        ("dv", &a.dv, &b.dv),
    ];
    let mut out = Vec::new();
    for (name, x, y) in mats {
        assert_eq!(x.shape(), y.shape(), "{name} shape");
        for i in 0..x.nrows() {
            for j in 0..x.ncols() {
                out.push((name, (i, j), x[(i, j)].clone(), y[(i, j)].clone()));
            }
        }
    }
    out
}

/// Largest magnitude in a matrix of enclosures (at least `floor`).
fn scale_of(m: &DMatrix<Interval>, floor: f64) -> f64 {
    m.iter().map(Interval::mag).fold(floor, f64::max)
}

/// Every entry's width is at most `rel` times the matrix's scale (its largest
/// magnitude, or `floor` if that is larger: a matrix that is exactly zero in
/// real arithmetic is enclosed by intervals of rounding-noise width).
fn assert_tight(name: &str, m: &DMatrix<Interval>, rel: f64, floor: f64) {
    let scale = scale_of(m, floor);
    for (idx, x) in m.iter().enumerate() {
        assert!(
            x.is_bounded() && x.width_f64() <= rel * scale,
            "{name}[{idx}] = {x:?} is wider than {rel} x {scale}"
        );
    }
}

#[test]
fn closed_form_backward_agrees_with_the_dual_number_oracle() {
    let mut rng = Rng::new(0x5eed_0001);
    let mut disagreements = Vec::new();
    for case in 0..240 {
        let dims = random_dims(&mut rng, case);
        let p = problem(&mut rng, &dims, 1.0);
        let d_o = rng.matrix(dims.n_q, dims.d_v, 1.0);
        let closed = backward(&p, &d_o, DEFAULT_PREC).unwrap();
        let oracle = gradients_by_dual_numbers(&p, &d_o, DEFAULT_PREC).unwrap();
        for m in [
            &closed.dq, &closed.dk, &closed.dv, &oracle.dq, &oracle.dk, &oracle.dv,
        ] {
            assert_tight("gradient", m, 1e-25, 1.0);
        }
        for (name, ij, x, y) in pairs(&closed, &oracle) {
            if !x.overlaps(&y) {
                disagreements.push(format!("case {case} {name}{ij:?}: {x:?} vs {y:?}"));
            }
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
}

/// Under a softcap the closed form multiplies dS by the cap's slope `1 - tanh^2(s / c)`;
/// the dual-number oracle differentiates the capped forward itself (`Dual::tanh`), so
/// the two agree only if that slope is right. Caps from below the scores to far above.
#[test]
fn softcap_backward_agrees_with_the_oracle() {
    let mut rng = Rng::new(0x5eed_0c4b);
    let mut disagreements = Vec::new();
    let mut moved = 0;
    for case in 0..12 {
        let dims = random_dims(&mut rng, case);
        let mut p = problem(&mut rng, &dims, 2.0);
        p.softcap = Some([0.3, 1.0, 2.5, 50.0][case % 4]);
        let d_o = rng.matrix(dims.n_q, dims.d_v, 1.0);
        let closed = backward(&p, &d_o, DEFAULT_PREC).unwrap();
        let oracle = gradients_by_dual_numbers(&p, &d_o, DEFAULT_PREC).unwrap();
        for m in [&closed.dq, &closed.dk, &closed.dv] {
            assert_tight("gradient", m, 1e-25, 1.0);
        }
        for (name, ij, x, y) in pairs(&closed, &oracle) {
            if !x.overlaps(&y) {
                disagreements.push(format!("case {case} {name}{ij:?}: {x:?} vs {y:?}"));
            }
        }
        // The cap changes the answer (the check is not comparing a no-op).
        let mut plain = p.clone();
        plain.softcap = None;
        let uncapped = backward(&plain, &d_o, DEFAULT_PREC).unwrap();
        if pairs(&closed, &uncapped)
            .into_iter()
            .any(|(_, _, x, y)| !x.overlaps(&y))
        {
            moved += 1;
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
    // Rows that see one key have P = 1 and dS = 0 whatever the cap; most cases move.
    assert!(
        moved >= 8,
        "the softcap changed the gradients in only {moved} of 12 cases"
    );
}

/// A non-finite or non-positive softcap is refused.
#[test]
fn softcap_must_be_finite_and_positive() {
    let mut rng = Rng::new(7);
    let dims = random_dims(&mut rng, 0);
    for c in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let mut p = problem(&mut rng, &dims, 1.0);
        p.softcap = Some(c);
        assert!(forward(&p, 64).is_err(), "softcap {c} accepted");
    }
}

#[test]
fn backward_agrees_with_the_oracle_at_53_bits() {
    let mut rng = Rng::new(0x5eed_0002);
    for case in 0..9 {
        let dims = random_dims(&mut rng, case);
        let p = problem(&mut rng, &dims, 2.0);
        let d_o = rng.matrix(dims.n_q, dims.d_v, 1.0);
        let closed = backward(&p, &d_o, 53).unwrap();
        let oracle = gradients_by_dual_numbers(&p, &d_o, 53).unwrap();
        for (name, ij, x, y) in pairs(&closed, &oracle) {
            assert!(x.overlaps(&y), "case {case} {name}{ij:?}");
        }
    }
}

/// Plain `f64` attention written independently of the crate, for a sanity
/// check that the enclosures enclose attention and not something else.
fn naive_forward(p: &Problem) -> (DMatrix<f64>, Vec<f64>) {
    let (n_q, n_k) = (p.q.nrows(), p.k.nrows());
    let mut o = DMatrix::zeros(n_q, p.v.ncols());
    let mut lse = vec![f64::NEG_INFINITY; n_q];
    for i in 0..n_q {
        let allowed: Vec<usize> = (0..n_k)
            .filter(|&j| p.mask.allows(i, j, n_q, n_k))
            .collect();
        let s: Vec<f64> = allowed
            .iter()
            .map(|&j| p.tau * p.q.row(i).dot(&p.k.row(j)))
            .collect();
        let Some(m) = s.iter().copied().reduce(f64::max) else {
            continue;
        };
        let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
        let z: f64 = e.iter().sum();
        lse[i] = m + z.ln();
        for (&j, w) in allowed.iter().zip(&e) {
            for c in 0..p.v.ncols() {
                o[(i, c)] += w / z * p.v[(j, c)];
            }
        }
    }
    (o, lse)
}

#[test]
fn forward_matches_plain_f64_attention_and_is_tight() {
    let mut rng = Rng::new(0x5eed_0003);
    for case in 0..30 {
        let dims = random_dims(&mut rng, case);
        let p = problem(&mut rng, &dims, 1.5);
        let f = forward(&p, DEFAULT_PREC).unwrap();
        let (o, lse) = naive_forward(&p);
        assert_tight("o", &f.o, 1e-25, 1e-300);
        for (x, y) in f.o.iter().zip(o.iter()) {
            assert!(
                (x.mid_f64() - y).abs() <= 1e-12,
                "case {case}: {x:?} vs {y}"
            );
        }
        for (x, y) in f.lse.iter().zip(&lse) {
            match x {
                Some(x) => {
                    assert!((x.mid_f64() - y).abs() <= 1e-12 * (1.0 + y.abs()));
                    assert!(x.width_f64() <= 1e-25 * (1.0 + y.abs()));
                }
                None => assert_eq!(*y, f64::NEG_INFINITY),
            }
        }
    }
}

/// Enclosure of the sum of each row of `P`.
fn row_sums(pm: &DMatrix<Interval>) -> Vec<Interval> {
    (0..pm.nrows())
        .map(|i| {
            let row: Vec<Interval> = pm.row(i).iter().cloned().collect();
            Interval::sum(&row, DEFAULT_PREC)
        })
        .collect()
}

#[test]
fn rows_of_p_sum_to_one() {
    let mut rng = Rng::new(0x5eed_0004);
    for case in 0..30 {
        let dims = random_dims(&mut rng, case);
        let p = problem(&mut rng, &dims, 3.0);
        let pm = probabilities(&p, DEFAULT_PREC).unwrap();
        for (i, s) in row_sums(&pm).iter().enumerate() {
            let masked = (0..dims.n_k).all(|j| !p.mask.allows(i, j, dims.n_q, dims.n_k));
            let expected = if masked { 0.0 } else { 1.0 };
            assert!(s.contains_f64(expected), "case {case} row {i}: {s:?}");
            assert!(s.width_f64() < 1e-30);
        }
    }
}

/// A problem whose scores reach about `+-size`: `d = 2`, `tau = 1`, query and
/// key entries of size `sqrt(size / 2)`.
fn large_score_problem(rng: &mut Rng, size: f64, mask: Mask) -> Problem {
    let r = (size / 2.0).sqrt();
    let mut p = problem(
        rng,
        &Dims {
            n_q: 5,
            n_k: 6,
            d: 2,
            d_v: 3,
            tau: 1.0,
            mask,
        },
        1.0,
    );
    p.q = p.q.map(|x| r * x.signum() * (0.9 + 0.1 * x.abs()));
    p.k = p.k.map(|x| r * x.signum() * (0.9 + 0.1 * x.abs()));
    p
}

#[test]
fn scores_near_700_and_beyond_stay_finite_and_tight() {
    let mut rng = Rng::new(0x5eed_0005);
    for (size, mask) in [
        (700.0, Mask::None),
        (750.0, Mask::CausalBottomRight),
        (5000.0, Mask::CausalTopLeft),
    ] {
        let p = large_score_problem(&mut rng, size, mask);
        let max_s = (0..p.n_q())
            .flat_map(|i| (0..p.n_k()).map(move |j| (i, j)))
            .map(|(i, j)| p.q.row(i).dot(&p.k.row(j)).abs())
            .fold(0.0, f64::max);
        assert!(max_s > 0.8 * size, "test problem reaches |S| = {max_s}");
        let f = forward(&p, DEFAULT_PREC).unwrap();
        assert_tight("o", &f.o, 1e-25, 1e-300);
        for l in f.lse.iter().flatten() {
            assert!(l.is_bounded() && l.width_f64() <= 1e-25 * l.mag());
        }
        for s in row_sums(&probabilities(&p, DEFAULT_PREC).unwrap()) {
            assert!(s.contains_f64(1.0));
        }
        let d_o = rng.matrix(p.n_q(), p.d_v(), 1.0);
        let closed = backward(&p, &d_o, DEFAULT_PREC).unwrap();
        let oracle = gradients_by_dual_numbers(&p, &d_o, DEFAULT_PREC).unwrap();
        for (name, ij, x, y) in pairs(&closed, &oracle) {
            assert!(x.is_bounded() && y.is_bounded(), "{name}{ij:?} finite");
            assert!(x.overlaps(&y), "{name}{ij:?}: {x:?} vs {y:?}");
        }
        // P is nearly one-hot here, so some gradient entries are tiny in
        // absolute terms; widths are judged against 1 (the size of dO and V).
        for m in [&closed.dq, &closed.dk, &closed.dv] {
            assert!(m.iter().all(|x| x.width_f64() <= 1e-25 * scale_of(m, 1.0)));
        }
    }
}

#[test]
fn fully_masked_rows_are_zero_rows() {
    let mut rng = Rng::new(0x5eed_0006);
    let dims = Dims {
        n_q: 6,
        n_k: 2,
        d: 3,
        d_v: 2,
        tau: 0.5,
        mask: Mask::CausalBottomRight,
    };
    let p = problem(&mut rng, &dims, 1.0);
    let masked = 0..dims.n_q - dims.n_k; // rows 0..4 see no key
    let f = forward(&p, DEFAULT_PREC).unwrap();
    for i in masked.clone() {
        assert!(f.lse[i].is_none());
        assert!(f
            .o
            .row(i)
            .iter()
            .all(|x| *x == Interval::zero(DEFAULT_PREC)));
    }
    assert!(f.lse[dims.n_q - 1].is_some());

    let d_o = rng.matrix(dims.n_q, dims.d_v, 1.0);
    let mut d_o_changed = d_o.clone();
    for i in masked.clone() {
        d_o_changed.row_mut(i).fill(7.25);
    }
    for grads in [backward, gradients_by_dual_numbers] {
        let g = grads(&p, &d_o, DEFAULT_PREC).unwrap();
        let h = grads(&p, &d_o_changed, DEFAULT_PREC).unwrap();
        for i in masked.clone() {
            assert!(g
                .dq
                .row(i)
                .iter()
                .all(|x| *x == Interval::zero(DEFAULT_PREC)));
        }
        assert_eq!(g.dk, h.dk, "masked rows of dO must not reach dK");
        assert_eq!(g.dv, h.dv, "masked rows of dO must not reach dV");
    }
}

#[test]
fn no_keys_at_all_gives_an_all_zero_result() {
    let p = Problem {
        q: DMatrix::from_element(3, 2, 1.0),
        k: DMatrix::zeros(0, 2),
        v: DMatrix::zeros(0, 4),
        tau: 1.0,
        mask: Mask::None,
        softcap: None,
    };
    let f = forward(&p, 64).unwrap();
    assert_eq!(f.o.shape(), (3, 4));
    assert!(f.o.iter().all(|x| *x == Interval::zero(64)));
    assert!(f.lse.iter().all(Option::is_none));
    let g = backward(&p, &DMatrix::from_element(3, 4, 1.0), 64).unwrap();
    assert_eq!(g.dk.shape(), (0, 2));
    assert!(g.dq.iter().all(|x| *x == Interval::zero(64)));
}

/// Interval matrix product for the deliberately wrong formulas below.
fn matmul(a: &DMatrix<Interval>, b: &DMatrix<Interval>) -> DMatrix<Interval> {
    DMatrix::from_fn(a.nrows(), b.ncols(), |i, j| {
        let terms: Vec<Interval> = (0..a.ncols()).map(|l| &a[(i, l)] * &b[(l, j)]).collect();
        Interval::sum(&terms, DEFAULT_PREC)
    })
}

fn to_iv(m: &DMatrix<f64>) -> DMatrix<Interval> {
    m.map(|x| Interval::from_f64(x, DEFAULT_PREC))
}

fn some_entry_disjoint(a: &DMatrix<Interval>, b: &DMatrix<Interval>) -> bool {
    a.iter().zip(b.iter()).any(|(x, y)| !x.overlaps(y))
}

#[test]
fn oracle_rejects_wrong_formulas() {
    let mut rng = Rng::new(0x5eed_0007);
    // (1) dV = P dO instead of P^T dO (ML24 Lemma G.3's erratum), causal,
    // n_q = n_k so that P dO is defined, d != d_v.
    let dims = Dims {
        n_q: 5,
        n_k: 5,
        d: 3,
        d_v: 2,
        tau: 0.6,
        mask: Mask::CausalTopLeft,
    };
    let p = problem(&mut rng, &dims, 1.0);
    let d_o = rng.matrix(5, 2, 1.0);
    let oracle = gradients_by_dual_numbers(&p, &d_o, DEFAULT_PREC).unwrap();
    let pm = probabilities(&p, DEFAULT_PREC).unwrap();
    let wrong_dv = matmul(&pm, &to_iv(&d_o));
    assert!(some_entry_disjoint(&wrong_dv, &oracle.dv));
    let right_dv = matmul(&pm.transpose(), &to_iv(&d_o));
    assert!(!some_entry_disjoint(&right_dv, &oracle.dv));

    // (2) Non-square causal problem: dS = P o dP (the delta term forgotten).
    let dims = Dims {
        n_q: 3,
        n_k: 6,
        d: 2,
        d_v: 3,
        tau: 0.7,
        mask: Mask::CausalBottomRight,
    };
    let p = problem(&mut rng, &dims, 1.0);
    let d_o = rng.matrix(3, 3, 1.0);
    let oracle = gradients_by_dual_numbers(&p, &d_o, DEFAULT_PREC).unwrap();
    let pm = probabilities(&p, DEFAULT_PREC).unwrap();
    let dp = matmul(&to_iv(&d_o), &to_iv(&p.v).transpose());
    let ds_wrong = pm.zip_map(&dp, |a, b| &a * &b);
    let tau = Interval::from_f64(p.tau, DEFAULT_PREC);
    let wrong_dq = matmul(&ds_wrong, &to_iv(&p.k)).map(|x| &tau * &x);
    assert!(some_entry_disjoint(&wrong_dq, &oracle.dq));

    // (3) The other mask convention in the backward.
    let top_left = Problem {
        mask: Mask::CausalTopLeft,
        ..p.clone()
    };
    let confused = backward(&top_left, &d_o, DEFAULT_PREC).unwrap();
    assert!(some_entry_disjoint(&confused.dk, &oracle.dk));
}

#[test]
fn mask_conventions() {
    for n in 1..6 {
        for i in 0..n {
            for j in 0..n {
                assert_eq!(
                    Mask::CausalTopLeft.allows(i, j, n, n),
                    Mask::CausalBottomRight.allows(i, j, n, n)
                );
            }
        }
    }
    // n_q = 2, n_k = 4: bottom-right lets query 0 see keys 0..=2.
    assert!(Mask::CausalBottomRight.allows(0, 2, 2, 4));
    assert!(!Mask::CausalBottomRight.allows(0, 3, 2, 4));
    assert!(!Mask::CausalTopLeft.allows(0, 1, 2, 4));
    // n_q = 4, n_k = 2: queries 0 and 1 see nothing.
    assert!(!Mask::CausalBottomRight.allows(1, 0, 4, 2));
    assert!(Mask::CausalBottomRight.allows(2, 0, 4, 2));
    // No overflow at the extremes.
    assert!(Mask::CausalBottomRight.allows(usize::MAX, usize::MAX, usize::MAX, usize::MAX));
    assert!(!Mask::CausalBottomRight.allows(0, usize::MAX, usize::MAX, 1));
    assert!(Mask::None.allows(0, usize::MAX, 1, 1));
}

#[test]
fn bad_inputs_are_errors_not_panics() {
    let mut rng = Rng::new(0x5eed_0008);
    let good = problem(
        &mut rng,
        &Dims {
            n_q: 2,
            n_k: 3,
            d: 2,
            d_v: 2,
            tau: 1.0,
            mask: Mask::None,
        },
        1.0,
    );
    let d_o = DMatrix::from_element(2, 2, 1.0);
    let is_shape = |r: Result<Grads, SpecError>| matches!(r, Err(SpecError::ShapeMismatch { .. }));
    let is_nonfinite = |r: Result<Grads, SpecError>| matches!(r, Err(SpecError::NonFinite { .. }));

    let bad_k = Problem {
        k: DMatrix::zeros(3, 1),
        ..good.clone()
    };
    assert!(is_shape(backward(&bad_k, &d_o, 64)));
    let bad_v = Problem {
        v: DMatrix::zeros(2, 2),
        ..good.clone()
    };
    assert!(is_shape(gradients_by_dual_numbers(&bad_v, &d_o, 64)));
    assert!(is_shape(backward(&good, &DMatrix::zeros(2, 3), 64)));
    assert!(matches!(
        forward(&bad_v, 64),
        Err(SpecError::ShapeMismatch { .. })
    ));

    let mut nan_q = good.clone();
    nan_q.q[(1, 0)] = f64::NAN;
    assert!(is_nonfinite(backward(&nan_q, &d_o, 64)));
    let inf_tau = Problem {
        tau: f64::INFINITY,
        ..good.clone()
    };
    assert!(matches!(
        forward(&inf_tau, 64),
        Err(SpecError::NonFinite { .. })
    ));
    let mut inf_do = d_o.clone();
    inf_do[(0, 1)] = f64::NEG_INFINITY;
    assert!(is_nonfinite(gradients_by_dual_numbers(&good, &inf_do, 64)));

    let e = forward(&good, 0).unwrap_err();
    assert_eq!(e, SpecError::InvalidPrecision { prec: 0 });
    assert!(e.to_string().contains("precision 0"));
    let e = backward(&nan_q, &d_o, 64).unwrap_err();
    assert!(e.to_string().contains("q[(1, 0)] = NaN"), "{e}");
}

/// Entry `rc` of `Q` (0), `K` (1) or `V` (2).
fn entry(p: &mut Problem, which: usize, rc: (usize, usize)) -> &mut f64 {
    match which {
        0 => &mut p.q[rc],
        1 => &mut p.k[rc],
        _ => &mut p.v[rc],
    }
}

#[test]
fn gradients_match_central_differences_in_f64() {
    // A loose, fully independent check of the scale of the gradients.
    let mut rng = Rng::new(0x5eed_0009);
    let dims = Dims {
        n_q: 4,
        n_k: 3,
        d: 2,
        d_v: 3,
        tau: 0.8,
        mask: Mask::CausalBottomRight,
    };
    let p = problem(&mut rng, &dims, 1.0);
    let d_o = rng.matrix(4, 3, 1.0);
    let loss = |p: &Problem| naive_forward(p).0.component_mul(&d_o).sum();
    let g = backward(&p, &d_o, DEFAULT_PREC).unwrap();
    let h = 1e-6;
    let fd = |which: usize, r: usize, c: usize| {
        let mut plus = p.clone();
        let mut minus = p.clone();
        *entry(&mut plus, which, (r, c)) += h;
        *entry(&mut minus, which, (r, c)) -= h;
        (loss(&plus) - loss(&minus)) / (2.0 * h)
    };
    for (which, m) in [&g.dq, &g.dk, &g.dv].into_iter().enumerate() {
        for r in 0..m.nrows() {
            for c in 0..m.ncols() {
                let diff = (m[(r, c)].mid_f64() - fd(which, r, c)).abs();
                assert!(diff < 1e-7, "matrix {which} ({r}, {c}): off by {diff}");
            }
        }
    }
}
