"""Our decoders compute what apple/ml-4m computes, on tiny synthetic weights.

``data/dense_golden.npz`` holds inputs and outputs of the reference's DiVAE (UNet forward, DDIM decode with
1, 3 and 4 steps) and VQVAE (semseg logits) run once on the checkpoints the conftest writes for seeds 1
(depth), 2 (normal) and 3 (semseg). The weights are regenerated here; only the numbers are stored.
Measured max abs differences: UNet ≤ 1.4e-6, DDIM decode ≤ 6.5e-6, semseg logits ≤ 2e-6 (float32).
"""

from pathlib import Path

import numpy as np
import pytest
import torch

from fourm_ros.tokenizers.ddim import DDIMSampler

GOLDEN = np.load(Path(__file__).parent / "data" / "dense_golden.npz")
SEEDS = {"depth": 1, "normal": 2, "semseg": 3}
TOLERANCE = 5e-5


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
    assert np.array_equal(DDIMSampler(1000).alphas_cumprod.numpy(), GOLDEN["alphas_cumprod"])


@pytest.mark.parametrize("grid", ["square", "wide"])
def test_semseg_logits_match_the_reference(grid, synthetic):
    # "square": 4×4 tokens; "wide": 3×5 tokens — both resize the stored 8×8 position grid bicubically.
    model = synthetic.decoder("semseg", SEEDS["semseg"])
    _close(model.logits(torch.from_numpy(GOLDEN[f"semseg_{grid}_tokens"])), f"semseg_{grid}_logits")
