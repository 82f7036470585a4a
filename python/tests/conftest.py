"""Shared helpers: seeded inputs and an independent NumPy reference in extended precision.

The reference is written from the definition (docs/math.md §2.1), not from the engine:
``S = tau Q K^T`` with the mask, ``P = softmax_rows(S)``, ``O = P V``,
``lse = log sum exp S``; backward ``dV = P^T dO``, ``dS = P o (dO V^T - rowsum(dO o O))``,
``dQ = tau dS K``, ``dK = tau dS^T Q``. It runs in ``np.longdouble`` (x87 extended,
u = 2^-64 on x86-64): its own rounding error is then 2^-11 times that of the same
computation in float64, which is what the tolerances below rely on.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

LD = np.longdouble
# Tolerance factor for comparing with the longdouble reference: the a priori float64
# rounding bound b (polyattn.reference) bounds the float64 exact engine's error; the
# same analysis with u = 2^-64 bounds the longdouble computation's error by b 2^-11.
LD_SLACK = 2.0**-10
# The float32 engine's rounding: the a priori analysis is first order in u (every
# term is a multiple of u or of gamma_k = k u / (1 - k u) with k u < 1e-4 here), so
# the float32 bound is the float64 one scaled by u32 / u64 = 2^29, times 1.01 for the
# gamma_k denominators and the second-order terms.
F32_FACTOR = 2.0**29 * 1.01


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def qkv(shape_q, n_k=None, d_v=None, *, seed=0, scale=1.0, dtype=np.float64, with_do=False):
    """Random normal q, k, v (and do) with q shaped ``shape_q = (..., n_q, d)``."""
    r = rng(seed)
    *lead, n_q, d = shape_q
    n_k = n_q if n_k is None else n_k
    d_v = d if d_v is None else d_v
    q = (r.standard_normal((*lead, n_q, d)) * scale).astype(dtype)
    k = (r.standard_normal((*lead, n_k, d)) * scale).astype(dtype)
    v = r.standard_normal((*lead, n_k, d_v)).astype(dtype)
    if with_do:
        return q, k, v, r.standard_normal((*lead, n_q, d_v)).astype(dtype)
    return q, k, v


def window_visible(n_q: int, n_k: int, left: int, right: int, align: str) -> np.ndarray:
    """FlashAttention's sliding-window rule, written from its definition: key j is
    visible to query i iff ``c - left <= j <= c + right`` with ``c = i`` (top-left) or
    ``c = i + n_k - n_q`` (bottom-right); -1 leaves a side unbounded."""
    i = np.arange(n_q)[:, None]
    j = np.arange(n_k)[None, :]
    c = i if align == "top-left" else i + n_k - n_q
    ok = np.ones((n_q, n_k), dtype=bool)
    if left >= 0:
        ok &= c - left <= j
    if right >= 0:
        ok &= j <= c + right
    return ok


def visible(n_q: int, n_k: int, mask) -> np.ndarray:
    """The visibility matrix of a mask name, or the given boolean array itself."""
    if isinstance(mask, np.ndarray):
        return mask
    i = np.arange(n_q)[:, None]
    j = np.arange(n_k)[None, :]
    if mask == "none":
        return np.ones((n_q, n_k), dtype=bool)
    if mask == "top-left":
        return j <= i
    if mask == "bottom-right":
        return j <= i + n_k - n_q
    raise ValueError(mask)


def np_attention(q, k, v, do=None, *, tau=None, mask="none", bias=None, softcap=None):
    """The longdouble reference; returns a dict of longdouble arrays. ``softcap`` c
    replaces each score s by ``c tanh(s / c)`` (its derivative ``1 - tanh^2`` in the
    backward); ``bias`` is then added to the scores (broadcast; -inf hides a key)
    before the mask."""
    q, k, v = (np.asarray(x).astype(LD) for x in (q, k, v))
    n_q, d = q.shape[-2:]
    n_k = k.shape[-2]
    tau = LD(1.0 / math.sqrt(d) if tau is None else tau)
    vis = visible(n_q, n_k, mask)
    s = tau * np.matmul(q, np.swapaxes(k, -1, -2))
    slope = None
    if softcap is not None:
        c = LD(softcap)
        t = np.tanh(s / c)
        s = c * t
        slope = 1 - t * t
    if bias is not None:
        s = s + np.asarray(bias).astype(LD)
    s = np.where(vis, s, LD(-np.inf))
    m = np.max(s, axis=-1, keepdims=True)
    empty = ~np.isfinite(m)
    m = np.where(empty, LD(0), m)
    p = np.exp(s - m)
    l = p.sum(axis=-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        pn = np.where(empty, LD(0), p / l)
        lse = np.where(empty[..., 0], LD(-np.inf), (m + np.log(l))[..., 0])
    o = np.matmul(pn, v)
    out = {"o": o, "lse": lse}
    if do is not None:
        g = np.asarray(do).astype(LD)
        out["dv"] = np.matmul(np.swapaxes(pn, -1, -2), g)
        dp = np.matmul(g, np.swapaxes(v, -1, -2))
        delta = (g * o).sum(axis=-1, keepdims=True)
        ds = pn * (dp - delta)
        if slope is not None:
            ds = ds * slope
        out["dq"] = tau * np.matmul(ds, k)
        out["dk"] = tau * np.matmul(np.swapaxes(ds, -1, -2), q)
    return out


def f32_tau(d: int) -> float:
    """1/sqrt(d) rounded to float32, as the float32 engine uses it."""
    return float(np.float32(1.0 / math.sqrt(d)))


def assert_within(x, ref, tol, what=""):
    """|x - ref| <= tol entrywise (ref in longdouble), with a readable failure."""
    err = np.abs(np.asarray(x, dtype=LD) - ref)
    bad = err > np.asarray(tol, dtype=LD)
    if bad.any():
        idx = tuple(np.argwhere(bad)[0])
        pytest.fail(
            f"{what}: {int(bad.sum())} entries outside tolerance; first {idx}: "
            f"err {float(err[idx]):.3e} > tol {float(np.broadcast_to(tol, err.shape)[idx]):.3e}"
        )
