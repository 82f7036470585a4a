//! `polyattn attention`: forward (and backward) on tensors from a safetensors file.
//!
//! Input tensors: `q` `[.., n_q, d]`, `k` `[.., n_k, d]`, `v` `[.., n_k, d_v]`, optional
//! `do` `[.., n_q, d_v]`, all of one dtype (F16, BF16, F32 or F64; F16 and BF16 are
//! computed in f32), with the same leading dimensions (none,
//! `[heads]` or `[batch, heads]`), and an optional additive score bias `bias`
//! `[n_q, n_k]` (shared by every head) or `[.., n_q, n_k]` (q's leading dimensions):
//! finite or `-inf` (hides the key; PyTorch's float `attn_mask`); the polynomial engine
//! takes it only as key padding (every column all 0 or all `-inf`). Output tensors, in the input's dtype: `o`
//! `[.., n_q, d_v]`, `lse` `[.., n_q]`, and with `do`: `dq`, `dk`, `dv` shaped like
//! `q`, `k`, `v`. With the polynomial engine, also F64 entrywise bounds `o_bound` (and
//! `dq_bound`, `dk_bound`, `dv_bound`) on the distance to exact attention.
//! Metadata strings: `engine` (the one used), `engine_requested`, `mask`, `scale`,
//! `dtype`, `polyattn_version`; with the polynomial engine also `gradient`, `degree`,
//! `rank`, `radius`, `entry_bound`, `sqrt_ln_n`, `eps_poly`, `bound_o` (and
//! `bound_dq`, `bound_dk`, `bound_dv`): maxima over heads; `heads_json`: per head;
//! with `auto` falling back to exact, `auto_reason`.

use super::{AttentionArgs, EngineArg};
use crate::inputs::shapes::HeadShape;
use crate::inputs::stacks::{input_dtype, load_all, Loaded};
use polyattn::attention::poly::{self, PolyConfig};
use polyattn::attention::{exact, AttentionConfig};
use polyattn::error::{Error, Result};
use polyattn::io::{AnyTensor, DType, TensorFile};
use polyattn::scalar::Real;

use std::collections::HashMap;
use std::io::Write;

type Outputs = (Vec<(String, AnyTensor)>, HashMap<String, String>);

/// Runs the subcommand: read, compute, write atomically.
pub fn run(args: &AttentionArgs) -> Result<()> {
    polyattn::output::check_output(&args.output, &[&args.input])?;
    let file = TensorFile::read(&args.input)?;
    let dtype = input_dtype(&file)?;
    // Peak: the inputs and the outputs of the same sizes (o like v, dq/dk/dv like
    // q/k/v), each held about four times (the file's values, the head stacks, the
    // output tensors, the serialised file).
    let values: usize = ["q", "k", "v", "do"]
        .iter()
        .filter_map(|n| file.get(n).ok())
        .map(|t| t.shape().iter().product::<usize>())
        .sum();
    // Half-precision inputs are computed in f32.
    let width = if dtype == DType::F64 { 8.0 } else { 4.0 };
    // The polynomial engine's range form (a sliding window) holds a run's Y, up to
    // n_q rows of the widest backward payload ((d_v + 1) d + d_v + 3 d, f64), per head
    // in flight (at most one per thread).
    let range_form = match (&args.engine, args.mask.mask().is_prefix()) {
        (super::EngineArg::Exact, _) | (_, true) => 0.0,
        _ => {
            let dims = |n: &str, i: usize| {
                file.get(n)
                    .ok()
                    .and_then(|t| t.shape().iter().rev().nth(i).copied())
            };
            let (n_q, d, d_v) = (
                dims("q", 1).unwrap_or(0),
                dims("q", 0).unwrap_or(0),
                dims("v", 0).unwrap_or(0),
            );
            let p = (d_v + 1) * d + d_v + 3 * d;
            8.0 * (n_q * p) as f64 * rayon::current_num_threads() as f64
        }
    };
    super::check_memory(
        "polyattn attention",
        8.0 * values as f64 * width + range_form,
    )?;
    let (mut tensors, mut metadata) = match dtype {
        DType::F16 | DType::BF16 => compute::<f32>(&file, args)?,
        DType::F32 => compute::<f32>(&file, args)?,
        DType::F64 => compute::<f64>(&file, args)?,
    };
    if matches!(dtype, DType::F16 | DType::BF16) {
        // Computed in f32 (the inputs convert exactly); results stored in the input's
        // dtype, rounded to nearest even (the `_bound` tensors stay F64).
        for (name, t) in tensors.iter_mut() {
            if !name.ends_with("_bound") {
                *t = AnyTensor::from_f64_rounded(dtype, t.shape().to_vec(), &t.to_f64_vec());
            }
        }
    }
    metadata.insert("mask".into(), args.mask.mask().name());
    metadata.insert("dtype".into(), dtype.name().into());
    metadata.insert("polyattn_version".into(), env!("CARGO_PKG_VERSION").into());
    metadata.insert(
        "engine_requested".into(),
        format!("{:?}", args.engine).to_lowercase(),
    );
    polyattn::io::write_tensors(&args.output, &tensors, &metadata)
}

