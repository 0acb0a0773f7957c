"""Per-stage precision: which dtype each decoder computes in, and stages that run on torch next to ONNX
Runtime (split backend), with bounded error against float32 and the torch weights released after export."""

import copy
import dataclasses

import numpy as np
import pytest
import torch

from fourm_ros.backends import select
from fourm_ros.backends.job import exported_graphs, float32, job_graphs, torch_stage_graphs
from fourm_ros.backends.split import SplitBackend
from fourm_ros.pipeline import weights
from fourm_ros.pipeline.config import ConfigError, PipelineConfig
from fourm_ros.pipeline.pipeline import Pipeline
from fourm_ros.pipeline.weights import precision_note, resolve_precision, stage_dtype
from fourm_ros.sample import sample_frames

BF16_STAGES = {"depth": "bfloat16", "normals": "bfloat16", "segmentation": "bfloat16"}


def _bfloat16_decoders(components, **changes):
    """A copy of ``components`` whose precision stages are bfloat16 (the shared fixture stays as it is)."""
    decoders = {task: copy.deepcopy(getattr(components, task)).to(torch.bfloat16) for task in BF16_STAGES}
    return dataclasses.replace(components, **decoders, **changes)


@pytest.fixture
def native_bf16(monkeypatch):
    """Pretend the CPU does (True) or does not (False) multiply bfloat16 in hardware."""

    def set_native(native: bool) -> None:
        monkeypatch.setattr(weights, "cpu_has_native_bfloat16", lambda: native)

    return set_native


def test_precision_is_validated():
    assert PipelineConfig().precision.depth == "auto"
    with pytest.raises(ConfigError, match=r"precision\.depth: must be one of \['auto', 'float32'"):
        PipelineConfig.from_dict({"precision": {"depth": "int8"}})
    with pytest.raises(ConfigError, match=r"precision: unknown keys \['encoder'\]"):
        PipelineConfig.from_dict({"precision": {"encoder": "bfloat16"}})


def test_auto_is_bfloat16_only_on_a_cpu_that_has_it(native_bf16):
    config = PipelineConfig()
    native_bf16(True)
    assert stage_dtype(config, "depth", "onnxruntime") == torch.bfloat16
    assert stage_dtype(config, "segmentation", "torch") == torch.bfloat16
    assert stage_dtype(config, "depth", "tensorrt") == torch.float32, "TensorRT keeps it on the GPU"
    assert stage_dtype(config.replace(device="cuda"), "depth", "torch") == torch.float32
    assert stage_dtype(config, "human_pose") == torch.float32, "no precision setting: follows dtype"
    native_bf16(False)
    assert stage_dtype(config, "depth", "torch") == torch.float32
    explicit = PipelineConfig.from_dict({"precision": {"normals": "bfloat16"}})
    assert stage_dtype(explicit, "normals", "tensorrt") == torch.bfloat16
    assert resolve_precision(explicit, "torch").precision.normals == "bfloat16"
    assert resolve_precision(explicit, "torch").precision.depth == "float32"


def test_the_log_line_says_what_auto_chose_and_why(native_bf16):
    config = PipelineConfig()
    native_bf16(False)
    note = precision_note(config, "torch")
    assert note.startswith("precision auto: depth, normals, segmentation decoders in float32")
    assert "no native bfloat16" in note and "avx512_bf16" in note
    native_bf16(True)
    assert precision_note(config, "onnxruntime").endswith(
        "decoders in bfloat16 (this CPU multiplies bf16 natively)"
    )
    without_segmentation = PipelineConfig.from_dict({"tasks": {"segmentation": {"enabled": False}}})
    assert precision_note(without_segmentation, "torch").startswith("precision auto: depth, normals decoders")
    assert precision_note(config, "tensorrt") == "", "a GPU job: nothing to explain"
    assert precision_note(config.replace(device="cuda"), "torch") == ""
    assert precision_note(PipelineConfig.from_dict({"precision": BF16_STAGES}), "torch") == "", (
        "set, not auto"
    )


def test_bfloat16_decoders_stay_close_to_float32(tiny, native_bf16):
    """The error the precision setting trades for speed is bounded (tiny random weights, a sample photo)."""
    native_bf16(False)
    frames = [frame.rgb for frame in sample_frames()[:1]]
    config = PipelineConfig.from_dict(
        {"random_weights": True, "tasks": {"caption": {"enabled": False}, "human_pose": {"enabled": False}}}
    )
    reference = Pipeline(config, tiny)(frames)
    candidate = Pipeline(config, _bfloat16_decoders(tiny))(frames)
    for want, got in zip(reference, candidate, strict=True):
        np.testing.assert_array_equal(got.tokens["tok_depth@224"], want.tokens["tok_depth@224"])
        assert got.depth.dtype == np.float32 and got.depth.shape == want.depth.shape
        assert np.abs(got.depth - want.depth).mean() < 0.05 * np.abs(want.depth).mean() + 1e-3
        cosine = np.sum(got.normals * want.normals, axis=-1)
        assert np.median(np.degrees(np.arccos(np.clip(cosine, -1, 1)))) < 3.0
        assert np.mean(got.labels == want.labels) > 0.9


def test_onnxruntime_runs_bfloat16_stages_on_torch(tiny, tmp_path, native_bf16, with_cache_dir):
    native_bf16(False)
    config = with_cache_dir(
        PipelineConfig.from_dict(
            {
                "random_weights": True,
                "backend": "onnxruntime",
                "threads": 1,
                "precision": BF16_STAGES,
                "tasks": {"caption": {"max_tokens": 6}, "human_pose": {"enabled": False}},
            }
        ),
        tmp_path,
    )
    assert torch_stage_graphs(config, "onnxruntime") == ("depth_x0", "normals_x0", "segmentation_labels")
    assert torch_stage_graphs(config, "torch") == ()
    mixed = _bfloat16_decoders(tiny, model=copy.deepcopy(tiny.model), human_pose=None)
    graphs = job_graphs(config, mixed)
    backend = select.create_backend(config, graphs, model_id="tiny", release_exported=True)
    assert isinstance(backend, SplitBackend) and backend.name == "onnxruntime"
    assert set(backend.graphs) == set(graphs)
    assert "bfloat16" in backend.describe() and "depth_x0" in backend.describe()
    (export,) = tmp_path.iterdir()
    onnx_files = {path.stem for path in export.glob("*.onnx")}
    assert onnx_files == set(exported_graphs(config, graphs, "onnxruntime"))
    assert "depth_x0" not in onnx_files
    # The exported graphs' torch weights were released; the torch stages keep theirs.
    assert next(graphs["encoder"].parameters()).is_meta
    assert not next(graphs["depth_x0"].parameters()).is_meta

    frames = [frame.rgb for frame in sample_frames()[:1]]
    got = Pipeline(config, mixed, backend)(frames)[0]
    want = Pipeline(config, tiny)(frames)[0]
    assert got.tokens["tok_semseg@224"].tolist() == want.tokens["tok_semseg@224"].tolist()
    assert got.caption == want.caption
    assert np.mean(got.labels == want.labels) > 0.9


def test_float32_config_exports_every_stage(native_bf16):
    native_bf16(True)
    config = float32(PipelineConfig())
    assert torch_stage_graphs(config, "onnxruntime") == ()
    assert torch_stage_graphs(PipelineConfig(), "onnxruntime") == (
        "depth_x0",
        "normals_x0",
        "segmentation_labels",
    )
