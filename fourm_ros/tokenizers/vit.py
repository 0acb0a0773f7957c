"""The ViT decoder of the 4M VQ-VAE tokenizers (the reference's ``vit_b_dec``): latent grid → image.

A plain pre-LayerNorm ViT over the token grid, then a residual "post MLP" (ViT-VQGAN) and a linear
projection of every token to a patch of output pixels. The post MLP's activation is plain tanh (not GELU's
tanh approximation), and in the decoder it runs in the model dtype: only the reference encoder forces
its post MLP to float32. Parameter names follow the official
checkpoints (``decoder.blocks.N.attn.qkv...``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class ViTConfig:
    """Transformer size; the defaults are ViT-B, as in every official VQ-VAE decoder."""

    dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0

    @property
    def mlp_hidden(self) -> int:
        return int(self.mlp_ratio * self.dim)


VIT_B = ViTConfig()
"""The ``vit_b_dec`` transformer of the official VQ-VAE decoders."""


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, activation: type[nn.Module]):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = activation()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, dim = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, dim))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(LN(x)), then x + MLP(LN(x)) with exact (erf) GELU."""

    def __init__(self, config: ViTConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(config.dim, eps=1e-6)
        self.attn = Attention(config.dim, config.num_heads)
        self.norm2 = nn.LayerNorm(config.dim, eps=1e-6)
        self.mlp = Mlp(config.dim, config.mlp_hidden, nn.GELU)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViTDecoder(nn.Module):
    """Latents [B, dim, h, w] (already projected to ``dim``) → image [B, out_channels, h·p, w·p]."""

    def __init__(self, out_channels: int, patch_size: int, pos_grid: int, config: ViTConfig = VIT_B):
        super().__init__()
        self.out_channels = out_channels
        self.patch_size = patch_size
        # Stored for a pos_grid × pos_grid token grid (28 × 28: the tokenizers' 448 px training size) and
        # resized bicubically to the grid being decoded.
        self.pos_emb = nn.Parameter(torch.zeros(1, config.dim, pos_grid, pos_grid), requires_grad=False)
        self.blocks = nn.Sequential(*(Block(config) for _ in range(config.depth)))
        self.norm_mlp = nn.LayerNorm(config.dim, eps=1e-6)
        self.post_mlp = Mlp(config.dim, config.mlp_hidden, nn.Tanh)
        self.out_proj = nn.Linear(config.dim, out_channels * patch_size**2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        pos_emb = F.interpolate(self.pos_emb.float(), size=(h, w), mode="bicubic", align_corners=False)
        x = (x + pos_emb.to(x.dtype)).flatten(2).transpose(1, 2)  # [B, h·w, dim], raster order
        x = self.blocks(x)
        x = x + self.post_mlp(self.norm_mlp(x))
        p, c = self.patch_size, self.out_channels
        # Each token's output vector is laid out (channel, row in patch, column in patch).
        x = self.out_proj(x).reshape(b, h, w, c, p, p).permute(0, 3, 1, 4, 2, 5)
        return x.reshape(b, c, h * p, w * p)
