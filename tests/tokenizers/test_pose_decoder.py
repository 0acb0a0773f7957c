"""Human-pose tokenizer decoder: official key layout, strict decoder-only loading, golden output vs ml-4m."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from support import KEYS_DIR

from fourm_ros.checkpoint import CheckpointError
from fourm_ros.tokenizers.human_pose import PoseDecoder, PoseTokenizerConfig, encoder_half_shapes
from fourm_ros.tokenizers.loading import official_config

DATA = Path(__file__).parent / "data" / "pose"
OFFICIAL_CONFIG = official_config("human_pose")
# The configuration of the golden fixture pose_decoder_tiny.npz (ml-4m's VQVAE.decode_tokens, computed by
# tests/golden/make_pose_golden.py, which records the ml-4m commit and library versions in the file).
TINY_CONFIG = dict(
    OFFICIAL_CONFIG,
    codebook_size=16,
    num_codebooks=4,
    latent_dim=32,
    enc_type="BottleneckMLP/B_2-Wi_32",
    dec_type="BottleneckMLP/B_2-Wi_32",
)


def synthetic_weights(shapes: dict, seed: int) -> dict:
    """Deterministic weights in the official layout; the golden fixture was computed from exactly these."""
    rng = np.random.RandomState(seed)
    out = {}
    for key in sorted(shapes):
        shape = tuple(shapes[key])
        noise = rng.standard_normal(shape).astype(np.float32)
        if len(shape) == 1:
            out[key] = noise * 0.1 + (1.0 if ".layernorms." in key and key.endswith(".weight") else 0.0)
        elif key == "quantize.codes":
            out[key] = noise
        elif key.startswith("quantize."):
            out[key] = noise / np.sqrt(shape[1])
        else:
            out[key] = noise / np.sqrt(np.prod(shape[1:]))
    return {key: torch.from_numpy(np.ascontiguousarray(value)) for key, value in out.items()}


def official_layout(config: dict) -> dict:
    """Every key of a full tokenizer checkpoint (decoder and encoder half) with its shape."""
    parsed = PoseTokenizerConfig.from_dict(config)
    with torch.device("meta"):
        decoder = PoseDecoder(parsed)
    shapes = {key: tuple(value.shape) for key, value in decoder.state_dict().items()}
    return shapes | encoder_half_shapes(parsed)


def write_checkpoint(directory: Path, config: dict, tensors: dict) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config))
    save_file(tensors, str(directory / "model.safetensors"))
    return directory


@pytest.fixture
def tiny_checkpoint(tmp_path):
    return write_checkpoint(
        tmp_path / "tiny", TINY_CONFIG, synthetic_weights(official_layout(TINY_CONFIG), 0)
    )


def test_full_size_module_and_encoder_half_equal_the_official_keys():
    config = PoseTokenizerConfig.from_dict(OFFICIAL_CONFIG)
    with torch.device("meta"):
        decoder = PoseDecoder(config)
    ours = {key: (list(value.shape), "param") for key, value in decoder.named_parameters()}
    ours |= {key: (list(value.shape), "buffer") for key, value in decoder.named_buffers()}
    encoder_half = {key: (list(shape), "param") for key, shape in encoder_half_shapes(config).items()}
    assert not set(ours) & set(encoder_half)
    official = json.loads((KEYS_DIR / "tok_human_poses_keys.json").read_text())
    assert ours | encoder_half == {key: (shape, kind) for key, shape, kind in official}


GOLDEN_ATOL = 1e-5  # max abs difference of rotation entries, float32 (as README.md states); measured 1.9e-6


def test_tiny_decoder_matches_reference_golden(tiny_checkpoint):
    golden = np.load(DATA / "pose_decoder_tiny.npz")
    decoder = PoseDecoder.from_pretrained(tiny_checkpoint)
    rotations = decoder.decode(torch.from_numpy(golden["codes"]))
    assert rotations.shape == (5, 23, 3, 3) and rotations.dtype == torch.float32
    np.testing.assert_allclose(rotations.numpy(), golden["rotations"], atol=GOLDEN_ATOL, rtol=0)
    # one row at a time gives the same result as the batch
    single = decoder.decode(torch.from_numpy(golden["codes"][2:3]))
    np.testing.assert_allclose(single.numpy()[0], golden["rotations"][2], atol=GOLDEN_ATOL, rtol=0)


def test_golden_file_records_how_it_was_made():
    golden = np.load(DATA / "pose_decoder_tiny.npz")
    assert re.fullmatch(r"[0-9a-f]{40}", str(golden["meta/reference_commit"]))
    assert str(golden["meta/command"]).startswith("python tests/golden/make_pose_golden.py --ml4m ")
    assert {"python", "torch", "numpy"} <= set(json.loads(str(golden["meta/versions"])))


def test_loads_in_lower_precision_and_stays_close(tiny_checkpoint):
    golden = np.load(DATA / "pose_decoder_tiny.npz")
    decoder = PoseDecoder.from_pretrained(tiny_checkpoint, dtype=torch.bfloat16)
    assert decoder.quantize.codes.dtype == torch.bfloat16
    assert not any(parameter.requires_grad for parameter in decoder.parameters())
    rotations = decoder.decode(torch.from_numpy(golden["codes"]))
    assert rotations.dtype == torch.bfloat16
    np.testing.assert_allclose(rotations.float().numpy(), golden["rotations"], atol=0.1)


def test_unknown_key_is_an_error_even_next_to_the_declared_encoder_half(tmp_path):
    tensors = synthetic_weights(official_layout(TINY_CONFIG), 0)
    tensors["encoder.blocks.9.block.0.weight"] = torch.zeros(2, 2)
    directory = write_checkpoint(tmp_path / "extra", TINY_CONFIG, tensors)
    with pytest.raises(CheckpointError, match=r"unexpected keys \(1\): encoder\.blocks\.9\.block\.0\.weight"):
        PoseDecoder.from_pretrained(directory)


def test_missing_decoder_key_is_named(tmp_path):
    tensors = synthetic_weights(official_layout(TINY_CONFIG), 0)
    del tensors["quantize.to_v.weight"]
    directory = write_checkpoint(tmp_path / "missing", TINY_CONFIG, tensors)
    with pytest.raises(CheckpointError, match=r"missing keys \(1\): quantize\.to_v\.weight"):
        PoseDecoder.from_pretrained(directory)


def test_decoder_only_checkpoint_loads(tmp_path):
    layout = official_layout(TINY_CONFIG)
    encoder_half = encoder_half_shapes(PoseTokenizerConfig.from_dict(TINY_CONFIG))
    tensors = {key: value for key, value in synthetic_weights(layout, 0).items() if key not in encoder_half}
    decoder = PoseDecoder.from_pretrained(write_checkpoint(tmp_path / "dec", TINY_CONFIG, tensors))
    golden = np.load(DATA / "pose_decoder_tiny.npz")
    np.testing.assert_allclose(
        decoder.decode(torch.from_numpy(golden["codes"])).numpy(), golden["rotations"], atol=GOLDEN_ATOL
    )


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"quant_type": "lucid"}, "uses 'memcodes'"),
        ({"n_channels": 200}, "23 joints"),
        ({"dec_type": "MLP/B_2-Wi_32"}, "unsupported MLP model id"),
        ({"latent_dim": 30}, "not divisible"),
        ({"codebook_size": -1}, "positive integer"),
        ({"num_codebooks": None}, "positive integer"),
    ],
)
def test_bad_config_is_refused_with_the_field_named(tmp_path, change, message):
    config = dict(TINY_CONFIG, **change)
    directory = write_checkpoint(tmp_path / "cfg", config, {"x": torch.zeros(1)})
    with pytest.raises(CheckpointError, match=message):
        PoseDecoder.from_pretrained(directory)


def test_missing_config_field_is_named(tmp_path):
    config = {key: value for key, value in TINY_CONFIG.items() if key != "dec_type"}
    directory = write_checkpoint(tmp_path / "cfg", config, {"x": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="dec_type"):
        PoseDecoder.from_pretrained(directory)


def test_decode_rejects_bad_codes(tiny_checkpoint):
    decoder = PoseDecoder.from_pretrained(tiny_checkpoint)
    with pytest.raises(ValueError, match=r"shape \[N, 4\]"):
        decoder.decode(torch.zeros(2, 8, dtype=torch.long))
    with pytest.raises(TypeError, match="integer tensor"):
        decoder.decode(torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"0\.\.15"):
        decoder.decode(torch.tensor([[0, 1, 2, 16]]))
    assert decoder.decode(torch.zeros(0, 4, dtype=torch.long)).shape == (0, 23, 3, 3)
