//! Timings of the f16 CUDA kernels with certified errors: exact forward and
//! backward at d = 64, 128 and n = 4k .. 64k (TFLOP/s, FlashAttention's flop count:
//! forward 4 n_q n_k d, halved when causal, backward 2.5 x forward), and the
//! polynomial engine at d = 8, 16 and n = 16k .. 256k. Each exact configuration gets
//! two rows certified against 128-bit MPFR (`certify::certify_row`), each polynomial
//! one its f16 bound (`cuda::allowance::poly_bounds`). Writes
//! `results/cuda/bench.json`. Run by `scripts/cuda_device_check.sh`:
//!
//! ```sh
//! cargo run --release --features cuda --example cuda_bench [-- --quick]
//! ```
//! Without the feature, or without a device, it says so and exits 0.

#[cfg(feature = "cuda")]
mod bench {
    use polyattn::attention::poly::{Accuracy, GradientKind, PolyConfig};
    use polyattn::attention::{AttentionConfig, Mask, Problem};
    use polyattn::cuda::allowance::poly_bounds;
    use polyattn::cuda::backend::ExactArgs;
    use polyattn::cuda::exact::to_half;
    use polyattn::cuda::launch::mask_code;
    use polyattn::cuda::{self, Backend, CudaDevice};
    use polyattn::rng::SplitMix64;
    use polyattn::tensor::{Matrix, Tensor3};
    use polyattn_tools::certify::{certify_row, RowValues};
    use std::time::Instant;

    fn normal(r: &mut SplitMix64, len: usize, s: f64) -> Vec<f32> {
        r.normal_vec(len, s).into_iter().map(|x| x as f32).collect()
    }

    /// Median of `reps` timings of `f` (seconds).
    fn time(reps: usize, mut f: impl FnMut() -> polyattn::Result<()>) -> polyattn::Result<f64> {
        f()?; // warm-up (and NVRTC compilation on first use)
        let mut t = Vec::with_capacity(reps);
        for _ in 0..reps {
            let s = Instant::now();
            f()?;
            t.push(s.elapsed().as_secs_f64());
        }
        t.sort_by(|a, b| a.total_cmp(b));
        Ok(t[t.len() / 2])
    }

