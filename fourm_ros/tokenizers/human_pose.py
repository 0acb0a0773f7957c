"""Decoder half of the 4M human-pose tokenizer (``EPFL-VILAB/4M_tokenizers_human-poses_1k_8``).

4M-21 writes each person's body pose as 8 tokens, one per Memcodes head (1024 codes each). Decoding, as the
reference ``VQVAE`` with an MLP decoder does it: per head, the code's value vector ``codes[h, k] @ to_v[h]``
(128-d); the 8 heads concatenated head-major into a 1024-d latent; ``post_quant_proj`` (1×1 conv, i.e. a
linear layer on the latent); the ``BottleneckMLP`` decoder; 207 numbers = 23 SMPL body joints × a 3×3
rotation matrix, joint-major and row-major within a joint (the reference reshapes the 207 to (23, 3, 3)).

Only the decoder half is built. The checkpoint also holds the encoder half (``encoder.*``, ``quant_proj.*``,
``quantize.to_k.weight``); those keys are declared with their shapes and set aside when loading, and any
other key that the decoder does not use is an error.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
from torch import nn

from fourm_ros import checkpoint
from fourm_ros.tokenizers.loading import load_decoder

NUM_BODY_JOINTS = 23
"""SMPL body joints (the pelvis' rotation is the separate global orientation)."""

_MLP_ID = re.compile(r"^BottleneckMLP/B_(\d+)-Wi_(\d+)(?:-Ex_(\d+))?$")


@dataclass(frozen=True)
class MlpSpec:
    """A ``BottleneckMLP/B_<blocks>-Wi_<width>[-Ex_<expansion>]`` model id (expansion defaults to 4)."""

    blocks: int
    width: int
    expansion: int = 4

    @classmethod
    def parse(cls, model_id: str) -> MlpSpec:
        match = _MLP_ID.match(str(model_id))
        if match is None:
            raise ValueError(
                f"unsupported MLP model id {model_id!r}; expected 'BottleneckMLP/B_<blocks>-Wi_<width>' "
                "optionally followed by '-Ex_<expansion>'"
            )
        blocks, width, expansion = match.groups()
        return cls(int(blocks), int(width), int(expansion or 4))


@dataclass(frozen=True)
class PoseTokenizerConfig:
    """The fields of the tokenizer's ``config.json`` that the decoder depends on."""

    codebook_size: int
    num_codebooks: int
    latent_dim: int
    n_channels: int
    encoder: MlpSpec
    decoder: MlpSpec

    @property
    def head_dim(self) -> int:
        return self.latent_dim // self.num_codebooks

    @classmethod
    def from_dict(cls, config: dict) -> PoseTokenizerConfig:
        """Validate a ``config.json`` dict; a ValueError says which field is wrong and what is expected."""
        required = ("quant_type", "codebook_size", "num_codebooks", "latent_dim", "n_channels")
        required += ("enc_type", "dec_type")
        absent = [name for name in required if name not in config]
        if absent:
            raise ValueError(f"config lacks the fields {absent} of a 4M human-pose tokenizer")
        if config["quant_type"] != "memcodes":
            raise ValueError(
                f"quant_type is {config['quant_type']!r}; the human-pose tokenizer uses 'memcodes'"
            )
        numbers = {}
        for name in ("codebook_size", "num_codebooks", "latent_dim", "n_channels"):
            value = config[name]
            if isinstance(value, str) and value.isdigit():
                value = int(value)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"config field {name} must be a positive integer, got {config[name]!r}")
            numbers[name] = value
        if numbers["n_channels"] != NUM_BODY_JOINTS * 9:
            raise ValueError(
                f"n_channels is {numbers['n_channels']}; the pose decoder outputs {NUM_BODY_JOINTS} joints × "
                f"3×3 rotation matrices = {NUM_BODY_JOINTS * 9} values"
            )
        if numbers["latent_dim"] % numbers["num_codebooks"]:
            raise ValueError(
                f"latent_dim {numbers['latent_dim']} is not divisible by "
                f"num_codebooks {numbers['num_codebooks']}"
            )
        return cls(
            **numbers, encoder=MlpSpec.parse(config["enc_type"]), decoder=MlpSpec.parse(config["dec_type"])
        )


