//! `polyattn._native`: the compiled half of the `polyattn` Python package.
//!
//! The pure-Python package (`python/polyattn/`) folds PyTorch-style `[..., n, d]`
//! arrays into C-contiguous `[heads, n, d]` stacks of float32 or float64 (converting
//! float16/bfloat16 exactly to float32) and calls the functions here. They borrow the
//! NumPy buffers (no copy), validate them, release the GIL for the compute (rayon over
//! heads, each head through the engine's single-head API on a borrowed view) and
//! return new arrays.
//!
//! Errors: every [`polyattn::Error`] becomes `polyattn.PolyattnError` (a `ValueError`)
//! with the error's message and a `kind` attribute naming the variant; a refusal of
//! the polynomial engine becomes its subclass `polyattn.RefusedError` with the
//! attributes `R`, `B`, `sqrt_ln_n` and `reason`. A Rust panic (a bug) is caught
//! before it reaches Python and raised as `PolyattnError` of kind `"internal"`.

use numpy::{Element, PyArray1, PyArray3, PyArrayMethods, PyReadonlyArray3, PyUntypedArrayMethods};
use polyattn::attention::exact::reference::exact_reference_with_bias;
use polyattn::attention::poly::{self, Accuracy, GradientKind, PolyConfig, PolyForward, PolyKind};
use polyattn::attention::{exact, AttentionConfig, Mask, Problem};
use polyattn::io::TensorFile;
use polyattn::model::file::{read_batch, read_model};
use polyattn::model::{EngineChoice, ModelConfig, PolySettings};
use polyattn::scalar::Real;
use polyattn::tensor::{check_finite, check_nonempty, MatRef};
use polyattn::Error;
use pyo3::create_exception;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use rayon::prelude::*;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

create_exception!(
    polyattn,
    PolyattnError,
    PyValueError,
    "An input or parameter polyattn rejects (a `polyattn::Error`); `kind` names the variant."
);
create_exception!(
    polyattn,
    RefusedError,
    PolyattnError,
    "The polynomial engine declines an input it cannot certify; attributes R, B, sqrt_ln_n, reason."
);

/// What can go wrong inside a compute call: an engine error or a caught panic.
enum Failure {
    Engine(Error),
    Panic(String),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::Engine(e)
    }
}

/// The variant's name, as `PolyattnError.kind`.
fn kind_name(e: &Error) -> &'static str {
    match e {
        Error::ShapeMismatch { .. } => "shape_mismatch",
        Error::Empty { .. } => "empty",
        Error::NonFinite { .. } => "non_finite",
        Error::InvalidParameter { .. } => "invalid_parameter",
        Error::Overflow { .. } => "overflow",
        Error::PolyRefused { .. } => "refused",
        Error::SizeOverflow(_) => "size_overflow",
        Error::Io { .. } => "io",
        Error::BadFile { .. } => "bad_file",
        Error::MissingTensor { .. } => "missing_tensor",
        Error::UnsupportedDtype { .. } => "unsupported_dtype",
        Error::ModelConfig { .. } => "model_config",
        Error::BadIndex { .. } => "bad_index",
        Error::MixedDtype { .. } => "mixed_dtype",
        Error::NoCudaDevice(_) => "no_cuda_device",
        Error::Cuda(_) => "cuda",
        Error::LayerNonFinite { .. } => "layer_non_finite",
        Error::Output { .. } => "output",
        Error::Stdout(_) => "stdout",
        Error::OutOfMemory { .. } => "out_of_memory",
        Error::CheckpointMismatch { .. } => "checkpoint_mismatch",
        Error::NonFiniteTraining { .. } => "non_finite_training",
    }
}

/// A `PolyattnError` of `kind` with `msg`.
fn py_error(py: Python<'_>, kind: &str, msg: String) -> PyErr {
    let err = PolyattnError::new_err(msg);
    // Setting an attribute on a fresh exception instance cannot fail in practice; if
    // it ever did, the error still carries its message.
    let _ = err.value(py).setattr("kind", kind);
    err
}

/// The Python exception for an engine error.
fn engine_error(py: Python<'_>, e: Error) -> PyErr {
    let kind = kind_name(&e);
    let msg = e.to_string();
    match e {
        Error::PolyRefused {
            reason,
            radius,
            entry_bound,
            sqrt_ln_n,
        } => {
            let err = RefusedError::new_err(msg);
            let v = err.value(py);
            let _ = v.setattr("kind", kind);
            let _ = v.setattr("R", radius);
            let _ = v.setattr("B", entry_bound);
            let _ = v.setattr("sqrt_ln_n", sqrt_ln_n);
            let _ = v.setattr("reason", reason);
            err
        }
        _ => py_error(py, kind, msg),
    }
}

fn failure(py: Python<'_>, f: Failure) -> PyErr {
    match f {
        Failure::Engine(e) => engine_error(py, e),
        Failure::Panic(m) => py_error(
            py,
            "internal",
            format!("internal error in polyattn (a bug; please report it): {m}"),
        ),
    }
}

/// Runs `f` with the GIL released, catching a panic so that it never unwinds into
/// Python.
fn compute<R: Send>(py: Python<'_>, f: impl FnOnce() -> Result<R, Failure> + Send) -> PyResult<R> {
    let r = py.allow_threads(|| {
        catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "panic".into());
            Err(Failure::Panic(msg))
        })
    });
    r.map_err(|f| failure(py, f))
}

/// The dtypes computed natively.
trait Dtype: Real + Element {
    fn exact_state(v: Vec<exact::Forward<Self>>) -> State;
    fn poly_state(v: Vec<PolyForward<Self>>) -> State;
    fn exact_of(s: &State) -> Option<&[exact::Forward<Self>]>;
    fn poly_of(s: &State) -> Option<&[PolyForward<Self>]>;
}

