//! Criterion benchmarks of the polynomial engine: forward and forward+backward at
//! n = 2^10 .. 2^16 (d = 8, degree 3, rank 165; no mask and causal) to show the linear
//! scaling, and exact vs poly side by side in one group at the same shapes.
//! Throughput is set to n (tokens), so time per element should stay flat as n doubles.
//!
//! `POLYATTN_BENCH_MAX_LOG2N` caps n (default 16; `scripts/test.sh` sets 11 for the
//! once-through smoke test of `cargo test --benches`).

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use polyattn::attention::poly::{self, Accuracy, GradientKind, PolyConfig};
use polyattn::attention::{exact, AttentionConfig, Mask};
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

criterion_group!(poly_benches, scaling, versus_exact);
criterion_main!(poly_benches);
