"""Array plumbing: dtypes, exact float16/bfloat16 conversion, folding of leading dims.

The engine computes in float32 or float64. float16 and bfloat16 inputs are converted
*exactly* to float32 (every float16 and bfloat16 value is a float32 value), computed in
float32, and the results are rounded back to the input dtype once at the end, round to
nearest, ties to even: PyTorch's math-backend convention for half-precision SDPA.

bfloat16 arrives as an ``ml_dtypes.bfloat16`` array, or as a ``uint16`` array of bit
patterns with ``dtype="bfloat16"`` (PyTorch: ``t.view(torch.uint16).numpy()``);
float16 as a NumPy ``float16`` array or as ``uint16`` bits with ``dtype="float16"``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence, Tuple

import numpy as np

from ._native import PolyattnError

STORAGE_DTYPES = ("float32", "float64", "float16", "bfloat16")


def error(kind: str, msg: str) -> PolyattnError:
    """A ``PolyattnError`` of ``kind`` (as the native module raises them)."""
    e = PolyattnError(msg)
    e.kind = kind  # type: ignore[attr-defined]
    return e


def _bf16_type() -> Any:
    try:
        import ml_dtypes  # type: ignore[import-not-found]
    except ImportError:  # pragma: no cover - exercised only without ml_dtypes
        return None
    return ml_dtypes.bfloat16


@dataclass(frozen=True)
class Storage:
    """How a tensor is stored: its logical dtype, and whether it came as raw uint16 bits."""

    name: str  # one of STORAGE_DTYPES
    raw: bool  # uint16 bit patterns (returned as uint16 too)

    @property
    def compute(self) -> np.dtype:
        """The dtype the engine computes in."""
        return np.dtype(np.float64 if self.name == "float64" else np.float32)


def storage_of(name: str, a: np.ndarray, dtype: Optional[str]) -> Storage:
    """The storage dtype of array ``a`` (called ``name`` in messages)."""
    if dtype is not None:
        if dtype not in ("float16", "bfloat16"):
            raise error(
                "invalid_parameter",
                f"dtype={dtype!r}: the dtype keyword names the format of uint16 bit "
                "patterns and must be 'float16' or 'bfloat16'",
            )
        if a.dtype != np.uint16:
            raise error(
                "mixed_dtype",
                f"`{name}` has dtype {a.dtype} but dtype={dtype!r} expects uint16 bit patterns",
            )
        return Storage(dtype, True)
    dt = a.dtype
    if dt == np.float32:
        return Storage("float32", False)
    if dt == np.float64:
        return Storage("float64", False)
    if dt == np.float16:
        return Storage("float16", False)
    if dt.name == "bfloat16":
        return Storage("bfloat16", False)
    if dt == np.uint16:
        raise error(
            "unsupported_dtype",
            f"`{name}` is a uint16 array: pass dtype='bfloat16' or dtype='float16' to say "
            "which format its bit patterns are",
        )
    raise error(
        "unsupported_dtype",
        f"`{name}` has dtype {dt}; supported: float32, float64, float16, bfloat16 "
        "(ml_dtypes.bfloat16, or uint16 bits with dtype=...)",
    )


def to_compute(a: np.ndarray, s: Storage) -> np.ndarray:
    """``a`` as a C-contiguous float32/float64 array: no copy when ``a`` is already a
    C-contiguous float32/float64 array, one copy otherwise; half formats exactly."""
    if s.name in ("float32", "float64"):
        return np.ascontiguousarray(a)
    bits = np.ascontiguousarray(a).view(np.uint16)
    if s.name == "float16":
        return bits.view(np.float16).astype(np.float32)
    # bfloat16 is the upper half of a float32.
    return (bits.astype(np.uint32) << 16).view(np.float32)


def round_bf16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), round to nearest, ties to even;
    NaN stays a quiet NaN, overflow goes to +-inf as IEEE rounding says."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    lsb = (bits >> 16) & 1
    rounded = ((bits + np.uint32(0x7FFF) + lsb) >> 16).astype(np.uint16)
    nan = np.isnan(x)
    if nan.any():
        rounded[nan] = ((bits[nan] >> 16) | 0x0040).astype(np.uint16)
    return rounded


def from_compute(x: np.ndarray, s: Storage) -> np.ndarray:
    """A float32/float64 result in the storage dtype ``s`` (rounded to nearest even for
    the half formats; raw storage gets uint16 bits back)."""
    if s.name in ("float32", "float64"):
        return x
    if s.name == "float16":
        with np.errstate(over="ignore"):  # overflow to +-inf is the IEEE result
            y = x.astype(np.float16)  # NumPy's conversion rounds to nearest even
        return y.view(np.uint16) if s.raw else y
    bits = round_bf16_bits(x)
    if s.raw:
        return bits
    bf16 = _bf16_type()
    if bf16 is None:  # pragma: no cover - an ml_dtypes input implies ml_dtypes
        return bits
    return bits.view(bf16)


def to_f64(a: np.ndarray, s: Storage) -> np.ndarray:
    """Exact float64 values of ``a`` (every supported format embeds in float64)."""
    return to_compute(a, s).astype(np.float64, copy=False)


def widen_bound(bound: np.ndarray, stored: np.ndarray, computed: np.ndarray, s: Storage) -> np.ndarray:
    """A bound on |computed - exact| made a bound on |stored - exact| where ``stored`` is
    ``computed`` rounded to the half format: add |stored - computed| (exact in float64:
    both are float32 values within a factor 2 of each other, Sterbenz) and round the sum
    up by one ulp."""
    if s.name in ("float32", "float64"):
        return bound
    st = to_f64(stored, s)
    return np.nextafter(bound + np.abs(st - computed.astype(np.float64)), np.inf)


def _fmt(x: float) -> str:
    if math.isnan(x):
        return "NaN"
    return "inf" if x > 0 else "-inf"


def check_finite(name: str, a: np.ndarray) -> None:
    """Raises ``PolyattnError`` (kind ``non_finite``) naming the first NaN/infinity of
    ``a`` by its index in the array as the caller shaped it."""
    if a.size == 0 or (np.isfinite(a.min()) and np.isfinite(a.max())):
        return  # NaN propagates through min/max and an infinity is an extreme: no temporaries
    finite = np.isfinite(a)
    if not finite.all():
        idx = tuple(int(i) for i in np.argwhere(~finite)[0])
        raise error(
            "non_finite",
            f"{name}{list(idx)} is {_fmt(float(a[idx]))}: inputs must be finite",
        )


@dataclass
class Folded:
    """Inputs folded to ``[heads, rows, cols]`` in the compute dtype. ``kv_lead`` is k's
    and v's leading dims (``lead`` but for fewer heads under grouped-query attention)."""

    arrays: Tuple[np.ndarray, ...]
    lead: Tuple[int, ...]
    storage: Storage
    kv_lead: Tuple[int, ...] = ()


