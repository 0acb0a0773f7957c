"""The modality registry agrees with the official 4M-21 checkpoint layout."""

import json

import pytest
from support import KEYS_DIR

from fourm_ros import modalities
from fourm_ros.modalities import ModalityKind, PosEmbKind


def _official_shapes(size: str) -> dict[str, list[int]]:
    return {name: shape for name, shape, _ in json.loads((KEYS_DIR / f"fm21_{size}_keys.json").read_text())}


def test_registry_covers_every_modality_of_the_checkpoint():
    shapes = _official_shapes("B")
    in_file = {key.split(".")[1] for key in shapes if key.startswith("encoder_embeddings.")}
    assert in_file == set(modalities.registry())
    decoders = {key.split(".")[1] for key in shapes if key.startswith("decoder_embeddings.")}
    assert decoders == {name for name, m in modalities.registry().items() if m.decoder}


@pytest.mark.parametrize("name", sorted(modalities.registry()))
def test_vocab_and_position_table_match_the_checkpoint(name):
    shapes = _official_shapes("B")
    modality = modalities.get(name)
    assert shapes[f"encoder_embeddings.{name}.pos_emb"] == [1, modality.pos_emb_length, 768]
    if modality.kind in (ModalityKind.IMAGE_TOKENS, ModalityKind.SEQUENCE):
        assert shapes[f"encoder_embeddings.{name}.token_emb.weight"] == [modality.vocab_size, 768]
    if modality.kind is ModalityKind.IMAGE_PATCHES:
        assert shapes[f"encoder_embeddings.{name}.proj.weight"] == [
            768,
            modality.channels * modality.patch_size**2,
        ]
    if modality.kind is ModalityKind.SEQUENCE_EMBEDDING:
        assert shapes[f"encoder_embeddings.{name}.emb_proj.weight"] == [768, modality.embedding_dim]


def test_learned_position_embeddings_are_parameters():
    kinds = {name: kind for name, _, kind in json.loads((KEYS_DIR / "fm21_B_keys.json").read_text())}
    for name, modality in modalities.registry().items():
        expected = "param" if modality.pos_emb is PosEmbKind.LEARNED else "buffer"
        assert kinds[f"encoder_embeddings.{name}.pos_emb"] == expected, name


def test_grids():
    assert modalities.get("rgb@224").grid == 14
    assert modalities.get("tok_dinov2@224").num_tokens == 256
    assert modalities.get("tok_dinov2_global").num_tokens == 16
    with pytest.raises(ValueError, match="sequence"):
        _ = modalities.get("caption").grid


def test_unknown_modality_names_the_known_ones():
    with pytest.raises(KeyError, match="tok_depth@224"):
        modalities.get("tok_depth@448")
