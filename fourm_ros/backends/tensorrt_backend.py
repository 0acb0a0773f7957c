"""The TensorRT backend (TensorRT 10 Python API): engine building, and inference on one CUDA stream.

Building (``build_engine``): the ONNX parser fills an explicit-batch network; the builder gets the workspace
limit, fp16 or fp32, one optimisation profile for the dynamic axes (frames, persons), a timing cache file
next to the engines and a progress monitor that logs each build phase. In fp16, normalisation layers keep
fp32 compute: LayerNorm after attention overflowing in fp16 is a known TensorRT trap for ViTs (which is also
why the export uses opset >= 17, so LayerNorm arrives as one normalisation layer).

Inference (``TensorRTBackend``): every input and output tensor gets a device buffer of its profile-maximum
size and a pinned host staging buffer, allocated once (at start for the first lane); a call copies host
inputs into them, binds addresses with ``set_tensor_address`` and runs ``execute_async_v3`` on the lane's
stream. Each calling thread is a lane with its own execution contexts, buffers and CUDA stream, so the
node's dense and sequence threads run at once. Outputs
stay on the device (:class:`DeviceArray`) until ``to_numpy``; an output fed back into its graph (the
sequence KV cache, see ``GraphSpec.recurrent``) has two buffers used in turn (ping-pong), so the cache never
leaves the GPU between autoregressive steps. Device memory comes from torch CUDA tensors when torch has CUDA,
else from pycuda.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fourm_ros.backends.base import Backend, BackendError
from fourm_ros.backends.engine_cache import ENGINE_DIR, BatchProfile, EngineCache, EngineKey, Stack
from fourm_ros.backends.export import Manifest, write_atomic

LOG = logging.getLogger("fourm_ros.tensorrt")


SUPPORTED_TENSORRT = (10, 11)
"""Major versions whose Python API this backend uses (11 builds fp32 engines only, see build_engine)."""
SUPPORTED_TENSORRT_TEXT = "TensorRT 10.x or 11.x (JetPack 6.1 / 6.2: 10.3; JetPack 7: 10.13 or newer)"


def tensorrt_version_problem(version: str) -> str | None:
    """Why TensorRT ``version`` cannot be used (None: it can). TensorRT 8.6 (JetPack 6.0) is refused: its
    ONNX parser mishandles opset-17 LayerNormalization in fp16 (NVIDIA/TensorRT#3657) and its API differs
    (implicit-batch networks by default); nothing of this package was ever run on it."""
    major = version.split(".", 1)[0]
    if major.isdigit() and int(major) in SUPPORTED_TENSORRT:
        return None
    return (
        f"TensorRT {version} is not supported (supported: {SUPPORTED_TENSORRT_TEXT}); on JetPack 6.0 "
        "upgrade to JetPack 6.1 or newer, or choose backend onnxruntime or torch"
    )


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, refused (BackendError naming the version) unless it is a supported one."""
    try:
        import tensorrt
    except ImportError as error:
        raise BackendError(
            "TensorRT is not importable: on a Jetson it comes with JetPack (python3-libnvinfer); elsewhere "
            "install the tensorrt wheel matching your CUDA, or choose backend onnxruntime or torch"
        ) from error
    problem = tensorrt_version_problem(getattr(tensorrt, "__version__", "(unknown version)"))
    if problem is not None:
        raise BackendError(problem)
    return tensorrt


def require_tensorrt(device: str = "cuda") -> None:
    """Refuse (BackendError) before any export when TensorRT is missing, unsupported or has no GPU."""
    import_tensorrt()
    if cuda_device(_device_index(device)) is None:
        raise BackendError(f"TensorRT needs a CUDA GPU, but none was found for device {device!r}")


def _device_index(device: str) -> int:
    return int(device.partition(":")[2] or 0)


def cuda_device(index: int = 0) -> tuple[str, str] | None:
    """(name, compute capability "major.minor") of CUDA GPU ``index``, via torch or pycuda; None if absent."""
    try:
        import torch

        if torch.cuda.is_available() and index < torch.cuda.device_count():
            major, minor = torch.cuda.get_device_capability(index)
            return torch.cuda.get_device_name(index), f"{major}.{minor}"
    except ImportError:
        pass
    try:
        import pycuda.driver as cuda

        cuda.init()
        if index < cuda.Device.count():
            device = cuda.Device(index)
            major, minor = device.compute_capability()
            return device.name(), f"{major}.{minor}"
    except Exception:  # pycuda absent, or no driver / no GPU
        pass
    return None


def current_stack(device: str = "cuda") -> Stack:
    """TensorRT version and GPU of this machine (the engine cache key's platform part)."""
    trt = import_tensorrt()
    gpu = cuda_device(_device_index(device))
    if gpu is None:
        raise BackendError(f"TensorRT needs a CUDA GPU, but none was found for device {device!r}")
    return Stack(tensorrt=trt.__version__, gpu=gpu[0], compute_capability=gpu[1])


# ---------------------------------------------------------------------------------------------- building


@functools.cache
def _logger(trt: Any) -> Any:
    """The process's one TensorRT logger (TensorRT keeps the first it is given), forwarding to the
    ``fourm_ros.tensorrt`` Python logger; TensorRT's INFO is chatty, so it goes to DEBUG."""
    severity = trt.ILogger.Severity
    levels = {
        severity.INTERNAL_ERROR: logging.CRITICAL,
        severity.ERROR: logging.ERROR,
        severity.WARNING: logging.WARNING,
        severity.INFO: logging.DEBUG,
        severity.VERBOSE: logging.DEBUG,
    }

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, level: Any, message: str) -> None:
            LOG.log(levels.get(level, logging.INFO), "TensorRT: %s", message)

    return Logger()


