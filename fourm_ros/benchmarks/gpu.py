"""PyTorch on a GPU, per stage and precision: the figures to plan TensorRT engines with where TensorRT is not
installed (the GPU machine this project is sometimes lent has PyTorch with CUDA, not TensorRT).

    python -m fourm_ros.benchmarks.gpu [--size B] [--repeats 10] [--tokens 32] [--device cuda]

The default job (depth, normals, segmentation, caption, human pose) of 4M-21 with random weights and the
official tokenizer decoder architectures, on the torch backend. Prints:

1. each graph's median seconds for one frame in float32, float16 and bfloat16 (each call synchronised), and
   the dense path (encoder + dense tokens + one DDIM step of each UNet + segmentation) per precision;
2. each precision's error against float32 on the same inputs: dense token and segmentation label agreement,
   the largest |Δ| of each x0 relative to float32's largest |x0|, and any non-finite value (float16
   overflows show here first);
3. the peak GPU memory of each precision (weights + one frame of every graph);
4. the sequence step (caption and human poses jointly, one row each) per token: the torch backend's eager
   step (in-place cache) against the exported static-shape step captured once as a CUDA graph and replayed,
   with the largest difference of their hidden states.

``--size tiny --device cpu`` runs every part but the CUDA-graph capture (the static step is called
directly): the smoke run of the tests. ONNX Runtime's CUDA provider is not measured (the GPU machine this is
prepared for has no onnxruntime-gpu and no downloads).
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch

from fourm_ros.backends.job import job_graphs
from fourm_ros.backends.torch_backend import TorchBackend
from fourm_ros.benchmarks.backends import stage_inputs
from fourm_ros.benchmarks.timing import median_seconds
from fourm_ros.pipeline.config import PipelineConfig
from fourm_ros.pipeline.tiny import tiny_random_components
from fourm_ros.pipeline.weights import PRECISION_TASKS, Components, random_components

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
STAGES = ("encoder", "dense_decoder", "depth_x0", "normals_x0", "segmentation_labels", "sequence_cross_kv")
DENSE_PATH = STAGES[:5]
COMPONENTS = ("model", "depth", "normals", "segmentation", "human_pose")


def _components(size: str) -> tuple[PipelineConfig, Components]:
    config = PipelineConfig.from_dict(
        {
            "model": f"EPFL-VILAB/4M-21_{'B' if size == 'tiny' else size}",
            "random_weights": True,
            "precision": dict.fromkeys(PRECISION_TASKS, "float32"),  # cast per variant below
        }
    )
    return config, tiny_random_components() if size == "tiny" else random_components(config)


def _on(components: Components, device: torch.device, dtype: torch.dtype) -> Components:
    moved = copy.deepcopy(components)
    for name in COMPONENTS:
        setattr(moved, name, getattr(moved, name).to(device, dtype))
    return moved


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synchronized_seconds(
    call: Callable[[], object], device: torch.device, repeats: int, warmup: int = 2
) -> float:
    """``timing.median_seconds`` of ``call`` with the device synchronised after each call (kernels run
    asynchronously; the warm-up ends synchronised too, so every timed call starts on an idle device)."""

    def synchronized() -> None:
        call()
        _synchronize(device)

    return median_seconds(synchronized, repeats, warmup)


def _stage_errors(reference: Mapping[str, np.ndarray], other: Mapping[str, np.ndarray]) -> str:
    parts = []
    for name in ("tokens", "labels"):
        parts.append(f"{name} agree {np.mean(other[name] == reference[name]):.4f}")
    for name in ("depth_x0", "normals_x0", "context"):
        scale = float(np.abs(reference[name]).max()) or 1.0
        parts.append(f"{name} max |Δ| {np.abs(other[name] - reference[name]).max() / scale:.1e}")
    bad = sum(int((~np.isfinite(value)).sum()) for value in other.values() if value.dtype.kind == "f")
    parts.append(f"non-finite {bad}")
    return ", ".join(parts)


class StepRunner:
    """The sequence step on ``R`` rows, token after token: eagerly through the backend, or as the static
    step function, captured once as a CUDA graph on a GPU (called directly elsewhere)."""

    def __init__(self, backend: TorchBackend, graphs: Mapping[str, torch.nn.Module], cross_kv: torch.Tensor):
        self.backend, self.device = backend, backend.device
        step = graphs["sequence_step"]
        self.model = step.model
        config, rows = self.model.config, cross_kv.shape[2]
        self.dtype = next(self.model.parameters()).dtype
        shape = (config.decoder_depth, 2, rows, config.num_heads, step.cache_length, config.head_dim)
        self.cross_kv = cross_kv.to(self.device, self.dtype)
        self.cache = torch.zeros(shape, device=self.device, dtype=self.dtype)
        self.embedded = torch.zeros(rows, 1, config.dim, device=self.device, dtype=self.dtype)
        self.position = torch.zeros(1, dtype=torch.long, device=self.device)
        self.graph: Any = None
        self.hidden = self._static_step()
        if self.device.type == "cuda":
            self._capture()

    def _static_step(self) -> torch.Tensor:
        with torch.inference_mode():
            hidden, cache = self.model.decode_step_hidden(
                self.embedded, self.position, self.cache, self.cross_kv
            )
            self.cache.copy_(cache)
        return hidden

    def _capture(self) -> None:
        """Warm-up on a side stream, then one capture (PyTorch's recipe for CUDA graphs)."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                self._static_step()
        torch.cuda.current_stream(self.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.hidden = self._static_step()

    def static(self, embedded: torch.Tensor) -> torch.Tensor:
        """Hidden states of ``len(embedded)`` tokens from an empty cache, one synchronised step each."""
        self.cache.zero_()
        states = []
        for index, token in enumerate(embedded):
            self.position.fill_(index)
            self.embedded.copy_(token)
            if self.graph is not None:
                self.graph.replay()
            else:
                self.hidden = self._static_step()
            states.append(self.hidden.float().cpu())
        return torch.stack(states)

    def eager(self, embedded: torch.Tensor) -> torch.Tensor:
        """The same through the backend, as the pipeline steps (its cache updated in place)."""
        cache: Any = torch.zeros_like(self.cache)
        states = []
        for index, token in enumerate(embedded):
            out = self.backend.run(
                "sequence_step",
                embedded=token,
                position=np.array([index]),
                self_cache=cache,
                cross_kv=self.cross_kv,
            )
            cache = out["next_cache"]
            states.append(out["hidden"].float().cpu())
        return torch.stack(states)


def _measure(
    label: str,
    components: Components,
    config: PipelineConfig,
    inputs: Mapping[str, Mapping[str, Any]],
    cross_kv: torch.Tensor,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One precision's stage timings, outputs, sequence step timings and peak GPU memory."""
    device, dtype = torch.device(args.device), DTYPES[label]
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    graphs = job_graphs(config, _on(components, device, dtype))
    backend = TorchBackend(graphs, device)
    on_device = {
        stage: {name: torch.as_tensor(value).to(device) for name, value in inputs[stage].items()}
        for stage in STAGES
    }
    seconds = {
        stage: synchronized_seconds(lambda s=stage: backend.run(s, **on_device[s]), device, args.repeats)
        for stage in STAGES
    }
    outputs = {
        name: backend.to_numpy(backend.run(stage, **on_device[stage])[output])
        for name, stage, output in (
            ("context", "encoder", "context"),
            ("tokens", "dense_decoder", "tokens"),
            ("depth_x0", "depth_x0", "x0"),
            ("normals_x0", "normals_x0", "x0"),
            ("labels", "segmentation_labels", "labels"),
        )
    }
    runner = StepRunner(backend, graphs, cross_kv)
    generator = torch.Generator().manual_seed(0)
    rows, dim = runner.embedded.shape[0], runner.embedded.shape[2]
    embedded = torch.randn(args.tokens, rows, 1, dim, generator=generator).to(device, runner.dtype)
    step = {
        "eager": synchronized_seconds(lambda: runner.eager(embedded), device, 3, warmup=1) / args.tokens,
        "graph": synchronized_seconds(lambda: runner.static(embedded), device, 3, warmup=1) / args.tokens,
    }
    eager, static = runner.eager(embedded), runner.static(embedded)
    step_error = float((eager - static).abs().max() / eager.abs().max())
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"seconds": seconds, "outputs": outputs, "step": step, "step_error": step_error, "peak": peak}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=["B", "L", "XL", "tiny"], default="B", help="tiny: a smoke run")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--tokens", type=int, default=32, help="sequence steps per timed run")
    parser.add_argument("--dtypes", nargs="+", choices=list(DTYPES), default=list(DTYPES))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"4M-21 {args.size} + tokenizer decoders, RANDOM WEIGHTS | torch {torch.__version__} | {name}")

    config, components = _components(args.size)
    cpu = TorchBackend(job_graphs(config, components))
    inputs = stage_inputs(cpu)
    # Both sequence targets (caption, human poses), one row each, as the pipeline steps them jointly.
    inputs["sequence_cross_kv"]["targets"] = np.arange(2)
    cross_kv = cpu.run("sequence_cross_kv", **inputs["sequence_cross_kv"])["cross_kv"]
    del cpu

    results = {label: _measure(label, components, config, inputs, cross_kv, args) for label in args.dtypes}
    labels = list(results)
    print(f"\nmedian seconds for one frame ({args.repeats} synchronised calls after 2 warm-ups)")
    print(f"{'graph':<22}" + "".join(f"{label:>12}" for label in labels))
    for stage in STAGES:
        print(f"{stage:<22}" + "".join(f"{results[label]['seconds'][stage]:>12.4f}" for label in labels))
    totals = {label: sum(results[label]["seconds"][stage] for stage in DENSE_PATH) for label in labels}
    print(f"{'dense path':<22}" + "".join(f"{totals[label]:>12.4f}" for label in labels))
    if "fp32" in results:
        print(
            f"{'ratio to fp32':<22}" + "".join(f"{totals[label] / totals['fp32']:>12.2f}" for label in labels)
        )
        print("\nerror against fp32 (random weights)")
        for label in labels:
            if label != "fp32":
                print(f"  {label}: " + _stage_errors(results["fp32"]["outputs"], results[label]["outputs"]))
    if device.type == "cuda":
        print("\npeak GPU memory (weights, one frame of every graph, the sequence steps), GiB")
        print("  " + ", ".join(f"{label} {results[label]['peak']:.2f}" for label in labels))
    print(f"\nsequence step, caption + human poses in one pass, seconds per token ({args.tokens} tokens)")
    kind = "CUDA graph" if device.type == "cuda" else "static step (no CUDA graph on a CPU)"
    for label in labels:
        step = results[label]["step"]
        print(
            f"  {label}: eager {step['eager']:.5f}, {kind} {step['graph']:.5f} "
            f"({step['eager'] / step['graph']:.1f}x); hidden states max rel |Δ| "
            f"{results[label]['step_error']:.1e}"
        )


if __name__ == "__main__":
    main()
