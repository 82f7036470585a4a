//! docs/math.md §5.1, questions 2 and 3: the polynomial engine's f64 and f32 results
//! against the MPFR enclosure of *exact* (exp) attention. The measured error (certified,
//! from the enclosure) must not exceed the bound the engine reports, entry by entry, for
//! O, dQ, dK, dV, both gradient kinds, all masks, R from 0.1 to 4, d from 1 to 8, n
//! up to 256. The tests print how tight the bound is (measured / bound).

mod common;

use common::{enclosures, Case};
use polyattn::attention::poly::{self, Accuracy, Bounds, GradientKind, PolyConfig, PolyKind};
use polyattn::attention::Mask;
use polyattn::rng::SplitMix64;
use polyattn::tensor::Matrix;
use polyattn::Real;
use polyattn_spec::Interval;

/// A case whose rigorous radius R = tau max||q|| max||k|| is `radius`.
fn case_with_radius<T: Real>(
    seed: u64,
    dims: (usize, usize, usize, usize),
    mask: Mask,
    radius: f64,
) -> Case {
    let (n_q, n_k, d, d_v) = dims;
    let mut r = SplitMix64::new(seed);
    let round = |x: Vec<f64>| {
        x.into_iter()
            .map(|z| T::from_f64(z).to_f64())
            .collect::<Vec<_>>()
    };
    let mut q = r.normal_vec(n_q * d, 1.0);
    let k = round(r.normal_vec(n_k * d, 1.0));
    let v = round(r.normal_vec(n_k * d_v, 1.0));
    let d_o = round(r.normal_vec(n_q * d_v, 1.0));
    let norm = |m: &[f64], i: usize| {
        m[i * d..(i + 1) * d]
            .iter()
            .map(|x| x * x)
            .sum::<f64>()
            .sqrt()
    };
    let qn = (0..n_q).map(|i| norm(&q, i)).fold(0.0, f64::max);
    let kn = (0..n_k).map(|j| norm(&k, j)).fold(0.0, f64::max);
    let tau = common::tau_of::<T>(None, d);
    // Aim slightly below the target so rounding never pushes R past it.
    let s = radius * (1.0 - 1e-6) / (tau * qn * kn);
    q.iter_mut().for_each(|x| *x *= s);
    Case {
        n_q,
        n_k,
        d,
        d_v,
        q: round(q),
        k,
        v,
        d_o,
        scale: None,
        mask,
        bias: None,
        softcap: None,
    }
}

fn matrices<T: Real>(c: &Case) -> [Matrix<T>; 4] {
    let m = |rows, cols, x: &[f64]| {
        Matrix::from_vec(rows, cols, x.iter().map(|&z| T::from_f64(z)).collect()).unwrap()
    };
    [
        m(c.n_q, c.d, &c.q),
        m(c.n_k, c.d, &c.k),
        m(c.n_k, c.d_v, &c.v),
        m(c.n_q, c.d_v, &c.d_o),
    ]
}

/// Certified |y - exact| from the enclosure, rounded up.
fn measured(iv: &Interval, y: f64) -> f64 {
    let e = (y - iv.lo_f64()).abs().max((iv.hi_f64() - y).abs());
    if e == 0.0 {
        0.0
    } else {
        e.next_up()
    }
}

/// Asserts measured <= bound entrywise; returns max measured / max bound.
fn check_tensor(name: &str, ys: &[f64], ivs: &[Interval], b: &Bounds, ctx: &str) -> (f64, f64) {
    let mut worst = (0.0f64, 0.0f64);
    for (i, ((y, iv), bt)) in ys.iter().zip(ivs).zip(&b.total).enumerate() {
        let m = measured(iv, *y);
        assert!(
            m <= *bt,
            "{name}[{i}]: measured error {m:e} exceeds the certified bound {bt:e} ({ctx})"
        );
        worst.0 = worst.0.max(m);
    }
    worst.1 = b.max_total();
    worst
}

