"""ONNX export: every graph in ONNX Runtime equals PyTorch; manifest, hashes, cache reuse, corrupt files."""

import copy
import json
import logging
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from support import tiny_components

import fourm_ros
from fourm_ros.backends import export, onnxruntime_backend
from fourm_ros.backends.base import BackendError
from fourm_ros.backends.export import (
    ExportFileError,
    Manifest,
    cached_export,
    export_graphs,
    file_sha256,
    weights_fingerprint,
)
from fourm_ros.backends.graphs import build_graphs
from fourm_ros.backends.job import job_graphs
from fourm_ros.backends.onnxruntime_backend import (
    OnnxRuntimeBackend,
    SharedInitializers,
    external_initializers,
)
from fourm_ros.backends.torch_backend import TorchBackend

FLOAT_TOLERANCE = 1e-4
"""Absolute tolerance of float outputs (context, logits, KV caches, x0, rotations): the tiny model's values
are O(1) and float32 reordering by ONNX Runtime's fused kernels changes them by about 1e-6."""


def _inputs(graph_name, graph, batch, seed=0):
    """Random inputs of the graph's shapes (non-zero, unlike example_inputs), as numpy arrays."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, example in zip(graph.spec.inputs, graph.example_inputs(batch), strict=True):
        if example.dtype == torch.long:
            high = {"tokens": 4096, "codes": 1024, "token": 30000}.get(name)
            fixed = {"position": [5], "timestep": [640], "targets": [1, 0]}.get(name)
            arrays[name] = rng.integers(0, high, example.shape) if fixed is None else np.array(fixed)
        else:
            arrays[name] = rng.standard_normal(example.shape).astype(np.float32)
    return arrays


@pytest.fixture(scope="module")
def ort_backend(tiny_export):
    return OnnxRuntimeBackend(tiny_export, threads=1)


@pytest.mark.parametrize("batch", [1, 3])
def test_every_graph_in_onnxruntime_equals_pytorch(tiny_graphs, ort_backend, batch):
    reference = TorchBackend(tiny_graphs)
    assert set(ort_backend.graphs) == set(tiny_graphs)
    for name, graph in tiny_graphs.items():
        inputs = _inputs(name, graph, batch)
        expected, actual = reference.run(name, **inputs), ort_backend.run(name, **inputs)
        for output in graph.spec.outputs:
            want, got = reference.to_numpy(expected[output]), ort_backend.to_numpy(actual[output])
            assert got.shape == want.shape and got.dtype == want.dtype, (name, output)
            if np.issubdtype(want.dtype, np.integer):
                np.testing.assert_array_equal(got, want, err_msg=f"{name}.{output}")
            else:
                np.testing.assert_allclose(
                    got, want, atol=FLOAT_TOLERANCE, rtol=0, err_msg=f"{name}.{output}"
                )


def test_manifest_describes_every_file(tiny_export, tiny_graphs, tiny_config):
    data = json.loads((tiny_export.directory / export.MANIFEST_NAME).read_text())
    assert set(data["graphs"]) == set(tiny_graphs)
    assert data["model"] == "tiny test model (random weights)"
    assert data["tasks"] == list(tiny_config.tasks.enabled)
    assert data["key_fields"]["opset"] >= 17
    assert data["key_fields"]["torch"] == torch.__version__
    assert data["key_fields"]["fourm_ros"] == fourm_ros.__version__
    assert data["key_fields"]["dtype"] == "float32"
    assert data["weights_sha256"] == weights_fingerprint(tiny_graphs)
    # One step graph for caption and human poses: its cache holds the longer max_tokens.
    assert data["key_fields"]["graphs"]["sequence_step"]["cache_length"] == 120
    assert data["key_fields"]["graphs"]["sequence_cross_kv"]["targets"] == ["caption", "human_poses"]
    assert data["key_fields"]["graphs"]["dense_decoder"]["targets"] == [
        "tok_depth@224",
        "tok_normal@224",
        "tok_semseg@224",
    ]
    for name, graph in data["graphs"].items():
        assert file_sha256(tiny_export.directory / graph["file"]) == graph["sha256"]
        assert [item["name"] for item in graph["inputs"]] == list(tiny_graphs[name].spec.inputs)
        assert [item["name"] for item in graph["outputs"]] == list(tiny_graphs[name].spec.outputs)
    step = data["graphs"]["sequence_step"]
    assert step["recurrent"] == {"next_cache": "self_cache"}
    shapes = {item["name"]: (item["dtype"], item["shape"]) for item in step["inputs"]}
    assert shapes["self_cache"] == ("float32", [1, 2, "rows", 2, 120, 16])
    assert shapes["cross_kv"] == ("float32", [1, 2, "rows", 2, 197, 16])
    assert shapes["embedded"] == ("float32", ["rows", 1, 32]) and shapes["position"] == ("int64", [1])
    embed = {item["name"]: item["shape"] for item in data["graphs"]["caption_embed"]["inputs"]}
    assert embed == {"token": ["batch", 1], "position": [1]}
    context = {item["name"]: item["shape"] for item in data["graphs"]["sequence_cross_kv"]["inputs"]}
    assert context == {"rgb": ["batch", 3, 224, 224], "targets": ["targets"]}
    assert data["graphs"]["pose_rotations"]["outputs"][0]["shape"] == ["persons", 23, 3, 3]
    assert tiny_export.problems() == []


def test_layer_norm_is_one_onnx_node(tiny_export):
    """opset >= 17: LayerNorm stays a LayerNormalization node (TensorRT's normalisation layer)."""
    model = onnx.load(str(tiny_export.path("encoder")))
    assert max(entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")) >= 17
    assert "LayerNormalization" in {node.op_type for node in model.graph.node}


def test_a_second_start_reuses_the_export(tiny_export, tiny_graphs, tiny, monkeypatch, caplog):
    def refuse(*args, **kwargs):
        raise AssertionError("exported again although the cache holds a valid export")

    monkeypatch.setattr(export, "export_graphs", refuse)
    with caplog.at_level(logging.INFO):
        again = cached_export(tiny_graphs, tiny_export.directory.parent, model=tiny.model_name)
    assert again.directory == tiny_export.directory and again.key == tiny_export.key
    assert "reusing the ONNX export" in caplog.text


def test_the_key_follows_weights_and_max_tokens(tiny, tiny_graphs):
    fingerprint = weights_fingerprint(tiny_graphs)
    key, _ = export.export_key(tiny_graphs, fingerprint)
    shorter = build_graphs(tiny.model, sequence_targets=["caption"], cache_lengths={"caption": 32})
    longer = build_graphs(tiny.model, sequence_targets=["caption"], cache_lengths={"caption": 48})
    assert export.export_key(shorter, fingerprint)[0] != export.export_key(longer, fingerprint)[0]
    assert export.export_key(tiny_graphs, "0" * 64)[0] != key
    assert export.export_key(tiny_graphs, fingerprint, opset=18)[0] != key


def test_export_is_reproducible(tiny, tmp_path):
    graphs = build_graphs(tiny.model, human_pose=tiny.human_pose)
    first = export_graphs(graphs, tmp_path / "a", model="tiny")
    second = export_graphs(graphs, tmp_path / "b", model="tiny")
    assert first.key == second.key
    assert first.graphs["encoder"].sha256 == second.graphs["encoder"].sha256
    assert first.graphs["pose_rotations"].sha256 == second.graphs["pose_rotations"].sha256


def test_a_corrupt_onnx_file_is_rejected_then_exported_again(tiny, tmp_path, caplog):
    graphs = build_graphs(tiny.model, human_pose=tiny.human_pose)
    manifest = cached_export(graphs, tmp_path, model="tiny")
    path = manifest.path("encoder")
    good = path.read_bytes()
    path.write_bytes(b"not an onnx model" + good[17:])

    with pytest.raises(ExportFileError, match=r"cannot load .*encoder\.onnx.*corrupt.*export again"):
        OnnxRuntimeBackend(manifest)
    with caplog.at_level(logging.WARNING):
        again = cached_export(graphs, tmp_path, model="tiny")
    assert "encoder.onnx is corrupt" in caplog.text and "exporting again" in caplog.text
    assert again.path("encoder").read_bytes() == good
    OnnxRuntimeBackend(again)


def test_a_missing_onnx_file_is_reported(tiny, tmp_path, caplog):
    graphs = build_graphs(tiny.model, human_pose=tiny.human_pose)
    manifest = export_graphs(graphs, tmp_path / "export", model="tiny")
    manifest.path("pose_rotations").unlink()
    assert manifest.problems() == ["pose_rotations.onnx is missing"]
    with pytest.raises(ExportFileError, match=r"graph 'pose_rotations' is missing.*export again"):
        OnnxRuntimeBackend(manifest)


def test_unreadable_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(BackendError, match="is not an ONNX export"):
        Manifest.load(tmp_path)
    (tmp_path / export.MANIFEST_NAME).write_text("{ truncated")
    with pytest.raises(BackendError, match=r"malformed.*delete"):
        Manifest.load(tmp_path)


def _state_bytes(graphs):
    """Bytes of the distinct weight tensors of ``graphs`` (a tensor held by several graphs counts once)."""
    seen = {}
    for graph in graphs.values():
        for tensor in graph.state_dict().values():
            seen[(tensor.data_ptr(), tensor.dtype, tuple(tensor.shape))] = (
                tensor.numel() * tensor.element_size()
            )
    return sum(seen.values())


def test_graphs_share_one_weights_file_holding_each_tensor_once(tiny_export, tiny_graphs):
    directory = tiny_export.directory
    assert sorted(p.name for p in directory.iterdir() if p.is_file()) == sorted(
        [f"{name}.onnx" for name in tiny_graphs] + ["manifest.json", export.WEIGHTS_NAME]
    )
    referenced = {
        name: {
            (offset, length) for _, _, offset, length, _, _ in external_initializers(tiny_export.path(name))
        }
        for name in tiny_graphs
    }
    # The decoder's weights are held by the dense, sequence cross-K/V and step graphs, the encoder's by the
    # encoder and sequence cross-K/V graphs: stored once, shared.
    assert referenced["sequence_step"] & referenced["dense_decoder"]
    assert referenced["sequence_cross_kv"] & referenced["encoder"]
    assert referenced["sequence_cross_kv"] & referenced["dense_decoder"]
    size = (directory / export.WEIGHTS_NAME).stat().st_size
    assert size <= 1.02 * _state_bytes(tiny_graphs)
    assert size < sum(length for ranges in referenced.values() for _, length in ranges)
    for graph in tiny_export.graphs.values():
        assert (graph.data_file, graph.data_sha256) == (
            export.WEIGHTS_NAME,
            tiny_export.graphs["encoder"].data_sha256,
        )
        assert (directory / graph.file).stat().st_size < 300_000, "weights left inside a graph file"


def test_onnxruntime_maps_each_shared_weight_once(tiny_export):
    weights = SharedInitializers(tiny_export.directory)
    given = sum(
        weights.add_to(onnxruntime.SessionOptions(), tiny_export.path(name)) for name in tiny_export.graphs
    )
    assert weights.distinct < given
    assert weights.mapped_files == [export.WEIGHTS_NAME]


def test_cpu_sessions_allocate_from_one_arena(ort_backend):
    """Each session would otherwise keep an arena of its own at its largest run's size."""
    assert onnxruntime_backend.shared_cpu_arena(), "this onnxruntime registers a process-wide CPU arena"
    for graph, session in ort_backend._sessions.items():
        options = session.get_session_options()
        assert options.get_session_config_entry("session.use_env_allocators") == "1", graph


def _resident_kib(path) -> int:
    """Resident KiB of this process's mappings of ``path`` (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps", encoding="utf-8") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
                inside = fields[-1] == str(path)
            elif inside and fields[0] == "Rss:":
                total += int(fields[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux's /proc/self/smaps")
def test_sessions_keep_no_mapped_weight_pages_and_still_compute(tiny_graphs, tmp_path):
    """Pre-packing reads every mapped weight once; those pages leave the RSS after each session is made
    (the page cache keeps them), and the sessions' results do not change. (An export of its own: other
    tests' backends map the shared one and their runs touch it.)"""
    graphs = {name: tiny_graphs[name] for name in ("encoder", "dense_decoder")}
    backend = OnnxRuntimeBackend(export_graphs(graphs, tmp_path, model="tiny"))
    weights = tmp_path / export.WEIGHTS_NAME
    assert weights.stat().st_size > 1_000_000
    assert _resident_kib(weights) < 64, "the weights pre-packing read are still resident"
    inputs = _inputs("encoder", tiny_graphs["encoder"], 1)
    got = backend.run("encoder", **inputs)["context"]
    want = TorchBackend(tiny_graphs).run("encoder", **inputs)["context"].numpy()
    np.testing.assert_allclose(got, want, atol=FLOAT_TOLERANCE, rtol=0)


def test_a_corrupt_weights_file_is_reported(tiny, tmp_path):
    graphs = build_graphs(tiny.model, human_pose=tiny.human_pose)
    manifest = export_graphs(graphs, tmp_path, model="tiny")
    inputs = _inputs("pose_rotations", graphs["pose_rotations"], 4)
    got = OnnxRuntimeBackend(manifest).run("pose_rotations", **inputs)["rotations"]
    want = TorchBackend(graphs).run("pose_rotations", **inputs)["rotations"].numpy()
    np.testing.assert_allclose(got, want, atol=FLOAT_TOLERANCE, rtol=0)
    with open(tmp_path / export.WEIGHTS_NAME, "r+b") as handle:
        handle.write(b"\xff" * 16)
    assert manifest.problems() == ["weights.bin is corrupt (its sha256 differs from the manifest)"]


def test_export_needs_float32_weights(tmp_path):
    half = tiny_components(dtype=torch.bfloat16)
    with pytest.raises(BackendError, match=r"needs float32 weights, got .*encoder bfloat16.*dtype: float32"):
        export_graphs(build_graphs(half.model), tmp_path, model="tiny")


def test_export_names_the_one_graph_that_is_not_float32(tiny_graphs, tmp_path):
    """A bf16 tokenizer decoder (per-stage precision) among float32 graphs is refused, not written as bf16
    initializers that ONNX Runtime cannot load."""
    graphs = {name: tiny_graphs[name] for name in ("encoder", "depth_x0")}
    graphs["depth_x0"] = copy.deepcopy(graphs["depth_x0"]).to(torch.bfloat16)
    with pytest.raises(BackendError, match=r"got depth_x0 bfloat16: "):
        export_graphs(graphs, tmp_path, model="tiny")
    assert not (tmp_path / export.WEIGHTS_NAME).exists()


def test_channels_last_weights_of_the_torch_backend_export_as_before(tiny_config, tmp_path):
    """The torch backend lays convolution weights out channels-last; graphs it ran before an export keep
    their fingerprint (the export is reused) and export the same values."""
    fresh = job_graphs(tiny_config, tiny_components())
    graphs = {name: fresh[name] for name in ("depth_x0", "segmentation_labels")}
    fingerprint = weights_fingerprint(graphs)
    plain = export_graphs(graphs, tmp_path / "plain", model="tiny")
    torch_backend = TorchBackend(graphs)
    assert any(
        not p.is_contiguous() for p in graphs["depth_x0"].parameters() if p.ndim == 4 and p.shape[-1] > 1
    )
    assert weights_fingerprint(graphs) == fingerprint
    again = export_graphs(graphs, tmp_path / "channels_last", model="tiny")
    assert file_sha256(again.directory / export.WEIGHTS_NAME) == file_sha256(
        plain.directory / export.WEIGHTS_NAME
    )
    inputs = _inputs("depth_x0", graphs["depth_x0"], 1)
    got = OnnxRuntimeBackend(again).run("depth_x0", **inputs)
    want = torch_backend.run("depth_x0", **inputs)
    name = next(iter(got))
    np.testing.assert_allclose(got[name], want[name].numpy(), atol=FLOAT_TOLERANCE, rtol=0)