def fold(named: Sequence[Tuple[str, Any]], dtype: Optional[str], gqa: bool = False) -> Folded:
    """Checks that the tensors share one storage dtype and the same leading dims, and
    folds each ``[..., rows, cols]`` to ``[prod(...), rows, cols]`` in the compute
    dtype (zero-copy when C-contiguous float32/float64). With ``gqa``, ``k`` and ``v``
    may have fewer heads (the last leading dim), equal to each other and dividing the
    first tensor's: grouped-query attention, PyTorch's ``enable_gqa``; folded, query
    head ``b H + h`` then reads key head ``b H_kv + h / (H / H_kv)``, which is
    ``(b H + h) / (H / H_kv)``, the engine's convention."""
    arrays = [(n, np.asarray(a)) for n, a in named]
    first = arrays[0]
    s0 = storage_of(first[0], first[1], dtype)
    out = []
    lead: Optional[Tuple[int, ...]] = None
    kv_lead: Optional[Tuple[int, ...]] = None
    for name, a in arrays:
        s = storage_of(name, a, dtype)
        if s != s0:
            raise error(
                "mixed_dtype",
                f"tensor `{name}` has dtype {s.name} but `{first[0]}` has {s0.name}; all "
                "inputs must share one dtype",
            )
        if a.ndim < 2:
            raise error(
                "shape_mismatch",
                f"shape mismatch for {name}: expected [..., rows, cols] (at least 2 "
                f"dimensions), got {list(a.shape)}",
            )
        this = tuple(a.shape[:-2])
        if lead is None:
            lead = this
        elif gqa and name in ("k", "v"):
            ok = (
                len(this) == len(lead)
                and len(this) >= 1
                and this[:-1] == lead[:-1]
                and this[-1] > 0
                and lead[-1] % this[-1] == 0
                and (kv_lead is None or this == kv_lead)
            )
            if not ok:
                raise error(
                    "shape_mismatch",
                    f"shape mismatch for {name} leading (batch/head) dimensions: expected "
                    f"{list(lead)} or the same with a head count dividing {lead[-1] if lead else 1}"
                    f"{' and equal to k' + chr(39) + 's ' + str(list(kv_lead)) if kv_lead is not None else ''}"
                    f" (enable_gqa), got {list(this)}",
                )
            kv_lead = this
        elif this != lead:
            hint = (
                "; k and v with fewer heads need enable_gqa=True"
                if name in ("k", "v") and len(this) == len(lead) and this[:-1] == lead[:-1]
                else ""
            )
            raise error(
                "shape_mismatch",
                f"shape mismatch for {name} leading (batch/head) dimensions: expected "
                f"{list(lead)}, got {list(this)} (no broadcasting{hint})",
            )
        c = to_compute(a, s)
        check_finite(name, c)
        heads = math.prod(this)
        out.append(c.reshape((heads,) + c.shape[-2:]))
    assert lead is not None
    return Folded(tuple(out), lead, s0, kv_lead if kv_lead is not None else lead)


