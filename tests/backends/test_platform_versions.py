"""Platform versions: an unsupported TensorRT is refused by name before any export (and ``auto`` falls back
saying why), and the ONNX export works with torch releases that lack the ``dynamo`` keyword."""

import types

import pytest

from fourm_ros.backends import job, select
from fourm_ros.backends.base import BackendError
from fourm_ros.backends.export import torchscript_exporter_options
from fourm_ros.backends.tensorrt_backend import import_tensorrt, tensorrt_version_problem
from fourm_ros.pipeline.config import PipelineConfig


@pytest.fixture
def installed_tensorrt(monkeypatch):
    """``installed_tensorrt("8.6.1")``: ``import tensorrt`` gives a module of that version."""

    def install(version):
        monkeypatch.setitem(__import__("sys").modules, "tensorrt", types.SimpleNamespace(__version__=version))

    return install


@pytest.mark.parametrize("version", ["10.0.1", "10.3.0", "10.13.3.9", "11.0.0"])
def test_tensorrt_10_and_11_are_supported(version):
    assert tensorrt_version_problem(version) is None


@pytest.mark.parametrize("version", ["8.6.2", "8.5.2.2", "9.3.0", "12.0.0", "unknown"])
def test_other_tensorrt_versions_are_refused_by_name_with_the_supported_range(version):
    problem = tensorrt_version_problem(version)
    assert problem.startswith(f"TensorRT {version} is not supported")
    assert "supported: TensorRT 10.x or 11.x" in problem and "JetPack 6.1" in problem


def test_importing_an_unsupported_tensorrt_is_a_clear_error(installed_tensorrt):
    installed_tensorrt("8.6.2")
    with pytest.raises(BackendError, match=r"TensorRT 8\.6\.2 is not supported \(supported: TensorRT 10"):
        import_tensorrt()


def test_auto_falls_back_from_an_unsupported_tensorrt_and_says_why(installed_tensorrt):
    installed_tensorrt("8.6.2")
    name, why = select.choose_backend(PipelineConfig())
    assert name == select.CPU_BACKEND
    assert why.startswith("TensorRT 8.6.2 is not supported")


def test_build_engines_refuses_an_unsupported_tensorrt_before_exporting(installed_tensorrt, monkeypatch):
    installed_tensorrt("8.6.2")
    exported = []
    monkeypatch.setattr(job, "export_for", lambda *args, **kwargs: exported.append(args))
    with pytest.raises(BackendError, match=r"TensorRT 8\.6\.2 is not supported"):
        job.build_engines(PipelineConfig(random_weights=True))
    assert exported == []


def test_backend_tensorrt_refuses_an_unsupported_version_before_exporting(installed_tensorrt, tmp_path):
    installed_tensorrt("8.6.2")
    config = PipelineConfig(backend="tensorrt")
    with pytest.raises(BackendError, match=r"cannot run here: TensorRT 8\.6\.2 is not supported"):
        select.create_backend(config, {}, model_id="tiny")


def test_the_traced_exporter_is_asked_for_only_where_torch_knows_the_keyword():
    def export_before_torch_2_5(model, args, f, export_params=True, input_names=None, opset_version=None):
        """torch.onnx.export of torch 2.4: no ``dynamo`` keyword."""

    def export_from_torch_2_5(model, args, f, *, input_names=None, opset_version=None, dynamo=False):
        """torch.onnx.export of torch 2.5 and newer."""

    assert torchscript_exporter_options(export_before_torch_2_5) == {}
    assert torchscript_exporter_options(export_from_torch_2_5) == {"dynamo": False}
