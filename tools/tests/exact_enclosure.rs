//! The exact engine's f64 and f32 results lie inside the MPFR enclosure of the exact
//! real result, widened by the rounding allowance derived in `common::allowance`, for
//! O, lse, dQ, dK and dV, over a grid of shapes, all masks (sliding windows included),
//! several scales and input magnitudes from tiny to |S| ~ 80.

mod common;

use common::{allowance, case, check_against, check_case, enclosures, run_engine, Case};
use polyattn::attention::{Alignment, Mask, Window};
use polyattn::Real;

/// The prefix masks and sliding windows (FlashAttention's window_size) in both
/// alignments: a local window, one with look-ahead, a band with rows that see no key
/// when n_q > n_k, and a one-sided window.
const MASKS: [Mask; 7] = [
    Mask::None,
    Mask::CausalTopLeft,
    Mask::CausalBottomRight,
    window(Some(5), Some(0), Alignment::BottomRight),
    window(Some(3), Some(2), Alignment::TopLeft),
    window(Some(0), Some(1), Alignment::BottomRight),
    window(None, Some(4), Alignment::TopLeft),
];

const fn window(left: Option<usize>, right: Option<usize>, align: Alignment) -> Mask {
    Mask::Window(Window { left, right, align })
}

/// (n_q, n_k, d, d_v): from 1 to 128, non-powers of two, n_q != n_k both ways, d_v != d.
const SHAPES: [(usize, usize, usize, usize); 9] = [
    (1, 1, 1, 1),
    (1, 7, 3, 2),
    (5, 3, 2, 4),
    (17, 9, 5, 11),
    (33, 70, 8, 3),
    (64, 64, 16, 16),
    (100, 37, 7, 12),
    (65, 127, 64, 33),
    (128, 128, 64, 64),
];

fn run_grid<T: Real>(scales: &[Option<f64>], s_max: Option<f64>, seed: u64) {
    let mut worst: f64 = 0.0;
    for (si, &shape) in SHAPES.iter().enumerate() {
        for (mi, &mask) in MASKS.iter().enumerate() {
            let scale = scales[(si + mi) % scales.len()];
            let c = case::<T>(seed + (si * 3 + mi) as u64, shape, scale, mask, s_max);
            worst = worst.max(check_case::<T>(&c));
        }
    }
    println!(
        "{} s_max={s_max:?}: worst certified error / allowance = {worst:.3e}",
        T::DTYPE
    );
}

#[test]
fn f64_unit_scores_all_masks_and_shapes() {
    run_grid::<f64>(&[None, Some(0.3), Some(1.7)], None, 100);
}

#[test]
fn f32_unit_scores_all_masks_and_shapes() {
    run_grid::<f32>(&[None, Some(0.3), Some(1.7)], None, 200);
}

#[test]
fn f64_tiny_inputs() {
    // Entries ~1e-6: scores ~1e-12, attention nearly uniform.
    run_grid::<f64>(&[None], Some(1e-10), 300);
}

#[test]
fn f64_large_scores_stay_finite_and_enclosed() {
    // |S| up to 80: e^80 overflows f32 and a naive e^S loses f64 range quickly; the
    // max shift keeps every argument <= 0.
    run_grid::<f64>(&[None, Some(0.125)], Some(80.0), 400);
}

#[test]
fn f32_large_scores_stay_finite_and_enclosed() {
    run_grid::<f32>(&[None], Some(80.0), 500);
}

#[test]
fn f64_extreme_scores_700() {
    // e^700 is near f64's limit; scores beyond it must still work.
    for mask in MASKS {
        let c = case::<f64>(7, (20, 30, 4, 5), None, mask, Some(700.0));
        check_case::<f64>(&c);
    }
}

/// The check can fail: an output moved by a few allowances is caught.
#[test]
fn negative_control_perturbed_output_is_rejected() {
    let c: Case = case::<f64>(9, (12, 10, 4, 3), None, Mask::CausalTopLeft, None);
    let enc = enclosures::<f64>(&c);
    let allow = allowance::<f64>(&c);
    let mut got = run_engine::<f64>(&c);
    check_against(&c, &got, &enc, &allow);
    let i = 5;
    got.dk[i] += 3.0 * allow.dk[i] + enc.dk[i].width_f64();
    let caught = std::panic::catch_unwind(|| check_against(&c, &got, &enc, &allow));
    assert!(
        caught.is_err(),
        "a perturbation of 3 allowances went unnoticed"
    );
}

