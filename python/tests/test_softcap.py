"""Score softcapping (``softcap=c``: ``s -> c tanh(s / c)``, Gemma 2 and FlashAttention's
``softcap``) through the exact engine, the reference and the certification.

Expected values come from the longdouble reference of ``conftest`` (``np.tanh`` on the
scores, ``1 - tanh^2`` in the backward), written from the definition; tolerances are
the a priori float64 rounding bounds of ``polyattn.reference`` (``conftest.LD_SLACK``).
"""

from __future__ import annotations

import numpy as np
import pytest

import polyattn
from conftest import F32_FACTOR, LD_SLACK, assert_within, np_attention, qkv

# (softcap, input scale): near-linear (scores far below c), the bend, saturation.
CASES = [(50.0, 1.0), (2.0, 1.5), (0.3, 2.0)]


@pytest.mark.parametrize("cap,scale", CASES)
@pytest.mark.parametrize("causal", [False, True])
def test_softcap_matches_the_definition(cap, scale, causal):
    q, k, v, do = qkv((2, 3, 21, 8), 17, 5, seed=int(cap * 10), scale=scale, with_do=True)
    r = polyattn.attention_backward(q, k, v, do, softcap=cap, is_causal=causal)
    want = np_attention(q, k, v, do, mask="top-left" if causal else "none", softcap=cap)
    ref = polyattn.reference(q, k, v, do, softcap=cap, is_causal=causal)
    for name in ("o", "dq", "dk", "dv"):
        bound = getattr(ref, name + "_bound")
        assert_within(getattr(r, name), want[name], 2 * bound + 1e-300, name)
        assert_within(getattr(ref, name), want[name], bound * (1 + LD_SLACK) + 1e-300, name)
    # The cap matters here: the uncapped answer is outside the capped one's bound.
    plain = np_attention(q, k, v, do, mask="top-left" if causal else "none")
    assert np.max(np.abs(plain["o"] - want["o"])) > 1e3 * np.max(ref.o_bound)


def test_float32_softcap_within_the_scaled_bound():
    q, k, v, do = qkv((2, 30, 8), 30, 8, seed=5, scale=1.5, dtype=np.float32, with_do=True)
    r = polyattn.attention_backward(q, k, v, do, softcap=1.0)
    ref = polyattn.reference(q, k, v, do, softcap=1.0)
    for name in ("o", "dq", "dk", "dv"):
        err = np.abs(getattr(r, name).astype(np.float64) - getattr(ref, name))
        # The float32 engine's error: the float64 bound scaled to float32's u (see
        # conftest.F32_FACTOR), plus the reference's own bound.
        tol = getattr(ref, name + "_bound") * (F32_FACTOR + 1)
        assert np.all(err <= tol), (name, float(np.max(err / tol)))


def test_certify_outputs_with_softcap():
    q, k, v, do = qkv((2, 16, 8), 16, 4, seed=9, scale=2.0, with_do=True)
    r = polyattn.attention_backward(q, k, v, do, softcap=1.0)
    rep = polyattn.certify_outputs(q, k, v, o=r.o, dq=r.dq, do=do, softcap=1.0)
    for t in rep.tensors:
        # The candidate is the f64 exact engine, which is what the reference runs: its
        # certified error is the reference bound itself, tiny at this size.
        assert t.max_abs_error_upper <= 2 * t.max_reference_bound < 1e-10, t
    uncapped = polyattn.attention(q, k, v)
    rep = polyattn.certify_outputs(q, k, v, o=uncapped.o, softcap=1.0)
    assert rep.tensors[0].max_abs_error_lower > 1e-3


def test_poly_refuses_and_auto_falls_back():
    q, k, v = qkv((1, 64, 4), seed=2)
    with pytest.raises(polyattn.RefusedError, match="softcap"):
        polyattn.attention(q, k, v, softcap=5.0, engine="poly")
    a = polyattn.attention(q, k, v, softcap=5.0, engine="auto")
    assert a.engine == "exact" and "softcap" in a.engine_reason
    np.testing.assert_array_equal(a.o, polyattn.attention(q, k, v, softcap=5.0).o)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), 1e-320])
def test_bad_softcap_is_a_typed_error(bad):
    q, k, v = qkv((1, 4, 2), seed=1)
    with pytest.raises(polyattn.PolyattnError, match="softcap"):
        polyattn.attention(q, k, v, softcap=bad)


def test_zero_softcap_means_none():
    """FlashAttention's convention: softcap=0.0 (its default) is no cap."""
    q, k, v, do = qkv((2, 9, 4), seed=4, with_do=True)
    a = polyattn.attention_backward(q, k, v, do, softcap=0.0)
    b = polyattn.attention_backward(q, k, v, do)
    for name in ("o", "dq", "dk", "dv"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    r = polyattn.reference(q, k, v, softcap=0.0)
    np.testing.assert_array_equal(r.o, polyattn.reference(q, k, v).o)
