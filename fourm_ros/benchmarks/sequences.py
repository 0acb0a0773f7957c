"""The sequence lane per token on this machine's CPU: torch vs ONNX Runtime, caption alone and caption +
human poses in one joint step, interleaved in one run.

    python -m fourm_ros.benchmarks.sequences [--size B] [--threads N] [--repeats 3] [--tokens 16]

4M-21 with random weights. Exports only the step graphs (the embeddings, the shared decoder step, the
heads) to a temporary directory; the cross-attention keys/values come from torch. Each run is ``--tokens``
greedy steps without early stop (a fixed amount of work) through the pipeline's own joint loop
(``Pipeline._generate`` semantics: embed per target, one decoder pass for all rows, a head per target).
Prints seconds per token (median over interleaved repeats), the torch / ONNX Runtime ratio, the joint
step against two separate generations, and whether the ids of both backends agree.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from fourm_ros.backends.base import Backend
from fourm_ros.backends.export import export_graphs
from fourm_ros.backends.graphs import build_graphs
from fourm_ros.backends.onnxruntime_backend import OnnxRuntimeBackend
from fourm_ros.backends.torch_backend import TorchBackend
from fourm_ros.model import FourM, FourMConfig
from fourm_ros.model.fourm import FIRST_SENTINEL_ID, RGB

TARGETS = ("caption", "human_poses")
CACHE_LENGTHS = {"caption": 64, "human_poses": 275}
"""The default max_tokens: the shared step's cache holds the longer one."""


def _generate(
    backend: Backend, targets: Sequence[str], cross_kv: np.ndarray, length: int, steps: int
) -> dict:
    """Greedy ids of ``targets`` generated together for ``steps`` tokens (rows target-major)."""
    run, to_numpy = backend.run, backend.to_numpy
    shape = list(cross_kv.shape)
    shape[2], shape[4] = len(targets), length
    cache: Any = np.zeros(shape, np.float32)
    kv = np.ascontiguousarray(np.concatenate([cross_kv] * len(targets), axis=2))
    tokens = {target: np.full((1, 1), FIRST_SENTINEL_ID, np.int64) for target in targets}
    ids: dict[str, list[int]] = {target: [] for target in targets}
    for index in range(steps):
        position = np.array([index])
        embedded = np.concatenate(
            [to_numpy(run(f"{t}_embed", token=tokens[t], position=position)["embedded"]) for t in targets]
        )
        out = run("sequence_step", embedded=embedded, position=position, self_cache=cache, cross_kv=kv)
        cache = out["next_cache"]
        hidden = to_numpy(out["hidden"])
        for row, target in enumerate(targets):
            logits = to_numpy(run(f"{target}_logits", hidden=hidden[row : row + 1])["logits"])
            tokens[target] = logits.argmax(-1).reshape(1, 1).astype(np.int64)
            ids[target].append(int(tokens[target][0, 0]))
    return ids


def _interleaved(runs: dict[str, Callable[[], Any]], repeats: int) -> tuple[dict[str, float], dict[str, Any]]:
    """Median seconds of each run (alternating, after one warm-up each) and each run's last result."""
    results = {label: run() for label, run in runs.items()}
    times: dict[str, list[float]] = {label: [] for label in runs}
    for repeat in range(repeats):
        for label, run in runs.items():
            start = time.perf_counter()
            results[label] = run()
            times[label].append(time.perf_counter() - start)
        # Progress on a loaded machine (and figures if the run is cut short).
        print(f"round {repeat + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()), flush=True)
    return {label: statistics.median(values) for label, values in times.items()}, results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=["B", "L", "XL"], default="B")
    parser.add_argument("--threads", type=int, default=0, help="torch and ONNX Runtime threads (0: default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=16)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import onnxruntime

    print(
        f"4M-21 {args.size}, random weights | torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"onnxruntime {onnxruntime.__version__} | {platform.processor() or platform.machine()}"
    )
    config = FourMConfig.preset(args.size)
    model = FourM(config, (RGB, *TARGETS), TARGETS, seed=0).eval().requires_grad_(False)
    graphs = build_graphs(model, sequence_targets=TARGETS, cache_lengths=CACHE_LENGTHS)
    steps = {name: graph for name, graph in graphs.items() if name.endswith(("_embed", "_step", "_logits"))}
    length = steps["sequence_step"].cache_length
    rgb = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    torch_backend = TorchBackend(graphs)
    select = np.array([0], dtype=np.int64)
    context = torch_backend.run("sequence_cross_kv", rgb=rgb, targets=select)["cross_kv"]
    cross_kv = torch_backend.to_numpy(context)
    with tempfile.TemporaryDirectory(prefix="fourm_ros_bench_") as directory:
        manifest = export_graphs(steps, directory, model=f"4M-21 {args.size} (random weights)")
        backends = {"torch": torch_backend, "onnxruntime": OnnxRuntimeBackend(manifest, threads=args.threads)}
        n = args.tokens
        runs: dict[str, Callable[[], Any]] = {}
        for label, backend in backends.items():
            runs[f"{label} caption"] = lambda b=backend: _generate(b, ["caption"], cross_kv, length, n)
            runs[f"{label} joint"] = lambda b=backend: _generate(b, TARGETS, cross_kv, length, n)
            runs[f"{label} pose"] = lambda b=backend: _generate(b, ["human_poses"], cross_kv, length, n)
        seconds, ids = _interleaved(runs, args.repeats)
    per_token = {label: value / n for label, value in seconds.items()}
    print(
        f"\nseconds per token ({n} greedy tokens, median of {args.repeats} interleaved runs after a warm-up)"
    )
    print(f"{'':14}{'caption':>10}{'pose':>10}{'joint':>10}{'joint / (caption + pose)':>27}")
    for label in backends:
        caption, pose, joint = (per_token[f"{label} {kind}"] for kind in ("caption", "pose", "joint"))
        print(f"{label:14}{caption:10.4f}{pose:10.4f}{joint:10.4f}{joint / (caption + pose):27.2f}")
    ratios = {
        kind: per_token[f"torch {kind}"] / per_token[f"onnxruntime {kind}"] for kind in ("caption", "joint")
    }
    print("torch / onnxruntime per token: " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    same = all(ids[f"torch {kind}"] == ids[f"onnxruntime {kind}"] for kind in ("caption", "joint", "pose"))
    print(f"greedy ids of torch and onnxruntime identical: {same}")


if __name__ == "__main__":
    main()
