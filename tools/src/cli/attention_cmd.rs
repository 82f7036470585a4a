//! `polyattn attention`: forward (and backward) on tensors from a safetensors file.
//!
//! Input tensors: `q` `[.., n_q, d]`, `k` `[.., n_k, d]`, `v` `[.., n_k, d_v]`, optional
//! `do` `[.., n_q, d_v]`, all of one dtype (F16, BF16, F32 or F64; F16 and BF16 are
//! computed in f32), with the same leading dimensions (none,
//! `[heads]` or `[batch, heads]`), and an optional additive score bias `bias`
//! `[n_q, n_k]` (shared by every head) or `[.., n_q, n_k]` (q's leading dimensions):
//! finite or `-inf` (hides the key), exact engine only (PyTorch's float `attn_mask`). Output tensors, in the input's dtype: `o`
//! `[.., n_q, d_v]`, `lse` `[.., n_q]`, and with `do`: `dq`, `dk`, `dv` shaped like
//! `q`, `k`, `v`. With the polynomial engine, also F64 entrywise bounds `o_bound` (and
//! `dq_bound`, `dk_bound`, `dv_bound`) on the distance to exact attention.
//! Metadata strings: `engine` (the one used), `engine_requested`, `mask`, `scale`,
//! `dtype`, `polyattn_version`; with the polynomial engine also `gradient`, `degree`,
//! `rank`, `radius`, `entry_bound`, `sqrt_ln_n`, `eps_poly`, `bound_o` (and
//! `bound_dq`, `bound_dk`, `bound_dv`): maxima over heads; `heads_json`: per head;
//! with `auto` falling back to exact, `auto_reason`.

use super::shapes::HeadShape;
use super::{AttentionArgs, EngineArg};
use polyattn::attention::poly::{self, PolyConfig};
use polyattn::attention::{exact, AttentionConfig};
use polyattn::error::{Error, Result};
use polyattn::io::{AnyTensor, DType, TensorFile};
use polyattn::scalar::Real;
use polyattn::tensor::{check_finite, check_nonempty, Tensor3};
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
    super::check_memory("polyattn attention", 8.0 * values as f64 * width)?;
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

/// The dtype of `q`, after checking that `k`, `v` and `do` (if present) share it.
pub(crate) fn input_dtype(file: &TensorFile) -> Result<DType> {
    let dtype = file.get("q")?.dtype();
    for name in ["k", "v", "do", "bias"] {
        if matches!(name, "do" | "bias") && !file.contains(name) {
            continue;
        }
        let t = file.get(name)?;
        if t.dtype() != dtype {
            return Err(Error::MixedDtype {
                name: name.into(),
                dtype: t.dtype().name().into(),
                expected: dtype.name().into(),
            });
        }
    }
    Ok(dtype)
}

/// The score bias of the file: the optional `bias` tensor plus, when the file holds
/// `alibi_slopes`, FlashAttention's ALiBi bias ([`with_alibi`]).
fn load_bias<T: Real>(file: &TensorFile, sq: &HeadShape, n_k: usize) -> Result<Option<Tensor3<T>>> {
    let bias = load_bias_tensor::<T>(file, sq, n_k)?;
    let (batch, heads) = match sq.lead.split_last() {
        Some((h, b)) => (b, *h),
        None => (&[][..], 1),
    };
    match crate::inputs::read_alibi_slopes(file, batch, heads)? {
        None => Ok(bias),
        Some(slopes) => with_alibi(&slopes, sq, n_k, bias).map(Some),
    }
}

/// `bias + ALiBi` as `[stack, n_q, n_k]` (one matrix when `q` has no leading
/// dimensions): `slopes` ([`crate::inputs::read_alibi_slopes`]) add FlashAttention's
/// ALiBi bias ([`crate::inputs::add_alibi`]) to the score of query i and key j. The sum is formed in f64 (exact
/// for f32 slopes below n = 2^29, plus the bias entry) and rounded once to the compute
/// dtype, as a `bias` entry is.
fn with_alibi<T: Real>(
    slopes: &[f64],
    sq: &HeadShape,
    n_k: usize,
    bias: Option<Tensor3<T>>,
) -> Result<Tensor3<T>> {
    let (stack, n_q) = (sq.heads()?, sq.rows);
    let data = crate::inputs::add_alibi(slopes, stack, (n_q, n_k), |h, i, j| {
        bias.as_ref().map_or(0.0, |b| {
            b.head(if b.heads() == 1 { 0 } else { h }).row(i)[j].to_f64()
        })
    })?;
    let data = data.into_iter().map(T::from_f64).collect();
    Tensor3::from_vec(stack, n_q, n_k, data)
}

/// The optional `bias` tensor as `[1 or heads, n_q, n_k]`: its leading dimensions are
/// none (one shared matrix) or `q`'s; entries are checked by the engine (finite or
/// `-inf`).
fn load_bias_tensor<T: Real>(
    file: &TensorFile,
    sq: &HeadShape,
    n_k: usize,
) -> Result<Option<Tensor3<T>>> {
    if !file.contains("bias") {
        return Ok(None);
    }
    let (sb, bias) = load_entries::<T>(file, "bias")?;
    if !sb.lead.is_empty() {
        sq.same_lead("bias", &sb)?;
    }
    if (sb.rows, sb.cols) != (sq.rows, n_k) {
        return Err(Error::ShapeMismatch {
            what: "the last two dimensions of `bias`".into(),
            expected: format!("[{}, {n_k}] (n_q, n_k)", sq.rows),
            got: format!("[{}, {}]", sb.rows, sb.cols),
        });
    }
    Ok(Some(bias))
}

