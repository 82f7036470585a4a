//! Criterion benchmarks of the polynomial engine: forward and forward+backward at
//! n = 2^10 .. 2^16 (d = 8, degree 3, rank 165; no mask and causal) to show the linear
//! scaling, and exact vs poly side by side in one group at the same shapes.
//! Throughput is set to n (tokens), so time per element should stay flat as n doubles.
//!
//! The `poly/d8/eps1e-3/*` groups are the target shape: n = 65536, d = 8, the
//! degree the planner certifies for max|O~ - O| <= 1e-3, no mask and causal. Inputs:
//! Q, K entries N(0, s^2 / d) and V uniform in [-1, 1], dO N(0, 1); with s = 1/2
//! (seed 7, n = 65536) B = 0.85, R = 0.41 (B below sqrt(ln n) = 3.33), degree 3, rank
//! 165; with s = 1/sqrt(2) B = 1.20, R = 0.82, degree 4, rank 495. The plan is printed
//! (stderr) when each group starts.
//!
//! `POLYATTN_BENCH_MAX_LOG2N` caps n (default 16; `scripts/test.sh` sets 11 for the
//! once-through smoke test of `cargo test --benches`; the eps groups then run at that
//! n).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use polyattn::attention::poly::{self, Accuracy, GradientKind, PolyConfig};
use polyattn::attention::{exact, Alignment, AttentionConfig, Mask};
use polyattn::rng::SplitMix64;
use polyattn::tensor::Matrix;
use std::hint::black_box;

const D: usize = 8;

fn max_log2n() -> u32 {
    std::env::var("POLYATTN_BENCH_MAX_LOG2N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(16)
}

/// Q, K scaled so R = tau max||q|| max||k|| is about 1 (entries ~ N(0, 1/d)).
fn inputs(n: usize) -> [Matrix<f64>; 4] {
    let mut r = SplitMix64::new(n as u64);
    let mut m = |s: f64| Matrix::from_vec(n, D, r.normal_vec(n * D, s)).unwrap();
    let s = 1.0 / (D as f64).sqrt();
    [m(s), m(s), m(1.0), m(1.0)]
}

fn cfg(mask: Mask) -> PolyConfig {
    PolyConfig {
        mask,
        accuracy: Accuracy::Degree(3),
        max_cost_ratio: f64::INFINITY,
        ..PolyConfig::default()
    }
}

fn scaling(c: &mut Criterion) {
    for mask in [Mask::None, Mask::CausalTopLeft] {
        let mut g = c.benchmark_group(format!("poly/d{D}/g3/{}", mask.name()));
        g.sample_size(10);
        for log2n in (10..=max_log2n()).step_by(2) {
            let n = 1usize << log2n;
            let [q, k, v, d_o] = inputs(n);
            let cfg = cfg(mask);
            g.throughput(Throughput::Elements(n as u64));
            g.bench_with_input(BenchmarkId::new("forward", n), &n, |b, _| {
                b.iter(|| poly::forward(black_box(q.view()), k.view(), v.view(), &cfg).unwrap())
            });
            g.bench_with_input(BenchmarkId::new("forward+backward", n), &n, |b, _| {
                b.iter(|| {
                    let f = poly::forward(black_box(q.view()), k.view(), v.view(), &cfg).unwrap();
                    poly::backward(
                        q.view(),
                        k.view(),
                        v.view(),
                        &f,
                        d_o.view(),
                        GradientKind::Substituted,
                        &cfg,
                    )
                    .unwrap()
                })
            });
        }
        g.finish();
    }
}

fn versus_exact(c: &mut Criterion) {
    let mut g = c.benchmark_group(format!("exact-vs-poly/d{D}/causal/forward+backward"));
    g.sample_size(10);
    for log2n in (10..=max_log2n().min(14)).step_by(2) {
        let n = 1usize << log2n;
        let [q, k, v, d_o] = inputs(n);
        let pc = cfg(Mask::CausalTopLeft);
        let ec = AttentionConfig {
            scale: None,
            mask: Mask::CausalTopLeft,
            softcap: None,
        };
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::new("exact", n), &n, |b, _| {
            b.iter(|| {
                let f = exact::forward(black_box(q.view()), k.view(), v.view(), &ec).unwrap();
                exact::backward(q.view(), k.view(), v.view(), &f, d_o.view(), &ec).unwrap()
            })
        });
        g.bench_with_input(BenchmarkId::new("poly", n), &n, |b, _| {
            b.iter(|| {
                let f = poly::forward(black_box(q.view()), k.view(), v.view(), &pc).unwrap();
                poly::backward(
                    q.view(),
                    k.view(),
                    v.view(),
                    &f,
                    d_o.view(),
                    GradientKind::Substituted,
                    &pc,
                )
                .unwrap()
            })
        });
    }
    g.finish();
}

/// The `eps1e-3` groups' inputs (see the module docs): Q, K ~ N(0, s^2/d), V ~ U[-1, 1].
fn eps_inputs(n: usize, s: f64) -> [Matrix<f64>; 4] {
    let mut r = SplitMix64::new(7);
    let sd = s / (D as f64).sqrt();
    let q = Matrix::from_vec(n, D, r.normal_vec(n * D, sd)).unwrap();
    let k = Matrix::from_vec(n, D, r.normal_vec(n * D, sd)).unwrap();
    let v = Matrix::from_vec(n, D, (0..n * D).map(|_| r.range(-1.0, 1.0)).collect()).unwrap();
    let d_o = Matrix::from_vec(n, D, r.normal_vec(n * D, 1.0)).unwrap();
    [q, k, v, d_o]
}

