"""Golden test: a tiny 4M-21-architecture model computes what apple/ml-4m computes.

The expected outputs (tests/data/model/fm_golden_tiny.npz) are apple/ml-4m's, computed by
tests/golden/make_fm_golden.py on a checkpoint written with ``golden_tensors()`` below and inputs from
``golden_inputs()``; both are regenerated here deterministically, so no weights are committed. The file
records the ml-4m commit and library versions it was made with. Sin-cos tables and LayerNorm biases are NOT
in that checkpoint: each side computed its own.
"""

from __future__ import annotations

import json
import re
import zlib

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from support import TEST_DATA

from fourm_ros.model import FourM, FourMConfig
from fourm_ros.model.layers import sincos_1d, sincos_2d

GOLDEN_FILE = TEST_DATA / "model" / "fm_golden_tiny.npz"
GOLDEN_CONFIG = FourMConfig(
    dim=64,
    encoder_depth=2,
    decoder_depth=2,
    num_heads=4,
    domains_in=("rgb@224", "t5_caption", "caption", "human_poses", "tok_depth@224", "tok_dinov2_global"),
    domains_out=(
        "tok_depth@224",
        "tok_normal@224",
        "tok_semseg@224",
        "tok_dinov2_global",
        "caption",
        "human_poses",
        "t5_caption",
    ),
)
DENSE = ("tok_depth@224", "tok_normal@224", "tok_semseg@224", "tok_dinov2_global")
LOGIT_SLICE = 32  # expected logits are stored for the first vocabulary entries, plus logsumexp over all
# Max abs difference allowed for contexts and logits, float32 (the figure README.md states). On x86_64 with
# torch 2.13: contexts 1.9e-6, dense logits 2.3e-6, partial 1.9e-6, unconditional 2.1e-6, sequences 1.3e-6.
ATOL = 1e-5
SINCOS_ATOL = 1e-6  # the tables are the same float32 formula on both sides; sin/cos may differ by an ulp
# [S_1], the first sentinel: a sequence target starts empty, i.e. as this one masked span.
FIRST_SENTINEL = 5
# The reference stops generating once every row has written [S_2].
NEXT_SENTINEL = 6


def golden_tensors(config: FourMConfig = GOLDEN_CONFIG, seed: int = 2024) -> dict[str, np.ndarray]:
    """Every parameter of the official layout, drawn per key from numpy RandomState(seed ^ crc32(key))
    at a scale that keeps activations O(1); buffers are left out."""
    model = FourM(config, config.encoder_modalities, config.decoder_modalities, device="meta")
    tensors = {}
    for name, param in model.named_parameters():
        noise = np.random.RandomState((seed ^ zlib.crc32(name.encode())) % 2**32).standard_normal(param.shape)
        owner = name.split(".")[-2] if "." in name else name
        if "norm" in owner:
            value = 1.0 + 0.1 * noise
        elif name.endswith(".bias"):
            value = 0.1 * noise
        elif param.ndim == 2 and owner != "token_emb":
            value = noise / np.sqrt(param.shape[1])
        else:
            value = 0.5 * noise
        tensors[name] = value.astype(np.float32)
    return tensors


def golden_inputs() -> dict[str, np.ndarray]:
    rs = np.random.RandomState(7)
    known = np.stack([np.sort(rs.choice(196, 60, replace=False)) for _ in range(2)])
    unknown = np.stack([np.setdiff1d(np.arange(196), row) for row in known])
    return {
        "image": rs.standard_normal((2, 3, 224, 224)).astype(np.float32),
        "depth_known_pos": known,
        "depth_unknown_pos": unknown,
        "depth_known_ids": rs.randint(0, 8192, size=(2, 60)),
        "t5_vectors": rs.standard_normal((2, 3, 4096)).astype(np.float32),
        "caption_ids": rs.randint(0, 30000, size=(2, 4)),
        "dinov2_global_ids": rs.randint(0, 8192, size=(2, 16)),
    }


def write_golden_checkpoint(directory, config: FourMConfig = GOLDEN_CONFIG) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(config.to_dict()))
    save_file(
        {k: torch.from_numpy(v) for k, v in golden_tensors(config).items()},
        str(directory / "model.safetensors"),
    )


@pytest.fixture(scope="module")
def golden(tmp_path_factory):
    directory = tmp_path_factory.mktemp("golden")
    write_golden_checkpoint(directory)
    cfg = GOLDEN_CONFIG
    model = FourM.from_pretrained(directory, inputs=cfg.encoder_modalities, outputs=cfg.decoder_modalities)
    inputs = {k: torch.from_numpy(v) for k, v in golden_inputs().items()}
    with np.load(GOLDEN_FILE) as data:
        expected = {k: torch.from_numpy(data[k]) for k in data.files if not k.startswith("meta/")}
    return model, inputs, expected


