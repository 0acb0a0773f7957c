"""The PyTorch backend: runs the graph modules eagerly on CPU or CUDA, in the modules' dtype."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from fourm_ros.backends.base import Backend


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, graphs: Mapping[str, nn.Module], device: str | torch.device = "cpu"):
        self._graphs = dict(graphs)
        self.device = torch.device(device)
        self._dtypes = {name: next(graph.parameters()).dtype for name, graph in self._graphs.items()}

    @property
    def graphs(self) -> tuple[str, ...]:
        return tuple(self._graphs)

    def _tensor(self, value: Any) -> torch.Tensor:
        if isinstance(value, torch.Tensor):
            return value.to(self.device)
        return torch.as_tensor(np.ascontiguousarray(value), device=self.device)

    @torch.inference_mode()
    def run(self, graph: str, **inputs: Any) -> dict[str, Any]:
        module = self._graphs.get(graph)
        self._check(graph, module.spec.inputs if module is not None else (), inputs)
        outputs = module(*(self._tensor(inputs[name]) for name in module.spec.inputs))
        if isinstance(outputs, torch.Tensor):
            outputs = (outputs,)
        return dict(zip(module.spec.outputs, outputs, strict=True))

    def to_numpy(self, value: Any) -> np.ndarray:
        if isinstance(value, torch.Tensor):
            return (
                value.detach().to("cpu", torch.float32 if value.is_floating_point() else value.dtype).numpy()
            )
        return np.asarray(value)

    def describe(self) -> str:
        """Backend, device and dtype; the graphs of a second dtype are named (per-stage precision)."""
        by_dtype: dict[str, list[str]] = {}
        for name, dtype in self._dtypes.items():
            by_dtype.setdefault(str(dtype).removeprefix("torch."), []).append(name)
        main, *others = sorted(by_dtype, key=lambda dtype: -len(by_dtype[dtype]))
        named = "".join(f"; {dtype}: {', '.join(by_dtype[dtype])}" for dtype in others)
        return f"torch {torch.__version__} on {self.device} ({main}{named})"
