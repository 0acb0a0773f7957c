"""The TensorRT backend's buffer handling, without TensorRT: fake engines that run the exported ONNX files
with ONNX Runtime straight from the backend's "device" buffers (host memory here).

What this covers: buffers sized once from the profile maxima, inputs staged and uploaded, smaller batches
in larger buffers, device arrays passed between calls without copies, the KV cache ping-pong, shape errors.
What it cannot cover: TensorRT itself (see test_tensorrt_backend.py, which needs a GPU)."""

import ctypes
import math
import threading

import numpy as np
import pytest
import torch

from fourm_ros.backends import tensorrt_backend
from fourm_ros.backends.base import BackendError
from fourm_ros.backends.engine_cache import BatchProfile, profile_shapes
from fourm_ros.backends.tensorrt_backend import DeviceArray, Engines, TensorRTBackend, _Buffer
from fourm_ros.pipeline.pipeline import Pipeline
from fourm_ros.sample import sample_frames

PROFILE = BatchProfile(max_batch=3, max_persons=4)


class HostMemory:
    """'Device' buffers in host memory, addressed by pointer like CUDA memory; copies are memmoves."""

    handle = 0
    allocations = 0

    def device_buffer(self, nbytes):
        HostMemory.allocations += 1
        array = np.zeros(max(nbytes, 1), np.uint8)
        return _Buffer(array, array.ctypes.data, nbytes)

    def host_buffer(self, nbytes):
        array = np.zeros(max(nbytes, 1), np.uint8)
        return _Buffer(array, array.ctypes.data, nbytes, array)

    def upload(self, device, host, nbytes):
        ctypes.memmove(device.ptr, host.ptr, nbytes)

    def download(self, host, device, nbytes):
        ctypes.memmove(host.ptr, device.ptr, nbytes)

    def synchronize(self):
        pass


class FakeTensorRT:
    __version__ = "fake"

    @staticmethod
    def nptype(dtype):
        return dtype


class FakeContext:
    def __init__(self, engine):
        self.engine, self.shapes, self.addresses = engine, {}, {}

    def set_input_shape(self, name, shape):
        static = self.engine.get_tensor_shape(name)
        low, _, high = self.engine.profile.get(name, (static, static, static))
        if len(shape) != len(low) or not all(a <= s <= b for a, s, b in zip(low, shape, high, strict=True)):
            return False
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name):
        if name in self.shapes:
            return self.shapes[name]
        axes = {}  # axis name → size, read off the input shapes
        for info in self.engine.graph.inputs:
            for symbol, size in zip(info.shape, self.shapes[info.name], strict=True):
                if isinstance(symbol, str):
                    axes[symbol] = size
        if "targets" in axes:  # the sequence context's rows: frames x targets (TensorRT infers it)
            axes["rows"] = axes["batch"] * axes["targets"]
        info = next(i for i in self.engine.graph.outputs if i.name == name)
        return tuple(axes[s] if isinstance(s, str) else s for s in info.shape)

    def set_tensor_address(self, name, address):
        self.addresses[name] = address
        return True

    def _view(self, name, dtype):
        shape = self.get_tensor_shape(name)
        nbytes = math.prod(shape) * np.dtype(dtype).itemsize
        raw = (ctypes.c_uint8 * nbytes).from_address(self.addresses[name])
        return np.frombuffer(raw, dtype=dtype).reshape(shape)

    def execute_async_v3(self, stream):
        graph = self.engine.graph
        feed = {i.name: self._view(i.name, i.dtype).copy() for i in graph.inputs}
        for info, value in zip(graph.outputs, self.engine.session.run(None, feed), strict=True):
            self._view(info.name, info.dtype)[...] = value
        return True


class FakeEngine:
    def __init__(self, graph, session):
        self.graph, self.session = graph, session
        self.profile = {name: (low, opt, high) for name, low, opt, high in profile_shapes(graph, PROFILE)}

    def create_execution_context(self):
        return FakeContext(self)

    def _info(self, name):
        return next(i for i in (*self.graph.inputs, *self.graph.outputs) if i.name == name)

    def get_tensor_shape(self, name):
        return tuple(-1 if isinstance(s, str) else s for s in self._info(name).shape)

    def get_tensor_profile_shape(self, name, index):
        return self.profile[name]

    def get_tensor_dtype(self, name):
        return np.dtype(self._info(name).dtype)


@pytest.fixture(scope="module")
def backend(tiny_export):
    from fourm_ros.backends.onnxruntime_backend import OnnxRuntimeBackend

    sessions = OnnxRuntimeBackend(tiny_export, threads=1)._sessions
    engines = {name: FakeEngine(graph, sessions[name]) for name, graph in tiny_export.graphs.items()}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tensorrt_backend, "import_tensorrt", lambda: FakeTensorRT)
        patch.setattr(tensorrt_backend, "cuda_device", lambda index=0: None)
        return TensorRTBackend(
            Engines(engines, {}, None, HostMemory()), tiny_export, device="cuda", precision="fp32"
        )


