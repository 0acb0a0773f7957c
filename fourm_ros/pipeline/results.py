"""Typed results of one frame, in the units and coordinate frames a user of the pipeline needs.

Dense maps live on the 224×224 grid of the centre crop (``crop`` maps it to input pixels); person boxes
and 2D keypoints are given in input pixels, and also on the grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fourm_ros.pipeline.preprocess import CropMap
from fourm_ros.tokenizers import skeleton


@dataclass(frozen=True)
class PersonResult:
    """One person: box and keypoints in input pixels, 3D joints in the camera frame (up to scale).

    ``joints_3d`` are SMPL's 24 joints (x right, y down, z forward) of the weak-perspective camera that
    4M-21 predicts for the 224 crop; their scale and depth are only as good as that camera model.
    When ``valid`` is False, ``reason`` says why and numbers that could not be computed are NaN.
    """

    box_xyxy: np.ndarray
    keypoints_2d: np.ndarray
    box_xyxy_grid: np.ndarray
    keypoints_2d_grid: np.ndarray
    joints_3d: np.ndarray
    rotations: np.ndarray
    global_orient: np.ndarray
    betas: np.ndarray
    camera: np.ndarray
    translation: np.ndarray
    valid: bool
    reason: str | None

    @classmethod
    def from_decoded(cls, person: skeleton.Person, crop: CropMap) -> PersonResult:
        return cls(
            box_xyxy=crop.boxes_to_input(person.box_xyxy),
            keypoints_2d=crop.points_to_input(person.keypoints_2d),
            box_xyxy_grid=person.box_xyxy,
            keypoints_2d_grid=person.keypoints_2d,
            joints_3d=person.joints_3d,
            rotations=person.rotations,
            global_orient=person.global_orient,
            betas=person.betas,
            camera=person.camera,
            translation=person.translation,
            valid=person.valid,
            reason=person.reason,
        )


@dataclass(frozen=True)
class Results:
    """Everything the pipeline computed for one frame. A task that was off (or skipped this frame by
    ``every_n_frames``) leaves its field None; ``persons`` is an empty list when no one was found."""

    crop: CropMap
    grid_rgb: np.ndarray
    """uint8 224×224×3: the centre crop the model saw (for overlays)."""
    random_weights: bool
    """True when the pipeline ran without real weights: every output is meaningless."""
    depth: np.ndarray | None = None
    """float32 224×224 relative depth (standardised, unitless; see fourm_ros.tokenizers.divae)."""
    normals: np.ndarray | None = None
    """float32 224×224×3 unit surface normals in the camera optical frame (x right, y down, z forward; a
    surface facing the camera is (0, 0, -1)); see fourm_ros.tokenizers.divae."""
    labels: np.ndarray | None = None
    """uint8 224×224 class ids: 0 unlabeled, k = COCO panoptic class k-1."""
    persons: list[PersonResult] | None = None
    caption: str | None = None
    tokens: dict[str, np.ndarray] = field(default_factory=dict)
    """Token ids per model target, for exact comparisons (raw dumps)."""
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds per stage for the batch this frame was part of."""
    conditioned_on: tuple[str, ...] = ("rgb",)
    """The inputs 4M-21 saw: ("rgb",) or ("rgb", "depth") (sensor depth as tok_depth@224 tokens)."""