macro_rules! dtype {
    ($t:ty, $e:ident, $p:ident) => {
        impl Dtype for $t {
            fn exact_state(v: Vec<exact::Forward<Self>>) -> State {
                State::$e(v)
            }
            fn poly_state(v: Vec<PolyForward<Self>>) -> State {
                State::$p(v)
            }
            fn exact_of(s: &State) -> Option<&[exact::Forward<Self>]> {
                match s {
                    State::$e(v) => Some(v),
                    _ => None,
                }
            }
            fn poly_of(s: &State) -> Option<&[PolyForward<Self>]> {
                match s {
                    State::$p(v) => Some(v),
                    _ => None,
                }
            }
        }
    };
}

/// A forward's per-head results, kept for the backward.
enum State {
    ExactF32(Vec<exact::Forward<f32>>),
    ExactF64(Vec<exact::Forward<f64>>),
    PolyF32(Vec<PolyForward<f32>>),
    PolyF64(Vec<PolyForward<f64>>),
}

dtype!(f32, ExactF32, PolyF32);
dtype!(f64, ExactF64, PolyF64);

/// A borrowed, validated `[heads, rows, cols]` stack.
#[derive(Clone, Copy)]
struct Stack<'a, T> {
    shape: [usize; 3],
    data: &'a [T],
}

impl<'a, T: Real> Stack<'a, T> {
    fn head(&self, h: usize) -> Result<MatRef<'a, T>, Error> {
        let [_, r, c] = self.shape;
        MatRef::new(r, c, &self.data[h * r * c..(h + 1) * r * c])
    }
}

/// An optional additive score bias `[1 or heads, n_q, n_k]`: query head `h`'s slice
/// (the one head when it is shared). The shape is checked against q, k here; the
/// entries by the engine (`Problem::with_bias`: finite or -inf).
fn bias_head<'a, T: Real>(
    bias: Option<Stack<'a, T>>,
    q: &Stack<'_, T>,
    k: &Stack<'_, T>,
    h: usize,
) -> Result<Option<MatRef<'a, T>>, Error> {
    let Some(b) = bias else { return Ok(None) };
    let want = [q.shape[1], k.shape[1]];
    if (b.shape[0] != 1 && b.shape[0] != q.shape[0]) || b.shape[1..] != want {
        return Err(Error::ShapeMismatch {
            what: "attn_mask (the additive bias, folded to [heads, n_q, n_k])".into(),
            expected: format!("[1 or {}, {}, {}]", q.shape[0], want[0], want[1]),
            got: format!("{:?}", b.shape),
        });
    }
    Ok(Some(b.head(if b.shape[0] == 1 { 0 } else { h })?))
}

/// Borrows `obj` as a C-contiguous 3-d array of `T`.
fn borrow<'py, T: Dtype>(
    py: Python<'py>,
    name: &str,
    obj: &Bound<'py, PyAny>,
) -> PyResult<PyReadonlyArray3<'py, T>> {
    let arr = obj.downcast::<PyArray3<T>>().map_err(|_| {
        py_error(
            py,
            "mixed_dtype",
            format!(
                "`{name}` must be a 3-d {} array (the dtype of `q` and of the forward)",
                if T::DTYPE == "F32" {
                    "float32"
                } else {
                    "float64"
                }
            ),
        )
    })?;
    let ro = arr.try_readonly().map_err(|e| {
        py_error(
            py,
            "invalid_parameter",
            format!("`{name}` cannot be borrowed: {e}"),
        )
    })?;
    if !ro.is_c_contiguous() {
        return Err(py_error(
            py,
            "invalid_parameter",
            format!("`{name}` must be C-contiguous"),
        ));
    }
    Ok(ro)
}

fn slice<'a, T: Dtype>(
    py: Python<'_>,
    name: &str,
    a: &'a PyReadonlyArray3<'_, T>,
) -> PyResult<Stack<'a, T>> {
    let s = a.shape();
    let shape = [s[0], s[1], s[2]];
    let data = a.as_slice().map_err(|e| {
        py_error(
            py,
            "invalid_parameter",
            format!("`{name}` is not contiguous: {e}"),
        )
    })?;
    Ok(Stack { shape, data })
}

/// Checks what the per-head engine calls cannot see: head counts (q's for every
/// tensor, except k and v, whose equal count may divide q's: grouped-query attention),
/// no empty dimension, finite entries (indexed as the stack is shaped). Returns the
/// group size g = q heads / k heads.
fn validate<T: Real>(stacks: &[(&str, Stack<'_, T>)]) -> Result<usize, Error> {
    let h = stacks[0].1.shape[0];
    let kv = stacks
        .iter()
        .find(|(n, _)| *n == "k")
        .map_or(h, |(_, s)| s.shape[0]);
    for (name, s) in stacks {
        check_nonempty(name, &s.shape)?;
    }
    let g = polyattn::attention::kv_group(h, kv)?;
    for (name, s) in stacks {
        let want = if matches!(*name, "k" | "v") { kv } else { h };
        if s.shape[0] != want {
            return Err(Error::ShapeMismatch {
                what: format!("{name} heads (leading dimensions)"),
                expected: want.to_string(),
                got: s.shape[0].to_string(),
            });
        }
    }
    for (name, s) in stacks {
        check_finite(name, &s.shape, s.data)?;
    }
    Ok(g)
}

/// The group size of `[heads, ..]` stacks q and k (1 when k has q's heads), for the
/// closures that index k and v by query head (validated again inside).
fn group_of<T>(q: &Stack<'_, T>, k: &Stack<'_, T>) -> usize {
    if k.shape[0] == 0 || !q.shape[0].is_multiple_of(k.shape[0]) {
        1
    } else {
        q.shape[0] / k.shape[0]
    }
}

/// Per-query-head exact gradients of k or v summed over each group of `g` query heads
/// in head order (grouped-query attention), as the engine's `sum_groups` does.
fn sum_shares<T: Real>(
    parts: Vec<Vec<T>>,
    g: usize,
    rows: usize,
    cols: usize,
) -> Result<Vec<T>, Error> {
    if g == 1 {
        return Ok(parts.concat());
    }
    let h = parts.len();
    let t = polyattn::tensor::Tensor3::from_vec(h, rows, cols, parts.concat())?;
    Ok(polyattn::attention::sum_groups(&t, g)?.as_slice().to_vec())
}

/// A new array of `shape` holding the concatenation of `parts`.
fn stack_array<'py, T: Element + Copy>(
    py: Python<'py>,
    parts: impl Iterator<Item = Vec<T>>,
    shape: &[usize],
) -> PyResult<Bound<'py, PyAny>> {
    let data: Vec<T> = parts.flatten().collect();
    Ok(PyArray1::from_vec(py, data).reshape(shape)?.into_any())
}

