//! Criterion benchmarks of the exact engine (docs/math.md §2): forward and
//! forward+backward, f32 vs f64, no mask vs causal, one head, head dims d in
//! {8, 16, 64, 128} at n in {1024, 4096, 16384}, plus the two ceilings the kernels
//! are measured against (docs/perf/profiles.md): the CPU's dense GEMM peak through the
//! `gemm` crate and the vectorised exp's throughput.
//!
//! Throughput is in FLOPs counted as FlashAttention counts them: forward 4 n^2 d per
//! head, halved when causal; backward 2.5x the forward, so forward+backward is 3.5x.
//! Criterion's "elements/s" therefore reads as FLOP/s. The GEMM group counts
//! 2 m n k per product, the exp group exponentials.
//!
//! `cargo bench --bench exact` for the full set; `cargo bench --bench exact -- --quick`
//! for a fast pass. `POLYATTN_BENCH_MAX_LOG2N` caps n (default 14, i.e. 16384;
//! `scripts/test.sh` sets 11). `cargo test --benches` runs each benchmark once, and
//! without `--bench` on the command line n is further capped at 2^10 so that the smoke
//! run stays cheap.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use polyattn::attention::{exact, AttentionConfig, Mask};
use polyattn::rng::SplitMix64;
use polyattn::tensor::Matrix;
use polyattn::Real;
use std::hint::black_box;

