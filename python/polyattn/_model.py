"""The multi-layer transformer of ``polyattn::model`` (as ``polyattn model`` drives it)."""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np

from . import _native
from ._api import GRADIENTS, check_engine
from ._arrays import error

_ST_DTYPES = {np.dtype(np.float32): "F32", np.dtype(np.float64): "F64"}


def safetensors_bytes(tensors: Mapping[str, Any], metadata: Optional[Mapping[str, str]] = None) -> bytes:
    """``tensors`` (name -> float32/float64 array) serialised in the safetensors
    format: an 8-byte little-endian header length, the JSON header, the raw data."""
    header: Dict[str, Any] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    offset = 0
    for name, a in tensors.items():
        arr = np.asarray(a)
        if arr.dtype not in _ST_DTYPES:
            raise error(
                "unsupported_dtype",
                f"tensor `{name}` has dtype {arr.dtype}; supported: float32, float64",
            )
        data = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {
            "dtype": _ST_DTYPES[arr.dtype],
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + len(data)],
        }
        blobs.append(data)
        offset += len(data)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + b"".join(blobs)


@dataclass
class ModelGradients:
    """The result of :meth:`Model.loss_and_grads`.

    Attributes:
        loss: the loss L (float).
        grads: ``grad.<parameter name>`` for every parameter, and ``grad.x`` (dL/dX)
            for a feature input, in the model's dtype.
        reports: per layer, the engine that ran and why, and for the polynomial engine
            the per-head plan and a priori bounds (``polyattn model``'s
            ``engines_json``).
    """

    loss: float
    grads: Dict[str, np.ndarray]
    reports: List[Dict[str, Any]]


class Model:
    """A multi-layer pre-norm transformer (Rust ``polyattn::model::Model``): the loss and
    the gradient of every parameter, attention through the exact or the polynomial
    engine, as ``polyattn model`` computes them.

    Build one with :meth:`load` (a weights safetensors file, e.g. written by
    ``polyattn model --init``), :meth:`from_arrays` or :meth:`init`.
    """

    def __init__(self, native: Any) -> None:
        """Wraps a native model; use the class methods instead."""
        self._m = native

    @classmethod
    def load(cls, weights_path: Union[str, "os.PathLike[str]"], dtype: Optional[str] = None) -> "Model":
        """Reads a weights file (every parameter; the configuration in
        ``__metadata__``). ``dtype``: ``"float32"`` or ``"float64"``, default the
        file's."""
        return cls(_native.Model.load(os.fspath(weights_path), dtype))

    @classmethod
    def from_arrays(
        cls, config: Mapping[str, Any], params: Mapping[str, Any], dtype: Optional[str] = None
    ) -> "Model":
        """A model from its configuration (the keys of :attr:`config`: n_layers,
        n_heads, d_model, d_ff, activation, layer_norm, causal, loss, vocab) and its
        parameters by name (the names of :meth:`params`), float32 or float64 arrays."""
        meta = {k: _meta_str(v) for k, v in config.items() if v is not None}
        return cls(_native.Model.from_bytes(safetensors_bytes(params, meta), dtype))

    @classmethod
    def init(
        cls, config: Mapping[str, Any], *, tokens: bool = False, seed: int = 1, dtype: str = "float64"
    ) -> "Model":
        """Seeded random parameters for ``config`` (as ``polyattn model --init``);
        ``tokens=True`` adds an embedding for token input."""
        meta = {k: _meta_str(v) for k, v in config.items() if v is not None}
        return cls(_native.Model.init(meta, tokens=tokens, seed=seed, dtype=dtype))

    @property
    def config(self) -> Dict[str, str]:
        """The configuration, as the weights file's metadata strings."""
        return dict(self._m.config)

    @property
    def dtype(self) -> str:
        """``"float32"`` or ``"float64"``: the compute dtype."""
        return str(self._m.dtype)

    def params(self) -> Dict[str, np.ndarray]:
        """Every parameter by name (new arrays)."""
        return dict(self._m.params())

    def loss_and_grads(
        self,
        inputs: Union[Mapping[str, Any], str, "os.PathLike[str]"],
        engine: Union[str, Sequence[str]] = "exact",
        *,
        eps: Optional[float] = None,
        degree: Optional[int] = None,
        gradient: str = "substituted",
    ) -> ModelGradients:
        """The loss and every gradient for one sequence.

        Args:
            inputs: a dict with ``x`` ``[n, d_model]`` or ``tokens`` ``[n]`` (integers),
                and ``y`` ``[n, d_model]`` (MSE) or ``labels`` ``[n]`` (cross-entropy);
                or the path of an input safetensors file with those tensors.
            engine: ``"exact"``, ``"poly"`` or ``"auto"`` for every layer, or a list with
                one per layer.
            eps, degree: polynomial engine accuracy (as in :func:`polyattn.attention`).
            gradient: polynomial engine: ``"substituted"`` or ``"polynomial-model"``.
        """
        engines = [engine] if isinstance(engine, str) else list(engine)
        for e in engines:
            check_engine(e, None, None)
        if eps is not None and degree is not None:
            raise error("invalid_parameter", "give eps or degree, not both")
        if gradient not in GRADIENTS:
            raise error("invalid_parameter", f"gradient={gradient!r}: expected one of {GRADIENTS}")
        if isinstance(inputs, Mapping):
            dt = np.dtype(self.dtype)
            tensors = {}
            for name, a in inputs.items():
                arr = np.asarray(a)
                if name in ("tokens", "labels"):
                    tensors[name] = arr.astype(np.float64)
                else:
                    tensors[name] = arr.astype(dt, copy=False)
            data = safetensors_bytes(tensors)
        else:
            with open(os.fspath(inputs), "rb") as f:
                data = f.read()
        loss, grads, reports = self._m.loss_and_grads(
            data, engines, eps=eps, degree=degree, gradient=gradient
        )
        return ModelGradients(loss=float(loss), grads=dict(grads), reports=json.loads(reports))


def _meta_str(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)