def _progress_monitor(trt: Any, graph: str, log: logging.Logger) -> Any | None:
    """Logs every top-level build phase and each tenth of its steps (builds take minutes on a Jetson)."""
    if not hasattr(trt, "IProgressMonitor"):
        return None

    class Progress(trt.IProgressMonitor):
        def __init__(self):
            trt.IProgressMonitor.__init__(self)
            self.steps: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self.steps[phase_name] = num_steps
            if parent_phase is None:
                log.info("building %s: %s (%d steps)", graph, phase_name, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            total = self.steps.get(phase_name, 0)
            if total >= 10 and (step + 1) % (total // 10) == 0:
                log.info("building %s: %s %d/%d", graph, phase_name, step + 1, total)
            return True  # never cancel

        def phase_finish(self, phase_name: str) -> None:
            self.steps.pop(phase_name, None)

    return Progress()


def build_engine(onnx_path: Path, key: EngineKey, timing_cache: Path, *, log: logging.Logger = LOG) -> bytes:
    """Build a serialised engine for ``key`` from ``onnx_path`` (the EngineCache ``build`` callable)."""
    trt = import_tensorrt()
    logger = _logger(trt)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch: the only mode in TensorRT 10 and 11
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, key.workspace_mb << 20)
    if key.precision == "fp16":
        if not hasattr(trt.BuilderFlag, "FP16"):
            raise BackendError(
                f"TensorRT {trt.__version__} builds strongly typed networks only, so an fp16 engine would "
                "need an fp16 ONNX export, which fourm_ros does not make; use engines.precision: fp32 or "
                "TensorRT 10"
            )
        config.set_flag(trt.BuilderFlag.FP16)
        _keep_normalisation_fp32(trt, network)
    else:  # fp32 means fp32: TF32 (on by default on Ampere and newer) would round matmul inputs to 10 bits
        config.clear_flag(trt.BuilderFlag.TF32)
    profile = builder.create_optimization_profile()
    for name, low, opt, high in key.profile:
        profile.set_shape(name, low, opt, high)
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(timing_cache.read_bytes() if timing_cache.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    monitor = _progress_monitor(trt, key.graph, log)
    if monitor is not None:
        config.progress_monitor = monitor
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(
            f"TensorRT failed to build the {key.precision} engine for {key.graph} (see the TensorRT errors "
            f"above). Out of memory on an 8 GB Jetson? Lower engines.workspace_mb (now {key.workspace_mb}), "
            "add swap, close other programs, or build the engines once with `fourm-ros build-engines`"
        )
    write_atomic(timing_cache, bytes(config.get_timing_cache().serialize()))
    return bytes(serialized)


def _keep_normalisation_fp32(trt: Any, network: Any) -> None:
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        if layer.type == trt.LayerType.NORMALIZATION:
            layer.__class__ = trt.INormalizationLayer  # the parser hands out the base ILayer type
            layer.compute_precision = trt.float32


def deserializer() -> Any:
    """The EngineCache ``deserialize`` callable: bytes → ICudaEngine, or None if TensorRT rejects them."""
    trt = import_tensorrt()
    runtime = trt.Runtime(_logger(trt))

    def deserialize(data: bytes) -> Any:
        return runtime.deserialize_cuda_engine(data)

    deserialize.runtime = runtime  # engines must not outlive their runtime
    return deserialize


# ---------------------------------------------------------------------------------------------- memory


@dataclass
class _Buffer:
    """A raw allocation: ``owner`` keeps it alive, ``ptr`` is its address, ``host`` a numpy uint8 view
    (host buffers only)."""

    owner: Any
    ptr: int
    nbytes: int
    host: np.ndarray | None = None


class _TorchMemory:
    """Device/pinned buffers and copies through torch's CUDA allocator and one torch stream."""

    def __init__(self, index: int):
        import torch

        self.torch = torch
        self.device = torch.device("cuda", index)
        torch.cuda.set_device(self.device)  # TensorRT deserialises onto the current device
        self.stream = torch.cuda.Stream(self.device)
        self.handle = self.stream.cuda_stream

    def device_buffer(self, nbytes: int) -> _Buffer:
        tensor = self.torch.empty(max(nbytes, 1), dtype=self.torch.uint8, device=self.device)
        return _Buffer(tensor, tensor.data_ptr(), nbytes)

    def host_buffer(self, nbytes: int) -> _Buffer:
        tensor = self.torch.empty(max(nbytes, 1), dtype=self.torch.uint8, pin_memory=True)
        return _Buffer(tensor, tensor.data_ptr(), nbytes, tensor.numpy())

    def upload(self, device: _Buffer, host: _Buffer, nbytes: int) -> None:
        with self.torch.cuda.stream(self.stream):
            device.owner[:nbytes].copy_(host.owner[:nbytes], non_blocking=True)

    def download(self, host: _Buffer, device: _Buffer, nbytes: int) -> None:
        with self.torch.cuda.stream(self.stream):
            host.owner[:nbytes].copy_(device.owner[:nbytes], non_blocking=True)

    def synchronize(self) -> None:
        self.stream.synchronize()


class _PyCudaMemory:
    """The same with pycuda (when torch has no CUDA, e.g. a CPU-only torch wheel on a Jetson)."""

    def __init__(self, index: int):
        try:
            import pycuda.driver as cuda
        except ImportError as error:
            raise BackendError(
                "the TensorRT backend needs CUDA buffers: install torch with CUDA or pycuda"
            ) from error
        cuda.init()
        self.cuda = cuda
        self.context = cuda.Device(index).retain_primary_context()  # the context TensorRT uses
        self.context.push()
        self.stream = cuda.Stream()
        self.handle = self.stream.handle

    def device_buffer(self, nbytes: int) -> _Buffer:
        allocation = self.cuda.mem_alloc(max(nbytes, 1))
        return _Buffer(allocation, int(allocation), nbytes)

    def host_buffer(self, nbytes: int) -> _Buffer:
        array = self.cuda.pagelocked_empty(max(nbytes, 1), np.uint8)
        return _Buffer(array, array.ctypes.data, nbytes, array)

    def upload(self, device: _Buffer, host: _Buffer, nbytes: int) -> None:
        self.cuda.memcpy_htod_async(device.ptr, host.host[:nbytes], self.stream)

    def download(self, host: _Buffer, device: _Buffer, nbytes: int) -> None:
        self.cuda.memcpy_dtoh_async(host.host[:nbytes], device.ptr, self.stream)

    def synchronize(self) -> None:
        self.stream.synchronize()


def device_memory(device: str) -> _TorchMemory | _PyCudaMemory:
    """torch CUDA tensors if torch has CUDA (no pycuda needed), else pycuda. Makes ``device`` the current
    CUDA device, so create it before TensorRT deserialises engines."""
    index = _device_index(device)
    try:
        import torch

        if torch.cuda.is_available():
            return _TorchMemory(index)
    except ImportError:
        pass
    return _PyCudaMemory(index)


# ---------------------------------------------------------------------------------------------- runtime


class DeviceArray:
    """A graph output that stays on the GPU. Pass it to another ``run`` of the same backend (no copy) or to
    ``to_numpy``. It stays valid until its graph runs again in the same lane (twice more for a recurrent
    output); ``memory`` is the lane's stream it was computed on."""

    def __init__(
        self,
        owner: TensorRTBackend,
        buffer: _Buffer,
        host: _Buffer,
        shape: tuple[int, ...],
        dtype: Any,
        memory: Any,
    ):
        self.owner, self.buffer, self.host, self.memory = owner, buffer, host, memory
        self.shape, self.dtype = shape, np.dtype(dtype)

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


@dataclass
class _Tensor:
    """One I/O tensor of a graph: dtype, maximum shape and its buffers."""

    name: str
    dtype: np.dtype
    max_shape: tuple[int, ...]
    device: list[_Buffer]  # two for a recurrent output (ping-pong), else one
    host: _Buffer


class _Graph:
    def __init__(self, name: str, engine: Any, manifest: Manifest, memory: Any, trt: Any):
        file = manifest.graphs[name]
        self.name = name
        self.engine = engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise BackendError(
                f"TensorRT could not create an execution context for {name} (out of GPU memory?)"
            )
        self.inputs = tuple(info.name for info in file.inputs)
        self.outputs = tuple(info.name for info in file.outputs)
        for tensor in self.inputs:  # the largest shapes, to size the output buffers
            shape = tuple(engine.get_tensor_shape(tensor))
            if -1 in shape:  # a dynamic axis: the profile's maximum
                shape = tuple(engine.get_tensor_profile_shape(tensor, 0)[2])
            self.context.set_input_shape(tensor, shape)
        recurrent = set(file.recurrent)
        self.tensors: dict[str, _Tensor] = {}
        for tensor in (*self.inputs, *self.outputs):
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(tensor)))
            shape = tuple(self.context.get_tensor_shape(tensor))
            nbytes = math.prod(shape) * dtype.itemsize
            copies = 2 if tensor in recurrent else 1
            self.tensors[tensor] = _Tensor(
                tensor,
                dtype,
                shape,
                [memory.device_buffer(nbytes) for _ in range(copies)],
                memory.host_buffer(nbytes),
            )


