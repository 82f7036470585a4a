"""Model: loss and gradients as `polyattn model` computes them."""

from __future__ import annotations

import numpy as np
import pytest

import polyattn
from polyattn._model import safetensors_bytes

CFG = dict(n_layers=2, n_heads=2, d_model=8, d_ff=16, activation="gelu",
           layer_norm=True, causal=True, loss="mse")


def batch(n=12, d=8, seed=0):
    r = np.random.default_rng(seed)
    return {"x": r.standard_normal((n, d)), "y": r.standard_normal((n, d))}


def test_init_params_and_roundtrips(tmp_path):
    m = polyattn.Model.init(CFG, seed=3)
    assert m.dtype == "float64"
    assert m.config["n_layers"] == "2" and m.config["causal"] == "true"
    p = m.params()
    assert p["layers.0.attn.wq"].shape == (8, 8)
    m2 = polyattn.Model.from_arrays(m.config, p)
    path = tmp_path / "w.safetensors"
    path.write_bytes(safetensors_bytes(p, m.config))
    m3 = polyattn.Model.load(path)
    x = batch()
    r1, r2, r3 = (mm.loss_and_grads(x) for mm in (m, m2, m3))
    assert r1.loss == r2.loss == r3.loss > 0
    for name, g in r1.grads.items():
        np.testing.assert_array_equal(g, r2.grads[name])
        np.testing.assert_array_equal(g, r3.grads[name])
    assert set(r1.grads) == {"grad." + n for n in p} | {"grad.x"}
    assert [r["engine"] for r in r1.reports] == ["exact", "exact"]
    # inputs from a file give the same numbers
    ipath = tmp_path / "x.safetensors"
    ipath.write_bytes(safetensors_bytes(x))
    assert m.loss_and_grads(ipath).loss == r1.loss
    assert polyattn.Model.load(path, dtype="float32").dtype == "float32"


def test_gradient_matches_central_differences():
    m = polyattn.Model.init(CFG, seed=4)
    x = batch(seed=5)
    g = m.loss_and_grads(x).grads
    p = m.params()
    h = 1e-5
    for name, idx in (("layers.0.attn.wq", (1, 2)), ("layers.1.mlp.w1", (3, 4)), ("layers.0.ln1.gain", (5,))):
        plus = {k: v.copy() for k, v in p.items()}
        minus = {k: v.copy() for k, v in p.items()}
        plus[name][idx] += h
        minus[name][idx] -= h
        lp = polyattn.Model.from_arrays(m.config, plus).loss_and_grads(x).loss
        lm = polyattn.Model.from_arrays(m.config, minus).loss_and_grads(x).loss
        fd = (lp - lm) / (2 * h)
        # central difference: truncation h^2 |L'''| / 6 ~ 1e-10 and rounding
        # eps |L| / h ~ 1e-11 for L, L''' of order 1: 1e-7 leaves a wide margin.
        assert abs(fd - g["grad." + name][idx]) <= 1e-7 * max(1.0, abs(fd)), name


def test_poly_engine_per_layer_and_auto():
    m = polyattn.Model.init(CFG, seed=6)
    p = m.params()
    for l in range(2):  # bounded scores, as `polyattn model --init --qk-scale 0.25`
        p[f"layers.{l}.attn.wq"] *= 0.25
        p[f"layers.{l}.attn.wk"] *= 0.25
    m = polyattn.Model.from_arrays(m.config, p)
    x = batch(seed=7)
    ex = m.loss_and_grads(x)
    po = m.loss_and_grads(x, ["poly", "exact"], eps=1e-9)
    assert [r["engine"] for r in po.reports] == ["poly", "exact"]
    assert po.reports[0]["heads"][0]["bound_o"] <= 1e-9
    assert abs(po.loss - ex.loss) <= 1e-6 * ex.loss
    au = m.loss_and_grads(x, "auto", eps=1e-9, gradient="polynomial-model")
    assert all(r["requested"] == "auto" for r in au.reports)


def test_tokens_cross_entropy():
    cfg = dict(CFG, loss="cross-entropy", vocab=11)
    m = polyattn.Model.init(cfg, tokens=True, seed=8, dtype="float32")
    r = m.loss_and_grads({"tokens": [1, 4, 10, 0], "labels": [4, 10, 0, 3]})
    assert r.grads["grad.embedding"].shape == (11, 8) and "grad.x" not in r.grads
    assert r.grads["grad.embedding"].dtype == np.float32
    assert 0 < r.loss < 10


def test_model_errors(tmp_path):
    with pytest.raises(polyattn.PolyattnError) as e:
        polyattn.Model.load(tmp_path / "missing.safetensors")
    assert e.value.kind == "io"
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(polyattn.PolyattnError) as e:
        polyattn.Model.load(bad)
    assert e.value.kind == "bad_file"
    with pytest.raises(polyattn.PolyattnError) as e:
        polyattn.Model.init(dict(CFG, n_heads=3))
    assert e.value.kind == "model_config"
    m = polyattn.Model.init(dict(CFG, loss="cross-entropy", vocab=5), tokens=True)
    with pytest.raises(polyattn.PolyattnError) as e:
        m.loss_and_grads({"tokens": [1, 2], "labels": [1, 7]})
    assert e.value.kind == "bad_index" and "labels[1] = 7" in str(e.value)
    with pytest.raises(polyattn.PolyattnError) as e:
        polyattn.Model.init(CFG).loss_and_grads({"x": np.zeros((4, 8))})
    assert e.value.kind == "missing_tensor"
    with pytest.raises(polyattn.PolyattnError) as e:
        polyattn.Model.init(CFG).loss_and_grads(batch(), "fast")
    assert e.value.kind == "invalid_parameter"
    params = polyattn.Model.init(CFG).params()
    del params["layers.1.mlp.w1"]
    with pytest.raises(polyattn.PolyattnError) as e:
        polyattn.Model.from_arrays(CFG, params)
    assert e.value.kind == "missing_tensor"
