"""Backends side by side on this machine's CPU: torch fp32, torch bf16 (where the CPU has native bf16) and
ONNX Runtime fp32, per stage.

    python -m fourm_ros.benchmarks.backends [--size B] [--threads N] [--repeats 3] [--caption-tokens 16]

The job is the default one (depth, normals, segmentation, caption, human pose) on 4M-21 with random weights
(``FourMConfig.preset``) and the official tokenizer decoder architectures (random weights). Prints the
one-off costs of the exported backends (weights fingerprint and file hashing at every start, ONNX export
and ONNX Runtime session creation on a cache miss), then per stage the median seconds of each backend for
one frame, and how closely ONNX Runtime and bf16 follow torch fp32 (dense-token agreement, max |Δ| of the
depth x0). The caption row is seconds per token of the cached autoregressive step (``--caption-tokens``
greedy steps); the human-pose sequence runs the same network and is not timed separately.
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fourm_ros.backends.base import Backend
from fourm_ros.backends.export import export_graphs, weights_fingerprint
from fourm_ros.backends.job import job_graphs
from fourm_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
from fourm_ros.backends.torch_backend import TorchBackend
from fourm_ros.model.fourm import FIRST_SENTINEL_ID
from fourm_ros.pipeline.config import PipelineConfig
from fourm_ros.pipeline.weights import PRECISION_TASKS, cpu_has_native_bfloat16, random_components


def _interleaved_medians(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each run. Runs alternate, so load from other processes on a shared machine hits
    every backend alike; each run is warmed up once first (allocator, oneDNN / ORT kernel selection)."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(repeats):
        for label, run in runs.items():
            start = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - start)
    return {label: statistics.median(values) for label, values in times.items()}


def _timed(run: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    value = run()
    return value, time.perf_counter() - start


def stage_inputs(torch_backend: TorchBackend, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """One frame's inputs of every stage, computed with torch fp32 so all backends see the same values."""
    rng = np.random.default_rng(seed)
    run = torch_backend.run
    rgb = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    context = torch_backend.to_numpy(run("encoder", rgb=rgb)["context"])
    tokens = torch_backend.to_numpy(run("dense_decoder", context=context)["tokens"]).reshape(1, 3, 14, 14)
    targets = np.array([0], dtype=np.int64)  # the caption's context
    cross_kv = torch_backend.to_numpy(run("sequence_cross_kv", rgb=rgb, targets=targets)["cross_kv"])
    return {
        "encoder": {"rgb": rgb},
        "dense_decoder": {"context": context},
        "depth_x0": {
            "tokens": tokens[:, 0],
            "sample": rng.standard_normal((1, 1, 224, 224)).astype(np.float32),
            "timestep": np.array([999]),
        },
        "normals_x0": {
            "tokens": tokens[:, 1],
            "sample": rng.standard_normal((1, 3, 224, 224)).astype(np.float32),
            "timestep": np.array([999]),
        },
        "segmentation_labels": {"tokens": tokens[:, 2]},
        "sequence_cross_kv": {"rgb": rgb, "targets": targets},
        "caption_step": {"cross_kv": cross_kv},
        "pose_rotations": {"codes": rng.integers(0, 1024, (2, 8))},
    }


