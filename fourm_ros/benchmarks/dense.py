"""The dense lane (encoder + dense tokens + depth + normals + segmentation) per precision, cameras, memory.

    python -m fourm_ros.benchmarks.dense [--size B] [--repeats 3] [--cameras 1 2 3] [--cache-dir DIR]
                                         [--rss torch-fp32 torch-default onnxruntime-fp32 ...]

4M-21 with the official tokenizer decoder architectures and random weights (speed does not depend on the
weights; the errors below are those of random weights too, stated as such). Prints, from one run:

1. the machine's ceilings: dense matmul FLOP/s of float32 and bfloat16, memory bandwidth (reading 1 GiB);
2. each dense stage's median seconds for one frame under each precision variant (runs interleaved, so
   load from other processes hits every variant alike), its FLOP/s against the matmul rate of its dtype,
   and the dense-path total relative to float32;
3. the error of each variant against float32 on the bundled photographs (``fourm_ros.sample``): depth
   after the per-image standardisation (mean and 99th percentile |Δ|, in units of the map's spread),
   normal angle (median and 99th percentile degrees), segmentation label agreement, dense token agreement;
4. the default variant with 1..N cameras in one batch: seconds per frame;
5. the caption step of torch float32: tokens/s and the weight bytes it reads per second against the
   measured memory bandwidth (each step reads the whole decoder once);
6. peak RSS of a whole-job start + one frame per backend, each in its own process (``--rss``).

Variants: ``fp32`` = everything float32; ``default`` = the shipped configuration (``precision: auto``:
bfloat16 tokenizer decoders on a CPU with native bf16); ``bf16`` = everything bfloat16 (dtype too). On a CPU
without native bf16 the default is float32 and only ``fp32`` runs (emulated bf16 would take hours).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from fourm_ros import sample
from fourm_ros.backends.graphs import (
    SEQUENCE_CONTEXT_TOKENS,
    SEQUENCE_TARGETS,
    SequenceEmbed,
    SequenceLogits,
    SequenceStep,
)
from fourm_ros.backends.job import cache_lengths
from fourm_ros.benchmarks.timing import (
    count_flops,
    matmul_flops_per_second,
    peak_rss_gib,
    read_bandwidth,
    resident_gib,
)
from fourm_ros.model import FourM, FourMConfig
from fourm_ros.model.fourm import FIRST_SENTINEL_ID, RGB
from fourm_ros.pipeline.config import PipelineConfig
from fourm_ros.pipeline.pipeline import Pipeline
from fourm_ros.pipeline.preprocess import preprocess
from fourm_ros.pipeline.results import Results
from fourm_ros.pipeline.weights import (
    CPU_BF16_FLAGS,
    PRECISION_TASKS,
    Components,
    cpu_has_native_bfloat16,
    random_components,
    resolve_precision,
)

DENSE_STAGES = ("encoder", "dense_decoder", "depth_decoder", "normals_decoder", "segmentation_decoder")
STAGE_GRAPH = {
    "encoder": "encoder",
    "dense_decoder": "dense_decoder",
    "depth_decoder": "depth_x0",
    "normals_decoder": "normals_x0",
    "segmentation_decoder": "segmentation_labels",
}
RSS_VARIANTS = {
    "torch-fp32": {"backend": "torch", "precision": dict.fromkeys(PRECISION_TASKS, "float32")},
    "torch-default": {"backend": "torch"},
    "onnxruntime-fp32": {"backend": "onnxruntime", "precision": dict.fromkeys(PRECISION_TASKS, "float32")},
    "onnxruntime-default": {"backend": "onnxruntime"},
}


def _dense_config(size: str, **settings: Any) -> PipelineConfig:
    base = {
        "model": f"EPFL-VILAB/4M-21_{size}",
        "random_weights": True,
        "backend": "torch",
        "tasks": {"caption": {"enabled": False}, "human_pose": {"enabled": False}},
    }
    return PipelineConfig.from_dict({**base, **settings})


def _variant(fp32: Components, config: PipelineConfig) -> Components:
    """``fp32``'s weights in the dtypes ``config`` asks for (copies only where the dtype differs)."""
    model_dtype = getattr(torch, config.dtype)
    model = fp32.model if model_dtype == torch.float32 else copy.deepcopy(fp32.model).to(model_dtype)
    decoders = {}
    for task in PRECISION_TASKS:
        dtype = getattr(torch, getattr(config.precision, task))
        decoder = getattr(fp32, task)
        decoders[task] = decoder if dtype == torch.float32 else copy.deepcopy(decoder).to(dtype)
    return dataclasses.replace(fp32, model=model, **decoders)


