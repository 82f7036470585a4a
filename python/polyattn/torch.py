"""PyTorch front end: :func:`scaled_dot_product_attention` as a ``torch.autograd.Function``.

Import explicitly (``import polyattn.torch``); it needs PyTorch (>= 2.3, for
``torch.uint16``). CPU tensors only: float32 and float64 are computed natively,
bfloat16 and float16 are handed over as uint16 bit views (``t.view(torch.uint16)``),
converted exactly to float32 and rounded back to the input dtype at the end (round to
nearest even, PyTorch's math-backend convention).

Gradient kinds of the polynomial engine. The Function's backward returns, by default,
``GradientKind::PolynomialModel``: the exact derivative of the polynomial forward that
produced the output, for the polynomial P it used. That is what autograd needs for
``loss.backward()`` to be the gradient of the computed loss. ``gradient="substituted"``
returns instead the papers' gradient (ML24's ALTGrad: the exact gradient formula with
the polynomial attention matrix substituted); it approximates the gradient of *exact*
attention, with a certified bound, but is not the derivative of the polynomial
forward, so ``torch.autograd.gradcheck`` fails for it.

When gradcheck holds for ``"polynomial-model"``: P must not move with the inputs. With
``polynomial="taylor"`` at a fixed ``degree`` P is the same for every input and
gradcheck passes (tested). The default Chebyshev P interpolates exp on [-R, R] with
R = tau max_i ||q_i|| max_j ||k_j||, so perturbing the largest-norm row of q or of k
also changes P, a term the P-fixed derivative leaves out: the Jacobian then matches
finite differences everywhere except in the columns of those rows (tested). With an
``eps`` target the degree is chosen per input as well. With the exact engine the
gradient is the exact one and ``gradient`` is ignored.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np
import torch

from ._api import GRADIENTS, check_engine, check_unsupported, mask_name, run_backward, run_forward
from ._arrays import error, fold

_HALF = {torch.bfloat16: "bfloat16", torch.float16: "float16"}


def _to_numpy(name: str, t: torch.Tensor) -> Tuple[np.ndarray, Optional[str]]:
    """A CPU tensor as a NumPy array (a view when contiguous), and the ``dtype=``
    keyword for half formats (passed as uint16 bits)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(t).__name__}")
    if t.device.type != "cpu":
        raise ValueError(
            f"`{name}` is on {t.device}: polyattn.torch computes on CPU tensors only "
            "(move them with .cpu(); the CUDA path of the Rust crate is not in this package)"
        )
    t = t.detach()
    if t.dtype in _HALF:
        return t.contiguous().view(torch.uint16).numpy(), _HALF[t.dtype]
    if t.dtype in (torch.float32, torch.float64):
        return t.contiguous().numpy(), None
    raise error(
        "unsupported_dtype",
        f"`{name}` has dtype {t.dtype}; supported: float32, float64, bfloat16, float16",
    )


def _to_torch(a: np.ndarray, like: torch.dtype) -> torch.Tensor:
    """A result array (uint16 bits for half formats) as a tensor of dtype ``like``."""
    t = torch.from_numpy(np.ascontiguousarray(a))
    return t.view(like) if like in _HALF else t


