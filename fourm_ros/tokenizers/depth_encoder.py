"""Depth images → ``tok_depth@224`` tokens: the encoder half of the 4M DiVAE depth tokenizer.

Checkpoint: ``EPFL-VILAB/4M_tokenizers_depth_8k_224-448``, the same file the depth decoder reads; here the
decoder half (``decoder.*``, the UNet) is set aside and the encoder keys (``encoder.*``, ``quant_proj.*``,
``quantize._codebook.*``) load strictly.

References are to apple/ml-4m at commit cda590f. Architecture (``fourm/vq/vqvae.py`` ``VQ.encode`` →
``fourm/vq/models/vit_models.py`` ``ViTEncoder`` / ``vit_b_enc`` →
``fourm/vq/quantizers/quantize_lucid.py`` ``CosineSimCodebook``): 16×16 patches projected by
a convolution, the stored 28×28 position grid (448 px training size) resized bicubically to the token grid
and added, 12 pre-norm ViT-B blocks, a residual tanh "post MLP" computed in float32, a 1×1 convolution to
the 32-d latent space, then the code whose l2-normalised vector has the largest cosine similarity with the
l2-normalised latent (temperature 0: argmax, no sampling).

Input normalisation, exactly as 4M-21's depth modality was trained (ml-4m ``fourm/data/modality_info.py``:
``'depth': DepthTransform(standardize_depth=True)``; ``fourm/data/modality_transforms.py``
``DepthTransform.depth_to_tensor`` and ``truncated_depth_standardization``): the 16-bit depth label is
divided by 65535, then standardised per image with the mean and *unbiased* variance of its values after
dropping the lowest ``int(0.1·N)`` and the values from index ``int(0.9·N)`` of the sorted list:
``(d - mean) / sqrt(var + 1e-6)``. A sensor's metres enter that formula as Omnidata/Taskonomy 16-bit depth
units (1/512 m, so ``label = metres · 512``): standardisation removes any scale, so the unit only matters
through the 1e-6, and no unit was given for 4M-21's pseudo-labels; this is the documented assumption.

Invalid sensor pixels (NaN holes) are filled *before* standardising with the depth of the nearest valid
pixel (Euclidean distance on the grid). The training labels had no holes; a hole filled by a neighbour
reads as a continuation of the nearest surface, which is what a depth map usually shows there, and keeps
holes from shifting the per-image statistics as zeros or a constant would.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

from fourm_ros.checkpoint import resolve
from fourm_ros.tokenizers.codebook import LucidQuantizer
from fourm_ros.tokenizers.loading import TokenizerConfig, load_decoder
from fourm_ros.tokenizers.vit import VIT_B, Block, Mlp, ViTConfig

OMNIDATA_UNITS_PER_METRE = 512.0
"""Omnidata/Taskonomy 16-bit depth PNGs store 1/512 m per unit (see module doc)."""
LABEL_RANGE = 2**16 - 1.0


def is_divae_decoder_key(key: str) -> bool:
    """Checkpoint keys of the DiVAE decoder half (the diffusion UNet), set aside by the encoder."""
    return key.startswith("decoder.")


@dataclass(frozen=True)
class DepthEncoderConfig:
    """What the encoder needs from the DiVAE ``config.json``."""

    n_channels: int
    codebook_size: int
    latent_dim: int
    patch_size: int
    image_size: int
    """Training size of the encoder: its position grid is image_size / patch_size per side."""

    @classmethod
    def from_json(cls, config: dict, source: str = "config.json") -> DepthEncoderConfig:
        """Validate the encoder fields of a DiVAE ``config.json`` (reference defaults when absent)."""
        fields = TokenizerConfig(config, source)
        fields.choice("enc_type", "vit_b_enc", ("vit_b_enc",))
        fields.choice("patch_proj", True, (True,))
        fields.choice("post_mlp", False, (True,))
        fields.choice("quant_type", "lucid", ("lucid",))
        fields.choice("num_codebooks", 1, (1,))
        fields.choice("norm_codes", True, (True,))
        fields.choice("undo_std", False, (False,))
        return cls(
            n_channels=fields.integer("n_channels", 3),
            codebook_size=fields.integer("codebook_size", 16384),
            latent_dim=fields.integer("latent_dim", 32),
            patch_size=fields.integer("patch_size", 16),
            image_size=fields.integer("image_size", 224),
        )


class ViTEncoder(nn.Module):
    """Image [B, C, H, W] → features [B, dim, H/p, W/p] (keys ``encoder.*`` of the checkpoint)."""

    def __init__(self, channels: int, patch_size: int, pos_grid: int, config: ViTConfig = VIT_B):
        super().__init__()
        self.pos_emb = nn.Parameter(torch.zeros(1, config.dim, pos_grid, pos_grid), requires_grad=False)
        self.proj = nn.Conv2d(channels, config.dim, kernel_size=patch_size, stride=patch_size)
        self.blocks = nn.Sequential(*(Block(config) for _ in range(config.depth)))
        self.norm_mlp = nn.LayerNorm(config.dim, eps=1e-6)
        self.post_mlp = Mlp(config.dim, config.mlp_hidden, nn.Tanh)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = self.proj(image)
        b, dim, h, w = x.shape
        pos_emb = F.interpolate(self.pos_emb.float(), size=(h, w), mode="bicubic", align_corners=False)
        x = self.blocks(x.flatten(2).transpose(1, 2) + pos_emb.to(x.dtype).flatten(2).transpose(1, 2))
        x = x.float()
        x = x + self.post_mlp.float()(self.norm_mlp.float()(x))  # float32, as the reference forces
        return x.transpose(1, 2).reshape(b, dim, h, w)


class DepthEncoder(nn.Module):
    """Standardised depth [B, 1, H, W] → token ids [B, H/16, W/16] and each token's nearest-code margin."""

    def __init__(self, config: DepthEncoderConfig, vit: ViTConfig = VIT_B):
        super().__init__()
        self.config = config
        self.encoder = ViTEncoder(
            config.n_channels, config.patch_size, config.image_size // config.patch_size, vit
        )
        self.quant_proj = nn.Conv2d(vit.dim, config.latent_dim, kernel_size=1)
        self.quantize = LucidQuantizer(config.codebook_size, config.latent_dim)

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike,
        cache_dir: str | os.PathLike | None = None,
        offline: bool = False,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        *,
        vit: ViTConfig = VIT_B,
    ) -> DepthEncoder:
        """Load the encoder half of a DiVAE depth checkpoint (HF repo id or local directory) strictly."""
        checkpoint = resolve(source, cache_dir=cache_dir, offline=offline)
        config = DepthEncoderConfig.from_json(checkpoint.config, checkpoint.source)
        if config.n_channels != 1:
            raise TokenizerConfig(checkpoint.config, checkpoint.source).error(
                f"n_channels={config.n_channels}: a depth tokenizer has 1 channel"
            )
        with torch.device("meta"):
            module = cls(config, vit)
        return load_decoder(module, checkpoint, is_divae_decoder_key, dtype, device)

    @torch.inference_mode()
    def similarities(self, depth: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of every token's latent with every code: float32 [B, h, w, codebook_size]."""
        if depth.ndim != 4 or depth.shape[1] != self.config.n_channels:
            raise ValueError(f"depth must be [B, {self.config.n_channels}, H, W], got {list(depth.shape)}")
        if depth.shape[-1] % self.config.patch_size or depth.shape[-2] % self.config.patch_size:
            raise ValueError(
                f"H and W must be multiples of {self.config.patch_size}, got {list(depth.shape)}"
            )
        parameter = self.quant_proj.weight
        features = self.encoder(depth.to(device=parameter.device, dtype=parameter.dtype))
        latents = self.quant_proj(features.to(parameter.dtype)).float().permute(0, 2, 3, 1)
        codes = F.normalize(self.quantize._codebook.embed.float(), dim=-1)
        return F.normalize(latents, dim=-1) @ codes.t()

    def tokenize(self, depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids (long [B, h, w]) and margins (float32 [B, h, w]: best minus second-best similarity; a
        small margin means another code is almost as near, so precision may flip that token)."""
        top = self.similarities(depth).topk(2, dim=-1)
        return top.indices[..., 0], top.values[..., 0] - top.values[..., 1]


def fill_holes(depth_m: np.ndarray) -> np.ndarray:
    """Depth with every NaN (or ≤ 0) pixel replaced by its nearest valid pixel's depth (see module doc)."""
    invalid = ~(np.isfinite(depth_m) & (depth_m > 0))
    if invalid.all():
        raise ValueError("the depth image has no valid pixel to tokenise")
    if not invalid.any():
        return depth_m.astype(np.float32, copy=True)
    _, (rows, columns) = ndimage.distance_transform_edt(invalid, return_indices=True)
    return depth_m[rows, columns].astype(np.float32)


def standardize_depth(depth_m: np.ndarray, truncation: float = 0.1) -> np.ndarray:
    """Metric depth [H, W] (NaN holes) → float32 [H, W] normalised as 4M-21's depth inputs (module doc)."""
    label = fill_holes(depth_m).astype(np.float64) * (OMNIDATA_UNITS_PER_METRE / LABEL_RANGE)
    ordered = np.sort(label.ravel())
    kept = ordered[int(truncation * ordered.size) : int((1 - truncation) * ordered.size)]
    return ((label - kept.mean()) / np.sqrt(kept.var(ddof=1) + 1e-6)).astype(np.float32)
