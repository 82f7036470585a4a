//! The stacked-tensor loader shared by `attention`, `certify` (one head's
//! certification of the polynomial engine) and the `safetensors_input` fuzz target:
//! `q`, `k`, `v`, optional `do` and score bias (`bias` and `alibi_slopes`) of a file as
//! `[stack, rows, cols]` stacks of one compute dtype, shapes checked against `q`'s
//! leading dimensions. Entries of `q`, `k`, `v` and the bias are checked by the engines
//! (once, on the stacks), whose errors `Loaded::in_file_terms` restates in the file's
//! indices; `do` is checked here as well, so that it fails before the forward runs.

use super::shapes::HeadShape;
use polyattn::attention::poly::{self, PolyConfig};
use polyattn::error::{Error, Result};
use polyattn::io::{DType, TensorFile};
use polyattn::scalar::Real;
use polyattn::tensor::{check_finite, check_nonempty, Tensor3};

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

/// The score bias of the file as `[1 or stack, n_q, n_k]` in `T`: the optional `bias`
/// tensor ([`super::read_bias`]) plus, when the file holds `alibi_slopes`,
/// FlashAttention's ALiBi bias ([`super::add_alibi`]), summed in f64 (exact for f32
/// slopes below n = 2^29, plus the bias entry) and rounded once to `T`.
fn load_bias<T: Real>(file: &TensorFile, sq: &HeadShape, n_k: usize) -> Result<Option<Tensor3<T>>> {
    let n_q = sq.rows;
    let bias = super::read_bias(file, &sq.lead, (n_q, n_k))?;
    let (batch, heads) = match sq.lead.split_last() {
        Some((h, b)) => (b, *h),
        None => (&[][..], 1),
    };
    let stack = sq.heads()?;
    let (count, data) = match super::read_alibi_slopes(file, batch, heads)? {
        Some(slopes) => {
            let sum = super::add_alibi(&slopes, stack, (n_q, n_k), |h, i, j| {
                bias.as_ref().map_or(0.0, |b| b.at(h, (n_q, n_k), i, j))
            })?;
            (stack, sum)
        }
        None => match bias {
            None => return Ok(None),
            Some(b) => (if b.shared { 1 } else { stack }, b.data),
        },
    };
    let data = data.into_iter().map(T::from_f64).collect();
    Tensor3::from_vec(count, n_q, n_k, data).map(Some)
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

    /// The polynomial engine has no softcap: its typed refusal (with R, B and
    /// sqrt(ln n) of the first head) when `softcap` is set. (A bias goes to the engine,
    /// which takes key padding and refuses any other, [`poly::key_padding`].)
    pub(crate) fn check_poly_takes(&self, cfg: &PolyConfig, softcap: Option<f64>) -> Result<()> {
        let Some(c) = softcap else {
            return Ok(());
        };
        let (q, k, v) = (self.q.head(0), self.k.head(0), self.v.head(0));
        let p = polyattn::attention::Problem::new(q, k, v, &cfg.attention())?;
        Err(poly::plan::refuse_softcap(&p, c))
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
    if file.contains("cu_seqlens_q") || file.contains("cu_seqlens_k") {
        // A packed [total, heads, d] file read as stacks would attend across heads.
        return Err(Error::InvalidParameter {
            name: "cu_seqlens_q",
            value: "present".into(),
            reason: "the file holds FlashAttention's packed sequences (cu_seqlens_q / \
                     cu_seqlens_k): only `certify --candidate --layout varlen` reads that \
                     layout; run the engines one sequence at a time"
                .into(),
        });
    }
    Ok(Loaded {
        shapes: [sq, sk, sv],
        q,
        k,
        v,
        d_o,
        bias,
    })
}
