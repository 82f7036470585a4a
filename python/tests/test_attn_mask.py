"""``attn_mask``: PyTorch's boolean mask (True = attend) or float additive bias, as the
exact engine's additive score bias.

Expected values come from the longdouble reference of ``conftest`` with the bias added
to its scores (written from the definition, not from the engine); tolerances are the a
priori float64 rounding bounds of ``polyattn.reference`` with the same mask.
"""

from __future__ import annotations

import numpy as np
import pytest

import polyattn
from conftest import LD_SLACK, assert_within, np_attention, qkv


def alibi(n_q, n_k, heads):
    """FlashAttention's ALiBi: -slope_h |i + n_k - n_q - j|, slopes 2^-(8 (h + 1) / H)."""
    i = np.arange(n_q)[:, None]
    j = np.arange(n_k)[None, :]
    slopes = 2.0 ** (-8.0 * (np.arange(heads) + 1) / heads)
    return -slopes[:, None, None] * np.abs(i + n_k - n_q - j)[None]


def check(q, k, v, do, attn_mask, ld_bias, ld_mask="none", **kw):
    r = polyattn.attention_backward(q, k, v, do, attn_mask=attn_mask, **kw)
    ref = polyattn.reference(q, k, v, do, attn_mask=attn_mask, **kw)
    want = np_attention(q, k, v, do, bias=ld_bias, mask=ld_mask)
    for name in ("o", "dq", "dk", "dv"):
        bound = getattr(ref, name + "_bound")
        assert_within(getattr(r, name), want[name], 2 * bound + 1e-300, name)
        assert_within(getattr(ref, name), want[name], bound * (1 + LD_SLACK) + 1e-300, name)
    return r


def test_boolean_mask_random_pattern():
    q, k, v, do = qkv((2, 3, 20, 8), 27, 5, seed=1, with_do=True)
    rng = np.random.default_rng(2)
    m = rng.random((2, 3, 20, 27)) < 0.6
    m[..., 0] = True  # every row sees a key
    check(q, k, v, do, m, np.where(m, 0.0, -np.inf))


def test_float_bias_alibi_per_head():
    q, k, v, do = qkv((2, 4, 30, 8), 30, 6, seed=3, with_do=True)
    b = alibi(30, 30, 4)  # [4, n_q, n_k], broadcast over the batch
    check(q, k, v, do, b, b[None], ld_mask="top-left", is_causal=True)


def test_key_padding_broadcast_and_rows_without_keys():
    q, k, v, do = qkv((2, 3, 12, 4), 16, 4, seed=4, with_do=True)
    lengths = np.array([10, 16])
    pad = np.arange(16)[None, :] < lengths[:, None]  # [b, n_k]
    m = pad[:, None, None, :]  # [b, 1, 1, n_k]: key padding, PyTorch's shape
    r = check(q, k, v, do, m, np.where(m, 0.0, -np.inf))
    assert np.isfinite(r.lse).all()
    # A mask that hides every key of row 0: o = 0, lse = -inf, dq = 0 there.
    m2 = np.ones((12, 16), dtype=bool)
    m2[0] = False
    r2 = polyattn.attention_backward(q, k, v, do, attn_mask=m2)
    assert (r2.lse[..., 0] == -np.inf).all() and (r2.o[..., 0, :] == 0).all()
    assert (r2.dq[..., 0, :] == 0).all()


def test_bias_with_window_gqa_and_float32():
    r = np.random.default_rng(6)
    q = r.standard_normal((1, 4, 24, 8)).astype(np.float32)
    k = r.standard_normal((1, 2, 24, 8)).astype(np.float32)
    v = r.standard_normal((1, 2, 24, 8)).astype(np.float32)
    b = alibi(24, 24, 4).astype(np.float32)
    g = polyattn.attention(q, k, v, attn_mask=b, window=(6, 0), enable_gqa=True)
    m = polyattn.attention(
        q, np.repeat(k, 2, axis=1), np.repeat(v, 2, axis=1), attn_mask=b, window=(6, 0)
    )
    np.testing.assert_array_equal(g.o, m.o)
    rep = polyattn.certify_outputs(q, k, v, o=g.o, attn_mask=b, window=(6, 0), enable_gqa=True)
    assert rep["o"].max_abs_error_upper < 1e-5
    # Without the bias the output is provably different.
    bad = polyattn.certify_outputs(q, k, v, o=g.o, window=(6, 0), enable_gqa=True)
    assert bad["o"].max_abs_error_lower > 1e-3


def test_polynomial_engine_refuses_a_general_bias_and_auto_falls_back():
    q, k, v = qkv((2, 64, 4), seed=9, scale=0.3)
    b = np.zeros((64, 64))
    b[3, 5] = 0.5  # not key padding
    with pytest.raises(polyattn.RefusedError, match="attn_mask"):
        polyattn.attention(q, k, v, attn_mask=b, engine="poly", eps=1e-3)
    a = polyattn.attention(q, k, v, attn_mask=b, engine="auto", eps=1e-3)
    assert a.engine == "exact" and "attn_mask" in a.engine_reason


def test_polynomial_engine_takes_key_padding():
    # PyTorch's key_padding_mask as a boolean attn_mask (True = attend): the padded
    # keys' columns are -inf for every query. Certified max|O~ - O| <= eps, so the
    # distance to the exact float64 run is at most eps plus its own rounding (< 1e-13).
    q, k, v = qkv((2, 64, 4), seed=9, scale=0.3)
    do = np.random.default_rng(3).standard_normal((2, 64, 4))
    keep = np.ones(64, dtype=bool)
    keep[[0, 9, 10, 40]] = False
    keep[60:] = False
    mask = np.broadcast_to(keep, (64, 64)).copy()
    p = polyattn.attention_backward(q, k, v, do, attn_mask=mask, is_causal=True, engine="poly", eps=1e-3)
    e = polyattn.attention_backward(q, k, v, do, attn_mask=mask, is_causal=True, engine="exact")
    assert p.engine == "poly"
    assert np.max(np.abs(p.o - e.o)) <= 1e-3 + 1e-13
    assert np.all(p.dk[:, ~keep] == 0) and np.all(p.dv[:, ~keep] == 0)
    for name in ["dq", "dk", "dv"]:
        bound = getattr(p, name + "_bound")
        assert np.all(np.abs(getattr(p, name) - getattr(e, name)) <= bound + 1e-12)


@pytest.mark.parametrize(
    "mask,kind",
    [
        (np.zeros((5, 8)), "shape_mismatch"),
        (np.zeros((3, 8, 8)), "shape_mismatch"),
        (np.full((8, 8), np.nan), "non_finite"),
        (np.full((8, 8), np.inf), "non_finite"),
        (np.zeros((8, 8), dtype=np.int64), "unsupported_dtype"),
        (np.full((8, 8), -1e300), "overflow"),
    ],
)
def test_bad_masks_are_typed_errors(mask, kind):
    # float32 inputs: a float64 mask is rounded to float32, where -1e300 overflows.
    q, k, v = (x.astype(np.float32) for x in qkv((2, 8, 4)))
    with pytest.raises(polyattn.PolyattnError) as e:
        polyattn.attention(q, k, v, attn_mask=mask)
    assert e.value.kind == kind