def test_the_pipeline_through_the_buffers_equals_torch(tiny, tiny_config, backend):
    frames = [frame.rgb for frame in sample_frames()[:2]]
    allocations = HostMemory.allocations
    expected = Pipeline(tiny_config, tiny)(frames)
    actual = Pipeline(tiny_config, tiny, backend)(frames)  # 2 frames in buffers sized for 3
    assert HostMemory.allocations == allocations  # nothing allocated per frame
    for want, got in zip(expected, actual, strict=True):
        for name, tokens in want.tokens.items():
            np.testing.assert_array_equal(got.tokens[name], tokens, err_msg=name)
        np.testing.assert_allclose(got.depth, want.depth, atol=1e-4)
        np.testing.assert_allclose(got.normals, want.normals, atol=1e-4)
        assert got.caption == want.caption


def test_the_kv_cache_alternates_between_two_device_buffers(backend, tiny_graphs):
    step = tiny_graphs["sequence_step"]
    inputs = {
        name: value.numpy() for name, value in zip(step.spec.inputs, step.example_inputs(2), strict=True)
    }
    inputs["embedded"] = np.random.default_rng(0).standard_normal(inputs["embedded"].shape).astype(np.float32)
    addresses = []
    cache = inputs["self_cache"]
    for position in range(4):
        out = backend.run(
            "sequence_step", **{**inputs, "position": np.array([position]), "self_cache": cache}
        )
        cache = out["next_cache"]
        assert isinstance(cache, DeviceArray) and cache.shape == inputs["self_cache"].shape
        addresses.append(cache.buffer.ptr)
    assert addresses[0] == addresses[2] != addresses[1] == addresses[3]
    assert np.count_nonzero(backend.to_numpy(cache)[:, :, :, :, :4]) > 0  # four positions written
    assert not backend.to_numpy(cache)[:, :, :, :, 4:].any()


def test_outputs_feed_other_graphs_without_a_copy(backend, tiny_graphs):
    rgb = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    targets = np.array([1, 0])
    kv = backend.run("sequence_cross_kv", rgb=rgb, targets=targets)["cross_kv"]
    out = backend.run(
        "sequence_step",
        embedded=np.ones((2, 1, 32), np.float32),
        position=np.array([0]),
        self_cache=np.zeros((1, 2, 2, 2, 120, 16), np.float32),
        cross_kv=kv,
    )
    with torch.no_grad():
        want_kv = tiny_graphs["sequence_cross_kv"](torch.from_numpy(rgb), torch.from_numpy(targets))
        want = tiny_graphs["sequence_step"](
            torch.ones(2, 1, 32), torch.tensor([0]), torch.zeros(1, 2, 2, 2, 120, 16), want_kv
        )
    np.testing.assert_allclose(backend.to_numpy(kv), want_kv.numpy(), atol=1e-4)
    np.testing.assert_allclose(backend.to_numpy(out["hidden"]), want[0].numpy(), atol=1e-4)


def test_shapes_outside_the_profile_are_clear_errors(backend):
    with pytest.raises(
        BackendError, match=r"shape \[4, 3, 224, 224\]; this engine takes at most \[3, 3, 224"
    ):
        backend.run("encoder", rgb=np.zeros((4, 3, 224, 224), np.float32))
    with pytest.raises(BackendError, match=r"shape \[0, 8\], which the engine does not accept"):
        backend.run("pose_rotations", codes=np.zeros((0, 8), np.int64))
    with pytest.raises(BackendError, match="takes inputs"):
        backend.run("encoder", image=np.zeros((1, 3, 224, 224), np.float32))


def test_two_lanes_run_at_once_each_with_its_own_contexts(tiny, tiny_config, backend, monkeypatch):
    """The node's dense and sequence threads call one backend concurrently: each thread gets its own
    execution contexts, buffers and stream (here a second HostMemory), and both compute what torch does."""
    monkeypatch.setattr(tensorrt_backend, "device_memory", lambda device: HostMemory())
    frames = [frame.rgb for frame in sample_frames()[:1]]
    expected = Pipeline(tiny_config, tiny)(frames)[0]
    pipeline = Pipeline(tiny_config, tiny, backend)
    results, contexts = {}, {}

    def lane(name, call):
        for _ in range(2):
            results[name] = call(frames)[0]
        contexts[name] = backend._lane()

    threads = [
        threading.Thread(target=lane, args=("dense", pipeline.dense)),
        threading.Thread(target=lane, args=("sequences", pipeline.sequences)),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert contexts["dense"] is not contexts["sequences"]
    assert contexts["dense"].memory is not contexts["sequences"].memory
    np.testing.assert_array_equal(results["dense"].tokens["tok_depth@224"], expected.tokens["tok_depth@224"])
    np.testing.assert_allclose(results["dense"].depth, expected.depth, atol=1e-4)
    np.testing.assert_array_equal(results["sequences"].tokens["caption"], expected.tokens["caption"])
    np.testing.assert_array_equal(results["sequences"].tokens["human_poses"], expected.tokens["human_poses"])