fn parse_mask(py: Python<'_>, mask: &str) -> PyResult<Mask> {
    mask.parse::<Mask>().map_err(|e| engine_error(py, e))
}

fn parse_gradient(py: Python<'_>, g: &str) -> PyResult<GradientKind> {
    match g {
        "substituted" => Ok(GradientKind::Substituted),
        "polynomial-model" | "polynomial_model" => Ok(GradientKind::PolynomialModel),
        g => Err(py_error(
            py,
            "invalid_parameter",
            format!("gradient `{g}`: expected substituted or polynomial-model"),
        )),
    }
}

fn parse_polynomial(py: Python<'_>, p: &str) -> PyResult<PolyKind> {
    match p {
        "chebyshev" => Ok(PolyKind::Chebyshev),
        "taylor" => Ok(PolyKind::Taylor),
        p => Err(py_error(
            py,
            "invalid_parameter",
            format!("polynomial `{p}`: expected chebyshev or taylor"),
        )),
    }
}

fn accuracy(py: Python<'_>, eps: Option<f64>, degree: Option<usize>) -> PyResult<Accuracy> {
    match (eps, degree) {
        (Some(_), Some(_)) => Err(py_error(
            py,
            "invalid_parameter",
            "give eps or degree, not both".into(),
        )),
        (None, Some(g)) => Ok(Accuracy::Degree(g)),
        (Some(e), None) => Ok(Accuracy::Eps(e)),
        (None, None) => Ok(PolyConfig::default().accuracy),
    }
}

/// The result of a forward call: per-head results kept for the backward, and the
/// configuration they were computed with. Opaque; created by `forward`.
#[pyclass(frozen, module = "polyattn._native")]
struct ForwardState {
    state: State,
    attention: AttentionConfig,
    poly: PolyConfig,
    /// `[heads, n_q, d, n_k, d_v]` of the inputs.
    dims: [usize; 5],
    /// k's and v's heads (fewer than `dims[0]` under grouped-query attention).
    kv_heads: usize,
}

#[pymethods]
impl ForwardState {
    /// "exact" or "poly": the engine that ran.
    #[getter]
    fn engine(&self) -> &'static str {
        match self.state {
            State::ExactF32(_) | State::ExactF64(_) => "exact",
            _ => "poly",
        }
    }
}

fn plan_dict<'py, T: Real>(py: Python<'py>, f: &PolyForward<T>) -> PyResult<Bound<'py, PyDict>> {
    let r = &f.plan.regime;
    let d = PyDict::new(py);
    d.set_item("R", r.radius)?;
    d.set_item("B", r.entry_bound)?;
    d.set_item("sqrt_ln_n", r.sqrt_ln_n)?;
    d.set_item("n", r.n)?;
    d.set_item("d", r.d)?;
    d.set_item("degree", r.degree)?;
    d.set_item("rank", r.rank)?;
    d.set_item("eps_poly", r.eps_poly)?;
    d.set_item("poly_flops", r.poly_flops)?;
    d.set_item("exact_flops", r.exact_flops)?;
    d.set_item("predicted_speedup", r.predicted_speedup())?;
    d.set_item("bounded_entries", r.bounded_entries())?;
    d.set_item("bound_o", f.bound.max_total())?;
    d.set_item("bound_o_poly", f.bound.max_poly())?;
    d.set_item("exact_rows", f.exact_block.0)?;
    d.set_item("polynomial", f.plan.poly.kind.name())?;
    Ok(d)
}

enum Ran<T> {
    Exact(Vec<exact::Forward<T>>),
    Poly(Vec<PolyForward<T>>),
}