/// The allowance is not vacuous: in f64 at moderate sizes it stays below ~1e-12 of the
/// outputs' scale, so an engine with a real bug (errors ~1e-3) could not hide in it.
#[test]
fn allowance_is_small() {
    let c = case::<f64>(11, (64, 64, 16, 16), None, Mask::None, None);
    let a = allowance::<f64>(&c);
    let max = |v: &[f64]| v.iter().cloned().fold(0.0, f64::max);
    for (name, v) in [
        ("o", &a.o),
        ("dq", &a.dq),
        ("dk", &a.dk),
        ("dv", &a.dv),
        ("lse", &a.lse),
    ] {
        assert!(max(v) < 1e-12, "{name} allowance {:e}", max(v));
    }
}

/// The additive score bias (PyTorch's float `attn_mask`, ALiBi, key padding as `-inf`)
/// in f64 and f32, with every mask: the engine's results lie in the MPFR enclosure of
/// `softmax(tau Q K^T + B + mask) V` widened by the allowance (which adds the bias
/// addition's rounding). Biases: N(0, 3) noise; ALiBi `-slope |i + n_k - n_q - j|`
/// (FlashAttention's convention); key padding (`-inf` for the last keys), which with a
/// bottom-right mask or a window leaves rows with no key at all.
#[test]
fn additive_bias_alibi_and_key_padding() {
    fn biases(seed: u64, n_q: usize, n_k: usize) -> Vec<(&'static str, Vec<f64>)> {
        let mut r = polyattn::rng::SplitMix64::new(seed);
        let noise = r.normal_vec(n_q * n_k, 3.0);
        let slope = 0.25;
        let alibi = (0..n_q * n_k)
            .map(|ij| {
                let (i, j) = ((ij / n_k) as f64, (ij % n_k) as f64);
                -slope * (i + n_k as f64 - n_q as f64 - j).abs()
            })
            .collect();
        let keep = n_k.div_ceil(2);
        let padding = (0..n_q * n_k)
            .map(|ij| {
                if ij % n_k < keep {
                    0.0
                } else {
                    f64::NEG_INFINITY
                }
            })
            .collect();
        vec![("noise", noise), ("alibi", alibi), ("padding", padding)]
    }
    let mut worst: f64 = 0.0;
    for (si, &shape) in SHAPES.iter().enumerate().take(7) {
        for (mi, &mask) in MASKS.iter().enumerate() {
            let (n_q, n_k) = (shape.0, shape.1);
            for (name, b) in biases((si * 7 + mi) as u64, n_q, n_k) {
                let seed = 900 + (si * 7 + mi) as u64;
                let c = case::<f64>(seed, shape, None, mask, None).with_bias::<f64>(b.clone());
                worst = worst.max(check_case::<f64>(&c));
                let c = case::<f32>(seed, shape, None, mask, Some(20.0)).with_bias::<f32>(b);
                let t = check_case::<f32>(&c);
                assert!(t.is_finite(), "{name} {mask:?} {shape:?}");
                worst = worst.max(t);
            }
        }
    }
    println!("bias: worst certified error / allowance = {worst:.3e}");
}

/// Score softcapping (`c tanh(s / c)`, Gemma 2 / FlashAttention's `softcap`) in f64 and
/// f32, with every mask, alone and with an ALiBi bias: the engine's results lie in the
/// MPFR enclosure of `softmax(c tanh(tau Q K^T / c) + B + mask) V` (and its gradients
/// through the cap) widened by the allowance, which adds the cap's absolute `6u c` and
/// its slope's relative error. The caps cover the near-linear regime (scores well
/// below c: where `1 - e^{-2|y|}` cancels), the bend, and saturation (scores 4x c).
#[test]
fn softcap_alone_and_with_alibi() {
    // Each (shape, mask) pair gets one of the four caps, in rotation, so every cap meets
    // every mask across the shapes (a full cross product triples the CI time for no
    // new code path); ALiBi is added on every third pair.
    const CAPS: [(f64, f64); 4] = [(30.0, 2.0), (5.0, 6.0), (0.5, 2.0), (4.0, 16.0)];
    let mut worst: f64 = 0.0;
    for (si, &shape) in SHAPES.iter().enumerate().take(7) {
        for (mi, &mask) in MASKS.iter().enumerate() {
            let seed = 1300 + (si * 7 + mi) as u64;
            let (n_q, n_k) = (shape.0, shape.1);
            let (cap, s_max) = CAPS[(si + mi) % CAPS.len()];
            let c = case::<f64>(seed, shape, None, mask, Some(s_max)).with_softcap::<f64>(cap);
            worst = worst.max(check_case::<f64>(&c));
            let c = case::<f32>(seed, shape, None, mask, Some(s_max)).with_softcap::<f32>(cap);
            worst = worst.max(check_case::<f32>(&c));
            if (si + mi) % 3 != 0 {
                continue;
            }
            let alibi: Vec<f64> = (0..n_q * n_k)
                .map(|ij| {
                    let (i, j) = ((ij / n_k) as f64, (ij % n_k) as f64);
                    -0.25 * (i + n_k as f64 - n_q as f64 - j).abs()
                })
                .collect();
            let c = case::<f64>(seed, shape, None, mask, Some(8.0))
                .with_softcap::<f64>(3.0)
                .with_bias::<f64>(alibi.clone());
            worst = worst.max(check_case::<f64>(&c));
            let c = case::<f32>(seed, shape, None, mask, Some(8.0))
                .with_softcap::<f32>(3.0)
                .with_bias::<f32>(alibi);
            worst = worst.max(check_case::<f32>(&c));
        }
    }
    println!("softcap: worst certified error / allowance = {worst:.3e}");
}

