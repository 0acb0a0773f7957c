"""Convolutions and linear layers on oneDNN's CPU kernels, with bfloat16 weights reordered once.

Two costs of eager PyTorch on the CPU, both removed here without changing a module's parameters:

- bfloat16: PyTorch hands oneDNN a plain weight, and oneDNN reorders it into its blocked layout (AVX-512
  BF16 / AMX kernels) on every call; in the B DiVAE UNet, whose convolutions hold 330 MB of bf16 weights,
  that reorder was 80 ms of a call. ``OneDnnConv2d`` and ``OneDnnLinear`` keep the reordered weight from
  their first call (the same bits out; the copy costs the weights' size once more).
- float32 linear layers: PyTorch multiplies with MKL, which on AMD processors runs far below oneDNN's
  kernels (2-core AMD EPYC, a 768→3072 layer: 0.99 / 2.08 / 25.3 ms with MKL against 0.62 / 0.77 / 18.7 ms
  with oneDNN, for 1 / 2 / 588 rows). ``OneDnnLinear`` sends float32 to oneDNN with the plain weight (no
  copy; oneDNN's own rounding, ~1e-6 from MKL's) on x86_64.

Both use the kernels torch.compile uses for frozen weights (``torch.ops.mkldnn``). The plain weight stays
the module's parameter (state dict, export and every other device or dtype use it); autograd and tracing
for export always take the plain PyTorch path.
"""

from __future__ import annotations

import functools
import platform

import torch
from torch import nn


class _OneDnn:
    """The oneDNN path of a layer (mixed into ``nn.Conv2d`` / ``nn.Linear``, which define
    ``_reorder(weight, x)``: the bf16 weight in oneDNN's layout for inputs like ``x``)."""

    weight: nn.Parameter
    _float32_on_onednn = False
    """Whether float32 calls take oneDNN too (linear layers on x86_64; float32 convolutions already do)."""
    _prepacked: tuple[tuple[int, int], torch.Tensor] | None = None
    """(the plain weight's data pointer and version, the reordered weight made from it)."""

    def _onednn_weight(self, x: torch.Tensor) -> torch.Tensor | None:
        """The weight to hand oneDNN for this call, or None for the plain PyTorch path: inference on the
        CPU in the weight's dtype, where oneDNN has kernels for it; not autograd, not a trace (an export
        records the plain op)."""
        if (
            x.device.type != "cpu"
            or x.dtype != self.weight.dtype
            or (torch.is_grad_enabled() and self.weight.requires_grad)
            or torch.jit.is_tracing()
        ):
            return None
        if x.dtype == torch.bfloat16 and onednn_has_bfloat16():
            return self._reordered(x)
        if x.dtype == torch.float32 and self._float32_on_onednn and onednn_float32_linear():
            return self.weight
        return None

    def _reordered(self, x: torch.Tensor) -> torch.Tensor:
        """The reordered weight, made again if the plain weight was replaced or changed in place (an
        inference tensor has no version counter: it cannot change outside inference mode)."""
        weight = self.weight
        key = (weight.data_ptr(), 0 if weight.is_inference() else weight._version)
        if self._prepacked is None or self._prepacked[0] != key:
            self._prepacked = (key, self._reorder(weight.detach(), x))
        return self._prepacked[1]

    def __getstate__(self) -> dict:
        """Copies and pickles leave the reordered weight behind (oneDNN's opaque tensors cannot be copied);
        the copy makes its own at its first call."""
        state = dict(super().__getstate__())
        state.pop("_prepacked", None)
        return state


class OneDnnConv2d(_OneDnn, nn.Conv2d):
    """``nn.Conv2d`` whose bfloat16 CPU inference uses a weight reordered once for oneDNN; any other call is
    the plain convolution (float32 convolutions already run on oneDNN)."""

    def _onednn_weight(self, x: torch.Tensor) -> torch.Tensor | None:
        if self.padding_mode != "zeros" or isinstance(self.padding, str):
            return None  # padding oneDNN's kernel does not take
        return super()._onednn_weight(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self._onednn_weight(x)
        if weight is None:
            return super().forward(x)
        padding, stride, dilation = self._geometry()
        return torch.ops.mkldnn._convolution_pointwise(
            x, weight, self.bias, padding, stride, dilation, self.groups, "none", [], ""
        )

    def _geometry(self) -> tuple[list[int], list[int], list[int]]:
        return list(self.padding), list(self.stride), list(self.dilation)

    def _reorder(self, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        padding, stride, dilation = self._geometry()
        return torch._C._nn.mkldnn_reorder_conv2d_weight(
            weight.to_mkldnn(), padding, stride, dilation, self.groups, list(x.shape)
        )


class OneDnnLinear(_OneDnn, nn.Linear):
    """``nn.Linear`` on oneDNN in CPU inference: bfloat16 with a weight reordered once, float32 with the
    plain weight; any other call is the plain matrix product."""

    _float32_on_onednn = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self._onednn_weight(x)
        if weight is None:
            return super().forward(x)
        return torch.ops.mkldnn._linear_pointwise(x, weight, self.bias, "none", [], "")

    def _reorder(self, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._reorder_linear_weight(weight, x.numel() // x.shape[-1])


def use_onednn(module: nn.Module) -> int:
    """Make the layers of ``module`` that gain from it their oneDNN subclass (the same object, parameters
    and state-dict keys; only ``forward`` changes): bfloat16 convolutions and linear layers where oneDNN
    has bfloat16 kernels (AVX-512 or Arm BF16; elsewhere eager torch uses its own kernels, which take plain
    weights), float32 linear layers on x86_64. Returns how many; none where torch has no oneDNN."""
    bfloat16, float32_linear = onednn_has_bfloat16(), onednn_float32_linear()
    count = 0
    for child in module.modules():
        kind = type(child)
        if kind not in (nn.Conv2d, nn.Linear):
            continue
        dtype = child.weight.dtype
        float32 = kind is nn.Linear and dtype == torch.float32 and float32_linear
        if float32 or (dtype == torch.bfloat16 and bfloat16):
            child.__class__ = OneDnnConv2d if kind is nn.Conv2d else OneDnnLinear
            count += 1
    return count


@functools.cache
def onednn_has_bfloat16() -> bool:
    """Whether torch's oneDNN has bfloat16 kernels on this CPU (AVX-512 BF16 / AMX on x86, BF16 on Arm)."""
    supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return torch.backends.mkldnn.is_available() and supported is not None and bool(supported())


@functools.cache
def onednn_float32_linear() -> bool:
    """Whether float32 linear layers go to oneDNN: x86_64 with torch's oneDNN (measured against MKL there)."""
    return torch.backends.mkldnn.is_available() and platform.machine().lower() in ("x86_64", "amd64")
