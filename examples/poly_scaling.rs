//! Times the polynomial engine (f64, d = 8, degree 3, R ~ 1, one head) at n = 2^8 ..
//! 2^16, no mask and causal, and prints the degree and rank the certified planner
//! picks for eps = 1e-6 on O at a few (d, R). The README's tables come from
//! `cargo run --release --example poly_scaling`.

use polyattn::attention::poly::{self, Accuracy, GradientKind, PolyConfig};
use polyattn::attention::Mask;
use polyattn::rng::SplitMix64;
use polyattn::tensor::Matrix;
use std::time::Instant;

fn inputs(n: usize, d: usize, q_scale: f64) -> [Matrix<f64>; 4] {
    let mut r = SplitMix64::new(1);
    let s = 1.0 / (d as f64).sqrt();
    let mut m = |sc: f64| Matrix::from_vec(n, d, r.normal_vec(n * d, sc)).unwrap();
    [m(s * q_scale), m(s), m(1.0), m(1.0)]
}

fn main() -> Result<(), polyattn::Error> {
    println!("| n | mask | forward | backward | forward us/token |");
    println!("|--:|---|--:|--:|--:|");
    for log2n in [10, 12, 14, 16] {
        let n = 1usize << log2n;
        let [q, k, v, g] = inputs(n, 8, 1.0);
        for mask in [Mask::None, Mask::CausalTopLeft] {
            let cfg = PolyConfig {
                mask,
                accuracy: Accuracy::Degree(3),
                max_cost_ratio: f64::INFINITY,
                ..PolyConfig::default()
            };
            let t = Instant::now();
            let f = poly::forward(q.view(), k.view(), v.view(), &cfg)?;
            let tf = t.elapsed().as_secs_f64();
            let t = Instant::now();
            poly::backward(
                q.view(),
                k.view(),
                v.view(),
                &f,
                g.view(),
                GradientKind::Substituted,
                &cfg,
            )?;
            let tb = t.elapsed().as_secs_f64();
            println!(
                "| {n} | {} | {:.1} ms | {:.1} ms | {:.2} |",
                mask.name(),
                tf * 1e3,
                tb * 1e3,
                tf * 1e6 / n as f64
            );
        }
    }
    println!("\n| d | R | degree | rank | certified bound on max abs O error |");
    println!("|--:|--:|--:|--:|--:|");
    for d in [4, 8, 16] {
        for radius in [0.5, 1.0, 2.0, 4.0] {
            let [q0, k, v, _] = inputs(256, d, 1.0);
            let f0 = poly::forward(
                q0.view(),
                k.view(),
                v.view(),
                &PolyConfig {
                    accuracy: Accuracy::Degree(1),
                    ..PolyConfig::default()
                },
            )?;
            let s = radius / f0.plan.regime.radius;
            let q = Matrix::from_vec(256, d, q0.as_slice().iter().map(|x| x * s).collect())?;
            let cfg = PolyConfig {
                accuracy: Accuracy::Eps(1e-6),
                max_cost_ratio: f64::INFINITY,
                ..PolyConfig::default()
            };
            match poly::forward(q.view(), k.view(), v.view(), &cfg) {
                Ok(f) => println!(
                    "| {d} | {radius} | {} | {} | {:.1e} |",
                    f.plan.regime.degree,
                    f.plan.regime.rank,
                    f.bound.max_total()
                ),
                Err(e) => println!("| {d} | {radius} | refused | | {e} |"),
            }
        }
    }
    Ok(())
}
