"""Synthetic tokenizer checkpoints in the official layout, with tiny decoders, for the dense-decoder tests.

Weights come from numpy's RandomState, so every machine (and the one-off reference comparison that made
``data/dense_golden.npz``) regenerates exactly the same tensors from a seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from support import KEYS_DIR

from fourm_ros.tokenizers.depth_encoder import DepthEncoder, DepthEncoderConfig
from fourm_ros.tokenizers.divae import DiVAEConfig, DiVAEDecoder, is_divae_encoder_key
from fourm_ros.tokenizers.loading import official_config
from fourm_ros.tokenizers.semseg import SemsegConfig, SemsegDecoder, is_semseg_encoder_key
from fourm_ros.tokenizers.unet import UNetConfig
from fourm_ros.tokenizers.vit import ViTConfig

TINY_UNET = UNetConfig(
    patch_size=4, model_channels=32, channel_mult=(1, 2, 2), num_res_blocks=2, attention_downsampling=(2, 4)
)
TINY_VIT = ViTConfig(dim=32, depth=2, num_heads=2)
TINY_DEPTH_ENCODER = DepthEncoderConfig(
    n_channels=1, codebook_size=64, latent_dim=8, patch_size=16, image_size=128
)
"""A depth-tokenizer encoder with TINY_VIT: 8×8 stored position grid, 64 codes of 8 dimensions."""

_DIVAE_CONFIG = {**official_config("depth"), "codebook_size": 16, "latent_dim": 8}  # tiny codebook
CONFIGS = {
    "depth": _DIVAE_CONFIG,
    "normal": {**official_config("normals"), "codebook_size": 16, "latent_dim": 8},
    # tiny: 4-px patches, 8×8 stored posemb grid
    "semseg": {
        **official_config("segmentation"),
        **{
            "image_size": 32,
            "n_channels": 4,
            "n_labels": 5,
            "patch_size": 4,
            "codebook_size": 16,
            "latent_dim": 8,
        },
    },
}


def synthetic_tensors(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
    """Deterministic float32 tensors with O(1) activations: scaled weights, norms near 1, unit codes."""
    rng = np.random.RandomState(seed)
    tensors = {}
    for name in sorted(shapes):
        shape, leaf = shapes[name], name.rsplit(".", 1)[-1]
        if name.endswith("_codebook.embed"):
            value = rng.standard_normal(shape)
            value /= np.linalg.norm(value, axis=1, keepdims=True)
        elif leaf == "initted":
            value = np.ones(shape)
        elif leaf == "cluster_size":
            value = rng.uniform(0.0, 10.0, shape)
        elif leaf == "weight" and len(shape) >= 2:
            value = rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))
        elif leaf == "weight":
            value = 1.0 + 0.1 * rng.standard_normal(shape)
        elif leaf == "bias":
            value = 0.1 * rng.standard_normal(shape)
        else:
            value = 0.5 * rng.standard_normal(shape)
        tensors[name] = torch.from_numpy(value.astype(np.float32))
    return tensors


class Synthetic:
    """Builds tiny dense decoders and writes checkpoints holding them in the official key layout."""

    unet = TINY_UNET
    vit = TINY_VIT

    @staticmethod
    def config(kind: str) -> dict:
        return dict(CONFIGS[kind])

    @staticmethod
    def official_config(kind: str) -> dict:
        """The official config.json (depth verbatim; normal and semseg as reconstructed in 4m21.md)."""
        return official_config({"depth": "depth", "normal": "normals", "semseg": "segmentation"}[kind])

    @staticmethod
    def official_keys(kind: str) -> list[tuple[str, tuple[int, ...], str]]:
        """[name, shape, param|buffer] of every key of the official full-size checkpoint."""
        entries = json.loads((KEYS_DIR / f"tok_{kind}_keys.json").read_text())
        return [(name, tuple(shape), role) for name, shape, role in entries]

    @staticmethod
    def is_encoder_key(kind: str):
        return is_semseg_encoder_key if kind == "semseg" else is_divae_encoder_key

    def empty_decoder(self, kind: str, config: dict | None = None) -> torch.nn.Module:
        config = config or self.config(kind)
        if kind == "semseg":
            return SemsegDecoder(SemsegConfig.from_json(config), self.vit)
        return DiVAEDecoder(DiVAEConfig.from_json(config), self.unet)

    def decoder_state(self, kind: str, seed: int = 0) -> dict[str, torch.Tensor]:
        module = self.empty_decoder(kind)
        return synthetic_tensors({k: tuple(v.shape) for k, v in module.state_dict().items()}, seed)

    def decoder(self, kind: str, seed: int = 0) -> torch.nn.Module:
        module = self.empty_decoder(kind)
        module.load_state_dict(self.decoder_state(kind, seed), strict=True)
        return module.eval()

    def depth_encoder_state(self, seed: int) -> dict[str, torch.Tensor]:
        """Tensors of the tiny depth-tokenizer encoder half (TINY_DEPTH_ENCODER, TINY_VIT)."""
        module = DepthEncoder(TINY_DEPTH_ENCODER, self.vit)
        return synthetic_tensors({k: tuple(v.shape) for k, v in module.state_dict().items()}, seed)

    def depth_encoder(self, seed: int) -> DepthEncoder:
        module = DepthEncoder(TINY_DEPTH_ENCODER, self.vit)
        module.load_state_dict(self.depth_encoder_state(seed), strict=True)
        return module.eval()

    def checkpoint_state(self, kind: str, seed: int = 0) -> dict[str, torch.Tensor]:
        """Decoder tensors plus every official encoder-half key (small placeholder tensors)."""
        encoder = {
            name: torch.zeros(2) for name, _, _ in self.official_keys(kind) if self.is_encoder_key(kind)(name)
        }
        return {**encoder, **self.decoder_state(kind, seed)}

    @staticmethod
    def write(directory: Path, state: dict[str, torch.Tensor], config: dict) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        save_file(state, str(directory / "model.safetensors"))
        (directory / "config.json").write_text(json.dumps(config))
        return directory

    def load(self, kind: str, directory: Path, **options) -> torch.nn.Module:
        if kind == "semseg":
            return SemsegDecoder.from_pretrained(directory, vit=self.vit, **options)
        return DiVAEDecoder.from_pretrained(directory, unet=self.unet, **options)


@pytest.fixture
def synthetic() -> Synthetic:
    return Synthetic()