def _stage_flops(pipeline: Pipeline, frames: Sequence[np.ndarray]) -> dict[str, int]:
    """FLOPs of each graph in one pipeline call, counted around each backend run."""
    counted: dict[str, int] = {}
    run = pipeline.backend.run

    def counting_run(graph: str, **inputs: Any) -> dict[str, Any]:
        result: dict[str, Any] = {}
        counted[graph] = counted.get(graph, 0) + count_flops(lambda: result.update(run(graph, **inputs)))
        return result

    pipeline.backend.run = counting_run  # type: ignore[method-assign]
    try:
        pipeline(frames)
    finally:
        del pipeline.backend.run
    return counted


def _interleaved(calls: dict[str, Callable[[], list[Results]]], repeats: int) -> dict[str, list[dict]]:
    """Each call's per-run stage timings (plus ``total``); calls alternate, after one warm-up each."""
    for call in calls.values():
        call()
    runs: dict[str, list[dict]] = {label: [] for label in calls}
    for _ in range(repeats):
        for label, call in calls.items():
            start = time.perf_counter()
            results = call()
            runs[label].append({**results[0].timings, "total": time.perf_counter() - start})
    return runs


def _median(runs: list[dict], stage: str) -> float:
    return statistics.median(run.get(stage, 0.0) for run in runs)


def _standardised(depth: np.ndarray) -> np.ndarray:
    flat = depth.reshape(len(depth), -1)
    return (flat - flat.mean(1, keepdims=True)) / (flat.std(1, keepdims=True) + 1e-12)


def errors(reference: Sequence[Results], candidate: Sequence[Results]) -> dict[str, float]:
    """How far ``candidate`` is from ``reference`` (same frames): depth, normals, labels, dense tokens."""
    depth = np.abs(
        _standardised(np.stack([r.depth for r in candidate]))
        - _standardised(np.stack([r.depth for r in reference]))
    )
    dots = np.sum(
        np.stack([r.normals for r in candidate]) * np.stack([r.normals for r in reference]), axis=-1
    )
    angles = np.degrees(np.arccos(np.clip(dots, -1.0, 1.0)))
    labels = np.mean(np.stack([r.labels for r in candidate]) == np.stack([r.labels for r in reference]))
    tokens = np.mean(
        [
            np.mean(c.tokens[k] == r.tokens[k])
            for c, r in zip(candidate, reference, strict=True)
            for k in r.tokens
        ]
    )
    return {
        "depth_mean": float(depth.mean()),
        "depth_p99": float(np.percentile(depth, 99)),
        "normals_median_deg": float(np.median(angles)),
        "normals_p99_deg": float(np.percentile(angles, 99)),
        "labels": float(labels),
        "tokens": float(tokens),
    }


def _caption_step_rate(size: str, steps: int = 8) -> tuple[float, float]:
    """(seconds per greedy caption token of torch float32, bytes of weights one step reads), on a model of
    its own: the dense variants' models have no caption head."""
    cache_length = 64
    model = FourM(FourMConfig.preset(size), (RGB, "caption"), ("caption",), seed=0)
    model.eval().requires_grad_(False)
    embed, logits_head = SequenceEmbed(model, "caption"), SequenceLogits(model, "caption")
    step = SequenceStep(model, cache_length)
    cfg = model.config
    with torch.inference_mode():
        cross_kv = torch.randn(cfg.decoder_depth, 2, 1, cfg.num_heads, SEQUENCE_CONTEXT_TOKENS, cfg.head_dim)
        shape = (cfg.decoder_depth, 2, 1, cfg.num_heads, cache_length, cfg.head_dim)

        def run() -> None:
            cache, token = torch.zeros(shape), torch.full((1, 1), FIRST_SENTINEL_ID)
            for index in range(steps):
                position = torch.tensor([index])
                hidden, cache = step(embed(token, position), position, cache, cross_kv)
                token = logits_head(hidden).argmax(-1, keepdim=True)

        run()
        start = time.perf_counter()
        run()
        seconds = (time.perf_counter() - start) / steps
    decoder = [p for name, p in model.named_parameters() if "decoder" in name or "caption" in name.lower()]
    return seconds, float(sum(p.numel() * p.element_size() for p in decoder))