def unfold(x: np.ndarray, lead: Tuple[int, ...]) -> np.ndarray:
    """``[heads, ...]`` back to ``[*lead, ...]``."""
    return x.reshape(lead + x.shape[1:])


def alibi_slopes(n_heads: int) -> np.ndarray:
    """The ALiBi slopes of ``n_heads`` heads (Press et al., the geometric sequence
    ``2^(-8 (h + 1) / n)`` for a power of two ``n``; otherwise the slopes of the largest
    power of two ``m < n_heads`` followed by every other slope of ``2 m`` heads), as
    float32, FlashAttention's ``alibi_slopes`` dtype."""
    if not isinstance(n_heads, (int, np.integer)) or isinstance(n_heads, bool) or n_heads < 1:
        raise error("invalid_parameter", f"n_heads={n_heads!r}: a positive integer")

    def power_of_two(n: int) -> list:
        return [2.0 ** (-8.0 * (h + 1) / n) for h in range(n)]

    m = 1 << (int(n_heads).bit_length() - 1)
    slopes = power_of_two(m)
    if m < n_heads:
        slopes += power_of_two(2 * m)[0::2][: n_heads - m]
    return np.asarray(slopes, dtype=np.float32)


def alibi_bias(slopes: Any, lead: Tuple[int, ...], n_q: int, n_k: int) -> np.ndarray:
    """FlashAttention's ALiBi bias in float64, ``-slope[h] * |i + n_k - n_q - j|`` for query
    i and key j (bottom-right aligned, as FlashAttention's ``alibi_slopes``), shaped
    ``slopes.shape + (n_q, n_k)``: slopes of shape ``(heads,)`` (the last leading dim of
    q) or ``(batch, heads)`` (q's two leading dims); for a 2-D q, one slope. The
    product is exact in float64 for float32 slopes (24 + 29 bits) while n < 2^29."""
    s = np.asarray(slopes)
    if s.dtype.kind not in "fiu" or s.dtype == np.bool_:
        raise error("unsupported_dtype", f"alibi_slopes has dtype {s.dtype}: expected a float array")
    s = s.astype(np.float64)
    want = [tuple(lead[-1:]), tuple(lead[-2:])] if lead else [(), (1,)]
    if s.shape not in want or (len(lead) >= 2 and s.ndim == 2 and s.shape != tuple(lead[-2:])):
        raise error(
            "shape_mismatch",
            f"alibi_slopes of shape {s.shape}: expected {' or '.join(str(w) for w in dict.fromkeys(want))} "
            "(q's heads, or its batch and heads)",
        )
    if not np.all(np.isfinite(s)):
        i = tuple(int(x) for x in np.argwhere(~np.isfinite(s))[0])
        raise error("non_finite", f"alibi_slopes{list(i)} = {s[i]} is not finite")
    i = np.arange(n_q, dtype=np.float64)[:, None]
    j = np.arange(n_k, dtype=np.float64)[None, :]
    dist = np.abs(i + (n_k - n_q) - j)
    return -s[..., None, None] * dist


