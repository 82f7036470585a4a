//! The CUDA f16 path (feature `cuda`): device detection, the host pipeline on the
//! kernels' CPU emulation against the f64 engines (FlashAttention's acceptance rule,
//! MPFR enclosures widened by the f16 allowance, the polynomial engine's certified
//! bound), and, where a device exists, the same checks on the device.
//!
//! Device tests call [`device`], which returns the device or prints
//! `skipped: no CUDA device (<reason>)`; CI has no GPU and passes.
#![cfg(feature = "cuda")]

mod common;

use polyattn::attention::exact::reference::exact_reference;
use polyattn::attention::poly::{self, Accuracy, GradientKind, PolyConfig};
use polyattn::attention::{exact, AttentionConfig, Mask};
use polyattn::cuda::allowance::{poly_bounds, U16};
use polyattn::cuda::emulate::{plain_backward, Emulator};
use polyattn::cuda::{self, Backend, CudaDevice};
use polyattn::rng::SplitMix64;
use polyattn::tensor::{MatRef, Matrix};
use polyattn::Error;
use polyattn_tools::fuzzing::cuda_allowance::exact_allowance;
use polyattn_tools::fuzzing::enclosure::{self as enc, Case, Computed};

/// The device, or `None` after printing why the caller is skipped.
fn device(test: &str) -> Option<CudaDevice> {
    match CudaDevice::new(0) {
        Ok(d) => {
            println!("{test}: running on {}", d.describe());
            Some(d)
        }
        Err(e) => {
            println!("{test}: skipped: no CUDA device ({e})");
            None
        }
    }
}

/// f16-representable f32 values: N(0, 1) times `scale`, rounded to f16.
fn f16_vals(r: &mut SplitMix64, len: usize, scale: f64) -> Vec<f32> {
    r.normal_vec(len, scale)
        .into_iter()
        .map(|x| half::f16::from_f64(x).to_f32())
        .collect()
}

fn mat(rows: usize, cols: usize, x: &[f32]) -> Matrix<f32> {
    Matrix::from_vec(rows, cols, x.to_vec()).unwrap()
}

fn m64(m: MatRef<'_, f32>) -> Matrix<f64> {
    Matrix::from_vec(
        m.rows(),
        m.cols(),
        m.as_slice().iter().map(|x| *x as f64).collect(),
    )
    .unwrap()
}

fn max_err(a: &[f32], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - y).abs())
        .fold(0.0, f64::max)
}