fn forward_impl<'py, T: Dtype>(
    py: Python<'py>,
    args: [&Bound<'py, PyAny>; 3],
    bias: Option<&Bound<'py, PyAny>>,
    attention: AttentionConfig,
    poly_cfg: PolyConfig,
    engine: &str,
) -> PyResult<(Bound<'py, PyDict>, ForwardState)> {
    let (qa, ka, va) = (
        borrow::<T>(py, "q", args[0])?,
        borrow::<T>(py, "k", args[1])?,
        borrow::<T>(py, "v", args[2])?,
    );
    let (q, k, v) = (
        slice(py, "q", &qa)?,
        slice(py, "k", &ka)?,
        slice(py, "v", &va)?,
    );
    let ba = bias.map(|b| borrow::<T>(py, "attn_mask", b)).transpose()?;
    let b = ba.as_ref().map(|b| slice(py, "attn_mask", b)).transpose()?;
    let h = q.shape[0];
    // Query head i reads key/value head i / g (grouped-query attention).
    let g = group_of(&q, &k);
    let run_exact = move || -> Result<Vec<exact::Forward<T>>, Failure> {
        Ok((0..h)
            .into_par_iter()
            .map(|i| {
                let (kh, vh) = (k.head(i / g)?, v.head(i / g)?);
                exact::forward_with_bias(q.head(i)?, kh, vh, bias_head(b, &q, &k, i)?, &attention)
            })
            .collect::<Result<Vec<_>, Error>>()?)
    };
    let softcap = attention.softcap;
    let run_poly = move |cfg: PolyConfig| -> Result<Vec<PolyForward<T>>, Error> {
        if let Some(c) = softcap {
            // The polynomial engine has no softcap: refused (auto falls back to exact).
            let p = Problem::new(q.head(0)?, k.head(0)?, v.head(0)?, &cfg.attention())?;
            return Err(poly::plan::refuse_softcap(&p, c));
        }
        // A bias goes to the engine: key padding runs, any other is refused (auto
        // falls back to exact).
        (0..h)
            .into_par_iter()
            .map(|i| {
                let (kh, vh) = (k.head(i / g)?, v.head(i / g)?);
                poly::forward_with_bias(q.head(i)?, kh, vh, bias_head(b, &q, &k, i)?, &cfg)
            })
            .collect()
    };
    let engine_owned = engine.to_string();
    let (ran, reason) = compute(py, move || {
        validate(&[("q", q), ("k", k), ("v", v)])?;
        match engine_owned.as_str() {
            "exact" => Ok((Ran::Exact(run_exact()?), "requested".to_string())),
            "poly" => Ok((Ran::Poly(run_poly(poly_cfg)?), "requested".to_string())),
            _ => {
                // As `polyattn attention --engine auto`: poly only where certified and
                // predicted faster than exact.
                let cfg = PolyConfig {
                    max_cost_ratio: 1.0,
                    cost_floor_flops: 0.0,
                    ..poly_cfg
                };
                match run_poly(cfg) {
                    Ok(f) => {
                        let s = f
                            .iter()
                            .map(|h| h.plan.regime.predicted_speedup())
                            .fold(f64::INFINITY, f64::min);
                        let why = format!(
                            "auto: polynomial engine certified every head and is predicted faster (min predicted speedup {s:.2}x)"
                        );
                        Ok((Ran::Poly(f), why))
                    }
                    Err(Error::PolyRefused { reason, .. }) => Ok((
                        Ran::Exact(run_exact()?),
                        format!("auto: polynomial engine refused: {reason}"),
                    )),
                    Err(e) => Err(e.into()),
                }
            }
        }
    })?;
    let (n_q, d, n_k, d_v) = (q.shape[1], q.shape[2], k.shape[1], v.shape[2]);
    let out = PyDict::new(py);
    out.set_item("engine_reason", reason)?;
    let state = match ran {
        Ran::Exact(f) => {
            out.set_item("engine", "exact")?;
            out.set_item(
                "o",
                stack_array(
                    py,
                    f.iter().map(|x| x.o.as_slice().to_vec()),
                    &[h, n_q, d_v],
                )?,
            )?;
            out.set_item(
                "lse",
                stack_array(py, f.iter().map(|x| x.lse.clone()), &[h, n_q])?,
            )?;
            T::exact_state(f)
        }
        Ran::Poly(f) => {
            out.set_item("engine", "poly")?;
            out.set_item(
                "o",
                stack_array(
                    py,
                    f.iter().map(|x| x.o.as_slice().to_vec()),
                    &[h, n_q, d_v],
                )?,
            )?;
            out.set_item(
                "lse",
                stack_array(py, f.iter().map(|x| x.lse.clone()), &[h, n_q])?,
            )?;
            out.set_item(
                "o_bound",
                stack_array(py, f.iter().map(|x| x.bound.total.clone()), &[h, n_q, d_v])?,
            )?;
            out.set_item(
                "o_bound_poly",
                stack_array(py, f.iter().map(|x| x.bound.poly.clone()), &[h, n_q, d_v])?,
            )?;
            let plans = PyList::empty(py);
            for x in &f {
                plans.append(plan_dict(py, x)?)?;
            }
            out.set_item("plans", plans)?;
            T::poly_state(f)
        }
    };
    let st = ForwardState {
        state,
        attention,
        poly: poly_cfg,
        dims: [h, n_q, d, n_k, d_v],
        kv_heads: k.shape[0],
    };
    Ok((out, st))
}

