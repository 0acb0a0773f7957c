"""`fourm-ros build-engines` builds exactly what the node will run, decided before building: the TensorRT
parts are replaced by recorders here (the real build needs a GPU, see test_tensorrt_backend.py)."""

import gc
import weakref
from pathlib import Path
from typing import ClassVar

import pytest

from fourm_ros.backends import fp16_check, job, tensorrt_backend
from fourm_ros.backends.fp16_check import Fp16Report, store_report
from fourm_ros.pipeline.config import EnginesConfig, PipelineConfig

DIGESTS = {"encoder": "a" * 64, "dense_decoder": "b" * 64}


class Weights:
    """Stands for the loaded fp32 torch components (gigabytes on a real job)."""


@pytest.fixture
def tensorrt(monkeypatch, tmp_path):
    """Record the builds and checks; ``tensorrt.verdict`` is what the fp16 check stores (True: PASSED)."""

    class Recorder:
        built: ClassVar[list[tuple[str, bool, bool]]] = []
        checks = 0
        verdict = True
        weights: weakref.ref | None = None
        directory = tmp_path

    manifest = type("Manifest", (), {"directory": tmp_path})()

    def export_for(config, log=None):
        weights = Weights()
        Recorder.weights = weakref.ref(weights)
        return weights, manifest

    def load_engines(manifest, *, precision, keep, **settings):
        gc.collect()
        Recorder.built.append((precision, keep, Recorder.weights() is not None))

    def check_fp16(config, *, max_batch, log):
        Recorder.checks += 1
        report = Fp16Report(
            metrics={}, failures=[] if Recorder.verdict else ["dense_token_agreement 0.5 < 0.97"], frames=2
        )
        store_report(report, tensorrt_backend.engine_directory(manifest), DIGESTS)

    monkeypatch.setattr(tensorrt_backend, "require_tensorrt", lambda device: None)
    monkeypatch.setattr(tensorrt_backend, "load_engines", load_engines)
    monkeypatch.setattr(tensorrt_backend, "engine_directory", lambda manifest: Path(manifest.directory))
    monkeypatch.setattr(tensorrt_backend, "current_engine_digests", lambda manifest, **settings: DIGESTS)
    monkeypatch.setattr(fp16_check, "check_fp16", check_fp16)
    monkeypatch.setattr(job, "export_for", export_for)
    return Recorder


def _config(**engines):
    return PipelineConfig(random_weights=True, engines=EnginesConfig(**engines))


def test_fp16_builds_both_checks_and_runs_fp16_when_it_passes(tensorrt):
    directory, precision, why = job.build_engines(_config())
    assert directory == tensorrt.directory
    # fp32 first (the reference of the check), then fp16; each engine released once stored; the torch
    # weights released before the first build.
    assert tensorrt.built == [("fp32", False, False), ("fp16", False, False)]
    assert tensorrt.checks == 1
    assert (precision, why) == ("fp16", "the fp16 engines passed the fp16 check")


def test_fp16_that_fails_the_check_leaves_the_node_on_fp32(tensorrt):
    tensorrt.verdict = False
    _, precision, why = job.build_engines(_config())
    assert precision == "fp32" and "FAILED the fp16 check" in why


def test_fp32_builds_fp32_only_and_needs_no_check(tensorrt):
    _, precision, _ = job.build_engines(_config(precision="fp32"))
    assert tensorrt.built == [("fp32", False, False)] and tensorrt.checks == 0
    assert precision == "fp32"


def test_allowed_unverified_fp16_builds_fp16_only(tensorrt):
    _, precision, why = job.build_engines(_config(allow_unverified_fp16=True))
    assert tensorrt.built == [("fp16", False, False)] and tensorrt.checks == 0
    assert precision == "fp16" and "UNVERIFIED" in why
