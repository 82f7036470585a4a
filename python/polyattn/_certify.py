"""The certified reference (exact f64 + a priori rounding bound) and certified distances.

The reference is the exact engine run in float64 plus a rigorous a priori bound on its
rounding error, entry by entry (Rust: ``polyattn::attention::exact::reference::exact_reference``,
docs/math.md §5.5): the exact real-number result of attention on the given inputs lies in
``value +- bound``. It is not an arbitrary-precision (MPFR) reference; those are left
out of the Python package (see python/README.md).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np

from . import _native
from ._api import mask_name
from ._arrays import Storage, error, fold, fold_bias, storage_of, to_f64, unfold

_U = 2.0**-53  # float64 unit roundoff


def _tau(scale: Optional[float], d: int, compute: str) -> float:
    """The scale the engine computing in ``compute`` uses: the given one or
    1/sqrt(d) (both IEEE correctly rounded, as in Rust), rounded once to ``compute``."""
    tau = float(scale) if scale is not None else 1.0 / math.sqrt(d)
    return float(np.float32(tau)) if compute == "float32" else tau


@dataclass
class ReferenceResult:
    """Certified enclosures of exact attention (float64 arrays, leading dims kept).

    The exact real-number value of each entry lies in ``x - x_bound .. x + x_bound``
    for ``x`` in o, dq, dk, dv (gradients only when ``do`` was given). ``lse`` is the
    float64 row log-sum-exp (no bound). ``scale`` is the tau used.
    """

    o: np.ndarray
    o_bound: np.ndarray
    lse: np.ndarray
    scale: float
    dq: Optional[np.ndarray] = None
    dk: Optional[np.ndarray] = None
    dv: Optional[np.ndarray] = None
    dq_bound: Optional[np.ndarray] = None
    dk_bound: Optional[np.ndarray] = None
    dv_bound: Optional[np.ndarray] = None


def reference(
    q: Any,
    k: Any,
    v: Any,
    do: Any = None,
    *,
    is_causal: bool = False,
    causal_alignment: str = "top-left",
    scale: Optional[float] = None,
    dtype: Optional[str] = None,
    compute_dtype: Optional[str] = None,
    enable_gqa: bool = False,
    window: Any = None,
    attn_mask: Any = None,
    alibi_slopes: Any = None,
    softcap: Optional[float] = None,
) -> ReferenceResult:
    """The exact float64 result with an a priori rounding bound on every entry: a
    certified enclosure of exact attention (and, with ``do``, of its gradients).

    Inputs as in :func:`polyattn.attention` (any supported dtype; converted exactly to
    float64). ``compute_dtype`` says which problem to enclose: the scale tau is
    rounded to it as the engine computing in that dtype does (default: float32 for
    float32/float16/bfloat16 inputs, float64 for float64 inputs), so the enclosure is
    of the very problem :func:`polyattn.attention` solves for these inputs.

    ``window`` is a sliding window and ``attn_mask`` a boolean mask or additive bias
    (``alibi_slopes`` adds FlashAttention's ALiBi bias to it), as in
    :func:`polyattn.attention`; a float ``attn_mask`` is rounded to ``compute_dtype``
    first, as the engine computing in that dtype rounds it (like the scale), so the
    enclosure is of the very problem the engine solved. ``softcap`` (as in
    :func:`polyattn.attention`) is rounded to ``compute_dtype`` likewise, and the
    bound covers the capped scores and their slope in the gradients.

    With ``enable_gqa`` k and v may have fewer heads (as in :func:`polyattn.attention`);
    dk and dv are then per key/value head, enclosed as the sums of their groups' shares
    (the shares' bounds plus the float64 summation's rounding).

    Cost: about three exact float64 forwards (five with ``do``).
    """
    mask = mask_name(is_causal, causal_alignment, window)
    named = [("q", q), ("k", k), ("v", v)] + ([("do", do)] if do is not None else [])
    f = fold(named, dtype, gqa=enable_gqa)
    compute = compute_dtype or f.storage.compute.name
    if compute not in ("float32", "float64"):
        raise error("invalid_parameter", f"compute_dtype={compute!r}: float32 or float64")
    s = f.storage
    arrays = [to_f64(a, s) if s.name != "float64" else a for a in f.arrays]
    arrays = [np.ascontiguousarray(a, dtype=np.float64) for a in arrays]
    tau = _tau(scale, arrays[0].shape[-1], compute)
    g = arrays[3] if do is not None else None
    # The bias the engine adds, rounded to the compute dtype as it is (like tau).
    bias = fold_bias(
        attn_mask, f.lead, arrays[0].shape[1], arrays[1].shape[1], np.dtype(compute), alibi_slopes
    )
    if bias is not None:
        bias = bias.astype(np.float64)
    cap = None
    if softcap:  # None and 0.0 (FlashAttention's "no cap") alike
        cap = float(softcap)
        cap = float(np.float32(cap)) if compute == "float32" else cap
    out = _native.reference(
        arrays[0], arrays[1], arrays[2], g, mask=mask, scale=tau, bias=bias, softcap=cap
    )
    fields = {
        name: unfold(val, f.kv_lead if name[:2] in ("dk", "dv") else f.lead)
        for name, val in out.items()
    }
    return ReferenceResult(scale=tau, **fields)


def _abs_diff_up(c: np.ndarray, r: np.ndarray) -> np.ndarray:
    """An upper bound on |c - r| (fl(c - r) is within half an ulp)."""
    return np.nextafter(np.abs(c - r), np.inf)


def _abs_diff_down(c: np.ndarray, r: np.ndarray) -> np.ndarray:
    """A lower bound on |c - r| (0 where c == r)."""
    return np.maximum(np.nextafter(np.abs(c - r), -np.inf), 0.0)


@dataclass
class TensorCertificate:
    """Certified distances of one candidate tensor to the exact result.

    Attributes:
        name: ``"o"``, ``"dq"``, ``"dk"`` or ``"dv"``.
        max_abs_error_upper: certified upper bound on max |cand - exact| over entries:
            max(|cand - ref| + bound), rounded up.
        max_abs_error_lower: certified lower bound: max(|cand - ref| - bound, 0),
            rounded down (a positive value proves the candidate is not exact there).
        row_mean_error: float64 ``[..., rows]``: mean over each row's entries of
            ``cand - ref`` (the signed error, approximate).
        row_mean_lower, row_mean_upper: a certified interval for each row's mean of
            ``cand - exact``.
        max_reference_bound: the largest rounding bound of the reference.
    """

    name: str
    max_abs_error_upper: float
    max_abs_error_lower: float
    row_mean_error: np.ndarray
    row_mean_lower: np.ndarray
    row_mean_upper: np.ndarray
    max_reference_bound: float

    def summary(self) -> Dict[str, Any]:
        """The scalar facts, for JSON and Markdown."""
        biased = (self.row_mean_lower > 0) | (self.row_mean_upper < 0)
        return {
            "tensor": self.name,
            "max_abs_error_upper": self.max_abs_error_upper,
            "max_abs_error_lower": self.max_abs_error_lower,
            "max_reference_bound": self.max_reference_bound,
            "rows": int(self.row_mean_error.size),
            "max_abs_row_mean_error": float(np.max(np.abs(self.row_mean_error), initial=0.0)),
            "rows_certified_biased": int(np.count_nonzero(biased)),
        }


def certify_tensor(name: str, cand: np.ndarray, ref: np.ndarray, bound: np.ndarray) -> TensorCertificate:
    """Certified distances of ``cand`` to the exact values enclosed by ``ref +- bound``
    (all float64, same shape)."""
    if cand.shape != ref.shape:
        raise error(
            "shape_mismatch",
            f"shape mismatch for {name}: expected {list(ref.shape)}, got {list(cand.shape)}",
        )
    if not np.all(np.isfinite(cand)):
        raise error("non_finite", f"{name} holds NaN or an infinity: cannot certify a distance")
    # Entrywise: |cand - exact| <= |cand - ref| + bound and >= |cand - ref| - bound;
    # each float64 operation is rounded outward by one ulp (nextafter).
    upper = np.nextafter(_abs_diff_up(cand, ref) + bound, np.inf)
    lower = np.maximum(np.nextafter(_abs_diff_down(cand, ref) - bound, -np.inf), 0.0)
    # Row means: the exact mean of (cand - exact) lies in mean(cand - ref) +- mean(bound).
    # Computing mean(d) in float64 from fl(cand - ref) errs by at most u sum|d| (the
    # subtractions) + gamma_m sum|d| (any summation order; NumPy's pairwise sum does
    # better) + u |mean| (the division): with m u < 1e-3, (m + 3) u (1 + 1e-3) mean|d|
    # covers it; mean(bound) is rounded up by the same allowance. The 1.01 factor and
    # the final nextafter cover the rounding of these allowances themselves.
    m = cand.shape[-1]
    d = cand - ref
    mean = d.mean(axis=-1)
    slack = 1.01 * (m + 3) * _U
    err = slack * np.abs(d).mean(axis=-1) + bound.mean(axis=-1) * (1.0 + slack)
    row_lo = np.nextafter(mean - err * 1.01, -np.inf)
    row_hi = np.nextafter(mean + err * 1.01, np.inf)
    return TensorCertificate(
        name=name,
        max_abs_error_upper=float(upper.max()),
        max_abs_error_lower=float(lower.max()),
        row_mean_error=mean,
        row_mean_lower=row_lo,
        row_mean_upper=row_hi,
        max_reference_bound=float(bound.max()),
    )


@dataclass
class CertificationReport:
    """Certified distances of candidate outputs to exact attention.

    ``tensors`` holds one :class:`TensorCertificate` per candidate given. The reference
    is the exact engine in float64 plus its a priori rounding bound (see
    :func:`polyattn.reference`).
    """

    tensors: List[TensorCertificate]
    scale: float
    compute_dtype: str
    reference: str = "exact f64 + a priori rounding bound"

    def __getitem__(self, name: str) -> TensorCertificate:
        for t in self.tensors:
            if t.name == name:
                return t
        raise KeyError(name)

    def to_dict(self) -> Dict[str, Any]:
        """The report's scalar facts as plain Python data."""
        return {
            "reference": self.reference,
            "scale": self.scale,
            "compute_dtype": self.compute_dtype,
            "tensors": [t.summary() for t in self.tensors],
        }

    def to_json(self) -> str:
        """:meth:`to_dict` as JSON."""
        return json.dumps(self.to_dict(), indent=2)

    def to_markdown(self) -> str:
        """A Markdown table, one line per tensor."""
        lines = [
            f"Reference: {self.reference} (scale {self.scale!r}, problem in {self.compute_dtype}).",
            "",
            "| tensor | max abs error <= | max abs error >= | reference bound | max abs row-mean error | rows certified biased |",
            "|---|---|---|---|---|---|",
        ]
        for t in self.tensors:
            s = t.summary()
            lines.append(
                f"| {s['tensor']} | {s['max_abs_error_upper']:.3e} | {s['max_abs_error_lower']:.3e} "
                f"| {s['max_reference_bound']:.3e} | {s['max_abs_row_mean_error']:.3e} "
                f"| {s['rows_certified_biased']} of {s['rows']} |"
            )
        return "\n".join(lines) + "\n"


def certify_outputs(
    q: Any,
    k: Any,
    v: Any,
    *,
    o: Any = None,
    dq: Any = None,
    dk: Any = None,
    dv: Any = None,
    do: Any = None,
    is_causal: bool = False,
    causal_alignment: str = "top-left",
    scale: Optional[float] = None,
    dtype: Optional[str] = None,
    compute_dtype: Optional[str] = None,
    enable_gqa: bool = False,
    window: Any = None,
    attn_mask: Any = None,
    alibi_slopes: Any = None,
    cu_seqlens_q: Any = None,
    cu_seqlens_k: Any = None,
    softcap: Optional[float] = None,
) -> CertificationReport:
    """Certifies candidate outputs (yours, PyTorch's, polyattn's) against exact attention.

    For each candidate given (``o``; ``dq``, ``dk``, ``dv`` need ``do``), in any
    supported dtype (converted exactly to float64; uint16 bits with ``dtype=`` like
    the inputs): a certified upper bound on max |cand - exact|, a certified lower bound,
    and each row's signed mean error with a certified interval. The reference is
    :func:`reference` (exact float64 + a priori rounding bound), computed for the same
    ``is_causal``, ``causal_alignment``, ``window``, ``attn_mask``, ``alibi_slopes``
    (FlashAttention's ALiBi), ``softcap`` (Gemma 2's score cap), ``scale``,
    ``compute_dtype`` and ``enable_gqa`` (dk, dv then per key/value head, against their
    groups' sums).

    FlashAttention's packed variable-length layout (``flash_attn_varlen_func``): with
    ``cu_seqlens_q`` and ``cu_seqlens_k`` (int arrays of ``batch + 1`` cumulative
    offsets, starting at 0), q, dq, do and o are ``[total_q, heads, d]``, k, v, dk, dv
    ``[total_k, heads_kv, d]``, and sequence b is the rows ``cu[b]:cu[b + 1]`` of each;
    every sequence is its own problem (masks and windows apply per sequence, e.g.
    ``is_causal=True, causal_alignment="bottom-right"`` as FlashAttention), certified
    as above, and the report merges them: the maxima over sequences, and the row
    means as ``[total, heads]``. ``attn_mask`` is refused there (it has no packed form).
    """
    cands = {"o": o, "dq": dq, "dk": dk, "dv": dv}
    if cu_seqlens_q is not None or cu_seqlens_k is not None:
        return _certify_varlen(
            q, k, v, cands, do, cu_seqlens_q, cu_seqlens_k, attn_mask,
            dict(is_causal=is_causal, causal_alignment=causal_alignment, scale=scale,
                 dtype=dtype, compute_dtype=compute_dtype, enable_gqa=enable_gqa,
                 window=window, alibi_slopes=alibi_slopes, softcap=softcap),
        )
    given = {n: c for n, c in cands.items() if c is not None}
    if not given:
        raise error("invalid_parameter", "give at least one of o, dq, dk, dv to certify")
    if do is None and any(n != "o" for n in given):
        raise error("invalid_parameter", "certifying dq, dk or dv needs the upstream gradient do")
    ref = reference(
        q,
        k,
        v,
        do,
        is_causal=is_causal,
        causal_alignment=causal_alignment,
        scale=scale,
        dtype=dtype,
        compute_dtype=compute_dtype,
        enable_gqa=enable_gqa,
        window=window,
        attn_mask=attn_mask,
        alibi_slopes=alibi_slopes,
        softcap=softcap,
    )
    storage = fold([("q", q)], dtype).storage
    compute = compute_dtype or storage.compute.name
    out = []
    for name, c in given.items():
        arr = np.asarray(c)
        if dtype is not None and arr.dtype == np.uint16:
            s = Storage(dtype, True)
        else:
            s = storage_of(name, arr, None)
        c64 = to_f64(arr, s)
        out.append(certify_tensor(name, c64, getattr(ref, name), getattr(ref, name + "_bound")))
    return CertificationReport(tensors=out, scale=ref.scale, compute_dtype=compute)


def _offsets(name: str, cu: Any, total: int) -> np.ndarray:
    """Validated cumulative sequence offsets: 1-D integers, 0 first, non-decreasing,
    ``total`` last."""
    a = np.asarray(cu)
    if a.ndim != 1 or a.size < 2 or a.dtype.kind not in "iu":
        raise error(
            "invalid_parameter",
            f"{name} must be a 1-D integer array of batch + 1 offsets, got shape {a.shape}, dtype {a.dtype}",
        )
    a = a.astype(np.int64)
    if a[0] != 0 or a[-1] != total or np.any(np.diff(a) < 0):
        raise error(
            "invalid_parameter",
            f"{name} = {a.tolist()} must start at 0, never decrease and end at {total} "
            "(the packed tensor's rows)",
        )
    return a


def _certify_varlen(q, k, v, cands, do, cu_q, cu_k, attn_mask, kw) -> CertificationReport:
    """:func:`certify_outputs` for FlashAttention's packed layout, one sequence at a time."""
    if cu_q is None or cu_k is None:
        raise error("invalid_parameter", "the packed layout needs both cu_seqlens_q and cu_seqlens_k")
    if attn_mask is not None:
        raise error("invalid_parameter", "attn_mask has no packed form: give a window or alibi_slopes instead")
    arrs = {"q": np.asarray(q), "k": np.asarray(k), "v": np.asarray(v)}
    if do is not None:
        arrs["do"] = np.asarray(do)
    given = {n: np.asarray(c) for n, c in cands.items() if c is not None}
    for name, a in list(arrs.items()) + list(given.items()):
        if a.ndim != 3:
            raise error(
                "shape_mismatch",
                f"{name} of shape {list(a.shape)}: the packed layout is [total, heads, d]",
            )
    oq = _offsets("cu_seqlens_q", cu_q, arrs["q"].shape[0])
    ok = _offsets("cu_seqlens_k", cu_k, arrs["k"].shape[0])
    if oq.size != ok.size:
        raise error(
            "shape_mismatch",
            f"cu_seqlens_q has {oq.size - 1} sequences, cu_seqlens_k {ok.size - 1}",
        )
    on_q = {"q", "do", "o", "dq"}
    for name, a in list(arrs.items()) + list(given.items()):
        total = oq[-1] if name in on_q else ok[-1]
        if a.shape[0] != total:
            raise error(
                "shape_mismatch",
                f"{name} has {a.shape[0]} packed rows, cu_seqlens_{'q' if name in on_q else 'k'} "
                f"ends at {total}",
            )
    parts: Dict[str, List[TensorCertificate]] = {n: [] for n in given}
    report = None
    for b in range(oq.size - 1):
        (q0, q1), (k0, k1) = (oq[b], oq[b + 1]), (ok[b], ok[b + 1])
        if q1 == q0:
            continue
        if k1 == k0:
            raise error("invalid_parameter", f"sequence {b} has {q1 - q0} queries and no key")

        def seq(name: str, a: np.ndarray) -> np.ndarray:
            lo, hi = (q0, q1) if name in on_q else (k0, k1)
            return np.ascontiguousarray(np.swapaxes(a[lo:hi], 0, 1))  # [heads, n, d]

        report = certify_outputs(
            seq("q", arrs["q"]),
            seq("k", arrs["k"]),
            seq("v", arrs["v"]),
            do=seq("do", arrs["do"]) if "do" in arrs else None,
            **{n: seq(n, c) for n, c in given.items()},
            **kw,
        )
        for t in report.tensors:
            parts[t.name].append(t)
    if report is None:
        raise error("invalid_parameter", "every sequence is empty: nothing to certify")

    def rows(ts: List[TensorCertificate], field: str) -> np.ndarray:
        # Each [heads, n_b] -> [n_b, heads], stacked along the packed rows.
        return np.concatenate([np.swapaxes(getattr(t, field), 0, 1) for t in ts], axis=0)

    merged = [
        TensorCertificate(
            name=n,
            max_abs_error_upper=max(t.max_abs_error_upper for t in ts),
            max_abs_error_lower=max(t.max_abs_error_lower for t in ts),
            row_mean_error=rows(ts, "row_mean_error"),
            row_mean_lower=rows(ts, "row_mean_lower"),
            row_mean_upper=rows(ts, "row_mean_upper"),
            max_reference_bound=max(t.max_reference_bound for t in ts),
        )
        for n, ts in parts.items()
    ]
    return CertificationReport(tensors=merged, scale=report.scale, compute_dtype=report.compute_dtype)