/// forward(q, k, v, *, mask="none", scale=None, engine="exact", eps=None, degree=None,
/// polynomial="chebyshev", bias=None, softcap=None) -> (dict, ForwardState)
///
/// Attention forward on C-contiguous `[heads, n, d]` float32 or float64 stacks (all
/// one dtype). engine: "exact", "poly" or "auto". The dict holds `o` `[h, n_q, d_v]`,
/// `lse` `[h, n_q]`, `engine`, `engine_reason`, and for the polynomial engine
/// `o_bound`, `o_bound_poly` (float64, entrywise bounds on |O~ - O|) and `plans` (one
/// dict per head). polynomial: "chebyshev" (interpolation of exp on [-R, R], the
/// default) or "taylor" (at 0). The GIL is released while computing.
#[pyfunction]
#[pyo3(signature = (q, k, v, *, mask="none", scale=None, engine="exact", eps=None, degree=None, polynomial="chebyshev", bias=None, softcap=None))]
#[allow(clippy::too_many_arguments)]
fn forward<'py>(
    py: Python<'py>,
    q: &Bound<'py, PyAny>,
    k: &Bound<'py, PyAny>,
    v: &Bound<'py, PyAny>,
    mask: &str,
    scale: Option<f64>,
    engine: &str,
    eps: Option<f64>,
    degree: Option<usize>,
    polynomial: &str,
    bias: Option<&Bound<'py, PyAny>>,
    softcap: Option<f64>,
) -> PyResult<(Bound<'py, PyDict>, ForwardState)> {
    let mask = parse_mask(py, mask)?;
    let kind = parse_polynomial(py, polynomial)?;
    if !matches!(engine, "exact" | "poly" | "auto") {
        return Err(py_error(
            py,
            "invalid_parameter",
            format!("engine `{engine}`: expected exact, poly or auto"),
        ));
    }
    let attention = AttentionConfig {
        scale,
        mask,
        softcap,
    };
    let poly_cfg = PolyConfig {
        scale,
        mask,
        accuracy: accuracy(py, eps, degree)?,
        kind,
        ..PolyConfig::default()
    };
    if q.downcast::<PyArray3<f32>>().is_ok() {
        forward_impl::<f32>(py, [q, k, v], bias, attention, poly_cfg, engine)
    } else if q.downcast::<PyArray3<f64>>().is_ok() {
        forward_impl::<f64>(py, [q, k, v], bias, attention, poly_cfg, engine)
    } else {
        Err(py_error(
            py,
            "unsupported_dtype",
            "`q` must be a 3-d float32 or float64 array".into(),
        ))
    }
}

fn backward_impl<'py, T: Dtype>(
    py: Python<'py>,
    st: &ForwardState,
    args: [&Bound<'py, PyAny>; 4],
    bias: Option<&Bound<'py, PyAny>>,
    kind: GradientKind,
) -> PyResult<Bound<'py, PyDict>> {
    let (qa, ka, va, ga) = (
        borrow::<T>(py, "q", args[0])?,
        borrow::<T>(py, "k", args[1])?,
        borrow::<T>(py, "v", args[2])?,
        borrow::<T>(py, "do", args[3])?,
    );
    let (q, k, v, g) = (
        slice(py, "q", &qa)?,
        slice(py, "k", &ka)?,
        slice(py, "v", &va)?,
        slice(py, "do", &ga)?,
    );
    let ba = bias.map(|b| borrow::<T>(py, "attn_mask", b)).transpose()?;
    let b = ba.as_ref().map(|b| slice(py, "attn_mask", b)).transpose()?;
    let [h, n_q, d, n_k, d_v] = st.dims;
    let hk = st.kv_heads;
    let grp = (h / hk.max(1)).max(1);
    let dims_now = [q.shape[0], q.shape[1], q.shape[2], k.shape[1], v.shape[2]];
    if dims_now != st.dims
        || k.shape[0] != hk
        || v.shape[0] != hk
        || k.shape[2] != d
        || v.shape[1] != n_k
    {
        return Err(py_error(
            py,
            "shape_mismatch",
            format!(
                "q, k, v are not shaped like the forward's inputs ([heads, n_q, d, n_k, d_v] = {:?}, now {:?})",
                st.dims, dims_now
            ),
        ));
    }
    let out = PyDict::new(py);
    let shapes = [[h, n_q, d], [hk, n_k, d], [hk, n_k, d_v]];
    if let Some(f) = T::exact_of(&st.state) {
        let cfg = st.attention;
        let grads = compute(py, move || {
            validate(&[("q", q), ("k", k), ("v", v), ("do", g)])?;
            Ok((0..h)
                .into_par_iter()
                .map(|i| {
                    let (kh, vh) = (k.head(i / grp)?, v.head(i / grp)?);
                    let bh = bias_head(b, &q, &k, i)?;
                    exact::backward_with_bias(q.head(i)?, kh, vh, bh, &f[i], g.head(i)?, &cfg)
                })
                .collect::<Result<Vec<_>, Error>>()?)
        })?;
        // Grouped-query attention: each key/value head's gradient is the sum of its
        // query heads' shares.
        let dk = sum_shares(
            grads.iter().map(|x| x.dk.as_slice().to_vec()).collect(),
            grp,
            n_k,
            d,
        )
        .map_err(|e| engine_error(py, e))?;
        let dv = sum_shares(
            grads.iter().map(|x| x.dv.as_slice().to_vec()).collect(),
            grp,
            n_k,
            d_v,
        )
        .map_err(|e| engine_error(py, e))?;
        out.set_item(
            "dq",
            stack_array(
                py,
                grads.iter().map(|x| x.dq.as_slice().to_vec()),
                &shapes[0],
            )?,
        )?;
        out.set_item("dk", stack_array(py, std::iter::once(dk), &shapes[1])?)?;
        out.set_item("dv", stack_array(py, std::iter::once(dv), &shapes[2])?)?;
    } else if let Some(f) = T::poly_of(&st.state) {
        let cfg = st.poly;
        let grads = compute(py, move || {
            validate(&[("q", q), ("k", k), ("v", v), ("do", g)])?;
            Ok((0..h)
                .into_par_iter()
                .map(|i| {
                    poly::backward(
                        q.head(i)?,
                        k.head(i / grp)?,
                        v.head(i / grp)?,
                        &f[i],
                        g.head(i)?,
                        kind,
                        &cfg,
                    )
                })
                .collect::<Result<Vec<_>, Error>>()?)
        })?;
        out.set_item("gradient", kind.name())?;
        // Grouped-query attention: dK, dV summed over each group with their bounds
        // (the heads' bounds plus the summation's rounding, `poly::bound::sum_groups`).
        type Part<T> = (Vec<T>, poly::Bounds);
        let split = |f: &dyn Fn(&poly::PolyGradients<T>) -> Part<T>| {
            let (vals, bounds): (Vec<_>, Vec<_>) = grads.iter().map(f).unzip();
            poly::bound::sum_groups(vals, bounds, grp)
        };
        let (dk, dk_b) = split(&|x| (x.dk.as_slice().to_vec(), x.bound_dk.clone()));
        let (dv, dv_b) = split(&|x| (x.dv.as_slice().to_vec(), x.bound_dv.clone()));
        out.set_item(
            "dq",
            stack_array(
                py,
                grads.iter().map(|x| x.dq.as_slice().to_vec()),
                &shapes[0],
            )?,
        )?;
        out.set_item("dk", stack_array(py, dk.into_iter(), &shapes[1])?)?;
        out.set_item("dv", stack_array(py, dv.into_iter(), &shapes[2])?)?;
        out.set_item(
            "dq_bound",
            stack_array(
                py,
                grads.iter().map(|x| x.bound_dq.total.clone()),
                &shapes[0],
            )?,
        )?;
        out.set_item(
            "dk_bound",
            stack_array(py, dk_b.iter().map(|b| b.total.clone()), &shapes[1])?,
        )?;
        out.set_item(
            "dv_bound",
            stack_array(py, dv_b.iter().map(|b| b.total.clone()), &shapes[2])?,
        )?;
        // Per query head; dK, dV's maxima are those of the key/value head it reads.
        let maxes = PyList::empty(py);
        for (i, x) in grads.iter().enumerate() {
            let m = PyDict::new(py);
            m.set_item("bound_dq", x.bound_dq.max_total())?;
            m.set_item("bound_dk", dk_b[i / grp].max_total())?;
            m.set_item("bound_dv", dv_b[i / grp].max_total())?;
            maxes.append(m)?;
        }
        out.set_item("grad_bounds", maxes)?;
    } else {
        return Err(py_error(
            py,
            "mixed_dtype",
            format!("the forward ran in another dtype than {}", T::DTYPE),
        ));
    }
    Ok(out)
}