def _close_logits(logits: torch.Tensor, expected: dict, key: str) -> None:
    """Compare the stored vocabulary slice and the logsumexp over the full vocabulary."""
    torch.testing.assert_close(logits[..., :LOGIT_SLICE], expected[f"{key}/slice"], atol=ATOL, rtol=0)
    torch.testing.assert_close(logits.logsumexp(-1), expected[f"{key}/lse"], atol=ATOL, rtol=0)


def test_sincos_tables_match_reference():
    with np.load(GOLDEN_FILE) as data:
        for ours, key in (
            (sincos_2d(14, 64), "ref_sincos_2d_14_64"),
            (sincos_1d(512, 64), "ref_sincos_1d_512_64"),
        ):
            torch.testing.assert_close(ours, torch.from_numpy(data[key]), atol=SINCOS_ATOL, rtol=0)


def test_encoder_context_matches_reference(golden):
    model, inputs, expected = golden
    torch.testing.assert_close(model.encode(inputs["image"]), expected["context"], atol=ATOL, rtol=0)


def test_context_with_sequence_vector_and_learned_position_inputs_matches_reference(golden):
    model, inputs, expected = golden
    tokens = {
        "t5_caption": inputs["t5_vectors"],
        "caption": inputs["caption_ids"],
        "tok_dinov2_global": inputs["dinov2_global_ids"],
    }
    torch.testing.assert_close(
        model.encode(inputs["image"], tokens), expected["context_all"], atol=ATOL, rtol=0
    )


def test_batched_dense_logits_match_reference_decoding_each_target_alone(golden):
    model, inputs, expected = golden
    logits = model.decode_dense(model.encode(inputs["image"]), DENSE)
    for name in DENSE:
        _close_logits(logits[name], expected, name)
        assert torch.equal(logits[name].argmax(-1), expected[f"{name}/argmax"])


def test_partially_known_tokens_step_matches_reference(golden):
    model, inputs, expected = golden
    known = (inputs["depth_known_ids"], inputs["depth_known_pos"])
    context = model.encode(inputs["image"], {"tok_depth@224": known})
    _close_logits(
        model.decode_positions(context, "tok_depth@224", inputs["depth_unknown_pos"]), expected, "partial"
    )


def test_unconditional_pass_with_empty_context_matches_reference(golden):
    model, inputs, expected = golden
    empty = model.encode(inputs["image"])[:, :0]
    positions = torch.arange(196).expand(2, -1)
    _close_logits(model.decode_positions(empty, "tok_depth@224", positions), expected, "uncond")


@pytest.mark.parametrize("target", ["caption", "human_poses"])
def test_sequence_target_context_is_the_image_and_its_first_sentinel(golden, target):
    """4M-21 generates a sequence target from the image plus the target's [S_1] as encoder input."""
    model, inputs, expected = golden
    context = model.encode(inputs["image"], {target: torch.full((2, 1), FIRST_SENTINEL)})
    torch.testing.assert_close(context, expected[f"{target}_context_conditioned"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("target", ["caption", "human_poses"])
def test_greedy_sequence_and_step_logits_match_reference_generation(golden, target):
    """Token for token what ml-4m's GenerationSampler generates for RGB -> target (greedy). ``human_poses``
    runs past position 263, where the reference wraps decoder positions to 0."""
    model, inputs, expected = golden
    context = model.encode(inputs["image"], {target: torch.full((2, 1), FIRST_SENTINEL)})
    reference_ids = expected[f"{target}_ids_conditioned"]
    length = reference_ids.shape[1]
    generated = model.generate_sequence(context, target, length, stop_ids=(NEXT_SENTINEL,))
    assert torch.equal(generated, reference_ids)
    cross_kv, cache = model.precompute_cross_kv(context), model.empty_self_cache(2, length)
    fed = torch.cat((torch.full((2, 1), FIRST_SENTINEL), reference_ids), dim=1)
    logits = []
    for index in range(length):
        position = torch.tensor([index])
        step_logits, cache = model.decode_step(target, fed[:, index : index + 1], position, cache, cross_kv)
        logits.append(step_logits)
    logits = torch.stack(logits, dim=1)
    assert torch.equal(logits.argmax(-1), reference_ids)
    steps = expected[f"{target}_steps_conditioned"]
    _close_logits(logits[:, steps], expected, f"{target}_logits_conditioned")


def test_golden_file_records_how_it_was_made():
    with np.load(GOLDEN_FILE) as data:
        assert re.fullmatch(r"[0-9a-f]{40}", str(data["meta/reference_commit"]))
        assert str(data["meta/command"]).startswith("python tests/golden/make_fm_golden.py --ml4m ")
        assert {"python", "torch", "numpy"} <= set(json.loads(str(data["meta/versions"])))