def _touch_sequences(pipeline: Pipeline, rgb: np.ndarray, steps: int = 4) -> None:
    """The sequence context and a few joint steps of every sequence target, and one pose decode: enough to
    touch all their weights (peak memory does not grow with more tokens; random weights never stop early,
    so full runs are slow)."""
    backend, cfg = pipeline.backend, pipeline._model_config
    targets = [SEQUENCE_TARGETS[task] for task in pipeline.sequence_tasks]
    select = np.arange(len(targets), dtype=np.int64)
    cross_kv = backend.run("sequence_cross_kv", rgb=rgb, targets=select)["cross_kv"]
    length = max(cache_lengths(pipeline.config).values())
    shape = (cfg.decoder_depth, 2, len(targets), cfg.num_heads, length, cfg.head_dim)
    cache: Any = np.zeros(shape, np.float32)
    tokens = dict.fromkeys(targets, np.full((1, 1), FIRST_SENTINEL_ID, np.int64))
    for index in range(steps):
        position = np.array([index])
        embedded = [
            backend.run(f"{target}_embed", token=tokens[target], position=position)["embedded"]
            for target in targets
        ]
        embedded = np.concatenate([backend.to_numpy(rows) for rows in embedded])
        inputs = {"position": position, "self_cache": cache, "cross_kv": cross_kv}
        out = backend.run("sequence_step", embedded=embedded, **inputs)
        cache, hidden = out["next_cache"], backend.to_numpy(out["hidden"])
        for row, target in enumerate(targets):
            logits = backend.run(f"{target}_logits", hidden=hidden[row : row + 1])["logits"]
            tokens[target] = backend.to_numpy(logits).argmax(-1).reshape(1, 1).astype(np.int64)
    backend.run("pose_rotations", codes=np.zeros((2, 8), np.int64))


def peak_rss_child(variant: str, size: str, cache_dir: str) -> dict[str, Any]:
    """Start the whole job on one backend, run the dense lane on one frame and a few steps of every
    sequence graph; peak RSS and times (run in its own process)."""
    settings = {
        "model": f"EPFL-VILAB/4M-21_{size}",
        "random_weights": True,
        "engines": {"cache_dir": cache_dir},
        **RSS_VARIANTS[variant],
    }
    config = PipelineConfig.from_dict(settings)
    start = time.perf_counter()
    pipeline = Pipeline.from_config(config)
    started = time.perf_counter() - start
    anonymous_started = resident_gib()[0]
    frame = sample.sample_frames()[0].rgb
    start = time.perf_counter()
    results = pipeline.dense([frame])
    dense = time.perf_counter() - start
    rgb = preprocess([frame])[0]
    _touch_sequences(pipeline, rgb)
    anonymous, file_backed = resident_gib()
    return {
        "start_s": started,
        "dense_s": dense,
        "stages": {stage: results[0].timings.get(stage, 0.0) for stage in DENSE_STAGES},
        "peak_rss_gib": peak_rss_gib(),
        "anon_gib_started": anonymous_started,
        "anon_gib_end": anonymous,
        "file_gib_end": file_backed,
        "describe": pipeline.describe(),
    }


