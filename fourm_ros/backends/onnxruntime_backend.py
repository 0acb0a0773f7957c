"""The ONNX Runtime backend: one InferenceSession per exported graph, numpy in and out.

Sessions are built once, with every graph optimisation on, on the CPU execution provider or, when the
device is CUDA and onnxruntime-gpu is installed, the CUDA provider (CPU as fallback for unsupported ops).
A missing or unreadable .onnx file is a BackendError that names the file, never a crash deep inside ORT;
``fourm_ros.backends.select`` then exports again.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from fourm_ros.backends.base import Backend, BackendError
from fourm_ros.backends.export import ExportFileError, Manifest

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


def available_providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def _providers(device: str) -> list[Any]:
    if device == "cpu":
        return [CPU_PROVIDER]
    if CUDA_PROVIDER not in available_providers():
        raise BackendError(
            f"device {device} needs ONNX Runtime's CUDA execution provider, which this onnxruntime lacks "
            f"(it has {available_providers()}); install onnxruntime-gpu or set device: cpu"
        )
    index = int(device.partition(":")[2] or 0)
    return [(CUDA_PROVIDER, {"device_id": index}), CPU_PROVIDER]


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, manifest: Manifest, *, device: str = "cpu", threads: int = 0):
        import onnxruntime

        self.manifest = manifest
        self.device = device
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.log_severity_level = 3  # errors only; ORT's optimiser notes would flood the node's log
        providers = _providers(device)
        self._sessions = {}
        for graph in manifest.graphs:
            path = manifest.path(graph)
            if not path.is_file():
                raise ExportFileError(
                    f"ONNX graph {graph!r} is missing: {path} does not exist; delete {manifest.directory} to "
                    "export again"
                )
            try:
                self._sessions[graph] = onnxruntime.InferenceSession(
                    str(path), sess_options=options, providers=providers
                )
            except Exception as error:  # ORT raises its own pybind exception types for unreadable models
                raise ExportFileError(
                    f"ONNX Runtime cannot load {path} ({type(error).__name__}: {error}); the file is corrupt "
                    f"or incomplete; delete {manifest.directory} to export again"
                ) from error
        self._dtypes = {
            graph: {info.name: np.dtype(info.dtype) for info in file.inputs}
            for graph, file in manifest.graphs.items()
        }
        self._providers = next(iter(self._sessions.values())).get_providers() if self._sessions else []
        self._threads = threads

    @property
    def graphs(self) -> tuple[str, ...]:
        return tuple(self._sessions)

    def run(self, graph: str, **inputs: Any) -> dict[str, Any]:
        spec = self.manifest.graphs.get(graph)
        self._check(graph, tuple(info.name for info in spec.inputs) if spec else (), inputs)
        dtypes = self._dtypes[graph]
        feed = {name: np.ascontiguousarray(value, dtype=dtypes[name]) for name, value in inputs.items()}
        try:
            values = self._sessions[graph].run(None, feed)
        except Exception as error:
            shapes = {name: list(array.shape) for name, array in feed.items()}
            raise BackendError(
                f"ONNX Runtime failed to run graph {graph!r} on inputs {shapes}: {error}"
            ) from error
        return {info.name: value for info, value in zip(spec.outputs, values, strict=True)}

    def to_numpy(self, value: Any) -> np.ndarray:
        return np.asarray(value)

    def describe(self) -> str:
        import onnxruntime

        threads = self._threads or "default"
        providers = "+".join(p.removesuffix("ExecutionProvider") for p in self._providers)
        return f"onnxruntime {onnxruntime.__version__} ({providers}, threads={threads}, float32)"