@dataclass
class _Lane:
    """What one thread runs the engines with: its own stream (``memory``) and, per graph, its own
    execution context and buffers, so two lanes (the node's dense and sequence threads) never share
    state that TensorRT or the staging copies would race on."""

    memory: Any
    graphs: dict[str, _Graph]


class TensorRTBackend(Backend):
    """Runs deserialised engines (one per graph) built from an export's ONNX files.

    Thread-safe: each calling thread is a lane with its own execution contexts, buffers and CUDA stream.
    The first thread to call takes the lane prepared at start (every graph's buffers allocated); another
    thread's lane allocates a graph's context and buffers at its first call of that graph, once."""

    name = "tensorrt"

    def __init__(self, engines: Engines, manifest: Manifest, *, device: str, precision: str):
        self._trt = import_tensorrt()
        self.manifest = manifest
        self.precision = precision
        self.device = device
        self.engines = engines  # keeps the runtime alive as long as the engines
        self._spare_lanes = [
            _Lane(
                engines.memory,
                {
                    name: _Graph(name, engine, manifest, engines.memory, self._trt)
                    for name, engine in engines.engines.items()
                },
            )
        ]
        self._lanes_lock = threading.Lock()
        self._local = threading.local()
        self._gpu = cuda_device(_device_index(device))
        self._version = self._trt.__version__

    @property
    def graphs(self) -> tuple[str, ...]:
        return tuple(self.engines.engines)

    def _lane(self) -> _Lane:
        lane = getattr(self._local, "lane", None)
        if lane is None:
            with self._lanes_lock:
                lane = self._spare_lanes.pop() if self._spare_lanes else _Lane(device_memory(self.device), {})
            self._local.lane = lane
        return lane

    def _graph(self, lane: _Lane, graph: str) -> _Graph | None:
        state = lane.graphs.get(graph)
        if state is None and graph in self.engines.engines:
            state = _Graph(graph, self.engines.engines[graph], self.manifest, lane.memory, self._trt)
            lane.graphs[graph] = state
        return state

    def run(self, graph: str, **inputs: Any) -> dict[str, Any]:
        lane = self._lane()
        state = self._graph(lane, graph)
        self._check(graph, state.inputs if state else (), inputs)
        context, memory = state.context, lane.memory
        # The host staging buffers are reused: earlier uploads must have finished before they are rewritten.
        memory.synchronize()
        bound = set()
        for name in state.inputs:
            tensor, value = state.tensors[name], inputs[name]
            if isinstance(value, DeviceArray):
                if value.owner is not self or value.dtype != tensor.dtype:
                    raise BackendError(
                        f"input {name!r} of {graph!r} is a device array of another backend or dtype "
                        f"({value.dtype}, expected {tensor.dtype})"
                    )
                if value.memory is not memory:  # made by another lane, on another stream
                    value.memory.synchronize()
                shape, address = value.shape, value.buffer.ptr
            else:
                array = np.ascontiguousarray(value, dtype=tensor.dtype)
                shape, address = array.shape, tensor.device[0].ptr
                if array.nbytes > tensor.device[0].nbytes or len(shape) != len(tensor.max_shape):
                    raise BackendError(
                        f"input {name!r} of {graph!r} has shape {list(shape)}; this engine takes at most "
                        f"{list(tensor.max_shape)} (rebuild the engines with a larger max batch)"
                    )
                tensor.host.host[: array.nbytes] = array.reshape(-1).view(np.uint8)
                memory.upload(tensor.device[0], tensor.host, array.nbytes)
            if not context.set_input_shape(name, shape):
                raise BackendError(
                    f"input {name!r} of {graph!r} has shape {list(shape)}, which the engine does not accept "
                    f"(largest: {list(tensor.max_shape)})"
                )
            context.set_tensor_address(name, address)
            bound.add(address)
        outputs = {}
        for name in state.outputs:
            tensor = state.tensors[name]
            buffer = next((b for b in tensor.device if b.ptr not in bound), None)  # ping-pong if recurrent
            if buffer is None:
                raise BackendError(
                    f"output {name!r} of {graph!r} would overwrite one of its inputs; pass a host copy "
                    "(to_numpy) of an earlier output of the same graph instead"
                )
            context.set_tensor_address(name, buffer.ptr)
            shape = tuple(context.get_tensor_shape(name))
            outputs[name] = DeviceArray(self, buffer, tensor.host, shape, tensor.dtype, memory)
        if not context.execute_async_v3(memory.handle):
            raise BackendError(f"TensorRT failed to run graph {graph!r} (see the TensorRT errors above)")
        return outputs

    def to_numpy(self, value: Any) -> np.ndarray:
        if not isinstance(value, DeviceArray):
            return np.asarray(value)
        value.memory.download(value.host, value.buffer, value.nbytes)
        value.memory.synchronize()
        return value.host.host[: value.nbytes].view(value.dtype).reshape(value.shape).copy()

    def describe(self) -> str:
        gpu = f"{self._gpu[0]} (sm {self._gpu[1]})" if self._gpu else self.device
        return f"tensorrt {self._version} on {gpu} ({self.precision})"


