//! Causal vs non-causal polynomial attention side by side in one process (docs/perf/causal.md):
//! the `poly/d8/eps1e-3/r0.8` shape of `benches/poly.rs` (d = 8, Q, K ~ N(0, 1/(2 d)),
//! V ~ U[-1, 1], certified eps 1e-3: the planner's degree 4, rank 495), forward and
//! forward+backward (substituted gradient), the two masks interleaved run by run, and the
//! medians and the ratio printed.
//!
//! `cargo run --release --example causal_ratio -- [reps] [log2n ...]` (default 5 reps,
//! n = 2^14 and 2^16). `POLYATTN_CHUNK` overrides the configured chunk (0: the cost
//! model's choice); `POLYATTN_ONLY=forward` times the forward alone; with
//! `POLYATTN_PROFILE` set, the contractions' phase timers ([`poly::lowrank::profile`])
//! are printed per mask and pass (summed over the runs).

use polyattn::attention::poly::{self, Accuracy, GradientKind, PolyConfig};
use polyattn::attention::Mask;
use polyattn::rng::SplitMix64;
use polyattn::tensor::Matrix;
use std::time::Instant;

const D: usize = 8;

/// The inputs of `benches/poly.rs`'s eps groups (seed 7, s = 1/sqrt(2)).
fn inputs(n: usize) -> [Matrix<f64>; 4] {
    let mut r = SplitMix64::new(7);
    let sd = std::f64::consts::FRAC_1_SQRT_2 / (D as f64).sqrt();
    let q = Matrix::from_vec(n, D, r.normal_vec(n * D, sd)).unwrap();
    let k = Matrix::from_vec(n, D, r.normal_vec(n * D, sd)).unwrap();
    let v = Matrix::from_vec(n, D, (0..n * D).map(|_| r.range(-1.0, 1.0)).collect()).unwrap();
    let d_o = Matrix::from_vec(n, D, r.normal_vec(n * D, 1.0)).unwrap();
    [q, k, v, d_o]
}

fn median(mut x: Vec<f64>) -> f64 {
    x.sort_by(f64::total_cmp);
    x[x.len() / 2]
}

fn main() -> Result<(), polyattn::Error> {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("integers: reps, then log2 n"))
        .collect();
    let reps = args.first().copied().unwrap_or(5).max(1);
    let sizes: Vec<usize> = if args.len() > 1 {
        args[1..].to_vec()
    } else {
        vec![14, 16]
    };
    let chunk = std::env::var("POLYATTN_CHUNK")
        .ok()
        .map(|s| s.parse().unwrap());
    let only_forward = std::env::var("POLYATTN_ONLY").is_ok_and(|s| s == "forward");
    println!("threads {}", rayon::current_num_threads());
    println!("| n | rank | pass | none (ms) | causal (ms) | causal / none |");
    println!("|--:|--:|---|--:|--:|--:|");
    for log2n in sizes {
        let n = 1usize << log2n;
        let [q, k, v, d_o] = inputs(n);
        let cfg = |mask| {
            let mut c = PolyConfig {
                mask,
                accuracy: Accuracy::Eps(1e-3),
                ..PolyConfig::default()
            };
            if let Some(ch) = chunk {
                c.chunk = ch;
            }
            c
        };
        let masks = [Mask::None, Mask::CausalTopLeft];
        let mut times = [[Vec::new(), Vec::new()], [Vec::new(), Vec::new()]];
        let mut rank = 0;
        let mut prof = [[[0.0; 7]; 2]; 2];
        let add = |acc: &mut [f64; 7]| {
            for (a, x) in acc.iter_mut().zip(poly::lowrank::profile::take()) {
                *a += x;
            }
        };
        for _ in 0..reps {
            for (m, &mask) in masks.iter().enumerate() {
                let c = cfg(mask);
                let t = Instant::now();
                poly::lowrank::profile::take();
                let f = poly::forward(q.view(), k.view(), v.view(), &c)?;
                let tf = t.elapsed().as_secs_f64();
                add(&mut prof[0][m]);
                rank = f.plan.regime.rank;
                if only_forward {
                    times[0][m].push(tf * 1e3);
                    continue;
                }
                poly::backward(
                    q.view(),
                    k.view(),
                    v.view(),
                    &f,
                    d_o.view(),
                    GradientKind::Substituted,
                    &c,
                )?;
                let tb = t.elapsed().as_secs_f64();
                add(&mut prof[1][m]);
                times[0][m].push(tf * 1e3);
                times[1][m].push(tb * 1e3);
            }
        }
        let passes = if only_forward { 1 } else { 2 };
        for (pass, t) in ["forward", "forward+backward"]
            .iter()
            .zip(&times)
            .take(passes)
        {
            let (a, b) = (median(t[0].clone()), median(t[1].clone()));
            println!("| {n} | {rank} | {pass} | {a:.1} | {b:.1} | {:.2} |", b / a);
        }
        if std::env::var_os("POLYATTN_PROFILE").is_some() {
            for (pass, pr) in ["forward", "backward"].iter().zip(&prof).take(passes) {
                for (mask, t) in ["none", "causal"].iter().zip(pr) {
                    println!("profile n={n} {pass} {mask} (ms per run, {reps} runs):");
                    for (name, x) in poly::lowrank::profile::NAMES.iter().zip(t) {
                        println!("  {name:40} {:8.1}", x * 1e3 / reps as f64);
                    }
                }
            }
        }
    }
    Ok(())
}