def _caption(backend: Backend, cross_kv: np.ndarray, cache_shape: tuple[int, ...], steps: int) -> list[int]:
    """Greedy caption ids of ``steps`` cached steps (no early stop: a fixed amount of work)."""
    cache: Any = np.zeros(cache_shape, np.float32)
    token, ids = np.full((1, 1), FIRST_SENTINEL_ID, np.int64), []
    for index in range(steps):
        position = np.array([index])
        embedded = backend.run("caption_embed", token=token, position=position)["embedded"]
        out = backend.run(
            "sequence_step", embedded=embedded, position=position, self_cache=cache, cross_kv=cross_kv
        )
        cache = out["next_cache"]
        logits = backend.run("caption_logits", hidden=out["hidden"])["logits"]
        token = backend.to_numpy(logits).argmax(-1).reshape(1, 1).astype(np.int64)
        ids.append(int(token[0, 0]))
    return ids


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=["B", "L", "XL"], default="B")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch and ONNX Runtime threads (0: library default)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--caption-tokens", type=int, default=16)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import onnxruntime

    print(
        f"4M-21 {args.size} + tokenizer decoders, random weights | torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), onnxruntime {onnxruntime.__version__} | "
        f"{platform.processor() or platform.machine()}"
    )
    config = PipelineConfig.from_dict(
        {
            "model": f"EPFL-VILAB/4M-21_{args.size}",
            "random_weights": True,
            "precision": dict.fromkeys(PRECISION_TASKS, "float32"),  # the float32 job; bf16 copied below
        }
    )
    components = random_components(config)
    graphs = job_graphs(config, components)
    for name in ("human_poses_embed", "human_poses_logits"):  # the caption's with another table: not timed
        del graphs[name]
    model = components.model.config
    cache_shape = (
        model.decoder_depth,
        2,
        1,
        model.num_heads,
        graphs["sequence_step"].cache_length,  # the step graph's cache: the longest max_tokens (poses)
        model.head_dim,
    )
    bf16 = None
    if cpu_has_native_bfloat16():
        bf16 = copy.deepcopy(components)
        for name in ("model", "depth", "normals", "segmentation", "human_pose"):
            setattr(bf16, name, getattr(bf16, name).to(torch.bfloat16))
    else:
        print("this CPU has no native bfloat16: torch bf16 is not run (emulated bf16 is slower than float32)")

    fingerprint, seconds = _timed(lambda: weights_fingerprint(graphs))
    print(f"weights fingerprint (every start of an exported backend): {seconds:.1f} s")
    with tempfile.TemporaryDirectory(prefix="fourm_ros_bench_") as directory:
        manifest, seconds = _timed(
            lambda: export_graphs(graphs, directory, model=components.model_name, weights_sha256=fingerprint)
        )
        size = sum(p.stat().st_size for p in manifest.directory.iterdir())
        print(f"ONNX export of {len(graphs)} graphs (cache miss only): {seconds:.1f} s, {size / 1e9:.2f} GB")
        _, seconds = _timed(manifest.problems)
        print(f"sha256 check of the exported files (every start): {seconds:.1f} s")
        ort, seconds = _timed(lambda: OnnxRuntimeBackend(manifest, threads=args.threads))
        print(f"ONNX Runtime sessions (every start): {seconds:.1f} s")

        backends: dict[str, Backend] = {"torch fp32": TorchBackend(graphs)}
        if bf16 is not None:
            backends["torch bf16"] = TorchBackend(
                {name: graph for name, graph in job_graphs(config, bf16).items() if name in graphs}
            )
        backends["onnxruntime fp32"] = ort
        inputs = stage_inputs(backends["torch fp32"])
        cross_kv = inputs["caption_step"]["cross_kv"]
        stages = [s for s in inputs if s != "caption_step"]
        rows = {
            stage: _interleaved_medians(
                {label: lambda b=b, s=stage: b.run(s, **inputs[s]) for label, b in backends.items()},
                args.repeats,
            )
            for stage in stages
        }
        rows["caption (per token)"] = {}
        outputs: dict[str, dict[str, np.ndarray]] = {}
        for label, backend in backends.items():
            ids, seconds = _timed(lambda b=backend: _caption(b, cross_kv, cache_shape, args.caption_tokens))
            rows["caption (per token)"][label] = seconds / args.caption_tokens
            run = backend.run
            outputs[label] = {
                "tokens": backend.to_numpy(run("dense_decoder", **inputs["dense_decoder"])["tokens"]),
                "depth": backend.to_numpy(run("depth_x0", **inputs["depth_x0"])["x0"]),
                "caption": np.array(ids),
            }
    labels = list(backends)
    print(f"\nmedian seconds for one frame ({args.repeats} interleaved runs after a warm-up)")
    print(f"{'stage':<22}" + "".join(f"{label:>18}" for label in labels))
    for stage, values in rows.items():
        print(f"{stage:<22}" + "".join(f"{values[label]:>18.3f}" for label in labels))
    reference = outputs["torch fp32"]
    print("\nagreement with torch fp32")
    for label in labels[1:]:
        other = outputs[label]
        dense = float(np.mean(other["tokens"] == reference["tokens"]))
        caption = float(np.mean(other["caption"] == reference["caption"]))
        depth = float(np.abs(other["depth"] - reference["depth"]).max())
        print(
            f"{label:<18} dense tokens {dense:.4f}, caption ids {caption:.4f}, depth x0 max |Δ| {depth:.2e}"
        )


if __name__ == "__main__":
    main()
