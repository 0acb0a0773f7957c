"""Which backend runs a job (``backend: auto|torch|onnxruntime|tensorrt``), and creating it.

``auto`` picks, in order: TensorRT when it imports and a CUDA GPU (with torch-CUDA or pycuda buffers) is
present; ONNX Runtime's CUDA provider when the device is CUDA and onnxruntime-gpu is installed; torch on
CUDA; else the better CPU backend (``CPU_BACKEND``: torch, measured beside it). It keeps torch whenever the
configuration asks for something only torch does (a non-float32 dtype, sampled dense decoding); stages whose
``precision`` is not float32 run on torch next to the chosen backend (``fourm_ros.backends.split``). The
choice and its reason are logged as one line and kept as ``Backend.selection_reason`` for diagnostics.
"""

from __future__ import annotations

import gc
import logging
import shutil
from collections.abc import Callable, Mapping

from torch import nn

from fourm_ros.backends.base import Backend, BackendError
from fourm_ros.backends.export import ExportFileError, Manifest, cached_export
from fourm_ros.backends.job import batch_profile, tensorrt_device, torch_stage_graphs
from fourm_ros.backends.split import SplitBackend
from fourm_ros.backends.torch_backend import TorchBackend
from fourm_ros.heap import release_free_heap
from fourm_ros.pipeline.config import PipelineConfig

LOG = logging.getLogger("fourm_ros.backends")
EXPORT_LOG = logging.getLogger("fourm_ros.export")
CPU_BACKEND = "torch"
CPU_REASON = (
    "on a CPU torch takes 0.9-1.2x ONNX Runtime's time on the dense stages and 0.4-1.0x per sequence "
    "token, and needs less memory and no export (python -m fourm_ros.benchmarks.backends)"
)
# Why torch on a CPU (it was ONNX Runtime until torch updated its KV cache in place): fourm_ros.benchmarks
# .backends, 4M-21 B job, 2-core AMD EPYC, torch 2.13 / onnxruntime 1.32, one frame, seconds (torch fp32 /
# onnxruntime fp32): encoder 0.265 / 0.246, dense decoder 0.828 / 0.902, depth x0 1.156 / 1.068, normals x0
# 1.061 / 0.967, segmentation 0.399 / 0.385, sequence cross K/V 0.319 / 0.272, caption step 0.032 / 0.058
# per token. With the default precision the three tokenizer decoders run bf16 on torch either way, so the
# dense path differs only in the encoder and dense decoder (torch 1.09 s, ONNX Runtime 1.15 s). Peak RSS of
# the whole job (fourm_ros.benchmarks.dense --rss): torch 4.8 GiB, ONNX Runtime 5.1 GiB (its per-session
# pre-packed weights); start 10 s against 22 s plus a one-off 45-60 s export of 3.5 GB. On 2026-12-02 (an AMD
# host, where MKL's float32 is slow; torch's float32 linear layers now run on oneDNN, fourm_ros.backends
# .onednn): encoder 0.211 / 0.227, dense decoder 0.840 / 0.819, depth x0 1.248 / 1.060, caption step 0.036 /
# 0.059; later that day on an AVX2-only Zen 3 (no native bf16, so the whole default job is float32):
# encoder 0.405 / 0.339, dense decoder 1.544 / 1.449, depth x0 2.256 / 1.982, normals x0 2.082 / 1.959,
# caption 0.96x ONNX Runtime's time per token (benchmarks.sequences), peak RSS 4.80 / 4.98 GiB (README,
# Performance).


def tensorrt_problem(device: str = "cuda") -> str | None:
    """Why TensorRT cannot run here (None: it can)."""
    from fourm_ros.backends.tensorrt_backend import cuda_device, tensorrt_version_problem

    try:
        import tensorrt
    except ImportError:
        return "tensorrt not importable"
    version_problem = tensorrt_version_problem(getattr(tensorrt, "__version__", "(unknown version)"))
    if version_problem is not None:
        return version_problem
    if cuda_device(int(device.partition(":")[2] or 0)) is None:
        return "no CUDA GPU found"
    return None


def onnxruntime_has_cuda() -> bool:
    from fourm_ros.backends.onnxruntime_backend import CUDA_PROVIDER, available_providers

    return CUDA_PROVIDER in available_providers()


def torch_has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _sampled_dense(config: PipelineConfig) -> bool:
    settings = config.dense_decoding
    return settings.steps > 1 or settings.temperature > 0 or settings.cfg_scale != 1


def choose_backend(config: PipelineConfig) -> tuple[str, str]:
    """(backend name, why) for ``config``; ``auto`` probes what this machine has."""
    if config.backend != "auto":
        return config.backend, "set in the configuration"
    if config.dtype != "float32":
        return "torch", f"dtype {config.dtype} is a torch setting (the exported backends run float32)"
    if _sampled_dense(config):
        return (
            "torch",
            "sampled dense decoding (dense_decoding steps/temperature/cfg_scale) runs on torch only",
        )
    trt_device = tensorrt_device(config)
    problem = tensorrt_problem(trt_device)
    if problem is None:
        return "tensorrt", "TensorRT and a CUDA GPU are present"
    if config.device.startswith("cuda"):
        if onnxruntime_has_cuda():
            return "onnxruntime", f"{problem}; onnxruntime has the CUDA provider"
        if torch_has_cuda():
            return "torch", f"{problem}; onnxruntime has no CUDA provider (install onnxruntime-gpu)"
    return CPU_BACKEND, f"{problem}; {CPU_REASON}"


