"""Semantic-segmentation tokens → COCO-panoptic label maps: the decoder half of the 4M semseg VQ-VAE.

Checkpoint: ``EPFL-VILAB/4M_tokenizers_semseg_4k_224-448``. Tokens are looked up in the lucid codebook,
projected to the ViT width and decoded in one pass to 134 logits per pixel: index 0 is "unlabeled" and
index k (1..133) is class k-1 of the COCO-panoptic contiguous order (the pseudo-labels were shifted by one).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cache
from importlib import resources

import numpy as np
import torch
from torch import nn

from fourm_ros.checkpoint import resolve
from fourm_ros.tokenizers.codebook import LucidQuantizer, check_tokens
from fourm_ros.tokenizers.loading import TokenizerConfig, load_decoder
from fourm_ros.tokenizers.vit import VIT_B, ViTConfig, ViTDecoder

UNLABELED = 0


@dataclass(frozen=True)
class SemsegClass:
    """One output label of the semseg decoder, for visualisation and downstream filtering."""

    id: int
    """The label value in ``SemsegDecoder.decode`` output (0 = unlabeled, 1..133 = COCO panoptic)."""
    name: str
    isthing: bool
    color: tuple[int, int, int]


@cache
def semseg_classes() -> tuple[SemsegClass, ...]:
    """All 134 labels indexed by id: "unlabeled" (black), then the 133 COCO-panoptic classes in order."""
    text = resources.files("fourm_ros").joinpath("data/coco_panoptic_133.json").read_text(encoding="utf-8")
    coco = [
        SemsegClass(entry["index"] + 1, entry["name"], entry["isthing"], tuple(entry["color"]))
        for entry in json.loads(text)["classes"]
    ]
    return (SemsegClass(UNLABELED, "unlabeled", False, (0, 0, 0)), *coco)


def semseg_palette() -> np.ndarray:
    """uint8 [134, 3] RGB colours indexed by label id, so ``semseg_palette()[labels]`` colours a map."""
    return np.array([entry.color for entry in semseg_classes()], dtype=np.uint8)


def is_semseg_encoder_key(key: str) -> bool:
    """Checkpoint keys of the semseg VQ-VAE encoder half (class embedding, ViT encoder, quant projection)."""
    return key.startswith(("cls_emb.", "encoder.", "quant_proj."))


@dataclass(frozen=True)
class SemsegConfig:
    """What the decoder needs from the semseg VQ-VAE's ``config.json``."""

    n_labels: int
    codebook_size: int
    latent_dim: int = 32
    patch_size: int = 16
    pos_grid: int = 28
    """Side of the stored decoder position-embedding grid: training image size / patch size."""

    @classmethod
    def from_json(cls, config: dict, source: str = "config.json") -> SemsegConfig:
        """Validate a semseg VQ-VAE ``config.json``; absent fields take the reference's defaults."""
        fields = TokenizerConfig(config, source)
        fields.choice("dec_type", "vit_b_dec", ("vit_b_dec",))
        fields.choice("quant_type", "lucid", ("lucid",))
        fields.choice("num_codebooks", 1, (1,))
        fields.choice("post_mlp", False, (True,))
        fields.choice("patch_proj", True, (True,))
        fields.choice("out_conv", False, (False,))
        # As in the reference, the decoder's own patch / image size win when set.
        patch_size = fields.integer("patch_size_dec", None) if config.get("patch_size_dec") else None
        patch_size = patch_size or fields.integer("patch_size", 16)
        image_size = fields.integer("image_size_dec", None) if config.get("image_size_dec") else None
        image_size = image_size or fields.integer("image_size", 224)
        if image_size % patch_size:
            raise fields.error(f"image size {image_size} is not a multiple of the patch size {patch_size}")
        return cls(
            n_labels=fields.integer("n_labels", None),
            codebook_size=fields.integer("codebook_size", 16384),
            latent_dim=fields.integer("latent_dim", 32),
            patch_size=patch_size,
            pos_grid=image_size // patch_size,
        )


class SemsegDecoder(nn.Module):
    """Tokens [B, h, w] → 134 class logits per pixel [B, 134, 16h, 16w], as the reference decodes them."""

    def __init__(self, config: SemsegConfig, vit: ViTConfig = VIT_B):
        super().__init__()
        self.config = config
        self.quantize = LucidQuantizer(config.codebook_size, config.latent_dim)
        self.post_quant_proj = nn.Conv2d(config.latent_dim, vit.dim, 1)
        self.decoder = ViTDecoder(config.n_labels, config.patch_size, config.pos_grid, vit)

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
    ) -> SemsegDecoder:
        """Load the decoder half of the semseg VQ-VAE checkpoint (HF repo id or local directory) strictly.

        ``vit`` is the decoder transformer size; the default is the official ViT-B (smaller ones serve
        tests and custom checkpoints).
        """
        checkpoint = resolve(source, cache_dir=cache_dir, offline=offline)
        config = SemsegConfig.from_json(checkpoint.config, checkpoint.source)
        with torch.device("meta"):
            module = cls(config, vit)
        return load_decoder(module, checkpoint, is_semseg_encoder_key, dtype, device)

    @torch.inference_mode()
    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """Class logits [B, n_labels, 16h, 16w] (model dtype) for tokens (LongTensor [B, h, w])."""
        check_tokens(tokens, self.config.codebook_size)
        return self(tokens.to(self.post_quant_proj.weight.device))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """The unchecked tensor function behind ``logits`` (exported as the segmentation graph)."""
        latents = self.quantize(tokens).to(self.post_quant_proj.weight.dtype)
        return self.decoder(self.post_quant_proj(latents))

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Label map (LongTensor [B, 16h, 16w]): 0 = unlabeled, k = ``semseg_classes()[k]``."""
        return self.logits(tokens).argmax(dim=1)
