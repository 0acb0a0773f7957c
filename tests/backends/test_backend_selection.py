"""Backend selection: what ``auto`` picks on which machine, the one log line that says why, and refusals."""

import logging

import pytest

from fourm_ros.backends import select
from fourm_ros.backends.base import BackendError
from fourm_ros.backends.graphs import build_graphs
from fourm_ros.pipeline.config import PipelineConfig


@pytest.fixture
def machine(monkeypatch):
    """A fake machine: set which of TensorRT, ONNX Runtime CUDA and torch CUDA it has."""

    def configure(*, tensorrt=None, ort_cuda=False, torch_cuda=False):
        monkeypatch.setattr(select, "tensorrt_problem", lambda device="cuda": tensorrt)
        monkeypatch.setattr(select, "onnxruntime_has_cuda", lambda: ort_cuda)
        monkeypatch.setattr(select, "torch_has_cuda", lambda: torch_cuda)

    return configure


@pytest.mark.parametrize(
    ("settings", "have", "expected", "reason"),
    [
        ({}, {"tensorrt": None}, "tensorrt", "TensorRT and a CUDA GPU are present"),
        ({"device": "cuda"}, {"tensorrt": None}, "tensorrt", "TensorRT and a CUDA GPU"),
        (
            {"device": "cuda"},
            {"tensorrt": "tensorrt not importable", "ort_cuda": True},
            "onnxruntime",
            "tensorrt not importable; onnxruntime has the CUDA provider",
        ),
        (
            {"device": "cuda:1"},
            {"tensorrt": "tensorrt not importable", "torch_cuda": True},
            "torch",
            "onnxruntime has no CUDA provider",
        ),
        ({}, {"tensorrt": "tensorrt not importable"}, select.CPU_BACKEND, "tensorrt not importable; "),
        ({}, {"tensorrt": "no CUDA GPU found", "ort_cuda": True}, select.CPU_BACKEND, "no CUDA GPU found"),
        ({"dtype": "bfloat16"}, {"tensorrt": None}, "torch", "dtype bfloat16 is a torch setting"),
        ({"dense_decoding": {"steps": 4}}, {"tensorrt": None}, "torch", "sampled dense decoding"),
        ({"backend": "onnxruntime"}, {"tensorrt": None}, "onnxruntime", "set in the configuration"),
    ],
)
def test_auto_picks_the_best_available_backend(machine, settings, have, expected, reason):
    machine(**have)
    name, why = select.choose_backend(PipelineConfig.from_dict(settings))
    assert name == expected
    assert reason in why


def test_the_choice_is_logged_once_and_kept_for_diagnostics(tiny, tmp_path, machine, caplog, with_cache_dir):
    machine(tensorrt="tensorrt not importable")
    config = with_cache_dir(PipelineConfig(random_weights=True, threads=1), tmp_path)
    graphs = build_graphs(tiny.model, dense_targets=["tok_depth@224"])
    with caplog.at_level(logging.INFO, logger="fourm_ros.backends"):
        backend = select.create_backend(
            config, graphs, model_id=tiny.model_name, precision_note="precision: x"
        )
    lines = [r.getMessage() for r in caplog.records if r.name == "fourm_ros.backends"]
    assert lines == [backend.selection_reason]
    assert backend.selection_reason.endswith("; precision: x")
    assert backend.selection_reason.startswith(f"backend auto → {select.CPU_BACKEND}")
    assert "(CPU" in backend.selection_reason or "cpu" in backend.selection_reason
    assert "tensorrt not importable" in backend.selection_reason
    assert backend.name == "torch" and list(tmp_path.iterdir()) == []  # on a CPU: no export, no cache


def test_torch_is_created_without_an_export(tiny, tmp_path, with_cache_dir):
    config = with_cache_dir(PipelineConfig(backend="torch"), tmp_path)
    backend = select.create_backend(config, build_graphs(tiny.model), model_id="tiny")
    assert backend.name == "torch" and list(tmp_path.iterdir()) == []
    assert backend.selection_reason == f"backend torch → {backend.describe()}: set in the configuration"


def test_tensorrt_where_it_cannot_run_is_refused(tiny, tmp_path, machine, with_cache_dir):
    machine(tensorrt="tensorrt not importable")
    config = with_cache_dir(PipelineConfig(backend="tensorrt"), tmp_path)
    with pytest.raises(BackendError, match="backend tensorrt cannot run here: tensorrt not importable"):
        select.create_backend(config, build_graphs(tiny.model), model_id="tiny")


def test_onnxruntime_on_cuda_without_its_cuda_provider_is_refused(tiny, tmp_path, with_cache_dir):
    if select.onnxruntime_has_cuda():
        pytest.skip("this onnxruntime has the CUDA provider")
    config = with_cache_dir(PipelineConfig(backend="onnxruntime", device="cuda"), tmp_path)
    with pytest.raises(BackendError, match=r"CUDA execution provider.*onnxruntime-gpu or set device: cpu"):
        select.create_backend(config, build_graphs(tiny.model), model_id="tiny")
