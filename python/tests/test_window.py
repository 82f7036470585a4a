"""Sliding-window attention (``window=(left, right)``, FlashAttention's ``window_size``).

Expected values come from the longdouble reference of ``conftest`` with the visibility
matrix written from FlashAttention's definition (``window_visible``), not from the
engine's index formulas; the tolerances are the a priori float64 rounding bounds of
``polyattn.reference`` (see ``conftest.LD_SLACK``).
"""

from __future__ import annotations

import numpy as np
import pytest

import polyattn
from conftest import LD_SLACK, assert_within, np_attention, qkv, window_visible

# (n_q, n_k, left, right, alignment): local causal windows, look-ahead, a band that
# leaves rows without keys (n_q > n_k, bottom-right), one-sided and degenerate ones.
CASES = [
    (40, 40, 8, 0, "bottom-right"),
    (40, 40, 3, 5, "top-left"),
    (30, 50, 4, 2, "bottom-right"),
    (50, 20, 2, 0, "bottom-right"),
    (33, 47, -1, 6, "top-left"),
    (33, 47, 0, 0, "top-left"),
    (70, 70, 64, -1, "bottom-right"),
]


@pytest.mark.parametrize("n_q,n_k,left,right,align", CASES)
def test_window_matches_the_definition(n_q, n_k, left, right, align):
    q, k, v, do = qkv((2, 3, n_q, 8), n_k, 5, seed=n_q + left, with_do=True)
    r = polyattn.attention_backward(q, k, v, do, window=(left, right), causal_alignment=align)
    vis = window_visible(n_q, n_k, left, right, align)
    want = np_attention(q, k, v, do, mask=vis)
    ref = polyattn.reference(q, k, v, do, window=(left, right), causal_alignment=align)
    empty = ~vis.any(axis=1)
    np.testing.assert_array_equal(np.isneginf(r.lse), np.broadcast_to(empty, r.lse.shape))
    for name in ("o", "dq", "dk", "dv"):
        bound = getattr(ref, name + "_bound")
        # The exact engine's result and the reference's midpoint both lie within the
        # bound of exact attention; the longdouble value is within bound * LD_SLACK.
        assert_within(getattr(r, name), want[name], 2 * bound + 1e-300, name)
        assert_within(getattr(ref, name), want[name], bound * (1 + LD_SLACK) + 1e-300, name)
    fin = ~np.isneginf(r.lse)
    np.testing.assert_allclose(r.lse[fin], want["lse"][fin].astype(np.float64), rtol=1e-13)


def test_window_is_the_mask_it_names():
    """(-1, 0) is the causal mask, (-1, -1) no mask: the same bits."""
    q, k, v = qkv((2, 24, 4), 30, seed=3)
    for align in ("top-left", "bottom-right"):
        w = polyattn.attention(q, k, v, window=(-1, 0), causal_alignment=align)
        c = polyattn.attention(q, k, v, is_causal=True, causal_alignment=align)
        np.testing.assert_array_equal(w.o, c.o)
    w = polyattn.attention(q, k, v, window=(-1, -1))
    np.testing.assert_array_equal(w.o, polyattn.attention(q, k, v).o)
    # is_causal caps the right side at 0 (FlashAttention's causal=True with a window).
    a = polyattn.attention(q, k, v, window=(3, 7), is_causal=True)
    b = polyattn.attention(q, k, v, window=(3, 0))
    np.testing.assert_array_equal(a.o, b.o)


def test_window_with_gqa_and_float32():
    r = np.random.default_rng(5)
    q = r.standard_normal((1, 4, 32, 8)).astype(np.float32)
    k = r.standard_normal((1, 2, 32, 8)).astype(np.float32)
    v = r.standard_normal((1, 2, 32, 8)).astype(np.float32)
    w = (5, 0)
    g = polyattn.attention(q, k, v, window=w, enable_gqa=True)
    m = polyattn.attention(q, np.repeat(k, 2, axis=1), np.repeat(v, 2, axis=1), window=w)
    np.testing.assert_array_equal(g.o, m.o)
    rep = polyattn.certify_outputs(q, k, v, o=g.o, window=w, enable_gqa=True)
    assert rep["o"].max_abs_error_upper < 1e-5
    # The wrong mask is found: the unwindowed output is far outside the bound.
    full = polyattn.attention(q, k, v, enable_gqa=True)
    bad = polyattn.certify_outputs(q, k, v, o=full.o, window=w, enable_gqa=True)
    assert bad["o"].max_abs_error_lower > 1e-2


def test_polynomial_engine_runs_a_window_within_eps():
    # The range form (two segment scans per row): certified max|O~ - O| <= eps, so the
    # distance to the exact engine's float64 result is at most eps plus that result's
    # own rounding (below 1e-13 here).
    q, k, v = qkv((2, 64, 4), seed=9, scale=0.3)
    for window, align in [((16, 0), "bottom-right"), ((5, 7), "top-left")]:
        p = polyattn.attention(q, k, v, window=window, causal_alignment=align, engine="poly", eps=1e-3)
        e = polyattn.attention(q, k, v, window=window, causal_alignment=align, engine="exact")
        assert p.engine == "poly"
        assert np.max(np.abs(p.o - e.o)) <= 1e-3 + 1e-13


@pytest.mark.parametrize("bad", [(1,), (1, 2, 3), (-2, 0), (0, -5), (1.5, 0), ("a", 0), 3, (True, 0)])
def test_bad_windows_are_invalid_parameters(bad):
    q, k, v = qkv((8, 4))
    with pytest.raises(polyattn.PolyattnError) as e:
        polyattn.attention(q, k, v, window=bad)
    assert e.value.kind == "invalid_parameter"
    assert "window" in str(e.value)