fn run<T: Real>(c: &Case, cfg: &PolyConfig) -> Vec<(String, f64, f64)> {
    let [q, k, v, d_o] = matrices::<T>(c);
    let enc = enclosures::<T>(c);
    let bias = c.bias.as_ref().map(|b| {
        Matrix::from_vec(c.n_q, c.n_k, b.iter().map(|&x| T::from_f64(x)).collect()).unwrap()
    });
    let f = poly::forward_with_bias(
        q.view(),
        k.view(),
        v.view(),
        bias.as_ref().map(|b| b.view()),
        cfg,
    )
    .unwrap();
    let reg = &f.plan.regime;
    let ctx = format!(
        "{} {:?} n_q={} n_k={} d={} R={:.2} g={}",
        T::DTYPE,
        c.mask,
        c.n_q,
        c.n_k,
        c.d,
        reg.radius,
        reg.degree
    );
    let y64 = |m: &Matrix<T>| m.as_slice().iter().map(|x| x.to_f64()).collect::<Vec<_>>();
    let mut rows = vec![];
    let (m, b) = check_tensor("O", &y64(&f.o), &enc.o, &f.bound, &ctx);
    rows.push((format!("O {ctx}"), m, b));
    for kind in [GradientKind::Substituted, GradientKind::PolynomialModel] {
        let g = poly::backward(q.view(), k.view(), v.view(), &f, d_o.view(), kind, cfg).unwrap();
        for (name, y, iv, bd) in [
            ("dQ", &g.dq, &enc.dq, &g.bound_dq),
            ("dK", &g.dk, &enc.dk, &g.bound_dk),
            ("dV", &g.dv, &enc.dv, &g.bound_dv),
        ] {
            let (m, b) = check_tensor(name, &y64(y), iv, bd, &format!("{ctx} {kind:?}"));
            rows.push((format!("{name} {} {ctx}", kind.name()), m, b));
        }
    }
    rows
}

/// Every mask kind: none, both causal alignments, and sliding windows in both
/// alignments (the range form: two segment scans per row).
fn masks() -> [Mask; 5] {
    use polyattn::attention::Alignment;
    [
        Mask::None,
        Mask::CausalTopLeft,
        Mask::CausalBottomRight,
        Mask::None.with_window(Some(7), Some(2), Alignment::BottomRight),
        Mask::None.with_window(Some(5), Some(0), Alignment::TopLeft),
    ]
}

#[test]
fn measured_error_within_certified_bound_fixed_degrees() {
    let mut seed = 0;
    let mut tight = Vec::new();
    for &(dims, radius, degree) in &[
        ((16, 16, 1, 1), 0.1, 2usize),
        ((40, 33, 2, 3), 0.5, 3),
        ((65, 70, 4, 4), 1.0, 4),
        ((100, 64, 8, 5), 2.0, 4),
        ((256, 256, 4, 4), 4.0, 8),
        ((30, 50, 3, 2), 4.0, 12),
    ] {
        for mask in masks() {
            seed += 1;
            let c = case_with_radius::<f64>(seed, dims, mask, radius);
            let cfg = PolyConfig {
                mask,
                accuracy: Accuracy::Degree(degree),
                chunk: 16,
                max_cost_ratio: f64::INFINITY,
                ..PolyConfig::default()
            };
            tight.extend(run::<f64>(&c, &cfg));
        }
    }
    let ratio = |(_, m, b): &(String, f64, f64)| if *b > 0.0 { m / b } else { 0.0 };
    let best = tight.iter().map(ratio).fold(0.0, f64::max);
    let median = {
        let mut r: Vec<f64> = tight.iter().map(ratio).collect();
        r.sort_by(f64::total_cmp);
        r[r.len() / 2]
    };
    println!(
        "measured / bound over {} tensors: median {median:.3}, max {best:.3}",
        tight.len()
    );
}

#[test]
fn f32_inputs_within_certified_bound() {
    for (i, mask) in masks().into_iter().enumerate() {
        let c = case_with_radius::<f32>(50 + i as u64, (48, 37, 4, 3), mask, 1.5);
        let cfg = PolyConfig {
            mask,
            accuracy: Accuracy::Eps(1e-4),
            max_cost_ratio: f64::INFINITY,
            ..PolyConfig::default()
        };
        run::<f32>(&c, &cfg);
    }
}

