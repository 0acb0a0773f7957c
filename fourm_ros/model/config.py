"""The 4M-21 model configuration, read from (and written to) the Hugging Face ``config.json``.

Only the architecture of the released 4M-21 checkpoints is implemented (SwiGLU, bias-free projections and
norms, unshared modality embeddings). A config asking for anything else is rejected with the field that
differs, because loading such weights into this architecture would compute silently wrong results.
"""

from __future__ import annotations

from dataclasses import dataclass

from fourm_ros import modalities

# Fields whose only supported value is the 4M-21 one: name -> (value, what it means).
_FIXED = {
    "act_layer": ("SiLU", "the SwiGLU activation"),
    "gated_mlp": (True, "SwiGLU feed-forward"),
    "mlp_bias": (False, "bias-free feed-forward"),
    "norm_bias": (False, "bias-free LayerNorm"),
    "proj_bias": (False, "bias-free attention output projection"),
    "qkv_bias": (False, "bias-free q/k/v projections"),
    "qk_norm": (False, "no QK-normalisation"),
    "num_register_tokens": (0, "no register tokens"),
    "share_modality_embeddings": (False, "separate encoder and decoder modality embeddings"),
}
# Training-only options of the reference FourM constructor; they do not change inference.
_TRAINING_ONLY = {
    "drop_path_rate_encoder",
    "drop_path_rate_decoder",
    "shared_drop_path",
    "use_act_checkpoint",
    "decoder_causal_mask",
    "decoder_sep_mask",
}
_IMAGE_SIZE = 224
_PATCH_SIZE = 16

DOMAINS_IN_4M21 = (
    "caption",
    "t5_caption",
    "det",
    "metadata",
    "human_poses",
    "color_palette",
    "sam_instance",
    "rgb@224",
    "tok_rgb@224",
    "tok_normal@224",
    "tok_depth@224",
    "tok_semseg@224",
    "tok_clip@224",
    "tok_dinov2@224",
    "tok_dinov2_global",
    "tok_imagebind@224",
    "tok_imagebind_global",
    "tok_sam_edge@224",
    "tok_canny_edge@224",
)
DOMAINS_OUT_4M21 = tuple(name for name in DOMAINS_IN_4M21 if name != "rgb@224")


@dataclass(frozen=True)
class FourMConfig:
    """Architecture hyper-parameters and modality lists of one 4M-21 checkpoint."""

    dim: int
    encoder_depth: int
    decoder_depth: int
    num_heads: int
    mlp_ratio: float = 4.0
    domains_in: tuple[str, ...] = DOMAINS_IN_4M21
    domains_out: tuple[str, ...] = DOMAINS_OUT_4M21
    image_size: int = _IMAGE_SIZE
    patch_size: int = _PATCH_SIZE

    def __post_init__(self) -> None:
        object.__setattr__(self, "domains_in", tuple(self.domains_in))
        object.__setattr__(self, "domains_out", tuple(self.domains_out))
        for name in ("dim", "encoder_depth", "decoder_depth", "num_heads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"config field {name} must be a positive integer, got {value!r}")
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.dim % 4:
            raise ValueError(f"dim {self.dim} must be divisible by 4 (2D sin-cos position embedding)")
        if not self.mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be positive, got {self.mlp_ratio!r}")
        if (self.image_size, self.patch_size) != (_IMAGE_SIZE, _PATCH_SIZE):
            raise ValueError(
                f"image_size {self.image_size} / patch_size {self.patch_size} are not supported; 4M-21 "
                f"uses {_IMAGE_SIZE} / {_PATCH_SIZE}"
            )
        for name in (*self.domains_in, *self.domains_out):
            modalities.get(name)  # raises with the list of known modalities

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def mlp_hidden(self) -> int:
        """SwiGLU hidden width: two thirds of dim * mlp_ratio, as the reference rounds it."""
        return int(2 * int(self.dim * self.mlp_ratio) / 3)

    @property
    def encoder_modalities(self) -> tuple[str, ...]:
        """Input domains that have an encoder embedding (all of domains_in for 4M-21)."""
        return tuple(name for name in self.domains_in if modalities.get(name).encoder)

    @property
    def decoder_modalities(self) -> tuple[str, ...]:
        """Output domains that have a decoder embedding (t5_caption is listed but has none)."""
        return tuple(name for name in self.domains_out if modalities.get(name).decoder)

    @classmethod
    def from_dict(cls, values: dict) -> FourMConfig:
        """Parse a Hugging Face ``config.json`` of ml-4m; unsupported or unknown fields raise ValueError."""
        values = dict(values)
        for name, (expected, meaning) in _FIXED.items():
            # The reference default of share_modality_embeddings is True (4M-7 configs omit it).
            default = True if name == "share_modality_embeddings" else expected
            found = values.pop(name, default)
            if found != expected:
                raise ValueError(
                    f"config {name}={found!r} is not supported: fourm_ros implements the 4M-21 architecture "
                    f"({name}={expected!r}, {meaning})"
                )
        for name in _TRAINING_ONLY:
            values.pop(name, None)
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config fields {unknown}; known: {sorted(known | set(_FIXED))}")
        missing = sorted(
            name for name in ("dim", "encoder_depth", "decoder_depth", "num_heads") if name not in values
        )
        if missing:
            raise ValueError(f"config is missing required fields {missing}")
        return cls(**values)

    def to_dict(self) -> dict:
        """The ``config.json`` content of a checkpoint with this architecture (ml-4m field names)."""
        fixed = {
            name: value
            for name, (value, _) in _FIXED.items()
            if name not in ("qk_norm", "num_register_tokens")
        }
        return {
            **fixed,
            "dim": self.dim,
            "encoder_depth": self.encoder_depth,
            "decoder_depth": self.decoder_depth,
            "num_heads": self.num_heads,
            "mlp_ratio": self.mlp_ratio,
            "domains_in": list(self.domains_in),
            "domains_out": list(self.domains_out),
            "image_size": self.image_size,
            "patch_size": self.patch_size,
        }

    @classmethod
    def preset(cls, size: str) -> FourMConfig:
        """The released 4M-21 B, L or XL architecture with all 4M-21 modalities."""
        if size not in PRESETS:
            raise ValueError(f"unknown 4M-21 size {size!r}; choose one of {', '.join(PRESETS)}")
        return cls(**PRESETS[size])


PRESETS = {
    "B": {"dim": 768, "encoder_depth": 12, "decoder_depth": 12, "num_heads": 12},
    "L": {"dim": 1024, "encoder_depth": 24, "decoder_depth": 24, "num_heads": 16},
    "XL": {"dim": 2048, "encoder_depth": 24, "decoder_depth": 24, "num_heads": 32},
}
"""4M-21 sizes (``cfgs/default/4m/models/main/4m-{b,l,xl}_mod21_500b.yaml`` and the HF config.json files)."""
