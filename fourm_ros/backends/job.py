"""A configured job as the backends see it: its graphs, their ONNX export and their TensorRT engines.

``export_job`` and ``build_engines`` (and ``fp16_check.check_fp16``) are what the ``fourm-ros export``,
``build-engines`` and ``check-fp16`` commands call; the pipeline's backend factory uses the same pieces, so a
command run ahead of time leaves exactly the files a later start reuses.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from fourm_ros.backends.base import BackendError
from fourm_ros.backends.engine_cache import ENGINE_DIR, BatchProfile, engine_record
from fourm_ros.backends.export import Manifest, cached_export, export_graphs
from fourm_ros.backends.graphs import DENSE_TARGETS, SEQUENCE_TARGETS, build_graphs
from fourm_ros.pipeline.config import PipelineConfig
from fourm_ros.pipeline.weights import (
    PRECISION_TASKS,
    TOKENIZER_TASKS,
    Components,
    load_components,
    stage_dtype,
)
from fourm_ros.tokenizers.pose_sequence import GROUP_SIZES

LOG = logging.getLogger("fourm_ros.backends")
PRECISION_GRAPHS = {"depth": "depth_x0", "normals": "normals_x0", "segmentation": "segmentation_labels"}
"""Task with a ``precision`` setting → the graph that runs its decoder."""
TOKENS_PER_PERSON = 1 + 4 + sum(1 + size for size in GROUP_SIZES.values())
"""``human`` + box + the four groups with their keywords: the fewest tokens one decoded person takes."""


def cache_lengths(config: PipelineConfig) -> dict[str, int]:
    """Sequence modality → its static KV-cache length (the task's max_tokens)."""
    tasks = config.tasks.enabled
    return {
        SEQUENCE_TARGETS[task]: getattr(config.tasks, task).max_tokens
        for task in SEQUENCE_TARGETS
        if task in tasks
    }


def job_graphs(config: PipelineConfig, components: Components) -> dict[str, nn.Module]:
    """The graphs the enabled tasks of ``config`` need, built on ``components``."""
    tasks = config.tasks.enabled
    return build_graphs(
        components.model,
        dense_targets=[DENSE_TARGETS[task] for task in DENSE_TARGETS if task in tasks],
        sequence_targets=[SEQUENCE_TARGETS[task] for task in SEQUENCE_TARGETS if task in tasks],
        cache_lengths=cache_lengths(config),
        **{task: getattr(components, task) if task in tasks else None for task in TOKENIZER_TASKS},
        depth_encoder=components.depth_encoder,
    )


def torch_stage_graphs(config: PipelineConfig, backend: str) -> tuple[str, ...]:
    """Graphs that run on torch although ``backend`` runs the job: stages whose precision is not float32
    (the exported backends compute in float32), so they are neither exported nor built as engines."""
    if backend == "torch":
        return ()
    tasks = config.tasks.enabled
    return tuple(
        PRECISION_GRAPHS[task]
        for task in PRECISION_TASKS
        if task in tasks and stage_dtype(config, task, backend) != torch.float32
    )


def exported_graphs(
    config: PipelineConfig, graphs: Mapping[str, nn.Module], backend: str
) -> dict[str, nn.Module]:
    """The graphs ``backend`` runs from its ONNX export (all but :func:`torch_stage_graphs`)."""
    on_torch = torch_stage_graphs(config, backend)
    return {name: graph for name, graph in graphs.items() if name not in on_torch}


def float32(config: PipelineConfig) -> PipelineConfig:
    """``config`` with float32 weights: what the exported backends are built from, whatever ``dtype`` and
    ``precision`` say (keep the original config to know which stages stay on torch)."""
    every_stage = dict.fromkeys(PRECISION_TASKS, "float32")
    return dataclasses.replace(
        config, dtype="float32", precision=dataclasses.replace(config.precision, **every_stage)
    )


def batch_profile(config: PipelineConfig, max_batch: int = 1) -> BatchProfile:
    """Frames 1..``max_batch`` per call; persons per frame up to what the pose token budget can hold."""
    tokens = config.tasks.human_pose.max_tokens
    return BatchProfile(
        max_batch=max_batch, opt_batch=1, max_persons=max(1, -(-tokens // TOKENS_PER_PERSON)), opt_persons=1
    )


def tensorrt_device(config: PipelineConfig) -> str:
    """The GPU TensorRT runs on: the configured CUDA device, or the first GPU when the device is cpu (the
    torch modules then stay on the CPU, where only the export uses them)."""
    return config.device if config.device.startswith("cuda") else "cuda"


def export_for(
    config: PipelineConfig,
    *,
    backend: str = "tensorrt",
    components: Components | None = None,
    log: logging.Logger = LOG,
) -> tuple[Components, Manifest]:
    """The job's components (float32, loaded unless given) and the ONNX export ``backend`` runs, from the
    engine cache (the same export the pipeline's backend factory makes for that backend)."""
    if components is None:
        components = load_components(float32(config))
    manifest = cached_export(
        exported_graphs(config, job_graphs(config, components), backend),
        config.engines.cache_dir,
        model=components.model_name,
        tasks=config.tasks.enabled,
        log=log,
    )
    return components, manifest


def export_job(
    config: PipelineConfig, out_dir: str | os.PathLike | None = None, *, log: logging.Logger = LOG
) -> Manifest:
    """``fourm-ros export``: export the job's graphs to ONNX, into ``out_dir`` if given (e.g. to copy to
    another machine), else into the engine cache where the pipeline finds it. Weights load in float32."""
    from fourm_ros.backends.select import choose_backend

    backend = choose_backend(config)[0]
    if out_dir is None:
        return export_for(config, backend=backend, log=log)[1]
    components = load_components(float32(config))
    return export_graphs(
        exported_graphs(config, job_graphs(config, components), backend),
        out_dir,
        model=components.model_name,
        tasks=config.tasks.enabled,
        log=log,
    )


def engine_digests(manifest: Manifest, precision: str) -> dict[str, str]:
    """Graph → sha256 of its cached engine of ``precision`` (as recorded when it was built)."""
    directory = manifest.directory / ENGINE_DIR
    digests = {}
    for graph in manifest.graphs:
        record = engine_record(directory, graph, precision)
        if record is None or "engine_sha256" not in record:
            raise BackendError(f"no {precision} engine for {graph} in {directory}; build the engines first")
        digests[graph] = record["engine_sha256"]
    return digests


def build_engines(
    config: PipelineConfig, *, max_batch: int = 1, log: logging.Logger = LOG
) -> tuple[Path, str, str]:
    """``fourm-ros build-engines``: export if needed, then build exactly the engines a start will accept,
    one graph at a time with the torch weights released: ``engines.precision`` fp32 (or fp16 when
    ``allow_unverified_fp16``), else fp32 and fp16 followed by the fp16 check, whose verdict decides which
    of the two a start runs. Returns the engine directory, that precision and why."""
    from fourm_ros.backends.fp16_check import check_fp16, planned_precision
    from fourm_ros.backends.tensorrt_backend import (
        current_engine_digests,
        engine_directory,
        load_engines,
        require_tensorrt,
    )

    device = tensorrt_device(config)
    require_tensorrt(device)  # fail before the long export: no TensorRT, an unsupported one, or no GPU
    components, manifest = export_for(config, log=log)
    del components  # the fp32 torch weights (3.5 GB for the B job) are not needed to build engines
    gc.collect()
    settings = config.engines
    verify = settings.precision == "fp16" and not settings.allow_unverified_fp16
    profile = batch_profile(config, max_batch)
    for precision in ("fp32", "fp16") if verify else (settings.precision,):
        load_engines(
            manifest,
            precision=precision,
            workspace_mb=settings.workspace_mb,
            profile=profile,
            device=device,
            keep=False,
            log=log,
        )
    fp16_engines = None
    if verify:
        check_fp16(config, max_batch=max_batch, log=log)
        fp16_engines = current_engine_digests(
            manifest, precision="fp16", workspace_mb=settings.workspace_mb, profile=profile, device=device
        )
    precision, why = planned_precision(settings, engine_directory(manifest), fp16_engines)
    return engine_directory(manifest), precision, why
