//! `polyattn demo`: the crate's story on embedded seeded problems, in under a minute:
//! the exact engine on a multi-head causal problem (timed, sampled rows certified
//! against the MPFR reference), then the polynomial engine where it pays
//! ([`super::demo_model`]: a certified head and a multi-layer model, both engines).

use polyattn::attention::{exact, AttentionConfig, Mask, Problem};
use polyattn::error::Result;
use polyattn::rng::SplitMix64;
use polyattn::scalar::Real;
use polyattn::tensor::Tensor3;
use std::time::Instant;

/// Arguments of `polyattn demo` (defaults: the embedded problem).
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Heads.
    #[arg(long, default_value_t = 8)]
    pub heads: usize,
    /// Sequence length (queries = keys).
    #[arg(long, default_value_t = 2048)]
    pub n: usize,
    /// Head dimension.
    #[arg(long, default_value_t = 64)]
    pub d: usize,
    /// Seed of the random inputs.
    #[arg(long, default_value_t = 2024)]
    pub seed: u64,
    /// Rows certified per dtype (spread over heads and positions).
    #[arg(long, default_value_t = 6)]
    pub samples: usize,
    /// MPFR precision of the reference, in bits.
    #[arg(long, default_value_t = 128)]
    pub prec: u32,
    /// Sequence length of the multi-layer model part.
    #[arg(long, default_value_t = 8192)]
    pub model_n: usize,
    /// Layers of the multi-layer model part.
    #[arg(long, default_value_t = 2)]
    pub model_layers: usize,
    /// Folder for the demo's report files.
    #[arg(long, default_value = "results/demo")]
    pub out: std::path::PathBuf,
}

/// The accepted range of `--prec`: below 16 bits the enclosures say nothing useful
/// about f32 results; above 4096 bits a row's enclosure costs minutes.
const MIN_PREC: u32 = 16;
/// See [`MIN_PREC`].
const MAX_PREC: u32 = 4096;

/// Seeded inputs: Q, K, V, dO with N(0, 1) entries, `[heads, n, d]`.
struct Inputs {
    q: Vec<f64>,
    k: Vec<f64>,
    v: Vec<f64>,
    d_o: Vec<f64>,
}

/// Runs the demo in f32 and f64 and prints the tables.
pub fn run(a: &DemoArgs) -> Result<()> {
    polyattn::tensor::check_nonempty("the demo problem [heads, n, d]", &[a.heads, a.n, a.d])?;
    let len = polyattn::tensor::checked_alloc_len(
        "the demo problem [heads, n, d]",
        &[a.heads, a.n, a.d],
    )?;
    polyattn::tensor::checked_alloc_len("the demo model's input [n, d_model]", &[a.model_n, 16])?;
    // Peak: q, k, v, dO in f64 plus their f32 copies, outputs and gradients of both
    // dtypes and the reference's sums (about 16 f64 arrays of heads x n x d), or the
    // model part's activations and gradients (about 40 values of d_model = 16 per
    // token and layer, in f64, for each of the two engines' runs).
    let head_peak = 16.0 * 8.0 * len as f64;
    let model_peak = 2.0 * 8.0 * 40.0 * 16.0 * a.model_n as f64 * a.model_layers.max(1) as f64;
    super::check_memory("polyattn demo", head_peak.max(model_peak))?;
    if !(MIN_PREC..=MAX_PREC).contains(&a.prec) {
        return Err(polyattn::error::Error::InvalidParameter {
            name: "--prec",
            value: a.prec.to_string(),
            reason: format!("the MPFR precision must be in {MIN_PREC}..={MAX_PREC} bits"),
        });
    }
    if a.samples > a.heads.saturating_mul(a.n) {
        return Err(polyattn::error::Error::InvalidParameter {
            name: "--samples",
            value: a.samples.to_string(),
            reason: format!("there are only heads x n = {} rows", a.heads * a.n),
        });
    }
    let mut rng = SplitMix64::new(a.seed);
    let inputs = Inputs {
        q: rng.normal_vec(len, 1.0),
        k: rng.normal_vec(len, 1.0),
        v: rng.normal_vec(len, 1.0),
        d_o: rng.normal_vec(len, 1.0),
    };
    let config = AttentionConfig {
        scale: None,
        mask: Mask::CausalTopLeft,
        softcap: None,
    };
    outln!(
        "polyattn demo: exact attention, {} heads x n = {} x d = {}, causal, tau = 1/sqrt(d), seed {}, {} threads",
        a.heads,
        a.n,
        a.d,
        a.seed,
        rayon::current_num_threads()
    );
    outln!("Q, K, V, dO entries ~ N(0, 1); FLOPs counted as FlashAttention does (causal: half).\n");
    outln!(
        "{:<5} {:>10} {:>10} {:>12} {:>12}",
        "dtype",
        "fwd ms",
        "bwd ms",
        "fwd GFLOP/s",
        "bwd GFLOP/s"
    );
    let r32 = run_dtype::<f32>(a, &inputs, &config)?;
    let r64 = run_dtype::<f64>(a, &inputs, &config)?;
    certify_table(a, &[r32, r64])?;
    super::demo_model::run(a.model_n, a.model_layers, a.seed, &a.out)
}