/// Key padding (a bias whose columns are all 0 or all -inf, PyTorch's key_padding_mask)
/// under every mask: within the certified bound of the MPFR enclosure of exact
/// attention with that bias; the padded keys' dK, dV exactly 0 with bound 0; any other
/// bias refused with a typed error naming it.
#[test]
fn key_padding_within_certified_bound() {
    let (n_q, n_k) = (40usize, 45usize);
    // Keys 0, 7, 8, 30..33 and the last padded: holes, a run, both ends.
    let padded = |j: usize| j == 0 || j == 7 || j == 8 || (30..34).contains(&j) || j == n_k - 1;
    let bias: Vec<f64> = (0..n_q * n_k)
        .map(|e| {
            if padded(e % n_k) {
                f64::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    for (i, mask) in masks().into_iter().enumerate() {
        let c = case_with_radius::<f64>(120 + i as u64, (n_q, n_k, 4, 3), mask, 1.5)
            .with_bias::<f64>(bias.clone());
        for accuracy in [Accuracy::Degree(5), Accuracy::Eps(1e-6)] {
            let cfg = PolyConfig {
                mask,
                accuracy,
                max_cost_ratio: f64::INFINITY,
                ..PolyConfig::default()
            };
            run::<f64>(&c, &cfg);
            let [q, k, v, d_o] = matrices::<f64>(&c);
            let b = Matrix::from_vec(n_q, n_k, bias.clone()).unwrap();
            let f = poly::forward_with_bias(q.view(), k.view(), v.view(), Some(b.view()), &cfg)
                .unwrap();
            let g = poly::backward(
                q.view(),
                k.view(),
                v.view(),
                &f,
                d_o.view(),
                GradientKind::Substituted,
                &cfg,
            )
            .unwrap();
            if mask == Mask::CausalTopLeft {
                // Row 0 sees key 0 only, which is padded: a row that sees no key.
                assert_eq!(f.lse[0], f64::NEG_INFINITY);
                assert!(f.o.row(0).iter().all(|&x| x == 0.0));
                assert!(g.dq.row(0).iter().all(|&x| x == 0.0));
            }
            for j in (0..n_k).filter(|&j| padded(j)) {
                assert!(g.dk.row(j).iter().chain(g.dv.row(j)).all(|&x| x == 0.0));
                assert!(g.bound_dk.total[j * 4..(j + 1) * 4]
                    .iter()
                    .all(|&x| x == 0.0));
            }
        }
    }
    // A backward given other keys than its forward saw: a typed error, not a panic.
    {
        let c = case_with_radius::<f64>(131, (n_q, n_k, 4, 3), Mask::None, 1.0)
            .with_bias::<f64>(bias.clone());
        let [q, k, v, d_o] = matrices::<f64>(&c);
        let b = Matrix::from_vec(n_q, n_k, bias.clone()).unwrap();
        let cfg = PolyConfig::default();
        let f =
            poly::forward_with_bias(q.view(), k.view(), v.view(), Some(b.view()), &cfg).unwrap();
        let k2 = Matrix::from_vec(n_k + 8, 4, vec![0.1; (n_k + 8) * 4]).unwrap();
        let v2 = Matrix::from_vec(n_k + 8, 3, vec![0.1; (n_k + 8) * 3]).unwrap();
        let e = poly::backward(
            q.view(),
            k2.view(),
            v2.view(),
            &f,
            d_o.view(),
            GradientKind::Substituted,
            &cfg,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("forward's results"), "{e}");
    }
    // Not key padding: one finite nonzero entry, or a column mixing 0 and -inf.
    let c = case_with_radius::<f64>(130, (n_q, n_k, 4, 3), Mask::None, 1.0);
    let [q, k, v, _] = matrices::<f64>(&c);
    for (at, x) in [(5usize, 0.5), (n_k + 3, f64::NEG_INFINITY)] {
        let mut b = vec![0.0; n_q * n_k];
        b[at] = x;
        let b = Matrix::from_vec(n_q, n_k, b).unwrap();
        let cfg = PolyConfig::default();
        let e = poly::forward_with_bias(q.view(), k.view(), v.view(), Some(b.view()), &cfg)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bias"), "{e}");
    }
}

/// Taylor polynomials too (the bound does not assume Chebyshev).
#[test]
fn taylor_polynomials_within_certified_bound() {
    let c = case_with_radius::<f64>(77, (50, 50, 3, 3), Mask::CausalTopLeft, 1.0);
    let cfg = PolyConfig {
        mask: Mask::CausalTopLeft,
        accuracy: Accuracy::Degree(6),
        kind: PolyKind::Taylor,
        max_cost_ratio: f64::INFINITY,
        ..PolyConfig::default()
    };
    run::<f64>(&c, &cfg);
}

/// The bound is not vacuous: asking for eps = 1e-6 gives a reported bound <= 1e-6 on O
/// and a measured error below it.
#[test]
fn eps_target_is_met_and_measured_error_is_below_it() {
    for (i, mask) in masks().into_iter().enumerate() {
        let c = case_with_radius::<f64>(90 + i as u64, (128, 128, 4, 4), mask, 2.0);
        let cfg = PolyConfig {
            mask,
            accuracy: Accuracy::Eps(1e-6),
            max_cost_ratio: f64::INFINITY,
            ..PolyConfig::default()
        };
        let [q, k, v, _] = matrices::<f64>(&c);
        let f = poly::forward(q.view(), k.view(), v.view(), &cfg).unwrap();
        assert!(
            f.bound.max_total() <= 1e-6,
            "bound {:e}",
            f.bound.max_total()
        );
        let enc = enclosures::<f64>(&c);
        let worst =
            f.o.as_slice()
                .iter()
                .zip(&enc.o)
                .map(|(y, iv)| measured(iv, *y))
                .fold(0.0, f64::max);
        assert!(worst < 1e-6, "{mask:?}: measured {worst:e}");
        println!(
            "{mask:?}: degree {} rank {}: measured {worst:.2e}, bound {:.2e}",
            f.plan.regime.degree,
            f.plan.regime.rank,
            f.bound.max_total()
        );
    }
}

/// Outside the bounded-entry regime the engine refuses with a typed error that says
/// why, instead of returning a confident wrong answer.
#[test]
fn large_scores_are_refused() {
    let c = case_with_radius::<f64>(5, (64, 64, 32, 32), Mask::None, 40.0);
    let [q, k, v, _] = matrices::<f64>(&c);
    let cfg = PolyConfig {
        accuracy: Accuracy::Eps(1e-3),
        ..PolyConfig::default()
    };
    let e = poly::forward(q.view(), k.view(), v.view(), &cfg).unwrap_err();
    assert!(matches!(e, polyattn::Error::PolyRefused { .. }), "{e}");
    println!("{e}");
}

/// A fixed degree that certifies nothing at the input's radius is refused; the explicit
/// opt-out `DegreeUncertified` runs it and reports every bound as +inf (never a finite
/// number it cannot stand behind), forward and backward.
#[test]
fn uncertified_degree_runs_only_when_asked_and_reports_infinite_bounds() {
    let c = case_with_radius::<f64>(6, (48, 48, 8, 4), Mask::CausalTopLeft, 12.0);
    let [q, k, v, d_o] = matrices::<f64>(&c);
    let cfg = |accuracy| PolyConfig {
        accuracy,
        kind: PolyKind::Taylor,
        mask: Mask::CausalTopLeft,
        ..PolyConfig::default()
    };
    let e = poly::forward(q.view(), k.view(), v.view(), &cfg(Accuracy::Degree(2))).unwrap_err();
    assert!(matches!(e, polyattn::Error::PolyRefused { .. }), "{e}");
    let ucfg = cfg(Accuracy::DegreeUncertified(2));
    let f = poly::forward(q.view(), k.view(), v.view(), &ucfg).unwrap();
    assert!(f.plan.regime.eps_poly >= 1.0);
    assert!(f.bound.total.iter().all(|b| *b == f64::INFINITY));
    assert!(f.o.as_slice().iter().all(|x| x.is_finite()));
    let g = poly::backward(
        q.view(),
        k.view(),
        v.view(),
        &f,
        d_o.view(),
        GradientKind::Substituted,
        &ucfg,
    )
    .unwrap();
    for b in [&g.bound_dq, &g.bound_dk, &g.bound_dv] {
        assert!(b.total.iter().all(|x| *x == f64::INFINITY));
    }
}

/// With a causal mask the first rows (those that see at most min(exact_prefix, n_k/16)
/// keys) come from the exact engine: their bound has no polynomial part, and every other
/// row of O and dQ is bit-for-bit what the engine computes without the exact block (the
/// block only replaces rows; the other rows' passes do not depend on them). The
/// enclosure tests above cover the block's correctness against MPFR for every mask
/// (their n_k >= 32 cases have a non-empty block).
#[test]
fn exact_prefix_rows_replace_only_themselves() {
    let c = case_with_radius::<f64>(77, (512, 512, 4, 4), Mask::CausalTopLeft, 1.0);
    let [q, k, v, d_o] = matrices::<f64>(&c);
    let cfg = |prefix| PolyConfig {
        mask: Mask::CausalTopLeft,
        accuracy: Accuracy::Degree(3),
        exact_prefix: prefix,
        ..PolyConfig::default()
    };
    let (with, without) = (cfg(512), cfg(0));
    let f = poly::forward(q.view(), k.view(), v.view(), &with).unwrap();
    let f0 = poly::forward(q.view(), k.view(), v.view(), &without).unwrap();
    assert_eq!(f.exact_block, (32, 32));
    assert_eq!(f0.exact_block, (0, 0));
    let rows = 32 * c.d_v;
    assert!(f.bound.poly[..rows].iter().all(|b| *b == 0.0));
    assert!(f0.bound.poly[..rows].iter().all(|b| *b > 0.0));
    assert_eq!(f.o.as_slice()[rows..], f0.o.as_slice()[rows..]);
    assert_eq!(f.bound.total[rows..], f0.bound.total[rows..]);
    // The exact rows' bound is the exact engine's rounding: far below the polynomial's.
    let top = |b: &[f64]| b.iter().cloned().fold(0.0, f64::max);
    assert!(top(&f.bound.total[..rows]) < 1e-3 * top(&f0.bound.total[..rows]));
    for kind in [GradientKind::Substituted, GradientKind::PolynomialModel] {
        let g = poly::backward(q.view(), k.view(), v.view(), &f, d_o.view(), kind, &with).unwrap();
        let g0 = poly::backward(
            q.view(),
            k.view(),
            v.view(),
            &f0,
            d_o.view(),
            kind,
            &without,
        )
        .unwrap();
        let qrows = 32 * c.d;
        assert_eq!(g.dq.as_slice()[qrows..], g0.dq.as_slice()[qrows..]);
        assert!(g.bound_dq.poly[..qrows].iter().all(|b| *b == 0.0));
    }
}
