"""The DDIM schedule and sampler, checked against the published formulas (computed here in float64)."""

import numpy as np
import pytest
import torch

from fourm_ros.tokenizers.ddim import DDIMSampler


def _alphas_cumprod(zero_terminal_snr: bool) -> np.ndarray:
    """Linear betas 1e-4 → 0.02 over 1000 steps; optionally Lin et al. 2023 (arXiv 2305.08891) Alg. 1:
    shift sqrt(alpha_bar) so its last value is 0, scale so its first value is unchanged."""
    alpha_bar = np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000, dtype=np.float64))
    if not zero_terminal_snr:
        return alpha_bar
    root = np.sqrt(alpha_bar)
    root = (root - root[-1]) * root[0] / (root[0] - root[-1])
    return root**2


@pytest.mark.parametrize("zero_terminal_snr", [True, False])
def test_alphas_cumprod_follow_the_linear_schedule(zero_terminal_snr):
    sampler = DDIMSampler(1000, zero_terminal_snr=zero_terminal_snr)
    assert sampler.alphas_cumprod.dtype == torch.float32
    np.testing.assert_allclose(sampler.alphas_cumprod.numpy(), _alphas_cumprod(zero_terminal_snr), atol=2e-6)


def test_zero_terminal_snr_ends_in_pure_noise():
    alphas_cumprod = DDIMSampler(1000).alphas_cumprod
    assert alphas_cumprod[-1].item() == 0.0
    assert alphas_cumprod[0].item() == pytest.approx(1 - 1e-4, abs=1e-7)


@pytest.mark.parametrize("steps", [1, 2, 4, 10, 50, 250, 1000])
def test_trailing_timesteps_match_the_diffusers_definition(steps):
    # diffusers "trailing" spacing (Lin et al. 2023, Table 2): round(arange(T, 0, -T/steps)) - 1
    expected = np.round(np.arange(1000, 0, -1000 / steps)).astype(np.int64) - 1
    assert DDIMSampler(1000).timesteps(steps) == expected.tolist()


def test_steps_that_do_not_divide_T_follow_the_reference_integer_stride():
    # ml-4m uses the integer stride T // steps, so 3 steps visit 999, 666, 333 and 0 (seen in the reference).
    assert DDIMSampler(1000).timesteps(3) == [999, 666, 333, 0]


@pytest.mark.parametrize("steps", [0, 1001, 2.0, True, None])
def test_invalid_step_counts_are_refused(steps):
    with pytest.raises(ValueError, match=r"steps must be an integer in \[1, 1000\]"):
        DDIMSampler(1000).timesteps(steps)


def test_two_deterministic_steps_follow_ddim_equation_12():
    sampler = DDIMSampler(1000)
    abar = _alphas_cumprod(True)
    x0_of = {999: torch.full((1, 1, 2, 2), 0.3), 499: torch.full((1, 1, 2, 2), -0.2)}
    seen = []

    def predict_x0(sample, timestep):
        seen.append(timestep)
        return x0_of[timestep]

    result = sampler.sample(predict_x0, (1, 1, 2, 2), steps=2, generator=torch.Generator().manual_seed(3))
    x = torch.randn((1, 1, 2, 2), generator=torch.Generator().manual_seed(3)).double()
    for t, previous_alpha in [(999, abar[499]), (499, 1.0)]:  # eta = 0: x_prev = √ā' x0 + √(1-ā') ε̂
        x0 = x0_of[t].double()
        eps = (x - np.sqrt(abar[t]) * x0) / np.sqrt(1 - abar[t])
        x = np.sqrt(previous_alpha) * x0 + np.sqrt(1 - previous_alpha) * eps
    assert seen == [999, 499]
    torch.testing.assert_close(result, x.float(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", ["depth", "normal"])
def test_one_step_decode_is_the_networks_x0_prediction(kind, synthetic):
    model = synthetic.decoder(kind)
    tokens = torch.tensor([[[0, 1], [2, 3]], [[15, 14], [13, 12]]])
    decoded = model.decode(tokens, steps=1, generator=torch.Generator().manual_seed(9))

    noise = torch.randn(decoded.shape, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        x0 = model.decoder(noise, 999, model.quantize(tokens))
    if kind == "normal":  # the normal tokenizer's config clips the prediction to [-1, 1]
        assert x0.abs().max() > 1
        x0 = x0.clamp(-1, 1)
    assert decoded.shape == (2, model.config.n_channels, 32, 32)
    torch.testing.assert_close(decoded, x0, atol=1e-6, rtol=0)


def test_decoding_repeats_with_the_same_seed_and_varies_with_another(synthetic):
    model = synthetic.decoder("depth")
    tokens = torch.tensor([[[4, 5], [6, 7]]])

    def run(seed):
        return model.decode(tokens, steps=4, generator=torch.Generator().manual_seed(seed))

    assert torch.equal(run(1), run(1))
    assert not torch.allclose(run(1), run(2))
