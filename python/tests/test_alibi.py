"""``alibi_slopes``: FlashAttention's ALiBi (``-slope * |i + n_k - n_q - j|`` added to the
score of query i and key j) and ``polyattn.alibi_slopes``.

Expected values: the slopes from the ALiBi paper's definition written out as literals;
outputs from the longdouble reference of ``conftest`` with the bias built here from
the formula (not by the package), within the a priori float64 bounds of
``polyattn.reference``.
"""

from __future__ import annotations

import numpy as np
import pytest

import polyattn
from conftest import LD_SLACK, assert_within, np_attention, qkv


def fa_alibi(slopes, n_q, n_k):
    """The bias, one loop per entry, straight from FlashAttention's docstring."""
    slopes = np.asarray(slopes, dtype=np.float64)
    out = np.zeros(slopes.shape + (n_q, n_k))
    for idx in np.ndindex(slopes.shape):
        for i in range(n_q):
            for j in range(n_k):
                out[idx + (i, j)] = -slopes[idx] * abs(i + n_k - n_q - j)
    return out


def test_standard_slopes():
    # Power of two: 2^(-8 (h + 1) / n).
    assert polyattn.alibi_slopes(8).tolist() == [2.0 ** -e for e in range(1, 9)]
    assert polyattn.alibi_slopes(4).tolist() == [2.0 ** -e for e in (2, 4, 6, 8)]
    # 12 heads: the 8-head slopes, then every other slope of 16 heads (2^-0.5, 2^-1.5, ...).
    want = [2.0 ** -e for e in range(1, 9)] + [2.0 ** -e for e in (0.5, 1.5, 2.5, 3.5)]
    got = polyattn.alibi_slopes(12)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, np.float32(want))
    assert polyattn.alibi_slopes(1).tolist() == [2.0 ** -8]
    for bad in (0, -3, 2.5, True):
        with pytest.raises(polyattn.PolyattnError):
            polyattn.alibi_slopes(bad)


@pytest.mark.parametrize("slopes_shape", ["heads", "batch-heads"])
@pytest.mark.parametrize("n_q, n_k, causal", [(20, 20, False), (13, 21, True), (21, 13, False)])
def test_against_the_longdouble_reference(slopes_shape, n_q, n_k, causal):
    b, h = 2, 3
    q, k, v, do = qkv((b, h, n_q, 8), n_k, 5, seed=n_q + n_k, with_do=True)
    rng = np.random.default_rng(1)
    slopes = polyattn.alibi_slopes(h) if slopes_shape == "heads" else rng.random((b, h)).astype(np.float32)
    kw = dict(is_causal=causal, causal_alignment="bottom-right")
    r = polyattn.attention_backward(q, k, v, do, alibi_slopes=slopes, **kw)
    ref = polyattn.reference(q, k, v, do, alibi_slopes=slopes, **kw)
    bias = fa_alibi(slopes, n_q, n_k)
    want = np_attention(q, k, v, do, bias=bias if bias.ndim == 4 else bias[None],
                        mask="bottom-right" if causal else "none")
    for name in ("o", "dq", "dk", "dv"):
        bound = getattr(ref, name + "_bound")
        assert_within(getattr(r, name), want[name], 2 * bound + 1e-300, name)
        assert_within(getattr(ref, name), want[name], bound * (1 + LD_SLACK) + 1e-300, name)


def test_same_bits_as_the_explicit_bias_and_summed_with_a_mask():
    q, k, v = qkv((2, 4, 17, 8), 23, 6, seed=5)
    slopes = polyattn.alibi_slopes(4)
    bias = fa_alibi(slopes, 17, 23)
    a = polyattn.attention(q, k, v, alibi_slopes=slopes)
    e = polyattn.attention(q, k, v, attn_mask=bias)
    np.testing.assert_array_equal(a.o, e.o)
    np.testing.assert_array_equal(a.lse, e.lse)
    # With key padding as a boolean mask: the two add (hidden keys stay hidden).
    pad = np.ones((2, 1, 1, 23), dtype=bool)
    pad[1, ..., 19:] = False
    a = polyattn.attention(q, k, v, attn_mask=pad, alibi_slopes=slopes)
    e = polyattn.attention(q, k, v, attn_mask=np.where(pad, 0.0, -np.inf) + bias)
    np.testing.assert_array_equal(a.o, e.o)


def test_certification_with_alibi_and_a_negative_control():
    q, k, v, do = qkv((1, 2, 40, 8), 40, 8, seed=7, with_do=True)
    slopes = polyattn.alibi_slopes(2)
    kw = dict(is_causal=True, alibi_slopes=slopes)
    r = polyattn.attention_backward(q, k, v, do, **kw)
    rep = polyattn.certify_outputs(q, k, v, o=r.o, dq=r.dq, do=do, **kw)
    for t in rep.tensors:
        # The engine's f64 result and the reference are each within the a priori bound
        # of exact attention, so |cand - ref| + bound <= 3 bound.
        assert t.max_abs_error_upper <= 3 * t.max_reference_bound, t
        assert t.max_reference_bound < 1e-10, t
    # The same outputs judged without the ALiBi bias: far off, and certified so.
    plain = polyattn.certify_outputs(q, k, v, o=r.o, is_causal=True)
    assert plain.tensors[0].max_abs_error_lower > 1e-3


@pytest.mark.parametrize(
    "slopes, kind",
    [
        (np.ones(5), "shape_mismatch"),  # 3 heads
        (np.ones((3, 3)), "shape_mismatch"),  # batch is 2
        (np.array([1.0, np.nan, 1.0]), "non_finite"),
        (np.array(["a", "b", "c"]), "unsupported_dtype"),
    ],
)
def test_bad_slopes_are_typed_errors(slopes, kind):
    q, k, v = qkv((2, 3, 6, 4), 6, 4, seed=9)
    with pytest.raises(polyattn.PolyattnError) as e:
        polyattn.attention(q, k, v, alibi_slopes=slopes)
    assert e.value.kind == kind, str(e.value)


def test_polynomial_engine_refuses_alibi():
    q, k, v = qkv((1, 2, 32, 4), 32, 4, seed=11, scale=0.2)
    with pytest.raises(polyattn.RefusedError):
        polyattn.attention(q, k, v, engine="poly", eps=1e-3, alibi_slopes=polyattn.alibi_slopes(2))
    r = polyattn.attention(q, k, v, engine="auto", eps=1e-3, alibi_slopes=polyattn.alibi_slopes(2))
    assert r.engine == "exact"
