"""Values: the engines against the longdouble NumPy reference, with derived tolerances."""

from __future__ import annotations

import math

import numpy as np
import pytest

import polyattn
from conftest import F32_FACTOR, LD_SLACK, assert_within, f32_tau, np_attention, qkv

MASKS = [
    (False, "top-left", "none"),
    (True, "top-left", "top-left"),
    (True, "bottom-right", "bottom-right"),
]


@pytest.mark.parametrize("causal,align,mask", MASKS)
@pytest.mark.parametrize("n_q,n_k", [(37, 37), (20, 45), (45, 20)])
def test_exact_f64_matches_reference_and_numpy(causal, align, mask, n_q, n_k):
    q, k, v, do = qkv((2, 3, n_q, 8), n_k, 5, seed=n_q + n_k, with_do=True)
    r = polyattn.attention_backward(q, k, v, do, is_causal=causal, causal_alignment=align)
    ref = polyattn.reference(q, k, v, do, is_causal=causal, causal_alignment=align)
    # reference() is the same float64 exact engine: identical bits through the folding.
    for name in ("o", "lse", "dq", "dk", "dv"):
        np.testing.assert_array_equal(getattr(r, name), getattr(ref, name), err_msg=name)
    assert r.o.shape == (2, 3, n_q, 5) and r.lse.shape == (2, 3, n_q)
    assert r.dq.shape == q.shape and r.dk.shape == k.shape and r.dv.shape == v.shape
    assert r.engine == "exact" and r.o_bound is None and r.dq_bound is None
    npr = np_attention(q, k, v, do, mask=mask)
    for name in ("o", "dq", "dk", "dv"):
        bound = getattr(ref, name + "_bound")
        assert_within(getattr(r, name), npr[name], bound * (1 + LD_SLACK), f"f64 {name}")
    # lse has no a priori bound in the reference; 64 ulps of max(|lse|, 1) is far above
    # a log-sum-exp's rounding (a few ulps) and far below any real error.
    fin = np.isfinite(npr["lse"])
    assert np.array_equal(np.isfinite(r.lse), fin)
    assert np.all(np.abs(r.lse[fin] - npr["lse"][fin]) <= 64 * 2.0**-52 * np.maximum(1, np.abs(r.lse[fin])))
    if mask == "bottom-right" and n_q > n_k:
        # rows that see no key: zero output, lse = -inf, zero dq
        assert np.all(r.o[..., : n_q - n_k, :] == 0) and np.all(np.isneginf(r.lse[..., : n_q - n_k]))
        assert np.all(r.dq[..., : n_q - n_k, :] == 0)


@pytest.mark.parametrize("causal", [False, True])
def test_exact_f32_within_scaled_rounding_bound(causal):
    q, k, v, do = qkv((4, 64, 16), seed=3, dtype=np.float32, with_do=True)
    r = polyattn.attention_backward(q, k, v, do, is_causal=causal)
    assert r.o.dtype == np.float32 and r.dq.dtype == np.float32
    # The problem the float32 engine solves has tau rounded to float32 (d = 16: exact).
    ref = polyattn.reference(q, k, v, do, is_causal=causal, compute_dtype="float32")
    assert ref.scale == f32_tau(16)
    npr = np_attention(q, k, v, do, tau=ref.scale, mask="top-left" if causal else "none")
    for name in ("o", "dq", "dk", "dv"):
        bound = getattr(ref, name + "_bound")
        assert_within(getattr(r, name), npr[name], bound * F32_FACTOR, f"f32 {name}")


def test_leading_dims_fold_into_heads_and_noncontiguous_inputs():
    q, k, v = qkv((2, 3, 16, 8), seed=5)
    whole = polyattn.attention(q, k, v, is_causal=True)
    for b in range(2):
        for h in range(3):
            one = polyattn.attention(q[b, h], k[b, h], v[b, h], is_causal=True)
            np.testing.assert_array_equal(whole.o[b, h], one.o)
            np.testing.assert_array_equal(whole.lse[b, h], one.lse)
    # A non-contiguous view (one copy inside) gives the same bits as a contiguous copy.
    big = np.repeat(q, 2, axis=-1)[..., ::2]
    assert not big.flags.c_contiguous
    np.testing.assert_array_equal(big, q)
    np.testing.assert_array_equal(polyattn.attention(big, k, v, is_causal=True).o, whole.o)
    # Transposed storage too.
    qt = np.ascontiguousarray(np.swapaxes(q, -1, -2))
    np.testing.assert_array_equal(polyattn.attention(np.swapaxes(qt, -1, -2), k, v, is_causal=True).o, whole.o)


