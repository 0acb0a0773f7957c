"""The "lucid" VQ codebook that the ViT / DiVAE tokenizers share: token ids back to latent vectors."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CosineCodebook(nn.Module):
    """The codebook buffers of the reference's cosine-similarity EMA quantizer.

    Tokenizing compares l2-normalised latents with l2-normalised rows; decoding is a plain lookup of the
    stored rows (which EMA training keeps near unit norm) with no renormalisation. ``initted`` and
    ``cluster_size`` are training state, kept only so the checkpoint loads strictly.
    """

    def __init__(self, codebook_size: int, dim: int):
        super().__init__()
        self.register_buffer("initted", torch.ones(1))
        self.register_buffer("cluster_size", torch.zeros(codebook_size))
        self.register_buffer("embed", torch.zeros(codebook_size, dim))


class LucidQuantizer(nn.Module):
    """Token ids → latent grid, laid out like the reference (``quantize._codebook.*`` keys)."""

    def __init__(self, codebook_size: int, dim: int):
        super().__init__()
        self.codebook_size = codebook_size
        self._codebook = CosineCodebook(codebook_size, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """Look up ``tokens`` (LongTensor [B, h, w], see ``check_tokens``) → latents [B, dim, h, w]."""
        return F.embedding(tokens, self._codebook.embed).permute(0, 3, 1, 2)


def check_tokens(tokens: torch.Tensor, vocab_size: int) -> None:
    """Raise a clear error unless ``tokens`` is an integer [B, h, w] grid of ids in [0, vocab_size)."""
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"tokens must be a torch.Tensor of shape [B, h, w], got {type(tokens).__name__}")
    if tokens.dtype.is_floating_point or tokens.dtype.is_complex or tokens.dtype == torch.bool:
        raise TypeError(f"tokens must be an integer tensor (torch.long), got {tokens.dtype}")
    if tokens.ndim != 3 or tokens.numel() == 0:
        raise ValueError(f"tokens must have shape [B, h, w] with no empty axis, got {list(tokens.shape)}")
    low, high = int(tokens.min()), int(tokens.max())
    if low < 0 or high >= vocab_size:
        raise ValueError(f"token ids must lie in [0, {vocab_size - 1}], got values in [{low}, {high}]")
