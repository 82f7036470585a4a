// Times one attention shape through the exact or the polynomial engine and prints one
// JSON line: median forward, forward+backward and backward wall times over `--reps`
// runs (after one warm-up; `bwd_ms` is the median of each run's backward time), the
// FLOPs as FlashAttention counts them (forward 4 n^2 d per head, half when causal;
// backward 2.5x forward), and for the polynomial engine its degree, rank and
// certified bound on max |O~ - O|. Used by `benches/torch_side_by_side.py`
// (which times PyTorch on the same shapes in the same run); threads: `RAYON_NUM_THREADS`.
//
// ```sh
// cargo run --release --example time_attention -- --engine exact --n 4096 --d 64 --causal
// cargo run --release --example time_attention -- --engine poly --n 65536 --d 8 --eps 1e-3
// ```
// Inputs: Q, K, V, dO with N(0, 1) entries (seeded), scaled by `--qk-scale` for Q and K.

use polyattn::attention::poly::{self, Accuracy, GradientKind, PolyConfig};
use polyattn::attention::{exact, AttentionConfig, Mask};
use polyattn::rng::SplitMix64;
use polyattn::scalar::Real;
use polyattn::tensor::Tensor3;
use std::time::Instant;

/// Times one attention shape (see the module doc).
#[derive(Debug, clap::Parser)]
struct Args {
    /// exact or poly.
    #[arg(long, default_value = "exact", value_parser = ["exact", "poly"])]
    engine: String,
    /// Sequence length.
    #[arg(long, default_value_t = 1024)]
    n: usize,
    /// Head dimension.
    #[arg(long, default_value_t = 64)]
    d: usize,
    /// Heads.
    #[arg(long, default_value_t = 1)]
    heads: usize,
    /// Top-left causal mask.
    #[arg(long)]
    causal: bool,
    /// Compute in f64 (default f32).
    #[arg(long)]
    f64: bool,
    /// Timed repetitions after the warm-up.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    reps: u64,
    /// Polynomial engine: target bound on max |O~ - O|.
    #[arg(long, default_value_t = 1e-3)]
    eps: f64,
    /// Polynomial engine: a fixed degree instead of --eps.
    #[arg(long)]
    degree: Option<usize>,
    /// Scale of Q and K's entries.
    #[arg(long, default_value_t = 1.0)]
    qk_scale: f64,
    /// Polynomial engine: chunk length.
    #[arg(long)]
    chunk: Option<usize>,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn tensor<T: Real>(r: &mut SplitMix64, a: &Args, scale: f64) -> polyattn::Result<Tensor3<T>> {
    polyattn::tensor::checked_alloc_len("the inputs [heads, n, d]", &[a.heads, a.n, a.d])?;
    let data = r
        .normal_vec(a.heads * a.n * a.d, scale)
        .into_iter()
        .map(T::from_f64)
        .collect();
    Tensor3::from_vec(a.heads, a.n, a.d, data)
}

fn run<T: Real>(a: &Args) -> Result<serde_json::Value, String> {
    let mut r = SplitMix64::new(7);
    let mut gen = |scale| tensor::<T>(&mut r, a, scale).map_err(|e| e.to_string());
    let (q, k, v, d_o) = (gen(a.qk_scale)?, gen(a.qk_scale)?, gen(1.0)?, gen(1.0)?);
    let mask = if a.causal {
        Mask::CausalTopLeft
    } else {
        Mask::None
    };
    let (mut fwd_s, mut both_s, mut bwd_s) = (Vec::new(), Vec::new(), Vec::new());
    let mut extra = serde_json::Map::new();
    for rep in 0..=a.reps {
        let (tf, tb) = match a.engine.as_str() {
            "exact" => {
                let cfg = AttentionConfig {
                    scale: None,
                    mask,
                    softcap: None,
                };
                let t = Instant::now();
                let f = exact::forward_multihead(&q, &k, &v, &cfg).map_err(|e| e.to_string())?;
                let tf = t.elapsed().as_secs_f64();
                exact::backward_multihead(&q, &k, &v, &f, &d_o, &cfg).map_err(|e| e.to_string())?;
                (tf, t.elapsed().as_secs_f64())
            }
            "poly" => {
                let cfg = PolyConfig {
                    mask,
                    accuracy: a.degree.map_or(Accuracy::Eps(a.eps), Accuracy::Degree),
                    max_cost_ratio: f64::INFINITY,
                    chunk: a.chunk.unwrap_or(PolyConfig::default().chunk),
                    ..PolyConfig::default()
                };
                let t = Instant::now();
                let f = poly::forward_multihead(&q, &k, &v, &cfg).map_err(|e| e.to_string())?;
                let tf = t.elapsed().as_secs_f64();
                poly::backward_multihead(&q, &k, &v, &f, &d_o, GradientKind::Substituted, &cfg)
                    .map_err(|e| e.to_string())?;
                let tb = t.elapsed().as_secs_f64();
                let p = &f[0].plan.regime;
                let bound = f.iter().map(|h| h.bound.max_total()).fold(0.0, f64::max);
                extra = serde_json::json!({
                    "degree": p.degree, "rank": p.rank, "radius": p.radius, "bound_o": bound,
                })
                .as_object()
                .cloned()
                .unwrap_or_default();
                (tf, tb)
            }
            e => return Err(format!("unknown engine {e}")),
        };
        if rep > 0 {
            fwd_s.push(tf);
            both_s.push(tb);
            bwd_s.push(tb - tf);
        }
    }
    let fwd_flops = 4.0 * (a.n * a.n * a.d * a.heads) as f64 * if a.causal { 0.5 } else { 1.0 };
    let (fwd, both) = (median(fwd_s), median(both_s));
    // serde_json writes a non-finite number as null, never as `inf`.
    let mut out = serde_json::json!({
        "engine": a.engine, "dtype": T::DTYPE, "n": a.n, "d": a.d, "heads": a.heads,
        "causal": a.causal, "fwd_ms": 1e3 * fwd, "fwd_bwd_ms": 1e3 * both,
        "bwd_ms": 1e3 * median(bwd_s), "fwd_gflops": fwd_flops / fwd / 1e9,
        "fwd_bwd_gflops": 3.5 * fwd_flops / both / 1e9,
    });
    if let Some(o) = out.as_object_mut() {
        o.extend(extra);
    }
    Ok(out)
}

fn main() {
    use clap::Parser;
    let a = Args::parse();
    let out = if a.f64 {
        run::<f64>(&a)
    } else {
        run::<f32>(&a)
    };
    match out {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("time_attention: {e}");
            std::process::exit(1);
        }
    }
}
