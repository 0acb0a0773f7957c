"""Token sampling and decoding schedules of the 4M generation sampler (``fourm/models/generate.py``).

Semantics follow the reference: top-k / top-p filter the raw logits, then the filtered logits are divided by
the temperature and sampled; a temperature within 1e-10 of zero means argmax. Here ``top_k=0`` and
``top_p=1.0`` switch the filters off (the reference uses 0 for both).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

ARGMAX_TEMPERATURE = 1e-10
MIN_SCHEDULED_TEMPERATURE = 1e-9


def check_sampling(temperature: float, top_k: int, top_p: float) -> None:
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 = argmax), got {temperature!r}")
    if not isinstance(top_k, int) or isinstance(top_k, bool) or top_k < 0:
        raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {top_k!r}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (1 = off), got {top_p!r}")


def filter_logits(logits: Tensor, top_k: int = 0, top_p: float = 1.0) -> Tensor:
    """Set logits outside the top-k and outside the top-p nucleus to -inf (last dim = vocabulary)."""
    if top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1:
        ordered, order = torch.sort(logits, dim=-1, descending=True)
        cumulative = ordered.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token once the tokens ranked above it already hold more than top_p of the mass.
        drop = torch.zeros_like(cumulative, dtype=torch.bool)
        drop[..., 1:] = cumulative[..., :-1] > top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))
    return logits


def sample_logits(
    logits: Tensor,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Sample one token per row of ``logits`` [..., V] (computed in float32). Returns the tokens [...] and
    their probabilities under the filtered, tempered distribution (all ones for argmax)."""
    logits = logits.float()
    if temperature <= ARGMAX_TEMPERATURE:
        tokens = logits.argmax(dim=-1)
        return tokens, torch.ones(tokens.shape, device=logits.device)
    probs = (filter_logits(logits, top_k, top_p) / temperature).softmax(dim=-1)
    flat = probs.reshape(-1, probs.shape[-1])
    tokens = torch.multinomial(flat, 1, generator=generator).reshape(probs.shape[:-1])
    return tokens, probs.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


def token_schedule(kind: str, steps: int, total: int) -> list[int]:
    """Tokens decoded per step. ``cosine`` (MaskGIT): the still-masked fraction follows
    0.5 (1 + cos(pi i / steps)); ``linear``: equal shares, larger ones first, empty steps dropped."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"decoding steps must be an integer >= 1, got {steps!r}")
    if kind == "cosine":
        masked = [0.5 * (1 + math.cos(math.pi * i / steps)) for i in range(steps)]
        counts = [round(total * (a - b)) for a, b in itertools.pairwise(masked)]
        return [*counts, total - sum(counts)]
    if kind == "linear":
        shares = sorted(np.diff(np.linspace(0, total, steps + 1, dtype=int)).tolist(), reverse=True)
        return [count for count in shares if count > 0]
    raise ValueError(f"unknown token schedule {kind!r}; choose 'cosine' or 'linear'")


def temperature_schedule(kind: str, temperature: float, counts: list[int]) -> list[float]:
    """Temperature per step: ``constant``, or ``linear`` = temperature x fraction still to be decoded."""
    if kind == "constant":
        return [temperature] * len(counts)
    if kind == "linear":
        total, done = sum(counts), np.cumsum(counts)[:-1].tolist()
        temps = [temperature] + [temperature * (total - count) / total for count in done]
        return [max(value, MIN_SCHEDULED_TEMPERATURE) for value in temps]
    raise ValueError(f"unknown temperature schedule {kind!r}; choose 'constant' or 'linear'")


@dataclass(frozen=True)
class Sampling:
    """How one sequence picks its tokens: argmax (temperature 0) or filtered sampling from ``generator``."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    generator: torch.Generator | None = None


def autoregress(
    step: Callable[[Tensor, int], Tensor],
    start: Tensor,
    max_tokens: int,
    stop_ids: Sequence[int],
    pad_id: int,
    temperature: float = 0.0,
    top_k: int = 0,
    top_p: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """The autoregressive loop of one sequence: ``step(token [B, 1], index)`` returns the logits [B, V] that
    follow ``token`` at sequence ``index`` (keeping whatever cache it needs).

    Starts from ``start`` [B, 1]; a row is finished at its first token in ``stop_ids`` and padded with
    ``pad_id`` afterwards. Returns the generated ids [B, T], T <= ``max_tokens``, stop tokens included."""
    sampling = Sampling(temperature, top_k, top_p, generator)
    return autoregress_jointly(
        lambda tokens, index: {"": step(tokens[""], index)},
        {"": start},
        {"": max_tokens},
        stop_ids,
        pad_id,
        {"": sampling},
    )[""]


def autoregress_jointly(
    step: Callable[[dict[str, Tensor], int], Mapping[str, Tensor]],
    starts: Mapping[str, Tensor],
    max_tokens: Mapping[str, int],
    stop_ids: Sequence[int],
    pad_id: int,
    sampling: Mapping[str, Sampling],
) -> dict[str, Tensor]:
    """Several sequences (e.g. caption and human poses) advancing together, so one decoder pass per index
    serves all of them: ``step(tokens, index)`` gets the last token [B, 1] of every sequence still running
    (in the order of ``starts``) and returns their next-token logits [B, V] by the same names.

    A sequence stops (and is no longer passed to ``step``) when all its rows are finished or it has
    ``max_tokens[name]`` tokens; each is sampled with its own ``sampling[name]`` (its own generator), so
    every result equals generating that sequence alone. Returns the generated ids [B, T_name] by name."""
    for name in starts:
        rule = sampling[name]
        check_sampling(rule.temperature, rule.top_k, rule.top_p)
        if max_tokens[name] < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens[name]} for {name!r}")
    stops = {name: torch.tensor(list(stop_ids), device=start.device) for name, start in starts.items()}
    tokens = dict(starts)
    generated: dict[str, list[Tensor]] = {name: [] for name in starts}
    finished = {
        name: torch.zeros(start.shape, dtype=torch.bool, device=start.device)
        for name, start in starts.items()
    }
    running, index = list(starts), 0
    while running:
        logits = step({name: tokens[name] for name in running}, index)
        for name in running:
            start, rule = starts[name], sampling[name]
            values = torch.as_tensor(logits[name]).to(start.device)
            token = sample_logits(values, rule.temperature, rule.top_k, rule.top_p, rule.generator)[0]
            token = token.reshape(start.shape).masked_fill(finished[name], pad_id)
            generated[name].append(token)
            finished[name] |= torch.isin(token, stops[name])
            tokens[name] = token
        index += 1
        running = [name for name in running if index < max_tokens[name] and not bool(finished[name].all())]
    return {name: torch.cat(values, dim=1) for name, values in generated.items()}
