"""Our decoders compute what apple/ml-4m computes, on tiny synthetic weights.

``data/dense_golden.npz`` holds inputs and outputs of the reference's DiVAE (UNet forward, DDIM decode with
1, 3 and 4 steps) and VQVAE (semseg logits) on the weights the conftest builds for seeds 1 (depth), 2 (normal)
and 3 (semseg); tests/golden/make_dense_golden.py computes it with an ml-4m checkout and records the ml-4m
commit and library versions in it. The weights are regenerated here; only the numbers are stored.
Measured max abs differences (float32, x86_64, torch 2.13): UNet 0, DDIM decode 0, semseg logits 1.9e-6;
against a file made earlier on another setup: 2.1e-6, 7e-6 and 1.9e-6.
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from fourm_ros.tokenizers.ddim import DDIMSampler

GOLDEN_FILE = Path(__file__).parent / "data" / "dense_golden.npz"
GOLDEN = np.load(GOLDEN_FILE)
SEEDS = {"depth": 1, "normal": 2, "semseg": 3}
TOLERANCE = 2e-5  # max abs difference, float32 (the figure README.md states)
SCHEDULE_RTOL = 1e-5  # alphas_cumprod: float32 products of 1000 factors differ in the last ulps across setups


def _close(ours: torch.Tensor, name: str) -> None:
    expected = GOLDEN[name]
    assert ours.shape == expected.shape
    difference = np.abs(ours.detach().numpy() - expected).max()
    assert difference < TOLERANCE, f"{name}: max abs diff {difference:.3g}"


@pytest.mark.parametrize("kind", ["depth", "normal"])
def test_unet_forward_matches_the_reference(kind, synthetic):
    model = synthetic.decoder(kind, SEEDS[kind])
    tokens = torch.from_numpy(GOLDEN[f"{kind}_tokens"])
    sample = torch.from_numpy(GOLDEN[f"{kind}_unet_sample"])
    timesteps = torch.from_numpy(GOLDEN[f"{kind}_unet_timesteps"])  # one per batch element: 999 and 421
    with torch.no_grad():
        _close(model.decoder(sample, timesteps, model.quantize(tokens)), f"{kind}_unet_out")


@pytest.mark.parametrize("steps", [1, 3, 4])
@pytest.mark.parametrize("kind", ["depth", "normal"])
def test_ddim_decode_matches_the_reference(kind, steps, synthetic):
    model = synthetic.decoder(kind, SEEDS[kind])
    tokens = torch.from_numpy(GOLDEN[f"{kind}_tokens"])
    decoded = model.decode(tokens, steps=steps, generator=torch.Generator().manual_seed(1234))
    _close(decoded, f"{kind}_decode_steps{steps}")


def test_schedule_matches_the_reference():
    expected = GOLDEN["alphas_cumprod"]
    ours = DDIMSampler(1000).alphas_cumprod.numpy()
    np.testing.assert_allclose(ours, expected, rtol=SCHEDULE_RTOL, atol=0)
    assert ours[-1] == expected[-1] == 0  # zero terminal SNR: the last step is pure noise, exactly


@pytest.mark.parametrize("grid", ["square", "wide"])
def test_semseg_logits_match_the_reference(grid, synthetic):
    # "square": 4×4 tokens; "wide": 3×5 tokens — both resize the stored 8×8 position grid bicubically.
    model = synthetic.decoder("semseg", SEEDS["semseg"])
    _close(model.logits(torch.from_numpy(GOLDEN[f"semseg_{grid}_tokens"])), f"semseg_{grid}_logits")


def test_golden_file_records_how_it_was_made():
    assert re.fullmatch(r"[0-9a-f]{40}", str(GOLDEN["meta/reference_commit"]))
    assert str(GOLDEN["meta/command"]).startswith("python tests/golden/make_dense_golden.py --ml4m ")
    assert {"python", "torch", "numpy"} <= set(json.loads(str(GOLDEN["meta/versions"])))
