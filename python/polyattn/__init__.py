"""polyattn: transformer attention, exact and by the polynomial method, with certified
error bounds (Python bindings of the Rust crate ``polyattn``).

NumPy API (PyTorch's ``[..., n, d]`` layout; leading dims fold into heads):

- :func:`attention`, :func:`attention_backward`: the exact engine, the polynomial
  engine (with a certified entrywise bound, or :class:`RefusedError`), or ``"auto"``;
- :func:`reference`: exact float64 + a priori rounding bound, a certified enclosure;
- :func:`certify_outputs`: certified distances of any outputs to exact attention;
- :class:`Model`: the multi-layer transformer's loss and gradients.

``polyattn.torch`` (import it explicitly; needs PyTorch) has
``scaled_dot_product_attention`` as a ``torch.autograd.Function``.

Errors: :class:`PolyattnError` (a ``ValueError``; ``kind`` names the Rust error
variant) and its subclass :class:`RefusedError` (attributes ``R``, ``B``,
``sqrt_ln_n``, ``reason``).
"""

from ._native import PolyattnError, RefusedError, __version__
from ._api import AttentionResult, BackwardResult, attention, attention_backward
from ._arrays import alibi_slopes
from ._certify import (
    CertificationReport,
    ReferenceResult,
    TensorCertificate,
    certify_outputs,
    reference,
)
from ._model import Model, ModelGradients

__all__ = [
    "alibi_slopes",
    "AttentionResult",
    "BackwardResult",
    "CertificationReport",
    "Model",
    "ModelGradients",
    "PolyattnError",
    "RefusedError",
    "ReferenceResult",
    "TensorCertificate",
    "__version__",
    "attention",
    "attention_backward",
    "certify_outputs",
    "reference",
]