fn compute<T: Real>(file: &TensorFile, args: &AttentionArgs) -> Result<Outputs> {
    let x = load_all::<T>(file)?;
    compute_loaded(&x, args).map_err(|e| x.in_file_terms(e))
}

fn compute_loaded<T: Real>(x: &Loaded<T>, args: &AttentionArgs) -> Result<Outputs> {
    let attention = AttentionConfig {
        scale: args.scale,
        mask: args.mask.mask(),
        softcap: super::softcap_of(args.softcap),
    };
    let tau = T::from_f64(attention.scale_for(x.shapes[0].cols)).to_f64();
    let mut poly_cfg = args.poly.config(args.mask.mask(), args.scale);
    let (out, mut meta) = match args.engine {
        EngineArg::Exact => run_exact(x, &attention)?,
        EngineArg::Poly => run_poly(x, &poly_cfg, args)?,
        EngineArg::Auto => {
            // Poly only where certified and predicted faster than exact.
            poly_cfg.max_cost_ratio = args.poly.max_cost_ratio.unwrap_or(1.0);
            poly_cfg.cost_floor_flops = 0.0;
            match run_poly(x, &poly_cfg, args) {
                Ok(r) => r,
                Err(Error::PolyRefused { reason, .. }) => {
                    let (o, mut m) = run_exact(x, &attention)?;
                    m.insert(
                        "auto_reason".into(),
                        format!("polynomial engine refused: {reason}"),
                    );
                    (o, m)
                }
                Err(e) => return Err(e),
            }
        }
    };
    meta.insert("scale".into(), format!("{tau:e}"));
    if let Some(c) = super::softcap_of(args.softcap) {
        meta.insert("softcap".into(), format!("{:e}", T::from_f64(c).to_f64()));
    }
    Ok((out, meta))
}

/// Output shapes: O and lse from q/v, gradients like q, k, v.
fn out_shapes(s: &[HeadShape; 3]) -> [Vec<usize>; 5] {
    let [sq, sk, sv] = s;
    [
        sq.with_tail(&[sq.rows, sv.cols]),
        sq.with_tail(&[sq.rows]),
        sq.with_tail(&[sq.rows, sq.cols]),
        sk.with_tail(&[sk.rows, sk.cols]),
        sv.with_tail(&[sv.rows, sv.cols]),
    ]
}

fn run_exact<T: Real>(x: &Loaded<T>, cfg: &AttentionConfig) -> Result<Outputs> {
    let [so, slse, sdq, sdk, sdv] = out_shapes(&x.shapes);
    let fwd = exact::forward_multihead_with_bias(&x.q, &x.k, &x.v, x.bias.as_ref(), cfg)?;
    let mut out = vec![
        (
            "o".to_string(),
            AnyTensor::from_real(so, fwd.o.as_slice().to_vec()),
        ),
        (
            "lse".to_string(),
            AnyTensor::from_real(slse, fwd.lse.as_slice().to_vec()),
        ),
    ];
    if let Some(d_o) = &x.d_o {
        let b = x.bias.as_ref();
        let g = exact::backward_multihead_with_bias(&x.q, &x.k, &x.v, b, &fwd, d_o, cfg)?;
        out.push(("dq".into(), AnyTensor::from_real(sdq, g.dq.into_vec())));
        out.push(("dk".into(), AnyTensor::from_real(sdk, g.dk.into_vec())));
        out.push(("dv".into(), AnyTensor::from_real(sdv, g.dv.into_vec())));
    }
    Ok((
        out,
        HashMap::from([("engine".to_string(), "exact".to_string())]),
    ))
}

fn concat<T: Clone>(parts: impl Iterator<Item = Vec<T>>) -> Vec<T> {
    parts.flatten().collect()
}