    pub fn run(quick: bool) -> polyattn::Result<()> {
        let dev = match CudaDevice::new(0) {
            Ok(d) => d,
            Err(e) => {
                println!("skipped: no CUDA device ({e})");
                return Ok(());
            }
        };
        println!("device: {}", dev.describe());
        let mut json = Vec::new();
        let ns: &[usize] = if quick {
            &[4096]
        } else {
            &[4096, 8192, 16384, 32768, 65536]
        };
        println!("| d | n | mask | heads | fwd ms | fwd TFLOP/s | bwd ms | bwd TFLOP/s | certified err O (2 rows) | dQ |");
        println!("|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|");
        for &d in &[64usize, 128] {
            for &n in ns {
                for mask in [Mask::None, Mask::CausalTopLeft] {
                    let heads = (65536 / n).clamp(1, 16);
                    let mut r = SplitMix64::new(n as u64 + d as u64);
                    let len = heads * n * d;
                    let t3 = |x: Vec<f32>| Tensor3::from_vec(heads, n, d, x);
                    let (q, k, v, g) = (
                        t3(normal(&mut r, len, 1.0))?,
                        t3(normal(&mut r, len, 1.0))?,
                        t3(normal(&mut r, len, 1.0))?,
                        t3(normal(&mut r, len, 1.0))?,
                    );
                    let cfg = AttentionConfig { scale: None, mask };
                    // Kernel timings through the backend (inputs already on the device).
                    let a = ExactArgs {
                        heads,
                        n_q: n,
                        n_k: n,
                        d,
                        d_v: d,
                        tau: (1.0 / (d as f64).sqrt()) as f32,
                        mask: mask_code(mask)?,
                    };
                    let up = |x: &Tensor3<f32>| dev.upload_half(&to_half(x.as_slice()));
                    let (qd, kd, vd, gd) = (up(&q)?, up(&k)?, up(&v)?, up(&g)?);
                    let mut o = dev.alloc_half(len)?;
                    let mut lse = dev.alloc_float(heads * n)?;
                    let mut delta = dev.alloc_float(heads * n)?;
                    let (mut dq, mut dk, mut dv) = (
                        dev.alloc_half(len)?,
                        dev.alloc_half(len)?,
                        dev.alloc_half(len)?,
                    );
                    let reps = if quick { 2 } else { 5 };
                    let t_f = time(reps, || {
                        dev.exact_forward(&a, (&qd, &kd, &vd), &mut o, &mut lse)
                    })?;
                    let t_b = time(reps, || {
                        dev.row_delta(heads * n, d, &gd, &o, &mut delta)?;
                        dev.exact_backward(
                            &a,
                            (&qd, &kd, &vd),
                            &gd,
                            (&lse, &delta),
                            &mut dq,
                            &mut dk,
                            &mut dv,
                        )
                    })?;
                    let causal = if mask == Mask::None { 1.0 } else { 0.5 };
                    let flops = 4.0 * (n * n * d * heads) as f64 * causal;
                    // Certified error of two rows of head 0 (host API results).
                    let f = cuda::exact::forward_multihead(&dev, &q, &k, &v, &cfg)?;
                    let gr = cuda::exact::backward_multihead(&dev, &q, &k, &v, &f, &g, &cfg)?;
                    let p = Problem::new(q.head(0), k.head(0), v.head(0), &cfg)?;
                    let (mut e_o, mut e_dq): (f64, f64) = (0.0, 0.0);
                    for row in [0, n - 1] {
                        let vals = RowValues {
                            o: f.o.head(0).row(row),
                            lse: f.lse.row(0)[row],
                            dq: gr.dq.head(0).row(row),
                            d_o: g.head(0).row(row),
                        };
                        let c = certify_row(&p, row, vals, 128)?;
                        e_o = e_o.max(c.o_err);
                        e_dq = e_dq.max(c.dq_err);
                    }
                    println!(
                        "| {d} | {n} | {} | {heads} | {:.2} | {:.1} | {:.2} | {:.1} | {e_o:.2e} | {e_dq:.2e} |",
                        mask.name(),
                        t_f * 1e3,
                        flops / t_f / 1e12,
                        t_b * 1e3,
                        2.5 * flops / t_b / 1e12
                    );
                    json.push(serde_json::json!({
                        "engine": "exact", "d": d, "n": n, "mask": mask.name(), "heads": heads,
                        "forward_s": t_f, "backward_s": t_b,
                        "forward_tflops": flops / t_f / 1e12, "backward_tflops": 2.5 * flops / t_b / 1e12,
                        "certified_err_o_rows": e_o, "certified_err_dq_rows": e_dq,
                    }));
                }
            }
        }
        println!("\n| d | n | degree | rank | fwd ms | bwd ms | certified bound O | dQ |");
        println!("|--:|--:|--:|--:|--:|--:|--:|--:|");
        let pns: &[usize] = if quick {
            &[16384]
        } else {
            &[16384, 65536, 262144]
        };
        for &d in &[8usize, 16] {
            for &n in pns {
                let mut r = SplitMix64::new(7 + n as u64);
                let s = 0.5 / (d as f64).sqrt();
                let m = |r: &mut SplitMix64, sc: f64| Matrix::from_vec(n, d, normal(r, n * d, sc));
                let (q, k, v, g) = (
                    m(&mut r, s)?,
                    m(&mut r, s)?,
                    m(&mut r, 1.0)?,
                    m(&mut r, 1.0)?,
                );
                let cfg = PolyConfig {
                    mask: Mask::CausalTopLeft,
                    accuracy: Accuracy::Eps(1e-3),
                    max_cost_ratio: f64::INFINITY,
                    ..Default::default()
                };
                let res = (|| -> polyattn::Result<()> {
                    let t0 = Instant::now();
                    let f = cuda::poly::forward(&dev, q.view(), k.view(), v.view(), &cfg)?;
                    let t_f = t0.elapsed().as_secs_f64();
                    let t0 = Instant::now();
                    let gr = cuda::poly::backward(
                        &dev,
                        q.view(),
                        k.view(),
                        v.view(),
                        &f,
                        g.view(),
                        GradientKind::Substituted,
                        &cfg,
                    )?;
                    let t_b = t0.elapsed().as_secs_f64();
                    let with_grads = n <= 65536;
                    let bd = poly_bounds(
                        q.view(),
                        k.view(),
                        v.view(),
                        with_grads.then(|| g.view()),
                        &cfg,
                        &f,
                        with_grads.then_some(&gr),
                        0.0,
                    )?;
                    let bdq = bd.grads.as_ref().map_or(f64::NAN, |b| b.0.max_total());
                    println!(
                        "| {d} | {n} | {} | {} | {:.1} | {:.1} | {:.2e} | {bdq:.2e} |",
                        f.plan.regime.degree,
                        f.plan.regime.rank,
                        t_f * 1e3,
                        t_b * 1e3,
                        bd.o.max_total()
                    );
                    json.push(serde_json::json!({
                        "engine": "poly", "d": d, "n": n, "mask": "causal",
                        "degree": f.plan.regime.degree, "rank": f.plan.regime.rank,
                        "forward_s": t_f, "backward_s": t_b,
                        "bound_o": bd.o.max_total(), "bound_dq": bdq,
                    }));
                    Ok(())
                })();
                if let Err(e) = res {
                    println!("| {d} | {n} | - | - | - | - | {e} | |");
                }
            }
        }
        std::fs::create_dir_all("results/cuda").map_err(|e| polyattn::Error::Io {
            action: "write",
            path: "results/cuda".into(),
            source: e,
        })?;
        let text = serde_json::to_string_pretty(&json).unwrap_or_default();
        std::fs::write("results/cuda/bench.json", text).map_err(|e| polyattn::Error::Io {
            action: "write",
            path: "results/cuda/bench.json".into(),
            source: e,
        })?;
        println!("wrote results/cuda/bench.json");
        Ok(())
    }
}

#[cfg(feature = "cuda")]
fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    if let Err(e) = bench::run(quick) {
        eprintln!("cuda_bench: {e}");
        std::process::exit(1);
    }
}

#[cfg(not(feature = "cuda"))]
fn main() {
    println!("cuda_bench needs `--features cuda`");
}