def test_inputs_are_not_modified():
    q, k, v, do = qkv((2, 16, 8), seed=6, scale=0.3, with_do=True)
    copies = [x.copy() for x in (q, k, v, do)]
    polyattn.attention_backward(q, k, v, do, engine="poly", eps=1e-6)
    for a, b in zip((q, k, v, do), copies):
        np.testing.assert_array_equal(a, b)


def test_scale_argument():
    q, k, v = qkv((2, 24, 8), seed=7)
    r = polyattn.attention(q, k, v, scale=0.3)
    npr = np_attention(q, k, v, tau=0.3)
    ref = polyattn.reference(q, k, v, scale=0.3)
    assert ref.scale == 0.3
    assert_within(r.o, npr["o"], ref.o_bound * (1 + LD_SLACK), "scale=0.3")
    # and it is not the default scale's result
    assert np.max(np.abs(r.o - polyattn.attention(q, k, v).o)) > 1e-3


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_poly_within_certified_bound(causal, dtype):
    q, k, v, do = qkv((2, 96, 8), seed=11, scale=0.3, dtype=dtype, with_do=True)
    r = polyattn.attention_backward(q, k, v, do, is_causal=causal, engine="poly", eps=1e-5)
    assert r.engine == "poly" and r.gradient == "substituted"
    assert r.o.dtype == dtype and r.o_bound.dtype == np.float64
    assert r.degree >= 1 and r.rank == math.comb(8 + r.degree, r.degree)
    assert len(r.plans) == 2 and r.R == max(p["R"] for p in r.plans)
    assert float(r.o_bound.max()) <= 1e-5
    comp = "float32" if dtype == np.float32 else "float64"
    ref = polyattn.reference(q, k, v, do, is_causal=causal, compute_dtype=comp)
    npr = np_attention(q, k, v, do, tau=ref.scale, mask="top-left" if causal else "none")
    for name in ("o", "dq", "dk", "dv"):
        bound = getattr(r, name + "_bound")
        ld_err = getattr(ref, name + "_bound") * LD_SLACK
        assert_within(getattr(r, name), npr[name], bound + ld_err, f"poly {name}")
    # The plan's R is the certified radius tau max||q|| max||k|| (rounded up).
    tau = ref.scale
    for h, p in enumerate(r.plans):
        rad = tau * np.linalg.norm(q[h].astype(np.float64), axis=1).max() * np.linalg.norm(k[h].astype(np.float64), axis=1).max()
        assert rad <= p["R"] <= rad * (1 + 1e-12)
        assert p["B"] == max(np.abs(q[h]).max(), np.abs(k[h]).max())


def test_poly_gradient_kinds_differ_and_both_certified():
    q, k, v, do = qkv((1, 64, 4), seed=12, scale=0.5, with_do=True)
    a = polyattn.attention_backward(q, k, v, do, engine="poly", degree=3)
    b = polyattn.attention_backward(q, k, v, do, engine="poly", degree=3, gradient="polynomial-model")
    assert a.gradient == "substituted" and b.gradient == "polynomial-model"
    assert a.degree == b.degree == 3
    np.testing.assert_array_equal(a.o, b.o)
    assert np.max(np.abs(a.dq - b.dq)) > 0
    npr = np_attention(q, k, v, do)
    ref = polyattn.reference(q, k, v, do)
    for r in (a, b):
        for name in ("dq", "dk", "dv"):
            tol = getattr(r, name + "_bound") + getattr(ref, name + "_bound") * LD_SLACK
            assert_within(getattr(r, name), npr[name], tol, f"{r.gradient} {name}")


def test_auto_falls_back_with_reason_and_picks_poly_when_faster():
    q, k, v = qkv((2, 64, 16), seed=13, scale=3.0)
    r = polyattn.attention(q, k, v, engine="auto")
    assert r.engine == "exact" and r.o_bound is None
    assert r.engine_reason.startswith("auto: polynomial engine refused")
    np.testing.assert_array_equal(r.o, polyattn.attention(q, k, v).o)
    # Long sequence, tiny head dim, small entries: certified and predicted faster.
    q, k, v = qkv((1, 4096, 2), seed=14, scale=0.05, dtype=np.float32)
    r = polyattn.attention(q, k, v, engine="auto", eps=1e-3)
    assert r.engine == "poly", r.engine_reason
    assert r.engine_reason.startswith("auto: polynomial engine certified")
    assert r.o_bound.max() <= 1e-3


def test_requested_reason():
    q, k, v = qkv((8, 4), seed=15)
    assert polyattn.attention(q, k, v).engine_reason == "requested"
