"""A configured job as the backends see it: its graphs, their ONNX export and their TensorRT engines.

``export_job`` and ``build_engines`` (and ``fp16_check.check_fp16``) are what the ``fourm-ros export``,
``build-engines`` and ``check-fp16`` commands call; the pipeline's backend factory uses the same pieces, so a
command run ahead of time leaves exactly the files a later start reuses.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

from torch import nn

from fourm_ros.backends.base import BackendError
from fourm_ros.backends.engine_cache import ENGINE_DIR, BatchProfile, engine_record
from fourm_ros.backends.export import Manifest, cached_export, export_graphs
from fourm_ros.backends.graphs import DENSE_TARGETS, SEQUENCE_TARGETS, build_graphs
from fourm_ros.pipeline.config import PipelineConfig
from fourm_ros.pipeline.weights import TOKENIZER_TASKS, Components, load_components
from fourm_ros.tokenizers.pose_sequence import GROUP_SIZES

LOG = logging.getLogger("fourm_ros.backends")
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
    )


def float32(config: PipelineConfig) -> PipelineConfig:
    """``config`` with float32 weights: what the exported backends are built from, whatever ``dtype`` is."""
    return dataclasses.replace(config, dtype="float32")


def batch_profile(config: PipelineConfig, max_batch: int = 1) -> BatchProfile:
    """Frames 1..``max_batch`` per call; persons per frame up to what the pose token budget can hold; the
    enabled sequence targets generated together."""
    tokens = config.tasks.human_pose.max_tokens
    targets = sum(task in config.tasks.enabled for task in SEQUENCE_TARGETS)
    return BatchProfile(
        max_batch=max_batch,
        opt_batch=1,
        max_persons=max(1, -(-tokens // TOKENS_PER_PERSON)),
        opt_persons=1,
        max_targets=max(1, targets),
    )


def tensorrt_device(config: PipelineConfig) -> str:
    """The GPU TensorRT runs on: the configured CUDA device, or the first GPU when the device is cpu (the
    torch modules then stay on the CPU, where only the export uses them)."""
    return config.device if config.device.startswith("cuda") else "cuda"


def export_for(
    config: PipelineConfig, *, components: Components | None = None, log: logging.Logger = LOG
) -> tuple[Components, Manifest]:
    """The job's components (float32, loaded unless given) and its ONNX export from the engine cache."""
    if components is None:
        components = load_components(float32(config))
    manifest = cached_export(
        job_graphs(config, components),
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
    if out_dir is None:
        return export_for(config, log=log)[1]
    components = load_components(float32(config))
    return export_graphs(
        job_graphs(config, components),
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
) -> tuple[Path, dict[str, str]]:
    """``fourm-ros build-engines``: export if needed, then build (or validate) every TensorRT engine of the
    job at ``engines.precision``. Returns the engine directory and graph → engine sha256."""
    from fourm_ros.backends.tensorrt_backend import engine_directory, import_tensorrt, load_engines

    import_tensorrt()  # fail before the long export if TensorRT is missing
    _, manifest = export_for(config, log=log)
    load_engines(
        manifest,
        precision=config.engines.precision,
        workspace_mb=config.engines.workspace_mb,
        profile=batch_profile(config, max_batch),
        device=tensorrt_device(config),
        log=log,
    )
    return engine_directory(manifest), engine_digests(manifest, config.engines.precision)
