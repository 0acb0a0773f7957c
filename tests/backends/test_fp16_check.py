"""The fp16-vs-fp32 comparison and the rule that only verified fp16 engines run (fp32 otherwise)."""

import dataclasses
import re

import numpy as np
import pytest

from fourm_ros.backends.fp16_check import (
    Fp16Thresholds,
    compare_results,
    load_report,
    planned_precision,
    store_report,
)
from fourm_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
from fourm_ros.pipeline.config import EnginesConfig
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
    # Argmaxes of float32 logits: another onnxruntime build flips a near-tie now and then (1 label in
    # 50 176 with onnxruntime 1.23 on Python 3.10), so agreement, not equality, is what a backend guarantees.
    assert report.metrics["dense_token_agreement"] >= 0.999
    assert report.metrics["sequence_token_agreement"] >= 0.95
    assert report.metrics["segmentation_agreement"] >= 0.999
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


def test_unchecked_fp16_engines_are_not_run_and_the_reason_says_how(tmp_path):
    precision, why = planned_precision(EnginesConfig(), tmp_path, ENGINES)
    assert precision == "fp32"
    assert "never checked against fp32" in why
    assert "ros2 run fourm_ros fourm-ros build-engines" in why
    assert "engines.precision: fp32" in why and "engines.allow_unverified_fp16: true" in why


def test_fp16_engines_that_are_not_built_yet_are_planned_as_fp32(tmp_path):
    """The decision comes before the build: a start with nothing built builds fp32, not fp16 to refuse."""
    precision, why = planned_precision(EnginesConfig(), tmp_path, None)
    assert precision == "fp32" and "not built yet" in why


def test_the_override_runs_fp16_unverified_and_says_so(tmp_path):
    precision, why = planned_precision(EnginesConfig(allow_unverified_fp16=True), tmp_path, None)
    assert precision == "fp16" and "UNVERIFIED" in why and "allow_unverified_fp16 is true" in why


def test_fp32_is_fp32(tmp_path):
    assert planned_precision(EnginesConfig(precision="fp32"), tmp_path, ENGINES)[0] == "fp32"


def test_a_passing_check_covers_exactly_its_engines(results, tmp_path):
    report = compare_results(*results)
    path = store_report(report, tmp_path, ENGINES)
    assert path.name == "fp16_check.json" and load_report(tmp_path).engines == ENGINES
    assert planned_precision(EnginesConfig(), tmp_path, ENGINES) == (
        "fp16",
        "the fp16 engines passed the fp16 check",
    )
    rebuilt = {**ENGINES, "encoder": "3" * 64}
    precision, why = planned_precision(EnginesConfig(), tmp_path, rebuilt)
    assert precision == "fp32" and "rebuilt after the last fp16 check" in why


def test_a_failed_check_runs_fp32(results, tmp_path):
    reference, _ = results
    rng = np.random.default_rng(1)
    store_report(compare_results(reference, [_degraded(r, rng) for r in reference]), tmp_path, ENGINES)
    precision, why = planned_precision(EnginesConfig(), tmp_path, ENGINES)
    assert precision == "fp32"
    assert re.search(r"FAILED the fp16 check: .*dense_token_agreement", why)
