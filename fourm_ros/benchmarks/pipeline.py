"""Benchmark of the whole pipeline on this machine: ``fourm-ros bench`` (figures printed, never asserted).

    fourm-ros bench --random-weights [--dtype bfloat16] [--frames 3] [--batch 1] [--set key=value ...]

Runs the configured job (default: 4M-21 B and every task; with --random-weights the official architectures
with random weights, since speed does not depend on the weights) on the bundled sample photographs and
prints per-stage latency, frames/s, caption tokens/s, peak memory, and the achieved model FLOP/s next to the
machine's measured matmul FLOP/s.
"""

from __future__ import annotations

import platform
import statistics
import time

import torch

from fourm_ros import sample
from fourm_ros.benchmarks.timing import count_flops, matmul_flops_per_second, peak_rss_gib
from fourm_ros.pipeline.config import PipelineConfig
from fourm_ros.pipeline.pipeline import Pipeline

SEQUENCES = ("caption", "human_poses")


def run(config: PipelineConfig, frames: int = 3, batch: int = 1) -> int:
    if frames < 1 or batch < 1:
        raise ValueError("--frames and --batch must be >= 1")
    start = time.perf_counter()
    pipeline = Pipeline.from_config(config)
    load_s = time.perf_counter() - start
    photos = [item.rgb for item in sample.sample_frames()]
    batches = [[photos[(i * batch + j) % len(photos)] for j in range(batch)] for i in range(frames + 1)]
    pipeline(batches[0])  # warm-up: allocator, oneDNN kernels, lazy initialisation
    stage_times: dict[str, list[float]] = {}
    totals, sequence_tokens, sequence_steps = [], [], []
    for frame_batch in batches[1:]:
        start = time.perf_counter()
        results = pipeline(frame_batch)
        totals.append(time.perf_counter() - start)
        for stage, seconds in results[0].timings.items():
            stage_times.setdefault(stage, []).append(seconds)
        sequences = [r.tokens[name] for r in results[:1] for name in SEQUENCES if name in r.tokens]
        if sequences:  # caption and pose generated together: one decoder pass per step for both
            sequence_tokens.append(sum(int((ids != 0).sum()) for ids in sequences))
            sequence_steps.append(max(len(ids) for ids in sequences))

    print(f"fourm-ros bench: {pipeline.describe()}")
    print(f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}")
    print(f"batch {batch} frame(s) per call, {frames} timed call(s) after 1 warm-up; load {load_s:.1f} s")
    if pipeline.random_weights:
        print("random weights: timings are representative, outputs are not")
    print(f"{'stage':24} {'median ms':>10} {'max ms':>8}")
    for stage, values in stage_times.items():
        print(f"{stage:24} {statistics.median(values) * 1e3:10.1f} {max(values) * 1e3:8.1f}")
    total = statistics.median(totals)
    print(f"{'total per call':24} {total * 1e3:10.1f}")
    print(f"frames/s: {batch / total:.2f}")
    if sequence_steps and "sequences" in stage_times:
        steps = statistics.median(sequence_steps)
        rate = steps / statistics.median(stage_times["sequences"])
        print(
            f"sequences: {statistics.median(sequence_tokens):.0f} tokens per frame (caption + pose) in "
            f"{steps:.0f} joint steps, {rate:.1f} steps/s"
        )
    print(f"peak memory (RSS): {peak_rss_gib():.2f} GiB")
    if pipeline.backend.name == "torch":
        flops = count_flops(lambda: pipeline(batches[1]))
        dtype = getattr(torch, config.dtype)
        ceiling = matmul_flops_per_second(dtype)
        achieved = flops / total
        print(
            f"model: {flops / batch / 1e9:.0f} GFLOP per frame, {achieved / 1e9:.0f} GFLOP/s achieved; "
            f"{config.dtype} matmul on this machine {ceiling / 1e9:.0f} GFLOP/s ({achieved / ceiling:.0%})"
        )
    return 0