/// backward(state, q, k, v, do, *, gradient="substituted", bias=None) -> dict
///
/// The gradients dq, dk, dv for the upstream gradient `do` `[h, n_q, d_v]`, from a
/// `forward` call's state on the same q, k, v. For the polynomial engine also
/// `dq_bound`, `dk_bound`, `dv_bound` (float64, entrywise bounds against the exact
/// gradients), `grad_bounds` (per head maxima) and `gradient` (the kind computed).
/// The GIL is released while computing.
#[pyfunction]
#[pyo3(signature = (state, q, k, v, r#do, *, gradient="substituted", bias=None))]
#[allow(clippy::too_many_arguments)]
fn backward<'py>(
    py: Python<'py>,
    state: &ForwardState,
    q: &Bound<'py, PyAny>,
    k: &Bound<'py, PyAny>,
    v: &Bound<'py, PyAny>,
    r#do: &Bound<'py, PyAny>,
    gradient: &str,
    bias: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let kind = parse_gradient(py, gradient)?;
    match state.state {
        State::ExactF32(_) | State::PolyF32(_) => {
            backward_impl::<f32>(py, state, [q, k, v, r#do], bias, kind)
        }
        State::ExactF64(_) | State::PolyF64(_) => {
            backward_impl::<f64>(py, state, [q, k, v, r#do], bias, kind)
        }
    }
}

/// reference(q, k, v, do=None, *, mask="none", scale=None, bias=None, softcap=None) -> dict
///
/// The exact engine in float64 with its a priori rounding bound on every entry
/// (`polyattn::attention::exact::reference::exact_reference`): `o`, `o_bound`, `lse`, and with
/// `do`: `dq`, `dk`, `dv`, `dq_bound`, `dk_bound`, `dv_bound`. The exact real-number
/// result lies within value +- bound entrywise. float64 `[h, n, d]` inputs only.
#[pyfunction]
#[pyo3(signature = (q, k, v, r#do=None, *, mask="none", scale=None, bias=None, softcap=None))]
#[allow(clippy::too_many_arguments)]
fn reference<'py>(
    py: Python<'py>,
    q: &Bound<'py, PyAny>,
    k: &Bound<'py, PyAny>,
    v: &Bound<'py, PyAny>,
    r#do: Option<&Bound<'py, PyAny>>,
    mask: &str,
    scale: Option<f64>,
    bias: Option<&Bound<'py, PyAny>>,
    softcap: Option<f64>,
) -> PyResult<Bound<'py, PyDict>> {
    let cfg = AttentionConfig {
        scale,
        mask: parse_mask(py, mask)?,
        softcap,
    };
    let (qa, ka, va) = (
        borrow::<f64>(py, "q", q)?,
        borrow::<f64>(py, "k", k)?,
        borrow::<f64>(py, "v", v)?,
    );
    let ga = r#do.map(|g| borrow::<f64>(py, "do", g)).transpose()?;
    let (qs, ks, vs) = (
        slice(py, "q", &qa)?,
        slice(py, "k", &ka)?,
        slice(py, "v", &va)?,
    );
    let gs = ga.as_ref().map(|g| slice(py, "do", g)).transpose()?;
    let ba = bias
        .map(|b| borrow::<f64>(py, "attn_mask", b))
        .transpose()?;
    let bs = ba.as_ref().map(|b| slice(py, "attn_mask", b)).transpose()?;
    let h = qs.shape[0];
    let (hk, grp) = (ks.shape[0], group_of(&qs, &ks));
    let refs = compute(py, move || {
        let mut all = vec![("q", qs), ("k", ks), ("v", vs)];
        if let Some(g) = gs {
            all.push(("do", g));
        }
        validate(&all)?;
        Ok((0..h)
            .into_par_iter()
            .map(|i| {
                let g = gs.map(|g| g.head(i)).transpose()?;
                let bh = bias_head(bs, &qs, &ks, i)?;
                let (kh, vh) = (ks.head(i / grp)?, vs.head(i / grp)?);
                exact_reference_with_bias(qs.head(i)?, kh, vh, bh, g, &cfg)
            })
            .collect::<Result<Vec<_>, Error>>()?)
    })?;
    let (n_q, d, n_k, d_v) = (qs.shape[1], qs.shape[2], ks.shape[1], vs.shape[2]);
    let out = PyDict::new(py);
    out.set_item(
        "o",
        stack_array(py, refs.iter().map(|r| r.o.clone()), &[h, n_q, d_v])?,
    )?;
    out.set_item(
        "o_bound",
        stack_array(py, refs.iter().map(|r| r.bound_o.clone()), &[h, n_q, d_v])?,
    )?;
    out.set_item(
        "lse",
        stack_array(py, refs.iter().map(|r| r.lse.clone()), &[h, n_q])?,
    )?;
    if gs.is_some() {
        let gr: Vec<_> = refs.iter().filter_map(|r| r.grads.as_ref()).collect();
        if gr.len() != h {
            return Err(py_error(
                py,
                "internal",
                "reference gradients missing".into(),
            ));
        }
        out.set_item(
            "dq",
            stack_array(py, gr.iter().map(|g| g.dq.clone()), &[h, n_q, d])?,
        )?;
        // Grouped-query attention: the group sums, each enclosed by the heads' bounds
        // plus the f64 summation's rounding (`poly::bound::sum_groups`).
        type Grads = polyattn::attention::exact::reference::ReferenceGrads;
        type Pick<'a> = &'a dyn Fn(&Grads) -> (Vec<f64>, Vec<f64>);
        let group = |f: Pick<'_>| {
            let (vals, bounds): (Vec<_>, Vec<_>) = gr
                .iter()
                .map(|g| {
                    let (v, b) = f(g);
                    (
                        v,
                        poly::Bounds {
                            total: b.clone(),
                            poly: b,
                        },
                    )
                })
                .unzip();
            let (v, b) = poly::bound::sum_groups(vals, bounds, grp);
            (
                v.concat(),
                b.into_iter().flat_map(|b| b.total).collect::<Vec<f64>>(),
            )
        };
        let (dk, dk_b) = group(&|g| (g.dk.clone(), g.bound_dk.clone()));
        let (dv, dv_b) = group(&|g| (g.dv.clone(), g.bound_dv.clone()));
        out.set_item("dk", stack_array(py, std::iter::once(dk), &[hk, n_k, d])?)?;
        out.set_item("dv", stack_array(py, std::iter::once(dv), &[hk, n_k, d_v])?)?;
        out.set_item(
            "dq_bound",
            stack_array(py, gr.iter().map(|g| g.bound_dq.clone()), &[h, n_q, d])?,
        )?;
        out.set_item(
            "dk_bound",
            stack_array(py, std::iter::once(dk_b), &[hk, n_k, d])?,
        )?;
        out.set_item(
            "dv_bound",
            stack_array(py, std::iter::once(dv_b), &[hk, n_k, d_v])?,
        )?;
    }
    Ok(out)
}

