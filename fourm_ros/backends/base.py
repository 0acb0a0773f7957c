"""The one interface every inference backend implements.

The pipeline asks a backend to run named graphs (see ``fourm_ros.backends.graphs``) on named arrays and never
touches a backend's internals. Inputs may be numpy arrays or arrays a previous call of the same backend
returned (so a cache can stay on the device between autoregressive steps); ``to_numpy`` brings a result
back to the host when the pipeline needs its values. A recurrent input (``GraphSpec.recurrent``, the KV
cache) belongs to the call: the backend may reuse its memory for the output (torch updates it in place,
TensorRT alternates two buffers), so pass a recurrent output only to the next step of its graph.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from fourm_ros.errors import UserError


class BackendError(UserError, RuntimeError):
    """A backend cannot be created or cannot run a graph; the message says why and what to do."""


class Backend(ABC):
    name: str
    """Short name: torch, onnxruntime or tensorrt."""
    selection_reason: str = ""
    """Which backend was chosen and why (set by ``fourm_ros.backends.select``), for logs and diagnostics."""

    @property
    @abstractmethod
    def graphs(self) -> tuple[str, ...]:
        """Names of the graphs this backend can run."""

    @abstractmethod
    def run(self, graph: str, **inputs: Any) -> dict[str, Any]:
        """Run ``graph`` on its named inputs; returns its named outputs (backend-native arrays)."""

    @abstractmethod
    def to_numpy(self, value: Any) -> np.ndarray:
        """A backend-native array as a host numpy array."""

    def describe(self) -> str:
        """One line for logs and diagnostics (backend, device, precision)."""
        return self.name

    def _check(self, graph: str, expected: tuple[str, ...], given: dict[str, Any]) -> None:
        if graph not in self.graphs:
            raise BackendError(f"the {self.name} backend has no graph {graph!r}; it has {list(self.graphs)}")
        if set(given) != set(expected):
            raise BackendError(f"graph {graph!r} takes inputs {list(expected)}, got {sorted(given)}")
