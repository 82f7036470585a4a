"""Attention forward and backward on NumPy arrays in PyTorch's ``[..., n, d]`` layout."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from . import _native
from ._arrays import Folded, error, fold, fold_bias, from_compute, unfold, widen_bound

ENGINES = ("exact", "poly", "auto")
GRADIENTS = ("substituted", "polynomial-model")


def mask_name(is_causal: bool, causal_alignment: str, window: Any = None) -> str:
    """The engine's mask name for SDPA-style arguments and a FlashAttention-style window.

    ``window = (left, right)`` is FlashAttention's ``window_size`` (``-1`` unbounded):
    query i sees key j iff ``c - left <= j <= c + right`` with the diagonal ``c = i``
    (``causal_alignment="top-left"``) or ``c = i + n_k - n_q`` (``"bottom-right"``,
    FlashAttention's). With ``is_causal`` the right side is capped at 0, as
    FlashAttention does with ``causal=True``.
    """
    if causal_alignment not in ("top-left", "bottom-right"):
        raise error(
            "invalid_parameter",
            f"causal_alignment={causal_alignment!r}: expected 'top-left' (PyTorch's "
            "is_causal) or 'bottom-right' (FlashAttention-2's, for decoding with a cache)",
        )
    if window is None:
        if not is_causal:
            return "none"
        return "causal" if causal_alignment == "top-left" else "causal-bottom-right"
    try:
        left, right = window
        ok = all(isinstance(x, (int, np.integer)) and not isinstance(x, bool) for x in (left, right))
    except (TypeError, ValueError):
        ok = False
    if not ok or left < -1 or right < -1:
        raise error(
            "invalid_parameter",
            f"window={window!r}: expected (left, right), each a count of keys >= 0 or -1 "
            "for unbounded (FlashAttention's window_size)",
        )
    if is_causal:
        right = 0
    kind = "window-top-left" if causal_alignment == "top-left" else "window"
    return f"{kind}({int(left)},{int(right)})"


def check_unsupported(dropout_p: float) -> None:
    """Raises for the SDPA options the engine does not have (never emulated)."""
    if dropout_p != 0.0:
        raise NotImplementedError(
            f"dropout_p={dropout_p}: attention dropout is not implemented (polyattn's "
            "results are deterministic and certified); use dropout_p=0.0"
        )


def check_engine(engine: str, eps: Optional[float], degree: Optional[int]) -> None:
    """Validates engine, eps and degree together."""
    if engine not in ENGINES:
        raise error("invalid_parameter", f"engine={engine!r}: expected one of {ENGINES}")
    if engine == "exact" and (eps is not None or degree is not None):
        raise error(
            "invalid_parameter",
            "eps and degree configure the polynomial engine; engine='exact' takes neither",
        )
    if eps is not None and degree is not None:
        raise error("invalid_parameter", "give eps or degree, not both")


@dataclass
class AttentionResult:
    """The result of :func:`polyattn.attention`.

    Attributes:
        o: the output ``[..., n_q, d_v]`` in the input dtype.
        lse: the row log-sum-exp ``[..., n_q]`` (``-inf`` for a fully masked row); for
            the polynomial engine the log of its normaliser (exact rows: the exact lse).
        engine: ``"exact"`` or ``"poly"``: the engine that ran.
        engine_reason: ``"requested"``, or for ``engine="auto"`` why that engine ran.
        o_bound: polynomial engine only: float64 ``[..., n_q, d_v]``, a certified bound
            on ``|o - O_exact|`` entry by entry (exact attention of the same inputs, in
            real arithmetic), including the final rounding to the input dtype.
        plans: polynomial engine only: one dict per head (flattened leading dims) with
            ``R``, ``B``, ``sqrt_ln_n``, ``degree``, ``rank``, ``eps_poly``,
            ``predicted_speedup``, ``bound_o``, ...
        R, B, degree, rank, sqrt_ln_n: polynomial engine only: the maxima over heads of
            the certified exponent radius, the entry bound max|q|,|k|, the degree and the
            rank r = C(d + g, g); sqrt(ln n) is the theory's threshold for B.
    """

    o: np.ndarray
    lse: np.ndarray
    engine: str
    engine_reason: str
    o_bound: Optional[np.ndarray] = None
    plans: Optional[List[Dict[str, Any]]] = None
    R: Optional[float] = None
    B: Optional[float] = None
    degree: Optional[int] = None
    rank: Optional[int] = None
    sqrt_ln_n: Optional[float] = None


@dataclass
class BackwardResult:
    """The result of :func:`polyattn.attention_backward`: the forward's fields plus the
    gradients.

    Attributes:
        dq, dk, dv: the gradients, shaped and typed like q, k, v.
        gradient: polynomial engine only: the gradient kind computed
            (``"substituted"`` or ``"polynomial-model"``).
        dq_bound, dk_bound, dv_bound: polynomial engine only: float64 certified bounds
            on the distance to the *exact* gradients of exact attention, entry by entry.
        o, lse, engine, engine_reason, o_bound, plans, R, B, degree, rank, sqrt_ln_n:
            as in :class:`AttentionResult`.
    """

    dq: np.ndarray
    dk: np.ndarray
    dv: np.ndarray
    o: np.ndarray
    lse: np.ndarray
    engine: str
    engine_reason: str
    gradient: Optional[str] = None
    dq_bound: Optional[np.ndarray] = None
    dk_bound: Optional[np.ndarray] = None
    dv_bound: Optional[np.ndarray] = None
    o_bound: Optional[np.ndarray] = None
    plans: Optional[List[Dict[str, Any]]] = None
    R: Optional[float] = None
    B: Optional[float] = None
    degree: Optional[int] = None
    rank: Optional[int] = None
    sqrt_ln_n: Optional[float] = None


@dataclass
class _Forward:
    """A forward call's outputs in the compute dtype, and the native state."""

    folded: Folded
    out: Dict[str, Any]
    state: Any
    fields: Dict[str, Any] = field(default_factory=dict)
    bias: Optional[np.ndarray] = None


def run_forward(
    named: List[Tuple[str, Any]],
    *,
    is_causal: bool,
    causal_alignment: str,
    scale: Optional[float],
    engine: str,
    eps: Optional[float],
    degree: Optional[int],
    dtype: Optional[str],
    polynomial: str = "chebyshev",
    enable_gqa: bool = False,
    window: Any = None,
    attn_mask: Any = None,
    alibi_slopes: Any = None,
    softcap: Optional[float] = None,
) -> _Forward:
    """Folds the inputs (q, k, v first, then any others) and runs the native forward."""
    mask = mask_name(is_causal, causal_alignment, window)
    check_engine(engine, eps, degree)
    if scale is not None:
        scale = float(scale)
    if softcap is not None:
        # FlashAttention's convention: softcap=0.0 (its default) means no cap.
        softcap = float(softcap) or None
    f = fold(named, dtype, gqa=enable_gqa)
    q, k, v = f.arrays[:3]
    bias = fold_bias(attn_mask, f.lead, q.shape[1], k.shape[1], q.dtype, alibi_slopes)
    out, state = _native.forward(
        q,
        k,
        v,
        mask=mask,
        scale=scale,
        engine=engine,
        eps=eps,
        degree=degree,
        polynomial=polynomial,
        bias=bias,
        softcap=softcap,
    )
    s = f.storage
    o = from_compute(out["o"], s)
    fields: Dict[str, Any] = {
        "o": unfold(o, f.lead),
        "lse": unfold(from_compute(out["lse"], s), f.lead),
        "engine": out["engine"],
        "engine_reason": out["engine_reason"],
    }
    if out["engine"] == "poly":
        plans = out["plans"]
        fields.update(
            o_bound=unfold(widen_bound(out["o_bound"], o, out["o"], s), f.lead),
            plans=plans,
            R=max(p["R"] for p in plans),
            B=max(p["B"] for p in plans),
            degree=max(p["degree"] for p in plans),
            rank=max(p["rank"] for p in plans),
            sqrt_ln_n=plans[0]["sqrt_ln_n"],
        )
    return _Forward(f, out, state, fields, bias)


def run_backward(fw: _Forward, do3: np.ndarray, gradient: str) -> Dict[str, Any]:
    """The native backward from a forward, ``do3`` folded in the compute dtype; results
    in the storage dtype, unfolded."""
    if gradient not in GRADIENTS:
        raise error("invalid_parameter", f"gradient={gradient!r}: expected one of {GRADIENTS}")
    q, k, v = fw.folded.arrays[:3]
    g = _native.backward(fw.state, q, k, v, do3, gradient=gradient, bias=fw.bias)
    s = fw.folded.storage
    res: Dict[str, Any] = {}
    for name in ("dq", "dk", "dv"):
        lead = fw.folded.lead if name == "dq" else fw.folded.kv_lead
        stored = from_compute(g[name], s)
        res[name] = unfold(stored, lead)
        if name + "_bound" in g:
            res[name + "_bound"] = unfold(widen_bound(g[name + "_bound"], stored, g[name], s), lead)
    if "gradient" in g:
        res["gradient"] = g["gradient"]
    return res


def attention(
    q: Any,
    k: Any,
    v: Any,
    *,
    is_causal: bool = False,
    causal_alignment: str = "top-left",
    scale: Optional[float] = None,
    engine: str = "exact",
    eps: Optional[float] = None,
    degree: Optional[int] = None,
    polynomial: str = "chebyshev",
    dtype: Optional[str] = None,
    attn_mask: Any = None,
    dropout_p: float = 0.0,
    enable_gqa: bool = False,
    window: Any = None,
    alibi_slopes: Any = None,
    softcap: Optional[float] = None,
) -> AttentionResult:
    """Attention forward, ``O = softmax(scale * q k^T + mask) v``, with its row log-sum-exp.

    Args:
        q: ``[..., n_q, d]``; k: ``[..., n_k, d]``; v: ``[..., n_k, d_v]``: NumPy arrays
            (or array-likes) with the same leading (batch/head) dims, which fold into
            heads (with ``enable_gqa``, k and v may have fewer heads). float32 and float64 are computed natively; float16 and bfloat16
            (``ml_dtypes.bfloat16``, or uint16 bits with ``dtype=``) are converted
            exactly to float32, computed in float32, and the results rounded back to the
            input dtype, round to nearest even (PyTorch's math-backend convention).
            C-contiguous float32/float64 inputs are not copied; others are copied once.
        is_causal: causal mask; ``causal_alignment`` ``"top-left"`` (PyTorch's:
            key j visible to query i iff j <= i) or ``"bottom-right"`` (j <= i + n_k - n_q).
        scale: tau in ``tau q k^T``; None means ``1/sqrt(d)``. It is rounded once to the
            compute dtype.
        engine: ``"exact"`` (tiled exact engine), ``"poly"`` (polynomial method with a
            certified entrywise bound, or :class:`polyattn.RefusedError`) or ``"auto"``
            (poly where certified and predicted faster, else exact; see
            ``engine_reason``).
        eps: polynomial engine: target on max |o - O_exact| (default 1e-6).
        degree: polynomial engine: use this degree instead (certified bound reported).
        polynomial: polynomial engine: ``"chebyshev"`` (default; interpolates exp on
            [-R, R], R = tau max||q|| max||k||, so the polynomial depends on R) or
            ``"taylor"`` (at 0; the same polynomial for every input).
        dtype: ``"bfloat16"`` or ``"float16"`` when the arrays are uint16 bit patterns.
        enable_gqa: grouped-query attention as in PyTorch: k and v may have fewer heads
            (the last leading dim, equal for both, dividing q's); query head h reads key
            head h // (H_q // H_kv), and dk, dv (backward) are summed over each group,
            with their bounds (the heads' bounds plus the summation's rounding).
        window: a sliding window ``(left, right)``, FlashAttention's ``window_size``
            (``-1`` unbounded): query i sees key j iff ``c - left <= j <= c + right``,
            ``c = i`` (``causal_alignment="top-left"``) or ``i + n_k - n_q``
            (``"bottom-right"``, FlashAttention's); ``is_causal`` caps ``right`` at 0.
            Both engines take it (the polynomial engine by its range form, about
            twice its unmasked cost, so ``"auto"`` picks it only for wide windows).
        attn_mask: as in PyTorch's SDPA: a boolean mask (True = attend) or a float
            additive bias, broadcastable to ``[..., n_q, n_k]`` (key padding, ALiBi,
            any mask); it gets no gradient. The polynomial engine takes it only as key
            padding (every column all True/0 or all False/-inf) and raises
            :class:`polyattn.RefusedError` for any other (``"auto"`` runs exact). A row that sees no
            key gets o = 0, lse = -inf, dq = 0 (PyTorch's math backend gives NaN).
            Entries must be finite or -inf: a huge finite bias (``finfo.min``) makes
            the scores overflow-guarded (``overflow`` error in float32) and any
            certified bound infinite; use a boolean mask or -inf instead.
        alibi_slopes: FlashAttention's ``alibi_slopes``: shape ``(heads,)`` or
            ``(batch, heads)`` (q's leading dims), adding ``-slope * |i + n_k - n_q - j|``
            to the score of query i and key j (bottom-right aligned, whatever
            ``causal_alignment``); summed with ``attn_mask`` and treated like it (exact
            engine only, no gradient). :func:`polyattn.alibi_slopes` gives the standard
            slopes. Costs one ``n_q x n_k`` bias per head in memory.
        softcap: score softcapping (Gemma 2; FlashAttention's ``softcap``): each score
            ``s = scale * q . k`` becomes ``softcap * tanh(s / softcap)`` before
            ``attn_mask``, ALiBi and the mask; ``None`` (default) or ``0.0``
            (FlashAttention's convention) for none, else a finite positive float,
            normal after rounding once to the compute dtype. Exact engine
            only (``engine="poly"`` raises :class:`polyattn.RefusedError`, ``"auto"``
            runs exact). The engine's tanh goes through its proven exp, so near
            ``s = 0`` the capped score errs by up to ``6u * softcap`` absolutely.
        dropout_p: not implemented; anything but 0 raises ``NotImplementedError``.

    Returns:
        :class:`AttentionResult`.

    Raises:
        polyattn.PolyattnError: bad shapes, dtypes, non-finite entries, parameters, or
            intermediates that could overflow the dtype (``kind`` names which).
        polyattn.RefusedError: the polynomial engine cannot certify this input.

    The GIL is released while the engine computes.
    """
    check_unsupported(dropout_p)
    fw = run_forward(
        [("q", q), ("k", k), ("v", v)],
        is_causal=is_causal,
        causal_alignment=causal_alignment,
        scale=scale,
        engine=engine,
        eps=eps,
        degree=degree,
        dtype=dtype,
        polynomial=polynomial,
        enable_gqa=enable_gqa,
        window=window,
        attn_mask=attn_mask,
        alibi_slopes=alibi_slopes,
        softcap=softcap,
    )
    return AttentionResult(**fw.fields)


def attention_backward(
    q: Any,
    k: Any,
    v: Any,
    do: Any,
    *,
    is_causal: bool = False,
    causal_alignment: str = "top-left",
    scale: Optional[float] = None,
    engine: str = "exact",
    eps: Optional[float] = None,
    degree: Optional[int] = None,
    polynomial: str = "chebyshev",
    gradient: str = "substituted",
    dtype: Optional[str] = None,
    attn_mask: Any = None,
    dropout_p: float = 0.0,
    enable_gqa: bool = False,
    window: Any = None,
    alibi_slopes: Any = None,
    softcap: Optional[float] = None,
) -> BackwardResult:
    """Attention forward and backward: the gradients of ``sum(do * O)`` with respect to
    q, k, v, for an upstream gradient ``do`` ``[..., n_q, d_v]``.

    Arguments as in :func:`attention`, plus:

    Args:
        do: the upstream gradient dL/dO, same dtype and leading dims as q.
        gradient: polynomial engine only: ``"substituted"`` (default: the exact gradient
            formula with the polynomial attention matrix substituted, the papers'
            ALTGrad/AS24 gradient) or ``"polynomial-model"`` (the exact derivative of
            the polynomial forward, what autodiff of it would give). Both come with
            certified bounds against the exact gradients.

    Returns:
        :class:`BackwardResult` (gradients, o, lse, and for poly the bounds and plan).
    """
    check_unsupported(dropout_p)
    if gradient not in GRADIENTS:
        raise error("invalid_parameter", f"gradient={gradient!r}: expected one of {GRADIENTS}")
    fw = run_forward(
        [("q", q), ("k", k), ("v", v), ("do", do)],
        is_causal=is_causal,
        causal_alignment=causal_alignment,
        scale=scale,
        engine=engine,
        eps=eps,
        degree=degree,
        dtype=dtype,
        polynomial=polynomial,
        enable_gqa=enable_gqa,
        window=window,
        attn_mask=attn_mask,
        alibi_slopes=alibi_slopes,
        softcap=softcap,
    )
    g = run_backward(fw, fw.folded.arrays[3], gradient)
    return BackwardResult(**g, **fw.fields)