/// A model in either compute dtype.
enum AnyModel {
    F32(polyattn::model::Model<f32>),
    F64(polyattn::model::Model<f64>),
}

/// A multi-layer pre-norm transformer (`polyattn::model`), its attention through the
/// exact or the polynomial engine. Built by `Model.load`, `Model.from_bytes` or
/// `Model.init`.
#[pyclass(frozen, module = "polyattn._native", name = "Model")]
struct PyModel {
    model: AnyModel,
}

fn model_dtype(py: Python<'_>, dtype: Option<&str>, file: Option<&TensorFile>) -> PyResult<bool> {
    match dtype {
        Some("float32") | Some("f32") => Ok(true),
        Some("float64") | Some("f64") => Ok(false),
        Some(other) => Err(py_error(
            py,
            "invalid_parameter",
            format!("dtype `{other}`: expected float32 or float64"),
        )),
        // As `polyattn model`: the weights file's dtype.
        None => Ok(file
            .and_then(|f| f.get("layers.0.attn.wq").ok())
            .is_some_and(|t| t.dtype() == polyattn::io::DType::F32)),
    }
}

fn engines(
    py: Python<'_>,
    engine: Vec<String>,
    eps: Option<f64>,
    degree: Option<usize>,
    gradient: &str,
) -> PyResult<Vec<EngineChoice>> {
    let settings = PolySettings {
        config: PolyConfig {
            accuracy: accuracy(py, eps, degree)?,
            ..PolyConfig::default()
        },
        kind: parse_gradient(py, gradient)?,
    };
    let auto = PolySettings {
        config: PolyConfig {
            max_cost_ratio: 1.0,
            cost_floor_flops: 0.0,
            ..settings.config
        },
        ..settings
    };
    if engine.is_empty() {
        return Err(py_error(
            py,
            "invalid_parameter",
            "engine: give at least one".into(),
        ));
    }
    engine
        .iter()
        .map(|e| match e.as_str() {
            "exact" => Ok(EngineChoice::Exact),
            "poly" => Ok(EngineChoice::Poly(settings)),
            "auto" => Ok(EngineChoice::Auto(auto)),
            other => Err(py_error(
                py,
                "invalid_parameter",
                format!("engine `{other}`: expected exact, poly or auto"),
            )),
        })
        .collect()
}

fn named_arrays<'py, T: Element + Copy>(
    py: Python<'py>,
    named: Vec<(String, Vec<usize>, Vec<T>)>,
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (name, shape, data) in named {
        d.set_item(name, PyArray1::from_vec(py, data).reshape(shape)?)?;
    }
    Ok(d)
}