/// A tensor of the file as a stack of heads, unchecked values.
fn load_entries<T: Real>(file: &TensorFile, name: &str) -> Result<(HeadShape, Tensor3<T>)> {
    let t = file.get(name)?;
    let shape = HeadShape::of(name, t.shape())?;
    check_nonempty(name, t.shape())?;
    // The dtype was checked against `q`'s before; `to_real` cannot fail here, but an
    // error is still better than a panic if that ever changes.
    let data = t.to_real::<T>().ok_or_else(|| Error::MixedDtype {
        name: name.into(),
        dtype: t.dtype().name().into(),
        expected: T::DTYPE.into(),
    })?;
    let stack = Tensor3::from_vec(shape.heads()?, shape.rows, shape.cols, data)?;
    Ok((shape, stack))
}

/// The file's tensors as stacks, with shapes checked against `q`'s leading dims. The
/// entries of `q`, `k`, `v` and `bias` are not checked here: the engines check them
/// once, on the stacks ([`Loaded::in_file_terms`] restates such an error in the file's
/// indices); `do` is checked on loading as well (see [`load_all`]).
pub(crate) struct Loaded<T> {
    pub(crate) shapes: [HeadShape; 3],
    pub(crate) q: Tensor3<T>,
    pub(crate) k: Tensor3<T>,
    pub(crate) v: Tensor3<T>,
    pub(crate) d_o: Option<Tensor3<T>>,
    /// The additive score bias, `[1 or heads, n_q, n_k]`.
    pub(crate) bias: Option<Tensor3<T>>,
}

impl<T: Real> Loaded<T> {
    /// `e` in the file's terms: an engine's [`Error::NonFinite`] for `q`, `k`, `v` or
    /// `do` indexes the flattened `[heads, rows, cols]` stack (or one head of it); the
    /// user wrote `[.., heads, rows, cols]`, so the first offender is named by its
    /// index in the file's shape. Only runs on the error path: the entries are scanned
    /// once, by the engine, when they are fine.
    pub(crate) fn in_file_terms(&self, e: Error) -> Error {
        let Error::NonFinite { what, .. } = &e else {
            return e;
        };
        let [sq, sk, sv] = &self.shapes;
        let (shape, stack) = match what.as_str() {
            "q" => (sq.with_tail(&[sq.rows, sq.cols]), &self.q),
            "k" => (sk.with_tail(&[sk.rows, sk.cols]), &self.k),
            "v" => (sv.with_tail(&[sv.rows, sv.cols]), &self.v),
            "do" => match &self.d_o {
                Some(d_o) => (sq.with_tail(&[sq.rows, sv.cols]), d_o),
                None => return e,
            },
            _ => return e,
        };
        match check_finite(what, &shape, stack.as_slice()) {
            Err(in_file) => in_file,
            Ok(()) => e,
        }
    }

    /// The polynomial engine has no additive bias and no softcap: its typed refusal
    /// (with R, B and sqrt(ln n) of the first head) when the file holds a bias or
    /// `softcap` is set.
    pub(crate) fn check_poly_takes(&self, cfg: &PolyConfig, softcap: Option<f64>) -> Result<()> {
        if self.bias.is_none() && softcap.is_none() {
            return Ok(());
        }
        let (q, k, v) = (self.q.head(0), self.k.head(0), self.v.head(0));
        let p = polyattn::attention::Problem::new(q, k, v, &cfg.attention())?;
        Err(match softcap {
            Some(c) => poly::plan::refuse_softcap(&p, c),
            None => poly::plan::refuse_bias(&p),
        })
    }
}

pub(crate) fn load_all<T: Real>(file: &TensorFile) -> Result<Loaded<T>> {
    let (sq, q) = load_entries::<T>(file, "q")?;
    let (sk, k) = load_entries::<T>(file, "k")?;
    let (sv, v) = load_entries::<T>(file, "v")?;
    sq.same_lead_grouped("k", &sk)?;
    sk.same_lead("v", &sv)?;
    let d_o = if file.contains("do") {
        let (sdo, d_o) = load_entries::<T>(file, "do")?;
        sq.same_lead("do", &sdo)?;
        // The engines meet `do` only in the backward, after the whole forward has
        // run: checked here too, so that a bad `do` fails before any work.
        check_finite("do", &sdo.with_tail(&[sdo.rows, sdo.cols]), d_o.as_slice())?;
        Some(d_o)
    } else {
        None
    };
    let bias = load_bias::<T>(file, &sq, sk.rows)?;
    Ok(Loaded {
        shapes: [sq, sk, sv],
        q,
        k,
        v,
        d_o,
        bias,
    })
}

fn compute<T: Real>(file: &TensorFile, args: &AttentionArgs) -> Result<Outputs> {
    let x = load_all::<T>(file)?;
    compute_loaded(&x, args).map_err(|e| x.in_file_terms(e))
}

fn compute_loaded<T: Real>(x: &Loaded<T>, args: &AttentionArgs) -> Result<Outputs> {
    let attention = AttentionConfig {
        scale: args.scale,
        mask: args.mask.mask(),
        softcap: args.softcap,
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
    if let Some(c) = args.softcap {
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
    x.check_poly_takes(cfg, args.softcap)?;
    let fwd = poly::forward_multihead(&x.q, &x.k, &x.v, cfg)?;
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