Stage = Callable[[str], None]
"""Told each start-up stage as it begins (e.g. "exporting ONNX graphs"); the node shows it in /diagnostics."""


def _export(
    config: PipelineConfig, graphs: Mapping[str, nn.Module], model_id: str, on_stage: Stage
) -> Manifest:
    on_stage("exporting ONNX graphs (reused from the cache when unchanged)")
    return cached_export(graphs, config.engines.cache_dir, model=model_id, tasks=config.tasks.enabled)


def release_weights(graphs: Mapping[str, nn.Module]) -> None:
    """Free the torch weights of graphs that an exported backend runs from its own files.

    Once the export is on disk nothing computes with them, and keeping them would hold every weight twice
    (the torch copy and the backend's); the modules stay, with their parameters on the meta device. The
    freed pages go back to the system before the backend allocates its own copies (sessions, engines)."""
    for graph in graphs.values():
        graph.to("meta")
    gc.collect()
    release_free_heap()


def _onnxruntime(
    config: PipelineConfig, graphs: Mapping[str, nn.Module], model_id: str, release: bool, on_stage: Stage
) -> Backend:
    from fourm_ros.backends.onnxruntime_backend import OnnxRuntimeBackend

    manifest = _export(config, graphs, model_id, on_stage)
    if release:
        release_weights(graphs)
    try:
        on_stage("creating ONNX Runtime sessions")
        return OnnxRuntimeBackend(manifest, device=config.device, threads=config.threads)
    except ExportFileError as error:  # intact hashes but unloadable (e.g. written by another onnx version)
        shutil.rmtree(manifest.directory, ignore_errors=True)
        if release:
            raise BackendError(f"{error}; it was deleted, start again to export it anew") from error
        EXPORT_LOG.warning("%s; exporting again", error)
        manifest = _export(config, graphs, model_id, on_stage)
        on_stage("creating ONNX Runtime sessions")
        return OnnxRuntimeBackend(manifest, device=config.device, threads=config.threads)


def _tensorrt(
    config: PipelineConfig,
    graphs: Mapping[str, nn.Module],
    model_id: str,
    max_batch: int,
    release: bool,
    on_stage: Stage,
) -> Backend:
    from fourm_ros.backends.fp16_check import planned_precision
    from fourm_ros.backends.tensorrt_backend import current_engine_digests, engine_directory, tensorrt_backend

    device = tensorrt_device(config)
    problem = tensorrt_problem(device)
    if problem is not None:
        raise BackendError(f"backend tensorrt cannot run here: {problem}; choose onnxruntime or torch")
    manifest = _export(config, graphs, model_id, on_stage)
    if release:
        release_weights(graphs)
    engines = config.engines
    profile = batch_profile(config, max_batch)
    verify = engines.precision == "fp16" and not engines.allow_unverified_fp16
    on_stage("checking the fp16 engines' verification record")
    fp16_engines = (
        current_engine_digests(
            manifest, precision="fp16", workspace_mb=engines.workspace_mb, profile=profile, device=device
        )
        if verify
        else None
    )
    # Decided before anything is built: a start never builds fp16 engines only to refuse them.
    precision, why = planned_precision(engines, engine_directory(manifest), fp16_engines)
    (LOG.warning if precision != engines.precision or "UNVERIFIED" in why else LOG.info)("TensorRT %s", why)
    on_stage(f"building TensorRT {precision} engines (reused from the cache when unchanged)")
    return tensorrt_backend(
        manifest, precision=precision, workspace_mb=engines.workspace_mb, profile=profile, device=device
    )


def create_backend(
    config: PipelineConfig,
    graphs: Mapping[str, nn.Module],
    *,
    model_id: str,
    max_batch: int = 1,
    release_exported: bool = False,
    log: logging.Logger = LOG,
    on_stage: Stage = lambda stage: None,
    precision_note: str = "",
) -> Backend:
    """The backend ``config`` asks for (or ``auto`` picks), running ``graphs``; exports them to ONNX and
    builds TensorRT engines in ``engines.cache_dir`` when needed (reused on the next start).

    ``model_id`` names the checkpoint in the export manifest; ``max_batch`` is the most frames per call
    the TensorRT engines accept; ``release_exported`` frees the torch weights of the graphs an exported
    backend runs once their export is on disk (the modules are unusable afterwards); ``log`` gets the one
    line saying which backend was chosen and why (export and engine-build progress go to the
    ``fourm_ros.export`` and ``fourm_ros.tensorrt`` loggers); ``on_stage`` hears each stage (export,
    sessions, engine builds) as it begins; ``precision_note`` (``weights.precision_note``) ends that line."""
    name, reason = choose_backend(config)
    on_torch = {graph: graphs[graph] for graph in torch_stage_graphs(config, name) if graph in graphs}
    exported = {graph: module for graph, module in graphs.items() if graph not in on_torch}
    if name == "torch":
        on_stage(f"creating the torch backend on {config.device}")
        backend: Backend = TorchBackend(graphs, config.device)
    elif name == "onnxruntime":
        backend = _onnxruntime(config, exported, model_id, release_exported, on_stage)
    elif name == "tensorrt":
        backend = _tensorrt(config, exported, model_id, max_batch, release_exported, on_stage)
    else:
        raise BackendError(f"unknown backend {name!r}; choose auto, torch, onnxruntime or tensorrt")
    if on_torch:
        backend = SplitBackend(backend, TorchBackend(on_torch, config.device))
    backend.selection_reason = f"backend {config.backend} → {backend.describe()}: {reason}"
    if precision_note:
        backend.selection_reason += f"; {precision_note}"
    log.info(backend.selection_reason)
    return backend
