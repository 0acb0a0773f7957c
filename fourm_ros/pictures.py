"""Pictures of a frame's :class:`Results` that a person wants to look at, and the raw dump for exact checks.

Maps (depth, normals, segmentation) are drawn on the centre crop the model saw, at the input's own
resolution; skeletons on the whole input image. With random weights every picture carries the warning
banner and the raw dump a ``random_weights`` flag.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from fourm_ros import viz
from fourm_ros.pipeline.results import Results
from fourm_ros.tokenizers.semseg import semseg_classes, semseg_palette
from fourm_ros.tokenizers.skeleton import JOINT_NAMES, PARENTS

DEPTH_LABEL = "relative depth (standardised per image, unitless)"


def _crop(frame: np.ndarray, result: Results) -> np.ndarray:
    crop = result.crop
    return frame[crop.top : crop.top + crop.side, crop.left : crop.left + crop.side]


def _resize(image: np.ndarray, side: int, nearest: bool = False) -> np.ndarray:
    interpolation = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.resize(image, (side, side), interpolation=interpolation)


def result_pictures(frame: np.ndarray, result: Results) -> dict[str, np.ndarray]:
    """Named RGB pictures of every output present in ``result`` (plus the input and a contact sheet)."""
    pictures = {"input": frame}
    side = result.crop.side
    if result.depth is not None:
        lo, hi = viz.robust_range(result.depth)
        colored = viz.colorize_depth(_resize(result.depth, side), lo=lo, hi=hi)
        pictures["depth"] = viz.with_colorbar(colored, lo, hi, DEPTH_LABEL)
    if result.normals is not None:
        pictures["normals"] = _resize(viz.optical_normals_to_rgb(result.normals), side, nearest=True)
    if result.labels is not None:
        names = [entry.name for entry in semseg_classes()]
        pictures["segmentation"] = viz.segmentation_panel(
            _crop(frame, result), result.labels, names, semseg_palette()
        )
    if result.persons is not None:
        valid = [person for person in result.persons if person.valid]
        pictures["human_pose"] = viz.draw_skeletons(
            frame,
            [person.keypoints_2d for person in valid],
            PARENTS,
            sides=viz.sides_from_names(JOINT_NAMES),
            boxes=[person.box_xyxy for person in valid],
        )
    if result.caption is not None:
        pictures["caption"] = viz.draw_caption(frame, result.caption or "(empty caption)")
    if result.random_weights:
        pictures = {name: viz.banner(picture) for name, picture in pictures.items()}
    pictures["sheet"] = viz.contact_sheet(pictures, columns=3)
    return pictures


def raw_dump(result: Results) -> dict[str, np.ndarray]:
    """Arrays for ``np.savez``: tokens per target, maps, caption, persons, crop, random-weights flag."""
    crop = result.crop
    arrays: dict[str, np.ndarray] = {
        "random_weights": np.array(result.random_weights),
        "crop_left_top_side": np.array([crop.left, crop.top, crop.side]),
        "input_height_width": np.array([crop.input_height, crop.input_width]),
    }
    arrays.update({f"tokens/{name}": np.asarray(ids) for name, ids in result.tokens.items()})
    for name in ("depth", "normals", "labels"):
        if getattr(result, name) is not None:
            arrays[name] = getattr(result, name)
    if result.caption is not None:
        arrays["caption"] = np.array(result.caption)
    if result.persons is not None:
        people = result.persons
        arrays["persons/valid"] = np.array([p.valid for p in people], dtype=bool)
        for field in (
            "box_xyxy",
            "keypoints_2d",
            "joints_3d",
            "rotations",
            "global_orient",
            "betas",
            "camera",
        ):
            arrays[f"persons/{field}"] = np.array([getattr(p, field) for p in people], dtype=np.float64)
    return arrays


def write(frame: np.ndarray, result: Results, directory: str | Path) -> list[Path]:
    """Write the pictures (PNG) and ``raw.npz`` of one frame into ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, picture in result_pictures(frame, result).items():
        path = directory / f"{name}.png"
        if not cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path}")
        paths.append(path)
    raw = directory / "raw.npz"
    np.savez_compressed(raw, **raw_dump(result))
    return [*paths, raw]
