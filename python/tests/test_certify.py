"""reference() and certify_outputs(): enclosures and certified distances."""

from __future__ import annotations

import json

import numpy as np
import pytest

import polyattn
from conftest import LD, LD_SLACK, np_attention, qkv


def test_reference_encloses_extended_precision_result():
    q, k, v, do = qkv((3, 40, 8), 50, 6, seed=41, with_do=True)
    ref = polyattn.reference(q, k, v, do, is_causal=True, causal_alignment="bottom-right")
    npr = np_attention(q, k, v, do, mask="bottom-right")
    for name in ("o", "dq", "dk", "dv"):
        val, b = getattr(ref, name), getattr(ref, name + "_bound")
        assert val.dtype == np.float64 and b.shape == val.shape and np.all(b > 0)
        assert np.all(np.abs(val.astype(LD) - npr[name]) <= b * (1 + LD_SLACK)), name


def test_reference_without_do_has_no_gradients():
    q, k, v = qkv((16, 4), seed=42)
    ref = polyattn.reference(q, k, v)
    assert ref.dq is None and ref.dq_bound is None and ref.o.shape == (16, 4)


def test_certified_distances_bracket_the_true_error():
    q, k, v, do = qkv((2, 32, 8), seed=43, dtype=np.float32, with_do=True)
    r = polyattn.attention_backward(q, k, v, do)
    o = r.o.copy()
    o[1, 5, :] += np.float32(1e-3)  # a whole row off by 1e-3
    rep = polyattn.certify_outputs(q, k, v, o=o, dq=r.dq, dk=r.dk, dv=r.dv, do=do)
    ref = polyattn.reference(q, k, v, do)
    npr = np_attention(q, k, v, do, tau=ref.scale)
    for name, cand in (("o", o), ("dq", r.dq), ("dk", r.dk), ("dv", r.dv)):
        t = rep[name]
        true = np.abs(cand.astype(LD) - npr[name])
        ld_err = getattr(ref, name + "_bound") * LD_SLACK  # the longdouble result's own error
        assert t.max_abs_error_lower <= float(true.max() + ld_err.max())
        assert float(true.max() - ld_err.max()) <= t.max_abs_error_upper
        # signed row means: the interval holds the extended-precision mean error
        mean = (cand.astype(LD) - npr[name]).mean(axis=-1)
        slack = ld_err.max()
        assert np.all(t.row_mean_lower <= mean + slack) and np.all(mean - slack <= t.row_mean_upper), name
    so = rep["o"]
    assert so.max_abs_error_lower >= 0.99e-3  # certified: this output is wrong
    assert so.row_mean_lower[1, 5] > 0.9e-3 and so.row_mean_upper[1, 5] < 1.1e-3
    assert rep["dq"].max_abs_error_lower < 1e-5
    d = json.loads(rep.to_json())
    assert d["reference"] == "exact f64 + a priori rounding bound"
    assert [t["tensor"] for t in d["tensors"]] == ["o", "dq", "dk", "dv"]
    assert d["tensors"][0]["rows_certified_biased"] >= 1
    md = rep.to_markdown()
    assert "| tensor |" in md and md.count("\n| d") == 3


def test_exact_f64_output_certifies_at_the_reference_bound():
    q, k, v = qkv((16, 8), seed=44)
    r = polyattn.attention(q, k, v)
    rep = polyattn.certify_outputs(q, k, v, o=r.o)
    ref = polyattn.reference(q, k, v)
    assert rep["o"].max_abs_error_lower == 0.0
    assert ref.o_bound.max() <= rep["o"].max_abs_error_upper <= ref.o_bound.max() * (1 + 1e-15)


def test_certify_errors():
    q, k, v = qkv((16, 8), seed=45)
    with pytest.raises(polyattn.PolyattnError, match="at least one"):
        polyattn.certify_outputs(q, k, v)
    with pytest.raises(polyattn.PolyattnError, match="needs the upstream gradient"):
        polyattn.certify_outputs(q, k, v, dq=q)
    with pytest.raises(polyattn.PolyattnError, match="shape mismatch"):
        polyattn.certify_outputs(q, k, v, o=q[:3])
    bad = q.copy()
    bad[0, 0] = np.nan
    with pytest.raises(polyattn.PolyattnError, match="NaN"):
        polyattn.certify_outputs(q, k, v, o=bad)
