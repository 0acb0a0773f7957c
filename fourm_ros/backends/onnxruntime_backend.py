"""The ONNX Runtime backend: one InferenceSession per exported graph, numpy in and out.

Sessions are built once, with every graph optimisation on, on the CPU execution provider or, when the
device is CUDA and onnxruntime-gpu is installed, the CUDA provider (CPU as fallback for unsupported ops).
A missing or unreadable .onnx file is a BackendError that names the file, never a crash deep inside ORT;
``fourm_ros.backends.select`` then exports again.

The graphs share their weights: the export keeps every tensor once in ``weights.bin``
(``fourm_ros.backends.export``), which is mapped read-only once, and every session gets its initializers as
views into that mapping (``SessionOptions.add_initializer``), so a weight held by five graphs occupies
memory once instead of five times, and its pages are the page cache's (shared with other processes
running the same export). On the CPU provider ONNX Runtime still pre-packs the matmul weights of each
session for its kernels; ``prepack=False`` skips that at some speed cost (see the README's Performance).
The mapped pages pre-packing read are dropped from the process after each session is created
(``SharedInitializers.drop_resident_pages``): they stay in the page cache, the RSS keeps what runs read.
On the CPU every session also allocates its activations from one arena for the whole process
(``shared_cpu_arena``) instead of an arena of its own, each kept at its largest run's size.
"""

from __future__ import annotations

import functools
import mmap
from collections.abc import Iterator
from pathlib import Path
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


@functools.cache
def shared_cpu_arena() -> bool:
    """Register one CPU memory arena for every session of this process (once); False where this
    onnxruntime cannot, and each session keeps an arena of its own.

    ONNX Runtime arenas never shrink, and ten sessions (one per graph) each kept the memory of their
    largest run: the B job's peak RSS was 4.98 GiB with them, 4.73 GiB with one (same speed, interleaved
    one-off runs). The arena grows by what is asked rather than by doubling (``kSameAsRequested``)."""
    import onnxruntime

    try:
        memory = onnxruntime.OrtMemoryInfo(
            "Cpu", onnxruntime.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, onnxruntime.OrtMemType.DEFAULT
        )
        same_as_requested = 1
        arena = onnxruntime.OrtArenaCfg(0, same_as_requested, -1, -1)  # 0, -1: the library's defaults
        onnxruntime.create_and_register_allocator(memory, arena)
    except Exception:  # an onnxruntime without these (AttributeError) or refusing them (its pybind errors)
        return False
    return True


def external_initializers(path: Path) -> Iterator[tuple[str, str, int, int, np.dtype, tuple[int, ...]]]:
    """(name, weights file, offset, length, dtype, shape) of every initializer of the graph at ``path``
    whose data lives in an external file (the graph file alone is read, never the weights)."""
    import onnx
    from onnx import helper

    model = onnx.load(str(path), load_external_data=False)
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        where = {entry.key: entry.value for entry in tensor.external_data}
        yield (
            tensor.name,
            where["location"],
            int(where.get("offset", 0)),
            int(where["length"]),
            np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)),
            tuple(tensor.dims),
        )


class SharedInitializers:
    """The export's weight files mapped read-only once, handed to every session as ``OrtValue`` views."""

    def __init__(self, directory: Path):
        self.directory = directory
        self._mappings: dict[str, mmap.mmap] = {}
        self._files: dict[str, np.ndarray] = {}
        self._values: dict[tuple[str, int, str, tuple[int, ...]], Any] = {}

    def _file(self, location: str) -> np.ndarray:
        if location not in self._files:
            with open(self.directory / location, "rb") as handle:
                self._mappings[location] = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
            self._files[location] = np.frombuffer(self._mappings[location], dtype=np.uint8)
        return self._files[location]

    def drop_resident_pages(self) -> None:
        """Unmap the weights' pages from this process (they stay in the page cache, the mapping stays valid).

        ONNX Runtime's CPU kernels pre-pack most weights into copies of their own when a session is
        created and never read those originals again, yet every page the pre-packing read stays counted in
        the process's RSS. Dropping them after each session keeps in the RSS only what the kernels read
        again at run time (the next access re-maps a page from the page cache)."""
        if not hasattr(mmap, "MADV_DONTNEED"):  # not Linux: the pages stay, nothing else changes
            return
        for mapping in self._mappings.values():
            mapping.madvise(mmap.MADV_DONTNEED)

    def add_to(self, options: Any, graph_path: Path) -> int:
        """Give ``options`` every external initializer of the graph at ``graph_path``; returns how many."""
        from onnxruntime import OrtValue

        count = 0
        for name, location, offset, length, dtype, shape in external_initializers(graph_path):
            key = (location, offset, dtype.str, shape)
            value = self._values.get(key)
            if value is None:
                view = self._file(location)[offset : offset + length].view(dtype).reshape(shape)
                value = self._values[key] = OrtValue.ortvalue_from_numpy(view)
            options.add_initializer(name, value)
            count += 1
        return count

    @property
    def distinct(self) -> int:
        """How many distinct weight tensors the sessions were given (each is in memory once)."""
        return len(self._values)

    @property
    def mapped_files(self) -> list[str]:
        return sorted(self._files)


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, manifest: Manifest, *, device: str = "cpu", threads: int = 0, prepack: bool = True):
        import onnxruntime

        self.manifest = manifest
        self.device = device
        providers = _providers(device)
        # Views into the weights file: on the CPU provider the sessions compute on them in place. A GPU
        # provider copies initializers to the device anyway, so there each session reads its own.
        self._weights = SharedInitializers(manifest.directory) if device == "cpu" else None
        self._sessions = {}
        for graph in manifest.graphs:
            path = manifest.path(graph)
            if not path.is_file():
                raise ExportFileError(
                    f"ONNX graph {graph!r} is missing: {path} does not exist; delete {manifest.directory} to "
                    "export again"
                )
            options = onnxruntime.SessionOptions()
            options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
            options.intra_op_num_threads = threads
            options.log_severity_level = 3  # errors only; ORT's optimiser notes would flood the node's log
            # Each session has its own thread pool, whose idle workers spin by default: a token step runs
            # three sessions in turn and the two lanes run at once, so spinning workers of one session
            # took the cores from the next (one-off A/B: a caption step 0.080 → 0.056 s, spinning off).
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            if not prepack:
                options.add_session_config_entry("session.disable_prepacking", "1")
            if device == "cpu" and shared_cpu_arena():
                options.add_session_config_entry("session.use_env_allocators", "1")
            try:
                if self._weights is not None:
                    self._weights.add_to(options, path)
                session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=providers)
                if self._weights is not None:
                    self._weights.drop_resident_pages()
                # The session computes on views into the mapped file; ORT does not keep them alive, so each
                # session holds them itself (a session used after its backend is gone would crash).
                session.shared_weights = self._weights
                self._sessions[graph] = session
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
