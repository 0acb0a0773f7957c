"""Loading the decoder half of a 4M tokenizer checkpoint, and the config fields decoders rely on.

A 4M tokenizer checkpoint holds its encoder (image → tokens) and its decoder (tokens → image). fourm_ros
only decodes, so each decoder class names the checkpoint keys of the encoder half it sets aside; every
other key must match the decoder exactly (see ``fourm_ros.checkpoint.load_state``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
from importlib import resources
from typing import Any

import torch
import yaml
from torch import nn

from fourm_ros.checkpoint import Checkpoint, CheckpointError, load_state


@cache
def _official_configs() -> dict[str, dict[str, Any]]:
    text = resources.files("fourm_ros").joinpath("data/tokenizers.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def official_config(kind: str) -> dict[str, Any]:
    """The official ``config.json`` of the ``kind`` tokenizer (depth, normals, segmentation, human_pose)."""
    configs = _official_configs()
    if kind not in configs:
        raise KeyError(f"no official tokenizer config for {kind!r}; known: {sorted(configs)}")
    return dict(configs[kind])


class TokenizerConfig:
    """The fields of a tokenizer's ``config.json`` that a decoder relies on.

    An absent field takes the default the reference constructor would use (that is what the official
    loader does), and a value fourm_ros does not implement is refused with a message naming it, rather
    than decoding something the checkpoint was not trained for.
    """

    def __init__(self, config: Mapping[str, Any], source: str):
        self.config = config
        self.source = source

    def _value(self, name: str, default: Any) -> tuple[Any, str]:
        if name in self.config:
            return self.config[name], f"{name}={self.config[name]!r}"
        return default, f"{name}={default!r} (the reference's default: {name} is absent)"

    def error(self, problem: str) -> CheckpointError:
        """An error about this config, naming its source."""
        return CheckpointError(f"tokenizer config of {self.source}: {problem}")

    def _refuse(self, shown: str, expected: str) -> CheckpointError:
        return self.error(f"{shown} is not supported; expected {expected}")

    def integer(self, name: str, default: int | None) -> int:
        value, shown = self._value(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self._refuse(shown, "a positive integer")
        return value

    def flag(self, name: str, default: bool) -> bool:
        value, shown = self._value(name, default)
        if not isinstance(value, bool):
            raise self._refuse(shown, "true or false")
        return value

    def choice(self, name: str, default: Any, supported: tuple) -> Any:
        value, shown = self._value(name, default)
        if value not in supported:
            raise self._refuse(shown, " or ".join(repr(option) for option in supported))
        return value


def load_decoder(
    module: nn.Module,
    checkpoint: Checkpoint,
    is_encoder_key: Callable[[str], bool],
    dtype: torch.dtype,
    device: str | torch.device,
) -> nn.Module:
    """Fill a decoder built on the meta device from ``checkpoint``, strictly, and move it for inference.

    Every decoder tensor must be in the file with the right shape; encoder-half keys are set aside; any
    other key is an error. Nothing is initialised before loading: every tensor comes from the file.
    """
    load_state(materialize(module, dtype), checkpoint.weights, known_unused=is_encoder_key)
    return module.to(device=device).eval().requires_grad_(False)


def materialize(module: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Give a module built on the meta device uninitialised CPU tensors: floating ones in ``dtype``, 4-D
    ones (convolution weights) channels-last, the layout the torch backend computes in. Filled once in
    place (checkpoint or random values), no weight is converted, and so copied, afterwards: each conversion
    copies every weight, and the freed originals stay in the process's heap (0.4 GiB more at the peak for
    the B job's channels-last UNets alone)."""
    module.to_empty(device="cpu")  # untouched allocations, replaced below where dtype or layout differ
    for tensor in (*module.parameters(), *module.buffers()):
        kind = dtype if tensor.is_floating_point() else tensor.dtype
        if tensor.dim() == 4:  # the strides .to(memory_format=channels_last) gives, 1×1 kernels included
            tensor.data = torch.empty(tensor.shape, dtype=kind, memory_format=torch.channels_last)
        elif tensor.dtype != kind:
            tensor.data = torch.empty(tensor.shape, dtype=kind)
    return module
