"""bfloat16 convolutions and linear layers on the CPU with their weights reordered once, not on every call.

Eager PyTorch hands oneDNN a plain weight, and for bfloat16 (AVX-512 BF16 / AMX kernels) oneDNN first
reorders it into its blocked layout on every call: in the B DiVAE UNet, whose convolutions hold 330 MB of
bf16 weights, that reorder is most of a convolution's time. ``PrepackedConv2d`` and ``PrepackedLinear`` keep
the reordered weight from their first call and hand it to oneDNN's kernels (``torch.ops.mkldnn``, those
torch.compile uses for frozen weights); the values are the same bits. The plain weight stays the module's
parameter (state dict, export and every other device or dtype use it), so the reordered copy costs the
weights' size once more. float32 is left alone: its kernels read plain weights well (one-off A/B of the B
UNet on this machine: 10 % faster prepacked, for 660 MB more memory).
"""

from __future__ import annotations

import torch
from torch import nn


class _Prepacked:
    """The reordered-weight cache of a layer (mixed into ``nn.Conv2d`` / ``nn.Linear``, which define
    ``_reorder(weight, x)``: the weight in oneDNN's layout for inputs like ``x``)."""

    weight: nn.Parameter
    _prepacked: tuple[tuple[int, int], torch.Tensor] | None = None
    """(the plain weight's data pointer and version, the reordered weight made from it)."""

    def _eligible(self, x: torch.Tensor) -> bool:
        """bfloat16 inference on the CPU; not autograd, not a trace (an export records the plain op)."""
        return (
            x.device.type == "cpu"
            and x.dtype == torch.bfloat16
            and self.weight.dtype == torch.bfloat16
            and not (torch.is_grad_enabled() and self.weight.requires_grad)
            and not torch.jit.is_tracing()
        )

    def _reordered(self, x: torch.Tensor) -> torch.Tensor:
        """The reordered weight, made again if the plain weight was replaced or changed in place."""
        key = (self.weight.data_ptr(), self.weight._version)
        if self._prepacked is None or self._prepacked[0] != key:
            self._prepacked = (key, self._reorder(self.weight.detach(), x))
        return self._prepacked[1]


class PrepackedConv2d(_Prepacked, nn.Conv2d):
    """``nn.Conv2d`` whose bfloat16 CPU inference uses a weight reordered once for oneDNN; any other call is
    the plain convolution."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._eligible(x) or self.padding_mode != "zeros" or isinstance(self.padding, str):
            return super().forward(x)
        weight, (padding, stride, dilation) = self._reordered(x), self._geometry()
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


class PrepackedLinear(_Prepacked, nn.Linear):
    """``nn.Linear`` whose bfloat16 CPU inference uses a weight reordered once for oneDNN; any other call is
    the plain matrix product."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._eligible(x):
            return super().forward(x)
        return torch.ops.mkldnn._linear_pointwise(x, self._reordered(x), self.bias, "none", [], "")

    def _reorder(self, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._reorder_linear_weight(weight, x.numel() // x.shape[-1])


PREPACKED = {nn.Conv2d: PrepackedConv2d, nn.Linear: PrepackedLinear}


def prepack_weights(module: nn.Module) -> int:
    """Make every bfloat16 ``nn.Conv2d`` / ``nn.Linear`` of ``module`` its prepacked subclass (the same
    object, parameters and state-dict keys; only ``forward`` changes); returns how many. A no-op where oneDNN
    has no bfloat16 kernels (torch without oneDNN, or a CPU without AVX-512 / Arm BF16: there eager torch
    falls back to its own kernels, which take plain weights)."""
    if not _onednn_has_bfloat16():
        return 0
    count = 0
    for child in module.modules():
        prepacked = PREPACKED.get(type(child))
        if prepacked is not None and child.weight.dtype == torch.bfloat16:
            child.__class__ = prepacked
            count += 1
    return count


def _onednn_has_bfloat16() -> bool:
    supported = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return torch.backends.mkldnn.is_available() and supported is not None and bool(supported())
