"""Semantic point clouds from metric depth on the 224 grid, in the optical frame of the grid camera.

The grid camera is the input camera moved through the centre crop and resize
(:meth:`CropMap.intrinsics_to_grid`, the K that ``depth/camera_info`` publishes), so a grid pixel (u, v)
with depth z back-projects to x = (u - cx)·z/fx, y = (v - cy)·z/fy (REP 103 optical frame: x right,
y down, z forward). Points are packed in the layout PCL and rviz read: float32 x, y, z, the colour as
float32 bits of 0x00RRGGBB (``rgb``), and a uint32 class ``label``; 20 bytes per point.
"""

from __future__ import annotations

import numpy as np

POINT_DTYPE = np.dtype(
    {
        "names": ["x", "y", "z", "rgb", "label"],
        "formats": ["<f4", "<f4", "<f4", "<f4", "<u4"],
        "offsets": [0, 4, 8, 12, 16],
        "itemsize": 20,
    }
)
"""One point: what PointCloud2's fields describe (see ``fourm_ros.ros.pointcloud``)."""


def check_intrinsics(k_grid: np.ndarray) -> np.ndarray:
    """The grid camera's 3×3 K as float64, or a clear error when it cannot back-project."""
    k = np.asarray(k_grid, dtype=np.float64)
    if k.shape != (3, 3):
        raise ValueError(f"expected the grid camera's 3×3 K, got shape {k.shape}")
    if not (k[0, 0] > 0 and k[1, 1] > 0 and k[2, 2] == 1):
        raise ValueError(
            f"K must have positive focal lengths and K[2,2] = 1 to back-project (got fx {k[0, 0]}, fy "
            f"{k[1, 1]}, K[2,2] {k[2, 2]}); an uncalibrated camera (K all zero) has no point cloud"
        )
    return k


def back_project(depth_m: np.ndarray, k_grid: np.ndarray) -> np.ndarray:
    """Depth [H, W] in metres (NaN unknown) → float32 points [H, W, 3] in the optical frame (NaN where
    unknown)."""
    k = check_intrinsics(k_grid)
    if depth_m.ndim != 2:
        raise ValueError(f"depth must be H×W, got shape {depth_m.shape}")
    height, width = depth_m.shape
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    z = depth_m.astype(np.float64)
    x = (u - k[0, 2] - k[0, 1] * (v - k[1, 2]) / k[1, 1]) * z / k[0, 0]
    y = (v - k[1, 2]) * z / k[1, 1]
    return np.stack([x, y, z], axis=-1).astype(np.float32)


def pack_rgb(rgb: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] → float32 [...] whose bits are 0x00RRGGBB (the PCL/rviz ``rgb`` field)."""
    rgb = np.asarray(rgb, dtype=np.uint32)
    packed = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    return packed.astype(np.uint32).view(np.float32)


def semantic_cloud(
    depth_m: np.ndarray,
    k_grid: np.ndarray,
    grid_rgb: np.ndarray,
    labels: np.ndarray | None = None,
    keep_unknown: bool = False,
) -> np.ndarray:
    """Points (x, y, z, rgb, label) of every grid pixel with a depth, row-major (``POINT_DTYPE``).

    ``labels`` are the segmentation's class ids (0 = unlabeled when absent). With ``keep_unknown`` the
    cloud stays organised (H×W, NaN coordinates where depth is unknown), otherwise unknown pixels are left
    out and the result is 1-D.
    """
    if grid_rgb.shape != (*depth_m.shape, 3) or grid_rgb.dtype != np.uint8:
        raise ValueError(
            f"colours must be uint8 {depth_m.shape[0]}×{depth_m.shape[1]}×3 like the depth, got "
            f"{grid_rgb.dtype} {grid_rgb.shape}"
        )
    if labels is not None and labels.shape != depth_m.shape:
        raise ValueError(f"labels {labels.shape} must have the depth's shape {depth_m.shape}")
    xyz = back_project(depth_m, k_grid)
    cloud = np.zeros(depth_m.shape, dtype=POINT_DTYPE)
    cloud["x"], cloud["y"], cloud["z"] = xyz[..., 0], xyz[..., 1], xyz[..., 2]
    cloud["rgb"] = pack_rgb(grid_rgb)
    if labels is not None:
        cloud["label"] = labels
    if keep_unknown:
        return cloud
    return cloud[np.isfinite(depth_m) & (depth_m > 0)]
