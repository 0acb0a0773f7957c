"""Deterministic DDIM sampling (eta = 0) for the x0-predicting diffusion decoders of depth and normals.

The schedule is the one the tokenizers were trained with: linear betas rescaled to zero terminal SNR
(Lin et al. 2023, arXiv 2305.08891), "trailing" timesteps, and a final step that lands on alpha = 1.
With zero terminal SNR the first step sees pure noise, and with alpha = 1 at the end a single step returns
the network's x0 prediction itself — the cheap path a robot wants.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def linear_betas(num_train_timesteps: int, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """Linearly spaced betas in float32 on the CPU (also when a module is built on the meta device), as the
    reference computes them."""
    return torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32, device="cpu")


def rescale_to_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Shift and scale sqrt(alpha_bar) so that its last value is 0 and its first is unchanged."""
    root = torch.cumprod(1 - betas, dim=0).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * (first / (first - last))
    alpha_bar = root**2
    alphas = torch.cat([alpha_bar[:1], alpha_bar[1:] / alpha_bar[:-1]])
    return 1 - alphas


class DDIMSampler:
    """DDIM with eta 0 for a model that predicts the clean sample (``prediction_type: sample``)."""

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        *,
        zero_terminal_snr: bool = True,
        clip_sample: bool = False,
        clip_sample_range: float = 1.0,
    ):
        betas = linear_betas(num_train_timesteps)
        if zero_terminal_snr:
            betas = rescale_to_zero_terminal_snr(betas)
        self.num_train_timesteps = num_train_timesteps
        self.alphas_cumprod = torch.cumprod(1 - betas, dim=0)
        self.clip_sample = clip_sample
        self.clip_sample_range = clip_sample_range

    def _stride(self, steps: int) -> int:
        valid = isinstance(steps, int) and not isinstance(steps, bool)
        if not valid or not 1 <= steps <= self.num_train_timesteps:
            raise ValueError(f"steps must be an integer in [1, {self.num_train_timesteps}], got {steps!r}")
        return self.num_train_timesteps // steps

    def timesteps(self, steps: int) -> list[int]:
        """The "trailing" timesteps for ``steps`` steps: T-1, T-1-s, ... with stride s = T // steps.

        As in the reference, a ``steps`` that does not divide T gives one more timestep than asked
        (e.g. 3 → 999, 666, 333, 0), each one network evaluation.
        """
        stride = self._stride(steps)
        return list(range(self.num_train_timesteps - 1, -1, -stride))

    def step(self, x0: torch.Tensor, timestep: int, sample: torch.Tensor, steps: int) -> torch.Tensor:
        """Move ``sample`` from ``timestep`` to ``timestep - T // steps`` given the predicted clean sample."""
        previous = timestep - self._stride(steps)
        alpha = self.alphas_cumprod[timestep]
        alpha_prev = self.alphas_cumprod[previous] if previous >= 0 else torch.tensor(1.0)
        # The noise estimate comes from the raw prediction; only the x0 term is clipped (as the reference).
        noise = (sample - alpha**0.5 * x0) / (1 - alpha) ** 0.5
        if self.clip_sample:
            x0 = x0.clamp(-self.clip_sample_range, self.clip_sample_range)
        return alpha_prev**0.5 * x0 + (1 - alpha_prev) ** 0.5 * noise

    def sample(
        self,
        predict_x0: Callable[[torch.Tensor, int], torch.Tensor],
        shape: tuple[int, ...],
        steps: int = 1,
        generator: torch.Generator | None = None,
        device: str | torch.device = "cpu",
        noise: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run the sampler from Gaussian noise; returns a float32 tensor of ``shape`` on ``device``.

        ``predict_x0(sample, timestep)`` is the network. The starting noise is drawn in float32 on the
        generator's device (CPU without a generator), as the reference does, so a seeded generator gives
        the same result on every device. ``noise`` replaces that draw (e.g. the same noise for every frame
        of a batch, so that a frame's result does not depend on its batch position).
        """
        timesteps = self.timesteps(steps)
        if noise is None:
            noise_device = generator.device if generator is not None else torch.device("cpu")
            noise = torch.randn(shape, generator=generator, device=noise_device, dtype=torch.float32)
        elif tuple(noise.shape) != tuple(shape):
            raise ValueError(f"noise must have shape {list(shape)}, got {list(noise.shape)}")
        sample = noise.to(device=device, dtype=torch.float32)
        for timestep in timesteps:
            sample = self.step(predict_x0(sample, timestep).float(), timestep, sample, steps)
        return sample
