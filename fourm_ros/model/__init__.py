"""The 4M-21 any-to-any model in PyTorch (weight-compatible with the official checkpoints)."""

from .config import PRESETS, FourMConfig
from .fourm import DEFAULT_INPUTS, DEFAULT_OUTPUTS, FourM, official_keys

__all__ = ["DEFAULT_INPUTS", "DEFAULT_OUTPUTS", "PRESETS", "FourM", "FourMConfig", "official_keys"]
