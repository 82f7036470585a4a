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

struct Args {
    engine: String,
    n: usize,
    d: usize,
    heads: usize,
    causal: bool,
    f64: bool,
    reps: usize,
    eps: f64,
    degree: Option<usize>,
    qk_scale: f64,
    chunk: Option<usize>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        engine: "exact".into(),
        n: 1024,
        d: 64,
        heads: 1,
        causal: false,
        f64: false,
        reps: 5,
        eps: 1e-3,
        degree: None,
        qk_scale: 1.0,
        chunk: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or(format!("{flag} needs a value"));
        let num = |s: String| s.parse::<f64>().map_err(|e| format!("{s}: {e}"));
        match flag.as_str() {
            "--engine" => a.engine = val()?,
            "--n" => a.n = num(val()?)? as usize,
            "--d" => a.d = num(val()?)? as usize,
            "--heads" => a.heads = num(val()?)? as usize,
            "--reps" => a.reps = (num(val()?)? as usize).max(1),
            "--eps" => a.eps = num(val()?)?,
            "--degree" => a.degree = Some(num(val()?)? as usize),
            "--qk-scale" => a.qk_scale = num(val()?)?,
            "--causal" => a.causal = true,
            "--chunk" => a.chunk = Some(num(val()?)? as usize),
            "--f64" => a.f64 = true,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(a)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn tensor<T: Real>(r: &mut SplitMix64, a: &Args, scale: f64) -> Tensor3<T> {
    let data = r
        .normal_vec(a.heads * a.n * a.d, scale)
        .into_iter()
        .map(T::from_f64)
        .collect();
    Tensor3::from_vec(a.heads, a.n, a.d, data).expect("shape")
}

fn run<T: Real>(a: &Args) -> Result<String, String> {
    let mut r = SplitMix64::new(7);
    let (q, k) = (
        tensor::<T>(&mut r, a, a.qk_scale),
        tensor::<T>(&mut r, a, a.qk_scale),
    );
    let (v, d_o) = (tensor::<T>(&mut r, a, 1.0), tensor::<T>(&mut r, a, 1.0));
    let mask = if a.causal {
        Mask::CausalTopLeft
    } else {
        Mask::None
    };
    let (mut fwd_s, mut both_s, mut bwd_s) = (Vec::new(), Vec::new(), Vec::new());
    let mut extra = String::new();
    for rep in 0..=a.reps {
        let (tf, tb) = match a.engine.as_str() {
            "exact" => {
                let cfg = AttentionConfig { scale: None, mask };
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
                extra = format!(
                    ", \"degree\": {}, \"rank\": {}, \"radius\": {:.4}, \"bound_o\": {:e}",
                    p.degree, p.rank, p.radius, bound
                );
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
    Ok(format!(
        "{{\"engine\": \"{}\", \"dtype\": \"{}\", \"n\": {}, \"d\": {}, \"heads\": {}, \"causal\": {}, \"fwd_ms\": {:.4}, \"fwd_bwd_ms\": {:.4}, \"bwd_ms\": {:.4}, \"fwd_gflops\": {:.2}, \"fwd_bwd_gflops\": {:.2}{extra}}}",
        a.engine,
        T::DTYPE,
        a.n,
        a.d,
        a.heads,
        a.causal,
        1e3 * median(fwd_s.clone()),
        1e3 * median(both_s.clone()),
        1e3 * median(bwd_s),
        fwd_flops / median(fwd_s) / 1e9,
        3.5 * fwd_flops / median(both_s) / 1e9,
    ))
}

fn main() {
    let out = parse().and_then(|a| {
        if a.f64 {
            run::<f64>(&a)
        } else {
            run::<f32>(&a)
        }
    });
    match out {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("time_attention: {e}");
            std::process::exit(2);
        }
    }
}
