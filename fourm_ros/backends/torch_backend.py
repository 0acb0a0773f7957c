"""The PyTorch backend: runs the graph modules eagerly on CPU or CUDA, in the modules' dtype.

A recurrent output (the sequence KV cache) is its input updated in place: pass it back to the next step
and nowhere else. Thread-safe: every call runs in inference mode, which is per thread.

Convolution weights are laid out channels-last, the layout oneDNN's (and cuDNN's) convolutions prefer: the
DiVAE UNets' activations then stay channels-last from one convolution to the next instead of being
converted around each (one-off interleaved A/B runs of the B UNet on this machine's CPU: 6 % faster in
float32, 12 % in bfloat16). The values are unchanged, only their strides. On the CPU, bfloat16
convolutions and linear layers also keep their weights in oneDNN's blocked layout after their first call,
and float32 linear layers run on oneDNN instead of MKL (``fourm_ros.backends.onednn``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from fourm_ros.backends.base import Backend
from fourm_ros.backends.onednn import use_onednn


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, graphs: Mapping[str, nn.Module], device: str | torch.device = "cpu"):
        self._graphs = {name: graph.to(memory_format=torch.channels_last) for name, graph in graphs.items()}
        self.device = torch.device(device)
        if self.device.type == "cpu":
            for graph in self._graphs.values():
                use_onednn(graph)
        self._dtypes = {name: next(graph.parameters()).dtype for name, graph in self._graphs.items()}

    @property
    def graphs(self) -> tuple[str, ...]:
        return tuple(self._graphs)

    def _tensor(self, value: Any, copy: bool = False) -> torch.Tensor:
        """``copy``: a recurrent input (the KV cache), which the graph updates in place; an array from the
        caller is copied once, a tensor this backend returned is reused."""
        if isinstance(value, torch.Tensor):
            return value.to(self.device)
        array = np.array(value) if copy else np.ascontiguousarray(value)
        return torch.as_tensor(array, device=self.device)

    @torch.inference_mode()
    def run(self, graph: str, **inputs: Any) -> dict[str, Any]:
        module = self._graphs.get(graph)
        self._check(graph, module.spec.inputs if module is not None else (), inputs)
        consumed = set(module.spec.recurrent.values())
        outputs = module(*(self._tensor(inputs[name], copy=name in consumed) for name in module.spec.inputs))
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
