"""polyattn inside JAX: attention as a differentiable JAX function on the CPU.

``make_attention(**options)`` returns ``attn(q, k, v)`` for arrays in PyTorch's
``[..., n, d]`` layout. The forward and the backward both run in the Rust engine on the
host, reached through ``jax.pure_callback``; ``jax.custom_vjp`` tells JAX that the
cotangents of q, k and v come from ``polyattn.attention_backward``. So ``jax.grad``,
``jax.jit`` and ``jax.vmap`` work over it, and nothing is recomputed in JAX.

``options`` are those of ``polyattn.attention`` (``is_causal``, ``causal_alignment``,
``scale``, ``engine``, ``eps``, ``degree``, ``polynomial``, ``gradient``). Which
gradient autograd should see is the same question as for ``polyattn.torch``: with
``engine="exact"`` (the default) it is the gradient of exact attention to the engine's
rounding; with ``engine="poly"`` pass ``gradient="polynomial-model"`` (the derivative of
the polynomial forward, which is what ``jax.grad`` of the computed output means) and a
fixed ``degree`` with ``polynomial="taylor"`` if finite differences must agree
everywhere (a Chebyshev P is fit on [-R, R] with R taken from the inputs; see
python/README.md). ``gradient="substituted"`` is the papers' gradient: certified close to
exact attention's gradient but not the derivative of the forward.

Limits: CPU only (the callback copies device arrays to the host); float32 and float64
(JAX's float16/bfloat16 arrays go through ``np.asarray`` as ml_dtypes arrays, which
polyattn takes too, computed in float32 and rounded back). Run this file for a demo:
``python examples/jax_attention.py`` with jax, numpy and polyattn installed. The
backward recomputes the forward in the engine (its state cannot cross the callback).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

import polyattn


def make_attention(**options: Any):
    """Attention with the given polyattn options, as a JAX function with a custom VJP."""

    def out_spec(q, v):
        return jax.ShapeDtypeStruct(q.shape[:-1] + v.shape[-1:], q.dtype)

    # `gradient` is an option of the backward only.
    fwd_options = {key: val for key, val in options.items() if key != "gradient"}

    def host_forward(q, k, v):
        r = polyattn.attention(np.asarray(q), np.asarray(k), np.asarray(v), **fwd_options)
        return np.asarray(r.o, dtype=q.dtype)

    def host_backward(q, k, v, do):
        g = polyattn.attention_backward(
            np.asarray(q), np.asarray(k), np.asarray(v), np.asarray(do), **options
        )
        return (
            np.asarray(g.dq, dtype=q.dtype),
            np.asarray(g.dk, dtype=k.dtype),
            np.asarray(g.dv, dtype=v.dtype),
        )

    # "broadcast_all": under vmap every argument gets the batch dimension, which
    # polyattn folds into heads (it does not broadcast leading dims itself).
    @jax.custom_vjp
    def attn(q, k, v):
        return jax.pure_callback(
            host_forward, out_spec(q, v), q, k, v, vmap_method="broadcast_all"
        )

    def attn_fwd(q, k, v):
        return attn(q, k, v), (q, k, v)

    def attn_bwd(res, do):
        q, k, v = res
        specs = tuple(jax.ShapeDtypeStruct(x.shape, x.dtype) for x in (q, k, v))
        return jax.pure_callback(
            host_backward, specs, q, k, v, do, vmap_method="broadcast_all"
        )

    attn.defvjp(attn_fwd, attn_bwd)
    return attn


if __name__ == "__main__":
    import jax.numpy as jnp

    jax.config.update("jax_enable_x64", True)
    kq, kk, kv = jax.random.split(jax.random.PRNGKey(0), 3)
    q, k, v = (jax.random.normal(s, (2, 4, 128, 32), jnp.float64) for s in (kq, kk, kv))
    attn = jax.jit(make_attention(is_causal=True))
    loss = lambda q, k, v: (attn(q, k, v) ** 2).sum()
    dq, dk, dv = jax.grad(loss, argnums=(0, 1, 2))(q, k, v)
    print("loss", float(loss(q, k, v)), "|dq|", float(jnp.abs(dq).max()))