fn certified_eps(c: &mut Criterion) {
    let n = 1usize << max_log2n().min(16);
    for (label, s) in [("r0.4", 0.5), ("r0.8", std::f64::consts::FRAC_1_SQRT_2)] {
        let [q, k, v, d_o] = eps_inputs(n, s);
        for mask in [Mask::None, Mask::CausalTopLeft] {
            let cfg = PolyConfig {
                mask,
                accuracy: Accuracy::Eps(1e-3),
                ..PolyConfig::default()
            };
            let f = poly::forward(q.view(), k.view(), v.view(), &cfg).unwrap();
            let rg = &f.plan.regime;
            eprintln!(
                "poly/d{D}/eps1e-3/{label}/{}: n = {n}, B = {:.3}, R = {:.3}, sqrt(ln n) = {:.3}, \
                 degree {}, rank {}, bound on max|O~ - O| {:.2e}",
                mask.name(),
                rg.entry_bound,
                rg.radius,
                rg.sqrt_ln_n,
                rg.degree,
                rg.rank,
                f.bound.max_total()
            );
            let mut g = c.benchmark_group(format!("poly/d{D}/eps1e-3/{label}/{}", mask.name()));
            g.sample_size(10);
            g.throughput(Throughput::Elements(n as u64));
            g.bench_with_input(BenchmarkId::new("forward", n), &n, |b, _| {
                b.iter(|| poly::forward(black_box(q.view()), k.view(), v.view(), &cfg).unwrap())
            });
            g.bench_with_input(BenchmarkId::new("forward+backward", n), &n, |b, _| {
                b.iter(|| {
                    let f = poly::forward(black_box(q.view()), k.view(), v.view(), &cfg).unwrap();
                    poly::backward(
                        q.view(),
                        k.view(),
                        v.view(),
                        &f,
                        d_o.view(),
                        GradientKind::Substituted,
                        &cfg,
                    )
                    .unwrap()
                })
            });
            g.finish();
        }
    }
}

/// Causal vs non-causal side by side (docs/perf/causal.md): the `r0.8` inputs (d = 8,
/// certified eps 1e-3, the planner's degree 4, rank 495) at n = 16384 and 65536, forward
/// and forward+backward, both masks in one group so their medians compare in one run.
fn causal_vs_none(c: &mut Criterion) {
    for log2n in [14, 16] {
        let n = 1usize << log2n.min(max_log2n());
        let [q, k, v, d_o] = eps_inputs(n, std::f64::consts::FRAC_1_SQRT_2);
        let mut g = c.benchmark_group(format!("poly/d{D}/eps1e-3/causal-vs-none/{n}"));
        g.sample_size(10);
        g.throughput(Throughput::Elements(n as u64));
        for mask in [Mask::None, Mask::CausalTopLeft] {
            let cfg = PolyConfig {
                mask,
                accuracy: Accuracy::Eps(1e-3),
                ..PolyConfig::default()
            };
            g.bench_function(BenchmarkId::new("forward", mask.name()), |b| {
                b.iter(|| poly::forward(black_box(q.view()), k.view(), v.view(), &cfg).unwrap())
            });
            g.bench_function(BenchmarkId::new("forward+backward", mask.name()), |b| {
                b.iter(|| {
                    let f = poly::forward(black_box(q.view()), k.view(), v.view(), &cfg).unwrap();
                    poly::backward(
                        q.view(),
                        k.view(),
                        v.view(),
                        &f,
                        d_o.view(),
                        GradientKind::Substituted,
                        &cfg,
                    )
                    .unwrap()
                })
            });
        }
        g.finish();
        if n < 1 << log2n {
            break;
        }
    }
}

/// A sliding window of n / 4 keys (bottom-right, FlashAttention's `window_size =
/// (n / 4, 0)`) through the range form, beside the causal prefix form and the exact
/// engine on the same window, forward+backward in one group.
fn window(c: &mut Criterion) {
    for log2n in [14, 16] {
        let n = 1usize << log2n.min(max_log2n());
        let [q, k, v, d_o] = eps_inputs(n, std::f64::consts::FRAC_1_SQRT_2);
        let win = Mask::None.with_window(Some(n / 4), Some(0), Alignment::BottomRight);
        let mut g = c.benchmark_group(format!("poly/d{D}/eps1e-3/window/{n}"));
        g.sample_size(10);
        g.throughput(Throughput::Elements(n as u64));
        for mask in [Mask::CausalTopLeft, win] {
            let cfg = PolyConfig {
                mask,
                accuracy: Accuracy::Eps(1e-3),
                max_cost_ratio: f64::INFINITY,
                ..PolyConfig::default()
            };
            g.bench_function(
                BenchmarkId::new("poly forward+backward", mask.name()),
                |b| {
                    b.iter(|| {
                        let f =
                            poly::forward(black_box(q.view()), k.view(), v.view(), &cfg).unwrap();
                        poly::backward(
                            q.view(),
                            k.view(),
                            v.view(),
                            &f,
                            d_o.view(),
                            GradientKind::Substituted,
                            &cfg,
                        )
                        .unwrap()
                    })
                },
            );
        }
        let ec = AttentionConfig {
            mask: win,
            ..AttentionConfig::default()
        };
        g.bench_function(
            BenchmarkId::new("exact forward+backward", win.name()),
            |b| {
                b.iter(|| {
                    let f = exact::forward(black_box(q.view()), k.view(), v.view(), &ec).unwrap();
                    exact::backward(q.view(), k.view(), v.view(), &f, d_o.view(), &ec).unwrap()
                })
            },
        );
        g.finish();
        if n < 1 << log2n {
            break;
        }
    }
}

criterion_group!(
    poly_benches,
    certified_eps,
    scaling,
    versus_exact,
    causal_vs_none,
    window
);
criterion_main!(poly_benches);