def _peak_rss(variants: Sequence[str], size: str, cache_dir: str) -> None:
    print(
        "\npeak RSS: whole default job (5 tasks), start + one frame, each backend in its own process "
        "(file-backed: mapped ONNX weights, dropped and re-read under memory pressure)"
    )
    for variant in variants:
        command = [sys.executable, "-m", "fourm_ros.benchmarks.dense", "--size", size]
        command += ["--cache-dir", cache_dir, "--rss-child", variant]
        if RSS_VARIANTS[variant]["backend"] != "torch":  # a first start may export: measure the second
            subprocess.run(command, capture_output=True, check=False)
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"  {variant:<20} failed: {done.stderr.strip().splitlines()[-1:]}")
            continue
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"  {variant:<20} {figures['peak_rss_gib']:5.2f} GiB  start {figures['start_s']:6.1f} s  "
            f"dense lane {figures['dense_s']:6.2f} s  anonymous after start "
            f"{figures['anon_gib_started']:.2f} GiB; at the end: anonymous {figures['anon_gib_end']:.2f} "
            f"GiB, file-backed {figures['file_gib_end']:.2f} GiB\n"
            f"  {'':<20} {figures['describe']}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=["B", "L", "XL"], default="B")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cameras", type=int, nargs="*", default=[1, 2, 3])
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: library default)")
    parser.add_argument("--photos", type=int, default=6, help="bundled photographs for the error figures")
    parser.add_argument(
        "--cache-dir", default=os.path.expanduser("~/.cache/fourm_ros/engines"), help="ONNX export cache"
    )
    parser.add_argument("--rss", nargs="*", default=list(RSS_VARIANTS), choices=list(RSS_VARIANTS))
    parser.add_argument("--rss-child", choices=list(RSS_VARIANTS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.rss_child:
        print(json.dumps(peak_rss_child(args.rss_child, args.size, args.cache_dir)))
        return
    load = os.getloadavg()
    print(
        f"4M-21 {args.size} + tokenizer decoders, RANDOM WEIGHTS | torch {torch.__version__} "
        f"({torch.get_num_threads()} threads) | {platform.processor() or platform.machine()} | "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    native_bf16 = cpu_has_native_bfloat16()
    dtypes_measured = (torch.float32, torch.bfloat16) if native_bf16 else (torch.float32,)
    ceilings = {dtype: matmul_flops_per_second(dtype) for dtype in dtypes_measured}
    bandwidth = read_bandwidth()
    print(
        "ceilings: "
        + ", ".join(f"matmul {str(d)[6:]} {rate / 1e9:.0f} GFLOP/s" for d, rate in ceilings.items())
        + f"; memory bandwidth (read) {bandwidth / 1e9:.1f} GB/s"
    )

    fp32_config = _dense_config(args.size, precision=dict.fromkeys(PRECISION_TASKS, "float32"))
    default_config = resolve_precision(_dense_config(args.size), "torch")
    configs = {"fp32": fp32_config}
    if default_config != fp32_config:
        configs["default"] = default_config
    if native_bf16:
        configs["bf16"] = _dense_config(
            args.size, dtype="bfloat16", precision=dict.fromkeys(PRECISION_TASKS, "bfloat16")
        )
    else:
        print(
            "this CPU has no native bfloat16 (none of the /proc/cpuinfo flags "
            f"{', '.join(sorted(CPU_BF16_FLAGS))}): the default precision is float32 everywhere here, and "
            "the bf16 variants are not run (emulated bf16 is slower than float32)"
        )
    fp32 = random_components(fp32_config)
    pipelines = {label: Pipeline(config, _variant(fp32, config)) for label, config in configs.items()}
    dtypes = {
        label: {
            stage: next(pipelines[label].backend._graphs[graph].parameters()).dtype
            for stage, graph in STAGE_GRAPH.items()
        }
        for label in pipelines
    }
    default = pipelines.get("default", pipelines["fp32"])
    print("default precision here: " + default.backend.describe())
    photos = [frame.rgb for frame in sample.sample_frames()[: args.photos]]
    one = [photos[0]]
    flops = _stage_flops(pipelines["fp32"], one)

    runs = _interleaved({label: lambda p=p: p(one) for label, p in pipelines.items()}, args.repeats)
    labels = list(pipelines)
    print(
        f"\ndense lane, one frame: median seconds of {args.repeats} interleaved runs (GFLOP/s, % of matmul)"
    )
    print(f"{'stage':<22}{'GFLOP':>7}" + "".join(f"{label:>24}" for label in labels))
    totals = dict.fromkeys(labels, 0.0)
    for stage in DENSE_STAGES:
        gflop = flops.get(STAGE_GRAPH[stage], 0) / 1e9
        cells = []
        for label in labels:
            seconds = _median(runs[label], stage)
            totals[label] += seconds
            rate = gflop / seconds
            share = rate * 1e9 / ceilings[dtypes[label][stage]]
            cells.append(f"{seconds:8.3f} ({rate:4.0f}, {share:4.0%})")
        print(f"{stage:<22}{gflop:7.0f}" + "".join(f"{cell:>24}" for cell in cells))
    print(f"{'dense path':<29}" + "".join(f"{totals[label]:>24.3f}" for label in labels))
    print(f"{'ratio to fp32':<29}" + "".join(f"{totals[label] / totals['fp32']:>24.2f}" for label in labels))

    reference = None
    if len(labels) > 1:
        print(f"\nerror against fp32 on {len(photos)} bundled photographs (random weights)")
        reference = pipelines["fp32"](photos)
        for label in labels[1:]:
            found = errors(reference, pipelines[label](photos))
            print(
                f"  {label:<8} depth |Δ| mean {found['depth_mean']:.4f} p99 {found['depth_p99']:.4f} (std); "
                f"normals median {found['normals_median_deg']:.2f}° p99 {found['normals_p99_deg']:.2f}°; "
                f"labels {found['labels']:.4f}; dense tokens {found['tokens']:.4f}"
            )

    if args.cameras:
        batches = {n: [photos[i % len(photos)] for i in range(n)] for n in args.cameras}
        camera_runs = _interleaved({n: lambda b=b, p=default: p(b) for n, b in batches.items()}, args.repeats)
        print("\ndense lane with N cameras in one batch (default precision): seconds per call, per frame")
        for n in args.cameras:
            total = _median(camera_runs[n], "total")
            print(f"  {n} camera(s): {total:6.2f} s per call, {total / n:5.2f} s per frame")

    del pipelines, default, fp32, reference
    seconds, weight_bytes = _caption_step_rate(args.size)
    print(
        f"\ncaption step, torch fp32: {1 / seconds:.1f} tokens/s; reads {weight_bytes / 1e9:.2f} GB of "
        f"decoder weights per token = {weight_bytes / seconds / 1e9:.1f} GB/s, "
        f"{weight_bytes / seconds / bandwidth:.0%} of the measured {bandwidth / 1e9:.1f} GB/s"
    )
    if args.rss:
        _peak_rss(args.rss, args.size, args.cache_dir)


if __name__ == "__main__":
    main()
