"""The 4M-21 modality registry, read from ``data/modalities.yaml``.

The registry is data so that the model builder, the checkpoint loader, the tokenizers and the pipeline
agree on one description of every modality (kind, vocabulary, token grid, position embedding) instead of
each keeping its own table.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import cache
from importlib import resources

import yaml

SEQUENCE_POS_EMB_LENGTH = 512
"""Every sequence modality of 4M-21 stores a [1, 512, dim] 1D sin-cos table, whatever its max_tokens."""


class ModalityKind(str, enum.Enum):
    IMAGE_PATCHES = "image_patches"
    IMAGE_TOKENS = "image_tokens"
    SEQUENCE = "sequence"
    SEQUENCE_EMBEDDING = "sequence_embedding"


class PosEmbKind(str, enum.Enum):
    SINCOS_2D = "sincos_2d"
    LEARNED = "learned"
    SINCOS_1D = "sincos_1d"


@dataclass(frozen=True)
class Modality:
    """One modality of 4M-21 and the facts needed to build, load and decode it."""

    name: str
    kind: ModalityKind
    pos_emb: PosEmbKind
    vocab_size: int | None = None
    image_size: int | None = None
    patch_size: int | None = None
    channels: int | None = None
    max_tokens: int | None = None
    embedding_dim: int | None = None
    encoder: bool = True
    decoder: bool = True
    tokenizer: str | None = None
    decoder_positions: int | None = None

    @property
    def is_image(self) -> bool:
        return self.kind in (ModalityKind.IMAGE_PATCHES, ModalityKind.IMAGE_TOKENS)

    @property
    def is_sequence(self) -> bool:
        return self.kind in (ModalityKind.SEQUENCE, ModalityKind.SEQUENCE_EMBEDDING)

    @property
    def grid(self) -> int:
        """Tokens per side of the square token grid (image kinds only)."""
        if not self.is_image:
            raise ValueError(f"{self.name} is a sequence modality and has no token grid")
        return self.image_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        """Tokens of one full image (image kinds) or the longest sequence (sequence kinds)."""
        return self.grid**2 if self.is_image else self.max_tokens

    @property
    def decoder_position_limit(self) -> int:
        """Decoder positions at or beyond this map to position 0 (the reference's embedding length)."""
        return self.decoder_positions or self.num_tokens

    @property
    def pos_emb_length(self) -> int:
        return self.grid**2 if self.is_image else SEQUENCE_POS_EMB_LENGTH


def _parse(name: str, fields: dict) -> Modality:
    known = set(Modality.__dataclass_fields__) - {"name"}
    unknown = set(fields) - known
    if unknown:
        raise ValueError(f"modality {name}: unknown fields {sorted(unknown)} (known: {sorted(known)})")
    values = dict(fields)
    values["kind"] = ModalityKind(values["kind"])
    values["pos_emb"] = PosEmbKind(values["pos_emb"])
    return Modality(name=name, **values)


@cache
def registry() -> dict[str, Modality]:
    """All 4M-21 modalities by name, in the registry file's order."""
    text = resources.files("fourm_ros").joinpath("data/modalities.yaml").read_text(encoding="utf-8")
    return {name: _parse(name, fields) for name, fields in yaml.safe_load(text).items()}


def get(name: str) -> Modality:
    """The modality called ``name``; a clear error lists the known names otherwise."""
    modalities = registry()
    if name not in modalities:
        raise KeyError(f"unknown 4M-21 modality {name!r}; known modalities: {', '.join(modalities)}")
    return modalities[name]