fn run_poly<T: Real>(x: &Loaded<T>, cfg: &PolyConfig, args: &AttentionArgs) -> Result<Outputs> {
    let [so, slse, sdq, sdk, sdv] = out_shapes(&x.shapes);
    x.check_poly_takes(cfg, super::softcap_of(args.softcap))?;
    let fwd = poly::forward_multihead_with_bias(&x.q, &x.k, &x.v, x.bias.as_ref(), cfg)?;
    let max = |f: &dyn Fn(usize) -> f64| (0..fwd.len()).map(f).fold(0.0f64, f64::max);
    let mut meta = HashMap::from([
        ("engine".to_string(), "poly".to_string()),
        (
            "degree".into(),
            max(&|h| fwd[h].plan.regime.degree as f64).to_string(),
        ),
        (
            "rank".into(),
            max(&|h| fwd[h].plan.regime.rank as f64).to_string(),
        ),
        (
            "radius".into(),
            format!("{:e}", max(&|h| fwd[h].plan.regime.radius)),
        ),
        (
            "entry_bound".into(),
            format!("{:e}", max(&|h| fwd[h].plan.regime.entry_bound)),
        ),
        (
            "sqrt_ln_n".into(),
            format!("{:e}", fwd[0].plan.regime.sqrt_ln_n),
        ),
        (
            "eps_poly".into(),
            format!("{:e}", max(&|h| fwd[h].plan.regime.eps_poly)),
        ),
        ("polynomial".into(), cfg.kind.name().into()),
        (
            "bound_o".into(),
            format!("{:e}", max(&|h| fwd[h].bound.max_total())),
        ),
        (
            "predicted_cost_ratio".into(),
            format!(
                "{:e}",
                max(&|h| 1.0 / fwd[h].plan.regime.predicted_speedup())
            ),
        ),
    ]);
    if x.bias.is_some() {
        // The engine took the bias as key padding (it refuses any other).
        let hidden: Vec<usize> = fwd.iter().map(|f| f.hidden_keys()).collect();
        meta.insert("key_padding_hidden_keys".into(), format!("{hidden:?}"));
    }
    let ratio = max(&|h| 1.0 / fwd[h].plan.regime.predicted_speedup());
    if ratio > 1.0 {
        // Not an error: the user named the engine; say what it costs.
        let _ = writeln!(
            std::io::stderr(),
            "polyattn: note: the polynomial engine's predicted cost is {ratio:.1}x the exact engine's (degree {}, rank {})",
            max(&|h| fwd[h].plan.regime.degree as f64),
            max(&|h| fwd[h].plan.regime.rank as f64)
        );
    }
    let mut heads: Vec<serde_json::Value> = fwd
        .iter()
        .map(|f| {
            serde_json::json!({
                "regime": f.plan.regime,
                "bound_o": f.bound.max_total(),
                "bound_o_poly": f.bound.max_poly(),
            })
        })
        .collect();
    let mut out = vec![
        (
            "o".to_string(),
            AnyTensor::from_real(
                so.clone(),
                concat(fwd.iter().map(|f| f.o.as_slice().to_vec())),
            ),
        ),
        (
            "lse".to_string(),
            AnyTensor::from_real(slse, concat(fwd.iter().map(|f| f.lse.clone()))),
        ),
        (
            "o_bound".to_string(),
            AnyTensor::F64 {
                shape: so,
                data: concat(fwd.iter().map(|f| f.bound.total.clone())),
            },
        ),
    ];
    if let Some(d_o) = &x.d_o {
        let kind = args.poly.gradient.into();
        let g = poly::backward_multihead(&x.q, &x.k, &x.v, &fwd, d_o, kind, cfg)?;
        let group = x.q.heads() / x.k.heads().max(1);
        meta.insert("gradient".into(), kind.name().into());
        for (name, shape) in [("dq", sdq), ("dk", sdk), ("dv", sdv)] {
            let pick = |h: &'_ poly::PolyGradients<T>| match name {
                "dq" => (h.dq.as_slice().to_vec(), h.bound_dq.clone()),
                "dk" => (h.dk.as_slice().to_vec(), h.bound_dk.clone()),
                _ => (h.dv.as_slice().to_vec(), h.bound_dv.clone()),
            };
            let (mut vals, mut bounds): (Vec<Vec<T>>, Vec<poly::Bounds>) =
                g.iter().map(pick).unzip();
            if name != "dq" && group > 1 {
                (vals, bounds) = poly::bound::sum_groups(vals, bounds, group);
            }
            out.push((
                name.into(),
                AnyTensor::from_real(shape.clone(), concat(vals.into_iter())),
            ));
            let data = concat(bounds.iter().map(|b| b.total.clone()));
            out.push((format!("{name}_bound"), AnyTensor::F64 { shape, data }));
            let m = bounds
                .iter()
                .map(poly::Bounds::max_total)
                .fold(0.0f64, f64::max);
            meta.insert(format!("bound_{name}"), format!("{m:e}"));
            // Query head h (batch-major, as in `fwd`) uses key head h / group for dK
            // and dV once summed; dQ stays per query head.
            let per = if name != "dq" && group > 1 { group } else { 1 };
            for (h, j) in heads.iter_mut().enumerate() {
                if let Some(b) = bounds.get(h / per) {
                    j[format!("bound_{name}")] = serde_json::json!(b.max_total());
                }
            }
        }
    }
    meta.insert(
        "heads_json".into(),
        serde_json::Value::Array(heads).to_string(),
    );
    Ok((out, meta))
}
