"""Per-modality input embeddings and output heads of 4M-21 (``encoder_embeddings.<mod>`` and
``decoder_embeddings.<mod>`` in the checkpoints).

Every embedding returns the content vectors ``x`` and, separately, ``emb`` = position embedding +
modality embedding, because the model re-adds the encoder's ``emb`` to the decoder context.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fourm_ros.modalities import Modality, ModalityKind, PosEmbKind

from .layers import sincos_1d, sincos_2d


class ModalityEmbedding(nn.Module):
    """Modality embedding plus the modality's position table (sin-cos buffer or learned parameter)."""

    def __init__(self, modality: Modality, dim: int):
        super().__init__()
        self.modality = modality
        self.mod_emb = nn.Parameter(torch.zeros(1, 1, dim))
        table = torch.zeros(1, modality.pos_emb_length, dim)
        if modality.pos_emb is PosEmbKind.LEARNED:
            self.pos_emb = nn.Parameter(table)
        else:
            self.register_buffer("pos_emb", table)

    @torch.no_grad()
    def reset_buffers(self) -> None:
        """Recompute the sin-cos table (after ``to_empty`` or when the checkpoint does not store it)."""
        length, dim = self.pos_emb.shape[1:]
        if self.modality.pos_emb is PosEmbKind.SINCOS_2D:
            self.pos_emb.copy_(sincos_2d(self.modality.grid, dim))
        elif self.modality.pos_emb is PosEmbKind.SINCOS_1D:
            self.pos_emb.copy_(sincos_1d(length, dim))

    def emb(self, positions: Tensor | None = None) -> Tensor:
        """Position + modality embedding: [1, N, D] for all positions, [B, K, D] for ``positions`` [B, K]."""
        table = self.pos_emb if positions is None else self.pos_emb[0][positions]
        return table + self.mod_emb


class ImagePatchEmbedding(ModalityEmbedding):
    """Linear embedding of pixel patches (rgb@224); the patch vector is ordered (row, col, channel)."""

    def __init__(self, modality: Modality, dim: int):
        super().__init__(modality, dim)
        self.proj = nn.Linear(modality.channels * modality.patch_size**2, dim, bias=False)

    def forward(self, image: Tensor) -> tuple[Tensor, Tensor]:
        mod, size = self.modality, self.modality.image_size
        if image.ndim != 4 or tuple(image.shape[1:]) != (mod.channels, size, size):
            raise ValueError(
                f"{mod.name} expects a normalised image tensor [B, {mod.channels}, {size}, {size}], "
                f"got {list(image.shape)}"
            )
        batch, patch, grid = image.shape[0], mod.patch_size, mod.grid
        patches = image.reshape(batch, mod.channels, grid, patch, grid, patch).permute(0, 2, 4, 3, 5, 1)
        x = self.proj(patches.reshape(batch, grid * grid, patch * patch * mod.channels))
        return x, self.emb().expand(batch, -1, -1)


class TokenEmbedding(ModalityEmbedding):
    """Discrete tokens (image token grids, WordPiece sequences) into the encoder."""

    def __init__(self, modality: Modality, dim: int):
        super().__init__(modality, dim)
        self.token_emb = nn.Embedding(modality.vocab_size, dim)

    def forward(self, ids: Tensor, positions: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """``ids`` [B, K] (a full grid may also be [B, h, w]); ``positions`` [B, K] or None for 0..K-1."""
        ids = ids.reshape(ids.shape[0], -1)
        if positions is None:
            positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)
        return self.token_emb(ids), self.emb(positions)


class SequenceVectorEmbedding(ModalityEmbedding):
    """Continuous sequence inputs (t5_caption: T5-XXL vectors) projected into the encoder."""

    def __init__(self, modality: Modality, dim: int):
        super().__init__(modality, dim)
        self.emb_proj = nn.Linear(modality.embedding_dim, dim)

    def forward(self, vectors: Tensor, positions: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if positions is None:
            positions = torch.arange(vectors.shape[1], device=vectors.device).expand(vectors.shape[:2])
        return self.emb_proj(vectors), self.emb(positions)


class DecoderEmbedding(ModalityEmbedding):
    """Decoder side of a token modality: query embeddings and the untied, bias-free ``to_logits`` head.

    ``token_emb`` embeds already generated sequence tokens; for image modalities it is in the checkpoint
    but unused (image queries are the mask token; decoded image tokens re-enter through the encoder)."""

    def __init__(self, modality: Modality, dim: int):
        super().__init__(modality, dim)
        self.token_emb = nn.Embedding(modality.vocab_size, dim)
        self.to_logits = nn.Linear(dim, modality.vocab_size, bias=False)
        self.position_limit = modality.decoder_position_limit

    def emb(self, positions: Tensor | None = None) -> Tensor:
        if positions is not None and self.modality.is_sequence:
            positions = torch.where(positions < self.position_limit, positions, 0)
        return super().emb(positions)


def encoder_embedding(modality: Modality, dim: int) -> ModalityEmbedding:
    if not modality.encoder:
        raise ValueError(f"{modality.name} has no encoder embedding in 4M-21")
    kinds = {
        ModalityKind.IMAGE_PATCHES: ImagePatchEmbedding,
        ModalityKind.IMAGE_TOKENS: TokenEmbedding,
        ModalityKind.SEQUENCE: TokenEmbedding,
        ModalityKind.SEQUENCE_EMBEDDING: SequenceVectorEmbedding,
    }
    return kinds[modality.kind](modality, dim)


def decoder_embedding(modality: Modality, dim: int) -> DecoderEmbedding:
    if not modality.decoder or modality.kind not in (ModalityKind.IMAGE_TOKENS, ModalityKind.SEQUENCE):
        raise ValueError(f"{modality.name} has no decoder embedding in 4M-21 (it cannot be an output)")
    return DecoderEmbedding(modality, dim)