def mask_as_f64(m: np.ndarray) -> np.ndarray:
    """An ``attn_mask`` as a float64 additive bias: a boolean mask (True = attend) as
    0 / -inf, a float mask exactly (float16, bfloat16, float32 and float64 values are
    float64 values)."""
    if m.dtype == np.bool_:
        return np.where(m, 0.0, -np.inf)
    if str(m.dtype) == "bfloat16":
        return m.astype(np.float32).astype(np.float64)
    if m.dtype.kind == "f":
        return m.astype(np.float64)
    raise error(
        "unsupported_dtype",
        f"attn_mask has dtype {m.dtype}: expected bool (True = attend) or a float additive bias",
    )


def fold_bias(
    attn_mask: Any,
    lead: Tuple[int, ...],
    n_q: int,
    n_k: int,
    compute: np.dtype,
    alibi_slopes: Any = None,
) -> Optional[np.ndarray]:
    """PyTorch's ``attn_mask`` as the engine's additive score bias ``[1 or heads, n_q,
    n_k]`` in the compute dtype: a boolean mask (True = attend) becomes 0 / -inf, a
    float mask is added to the scores as it is. ``alibi_slopes`` (:func:`alibi_bias`)
    adds FlashAttention's ALiBi bias. Both are summed exactly in float64
    (:func:`mask_as_f64`; the ALiBi term is exact for float32 slopes) and rounded once
    to the compute dtype, which is exact for float16/bfloat16/float32 masks in float32
    and for anything in float64. The result must broadcast to ``lead + (n_q, n_k)``; one
    shared head is kept as one (no copy per head)."""
    if attn_mask is None and alibi_slopes is None:
        return None
    m = None if attn_mask is None else mask_as_f64(np.asarray(attn_mask))
    if alibi_slopes is not None:
        alibi = alibi_bias(alibi_slopes, lead, n_q, n_k)
        try:
            m = alibi if m is None else m + alibi
        except ValueError:
            raise error(
                "shape_mismatch",
                f"attn_mask of shape {np.shape(attn_mask)} and the ALiBi bias of shape "
                f"{alibi.shape} do not broadcast together",
            ) from None
    target = tuple(lead) + (n_q, n_k)
    try:
        # It must broadcast *to* target: the result is target itself, never larger.
        ok = np.broadcast_shapes(m.shape, target) == target
    except ValueError:
        ok = False
    if not ok:
        raise error(
            "shape_mismatch",
            f"attn_mask of shape {m.shape} does not broadcast to {target} "
            "(the leading dims of q, then n_q, n_k)",
        )
    with np.errstate(over="ignore"):
        b = m.astype(compute)
    grew = np.isinf(b) & np.isfinite(m)
    if grew.any():
        idx = tuple(int(i) for i in np.argwhere(grew)[0])
        raise error(
            "overflow",
            f"attn_mask{list(idx)} = {m[idx]} overflows {np.dtype(compute).name} (the "
            "compute dtype); use -inf (or a boolean mask) to hide a key",
        )
    # One shared head when every leading dim broadcasts.
    if all(x == 1 for x in b.shape[:-2]):
        return np.ascontiguousarray(np.broadcast_to(b.reshape(b.shape[-2:]), (n_q, n_k))[None])
    full = np.broadcast_to(b, target)
    heads = int(np.prod(lead)) if lead else 1
    return np.ascontiguousarray(full.reshape(heads, n_q, n_k))
