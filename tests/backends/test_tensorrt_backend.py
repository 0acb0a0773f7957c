"""The TensorRT backend on a real GPU: engines from the tiny export match torch, the cache is reused and
repaired, the KV cache stays on the device. Skipped (with the reason) where TensorRT or a GPU is absent."""

import logging
import threading

import numpy as np
import pytest

from fourm_ros.backends.base import BackendError
from fourm_ros.backends.engine_cache import BatchProfile
from fourm_ros.backends.fp16_check import check_fp16, load_report
from fourm_ros.backends.tensorrt_backend import DeviceArray, cuda_device, engine_directory, tensorrt_backend
from fourm_ros.backends.torch_backend import TorchBackend
from fourm_ros.pipeline.pipeline import Pipeline
from fourm_ros.sample import sample_frames

pytest.importorskip("tensorrt", reason="TensorRT is not installed (JetPack / the tensorrt wheel provide it)")
if cuda_device() is None:
    pytest.skip("no CUDA GPU visible (TensorRT needs one)", allow_module_level=True)

MAP_TOLERANCE = 1e-3
"""fp32 engines (TF32 off) use other kernels and summation orders than torch; 1e-3 leaves room for that."""


@pytest.fixture(scope="module")
def fp32(tiny_export):
    return tensorrt_backend(
        tiny_export, precision="fp32", workspace_mb=512, profile=BatchProfile(max_batch=2)
    )


def test_fp32_engines_run_the_pipeline_like_torch(tiny, tiny_config, fp32):
    frames = [frame.rgb for frame in sample_frames()[:2]]
    expected = Pipeline(tiny_config, tiny)(frames)
    actual = Pipeline(tiny_config, tiny, fp32)(frames)
    for want, got in zip(expected, actual, strict=True):
        for name, tokens in want.tokens.items():
            np.testing.assert_array_equal(got.tokens[name], tokens, err_msg=name)
        np.testing.assert_array_equal(got.labels, want.labels)
        np.testing.assert_allclose(got.depth, want.depth, atol=MAP_TOLERANCE)
        assert got.caption == want.caption


def test_the_kv_cache_stays_on_the_device(tiny_graphs, fp32):
    step = tiny_graphs["sequence_step"]
    examples = zip(step.spec.inputs, step.example_inputs(1), strict=True)
    inputs = {name: value.numpy() for name, value in examples}
    inputs["embedded"] = np.random.default_rng(0).standard_normal(inputs["embedded"].shape).astype(np.float32)
    first = fp32.run("sequence_step", **inputs)
    assert isinstance(first["next_cache"], DeviceArray)
    later = {**inputs, "position": np.array([1]), "self_cache": first["next_cache"]}
    second = fp32.run("sequence_step", **later)
    assert second["next_cache"].buffer.ptr != first["next_cache"].buffer.ptr  # ping-pong, no copy
    reference = TorchBackend(tiny_graphs)
    cache = reference.run("sequence_step", **inputs)["next_cache"]
    want = reference.run("sequence_step", **{**inputs, "position": np.array([1]), "self_cache": cache})
    np.testing.assert_allclose(fp32.to_numpy(second["hidden"]), want["hidden"].numpy(), atol=MAP_TOLERANCE)


def test_two_lanes_each_have_their_own_context_and_stream(tiny, tiny_config, fp32):
    frames = [frame.rgb for frame in sample_frames()[:1]]
    expected = Pipeline(tiny_config, tiny)(frames)[0]
    pipeline = Pipeline(tiny_config, tiny, fp32)
    results, lanes = {}, {}

    def lane(name, call):
        results[name] = call(frames)[0]
        lanes[name] = fp32._lane()

    threads = [
        threading.Thread(target=lane, args=("dense", pipeline.dense)),
        threading.Thread(target=lane, args=("sequences", pipeline.sequences)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert lanes["dense"].memory.handle != lanes["sequences"].memory.handle
    np.testing.assert_array_equal(results["dense"].tokens["tok_depth@224"], expected.tokens["tok_depth@224"])
    np.testing.assert_array_equal(results["sequences"].tokens["caption"], expected.tokens["caption"])


def test_a_batch_beyond_the_profile_is_a_clear_error(tiny_graphs, fp32):
    rgb = tiny_graphs["encoder"].example_inputs(3)[0].numpy()
    with pytest.raises(BackendError, match=r"shape \[3, 3, 224, 224\]; this engine takes at most \[2,"):
        fp32.run("encoder", rgb=rgb)


def test_cached_engines_are_reused_and_corrupt_ones_rebuilt(tiny_export, fp32, caplog):
    profile = BatchProfile(max_batch=2)
    with caplog.at_level(logging.INFO):
        tensorrt_backend(tiny_export, precision="fp32", workspace_mb=512, profile=profile)
    assert "building TensorRT engine" not in caplog.text
    path = engine_directory(tiny_export) / "pose_rotations.fp32.engine"
    path.write_bytes(b"garbage")
    caplog.clear()
    with caplog.at_level(logging.INFO):
        tensorrt_backend(tiny_export, precision="fp32", workspace_mb=512, profile=profile)
    assert "building TensorRT engine pose_rotations (fp32): the engine file is corrupt" in caplog.text


def test_the_fp16_check_stores_its_verdict(tiny, tiny_config, tiny_export, with_cache_dir, monkeypatch):
    from fourm_ros.backends import job

    config = with_cache_dir(tiny_config, tiny_export.directory.parent)
    monkeypatch.setattr(job, "export_for", lambda config, log=None: (tiny, tiny_export))
    report = check_fp16(config, frames=[frame.rgb for frame in sample_frames()[:2]])
    stored = load_report(engine_directory(tiny_export))
    assert stored.passed == report.passed and set(stored.engines) == set(tiny_export.graphs)
    assert set(report.metrics) >= {"dense_token_agreement", "depth_mean_abs_error", "normals_mean_angle_deg"}