def engine_directory(manifest: Manifest) -> Path:
    return manifest.directory / ENGINE_DIR


@dataclass
class Engines:
    """Deserialised engines by graph, their cache keys, and the runtime they must not outlive."""

    engines: dict[str, Any]
    keys: dict[str, EngineKey]
    runtime: Any
    memory: _TorchMemory | _PyCudaMemory
    """The device (made current before deserialising), its stream and allocator."""


def engine_keys(
    manifest: Manifest, stack: Stack, *, precision: str, workspace_mb: int, profile: BatchProfile
) -> dict[str, EngineKey]:
    """Graph → the key its engine must have on this stack."""
    return {
        name: EngineKey.create(graph, stack, precision=precision, profile=profile, workspace_mb=workspace_mb)
        for name, graph in manifest.graphs.items()
    }


def current_engine_digests(
    manifest: Manifest, *, precision: str, workspace_mb: int, profile: BatchProfile, device: str = "cuda"
) -> dict[str, str] | None:
    """Graph → sha256 of each cached engine of ``precision`` when all are current on this stack (a start
    would load them without building), else None. Reads records only: nothing is built or loaded."""
    keys = engine_keys(
        manifest, current_stack(device), precision=precision, workspace_mb=workspace_mb, profile=profile
    )
    cache = EngineCache(engine_directory(manifest), build=build_engine, deserialize=deserializer())
    return cache.current_digests(keys)