class _Attention(torch.autograd.Function):
    """Forward by polyattn's engine; backward by the same engine from the saved state."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, opts: dict) -> torch.Tensor:  # type: ignore[override]
        (qa, dt), (ka, dk), (va, dv) = (_to_numpy("q", q), _to_numpy("k", k), _to_numpy("v", v))
        if not (dt == dk == dv and q.dtype == k.dtype == v.dtype):
            raise error(
                "mixed_dtype",
                f"q, k, v must share one dtype (got {q.dtype}, {k.dtype}, {v.dtype})",
            )
        fw = run_forward([("q", qa), ("k", ka), ("v", va)], dtype=dt, **opts["forward"])
        # The native state borrows q, k, v's memory again in the backward: saving them
        # lets autograd's version counters catch an in-place change in between.
        ctx.save_for_backward(q, k, v)
        ctx.fw = fw
        ctx.dtype_kw = dt
        ctx.gradient = opts["gradient"]
        ctx.torch_dtype = q.dtype
        ctx.fields = fw.fields
        return _to_torch(fw.fields["o"], q.dtype)

    @staticmethod
    def backward(ctx: Any, grad_o: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:  # type: ignore[override]
        fw = ctx.fw
        ctx.saved_tensors  # raises if q, k or v was modified in place since the forward
        g = grad_o.to(ctx.torch_dtype)
        ga, _ = _to_numpy("grad_output", g)
        do3 = fold([("do", ga)], ctx.dtype_kw)
        if do3.lead != fw.folded.lead:
            raise error("shape_mismatch", "grad_output is not shaped like the output")
        res = run_backward(fw, do3.arrays[0], ctx.gradient)
        t = ctx.torch_dtype
        return _to_torch(res["dq"], t), _to_torch(res["dk"], t), _to_torch(res["dv"], t), None


def scaled_dot_product_attention(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attn_mask: Optional[torch.Tensor] = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: Optional[float] = None,
    enable_gqa: bool = False,
    *,
    engine: str = "exact",
    eps: Optional[float] = None,
    degree: Optional[int] = None,
    gradient: str = "polynomial-model",
    polynomial: str = "chebyshev",
    causal_alignment: str = "top-left",
    window: Optional[Tuple[int, int]] = None,
    alibi_slopes: Optional[torch.Tensor] = None,
    softcap: Optional[float] = None,
) -> torch.Tensor:
    """``torch.nn.functional.scaled_dot_product_attention`` computed by polyattn, with
    autograd (``loss.backward()`` runs polyattn's backward).

    Args:
        query, key, value: CPU tensors ``[..., L, E]``, ``[..., S, E]``, ``[..., S, Ev]``
            with equal leading dims (but for the heads of key and value with
            ``enable_gqa``); float32, float64, bfloat16 or float16 (one dtype).
        attn_mask: as in PyTorch: boolean (True = attend) or a float additive bias,
            broadcastable to ``[..., L, S]``; no gradient flows to it (a mask that
            requires grad raises ``NotImplementedError``); the polynomial engine takes
            it only as key padding (columns all True or all False). A row that sees no
            key gives 0 (PyTorch's math backend gives NaN).
        dropout_p: only 0 is implemented; anything else raises ``NotImplementedError``.
        enable_gqa: as in PyTorch: key and value may have fewer heads (dividing the
            query's); their gradients are summed over each group.
        is_causal: PyTorch's causal mask (top-left aligned; ``causal_alignment=
            "bottom-right"`` for FlashAttention-2's).
        scale: as in PyTorch (None: 1/sqrt(E)).
        window: a sliding window ``(left, right)`` (FlashAttention's ``window_size``;
            see :func:`polyattn.attention`); both engines.
        alibi_slopes: FlashAttention's ``alibi_slopes`` (``(heads,)`` or ``(batch,
            heads)``, a tensor or array; see :func:`polyattn.attention`); exact engine
            only, no gradient.
        softcap: FlashAttention's ``softcap`` / Gemma 2's attention logit softcapping:
            scores ``s`` become ``softcap * tanh(s / softcap)``; the backward goes through
            the cap. Exact engine only.
        engine: ``"exact"``, ``"poly"`` or ``"auto"``; eps, degree: polynomial accuracy;
            polynomial: ``"chebyshev"`` (default) or ``"taylor"`` (see the module notes).
        gradient: polynomial engine: ``"polynomial-model"`` (default: the true
            derivative of the polynomial forward, consistent with autograd) or
            ``"substituted"`` (the papers' gradient; not the derivative of the forward).

    Returns:
        The output ``[..., L, Ev]`` in the input dtype. The plan and the certified
        bounds are not returned here; use :func:`polyattn.attention` for them.
    """
    check_unsupported(dropout_p)
    check_engine(engine, eps, degree)
    mask_np = None
    if attn_mask is not None:
        if not isinstance(attn_mask, torch.Tensor):
            raise TypeError(f"`attn_mask` must be a torch.Tensor, got {type(attn_mask).__name__}")
        if attn_mask.requires_grad:
            raise NotImplementedError(
                "attn_mask requires grad: polyattn returns no gradient for the mask "
                "(detach it, or use torch's SDPA for a learned bias)"
            )
        m = attn_mask.detach().cpu()
        if m.dtype in _HALF:
            m = m.float()  # exact: float16 and bfloat16 values are float32 values
        mask_np = m.contiguous().numpy()
    slopes_np = None
    if alibi_slopes is not None:
        if isinstance(alibi_slopes, torch.Tensor):
            if alibi_slopes.requires_grad:
                raise NotImplementedError("alibi_slopes requires grad: polyattn returns no gradient for it")
            sl = alibi_slopes.detach().cpu()
            slopes_np = (sl.float() if sl.dtype in _HALF else sl).contiguous().numpy()
        else:
            slopes_np = alibi_slopes
    mask_name(is_causal, causal_alignment, window)
    if gradient not in GRADIENTS:
        raise error("invalid_parameter", f"gradient={gradient!r}: expected one of {GRADIENTS}")
    opts = {
        "forward": dict(
            is_causal=is_causal,
            causal_alignment=causal_alignment,
            scale=scale,
            engine=engine,
            eps=eps,
            degree=degree,
            polynomial=polynomial,
            enable_gqa=enable_gqa,
            window=window,
            attn_mask=mask_np,
            alibi_slopes=slopes_np,
            softcap=softcap,
        ),
        "gradient": gradient,
    }
    out: torch.Tensor = _Attention.apply(query, key, value, opts)
    return out