/// The softcap check can fail: results computed without the cap (scores up to 8 under
/// a cap of 2) lie far outside the capped problem's widened enclosure, and so do the
/// gradients of a cap whose slope is ignored (the forward capped, dS not multiplied).
#[test]
fn softcap_negative_control() {
    let capped =
        case::<f64>(21, (12, 10, 4, 3), None, Mask::None, Some(8.0)).with_softcap::<f64>(2.0);
    let enc = enclosures::<f64>(&capped);
    let allow = allowance::<f64>(&capped);
    let mut plain = capped.clone();
    plain.softcap = None;
    let got = run_engine::<f64>(&plain);
    let caught = std::panic::catch_unwind(|| check_against(&capped, &got, &enc, &allow));
    assert!(caught.is_err(), "uncapped results passed as capped ones");
    // Capped forward, gradients without the slope: dS / slope is what the engine would
    // return had it forgotten d(c tanh(s/c))/ds (reconstructed from the plain-f64
    // reference, not from the engine).
    let mut got = run_engine::<f64>(&capped);
    check_against(&capped, &got, &enc, &allow);
    let r = polyattn_tools::fuzzing::enclosure::reference(
        &capped,
        polyattn_tools::fuzzing::enclosure::tau_of::<f64>(None, 4),
    );
    let (n_q, n_k, d) = (12, 10, 4);
    let tau = polyattn_tools::fuzzing::enclosure::tau_of::<f64>(None, d);
    for i in 0..n_q {
        for l in 0..d {
            got.dq[i * d + l] = (0..n_k)
                .map(|j| tau * r.ds[i * n_k + j] / r.slope[i * n_k + j] * capped.k[j * d + l])
                .sum();
        }
    }
    let caught = std::panic::catch_unwind(|| check_against(&capped, &got, &enc, &allow));
    assert!(caught.is_err(), "gradients without the cap's slope passed");
}

/// Review regression: a raw score whose rounding error is comparable to a tiny cap
/// (c = 2^-10; products of 1e7 x 1e13 cancelling, so the f64 raw score is off by about
/// 8c) moves the slope sech^2(s / c) by a factor e^{16}, not a first-order amount. The
/// allowance takes the factor whole (`slope_hi`), and the engine's result is still
/// within it.
#[test]
fn softcap_slope_with_a_raw_error_comparable_to_the_cap() {
    let mut c = case::<f64>(1, (1, 2, 2, 1), Some(1.0), Mask::None, None)
        .with_softcap::<f64>(2f64.powi(-10));
    c.q = vec![8.794712934433859e6, 1.0];
    c.k = vec![1.1254964026619514e7, -9.898417770149842e13, 0.0, 0.0];
    c.v = vec![1.0, -1.0];
    c.d_o = vec![1.0];
    let t = check_case::<f64>(&c);
    println!("raw error ~ 8c: certified error / allowance = {t:.3e}");
}

/// Review regression: with every score saturated (|s / c| up to 200) dQ and dK are of
/// order e^{-2 |s| / c}; the MPFR slope is enclosed as 1 / cosh^2 (not 1 - tanh^2, whose
/// width would swallow them), so gradients a million times too large are caught.
#[test]
fn softcap_saturated_gradients_are_enclosed_tightly() {
    for (cap, s_max) in [(1.0, 200.0), (0.01, 3.0)] {
        let c =
            case::<f64>(31, (6, 7, 3, 2), None, Mask::None, Some(s_max)).with_softcap::<f64>(cap);
        let enc = enclosures::<f64>(&c);
        let allow = allowance::<f64>(&c);
        let mut got = run_engine::<f64>(&c);
        check_against(&c, &got, &enc, &allow);
        got.dq.iter_mut().for_each(|x| *x *= 1e6);
        got.dk.iter_mut().for_each(|x| *x *= 1e6);
        let caught = std::panic::catch_unwind(|| check_against(&c, &got, &enc, &allow));
        assert!(caught.is_err(), "cap {cap}: dq, dk x 1e6 went unnoticed");
    }
}
