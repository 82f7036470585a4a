//! Criterion benchmarks of the exact engine: forward and forward+backward, f32 and
//! f64, no mask and causal, one head, at a few n. Throughput is in FLOPs counted as
//! FlashAttention counts them (forward 4 n^2 d, halved when causal; backward 2.5x), so
//! criterion's "elements/s" reads as FLOP/s.
//!
//! `cargo bench --bench exact` for the full set; `cargo bench --bench exact -- --quick`
//! for a fast pass; `cargo test --benches` runs each once as a smoke test.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use polyattn::attention::{exact, AttentionConfig, Mask};
use polyattn::rng::SplitMix64;
use polyattn::tensor::Matrix;
use polyattn::Real;
use std::hint::black_box;

const D: usize = 64;

fn inputs<T: Real>(n: usize, d: usize) -> [Matrix<T>; 4] {
    let mut r = SplitMix64::new(n as u64);
    let mut m = || {
        Matrix::from_vec(
            n,
            d,
            r.normal_vec(n * d, 1.0)
                .into_iter()
                .map(T::from_f64)
                .collect(),
        )
        .unwrap()
    };
    [m(), m(), m(), m()]
}

fn flops(n: usize, d: usize, mask: Mask) -> f64 {
    let f = 4.0 * (n * n * d) as f64;
    if mask == Mask::None {
        f
    } else {
        f / 2.0
    }
}

fn bench_dtype<T: Real>(c: &mut Criterion, sizes: &[usize]) {
    for mask in [Mask::None, Mask::CausalTopLeft] {
        let cfg = AttentionConfig { scale: None, mask };
        let mut g = c.benchmark_group(format!("exact/{}/{}/d{D}", T::DTYPE, mask.name()));
        g.sample_size(10);
        for &n in sizes {
            let [q, k, v, d_o] = inputs::<T>(n, D);
            g.throughput(Throughput::Elements(flops(n, D, mask) as u64));
            g.bench_with_input(BenchmarkId::new("forward", n), &n, |b, _| {
                b.iter(|| exact::forward(black_box(q.view()), k.view(), v.view(), &cfg).unwrap())
            });
            g.throughput(Throughput::Elements((3.5 * flops(n, D, mask)) as u64));
            g.bench_with_input(BenchmarkId::new("forward+backward", n), &n, |b, _| {
                b.iter(|| {
                    let f = exact::forward(black_box(q.view()), k.view(), v.view(), &cfg).unwrap();
                    exact::backward(q.view(), k.view(), v.view(), &f, d_o.view(), &cfg).unwrap()
                })
            });
        }
        g.finish();
    }
}

fn benches(c: &mut Criterion) {
    bench_dtype::<f32>(c, &[256, 1024, 4096]);
    bench_dtype::<f64>(c, &[256, 1024]);
}

criterion_group!(exact_benches, benches);
criterion_main!(exact_benches);