/// What one dtype's run produced, for the certification table.
struct DtypeRun {
    #[cfg_attr(not(feature = "certify"), allow(dead_code))]
    dtype: &'static str,
    #[cfg_attr(not(feature = "certify"), allow(dead_code))]
    certs: Vec<(usize, RowCert)>,
}

#[cfg(feature = "certify")]
type RowCert = crate::certify::RowCertificate;
#[cfg(not(feature = "certify"))]
type RowCert = ();

fn run_dtype<T: Real>(a: &DemoArgs, x: &Inputs, config: &AttentionConfig) -> Result<DtypeRun> {
    let cast = |v: &[f64]| {
        Tensor3::from_vec(
            a.heads,
            a.n,
            a.d,
            v.iter().map(|&z| T::from_f64(z)).collect(),
        )
    };
    let (q, k, v, d_o) = (cast(&x.q)?, cast(&x.k)?, cast(&x.v)?, cast(&x.d_o)?);
    let t0 = Instant::now();
    let fwd = exact::forward_multihead(&q, &k, &v, config)?;
    let t_fwd = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let g = exact::backward_multihead(&q, &k, &v, &fwd, &d_o, config)?;
    let t_bwd = t1.elapsed().as_secs_f64();
    let flops_fwd = 4.0 * (a.n as f64).powi(2) * a.d as f64 * a.heads as f64 / 2.0;
    outln!(
        "{:<5} {:>10.1} {:>10.1} {:>12.2} {:>12.2}",
        T::DTYPE,
        t_fwd * 1e3,
        t_bwd * 1e3,
        flops_fwd / t_fwd / 1e9,
        2.5 * flops_fwd / t_bwd / 1e9
    );
    #[cfg_attr(not(feature = "certify"), allow(unused_mut))]
    let mut certs = Vec::new();
    #[cfg(feature = "certify")]
    for s in 0..a.samples {
        // Spread the sample over heads and over the sequence, ending at the last row.
        let h = s % a.heads;
        let row = if a.samples <= 1 {
            a.n - 1
        } else {
            (a.n - 1) * s / (a.samples - 1)
        };
        let p = Problem::new(q.head(h), k.head(h), v.head(h), config)?;
        let (d, d_v) = (a.d, a.d);
        let vals = crate::certify::RowValues {
            o: &fwd.o.head(h).row(row)[..d_v],
            lse: fwd.lse.row(h)[row],
            dq: &g.dq.head(h).row(row)[..d],
            d_o: d_o.head(h).row(row),
        };
        certs.push((h, crate::certify::certify_row(&p, row, vals, a.prec)?));
    }
    #[cfg(not(feature = "certify"))]
    let _ = (&g, Problem::new(q.head(0), k.head(0), v.head(0), config)?);
    Ok(DtypeRun {
        dtype: T::DTYPE,
        certs,
    })
}

#[cfg(feature = "certify")]
fn certify_table(a: &DemoArgs, runs: &[DtypeRun]) -> Result<()> {
    outln!(
        "\nCertified errors of sampled rows against a {}-bit MPFR interval enclosure of the exact result",
        a.prec
    );
    outln!("(each figure is a proven upper bound on |computed - exact|, max over the row):\n");
    outln!(
        "{:<5} {:>4} {:>6} {:>5} {:>11} {:>9} {:>11} {:>11} {:>9}",
        "dtype",
        "head",
        "row",
        "keys",
        "O err",
        "max|O|",
        "lse err",
        "dQ err",
        "max|dQ|"
    );
    for r in runs {
        for (h, c) in &r.certs {
            outln!(
                "{:<5} {:>4} {:>6} {:>5} {:>11.2e} {:>9.3} {:>11.2e} {:>11.2e} {:>9.3}",
                r.dtype,
                h,
                c.row,
                c.keys,
                c.o_err,
                c.o_max,
                c.lse_err,
                c.dq_err,
                c.dq_max
            );
        }
    }
    outln!("\ndK and dV are certified in the test suite (they need every query row).");
    Ok(())
}

#[cfg(not(feature = "certify"))]
fn certify_table(_: &DemoArgs, _: &[DtypeRun]) -> Result<()> {
    outln!("\n(built without feature `certify`: no MPFR reference, no certified errors)");
    Ok(())
}
