"""Semantic point clouds: back-projection with the grid camera, packing, and the synthetic scene's planes."""

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from fourm_ros import sample_rgbd
from fourm_ros.pipeline import metric_depth as md
from fourm_ros.pipeline import pointcloud as pc
from fourm_ros.pipeline.preprocess import CropMap


def test_back_projection_inverts_the_pinhole_projection():
    k = np.array([[200.0, 0.5, 100.0], [0.0, 210.0, 90.0], [0.0, 0.0, 1.0]])
    point = np.array([0.4, -0.3, 2.5])
    u, v, _ = k @ point / point[2]
    depth = np.full((224, 224), np.nan, np.float32)
    depth[round(v), round(u)] = 2.5
    xyz = pc.back_project(depth, k)
    expected = np.linalg.inv(k) @ np.array([round(u), round(v), 1.0]) * 2.5
    np.testing.assert_allclose(xyz[round(v), round(u)], expected, rtol=1e-6)
    assert np.isnan(xyz[0, 0]).all()


@pytest.mark.parametrize(
    "k, message",
    [(np.zeros((3, 3)), "uncalibrated"), (np.eye(4), "3×3 K"), (np.diag([1.0, -1.0, 1.0]), "focal lengths")],
)
def test_back_projection_refuses_a_camera_it_cannot_use(k, message):
    with pytest.raises(ValueError, match=message):
        pc.back_project(np.ones((4, 4), np.float32), k)


def test_points_carry_packed_colour_and_class_labels():
    depth = np.array([[1.0, np.nan], [2.0, 3.0]], np.float32)
    rgb = np.array([[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [1, 2, 3]]], np.uint8)
    labels = np.array([[7, 8], [9, 200]], np.uint8)
    k = np.array([[2.0, 0, 0.5], [0, 2.0, 0.5], [0, 0, 1.0]])
    cloud = pc.semantic_cloud(depth, k, rgb, labels)
    assert cloud.dtype.itemsize == 20 and cloud.shape == (3,)
    assert list(cloud["label"]) == [7, 9, 200]
    assert list(cloud["rgb"].view(np.uint32)) == [0xFF0000, 0x0000FF, 0x010203]
    assert list(cloud["z"]) == [1.0, 2.0, 3.0]
    organised = pc.semantic_cloud(depth, k, rgb, keep_unknown=True)
    assert organised.shape == (2, 2) and np.isnan(organised["x"][0, 1]) and (organised["label"] == 0).all()
    with pytest.raises(ValueError, match="uint8"):
        pc.semantic_cloud(depth, k, rgb.astype(np.float32))


def test_synthetic_scene_cloud_lies_on_the_known_planes():
    """Sensor depth on the grid, holes filled by a fit of perfect relative depth: every point of a cell
    that sees one surface lies on that surface's plane (the floor within min-pooling's footprint error)."""
    frame = sample_rgbd.render(0)
    crop = CropMap.centre(sample_rgbd.HEIGHT, sample_rgbd.WIDTH)
    k_grid = crop.intrinsics_to_grid(sample_rgbd.K)
    truth, surface, _ = sample_rgbd.ray_cast(k_grid, crop.size, crop.size)
    relative = ((truth - truth.mean()) / truth.std()).astype(np.float32)
    grid = md.sensor_depth_to_grid(md.sensor_depth_metres(frame.sensor_mm, "16UC1"), crop)
    assert np.isnan(grid).mean() > 0.03  # the sensor's holes reach the grid
    fit = md.fit_relative_depth(relative, grid)
    metric = md.metric_depth(relative, grid, fit)
    assert np.isfinite(metric).all()  # holes filled
    cloud = pc.semantic_cloud(metric, k_grid, np.zeros((224, 224, 3), np.uint8), surface, keep_unknown=True)
    points = np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=-1)
    distance = sample_rgbd.plane_distance(points, surface)
    window = sliding_window_view(np.pad(surface, 1, mode="edge"), (3, 3))
    interior = window.min(axis=(2, 3)) == window.max(axis=(2, 3))  # away from a surface's outline
    for index, name in enumerate(sample_rgbd.SURFACES[1:], start=1):
        cells = interior & (surface == index)
        assert cells.sum() > 500, name
        assert np.max(distance[cells] / points[..., 2][cells]) < 0.005, name
    holes = interior & np.isnan(grid)
    assert np.max(distance[holes] / points[..., 2][holes]) < 0.005  # filled points lie on the planes too
    measured_wall = interior & np.isfinite(grid) & (surface == sample_rgbd.SURFACES.index("wall"))
    assert np.max(distance[measured_wall]) < 1e-6  # a constant depth survives min pooling exactly
