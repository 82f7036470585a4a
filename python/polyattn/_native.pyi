"""Type stubs of the compiled module ``polyattn._native`` (see python/src/lib.rs)."""

from typing import Any, Dict, List, Optional, Tuple

import numpy as np

__version__: str

class PolyattnError(ValueError):
    """An input or parameter polyattn rejects (a ``polyattn::Error``)."""

    kind: str

class RefusedError(PolyattnError):
    """The polynomial engine declines an input it cannot certify."""

    R: float
    B: float
    sqrt_ln_n: float
    reason: str

class ForwardState:
    """Per-head forward results kept for the backward (opaque)."""

    @property
    def engine(self) -> str: ...

def forward(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    *,
    mask: str = "none",
    scale: Optional[float] = None,
    engine: str = "exact",
    eps: Optional[float] = None,
    degree: Optional[int] = None,
    polynomial: str = "chebyshev",
    bias: Optional[np.ndarray] = None,
    softcap: Optional[float] = None,
) -> Tuple[Dict[str, Any], ForwardState]:
    """Attention forward on C-contiguous ``[heads, n, d]`` float32/float64 stacks; ``bias``
    an additive score bias ``[1 or heads, n_q, n_k]`` in q's dtype (finite or -inf);
    ``softcap`` caps each score at ``softcap * tanh(s / softcap)`` (exact engine)."""

def backward(
    state: ForwardState,
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    do: np.ndarray,
    *,
    gradient: str = "substituted",
    bias: Optional[np.ndarray] = None,
) -> Dict[str, Any]:
    """Gradients dq, dk, dv from a forward's state (plus bounds for the polynomial engine);
    ``bias`` the forward's."""

def reference(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    do: Optional[np.ndarray] = None,
    *,
    mask: str = "none",
    scale: Optional[float] = None,
    bias: Optional[np.ndarray] = None,
    softcap: Optional[float] = None,
) -> Dict[str, np.ndarray]:
    """Exact float64 results with their a priori rounding bounds (``bias`` float64,
    ``softcap`` as in ``forward``)."""

class Model:
    """The multi-layer transformer of ``polyattn::model``."""

    @staticmethod
    def load(path: str, dtype: Optional[str] = None) -> "Model": ...
    @staticmethod
    def from_bytes(data: bytes, dtype: Optional[str] = None) -> "Model": ...
    @staticmethod
    def init(config: Dict[str, str], *, tokens: bool = False, seed: int = 1, dtype: str = "float64") -> "Model": ...
    @property
    def config(self) -> Dict[str, str]: ...
    @property
    def dtype(self) -> str: ...
    def params(self) -> Dict[str, np.ndarray]: ...
    def loss_and_grads(
        self,
        inputs: bytes,
        engine: List[str],
        eps: Optional[float] = None,
        degree: Optional[int] = None,
        gradient: str = "substituted",
    ) -> Tuple[float, Dict[str, np.ndarray], str]: ...
