"""The depth tokenizer's encoder half: official key layout, strict loading, parity with apple/ml-4m.

``data/depth_encoder_golden.npz`` was made by ``tests/golden/make_depth_encoder_golden.py`` running ml-4m's
ViTEncoder, quant_proj and cosine-similarity VectorQuantize (and its truncated depth standardisation) on
the tiny synthetic weights regenerated here from the same seed.
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from fourm_ros.checkpoint import CheckpointError
from fourm_ros.tokenizers import depth_encoder as de
from fourm_ros.tokenizers.loading import official_config

GOLDEN = np.load(Path(__file__).parent / "data" / "depth_encoder_golden.npz")
MARGIN_TOLERANCE = 1e-4
"""Tokens whose best and second-best codes are closer than this may differ by rounding alone."""


SEED = int(GOLDEN["seed"])


def test_module_keys_are_exactly_the_official_encoder_half(synthetic):
    with torch.device("meta"):
        module = de.DepthEncoder(de.DepthEncoderConfig.from_json(official_config("depth")))
    ours = {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}
    official = {
        name: shape
        for name, shape, _ in synthetic.official_keys("depth")
        if not de.is_divae_decoder_key(name)
    }
    assert ours == official
    assert len(official) == len(synthetic.official_keys("depth")) - sum(
        de.is_divae_decoder_key(name) for name, _, _ in synthetic.official_keys("depth")
    )


def test_standardisation_matches_the_reference():
    for index in range(2):
        ours = de.standardize_depth(GOLDEN[f"depth_{index}"])
        np.testing.assert_allclose(ours, GOLDEN[f"standardized_{index}"], atol=2e-5)


def test_tokens_match_the_reference_where_the_nearest_code_is_clear(synthetic):
    encoder = synthetic.depth_encoder(SEED)
    for index in range(2):
        standardized = torch.from_numpy(de.standardize_depth(GOLDEN[f"depth_{index}"]))[None, None]
        tokens, margin = encoder.tokenize(standardized)
        expected, expected_margin = GOLDEN[f"tokens_{index}"], GOLDEN[f"margin_{index}"]
        clear = expected_margin > MARGIN_TOLERANCE
        assert clear.mean() > 0.9
        np.testing.assert_array_equal(tokens.numpy()[clear], expected[clear])
        np.testing.assert_allclose(margin.numpy(), expected_margin, atol=1e-5)


def test_checkpoint_loads_strictly_with_the_decoder_half_set_aside(synthetic, tmp_path):
    config = {**official_config("depth"), "codebook_size": 64, "latent_dim": 8, "image_size": 128}
    decoder_half = {
        name: torch.zeros(2) for name, _, _ in synthetic.official_keys("depth") if name.startswith("decoder.")
    }
    directory = synthetic.write(
        tmp_path / "ok", {**decoder_half, **synthetic.depth_encoder_state(SEED)}, config
    )
    loaded = de.DepthEncoder.from_pretrained(directory, vit=synthetic.vit)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    depth = torch.from_numpy(de.standardize_depth(GOLDEN["depth_1"]))[None, None]
    assert torch.equal(loaded.tokenize(depth)[0], synthetic.depth_encoder(SEED).tokenize(depth)[0])

    missing = {**decoder_half, **synthetic.depth_encoder_state(SEED)}
    del missing["quant_proj.bias"]
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): quant_proj\.bias"):
        de.DepthEncoder.from_pretrained(
            synthetic.write(tmp_path / "missing", missing, config), vit=synthetic.vit
        )
    with pytest.raises(CheckpointError, match="post_mlp"):
        de.DepthEncoder.from_pretrained(
            synthetic.write(
                tmp_path / "nomlp",
                {**decoder_half, **synthetic.depth_encoder_state(SEED)},
                {**config, "post_mlp": False},
            ),
            vit=synthetic.vit,
        )


def test_holes_are_filled_with_the_nearest_valid_depth():
    depth = np.array([[1.0, np.nan, np.nan, 4.0], [np.nan, np.nan, np.nan, np.nan]], np.float32)
    np.testing.assert_array_equal(de.fill_holes(depth), [[1.0, 1.0, 4.0, 4.0], [1.0, 1.0, 4.0, 4.0]])
    with pytest.raises(ValueError, match="no valid pixel"):
        de.fill_holes(np.full((3, 3), np.nan, np.float32))
    standardized = de.standardize_depth(
        np.where(np.eye(16, dtype=bool), np.nan, np.arange(256.0).reshape(16, 16))
    )
    assert np.isfinite(standardized).all() and abs(np.median(standardized)) < 0.2


def test_tokenize_refuses_a_wrong_shape(synthetic):
    encoder = synthetic.depth_encoder(SEED)
    with pytest.raises(ValueError, match=r"\[B, 1, H, W\]"):
        encoder.tokenize(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="multiples of 16"):
        encoder.tokenize(torch.zeros(1, 1, 60, 64))


def test_golden_file_records_how_it_was_made():
    assert re.fullmatch(r"[0-9a-f]{40}", str(GOLDEN["meta/reference_commit"]))
    assert str(GOLDEN["meta/command"]).startswith("python tests/golden/make_depth_encoder_golden.py --ml4m ")
    assert {"python", "torch", "numpy"} <= set(json.loads(str(GOLDEN["meta/versions"])))
