"""A synthetic RGB-D camera: a room of planes and boxes ray-cast with numpy, with known geometry and holes.

Used by ``fourm-ros sample-bag --rgbd`` (colour + registered depth + camera_info, as an RGB-D driver's
``aligned_depth_to_color`` topics), by the metric-depth tests (every point's surface is known exactly) and
by ``python -m fourm_ros.benchmarks.rgbd``.

Scene, in the camera optical frame of frame 0 (x right, y down, z forward; metres): a floor at
y = ``FLOOR_Y`` (camera 1.2 m up), a back wall at z = ``WALL_Z``, two boxes standing on the floor. The
camera slides sideways by ``step_m`` per frame. The sensor has what real ones have: no return through a
glass pane in the wall, a shadow band beside depth edges (stereo occlusion) and random dropouts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FLOOR_Y = 1.2
WALL_Z = 5.0
BOXES = (
    ((-1.3, 0.4, 2.0), (-0.5, FLOOR_Y, 2.8)),
    ((0.3, 0.0, 3.0), (1.1, FLOOR_Y, 3.6)),
)
"""Axis-aligned boxes as (min corner, max corner)."""
GLASS = ((0.6, 1.8), (-1.6, -0.4))
"""The glass pane in the back wall: x range, y range (no depth return there)."""
SURFACES = ("none", "floor", "wall", "box_left", "box_right")
"""Surface ids of :class:`RGBDFrame.surface` (index into this tuple)."""
WIDTH, HEIGHT = 640, 480
K = np.array([[525.0, 0.0, 319.5], [0.0, 525.0, 239.5], [0.0, 0.0, 1.0]])
"""Intrinsics of the synthetic camera (a VGA RGB-D camera's colour stream)."""

_COLOURS = {
    "floor": ((150, 120, 90), (95, 80, 60)),  # checkerboard tiles
    "wall": ((205, 200, 185), (205, 200, 185)),
    "box_left": ((190, 40, 35), (190, 40, 35)),
    "box_right": ((40, 70, 180), (40, 70, 180)),
}
_SHADE = np.array([0.75, 0.9, 1.0])  # faces whose normal is along x, y, z


@dataclass(frozen=True)
class RGBDFrame:
    """One synthetic frame: the colour image, the true depth, what the sensor reports, and the truth."""

    rgb: np.ndarray
    """uint8 H×W×3."""
    depth_m: np.ndarray
    """float32 H×W true z-depth in metres (every pixel hits a surface)."""
    sensor_mm: np.ndarray
    """uint16 H×W 16UC1 millimetres as a sensor reports it: 0 in the holes."""
    surface: np.ndarray
    """uint8 H×W index into ``SURFACES``."""
    camera_x: float
    """Sideways offset of the camera from frame 0 (metres); the scene in this frame's optical frame is the
    frame-0 scene shifted by −camera_x along x."""


def ray_cast(k: np.ndarray, width: int, height: int, camera_x: float = 0.0) -> tuple[np.ndarray, ...]:
    """Depth (float64 z, metres), surface id and face axis of every pixel centre of a pinhole camera.

    Exact geometry, no sensor effects: used both to render frames and as the ground truth of tests.
    """
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    ray_y = (v - k[1, 2]) / k[1, 1]
    ray_x = (u - k[0, 2] - k[0, 1] * ray_y) / k[0, 0]
    depth = np.full((height, width), np.inf)
    surface = np.zeros((height, width), dtype=np.uint8)
    axis = np.full((height, width), 2, dtype=np.uint8)

    wall = np.full_like(depth, WALL_Z)
    closer = wall < depth
    depth[closer], surface[closer] = wall[closer], SURFACES.index("wall")
    with np.errstate(divide="ignore", invalid="ignore"):
        floor = np.where(ray_y > 0, FLOOR_Y / ray_y, np.inf)
        closer = floor < depth
        depth[closer], surface[closer], axis[closer] = floor[closer], SURFACES.index("floor"), 1
        origin = np.array([camera_x, 0.0, 0.0])
        for index, (low, high) in enumerate(BOXES):
            near = np.full_like(depth, -np.inf)
            far = np.full_like(depth, np.inf)
            near_axis = np.zeros_like(axis)
            for dim, ray in enumerate((ray_x, ray_y, np.ones_like(ray_x))):
                t0 = (low[dim] - origin[dim]) / ray
                t1 = (high[dim] - origin[dim]) / ray
                entry, leave = np.minimum(t0, t1), np.maximum(t0, t1)
                near_axis = np.where(entry > near, dim, near_axis)
                near, far = np.maximum(near, entry), np.minimum(far, leave)
            hit = (near <= far) & (near > 0) & (near < depth)
            depth[hit], surface[hit], axis[hit] = (
                near[hit],
                SURFACES.index("box_left") + index,
                near_axis[hit],
            )
    return depth, surface, axis


def _colours(depth: np.ndarray, surface: np.ndarray, axis: np.ndarray, k: np.ndarray, camera_x: float):
    u = np.arange(depth.shape[1], dtype=np.float64)[None, :]
    x = (u - k[0, 2]) / k[0, 0] * depth + camera_x
    z = depth
    tile = ((np.floor(x / 0.5) + np.floor(z / 0.5)) % 2).astype(np.intp)
    palette = np.zeros((len(SURFACES), 2, 3))
    for name, tiles in _COLOURS.items():
        palette[SURFACES.index(name)] = tiles
    rgb = palette[surface, tile]
    rgb *= _SHADE[axis][..., None]
    rgb *= np.clip(1.15 - 0.06 * depth, 0.6, 1.0)[..., None]  # a little fall-off with distance
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _sensor_holes(depth: np.ndarray, k: np.ndarray, camera_x: float, rng: np.random.Generator) -> np.ndarray:
    """Where the simulated sensor has no return: glass, occlusion shadows beside depth edges, dropouts."""
    height, width = depth.shape
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    x = (u - k[0, 2]) / k[0, 0] * depth + camera_x
    y = (v - k[1, 2]) / k[1, 1] * depth
    (gx0, gx1), (gy0, gy1) = GLASS
    holes = (np.abs(depth - WALL_Z) < 1e-6) & (x >= gx0) & (x <= gx1) & (y >= gy0) & (y <= gy1)
    jump = np.zeros_like(holes)
    jump[:, 1:] = (depth[:, 1:] - depth[:, :-1]) < -0.3  # a nearer surface starts: the far side is shadowed
    for shift in range(1, 7):
        holes[:, :-shift] |= jump[:, shift:]
    holes |= rng.random(depth.shape) < 0.02
    return holes


def render(frame_index: int = 0, step_m: float = 0.05, seed: int = 0) -> RGBDFrame:
    """Frame ``frame_index`` of the synthetic sequence (deterministic for a given seed)."""
    camera_x = frame_index * step_m
    depth, surface, axis = ray_cast(K, WIDTH, HEIGHT, camera_x)
    rgb = _colours(depth, surface, axis, K, camera_x)
    rng = np.random.default_rng([seed, frame_index])
    holes = _sensor_holes(depth, K, camera_x, rng)
    sensor = np.rint(depth * 1000.0)
    sensor[holes] = 0
    return RGBDFrame(rgb, depth.astype(np.float32), sensor.astype(np.uint16), surface, camera_x)


def plane_distance(points: np.ndarray, surface: np.ndarray, camera_x: float = 0.0) -> np.ndarray:
    """Distance (metres) of optical-frame points [..., 3] from the surface each one should lie on:
    the floor and wall planes, the nearest face plane of its box. NaN for surface 0."""
    x, y, z = points[..., 0].astype(np.float64) + camera_x, points[..., 1], points[..., 2]
    distance = np.full(surface.shape, np.nan)
    floor, wall = surface == SURFACES.index("floor"), surface == SURFACES.index("wall")
    distance[floor] = np.abs(y[floor] - FLOOR_Y)
    distance[wall] = np.abs(z[wall] - WALL_Z)
    for index, (low, high) in enumerate(BOXES):
        mask = surface == SURFACES.index("box_left") + index
        faces = [
            np.abs(coordinate[mask] - bound)
            for coordinate, bounds in zip((x, y, z), zip(low, high, strict=True), strict=True)
            for bound in bounds
        ]
        distance[mask] = np.min(faces, axis=0)
    return distance
