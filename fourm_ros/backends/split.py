"""One backend made of two: the exported backend for most graphs, torch for the stages it cannot run.

ONNX Runtime and TensorRT compute the exported float32 graphs; a stage configured to another precision
(``precision.depth: bfloat16``, see ``fourm_ros.pipeline.config.PrecisionConfig``) runs on torch next to
them. The pipeline only ever moves numpy arrays between these stages (token grids into the decoders), so
each graph's outputs go back through the backend that produced them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fourm_ros.backends.base import Backend
from fourm_ros.backends.torch_backend import TorchBackend


class SplitBackend(Backend):
    """Runs ``torch_backend``'s graphs on torch and every other graph on ``primary``."""

    def __init__(self, primary: Backend, torch_backend: TorchBackend):
        overlap = set(primary.graphs) & set(torch_backend.graphs)
        if overlap:
            raise ValueError(f"graphs {sorted(overlap)} would run on two backends")
        self.primary, self.torch_backend = primary, torch_backend
        self.name = primary.name

    @property
    def graphs(self) -> tuple[str, ...]:
        return (*self.primary.graphs, *self.torch_backend.graphs)

    def run(self, graph: str, **inputs: Any) -> dict[str, Any]:
        backend = self.torch_backend if graph in self.torch_backend.graphs else self.primary
        return backend.run(graph, **inputs)

    def to_numpy(self, value: Any) -> np.ndarray:
        if isinstance(value, torch.Tensor) and value.device.type == "cpu":
            return self.torch_backend.to_numpy(value)
        return self.primary.to_numpy(value)

    def describe(self) -> str:
        graphs = ", ".join(self.torch_backend.graphs)
        return f"{self.primary.describe()}; {graphs} on {self.torch_backend.describe()}"
