"""Metric depth from a depth sensor: sensor depth on the 224 grid, a robust fit of 4M-21's relative depth.

4M-21's depth output (``fourm_ros.tokenizers.divae.relative_depth``) is standardised per image: an
increasing affine map of the training label, which is a z-buffer depth (larger = farther). So within one
image ``metric_z ≈ scale · relative + shift`` with ``scale > 0``, and the fit is done **in depth space**, not
inverse depth: an affine model is exact in the space the labels were standardised in, while in inverse depth
(disparity) the same relation is not affine and a two-parameter fit would bend the geometry. Sensor noise
grows with range (stereo and ToF: roughly ∝ z²), so inliers are judged on the *relative* residual
``|model - sensor| / sensor`` and the refinement weighs each pixel by 1/sensor: a metre of error at 8 m
counts as much as 12 cm at 1 m.

Fit: RANSAC on two-pixel hypotheses (deterministic seed) finds the consensus, then weighted least squares
on the consensus set, re-selected until stable (locally optimised RANSAC), refines scale and shift; pixels
outside the set have no influence at all, unlike a Huber loss, whose influence is bounded but not zero.
The fit is *refused* (no metric output, a reason string) when there are too few valid sensor pixels, the
relative depth is flat, the scale comes out non-positive (sensor and model disagree on near and far), the
inlier ratio is too low or the inliers' residual too large.

Sensor depth (REP 117/118): 16UC1 in millimetres (0 = no return) or 32FC1 in metres (0, NaN, ±inf = no
return). It must be registered to the colour camera (same size and pixels), so the colour frame's
:class:`CropMap` takes it onto the grid. Resampling never interpolates across holes or depth edges: each
grid cell takes the **minimum** valid sensor depth in its footprint (the nearest surface, the safe choice
next to an obstacle); a cell whose footprint holds no valid pixel is a hole (NaN).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fourm_ros.pipeline.preprocess import CropMap

SENSOR_ENCODINGS = ("16UC1", "mono16", "32FC1")
"""Depth image encodings read: 16-bit millimetres (``mono16`` is the same bytes) or float metres."""


def sensor_depth_metres(depth: np.ndarray, encoding: str) -> np.ndarray:
    """A sensor depth image → float32 metres with NaN wherever the sensor had no return (REP 118)."""
    if encoding not in SENSOR_ENCODINGS:
        raise ValueError(
            f"depth encoding {encoding!r} is not a depth image; expected one of "
            f"{', '.join(SENSOR_ENCODINGS)} (16UC1 millimetres or 32FC1 metres, REP 118)"
        )
    depth = np.asarray(depth)
    if depth.ndim != 2 or depth.shape[0] < 1 or depth.shape[1] < 1:
        raise ValueError(f"a depth image must be H×W with one channel, got shape {depth.shape}")
    if encoding == "32FC1":
        if depth.dtype != np.float32:
            raise ValueError(f"32FC1 depth must be float32 metres, got dtype {depth.dtype}")
        metres = depth.astype(np.float32, copy=True)
    else:
        if depth.dtype != np.uint16:
            raise ValueError(f"{encoding} depth must be uint16 millimetres, got dtype {depth.dtype}")
        metres = depth.astype(np.float32) * np.float32(0.001)
    metres[~(np.isfinite(metres) & (metres > 0))] = np.nan
    return metres


def _footprints(crop: CropMap, axis_length: int, offset: int) -> np.ndarray:
    """Input indices [size, k] of the pixels each grid cell covers along one axis (edge-aligned footprints;
    rows shorter than k repeat their last index, which leaves a minimum unchanged)."""
    cells = np.arange(crop.size, dtype=np.float64)
    tiny = 1e-9
    first = np.floor(cells / crop.scale + tiny).astype(np.int64)
    last = np.maximum(first, np.ceil((cells + 1) / crop.scale - tiny).astype(np.int64) - 1)
    width = int((last - first).max()) + 1
    index = np.minimum(first[:, None] + np.arange(width)[None, :], last[:, None]) + offset
    return np.clip(index, 0, axis_length - 1)


def sensor_depth_to_grid(depth_m: np.ndarray, crop: CropMap) -> np.ndarray:
    """Registered sensor depth in metres (NaN = hole) → float32 [size, size] on the colour frame's grid.

    Each grid cell covers the input pixels its edges span (``crop.scale``, pixel-edge footprints, as
    :meth:`CropMap.boxes_to_input`); it takes their minimum valid depth, NaN when none is valid.
    """
    if depth_m.shape != (crop.input_height, crop.input_width):
        raise ValueError(
            f"depth image is {depth_m.shape[1]}×{depth_m.shape[0]} but the colour frame is "
            f"{crop.input_width}×{crop.input_height}; the depth must be registered to the colour camera "
            "(e.g. the driver's aligned_depth_to_color topic)"
        )
    filled = np.where(np.isnan(depth_m), np.inf, depth_m).astype(np.float32)
    rows = _footprints(crop, crop.input_height, crop.top)
    columns = _footprints(crop, crop.input_width, crop.left)
    by_row = filled[rows].min(axis=1)  # [size, W]
    grid = by_row[:, columns].min(axis=2)  # [size, size]
    grid[np.isinf(grid)] = np.nan
    return grid


@dataclass(frozen=True)
class FitSettings:
    """Thresholds of the robust fit; the defaults suit consumer RGB-D cameras at 0.3-10 m."""

    inlier_relative_error: float = 0.05
    """A pixel is an inlier when |model - sensor| ≤ this × sensor depth."""
    min_valid_fraction: float = 0.05
    """Refuse when fewer grid pixels than this have a sensor depth."""
    min_valid_pixels: int = 200
    min_inlier_ratio: float = 0.5
    """Refuse when fewer valid pixels than this fraction agree with the fitted model."""
    max_relative_residual: float = 0.05
    """Refuse when the inliers' median relative residual exceeds this."""
    ransac_iterations: int = 200
    ransac_sample: int = 4096
    """Pixels RANSAC scores hypotheses on (a fixed random subset; all pixels are used to refine)."""
    refine_iterations: int = 10
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("inlier_relative_error", "max_relative_residual"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        for name in ("min_valid_fraction", "min_inlier_ratio"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        for name in ("min_valid_pixels", "ransac_iterations", "ransac_sample", "refine_iterations"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be ≥ 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class DepthFit:
    """``metric ≈ scale · relative + shift`` for one frame, with how well the sensor supports it.

    ``trusted`` False means no metric output for this frame; ``reason`` says why (a short, countable
    phrase). Scale and shift are NaN when no model could be fitted at all.
    """

    scale: float
    shift: float
    inlier_ratio: float
    """Fraction of valid sensor pixels within ``inlier_relative_error`` of the model."""
    residual: float
    """Median relative residual |model - sensor| / sensor over the inliers (0.01 = 1 %)."""
    valid_pixels: int
    valid_fraction: float
    trusted: bool
    reason: str | None = None


def _weighted_line(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[float, float]:
    """Weighted least squares y ≈ a·x + b."""
    sw = w.sum()
    mx, my = (w * x).sum() / sw, (w * y).sum() / sw
    dx = x - mx
    var = (w * dx * dx).sum()
    if var <= 0:
        return float("nan"), float("nan")
    a = (w * dx * (y - my)).sum() / var
    return float(a), float(my - a * mx)


def fit_relative_depth(
    relative: np.ndarray, sensor_grid: np.ndarray, settings: FitSettings = FitSettings()
) -> DepthFit:
    """Fit scale and shift taking 4M-21's relative depth to the sensor's metres (see module doc)."""
    if relative.shape != sensor_grid.shape:
        raise ValueError(
            f"relative depth {relative.shape} and sensor grid {sensor_grid.shape} must have the same shape"
        )
    valid = np.isfinite(sensor_grid) & (sensor_grid > 0) & np.isfinite(relative)
    count = int(valid.sum())
    fraction = count / valid.size
    nan = float("nan")

    def refuse(
        reason: str, scale: float = nan, shift: float = nan, ratio: float = nan, residual: float = nan
    ):
        return DepthFit(scale, shift, ratio, residual, count, fraction, False, reason)

    if count < settings.min_valid_pixels or fraction < settings.min_valid_fraction:
        return refuse(
            f"too few valid sensor pixels ({count}, {fraction:.1%} of the grid; need "
            f"{settings.min_valid_pixels} and {settings.min_valid_fraction:.0%})"
        )
    x = relative[valid].astype(np.float64)
    y = sensor_grid[valid].astype(np.float64)
    if np.ptp(x) <= 1e-6:
        return refuse("relative depth is flat over the valid sensor pixels")

    rng = np.random.default_rng(settings.seed)
    subset = rng.choice(count, size=min(count, settings.ransac_sample), replace=False)
    xs, ys = x[subset], y[subset]
    pairs = rng.integers(0, xs.size, size=(settings.ransac_iterations, 2))
    x0, x1, y0, y1 = xs[pairs[:, 0]], xs[pairs[:, 1]], ys[pairs[:, 0]], ys[pairs[:, 1]]
    usable = np.abs(x1 - x0) > 1e-6
    if not usable.any():
        return refuse("relative depth is flat over the valid sensor pixels")
    a = (y1[usable] - y0[usable]) / (x1[usable] - x0[usable])
    b = y0[usable] - a * x0[usable]
    relative_error = np.abs(a[:, None] * xs[None, :] + b[:, None] - ys[None, :]) / ys[None, :]
    votes = (relative_error <= settings.inlier_relative_error).sum(axis=1)
    best = int(np.argmax(np.where(a > 0, votes, -1)))
    scale, shift = float(a[best]), float(b[best])

    # Refinement: weighted least squares (weights 1/sensor², i.e. on the relative residual) over the
    # consensus set, re-selected until it no longer changes (locally optimised RANSAC).
    inliers = np.abs(scale * x + shift - y) / y <= settings.inlier_relative_error
    for _ in range(settings.refine_iterations):
        if inliers.sum() < 2:
            break
        new_scale, new_shift = _weighted_line(x[inliers], y[inliers], 1.0 / (y[inliers] ** 2))
        if not np.isfinite(new_scale):
            break
        scale, shift = new_scale, new_shift
        selected = np.abs(scale * x + shift - y) / y <= settings.inlier_relative_error
        if np.array_equal(selected, inliers):
            break
        inliers = selected

    r = np.abs(scale * x + shift - y) / y
    inliers = r <= settings.inlier_relative_error
    ratio = float(inliers.mean())
    residual = float(np.median(r[inliers])) if inliers.any() else nan
    if not scale > 0:
        return refuse(
            "sensor and model disagree on near and far (fitted scale ≤ 0)", scale, shift, ratio, residual
        )
    if ratio < settings.min_inlier_ratio:
        return refuse(
            f"inlier ratio {ratio:.1%} below {settings.min_inlier_ratio:.0%}", scale, shift, ratio, residual
        )
    if not residual <= settings.max_relative_residual:
        return refuse(
            f"inlier residual {residual:.1%} above {settings.max_relative_residual:.0%}",
            scale,
            shift,
            ratio,
            residual,
        )
    return DepthFit(scale, shift, ratio, residual, count, fraction, True)


def metric_depth(relative: np.ndarray, sensor_grid: np.ndarray, fit: DepthFit) -> np.ndarray:
    """float32 metres on the grid: the sensor where it measured, the fitted model in its holes.

    Model values that come out ≤ 0 (behind the camera) are unknown: NaN (REP 118). The caller must only
    use this for a trusted fit.
    """
    if not fit.trusted:
        raise ValueError(f"no metric depth from an untrusted fit ({fit.reason})")
    model = (fit.scale * relative.astype(np.float64) + fit.shift).astype(np.float32)
    model[~(model > 0)] = np.nan
    measured = np.isfinite(sensor_grid) & (sensor_grid > 0)
    return np.where(measured, sensor_grid, model).astype(np.float32)


@dataclass(frozen=True)
class UpToScale:
    """Depth without a sensor: ``z = scale · relative + shift`` from user-given numbers, so metres are only
    as right as those numbers ("up to scale"). ``shift`` is the depth of the image's mean depth (relative
    depth is standardised), ``scale`` the metres per standard deviation of depth."""

    scale: float
    shift: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise ValueError(f"depth_scale must be a positive number of metres, got {self.scale}")
        if not (np.isfinite(self.shift) and self.shift > 0):
            raise ValueError(f"depth_shift must be a positive number of metres, got {self.shift}")

    def depth(self, relative: np.ndarray) -> np.ndarray:
        """float32 depth (NaN where ≤ 0) of the standardised relative depth."""
        z = (self.scale * relative.astype(np.float64) + self.shift).astype(np.float32)
        z[~(z > 0)] = np.nan
        return z
