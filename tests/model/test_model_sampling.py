"""Sampling filters and decoding schedules behave like the reference generation sampler.

Expected numbers were computed with apple/ml-4m (``top_k_top_p_filtering``, ``cosine_schedule``,
``linear_schedule``, ``linear_temp_schedule``) on the same inputs.
"""

import numpy as np
import pytest
import torch

from fourm_ros.model.generation import (
    check_sampling,
    filter_logits,
    sample_logits,
    temperature_schedule,
    token_schedule,
)

LOGITS = torch.from_numpy(np.random.RandomState(3).standard_normal((4, 50)).astype(np.float32) * 2)
REFERENCE_KEPT = {
    (5, 1.0): [[0, 13, 22, 31, 38], [4, 13, 19, 23, 49], [0, 4, 19, 31, 43], [14, 17, 30, 46, 47]],
    (0, 0.8): [
        [0, 11, 13, 18, 22, 31, 38],
        [2, 3, 4, 10, 11, 13, 19, 23, 29, 35, 49],
        [0, 3, 4, 8, 13, 16, 19, 31, 32, 34, 37, 43, 45, 48],
        [14, 17, 30, 46],
    ],
    (5, 0.5): [[0, 31], [19, 49], [31], [14]],
    (1, 1.0): [[31], [49], [31], [14]],
    (0, 0.3): [[0, 31], [19, 49], [19, 31], [14]],
}


@pytest.mark.parametrize(("top_k", "top_p"), list(REFERENCE_KEPT))
def test_top_k_top_p_keep_the_same_tokens_as_the_reference(top_k, top_p):
    kept = torch.isfinite(filter_logits(LOGITS, top_k, top_p))
    assert [torch.nonzero(row).flatten().tolist() for row in kept] == REFERENCE_KEPT[(top_k, top_p)]


def test_filters_off_keep_everything_and_do_not_modify_the_input():
    original = LOGITS.clone()
    assert torch.equal(filter_logits(LOGITS, 0, 1.0), LOGITS)
    filter_logits(LOGITS, 3, 0.5)
    assert torch.equal(LOGITS, original)


def test_temperature_near_zero_is_argmax_with_probability_one():
    tokens, probs = sample_logits(LOGITS, temperature=1e-12)
    assert torch.equal(tokens, LOGITS.argmax(-1))
    assert torch.equal(probs, torch.ones(4))


def test_top_k_one_samples_the_argmax_at_any_temperature():
    tokens, probs = sample_logits(LOGITS, 5.0, top_k=1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(tokens, LOGITS.argmax(-1))
    torch.testing.assert_close(probs, torch.ones(4))


def test_seeded_sampling_is_reproducible_and_stays_inside_the_nucleus():
    draw = [
        sample_logits(LOGITS.expand(64, 4, 50), 1.0, 0, 0.8, torch.Generator().manual_seed(5)) for _ in "ab"
    ]
    assert torch.equal(draw[0][0], draw[1][0])
    allowed = torch.isfinite(filter_logits(LOGITS, 0, 0.8))
    assert allowed.gather(-1, draw[0][0].T).all()
    assert draw[0][0].shape == (64, 4)


def test_sampling_probabilities_use_the_tempered_filtered_distribution():
    tokens, probs = sample_logits(LOGITS, 0.5, 5, 1.0, torch.Generator().manual_seed(1))
    expected = (filter_logits(LOGITS, 5) / 0.5).softmax(-1).gather(-1, tokens[:, None])[:, 0]
    torch.testing.assert_close(probs, expected)


@pytest.mark.parametrize(
    ("kind", "steps", "total", "expected"),
    [
        ("cosine", 8, 196, [7, 21, 32, 38, 38, 32, 21, 7]),
        ("cosine", 3, 16, [4, 8, 4]),
        ("linear", 3, 196, [66, 65, 65]),
        ("linear", 7, 256, [37, 37, 37, 37, 36, 36, 36]),
        ("linear", 300, 196, [1] * 196),
        ("cosine", 1, 196, [196]),
    ],
)
def test_token_schedules_match_the_reference(kind, steps, total, expected):
    assert token_schedule(kind, steps, total) == expected


def test_linear_temperature_schedule_matches_the_reference():
    reference = [0.7, 0.675, 0.6, 0.48571428571428565, 0.35, 0.21428571428571427, 0.1, 0.025]
    counts = token_schedule("cosine", 8, 196)
    assert temperature_schedule("linear", 0.7, counts) == pytest.approx(reference, abs=1e-12)
    assert temperature_schedule("constant", 0.7, counts) == [0.7] * 8


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: check_sampling(-1.0, 0, 1.0), "temperature"),
        (lambda: check_sampling(1.0, -2, 1.0), "top_k"),
        (lambda: check_sampling(1.0, 0.5, 1.0), "top_k"),
        (lambda: check_sampling(1.0, 0, 0.0), "top_p"),
        (lambda: token_schedule("cosine", 0, 196), "steps"),
        (lambda: token_schedule("spiral", 2, 196), "token schedule"),
        (lambda: temperature_schedule("onex", 1.0, [1]), "temperature schedule"),
    ],
)
def test_invalid_settings_are_rejected_with_the_setting_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()