fn max_err64(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

/// One problem: f16-representable inputs, tau = the kernels' f32 tau.
struct Prob {
    dims: (usize, usize, usize, usize),
    q: Matrix<f32>,
    k: Matrix<f32>,
    v: Matrix<f32>,
    g: Matrix<f32>,
    mask: Mask,
    tau: f32,
}

fn prob(seed: u64, dims: (usize, usize, usize, usize), mask: Mask, q_scale: f64) -> Prob {
    let (n_q, n_k, d, d_v) = dims;
    let mut r = SplitMix64::new(seed);
    Prob {
        dims,
        q: mat(n_q, d, &f16_vals(&mut r, n_q * d, q_scale)),
        k: mat(n_k, d, &f16_vals(&mut r, n_k * d, 1.0)),
        v: mat(n_k, d_v, &f16_vals(&mut r, n_k * d_v, 1.0)),
        g: mat(n_q, d_v, &f16_vals(&mut r, n_q * d_v, 1.0)),
        mask,
        tau: (1.0 / (d as f64).sqrt()) as f32,
    }
}

impl Prob {
    fn cfg(&self) -> AttentionConfig {
        AttentionConfig {
            scale: Some(self.tau as f64),
            mask: self.mask,
            softcap: None,
        }
    }
}

/// A test case: seed, (n_q, n_k, d, d_v), mask, scale of q's entries (or max |S|).
type Spec = (u64, (usize, usize, usize, usize), Mask, f64);

/// FlashAttention's acceptance rule on backend `b`: for O, dQ, dK, dV, the f16
/// result's max error against the f64 engine is at most twice that of the plain f16
/// implementation ([`plain_backward`]) on the same inputs. Returns the ratios.
fn flash_rule<B: Backend>(b: &B, p: &Prob) -> [f64; 4] {
    let cfg = p.cfg();
    let f = cuda::exact::forward(b, p.q.view(), p.k.view(), p.v.view(), &cfg).unwrap();
    let g =
        cuda::exact::backward(b, p.q.view(), p.k.view(), p.v.view(), &f, p.g.view(), &cfg).unwrap();
    let (q, k, v, dd) = (
        m64(p.q.view()),
        m64(p.k.view()),
        m64(p.v.view()),
        m64(p.g.view()),
    );
    let rf = exact::forward(q.view(), k.view(), v.view(), &cfg).unwrap();
    let rg = exact::backward(q.view(), k.view(), v.view(), &rf, dd.view(), &cfg).unwrap();
    let pl = plain_backward(
        q.as_slice(),
        k.as_slice(),
        v.as_slice(),
        dd.as_slice(),
        p.dims,
        p.tau,
        p.mask,
    );
    let (pq, pk, pv) = pl.grads.unwrap();
    let pairs = [
        (
            "O",
            max_err(f.o.as_slice(), rf.o.as_slice()),
            max_err64(&pl.o, rf.o.as_slice()),
        ),
        (
            "dQ",
            max_err(g.dq.as_slice(), rg.dq.as_slice()),
            max_err64(&pq, rg.dq.as_slice()),
        ),
        (
            "dK",
            max_err(g.dk.as_slice(), rg.dk.as_slice()),
            max_err64(&pk, rg.dk.as_slice()),
        ),
        (
            "dV",
            max_err(g.dv.as_slice(), rg.dv.as_slice()),
            max_err64(&pv, rg.dv.as_slice()),
        ),
    ];
    let mut out = [0.0; 4];
    for (n, (name, ours, plain)) in pairs.into_iter().enumerate() {
        println!(
            "  {:?} {:?} {name}: f16 kernel error {ours:.3e}, plain f16 error {plain:.3e}, ratio {:.3}",
            p.mask,
            p.dims,
            ours / plain
        );
        // The rule itself (FlashAttention, Dao et al. 2022): at most 2x plain.
        assert!(ours <= 2.0 * plain, "{name}: {ours:e} > 2 x {plain:e}");
        out[n] = ours / plain;
    }
    out
}

const FLASH_CASES: [Spec; 5] = [
    (1, (256, 256, 64, 64), Mask::None, 1.0),
    (2, (256, 256, 64, 64), Mask::CausalTopLeft, 2.0),
    (3, (200, 330, 32, 48), Mask::CausalBottomRight, 1.5),
    (4, (330, 200, 128, 64), Mask::CausalBottomRight, 1.0),
    (5, (130, 130, 16, 16), Mask::None, 3.0),
];

#[test]
fn emulated_exact_kernels_meet_the_flash_attention_rule() {
    for (seed, dims, mask, s) in FLASH_CASES {
        flash_rule(&Emulator, &prob(seed, dims, mask, s));
    }
}

#[test]
fn device_exact_kernels_meet_the_flash_attention_rule() {
    let Some(dev) = device("device_exact_kernels_meet_the_flash_attention_rule") else {
        return;
    };
    for (seed, dims, mask, s) in FLASH_CASES {
        flash_rule(&dev, &prob(seed, dims, mask, s));
    }
}

/// Runs the f16 exact path of `b` on an enclosure case (inputs as f32).
fn run_f16<B: Backend>(b: &B, c: &Case) -> Computed {
    let m = |r: usize, cc: usize, x: &[f64]| {
        Matrix::from_vec(r, cc, x.iter().map(|z| *z as f32).collect()).unwrap()
    };
    let (q, k, v, g) = (
        m(c.n_q, c.d, &c.q),
        m(c.n_k, c.d, &c.k),
        m(c.n_k, c.d_v, &c.v),
        m(c.n_q, c.d_v, &c.d_o),
    );
    let cfg = AttentionConfig {
        scale: c.scale,
        mask: c.mask,
        softcap: None,
    };
    let f = cuda::exact::forward(b, q.view(), k.view(), v.view(), &cfg).unwrap();
    let gr = cuda::exact::backward(b, q.view(), k.view(), v.view(), &f, g.view(), &cfg).unwrap();
    let w = |x: &[f32]| x.iter().map(|z| *z as f64).collect::<Vec<f64>>();
    Computed {
        o: w(f.o.as_slice()),
        lse: w(&f.lse),
        dq: w(gr.dq.as_slice()),
        dk: w(gr.dk.as_slice()),
        dv: w(gr.dv.as_slice()),
    }
}

/// An enclosure case whose inputs are f16 values (`f16_inputs`) or f32 values.
fn enclosure_case(
    seed: u64,
    dims: (usize, usize, usize, usize),
    mask: Mask,
    s: f64,
    f16_inputs: bool,
) -> Case {
    let mut c = enc::case::<f32>(seed, dims, None, mask, Some(s));
    if f16_inputs {
        for x in [&mut c.q, &mut c.k, &mut c.v, &mut c.d_o] {
            x.iter_mut()
                .for_each(|z| *z = half::f16::from_f64(*z).to_f64());
        }
    }
    c
}

const ENCLOSURE_CASES: [Spec; 5] = [
    (11, (7, 9, 4, 3), Mask::None, 3.0),
    (12, (9, 9, 8, 4), Mask::CausalTopLeft, 8.0),
    (13, (10, 6, 3, 2), Mask::CausalBottomRight, 1.0),
    (14, (40, 70, 8, 8), Mask::CausalBottomRight, 12.0),
    (15, (33, 33, 16, 5), Mask::None, 0.5),
];

fn enclosure_checks<B: Backend>(b: &B) {
    for (seed, dims, mask, s) in ENCLOSURE_CASES {
        for f16_inputs in [true, false] {
            let c = enclosure_case(seed, dims, mask, s, f16_inputs);
            let got = run_f16(b, &c);
            let e = enc::enclosures::<f32>(&c).unwrap();
            let u_in = if f16_inputs { 0.0 } else { U16 };
            let a = exact_allowance(&c, u_in);
            let t = common::check_against(&c, &got, &e, &a);
            println!("  {mask:?} {dims:?} S={s} f16 inputs {f16_inputs}: tightness {t:.3}");
            // Negative control 1: f32's allowance is far too small for f16 results.
            let a32 = enc::allowance::<f32>(&c);
            assert!(
                enc::check_against(&c, &got, &e, &a32).is_err(),
                "the f32 allowance should not cover an f16 result"
            );
            // Negative control 2: moving one output by 3x its allowance is caught.
            let mut bad = Computed {
                o: got.o.clone(),
                lse: got.lse.clone(),
                dq: got.dq.clone(),
                dk: got.dk.clone(),
                dv: got.dv.clone(),
            };
            bad.dk[0] += 3.0 * a.dk[0] + (e.dk[0].hi_f64() - e.dk[0].lo_f64());
            assert!(enc::check_against(&c, &bad, &e, &a).is_err());
        }
    }
}

#[test]
fn emulated_exact_kernels_lie_in_the_certified_enclosure() {
    enclosure_checks(&Emulator);
}

#[test]
fn device_exact_kernels_lie_in_the_certified_enclosure() {
    let Some(dev) = device("device_exact_kernels_lie_in_the_certified_enclosure") else {
        return;
    };
    enclosure_checks(&dev);
}

/// The f16 polynomial path on `b` against exact attention: |y - exact| is at most
/// the f16 bound plus the f64 reference's own rounding bound, entry by entry, for O,
/// dQ, dK, dV. Returns the worst tightness; also checks that the polynomial-only (no
/// rounding) bound does NOT hold for O (negative control: the f16 allowance is
/// needed).
fn poly_check<B: Backend>(b: &B, p: &Prob, kind: GradientKind) -> f64 {
    let cfg = PolyConfig {
        scale: Some(p.tau as f64),
        mask: p.mask,
        accuracy: Accuracy::Eps(1e-5),
        ..Default::default()
    };
    let f = cuda::poly::forward(b, p.q.view(), p.k.view(), p.v.view(), &cfg).unwrap();
    let g = cuda::poly::backward(
        b,
        p.q.view(),
        p.k.view(),
        p.v.view(),
        &f,
        p.g.view(),
        kind,
        &cfg,
    )
    .unwrap();
    let bd = poly_bounds(
        p.q.view(),
        p.k.view(),
        p.v.view(),
        Some(p.g.view()),
        &cfg,
        &f,
        Some(&g),
        0.0,
    )
    .unwrap();
    let (q, k, v, dd) = (
        m64(p.q.view()),
        m64(p.k.view()),
        m64(p.v.view()),
        m64(p.g.view()),
    );
    let acfg = cfg.attention();
    let r = exact_reference(q.view(), k.view(), v.view(), Some(dd.view()), &acfg).unwrap();
    let rg = r.grads.as_ref().unwrap();
    let (bq, bk, bv) = bd.grads.as_ref().unwrap();
    let mut worst: f64 = 0.0;
    for (name, y, yr, rb, b16) in [
        ("O", f.o.as_slice(), &r.o, &r.bound_o, &bd.o.total),
        ("dQ", g.dq.as_slice(), &rg.dq, &rg.bound_dq, &bq.total),
        ("dK", g.dk.as_slice(), &rg.dk, &rg.bound_dk, &bk.total),
        ("dV", g.dv.as_slice(), &rg.dv, &rg.bound_dv, &bv.total),
    ] {
        let mut t: f64 = 0.0;
        for i in 0..y.len() {
            let err = (y[i] as f64 - yr[i]).abs();
            let allowed = b16[i] + rb[i];
            assert!(
                err <= allowed,
                "{name}[{i}]: |{} - {}| = {err:e} > certified {allowed:e} ({:?} {:?})",
                y[i],
                yr[i],
                p.mask,
                p.dims
            );
            t = t.max(err / allowed);
        }
        println!(
            "  poly {:?} {:?} {kind:?} R {:.2} degree {} {name}: max err {:.3e}, max bound {:.3e}, tightness {t:.3}",
            p.mask,
            p.dims,
            f.plan.regime.radius,
            f.plan.regime.degree,
            max_err(y, yr),
            b16.iter().cloned().fold(0.0, f64::max)
        );
        worst = worst.max(t);
    }
    // Negative control: the polynomial part alone (exact arithmetic) cannot hold.
    let poly_only_holds = (0..f.o.as_slice().len())
        .all(|i| (f.o.as_slice()[i] as f64 - r.o[i]).abs() <= bd.o.poly[i] + r.bound_o[i]);
    assert!(
        !poly_only_holds,
        "f16 rounding should exceed the polynomial-only bound"
    );
    worst
}

/// Bounded-entry problems (R about 0.5 to 1.5: the polynomial method's regime,
/// docs/math.md §3.1); the f16 bound's cancellation factor grows like e^{2R}.
const POLY_CASES: [Spec; 4] = [
    (21, (150, 150, 4, 4), Mask::None, 0.15),
    (22, (200, 200, 4, 3), Mask::CausalTopLeft, 0.2),
    (23, (130, 210, 3, 2), Mask::CausalBottomRight, 0.25),
    (24, (210, 130, 8, 4), Mask::CausalBottomRight, 0.1),
];

#[test]
fn emulated_poly_kernels_lie_within_the_certified_bound() {
    for (seed, dims, mask, s) in POLY_CASES {
        for kind in [GradientKind::Substituted, GradientKind::PolynomialModel] {
            poly_check(&Emulator, &prob(seed, dims, mask, s), kind);
        }
    }
}

#[test]
fn device_poly_kernels_lie_within_the_certified_bound() {
    let Some(dev) = device("device_poly_kernels_lie_within_the_certified_bound") else {
        return;
    };
    for (seed, dims, mask, s) in POLY_CASES {
        for kind in [GradientKind::Substituted, GradientKind::PolynomialModel] {
            poly_check(&dev, &prob(seed, dims, mask, s), kind);
        }
    }
}

#[test]
fn emulated_poly_agrees_with_the_cpu_engine() {
    // Same plan, same formula: the f16 result differs from the f64 CPU engine's by
    // rounding only, so both lie within their bounds of exact attention and hence
    // within the sum of the bounds of each other.
    let p = prob(31, (160, 160, 4, 4), Mask::CausalTopLeft, 0.3);
    let cfg = PolyConfig {
        scale: Some(p.tau as f64),
        mask: p.mask,
        accuracy: Accuracy::Degree(8),
        ..Default::default()
    };
    let f = cuda::poly::forward(&Emulator, p.q.view(), p.k.view(), p.v.view(), &cfg).unwrap();
    let (q, k, v) = (m64(p.q.view()), m64(p.k.view()), m64(p.v.view()));
    let c = poly::forward(q.view(), k.view(), v.view(), &cfg).unwrap();
    assert_eq!(f.plan.regime.degree, c.plan.regime.degree);
    assert_eq!(f.plan.regime.rank, c.plan.regime.rank);
    let bd = poly_bounds(
        p.q.view(),
        p.k.view(),
        p.v.view(),
        None,
        &cfg,
        &f,
        None,
        0.0,
    )
    .unwrap();
    // The two gradient kinds use different factors (P vs P'): their dQ differ in the
    // low bits (P' and P approximate e^x to different polynomials), not nowhere.
    let grad = |kind| {
        cuda::poly::backward(
            &Emulator,
            p.q.view(),
            p.k.view(),
            p.v.view(),
            &f,
            p.g.view(),
            kind,
            &cfg,
        )
        .unwrap()
    };
    let (ga, gb) = (
        grad(GradientKind::Substituted),
        grad(GradientKind::PolynomialModel),
    );
    let differ = (ga.dq.as_slice().iter().zip(gb.dq.as_slice()))
        .filter(|(a, b)| a != b)
        .count();
    println!(
        "dQ entries that differ between the gradient kinds: {differ} of {}",
        ga.dq.as_slice().len()
    );
    assert!(differ > 0);
    assert_eq!(
        ga.dv.as_slice(),
        gb.dv.as_slice(),
        "dV is the same formula for both kinds"
    );
    for i in 0..f.o.as_slice().len() {
        let diff = (f.o.as_slice()[i] as f64 - c.o.as_slice()[i]).abs();
        assert!(diff <= bd.o.total[i] + c.bound.total[i], "{i}: {diff:e}");
    }
}

#[test]
fn f16_range_and_bad_inputs_are_typed_errors() {
    let cfg = AttentionConfig::default();
    let mut q = Matrix::from_fn(4, 2, |i, j| (i + j) as f32 * 0.1).unwrap();
    let k = q.clone();
    let v = Matrix::from_fn(4, 3, |i, _| i as f32).unwrap();
    q.as_mut_slice()[3] = 70_000.0;
    let e = cuda::exact::forward(&Emulator, q.view(), k.view(), v.view(), &cfg).unwrap_err();
    assert!(matches!(e, Error::Overflow { dtype: "F16", .. }), "{e}");
    q.as_mut_slice()[3] = f32::NAN;
    let e = cuda::exact::forward(&Emulator, q.view(), k.view(), v.view(), &cfg).unwrap_err();
    assert!(matches!(e, Error::NonFinite { .. }), "{e}");
    let v_bad = Matrix::from_fn(3, 3, |i, _| i as f32).unwrap();
    q.as_mut_slice()[3] = 0.5;
    let e = cuda::exact::forward(&Emulator, q.view(), k.view(), v_bad.view(), &cfg).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
    // dS = P o (dP - delta) would leave f16's range: refused before any launch.
    let f = cuda::exact::forward(&Emulator, q.view(), k.view(), v.view(), &cfg).unwrap();
    let big = Matrix::from_fn(4, 3, |_, _| 30_000.0f32).unwrap();
    let e = cuda::exact::backward(
        &Emulator,
        q.view(),
        k.view(),
        v.view(),
        &f,
        big.view(),
        &cfg,
    )
    .unwrap_err();
    assert!(matches!(e, Error::Overflow { .. }), "{e}");
    // The polynomial path refuses what the CPU planner refuses, and f16's range.
    let pc = PolyConfig::default();
    let e = cuda::poly::forward(&Emulator, q.view(), k.view(), v_bad.view(), &pc).unwrap_err();
    assert!(matches!(e, Error::ShapeMismatch { .. }), "{e}");
}

#[test]
fn detection_without_a_device_is_a_typed_error() {
    // On a machine without libcuda / libnvrtc / a GPU this must be NoCudaDevice, and
    // it must not panic (cudarc's loader would).
    match CudaDevice::new(0) {
        Ok(d) => println!("a device is present: {}", d.describe()),
        Err(Error::NoCudaDevice(why)) => {
            assert!(!why.is_empty());
            println!("no device, as expected here: {why}");
        }
        Err(e) => panic!("detection must fail with NoCudaDevice, got {e}"),
    }
    // An ordinal far past any machine's device count is never a panic either.
    assert!(CudaDevice::new(1 << 20).is_err());
}

#[test]
fn multihead_matches_single_heads_on_the_emulator() {
    multihead_check(&Emulator);
}

#[test]
fn device_multihead_matches_single_heads() {
    let Some(dev) = device("device_multihead_matches_single_heads") else {
        return;
    };
    multihead_check(&dev);
}

/// One launch over all heads gives each head's single-head result, bit for bit.
fn multihead_check<B: Backend>(b: &B) {
    use polyattn::tensor::Tensor3;
    let mut r = SplitMix64::new(41);
    let (h, n, d) = (3, 70, 8);
    let t = |r: &mut SplitMix64| Tensor3::from_vec(h, n, d, f16_vals(r, h * n * d, 1.0)).unwrap();
    let (q, k, v, g) = (t(&mut r), t(&mut r), t(&mut r), t(&mut r));
    let cfg = AttentionConfig {
        scale: None,
        mask: Mask::CausalTopLeft,
        softcap: None,
    };
    let f = cuda::exact::forward_multihead(b, &q, &k, &v, &cfg).unwrap();
    let gr = cuda::exact::backward_multihead(b, &q, &k, &v, &f, &g, &cfg).unwrap();
    for hd in 0..h {
        let f1 = cuda::exact::forward(b, q.head(hd), k.head(hd), v.head(hd), &cfg).unwrap();
        assert_eq!(f1.o.as_slice(), f.o.head(hd).as_slice());
        assert_eq!(&f1.lse[..], f.lse.row(hd));
        let g1 =
            cuda::exact::backward(b, q.head(hd), k.head(hd), v.head(hd), &f1, g.head(hd), &cfg)
                .unwrap();
        assert_eq!(g1.dq.as_slice(), gr.dq.head(hd).as_slice());
        assert_eq!(g1.dk.as_slice(), gr.dk.head(hd).as_slice());
        assert_eq!(g1.dv.as_slice(), gr.dv.head(hd).as_slice());
    }
}
