"""The patched diffusion UNet that decodes depth and normal tokens (the reference's ``unet_patched``).

An OpenAI guided-diffusion style UNet run on a 4×4-patchified image: the noisy image becomes C·16 channels
at a quarter of the resolution, the token latents are nearest-upsampled to that grid and concatenated, and
the UNet predicts the clean image (x0) in the same patch layout. Module and parameter names follow the
official checkpoint (``decoder.input_blocks.N...``), so its keys load without renaming.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class UNetConfig:
    """Architecture of the patched UNet; the defaults are the official depth/normal decoder."""

    patch_size: int = 4
    model_channels: int = 256
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)
    num_res_blocks: int = 3
    attention_downsampling: tuple[int, ...] = (4, 8)
    """Downsampling factors (relative to the patch grid) whose blocks get self-attention."""

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.model_channels

    @property
    def downsampling(self) -> int:
        """Total downsampling of the patch grid; the grid side must be a multiple of it."""
        return 2 ** (len(self.channel_mult) - 1)


OFFICIAL_UNET = UNetConfig()
"""The ``unet_patched`` decoder of the official depth and normal tokenizers."""


class GroupNorm32(nn.GroupNorm):
    """GroupNorm with 32 groups computed in float32 whatever the model dtype, as the decoder was trained.

    On the CPU, PyTorch's kernel takes bfloat16 activations with float32 parameters and computes in float32
    itself, without the two whole-tensor conversions (the same values, a third of the time)."""

    def __init__(self, channels: int):
        super().__init__(32, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight.float(), self.bias.float()
        if x.dtype == torch.bfloat16 and x.device.type == "cpu":
            return F.group_norm(x, self.num_groups, weight, bias, self.eps)
        return F.group_norm(x.float(), self.num_groups, weight, bias, self.eps).to(x.dtype)


def timestep_embedding(timesteps: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [N, dim] of timesteps [N]: cosines first, then sines (guided-diffusion order)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half)
    args = timesteps.float()[:, None] * freqs.to(timesteps.device)[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    """GN-SiLU-conv, add the projected timestep embedding, GN-SiLU-conv, plus a (1×1 conv) skip."""

    def __init__(self, channels: int, out_channels: int, emb_channels: int):
        super().__init__()
        self.in_layers = nn.Sequential(
            GroupNorm32(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1)
        )
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, out_channels))
        # Index 2 held training-time dropout; the identity keeps the checkpoint's ``out_layers.3`` name.
        self.out_layers = nn.Sequential(
            GroupNorm32(out_channels),
            nn.SiLU(),
            nn.Identity(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1),
        )
        self.skip_connection = (
            nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_layers(x)
        h = h + self.emb_layers(emb).to(h.dtype)[:, :, None, None]
        return self.skip_connection(x) + self.out_layers(h)


class AttentionBlock(nn.Module):
    """Single-head self-attention over all positions of a feature map, residual, 1×1 conv projections."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = GroupNorm32(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        flat = x.reshape(b, c, h * w)
        q, k, v = self.qkv(self.norm(flat)).transpose(1, 2).chunk(3, dim=-1)  # each [B, HW, C]
        attended = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return (flat + self.proj_out(attended.transpose(1, 2))).reshape(b, c, h, w)


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class Stage(nn.ModuleList):
    """A run of layers applied in order; residual blocks also receive the timestep embedding."""

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class PatchedUNet(nn.Module):
    """x0-predicting diffusion UNet conditioned on a token latent grid (concatenated to its input)."""

    def __init__(self, image_channels: int, cond_channels: int, config: UNetConfig = OFFICIAL_UNET):
        super().__init__()
        self.config = config
        self.image_channels = image_channels
        patch_area = config.patch_size**2
        base, emb = config.model_channels, config.time_embed_dim
        self.time_embed = nn.Sequential(nn.Linear(base, emb), nn.SiLU(), nn.Linear(emb, emb))

        width = config.channel_mult[0] * base
        self.input_blocks = nn.ModuleList(
            [Stage([nn.Conv2d(image_channels * patch_area + cond_channels, width, 3, padding=1)])]
        )
        skip_widths, factor = [width], 1
        for level, mult in enumerate(config.channel_mult):
            for _ in range(config.num_res_blocks):
                layers = [ResBlock(width, mult * base, emb)]
                width = mult * base
                if factor in config.attention_downsampling:
                    layers.append(AttentionBlock(width))
                self.input_blocks.append(Stage(layers))
                skip_widths.append(width)
            if level < len(config.channel_mult) - 1:
                self.input_blocks.append(Stage([Downsample(width)]))
                skip_widths.append(width)
                factor *= 2

        self.middle_block = Stage(
            [ResBlock(width, width, emb), AttentionBlock(width), ResBlock(width, width, emb)]
        )

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(config.channel_mult))):
            for index in range(config.num_res_blocks + 1):
                layers = [ResBlock(width + skip_widths.pop(), mult * base, emb)]
                width = mult * base
                if factor in config.attention_downsampling:
                    layers.append(AttentionBlock(width))
                if level > 0 and index == config.num_res_blocks:
                    layers.append(Upsample(width))
                    factor //= 2
                self.output_blocks.append(Stage(layers))

        self.out = nn.Sequential(
            GroupNorm32(width), nn.SiLU(), nn.Conv2d(width, image_channels * patch_area, 3, padding=1)
        )

    def forward(
        self, sample: torch.Tensor, timesteps: torch.Tensor | int, latents: torch.Tensor
    ) -> torch.Tensor:
        """Predict the clean image.

        sample: noisy image [B, C, H, W]; timesteps: an int or a tensor of shape [] or [B]; latents: token
        latents [B, D, h, w] (any grid that nearest-upsamples onto the H/4 × W/4 patch grid).
        """
        b, c, height, width = sample.shape
        p = self.config.patch_size
        if c != self.image_channels or height % p or width % p:
            raise ValueError(
                f"sample must be [B, {self.image_channels}, H, W] with H and W multiples of {p}, "
                f"got {list(sample.shape)}"
            )
        grid_h, grid_w = height // p, width // p
        step = self.config.downsampling
        if grid_h % step or grid_w % step:
            raise ValueError(
                f"image size {height}x{width} is not supported: H/{p} and W/{p} must be multiples of {step}"
            )
        x = sample.reshape(b, c, grid_h, p, grid_w, p).permute(0, 1, 3, 5, 2, 4)
        x = x.reshape(b, c * p * p, grid_h, grid_w)
        cond = F.interpolate(latents.to(x.dtype), size=(grid_h, grid_w), mode="nearest")
        h = torch.cat([x, cond], dim=1)

        timesteps = torch.as_tensor(timesteps, device=sample.device).reshape(-1)
        emb = self.time_embed(timestep_embedding(timesteps, self.config.model_channels).to(h.dtype))

        skips = []
        for stage in self.input_blocks:
            h = stage(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for stage in self.output_blocks:
            h = stage(torch.cat([h, skips.pop()], dim=1), emb)
        out = self.out(h)
        return out.reshape(b, c, p, p, grid_h, grid_w).permute(0, 1, 4, 2, 5, 3).reshape(b, c, height, width)
