"""examples/jax_attention.py: polyattn as a JAX function (custom VJP over host callbacks).

Skipped without jax. The wiring is checked bit for bit against the direct calls (the
callbacks must hand JAX exactly what the engine computed), the values against the
longdouble reference within the engine's certified a priori bound, and the VJP against
JAX's own finite differences where the forward is differentiable as computed.
"""

from __future__ import annotations

import pathlib
import sys

import numpy as np
import pytest

jax = pytest.importorskip("jax")
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

import polyattn  # noqa: E402
from conftest import LD_SLACK, assert_within, np_attention, qkv  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "examples"))
from jax_attention import make_attention  # noqa: E402


@pytest.mark.parametrize("causal", [False, True])
def test_grad_is_the_engines_backward_bit_for_bit(causal):
    q, k, v, w = qkv((2, 3, 40, 8), 40, 5, seed=3, with_do=True)
    attn = jax.jit(make_attention(is_causal=causal))
    # d/dx sum(w * attn(q, k, v)) is the backward with upstream gradient do = w.
    loss = lambda q, k, v: jnp.sum(jnp.asarray(w) * attn(q, k, v))
    dq, dk, dv = jax.grad(loss, argnums=(0, 1, 2))(q, k, v)
    g = polyattn.attention_backward(q, k, v, w, is_causal=causal)
    np.testing.assert_array_equal(np.asarray(attn(q, k, v)), g.o)
    for name, x in (("dq", dq), ("dk", dk), ("dv", dv)):
        np.testing.assert_array_equal(np.asarray(x), getattr(g, name), err_msg=name)
    ref = polyattn.reference(q, k, v, w, is_causal=causal)
    npr = np_attention(q, k, v, w, mask="top-left" if causal else "none")
    for name, x in (("o", attn(q, k, v)), ("dq", dq), ("dk", dk), ("dv", dv)):
        bound = getattr(ref, name + "_bound") * (1 + LD_SLACK)
        assert_within(np.asarray(x), npr[name], bound, f"jax {name}")


def test_vmap_folds_the_mapped_axis_into_heads():
    q, k, v = qkv((3, 2, 24, 4), seed=5)
    attn = make_attention()
    mapped = jax.vmap(attn)(q, k, v)
    direct = polyattn.attention(q, k, v).o
    np.testing.assert_array_equal(np.asarray(mapped), direct)


def test_float32_in_float32_out():
    q, k, v = qkv((2, 16, 8), seed=6, dtype=np.float32)
    o = make_attention()(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v))
    assert o.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(o), polyattn.attention(q, k, v).o)


def test_check_grads_exact():
    # JAX's own check: reverse-mode VJP against central differences (float64).
    q, k, v = (jnp.asarray(x) for x in qkv((2, 6, 4), seed=1))
    check_grads(make_attention(is_causal=True), (q, k, v), order=1, modes=["rev"])


def test_check_grads_poly_polynomial_model_fixed_taylor_degree():
    # A fixed-degree Taylor P does not depend on the inputs, so the polynomial-model
    # gradient is the derivative of the forward as computed (python/README.md).
    q, k, v = (jnp.asarray(x) for x in qkv((2, 6, 3), seed=2, scale=0.5))
    attn = make_attention(
        engine="poly", degree=4, polynomial="taylor", gradient="polynomial-model"
    )
    check_grads(attn, (q, k, v), order=1, modes=["rev"])


def test_bfloat16_through_ml_dtypes():
    # JAX hands the callback ml_dtypes bfloat16 arrays; polyattn computes in float32
    # and rounds once, so the bits equal the direct call's.
    q = jax.random.normal(jax.random.PRNGKey(0), (2, 16, 8)).astype(jnp.bfloat16)
    o = make_attention()(q, q, q)
    assert o.dtype == jnp.bfloat16
    direct = polyattn.attention(np.asarray(q), np.asarray(q), np.asarray(q)).o
    np.testing.assert_array_equal(np.asarray(o).view(np.uint16), direct.view(np.uint16))
