"""Depth and surface-normal tokens → images: the decoder half of the 4M DiVAE tokenizers.

Checkpoints: ``EPFL-VILAB/4M_tokenizers_depth_8k_224-448`` (1 channel) and
``EPFL-VILAB/4M_tokenizers_normal_8k_224-448`` (3 channels). Tokens are looked up in the lucid codebook
and a patched UNet denoises Gaussian noise conditioned on them with DDIM; one step (the default) returns
the network's clean-image prediction directly.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from fourm_ros.checkpoint import resolve
from fourm_ros.tokenizers.codebook import LucidQuantizer, check_tokens
from fourm_ros.tokenizers.ddim import DDIMSampler
from fourm_ros.tokenizers.loading import TokenizerConfig, load_decoder
from fourm_ros.tokenizers.unet import OFFICIAL_UNET, PatchedUNet, UNetConfig


def is_divae_encoder_key(key: str) -> bool:
    """Checkpoint keys of the DiVAE encoder half (ViT encoder and its projection to the codebook space)."""
    return key.startswith(("encoder.", "quant_proj."))


@dataclass(frozen=True)
class DiVAEConfig:
    """What the decoder needs from a DiVAE tokenizer's ``config.json``."""

    n_channels: int
    codebook_size: int
    latent_dim: int = 32
    patch_size: int = 16
    """Encoder patch size: one token covers patch_size × patch_size output pixels."""
    num_train_timesteps: int = 1000
    zero_terminal_snr: bool = True
    clip_sample: bool = False

    @classmethod
    def from_json(cls, config: dict, source: str = "config.json") -> DiVAEConfig:
        """Validate a DiVAE ``config.json``; absent fields take the reference constructor's defaults."""
        fields = TokenizerConfig(config, source)
        fields.choice("dec_type", "unet_patched", ("unet_patched",))
        fields.choice("quant_type", "lucid", ("lucid",))
        fields.choice("num_codebooks", 1, (1,))
        fields.choice("scheduler", "ddpm", ("ddim",))
        fields.choice("beta_schedule", "squaredcos_cap_v2", ("linear",))
        fields.choice("prediction_type", "v_prediction", ("sample",))
        fields.choice("thresholding", True, (False,))
        return cls(
            n_channels=fields.integer("n_channels", 3),
            codebook_size=fields.integer("codebook_size", 16384),
            latent_dim=fields.integer("latent_dim", 32),
            patch_size=fields.integer("patch_size", 16),
            num_train_timesteps=fields.integer("num_train_timesteps", 1000),
            zero_terminal_snr=fields.flag("zero_terminal_snr", True),
            clip_sample=fields.flag("clip_sample", False),
        )


