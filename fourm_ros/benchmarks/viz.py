"""Per-frame cost of the ``*/color`` pictures (fourm_ros.viz) at the model's 224 grid and at camera sizes.

Run: ``python -m fourm_ros.benchmarks.viz`` — prints the median milliseconds per call.
"""

from __future__ import annotations

import numpy as np

from fourm_ros import viz
from fourm_ros.benchmarks.timing import median_seconds

SIZES = ((224, 224), (480, 640), (720, 1280), (1080, 1920))
SKELETON_PARENTS = [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]


def main() -> None:
    rng = np.random.default_rng(0)
    depth = rng.random((224, 224), dtype=np.float32)
    normals = rng.normal(size=(224, 224, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=2, keepdims=True)
    labels = rng.integers(0, 134, size=(224, 224)).astype(np.uint8)
    labels.sort(axis=1)  # large regions, like a real segmentation
    palette = rng.integers(0, 256, size=(134, 3)).astype(np.uint8)
    names = [f"class {i}" for i in range(134)]
    print(f"{'picture':<34}" + "".join(f"{f'{w}x{h}':>12}" for h, w in SIZES) + "   (median ms)")
    rows: dict[str, list[float]] = {}
    for height, width in SIZES:
        image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
        depth_full = np.resize(depth, (height, width)).astype(np.float32)
        normals_full = np.resize(normals, (height, width, 3)).astype(np.float32)
        people = [rng.uniform(0, [width, height], size=(24, 2)) for _ in range(3)]
        cases = {
            "colorize_depth (at frame size)": lambda d=depth_full: viz.colorize_depth(d),
            "normals_to_rgb (at frame size)": lambda n=normals_full: viz.normals_to_rgb(n),
            "segmentation_overlay (224 labels)": lambda i=image: viz.segmentation_overlay(i, labels, palette),
            "segmentation_panel (224 labels)": lambda i=image: viz.segmentation_panel(
                i, labels, names, palette
            ),
            "draw_skeletons (3 persons, 24 j.)": lambda i=image, p=people: viz.draw_skeletons(
                i, p, SKELETON_PARENTS
            ),
            "draw_caption": lambda i=image: viz.draw_caption(i, "a person standing next to a table " * 2),
            "banner": lambda i=image: viz.banner(i),
        }
        for name, call in cases.items():
            rows.setdefault(name, []).append(1e3 * median_seconds(call, repeats=30, warmup=1))
    for name, values in rows.items():
        print(f"{name:<34}" + "".join(f"{v:>12.2f}" for v in values))


if __name__ == "__main__":
    main()
