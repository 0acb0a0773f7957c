"""The fp16-vs-fp32 comparison and the rule that unverified fp16 engines are refused."""

import dataclasses
import logging

import numpy as np
import pytest

from fourm_ros.backends.base import BackendError
from fourm_ros.backends.fp16_check import (
    Fp16Thresholds,
    compare_results,
    load_report,
    require_verified,
    store_report,
)
from fourm_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
from fourm_ros.pipeline.pipeline import Pipeline
from fourm_ros.sample import sample_frames

ENGINES = {"encoder": "1" * 64, "dense_decoder": "2" * 64}


@pytest.fixture(scope="module")
def results(tiny, tiny_config, tiny_export):
    """Results of two frames from torch (the reference) and from ONNX Runtime (a close candidate)."""
    frames = [frame.rgb for frame in sample_frames()[:2]]
    reference = Pipeline(tiny_config, tiny)(frames)
    candidate = Pipeline(tiny_config, tiny, OnnxRuntimeBackend(tiny_export, threads=1))(frames)
    return reference, candidate


def test_a_faithful_backend_passes(results):
    report = compare_results(*results)
    assert report.passed, report.summary()
    assert report.frames == 2
    assert report.metrics["dense_token_agreement"] == 1.0
    assert report.metrics["sequence_token_agreement"] == 1.0
    assert report.metrics["segmentation_agreement"] == 1.0
    assert report.metrics["depth_mean_abs_error"] < 1e-4
    assert report.metrics["normals_mean_angle_deg"] < 0.1
    assert "PASSED" in report.summary()


def _degraded(result, rng):
    """A candidate with 5% wrong dense tokens and pixels, 15% wrong sequence ids, depth off by 0.1 and
    normals turned by 10 degrees about their third axis."""
    tokens = {}
    for name, values in result.tokens.items():
        flip = rng.random(values.shape) < (0.05 if values.ndim == 2 else 0.15)
        tokens[name] = np.where(flip & (values != 0), values + 1, values)
    labels = np.where(rng.random(result.labels.shape) < 0.05, (result.labels + 1) % 134, result.labels)
    angle = np.radians(10.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    return dataclasses.replace(
        result,
        tokens=tokens,
        labels=labels.astype(np.uint8),
        depth=result.depth + 0.1,
        normals=(result.normals @ rotation.T).astype(np.float32),
    )


def test_a_degraded_backend_fails_on_every_metric(results):
    reference, _ = results
    rng = np.random.default_rng(0)
    report = compare_results(reference, [_degraded(r, rng) for r in reference])
    assert not report.passed
    failed = {failure.split()[0] for failure in report.failures}
    assert failed == set(dataclasses.asdict(Fp16Thresholds()))
    assert 3.0 < report.metrics["normals_mean_angle_deg"] <= 10.0
    assert report.metrics["depth_mean_abs_error"] == pytest.approx(0.1, abs=1e-4)
    assert "FAILED" in report.summary() and "depth_mean_abs_error 0.1000 > 0.05" in report.summary()


def test_results_of_different_frames_are_refused(results):
    reference, candidate = results
    with pytest.raises(ValueError, match="same frames"):
        compare_results(reference, candidate[:1])


def test_unchecked_fp16_engines_are_refused_with_instructions(tmp_path):
    with pytest.raises(BackendError) as error:
        require_verified(tmp_path, ENGINES, allow_unverified=False)
    message = str(error.value)
    assert "never checked against fp32" in message
    assert "fourm-ros check-fp16" in message
    assert "engines.precision: fp32" in message and "engines.allow_unverified_fp16: true" in message


def test_the_override_only_warns(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        require_verified(tmp_path, ENGINES, allow_unverified=True)
    assert "not verified" in caplog.text and "allow_unverified_fp16 is true" in caplog.text


def test_a_passing_check_covers_exactly_its_engines(results, tmp_path):
    report = compare_results(*results)
    path = store_report(report, tmp_path, ENGINES)
    assert path.name == "fp16_check.json" and load_report(tmp_path).engines == ENGINES
    require_verified(tmp_path, ENGINES, allow_unverified=False)
    rebuilt = {**ENGINES, "encoder": "3" * 64}
    with pytest.raises(BackendError, match="rebuilt after the last fp16 check"):
        require_verified(tmp_path, rebuilt, allow_unverified=False)


def test_a_failed_check_is_refused(results, tmp_path):
    reference, _ = results
    rng = np.random.default_rng(1)
    store_report(compare_results(reference, [_degraded(r, rng) for r in reference]), tmp_path, ENGINES)
    with pytest.raises(BackendError, match=r"FAILED the fp16 check: .*dense_token_agreement"):
        require_verified(tmp_path, ENGINES, allow_unverified=False)
