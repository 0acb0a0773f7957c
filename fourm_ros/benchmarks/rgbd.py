"""Benchmark of the RGB-D stages: metric depth and point cloud per frame, and depth as a 4M-21 input.

    python -m fourm_ros.benchmarks.rgbd [--size B] [--repeats 5] [--threads N]

Part 1 (numpy, one 640×480 synthetic RGB-D frame): sensor depth onto the 224 grid, the robust fit, metric
depth and the semantic point cloud, median ms per frame. Part 2 (4M-21 with random weights, float32): the
depth tokenizer's encoder half, and the encoder and the 3-target dense decoder with 196 rgb tokens vs
196 rgb + 196 depth tokens, measured interleaved (the machine is shared), with their FLOPs (independent of
load); then how many dense argmax tokens stay the same with and without the depth input (random weights:
this checks the code path, not what trained weights would do).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from fourm_ros import sample_rgbd
from fourm_ros.benchmarks.timing import count_flops, median_seconds
from fourm_ros.model import FourM, FourMConfig
from fourm_ros.pipeline import metric_depth, pointcloud
from fourm_ros.pipeline.preprocess import CropMap, preprocess
from fourm_ros.pipeline.weights import randomize
from fourm_ros.tokenizers.depth_encoder import DepthEncoder, DepthEncoderConfig, standardize_depth
from fourm_ros.tokenizers.loading import official_config

DENSE = ("tok_depth@224", "tok_normal@224", "tok_semseg@224")


def _median_ms(call: Callable[[], object], repeats: int) -> float:
    return median_seconds(call, repeats, warmup=1) * 1e3


def _interleaved_ms(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median ms of each call, the calls alternating so that load changes hit all of them alike."""
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1e3 for name, values in times.items()}


def metric_stages(repeats: int) -> None:
    frame = sample_rgbd.render(0)
    crop = CropMap.centre(sample_rgbd.HEIGHT, sample_rgbd.WIDTH)
    k_grid = crop.intrinsics_to_grid(sample_rgbd.K)
    truth, surface, _ = sample_rgbd.ray_cast(k_grid, crop.size, crop.size)
    relative = ((truth - truth.mean()) / truth.std()).astype(np.float32)  # a perfect relative depth
    grid_rgb = preprocess([frame.rgb])[2][0]
    labels = surface.astype(np.uint8)
    grid = metric_depth.sensor_depth_to_grid(metric_depth.sensor_depth_metres(frame.sensor_mm, "16UC1"), crop)
    fit = metric_depth.fit_relative_depth(relative, grid)
    metric = metric_depth.metric_depth(relative, grid, fit)
    stages = {
        "sensor depth → 224 grid (16UC1 640×480)": lambda: metric_depth.sensor_depth_to_grid(
            metric_depth.sensor_depth_metres(frame.sensor_mm, "16UC1"), crop
        ),
        "robust fit (RANSAC + refinement)": lambda: metric_depth.fit_relative_depth(relative, grid),
        "metric depth (holes filled)": lambda: metric_depth.metric_depth(relative, grid, fit),
        "point cloud x,y,z,rgb,label + bytes": lambda: pointcloud.semantic_cloud(
            metric, k_grid, grid_rgb, labels
        ).tobytes(),
    }
    print(f"fit: scale {fit.scale:.4f} (true {truth.std():.4f}), ", end="")
    print(f"shift {fit.shift:.4f} (true {truth.mean():.4f}),")
    print(f"     inliers {fit.inlier_ratio:.1%}, residual {fit.residual:.2%}, {fit.valid_fraction:.1%} valid")
    print(f"\n{'metric stage, per frame':44s} {'ms':>8s}")
    total = 0.0
    for name, call in stages.items():
        ms = _median_ms(call, repeats)
        total += ms
        print(f"{name:44s} {ms:8.2f}")
    print(f"{'total':44s} {total:8.2f}")


