//! The machine's practical ceilings for attention, measured: dense GEMM throughput
//! (the `gemm` crate with its run-time dispatched kernels, square `m = n = k`) in f32 and
//! f64 on 1 and `--threads` cores, and the vectorised exp's throughput
//! ([`polyattn::simd::exp_slice`], within 1 ulp) per core in f32 and f64. Issue 6's
//! targets are ratios against PyTorch; these figures say how far either side is from
//! what the cores can do (docs/perf/profiles.md uses them).
//!
//! ```sh
//! cargo run --release --example machine_peak -- [--size 2048] [--threads 2] [--reps 5]
//! ```
//! Prints one JSON line; times are medians over `--reps` after one warm-up.

use polyattn::simd::{exp_slice, isa};
use std::time::Instant;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Median seconds of `f` over `reps` runs after one warm-up.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..reps)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// `c = a b` for `size x size` row-major buffers, one core.
fn gemm_once<T: Copy + 'static + From<f32>>(size: usize, a: &[T], b: &[T], c: &mut [T]) {
    let s = size as isize;
    // SAFETY: three distinct size x size row-major buffers (column stride 1, row stride
    // `size`); T is f32 or f64, which gemm supports.
    unsafe {
        gemm::gemm(
            size,
            size,
            size,
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
            T::from(0.0),
            T::from(1.0),
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// GFLOP/s of `threads` independent `size`^3 products run at once, one per core (2
/// FLOPs per multiply-add): the throughput the engines' per-core GEMMs can reach.
fn gemm_gflops<T: Copy + Send + Sync + 'static + From<f32>>(
    size: usize,
    threads: usize,
    reps: usize,
) -> f64 {
    let a: Vec<T> = (0..size * size)
        .map(|i| T::from(((i % 13) as f32 - 6.0) / 7.0))
        .collect();
    let mut cs: Vec<Vec<T>> = (0..threads)
        .map(|_| vec![T::from(0.0); size * size])
        .collect();
    let secs = time(reps, || {
        use rayon::prelude::*;
        cs.par_iter_mut()
            .with_max_len(1)
            .for_each(|c| gemm_once(size, &a, &a, c));
    });
    2.0 * threads as f64 * (size as f64).powi(3) / secs / 1e9
}

/// Exponentials per second on one core: a 4096-entry (L1-resident) slice, repeated.
fn exp_rate<T: polyattn::scalar::Real + From<f32>>(reps: usize) -> f64 {
    let x: Vec<T> = (0..4096).map(|i| T::from(-(i as f32) / 64.0)).collect();
    let mut out = x.clone();
    let rounds = 2000;
    let secs = time(reps, || {
        for _ in 0..rounds {
            exp_slice(&x, &mut out);
            std::hint::black_box(&mut out);
        }
    });
    (rounds * x.len()) as f64 / secs
}

fn main() {
    let (mut size, mut threads, mut reps) = (2048usize, 2usize, 5usize);
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let val = it.next().and_then(|v| v.parse::<usize>().ok());
        match (flag.as_str(), val) {
            ("--size", Some(v)) if v > 0 => size = v,
            ("--threads", Some(v)) if v > 0 => threads = v,
            ("--reps", Some(v)) if v > 0 => reps = v,
            _ => {
                eprintln!("usage: machine_peak [--size N] [--threads T] [--reps R]");
                std::process::exit(2);
            }
        }
    }
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .ok();
    println!(
        "{{\"isa\": \"{:?}\", \"size\": {size}, \"threads\": {threads}, \
         \"gemm_f32_gflops_1core\": {:.1}, \"gemm_f32_gflops\": {:.1}, \
         \"gemm_f64_gflops_1core\": {:.1}, \"gemm_f64_gflops\": {:.1}, \
         \"exp_f32_per_s_1core\": {:.3e}, \"exp_f64_per_s_1core\": {:.3e}}}",
        isa::<f32>(),
        gemm_gflops::<f32>(size, 1, reps),
        gemm_gflops::<f32>(size, threads, reps),
        gemm_gflops::<f64>(size, 1, reps),
        gemm_gflops::<f64>(size, threads, reps),
        exp_rate::<f32>(reps),
        exp_rate::<f64>(reps),
    );
}