class BottleneckBlock(nn.Module):
    """Linear thin→wide, GELU, Linear wide→thin (the residual and its LayerNorm live in the MLP)."""

    def __init__(self, thin: int, wide: int):
        super().__init__()
        self.block = nn.Sequential(nn.Linear(thin, wide), nn.GELU(), nn.Linear(wide, thin))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class BottleneckMLP(nn.Module):
    """linear_in → blocks ``x + block(LayerNorm(x))`` → linear_out ("Scaling MLPs", Bachmann et al. 2023)."""

    def __init__(self, spec: MlpSpec, dim_in: int, dim_out: int):
        super().__init__()
        self.linear_in = nn.Linear(dim_in, spec.width)
        self.blocks = nn.ModuleList(
            BottleneckBlock(spec.width, spec.expansion * spec.width) for _ in range(spec.blocks)
        )
        self.layernorms = nn.ModuleList(nn.LayerNorm(spec.width) for _ in range(spec.blocks))
        self.linear_out = nn.Linear(spec.width, dim_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.linear_in(x)
        for block, norm in zip(self.blocks, self.layernorms, strict=True):
            x = x + block(norm(x))
        return self.linear_out(x)


class HeadwiseLinear(nn.Module):
    """One bias-free d→d linear map per head: ``x @ weight[h]``, weight layout (heads, d_in, d_out)."""

    def __init__(self, heads: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(heads, dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [..., heads, dim] → [..., heads, dim]."""
        return torch.einsum("...hd,hdc->...hc", x, self.weight)


class MemcodesLookup(nn.Module):
    """Token → latent half of Memcodes: the value vector of each head's code, heads concatenated."""

    def __init__(self, heads: int, codebook_size: int, head_dim: int):
        super().__init__()
        self.codes = nn.Parameter(torch.empty(heads, codebook_size, head_dim))
        self.to_v = HeadwiseLinear(heads, head_dim)

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        """indices: [N, heads] → latent [N, heads · head_dim] (head-major)."""
        heads = torch.arange(self.codes.shape[0], device=indices.device)
        picked = self.codes[heads, indices]  # the value map is linear, so pick the rows first
        return self.to_v(picked).flatten(1)


class PoseDecoder(nn.Module):
    """8 pose tokens per person → 23 SMPL body-joint rotation matrices.

    The constructor leaves the weights uninitialised (they always come from a checkpoint); use
    ``from_pretrained``.
    """

    def __init__(self, config: PoseTokenizerConfig):
        super().__init__()
        self.config = config
        self.quantize = MemcodesLookup(config.num_codebooks, config.codebook_size, config.head_dim)
        self.post_quant_proj = nn.Conv2d(config.latent_dim, config.decoder.width, 1)
        self.decoder = BottleneckMLP(config.decoder, config.decoder.width, config.n_channels)

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes: integer tensor [N, num_codebooks] → rotation matrices [N, 23, 3, 3] (module dtype)."""
        heads, size = self.config.num_codebooks, self.config.codebook_size
        if not isinstance(codes, torch.Tensor):
            raise TypeError(f"codes must be a torch integer tensor [N, {heads}], got {type(codes).__name__}")
        if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
            raise TypeError(f"codes must be an integer tensor, got dtype {codes.dtype}")
        if codes.dim() != 2 or codes.shape[1] != heads:
            raise ValueError(f"codes must have shape [N, {heads}] (a code per head), got {list(codes.shape)}")
        if codes.numel() and (codes.min() < 0 or codes.max() >= size):
            low, high = codes.min().item(), codes.max().item()
            raise ValueError(f"pose codes must be in 0..{size - 1}, got values {low}..{high}")
        return self(codes.to(self.quantize.codes.device, torch.long))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """The unchecked tensor function behind ``decode`` (exported as the pose graph)."""
        latent = self.quantize(codes)
        projection = self.post_quant_proj  # a 1×1 conv on a 1×1 map is a linear layer
        latent = nn.functional.linear(latent, projection.weight.flatten(1), projection.bias)
        return self.decoder(latent).reshape(-1, NUM_BODY_JOINTS, 3, 3)

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike,
        cache_dir: str | os.PathLike | None = None,
        offline: bool = False,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> PoseDecoder:
        """Load the decoder half from a tokenizer checkpoint (local directory or Hugging Face repo id)."""
        ckpt = checkpoint.resolve(source, cache_dir=cache_dir, offline=offline)
        try:
            config = PoseTokenizerConfig.from_dict(ckpt.config)
        except ValueError as error:
            raise checkpoint.CheckpointError(
                f"{ckpt.directory / checkpoint.CONFIG_NAME} is not a human-pose tokenizer config: {error}"
            ) from error
        with torch.device("meta"):
            model = cls(config)
        return load_decoder(model, ckpt, encoder_half_shapes(config).__contains__, dtype, device)


def encoder_half_shapes(config: PoseTokenizerConfig) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the encoder half: in the tokenizer checkpoint, but not needed to decode."""
    with torch.device("meta"):
        encoder = BottleneckMLP(config.encoder, config.n_channels, config.encoder.width)
    shapes = {f"encoder.{key}": tuple(value.shape) for key, value in encoder.state_dict().items()}
    shapes["quant_proj.weight"] = (config.latent_dim, config.encoder.width, 1, 1)
    shapes["quant_proj.bias"] = (config.latent_dim,)
    shapes["quantize.to_k.weight"] = (config.num_codebooks, config.head_dim, config.head_dim)
    return shapes
