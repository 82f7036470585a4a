"""Grouped-query attention (``enable_gqa=True``): k and v with fewer heads than q.

Expected values come from the multi-head problem with k and v repeated per query head
(``np.repeat`` on the head axis, as PyTorch's ``enable_gqa`` defines it): the same
per-head computations, so o, lse and dq must be the same bits, and each key/value
head's dk, dv the sum of its group's shares, added here in head order exactly as the
engine adds them. The longdouble reference checks the values against the bounds.
"""

from __future__ import annotations

import numpy as np
import pytest

import polyattn
from conftest import LD_SLACK, assert_within, np_attention, qkv


def gqa_inputs(b=2, hq=4, hkv=2, n=24, d=8, d_v=5, seed=0, dtype=np.float64, scale=1.0):
    r = np.random.default_rng(seed)
    q = (r.standard_normal((b, hq, n, d)) * scale).astype(dtype)
    k = (r.standard_normal((b, hkv, n, d)) * scale).astype(dtype)
    v = r.standard_normal((b, hkv, n, d_v)).astype(dtype)
    do = r.standard_normal((b, hq, n, d_v)).astype(dtype)
    return q, k, v, do


def rep(x, g):
    return np.repeat(x, g, axis=-3)


def group_sum(x, g):
    """[b, hq, ...] shares summed over each group of g heads, in head order."""
    b, hq = x.shape[:2]
    out = []
    for j in range(hq // g):
        s = x[:, j * g]
        for i in range(1, g):
            s = s + x[:, j * g + i]
        out.append(s)
    return np.stack(out, axis=1)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("hkv", [1, 2])
def test_exact_equals_the_repeated_problem(causal, hkv):
    q, k, v, do = gqa_inputs(hkv=hkv, seed=hkv)
    g = q.shape[1] // hkv
    r = polyattn.attention_backward(q, k, v, do, is_causal=causal, enable_gqa=True)
    m = polyattn.attention_backward(q, rep(k, g), rep(v, g), do, is_causal=causal)
    for name in ("o", "lse", "dq"):
        np.testing.assert_array_equal(getattr(r, name), getattr(m, name), err_msg=name)
    assert r.dk.shape == k.shape and r.dv.shape == v.shape
    np.testing.assert_array_equal(r.dk, group_sum(m.dk, g))
    np.testing.assert_array_equal(r.dv, group_sum(m.dv, g))
    # Against the longdouble reference of the repeated problem, group-summed.
    ref = polyattn.reference(q, k, v, do, is_causal=causal, enable_gqa=True)
    npr = np_attention(q, rep(k, g), rep(v, g), do, mask="top-left" if causal else "none")
    for name in ("dk", "dv"):
        want = group_sum(npr[name], g)
        bound = getattr(ref, name + "_bound")
        assert bound.shape == getattr(r, name).shape
        assert_within(getattr(ref, name), want, bound * (1 + LD_SLACK), f"reference {name}")
        assert_within(getattr(r, name), want, bound * (1 + LD_SLACK), f"engine {name}")


def test_poly_bounds_cover_the_group_sums():
    q, k, v, do = gqa_inputs(n=96, d=4, seed=7, scale=0.4)
    g = 2
    r = polyattn.attention_backward(q, k, v, do, engine="poly", eps=1e-5, enable_gqa=True)
    assert r.engine == "poly" and r.dk_bound.shape == k.shape
    ref = polyattn.reference(q, k, v, do, enable_gqa=True)
    npr = np_attention(q, rep(k, g), rep(v, g), do)
    for name in ("o", "dq", "dk", "dv"):
        want = npr[name] if name in ("o", "dq") else group_sum(npr[name], g)
        ld_err = getattr(ref, name + "_bound") * LD_SLACK
        assert_within(getattr(r, name), want, getattr(r, name + "_bound") + ld_err, f"poly {name}")
    # The shares' bounds summed (the summation's rounding on top): at least their sum.
    m = polyattn.attention_backward(q, rep(k, g), rep(v, g), do, engine="poly", eps=1e-5)
    assert np.all(r.dk_bound >= group_sum(m.dk_bound, g))


def test_certify_outputs_with_gqa():
    q, k, v, do = gqa_inputs(seed=3)
    r = polyattn.attention_backward(q, k, v, do, enable_gqa=True)
    rep_ = polyattn.certify_outputs(q, k, v, o=r.o, dk=r.dk, dv=r.dv, do=do, enable_gqa=True)
    for t in rep_.tensors:
        # The reference is the same float64 engine: the candidates are its midpoints,
        # so the certified error is the reference's own radius and the lower bound 0.
        assert t.max_abs_error_lower == 0.0, t
        assert t.max_abs_error_upper <= np.nextafter(t.max_reference_bound, np.inf), t
    # A dk that forgot the second share of each group is certifiably wrong.
    m = polyattn.attention_backward(q, rep(k, 2), rep(v, 2), do)
    wrong = m.dk[:, ::2]
    miss = float(np.abs(wrong - r.dk).max())
    t = polyattn.certify_outputs(q, k, v, dk=wrong, do=do, enable_gqa=True).tensors[0]
    assert miss > 1e-3 and t.max_abs_error_lower >= miss - 1e-11


def test_head_counts_are_checked():
    q, k, v, do = gqa_inputs()
    with pytest.raises(polyattn.PolyattnError, match="enable_gqa=True") as e:
        polyattn.attention(q, k, v)
    assert e.value.kind == "shape_mismatch"
    q3 = np.concatenate([q, q[:, :2]], axis=1)  # 6 query heads, 2 key heads: fine
    polyattn.attention(q3, k, v, enable_gqa=True)
    k3 = np.concatenate([k, k[:, :1]], axis=1)  # 3 key heads for 4 query heads
    with pytest.raises(polyattn.PolyattnError) as e:
        polyattn.attention(q, k3, v, enable_gqa=True)
    assert e.value.kind == "shape_mismatch"
    with pytest.raises(polyattn.PolyattnError) as e:  # v's heads differ from k's
        polyattn.attention(q, k, v[:, :1], enable_gqa=True)
    assert e.value.kind == "shape_mismatch"
    with pytest.raises(polyattn.PolyattnError) as e:  # batch dims differ
        polyattn.attention(q, k[:1], v[:1], enable_gqa=True)
    assert e.value.kind == "shape_mismatch"