fn loss_and_grads_impl<'py, T: Real + Element>(
    py: Python<'py>,
    model: &polyattn::model::Model<T>,
    input: &TensorFile,
    engines: Vec<EngineChoice>,
) -> PyResult<(f64, Bound<'py, PyDict>, String)> {
    let (loss, grads) = compute(py, || {
        let batch = read_batch(input, model)?;
        Ok(model.loss_and_gradients(&batch, &engines)?)
    })?;
    let reports = serde_json::to_string(&grads.reports)
        .map_err(|e| py_error(py, "internal", format!("report serialisation: {e}")))?;
    Ok((loss.to_f64(), named_arrays(py, grads.named())?, reports))
}

#[pymethods]
impl PyModel {
    /// Model.load(path, dtype=None): reads a weights safetensors file (every parameter,
    /// the configuration in `__metadata__`), as `polyattn model --weights`. dtype:
    /// "float32" or "float64"; default the file's.
    #[staticmethod]
    #[pyo3(signature = (path, dtype=None))]
    fn load(py: Python<'_>, path: std::path::PathBuf, dtype: Option<&str>) -> PyResult<Self> {
        let file = TensorFile::read(&path).map_err(|e| engine_error(py, e))?;
        Self::from_file(py, &file, dtype)
    }

    /// Model.from_bytes(data, dtype=None): a weights file's bytes (safetensors).
    #[staticmethod]
    #[pyo3(signature = (data, dtype=None))]
    fn from_bytes(py: Python<'_>, data: &[u8], dtype: Option<&str>) -> PyResult<Self> {
        let file =
            TensorFile::parse(Path::new("<bytes>"), data).map_err(|e| engine_error(py, e))?;
        Self::from_file(py, &file, dtype)
    }

    /// Model.init(config, *, tokens=False, seed=1, dtype="float64"): seeded random
    /// parameters for a configuration given as the metadata strings of a weights file
    /// (n_layers, n_heads, d_model, d_ff, activation, layer_norm, causal, loss, vocab).
    #[staticmethod]
    #[pyo3(signature = (config, *, tokens=false, seed=1, dtype="float64"))]
    fn init(
        py: Python<'_>,
        config: HashMap<String, String>,
        tokens: bool,
        seed: u64,
        dtype: &str,
    ) -> PyResult<Self> {
        let cfg = ModelConfig::from_metadata(&config).map_err(|e| engine_error(py, e))?;
        let model = if model_dtype(py, Some(dtype), None)? {
            AnyModel::F32(
                polyattn::model::Model::init(cfg, tokens, seed).map_err(|e| engine_error(py, e))?,
            )
        } else {
            AnyModel::F64(
                polyattn::model::Model::init(cfg, tokens, seed).map_err(|e| engine_error(py, e))?,
            )
        };
        Ok(Self { model })
    }

    /// The configuration, as the metadata strings of a weights file.
    #[getter]
    fn config(&self) -> HashMap<String, String> {
        match &self.model {
            AnyModel::F32(m) => m.config().to_metadata(),
            AnyModel::F64(m) => m.config().to_metadata(),
        }
    }

    /// "float32" or "float64".
    #[getter]
    fn dtype(&self) -> &'static str {
        match &self.model {
            AnyModel::F32(_) => "float32",
            AnyModel::F64(_) => "float64",
        }
    }

    /// Every parameter by name, as new arrays.
    fn params<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        match &self.model {
            AnyModel::F32(m) => named_arrays(py, m.params().named()),
            AnyModel::F64(m) => named_arrays(py, m.params().named()),
        }
    }

    /// loss_and_grads(inputs, engine=["exact"], eps=None, degree=None,
    /// gradient="substituted") -> (loss, grads, reports_json)
    ///
    /// inputs: the bytes of an input safetensors file (`x` or `tokens`; `y` or
    /// `labels`). engine: one name for all layers or one per layer. grads: `grad.<name>`
    /// per parameter and `grad.x` for a feature input. The GIL is released.
    #[pyo3(signature = (inputs, engine, eps=None, degree=None, gradient="substituted"))]
    fn loss_and_grads<'py>(
        &self,
        py: Python<'py>,
        inputs: &[u8],
        engine: Vec<String>,
        eps: Option<f64>,
        degree: Option<usize>,
        gradient: &str,
    ) -> PyResult<(f64, Bound<'py, PyDict>, String)> {
        let file =
            TensorFile::parse(Path::new("<inputs>"), inputs).map_err(|e| engine_error(py, e))?;
        let engines = engines(py, engine, eps, degree, gradient)?;
        match &self.model {
            AnyModel::F32(m) => loss_and_grads_impl(py, m, &file, engines),
            AnyModel::F64(m) => loss_and_grads_impl(py, m, &file, engines),
        }
    }
}

impl PyModel {
    fn from_file(py: Python<'_>, file: &TensorFile, dtype: Option<&str>) -> PyResult<Self> {
        let model = if model_dtype(py, dtype, Some(file))? {
            AnyModel::F32(read_model(file).map_err(|e| engine_error(py, e))?)
        } else {
            AnyModel::F64(read_model(file).map_err(|e| engine_error(py, e))?)
        };
        Ok(Self { model })
    }
}

/// The compiled module.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("PolyattnError", py.get_type::<PolyattnError>())?;
    m.add("RefusedError", py.get_type::<RefusedError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<ForwardState>()?;
    m.add_class::<PyModel>()?;
    m.add_function(wrap_pyfunction!(forward, m)?)?;
    m.add_function(wrap_pyfunction!(backward, m)?)?;
    m.add_function(wrap_pyfunction!(reference, m)?)?;
    Ok(())
}
