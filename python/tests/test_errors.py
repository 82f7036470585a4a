"""Every error path: the right exception class, kind and message."""

from __future__ import annotations

import math

import numpy as np
import pytest

import polyattn
from conftest import qkv


def raises(kind, match=None):
    class Ctx:
        def __enter__(self):
            self.cm = pytest.raises(polyattn.PolyattnError, match=match)
            self.info = self.cm.__enter__()
            return self.info

        def __exit__(self, *exc):
            out = self.cm.__exit__(*exc)
            assert self.info.value.kind == kind, (self.info.value.kind, str(self.info.value))
            return out

    return Ctx()


def test_error_classes():
    assert issubclass(polyattn.PolyattnError, ValueError)
    assert issubclass(polyattn.RefusedError, polyattn.PolyattnError)
    assert polyattn.PolyattnError.__module__ == "polyattn"


def test_shape_errors():
    q, k, v = qkv((2, 8, 4), seed=1)
    with raises("shape_mismatch", "k columns|d"):
        polyattn.attention(q, k[..., :3], v)
    with raises("shape_mismatch", "v rows|n_k|v"):
        polyattn.attention(q, k, v[:, :5])
    with raises("shape_mismatch", "leading"):
        polyattn.attention(q, np.concatenate([k, k]), np.concatenate([v, v]))
    with raises("shape_mismatch", "at least 2"):
        polyattn.attention(q[0, 0], k, v)
    with raises("empty", "q has an empty dimension"):
        polyattn.attention(np.zeros((0, 4)), np.zeros((3, 4)), np.zeros((3, 4)))
    with raises("empty"):
        polyattn.attention(np.zeros((0, 3, 4)), np.zeros((0, 3, 4)), np.zeros((0, 3, 4)))
    _, _, _, do = qkv((2, 8, 4), seed=1, with_do=True)
    with raises("shape_mismatch", "do"):
        polyattn.attention_backward(q, k, v, do[:, :7])
    with raises("shape_mismatch"):
        polyattn.attention_backward(q, k, v, do[..., :3], engine="poly")


def test_non_finite_named_by_index():
    q, k, v = qkv((2, 3, 8, 4), seed=2)
    q[1, 2, 5, 3] = np.nan
    with raises("non_finite", r"q\[1, 2, 5, 3\] is NaN"):
        polyattn.attention(q, k, v)
    q[1, 2, 5, 3] = 0.0
    v[0, 0, 0, 1] = -np.inf
    with raises("non_finite", r"v\[0, 0, 0, 1\] is -inf"):
        polyattn.attention(q, k, v)
    v[0, 0, 0, 1] = 0.0
    _, _, _, do = qkv((2, 3, 8, 4), seed=2, with_do=True)
    do[0, 1, 2, 3] = np.inf
    with raises("non_finite", r"do\[0, 1, 2, 3\] is inf"):
        polyattn.attention_backward(q, k, v, do)


def test_dtype_errors():
    q, k, v = qkv((8, 4), seed=3)
    with raises("mixed_dtype", "`k` has dtype float32 but `q` has float64"):
        polyattn.attention(q, k.astype(np.float32), v)
    with raises("unsupported_dtype", "int64"):
        polyattn.attention(q.astype(np.int64), k.astype(np.int64), v.astype(np.int64))
    with raises("unsupported_dtype", "uint16"):
        polyattn.attention(*(x.astype(np.uint16) for x in (q, k, v)))
    with raises("mixed_dtype", "uint16"):
        polyattn.attention(q, k, v, dtype="bfloat16")
    with raises("invalid_parameter", "dtype"):
        polyattn.attention(*(x.astype(np.uint16) for x in (q, k, v)), dtype="int8")


def test_parameter_errors():
    q, k, v = qkv((8, 4), seed=4)
    with raises("invalid_parameter", "scale"):
        polyattn.attention(q, k, v, scale=float("nan"))
    with raises("invalid_parameter", "engine"):
        polyattn.attention(q, k, v, engine="fast")
    with raises("invalid_parameter", "engine='exact' takes neither"):
        polyattn.attention(q, k, v, eps=1e-3)
    with raises("invalid_parameter", "not both"):
        polyattn.attention(q, k, v, engine="poly", eps=1e-3, degree=3)
    with raises("invalid_parameter", "causal_alignment"):
        polyattn.attention(q, k, v, is_causal=True, causal_alignment="middle")
    with raises("invalid_parameter", "gradient"):
        polyattn.attention_backward(q, k, v, q, gradient="altgrad")
    with raises("invalid_parameter", "eps"):
        polyattn.attention(q, k, v, engine="poly", eps=-1.0)


def test_overflow():
    q, k, v = qkv((8, 4), seed=5, dtype=np.float32)
    with raises("overflow", "float32|F32|f32"):
        polyattn.attention(q * np.float32(1e20), k * np.float32(1e20), v)


def test_unsupported_options_raise_not_implemented():
    q, k, v = qkv((8, 4), seed=6)
    with pytest.raises(NotImplementedError, match="dropout"):
        polyattn.attention(q, k, v, dropout_p=0.1)


def test_refusal_carries_the_regime():
    n, d = 64, 16
    q, k, v = qkv((n, d), seed=7, scale=10.0)
    with pytest.raises(polyattn.RefusedError) as info:
        polyattn.attention(q, k, v, engine="poly")
    e = info.value
    assert isinstance(e, polyattn.PolyattnError) and isinstance(e, ValueError)
    assert e.kind == "refused"
    assert "polynomial engine refused" in str(e) and e.reason in str(e)
    tau = 1 / math.sqrt(d)
    rad = tau * np.linalg.norm(q, axis=1).max() * np.linalg.norm(k, axis=1).max()
    assert rad <= e.R <= rad * (1 + 1e-12)
    assert e.B == max(np.abs(q).max(), np.abs(k).max())
    assert e.sqrt_ln_n == pytest.approx(math.sqrt(math.log(n)), rel=1e-12)
    # and a refusal in the backward path too
    with pytest.raises(polyattn.RefusedError):
        polyattn.attention_backward(q, k, v, v, engine="poly", degree=2)


def test_native_borrow_checks():
    from polyattn import _native

    q, k, v = qkv((1, 8, 4), seed=8)
    with raises("invalid_parameter", "C-contiguous"):
        _native.forward(np.asfortranarray(q), k, v)
    with raises("mixed_dtype"):
        _native.forward(q, k.astype(np.float32), v)
    with raises("unsupported_dtype"):
        _native.forward(q[0], k, v)
    with raises("invalid_parameter", "mask"):
        _native.forward(q, k, v, mask="diagonal")
    _, st = _native.forward(q, k, v)
    with raises("shape_mismatch", "forward's inputs"):
        _native.backward(st, q[:, :4], k, v, q[:, :4])
    with raises("mixed_dtype", "must be a 3-d float64 array"):
        f = np.float32
        _native.backward(st, q.astype(f), k.astype(f), v.astype(f), v.astype(f))
