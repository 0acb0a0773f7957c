"""Benchmark of the 4M-21 model stages on this machine's CPU, with random weights.

    python -m fourm_ros.benchmarks.model [--size B] [--dtype fp32|bf16] [--threads N]

Prints, per stage, the median wall time, the model FLOPs (counted with torch's FlopCounterMode, attention
included) and the achieved FLOP/s next to the measured dense-matmul FLOP/s of this machine, so the
efficiency of each stage is visible. Also prints the bf16-vs-fp32 agreement of dense argmax tokens.
"""

from __future__ import annotations

import argparse
import copy
import platform
import time

import torch

from fourm_ros.benchmarks.timing import count_flops, matmul_flops_per_second, median_seconds
from fourm_ros.model import FourM, FourMConfig
from fourm_ros.pipeline.weights import cpu_has_native_bfloat16

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
DENSE = ("tok_depth@224", "tok_normal@224", "tok_semseg@224")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=["B", "L", "XL"], default="B")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--caption-tokens", type=int, default=24)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    threads, cpu = torch.get_num_threads(), platform.processor() or platform.machine()
    print(
        f"4M-21 {args.size} {args.dtype}, random weights | torch {torch.__version__}, {threads} threads {cpu}"
    )
    # Emulated bf16 (a CPU without native bf16) runs the comparison below for hours: skip it there.
    compare = cpu_has_native_bfloat16() or dtype == torch.bfloat16
    measured = DTYPES if compare else {"fp32": torch.float32}
    peak = {name: matmul_flops_per_second(value) for name, value in measured.items()}
    print("matmul 2048^3: " + ", ".join(f"{name} {rate / 1e9:.0f} GFLOP/s" for name, rate in peak.items()))

    start = time.perf_counter()
    reference = FourM(FourMConfig.preset(args.size), seed=0).eval().requires_grad_(False)
    model = reference if dtype == torch.float32 else copy.deepcopy(reference).to(dtype)
    built = time.perf_counter() - start
    print(f"built the default job (rgb -> depth, normal, semseg, caption, human_poses) in {built:.1f} s")

    with torch.inference_mode():
        image = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0)).to(dtype)
        context = model.encode(image)
        n = args.caption_tokens
        stages = {
            "encoder (196 rgb tokens)": (lambda: model.encode(image), None),
            "dense: 1 target": (lambda: model.decode_dense(context, DENSE[:1]), None),
            "dense: 3 targets, one pass": (lambda: model.decode_dense(context, DENSE), None),
            "dense: 3 targets, 3 passes": (lambda: [model.decode_dense(context, [t]) for t in DENSE], None),
            f"caption, KV cache ({n} tok)": (
                lambda: model.generate_sequence(context, "caption", n, stop_ids=()),
                n,
            ),
            f"caption, no cache ({n} tok)": (
                lambda: model.generate_sequence(context, "caption", n, stop_ids=(), use_cache=False),
                n,
            ),
        }
        print(f"\n{'stage':32s} {'ms':>9s} {'GFLOP':>8s} {'GFLOP/s':>8s} {'of matmul':>9s} {'tokens/s':>9s}")
        for name, (run, tokens) in stages.items():
            seconds = median_seconds(run, args.repeats)
            flops = count_flops(run)
            rate = flops / seconds
            per_second = f"{tokens / seconds:9.1f}" if tokens else ""
            print(
                f"{name:32s} {seconds * 1e3:9.1f} {flops / 1e9:8.1f} {rate / 1e9:8.1f} "
                f"{rate / peak[args.dtype]:8.0%} {per_second}"
            )

        if not compare:
            print("\nbf16 vs fp32 agreement not measured: this CPU has no native bfloat16")
            return
        fp32 = reference.decode_dense_tokens(reference.encode(image.float()), DENSE)
        low = copy.deepcopy(reference).to(torch.bfloat16) if dtype == torch.float32 else model
        bf16 = low.decode_dense_tokens(low.encode(image.to(torch.bfloat16)), DENSE)
        agreement = {t: (fp32[t] == bf16[t]).float().mean().item() for t in DENSE}
        print(
            "\nbf16 vs fp32 dense argmax agreement: "
            + ", ".join(f"{t} {v:.1%}" for t, v in agreement.items())
        )
        print(
            "  (random weights give near-uniform logits, so this agreement says nothing about real weights)"
        )


if __name__ == "__main__":
    main()
