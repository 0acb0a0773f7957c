"""Measurement helpers shared by the benchmark scripts: median wall time, FLOP counts, matmul and memory
ceilings, peak memory."""

from __future__ import annotations

import math
import resource
import statistics
import time
from collections.abc import Callable

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode, conv_flop_count, flop_registry, register_flop_formula

from fourm_ros.backends.onednn import onednn_float32_linear, onednn_has_bfloat16


def median_seconds(call: Callable[[], object], repeats: int = 5, warmup: int = 2) -> float:
    """Median wall time of ``call`` after ``warmup`` calls (allocator, oneDNN kernel builds)."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def count_flops(call: Callable[[], object]) -> int:
    """FLOPs of one call (2 per multiply-add); the math attention backend makes attention countable, and
    the oneDNN layers of the torch backend (``fourm_ros.backends.onednn``) are counted like PyTorch's."""
    _register_onednn_flops()
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        call()
    return counter.get_total_flops()


def _linear_flops(x_shape: list[int], w_shape: list[int], *args: object, **kwargs: object) -> int:
    return 2 * math.prod(x_shape[:-1]) * w_shape[0] * w_shape[1]


def _convolution_flops(
    x_shape: list[int], w_shape: list[int], *args: object, out_shape: list[int], **kwargs: object
) -> int:
    return conv_flop_count(x_shape, w_shape, out_shape)


def _register_onednn_flops() -> None:
    """Teach FlopCounterMode the two oneDNN operators (it counts only the operators it knows)."""
    formulas = {
        torch.ops.mkldnn._linear_pointwise: _linear_flops,
        torch.ops.mkldnn._convolution_pointwise: _convolution_flops,
    }
    for operator, formula in formulas.items():
        if operator not in flop_registry:
            register_flop_formula(operator)(formula)


def matmul_flops_per_second(dtype: torch.dtype, size: int = 2048, repeats: int = 5) -> float:
    """Dense square matmul throughput: the practical ceiling for the transformers' Linear layers, the faster
    of PyTorch's matmul (MKL for float32) and oneDNN's linear kernel (the torch backend's, see
    ``fourm_ros.backends.onednn``; far faster than MKL on AMD processors)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    calls = [lambda: a @ b]
    if onednn_float32_linear() if dtype == torch.float32 else onednn_has_bfloat16():
        calls.append(lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], ""))
    return 2 * size**3 / min(median_seconds(call, repeats) for call in calls)


def read_bandwidth(megabytes: int = 1024, repeats: int = 5) -> float:
    """Bytes per second of reading a large array once (a sum): the ceiling of an autoregressive step, which
    reads every decoder weight once per token and does little arithmetic with each."""
    data = torch.ones(megabytes * 2**20 // 4)
    return data.numel() * 4 / median_seconds(data.sum, repeats, warmup=1)


def _status_gib() -> dict[str, float]:
    """The memory lines of /proc/self/status in GiB (empty where there is no /proc)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            lines = [line.split() for line in status if line.startswith(("Vm", "Rss"))]
    except OSError:
        return {}
    return {fields[0].rstrip(":"): int(fields[1]) / 2**20 for fields in lines if fields[-1] == "kB"}


def peak_rss_gib() -> float:
    """This process's peak resident memory in GiB: the kernel's high-water mark of its own address space.

    Not ``getrusage().ru_maxrss``: Linux carries that across fork and exec, so a child started by a larger
    benchmark process would report its parent's peak."""
    peak = _status_gib().get("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def resident_gib() -> tuple[float, float]:
    """(anonymous, file-backed) resident memory now, in GiB. File-backed pages (an ONNX export's mapped
    weights) count in the RSS but are the page cache's: the kernel drops them under pressure and reads them
    again; anonymous pages (torch's weights, ONNX Runtime's pre-packed copies) stay until freed."""
    status = _status_gib()
    return status.get("RssAnon", float("nan")), status.get("RssFile", float("nan"))
