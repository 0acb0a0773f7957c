"""The whole pipeline on ONNX Runtime agrees with the pipeline on torch, on the sample photographs."""

import threading

import numpy as np
import pytest

from fourm_ros.backends.fp16_check import Fp16Thresholds, compare_results
from fourm_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
from fourm_ros.backends.select import create_backend
from fourm_ros.pipeline.config import ConfigError, PipelineConfig
from fourm_ros.pipeline.pipeline import Pipeline
from fourm_ros.sample import sample_frames

MAP_TOLERANCE = 1e-3
"""Depth (standardised, O(1)) and unit normals: float32 differences between the backends are ~1e-5, with
outliers where a normal is renormalised from a short vector (CI once saw 1.2e-4 in 1 of 150 528 values);
bf16 in a decoder would differ by ~1e-2."""
AGREEMENT = Fp16Thresholds(
    dense_token_agreement=0.999,
    sequence_token_agreement=0.95,
    segmentation_agreement=0.999,
    depth_mean_abs_error=1e-3,
    normals_mean_angle_deg=0.1,
)
"""What the backends guarantee each other. Token ids and labels are argmaxes: a float32 difference of one
ulp (another onnxruntime build, CPU or BLAS) flips a near-tie, e.g. 1 label in 50 176 with onnxruntime 1.23
on Python 3.10; exact equality is platform luck, agreement of 99.9 % is not."""


@pytest.fixture(scope="module")
def frames():
    return [frame.rgb for frame in sample_frames()[:4]]


def _assert_same(expected, actual):
    """``actual`` agrees with ``expected`` within AGREEMENT; where the tokens of a map are identical, the
    map itself is equal within float32 noise, and so are the caption and persons of identical sequences."""
    assert len(expected) == len(actual)
    report = compare_results(expected, actual, AGREEMENT)
    assert report.passed, report.summary()
    for want, got in zip(expected, actual, strict=True):
        assert set(got.tokens) == set(want.tokens)
        same = {name: np.array_equal(got.tokens[name], want.tokens[name]) for name in want.tokens}
        if same["tok_depth@224"]:
            np.testing.assert_allclose(got.depth, want.depth, atol=MAP_TOLERANCE, rtol=0)
        if same["tok_normal@224"]:
            np.testing.assert_allclose(got.normals, want.normals, atol=MAP_TOLERANCE, rtol=0)
        if same["caption"]:
            assert got.caption == want.caption
        if same["human_poses"]:
            assert len(got.persons) == len(want.persons)


def test_pipeline_on_onnxruntime_agrees_with_torch(tiny, tiny_config, tiny_export, frames):
    torch_results = Pipeline(tiny_config, tiny)(frames)
    ort_results = Pipeline(tiny_config, tiny, OnnxRuntimeBackend(tiny_export, threads=1))(frames)
    _assert_same(torch_results, ort_results)
    # Full generations: every greedy id of the 64-token caption and 120-token pose sequence matched.
    assert all((r.tokens["caption"] != 0).sum() == 64 for r in torch_results)
    assert all((r.tokens["human_poses"] != 0).sum() == 120 for r in torch_results)
    assert len({r.caption for r in torch_results}) == len(frames)  # the captions depend on the frame


def test_factory_builds_the_onnxruntime_pipeline(
    tiny, tiny_config, tiny_graphs, tiny_export, frames, with_cache_dir
):
    config = with_cache_dir(
        tiny_config.replace(backend="onnxruntime", threads=1), tiny_export.directory.parent
    )
    backend = create_backend(config, tiny_graphs, model_id=tiny.model_name)
    assert backend.name == "onnxruntime" and backend.manifest.directory == tiny_export.directory
    assert backend.selection_reason.startswith("backend onnxruntime → onnxruntime")
    pipeline = Pipeline(config, tiny, backend)
    _assert_same(Pipeline(tiny_config, tiny)(frames[:1]), pipeline(frames[:1]))


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_dense_and_sequence_lanes_run_at_once(tiny, tiny_config, tiny_export, frames, backend):
    """The node calls dense() and sequences() from two threads on one pipeline; both equal a plain call."""
    expected = Pipeline(tiny_config, tiny)(frames[:1])[0]
    engine = OnnxRuntimeBackend(tiny_export, threads=1) if backend == "onnxruntime" else None
    pipeline = Pipeline(tiny_config, tiny, engine)
    results = {}

    def lane(name, call):
        for _ in range(2):
            results[name] = call(frames[:1])[0]

    threads = [
        threading.Thread(target=lane, args=("dense", pipeline.dense)),
        threading.Thread(target=lane, args=("sequences", pipeline.sequences)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name in ("tok_depth@224", "tok_normal@224", "tok_semseg@224"):
        np.testing.assert_array_equal(results["dense"].tokens[name], expected.tokens[name], err_msg=name)
    np.testing.assert_allclose(results["dense"].depth, expected.depth, atol=MAP_TOLERANCE, rtol=0)
    for name in ("caption", "human_poses"):
        np.testing.assert_array_equal(results["sequences"].tokens[name], expected.tokens[name], err_msg=name)


def _with_caption(config, **changes):
    settings = config.to_dict()
    settings["tasks"]["caption"].update(changes)
    return PipelineConfig.from_dict(settings)


def test_sampling_settings_change_between_calls_but_not_the_exported_cache_length(
    tiny, tiny_config, tiny_export, frames
):
    pipeline = Pipeline(tiny_config, tiny, OnnxRuntimeBackend(tiny_export, threads=1))
    every_other = _with_caption(tiny_config, every_n_frames=2)
    assert pipeline.reconfigure(every_other) == ["tasks.caption.every_n_frames"]
    assert [r.caption is not None for r in pipeline(frames[:1]) + pipeline(frames[:1])] == [True, False]
    with pytest.raises(ConfigError, match=r"tasks\.caption\.max_tokens: the onnxruntime backend"):
        pipeline.reconfigure(_with_caption(tiny_config, max_tokens=80))
    assert pipeline.config == every_other
