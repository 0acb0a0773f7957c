"""Frames to model input exactly as 4M was trained, and the map between input pixels and the 224 grid.

4M-21 saw centre crops of the shorter image side resized to 224×224 with PIL's bicubic filter and ImageNet
mean/std normalisation (ml-4m ``CenterCropImageAugmenter`` + ``RGBTransform``). Every result the pipeline
returns lives on that 224 grid; :class:`CropMap` carries points, boxes and camera intrinsics between the
grid and the caller's pixels so that results line up with the original image and its CameraInfo.

Coordinate conventions: *points* (keypoints, principal points) use the ROS/OpenCV pixel-centre
convention (the centre of pixel column u is at x = u); *boxes* use edge coordinates (a box covering pixel
columns 0..w-1 is [0, w]).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

MODEL_SIZE = 224
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
BICUBIC = Image.Resampling.BICUBIC if hasattr(Image, "Resampling") else Image.BICUBIC
"""PIL's bicubic filter: ``Image.Resampling`` exists from Pillow 9.1; Ubuntu 22.04 / JetPack 6 have 9.0.1."""


@dataclass(frozen=True)
class CropMap:
    """The square centre crop (``left``, ``top``, ``side`` in input pixels) resized to ``size``×``size``."""

    input_height: int
    input_width: int
    left: int
    top: int
    side: int
    size: int = MODEL_SIZE

    @classmethod
    def centre(cls, height: int, width: int, size: int = MODEL_SIZE) -> CropMap:
        """The crop 4M was trained with: the shorter side, centred (offset rounded down)."""
        side = min(height, width)
        return cls(height, width, (width - side) // 2, (height - side) // 2, side, size)

    @property
    def scale(self) -> float:
        """Grid pixels per input pixel."""
        return self.size / self.side

    def points_to_grid(self, points: np.ndarray) -> np.ndarray:
        """Input-pixel points [..., 2] (x, y) → grid points."""
        offset = np.array([self.left, self.top], dtype=np.float64)
        return (np.asarray(points, dtype=np.float64) - offset + 0.5) * self.scale - 0.5

    def points_to_input(self, points: np.ndarray) -> np.ndarray:
        """Grid points [..., 2] (x, y) → input-pixel points."""
        offset = np.array([self.left, self.top], dtype=np.float64)
        return (np.asarray(points, dtype=np.float64) + 0.5) / self.scale - 0.5 + offset

    def boxes_to_input(self, boxes: np.ndarray) -> np.ndarray:
        """Grid boxes [..., 4] (x0, y0, x1, y1) in edge coordinates → input-pixel boxes."""
        offset = np.array([self.left, self.top, self.left, self.top], dtype=np.float64)
        return np.asarray(boxes, dtype=np.float64) / self.scale + offset

    def boxes_to_grid(self, boxes: np.ndarray) -> np.ndarray:
        """Input-pixel boxes [..., 4] (x0, y0, x1, y1) in edge coordinates → grid boxes."""
        offset = np.array([self.left, self.top, self.left, self.top], dtype=np.float64)
        return (np.asarray(boxes, dtype=np.float64) - offset) * self.scale

    def intrinsics_to_grid(self, matrix: np.ndarray) -> np.ndarray:
        """A camera matrix (3×3 K or 3×4 P) of the input image → the same camera seen on the grid.

        Focal lengths scale by ``scale``; the principal point moves like any other point, so the grid
        image and its matrix stay consistent for projection.
        """
        out = np.array(matrix, dtype=np.float64, copy=True)
        if out.shape not in ((3, 3), (3, 4)):
            raise ValueError(f"expected a 3×3 K or 3×4 P camera matrix, got shape {out.shape}")
        principal = self.points_to_grid(out[:2, 2] / out[2, 2]) * out[2, 2]
        out[:2, :] *= self.scale
        out[:2, 2] = principal
        return out


def validate_frame(frame: np.ndarray) -> np.ndarray:
    """Check that ``frame`` is an H×W×3 uint8 RGB image and return it (contiguous)."""
    if not isinstance(frame, np.ndarray):
        raise TypeError(f"a frame must be a numpy array (H×W×3 uint8 RGB), got {type(frame).__name__}")
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"a frame must have shape H×W×3 (RGB), got {frame.shape}")
    if frame.dtype != np.uint8:
        raise ValueError(f"a frame must be uint8 RGB, got dtype {frame.dtype}")
    if frame.shape[0] < 1 or frame.shape[1] < 1:
        raise ValueError(f"a frame must not be empty, got shape {frame.shape}")
    return np.ascontiguousarray(frame)


def crop_and_resize(frame: np.ndarray, crop: CropMap) -> np.ndarray:
    """The crop of ``frame`` resized to the grid with PIL bicubic, as in training (uint8 RGB)."""
    window = frame[crop.top : crop.top + crop.side, crop.left : crop.left + crop.side]
    if crop.side == crop.size:
        return np.ascontiguousarray(window)
    resized = Image.fromarray(window).resize((crop.size, crop.size), resample=BICUBIC)
    return np.asarray(resized)


def normalize(grid_rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB [..., H, W, 3] → float32 [..., 3, H, W] with ImageNet mean/std."""
    scaled = (grid_rgb.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return np.moveaxis(scaled, -1, -3)


def preprocess(
    frames: Sequence[np.ndarray], size: int = MODEL_SIZE
) -> tuple[np.ndarray, list[CropMap], np.ndarray]:
    """Frames (any sizes) → a normalised float32 batch [B, 3, size, size], each frame's :class:`CropMap`, and
    the uint8 crops [B, size, size, 3] the model sees (for overlays)."""
    if len(frames) == 0:
        raise ValueError("preprocess needs at least one frame")
    crops, grids = [], []
    for frame in frames:
        frame = validate_frame(frame)
        crop = CropMap.centre(frame.shape[0], frame.shape[1], size)
        crops.append(crop)
        grids.append(crop_and_resize(frame, crop))
    grid_rgb = np.stack(grids)
    return np.ascontiguousarray(normalize(grid_rgb)), crops, grid_rgb