class DiVAEDecoder(nn.Module):
    """Tokens [B, h, w] → depth [B, 1, 16h, 16w] or normals [B, 3, 16h, 16w], as the reference decodes them.

    Outputs are in the training target's space: standardised relative depth (see ``relative_depth``) or
    normal vectors in [-1, 1] (see ``unit_normals``). Each token covers 16 × 16 output pixels, as in the
    4M demos (the reference's own default output size is its 448-px training size unless told otherwise).
    """

    def __init__(self, config: DiVAEConfig, unet: UNetConfig = OFFICIAL_UNET):
        super().__init__()
        self.config = config
        self.quantize = LucidQuantizer(config.codebook_size, config.latent_dim)
        self.decoder = PatchedUNet(config.n_channels, config.latent_dim, unet)
        self.sampler = DDIMSampler(
            config.num_train_timesteps,
            zero_terminal_snr=config.zero_terminal_snr,
            clip_sample=config.clip_sample,
        )

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike,
        cache_dir: str | os.PathLike | None = None,
        offline: bool = False,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        *,
        unet: UNetConfig = OFFICIAL_UNET,
    ) -> DiVAEDecoder:
        """Load the decoder half of a DiVAE checkpoint (HF repo id or local directory) strictly.

        ``unet`` describes the ``unet_patched`` architecture; the default is the official one (smaller
        ones serve tests and custom checkpoints).
        """
        checkpoint = resolve(source, cache_dir=cache_dir, offline=offline)
        config = DiVAEConfig.from_json(checkpoint.config, checkpoint.source)
        with torch.device("meta"):
            module = cls(config, unet)
        return load_decoder(module, checkpoint, is_divae_encoder_key, dtype, device)

    @torch.inference_mode()
    def decode(
        self, tokens: torch.Tensor, steps: int = 1, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Decode tokens (LongTensor [B, h, w]) with ``steps`` DDIM steps → float32 [B, C, 16h, 16w].

        The starting noise comes from ``generator`` (global CPU RNG if None); with one step the result is
        the network's x0 prediction at t = T-1, so it depends on the noise only through the network.
        """
        check_tokens(tokens, self.config.codebook_size)
        parameter = next(self.decoder.parameters())
        latents = self.quantize(tokens.to(parameter.device)).to(parameter.dtype)
        b, _, h, w = latents.shape
        size = self.config.patch_size
        shape = (b, self.config.n_channels, h * size, w * size)

        def predict_x0(sample: torch.Tensor, timestep: int) -> torch.Tensor:
            return self.decoder(sample.to(parameter.dtype), timestep, latents)

        return self.sampler.sample(predict_x0, shape, steps, generator, parameter.device)


def relative_depth(output: torch.Tensor) -> np.ndarray:
    """Decoded depth [B, 1, H, W] → float32 numpy [B, H, W] of standardised relative depth.

    Units, as trained: each training target was an Omnidata DPT-Hybrid depth map (16-bit PNG / 65535)
    robustly standardised per image — the lowest and highest 10 % of values dropped, then the map shifted by
    their mean and divided by their standard deviation. So values are roughly zero-mean, unit-spread within
    one image, NOT metres and not comparable across images: metric use needs a per-image scale and shift
    (e.g. fitted to a depth sensor). Verified from the reference: the value increases with the stored label
    value (the standardisation is increasing). Larger therefore means farther if the labels are Omnidata's
    z-buffer depth (DPT-Hybrid's output), which ml-4m does not show (its labelling script is not public);
    not checked on real weights here.
    """
    if output.ndim != 4 or output.shape[1] != 1:
        raise ValueError(f"depth output must have shape [B, 1, H, W], got {list(output.shape)}")
    return output[:, 0].detach().float().cpu().numpy()


def unit_normals(output: torch.Tensor) -> np.ndarray:
    """Decoded normals [B, 3, H, W] → float32 numpy [B, H, W, 3] of unit vectors, in the training encoding.

    Each channel is one normal component in [-1, 1] (the training target was the RGB normal image mapped
    with (v - 0.5) / 0.5); the vector is renormalised per pixel, and a zero vector stays zero (no
    direction). The encoding is Omnidata's, which is that of 2D-3D-Semantics: channel 0 = +x to the right,
    channel 1 = +y downwards, channel 2 = +z towards the camera (Omnidata's author in
    EPFL-VILAB/omnidata#13; consistent with the reference's training flips, which invert channel 0 only).
    ``optical_frame_normals`` turns it into the ROS camera optical frame.
    """
    if output.ndim != 4 or output.shape[1] != 3:
        raise ValueError(f"normal output must have shape [B, 3, H, W], got {list(output.shape)}")
    vectors = output.detach().float().permute(0, 2, 3, 1)
    length = torch.linalg.vector_norm(vectors, dim=-1, keepdim=True)
    return (vectors / length.clamp_min(1e-12)).cpu().numpy()


OPTICAL_FROM_TRAINING = np.array([1.0, 1.0, -1.0], dtype=np.float32)
"""Per-channel factors from the training encoding (z towards the camera) to the ROS camera optical frame
(REP 103: x right, y down, z forward, away from the camera)."""


def optical_frame_normals(normals: np.ndarray) -> np.ndarray:
    """Unit normals [..., 3] of ``unit_normals`` expressed in the camera optical frame: a surface facing the
    camera has the normal (0, 0, -1). Not verified on real weights here (none can be downloaded)."""
    return (normals * OPTICAL_FROM_TRAINING).astype(np.float32)