def depth_input(size: str, repeats: int) -> None:
    start = time.perf_counter()
    model = FourM(FourMConfig.preset(size), ("rgb@224", "tok_depth@224"), DENSE, seed=0).eval()
    model.requires_grad_(False)
    with torch.device("meta"):
        encoder = DepthEncoder(DepthEncoderConfig.from_json(official_config("depth"), "depth"))
    encoder = randomize(encoder.to_empty(device="cpu"), 0).eval().requires_grad_(False)
    built = time.perf_counter() - start
    print(f"\nbuilt 4M-21 {size} (rgb + tok_depth inputs) and the depth encoder half in {built:.1f} s")

    frame = sample_rgbd.render(0)
    rgb, crops, _ = preprocess([frame.rgb])
    grid = metric_depth.sensor_depth_to_grid(
        metric_depth.sensor_depth_metres(frame.sensor_mm, "16UC1"), crops[0]
    )
    standardized = torch.from_numpy(standardize_depth(grid))[None, None]
    image = torch.from_numpy(rgb)
    with torch.inference_mode():
        ids = encoder.tokenize(standardized)[0].flatten(1)
        tokenize_ms = _median_ms(lambda: encoder.tokenize(standardized), repeats)
        rgb_context = model.encode(image)
        rgbd_context = model.encode(image, {"tok_depth@224": ids})
        times = _interleaved_ms(
            {
                "encoder rgb (196)": lambda: model.encode(image),
                "encoder rgb+depth (392)": lambda: model.encode(image, {"tok_depth@224": ids}),
                "dense decoder, 196 context": lambda: model.decode_dense(rgb_context, DENSE),
                "dense decoder, 392 context": lambda: model.decode_dense(rgbd_context, DENSE),
            },
            repeats,
        )
        flops = {
            "encoder rgb (196)": count_flops(lambda: model.encode(image)),
            "encoder rgb+depth (392)": count_flops(lambda: model.encode(image, {"tok_depth@224": ids})),
            "dense decoder, 196 context": count_flops(lambda: model.decode_dense(rgb_context, DENSE)),
            "dense decoder, 392 context": count_flops(lambda: model.decode_dense(rgbd_context, DENSE)),
        }
        tokenizer_flops = count_flops(lambda: encoder.tokenize(standardized))
        print(f"{'':32s} {'ms':>8s}    {'GFLOP':>7s}")
        for name, ms in times.items():
            print(f"{name:32s} {ms:8.1f} ms {flops[name] / 1e9:7.1f}")
        print(f"{'depth tokenizer':32s} {tokenize_ms:8.1f} ms {tokenizer_flops / 1e9:7.1f}")
        encoder_ratio = times["encoder rgb+depth (392)"] / times["encoder rgb (196)"]
        decoder_ratio = times["dense decoder, 392 context"] / times["dense decoder, 196 context"]
        encoder_flops = flops["encoder rgb+depth (392)"] / flops["encoder rgb (196)"]
        decoder_flops = flops["dense decoder, 392 context"] / flops["dense decoder, 196 context"]
        print(
            f"extra cost of the depth input: encoder ×{encoder_ratio:.2f} in time (×{encoder_flops:.2f} in "
            f"FLOPs), dense decoder ×{decoder_ratio:.2f} (×{decoder_flops:.2f})"
        )
        with_depth = model.decode_dense_tokens(rgbd_context, DENSE)
        without = model.decode_dense_tokens(rgb_context, DENSE)
    agreement = {name: (with_depth[name] == without[name]).float().mean().item() for name in DENSE}
    print(
        "dense argmax tokens unchanged by the depth input (random weights): "
        + ", ".join(f"{name} {value:.1%}" for name, value in agreement.items())
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", choices=["B", "L", "XL"], default="B")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; load average {load}")
    metric_stages(args.repeats)
    depth_input(args.size, args.repeats)
    print(f"load average at the end {', '.join(f'{value:.1f}' for value in os.getloadavg())}")


if __name__ == "__main__":
    main()
