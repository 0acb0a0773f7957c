"""Time the tokenizer decoders on this machine: full-size modules, random weights, one 224-px image.

    python -m fourm_ros.benchmarks.tokenizers [--repeats N] [--threads N] [--dtypes float32 bfloat16]

Prints, per decoder and dtype, the median wall time of one call, its GFLOP (counted by PyTorch's
FlopCounterMode: 2 per multiply-add) and the achieved GFLOP/s. The depth and normal rows are one DDIM step
(one UNet evaluation, the whole decode at steps=1); an N-step decode costs N times that.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import torch

from fourm_ros.benchmarks.timing import count_flops, median_seconds
from fourm_ros.pipeline.weights import cpu_has_native_bfloat16, randomize
from fourm_ros.tokenizers.divae import DiVAEConfig, DiVAEDecoder
from fourm_ros.tokenizers.human_pose import PoseDecoder, PoseTokenizerConfig
from fourm_ros.tokenizers.loading import official_config
from fourm_ros.tokenizers.semseg import SemsegConfig, SemsegDecoder

TOKEN_GRID = 14  # 224 px / 16 px per token


@dataclass(frozen=True)
class Case:
    """One decoder to time: ``build(dtype)`` returns the call to time (all setup done)."""

    name: str
    build: Callable[[torch.dtype], Callable[[], object]]


def _random_tokens(vocab_size: int) -> torch.Tensor:
    return torch.randint(
        0, vocab_size, (1, TOKEN_GRID, TOKEN_GRID), generator=torch.Generator().manual_seed(0)
    )


def _divae_step(n_channels: int) -> Callable[[torch.dtype], Callable[[], object]]:
    def build(dtype: torch.dtype) -> Callable[[], object]:
        model = DiVAEDecoder(DiVAEConfig(n_channels=n_channels, codebook_size=8192))
        randomize(model, seed=0)
        model = model.to(dtype).eval()
        tokens = _random_tokens(8192)
        return lambda: model.decode(tokens, steps=1, generator=torch.Generator().manual_seed(0))

    return build


def _semseg(dtype: torch.dtype) -> Callable[[], object]:
    model = SemsegDecoder(SemsegConfig(n_labels=134, codebook_size=4096))
    randomize(model, seed=0)
    model = model.to(dtype).eval()
    tokens = _random_tokens(4096)
    return lambda: model.decode(tokens)


def _pose(persons: int) -> Callable[[torch.dtype], Callable[[], object]]:
    def build(dtype: torch.dtype) -> Callable[[], object]:
        model = PoseDecoder(PoseTokenizerConfig.from_dict(official_config("human_pose")))
        model = randomize(model, seed=0).to(dtype).eval()
        codes = torch.randint(0, 1024, (persons, 8), generator=torch.Generator().manual_seed(0))
        return lambda: model.decode(codes)

    return build


def tokenizer_cases() -> list[Case]:
    """Every decoder the benchmark times."""
    return [
        Case("depth DiVAE UNet, 1 step @224", _divae_step(1)),
        Case("normal DiVAE UNet, 1 step @224", _divae_step(3)),
        Case("semseg ViT-B decoder @224", _semseg),
        Case("human-pose decoder, 1 person", _pose(1)),
        Case("human-pose decoder, 7 persons", _pose(7)),
    ]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per decoder and dtype")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument(
        "--dtypes",
        nargs="+",
        default=["float32", "bfloat16"] if cpu_has_native_bfloat16() else ["float32"],
        choices=["float32", "bfloat16"],
        help="default: both where the CPU has native bf16, else float32 (emulated bf16 is slow)",
    )
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch 1, median of {args.repeats}")
    print(f"{'decoder':34} {'dtype':9} {'ms/call':>9} {'GFLOP':>8} {'GFLOP/s':>8}")
    for case in tokenizer_cases():
        for name in args.dtypes:
            try:
                call = case.build(getattr(torch, name))
                gflop = count_flops(call) / 1e9
                seconds = median_seconds(call, args.repeats)
            except (RuntimeError, NotImplementedError) as error:
                print(f"{case.name:34} {name:9} failed: {error}")
                continue
            print(f"{case.name:34} {name:9} {seconds * 1e3:9.1f} {gflop:8.1f} {gflop / seconds:8.1f}")
            del call


if __name__ == "__main__":
    main()