def load_engines(
    manifest: Manifest,
    *,
    precision: str,
    workspace_mb: int,
    profile: BatchProfile,
    device: str = "cuda",
    keep: bool = True,
    log: logging.Logger = LOG,
) -> Engines:
    """Every graph's engine, from the cache next to the export, or built (minutes each) and cached, one
    graph at a time. ``keep=False`` (``fourm-ros build-engines``) releases each engine once it is built
    and cached, so an 8 GB Jetson holds one builder at a time and no engine; ``engines`` is then empty."""
    stack = current_stack(device)
    log.info("TensorRT %s on %s (sm %s)", stack.tensorrt, stack.gpu, stack.compute_capability)
    memory = device_memory(device)
    deserialize = deserializer()
    cache = EngineCache(
        engine_directory(manifest),
        build=lambda onnx, key, timing: build_engine(onnx, key, timing, log=log),
        deserialize=deserialize,
        log=log,
    )
    keys = engine_keys(manifest, stack, precision=precision, workspace_mb=workspace_mb, profile=profile)
    engines = {}
    for name, key in keys.items():
        engine = cache.load(key, manifest.path(name))
        if keep:
            engines[name] = engine
        del engine
    return Engines(engines, keys, deserialize.runtime, memory)


def tensorrt_backend(
    manifest: Manifest,
    *,
    precision: str,
    workspace_mb: int,
    profile: BatchProfile,
    device: str = "cuda",
    log: logging.Logger = LOG,
) -> TensorRTBackend:
    """Load or build every engine of ``manifest`` and wrap them in a backend."""
    loaded = load_engines(
        manifest, precision=precision, workspace_mb=workspace_mb, profile=profile, device=device, log=log
    )
    return TensorRTBackend(loaded, manifest, device=device, precision=precision)