/// The largest log2(n) to run (environment, capped at 10 in smoke runs).
fn max_log2n() -> u32 {
    let env = std::env::var("POLYATTN_BENCH_MAX_LOG2N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(14);
    let benching = std::env::args().any(|a| a == "--bench");
    if benching {
        env
    } else {
        env.min(10)
    }
}

fn inputs<T: Real>(n: usize, d: usize) -> [Matrix<T>; 4] {
    let mut r = SplitMix64::new(n as u64 + d as u64);
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

/// The (d, n) shapes for one dtype: every d at n = 1024 and 4096; n = 16384 only for
/// the small heads (d <= 16), where the performance targets are.
fn shapes(dims: &[usize]) -> Vec<(usize, usize)> {
    let cap = max_log2n();
    let mut out = Vec::new();
    for &d in dims {
        for log2n in [10u32, 12, 14] {
            if log2n > cap || (log2n == 14 && d > 16) {
                continue;
            }
            out.push((d, 1usize << log2n));
        }
    }
    out
}

fn bench_dtype<T: Real>(c: &mut Criterion, dims: &[usize]) {
    for mask in [Mask::None, Mask::CausalTopLeft] {
        let cfg = AttentionConfig {
            scale: None,
            mask,
            softcap: None,
        };
        for (d, n) in shapes(dims) {
            let mut g = c.benchmark_group(format!("exact/{}/{}/d{d}", T::DTYPE, mask.name()));
            g.sample_size(10);
            let [q, k, v, d_o] = inputs::<T>(n, d);
            g.throughput(Throughput::Elements(flops(n, d, mask) as u64));
            g.bench_with_input(BenchmarkId::new("forward", n), &n, |b, _| {
                b.iter(|| exact::forward(black_box(q.view()), k.view(), v.view(), &cfg).unwrap())
            });
            g.throughput(Throughput::Elements((3.5 * flops(n, d, mask)) as u64));
            g.bench_with_input(BenchmarkId::new("forward+backward", n), &n, |b, _| {
                b.iter(|| {
                    let f = exact::forward(black_box(q.view()), k.view(), v.view(), &cfg).unwrap();
                    exact::backward(q.view(), k.view(), v.view(), &f, d_o.view(), &cfg).unwrap()
                })
            });
            g.finish();
        }
    }
}

/// `c = a b` (all `m x m`, row-major) by the `gemm` crate on the calling thread.
fn gemm_square<T: Real>(m: usize, a: &[T], b: &[T], c: &mut [T]) {
    let s = m as isize;
    // SAFETY: the three slices hold m * m elements; strides describe row-major m x m.
    unsafe {
        gemm::gemm(
            m,
            m,
            m,
            c.as_mut_ptr(),
            1,
            s,
            false,
            a.as_ptr(),
            1,
            s,
            b.as_ptr(),
            1,
            s,
            T::ZERO,
            T::ONE,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// The dense GEMM peak of this CPU (square products, one thread and one product per
/// rayon thread side by side), as a ceiling for the tile kernels.
fn bench_gemm_peak<T: Real>(c: &mut Criterion) {
    let mut g = c.benchmark_group(format!("exact/gemm_peak/{}", T::DTYPE));
    g.sample_size(10);
    let threads = rayon::current_num_threads();
    for m in [64usize, 512] {
        let mut r = SplitMix64::new(m as u64);
        let a: Vec<T> = r
            .normal_vec(m * m, 1.0)
            .into_iter()
            .map(T::from_f64)
            .collect();
        let b: Vec<T> = r
            .normal_vec(m * m, 1.0)
            .into_iter()
            .map(T::from_f64)
            .collect();
        let reps = (1usize << 27) / (m * m * m) + 1; // about 2^28 FLOPs per iteration
        let per = 2.0 * (m * m * m) as f64 * reps as f64;
        g.throughput(Throughput::Elements(per as u64));
        let mut out = vec![T::ZERO; m * m];
        g.bench_function(BenchmarkId::new("1-thread", m), |bch| {
            bch.iter(|| {
                for _ in 0..reps {
                    gemm_square(m, black_box(&a), &b, &mut out);
                }
            })
        });
        g.throughput(Throughput::Elements((per * threads as f64) as u64));
        let mut outs = vec![vec![T::ZERO; m * m]; threads];
        g.bench_function(BenchmarkId::new(format!("{threads}-threads"), m), |bch| {
            bch.iter(|| {
                use rayon::prelude::*;
                outs.par_iter_mut().for_each(|o| {
                    for _ in 0..reps {
                        gemm_square(m, black_box(&a), &b, o);
                    }
                })
            })
        });
    }
    g.finish();
}

/// The vectorised exp's throughput ([`polyattn::simd::exp_slice`], within 1 ulp) on
/// an L1-resident slice, one thread and one slice per rayon thread side by side: the
/// other ceiling of attention (one exp per visible score and pass).
fn bench_exp_rate<T: Real>(c: &mut Criterion) {
    let mut g = c.benchmark_group(format!("exact/exp_rate/{}", T::DTYPE));
    g.sample_size(10);
    let threads = rayon::current_num_threads();
    let len = 4096;
    let x: Vec<T> = (0..len).map(|i| T::from_f64(-(i as f64) / 64.0)).collect();
    let rounds = 256;
    let per = (len * rounds) as f64;
    g.throughput(Throughput::Elements(per as u64));
    let mut out = x.clone();
    g.bench_function("1-thread", |bch| {
        bch.iter(|| {
            for _ in 0..rounds {
                polyattn::simd::exp_slice(black_box(&x), &mut out);
            }
        })
    });
    g.throughput(Throughput::Elements((per * threads as f64) as u64));
    let mut outs = vec![x.clone(); threads];
    g.bench_function(format!("{threads}-threads"), |bch| {
        bch.iter(|| {
            use rayon::prelude::*;
            outs.par_iter_mut().for_each(|o| {
                for _ in 0..rounds {
                    polyattn::simd::exp_slice(black_box(&x), o);
                }
            })
        })
    });
    g.finish();
}

fn benches(c: &mut Criterion) {
    bench_gemm_peak::<f32>(c);
    bench_gemm_peak::<f64>(c);
    bench_exp_rate::<f32>(c);
    bench_exp_rate::<f64>(c);
    bench_dtype::<f32>(c, &[8, 16, 64, 128]);
    bench_dtype::<f64>(c, &[8, 64]);
}

criterion_group!(exact_benches, benches);
criterion_main!(exact_benches);
