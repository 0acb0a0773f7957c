"""The synthetic RGB-D scene: a sensor image that is the true geometry except where a sensor has holes."""

import numpy as np

from fourm_ros import sample_rgbd


def test_sensor_depth_is_the_true_depth_except_in_its_holes():
    frame = sample_rgbd.render(0)
    assert frame.rgb.shape == (sample_rgbd.HEIGHT, sample_rgbd.WIDTH, 3) and frame.rgb.dtype == np.uint8
    assert frame.sensor_mm.dtype == np.uint16 and frame.sensor_mm.shape == frame.depth_m.shape
    valid = frame.sensor_mm > 0
    assert 0.03 < 1 - valid.mean() < 0.2
    np.testing.assert_allclose(frame.sensor_mm[valid] / 1000.0, frame.depth_m[valid], atol=5e-4)
    assert set(np.unique(frame.surface)) == {1, 2, 3, 4}  # floor, wall and both boxes are in view
    for surface in range(1, 5):  # each surface has its own colour
        colours = frame.rgb[frame.surface == surface].mean(axis=0)
        others = frame.rgb[(frame.surface != surface) & (frame.surface > 0)].mean(axis=0)
        assert np.abs(colours - others).max() > 10


def test_glass_and_depth_edges_have_no_return():
    frame = sample_rgbd.render(0)
    v, u = np.mgrid[0 : sample_rgbd.HEIGHT, 0 : sample_rgbd.WIDTH]
    x = (u - sample_rgbd.K[0, 2]) / sample_rgbd.K[0, 0] * frame.depth_m
    y = (v - sample_rgbd.K[1, 2]) / sample_rgbd.K[1, 1] * frame.depth_m
    (x0, x1), (y0, y1) = sample_rgbd.GLASS
    glass = (frame.surface == 2) & (x > x0) & (x < x1) & (y > y0) & (y < y1)
    assert glass.sum() > 1000 and (frame.sensor_mm[glass] == 0).all()
    edge = np.zeros_like(glass)
    edge[:, 1:] = np.diff(frame.depth_m, axis=1) < -0.3
    rows, columns = np.nonzero(edge)
    assert (frame.sensor_mm[rows, columns - 1] == 0).all()  # the far side of a near edge is shadowed


def test_frames_are_deterministic_and_the_camera_moves():
    first, again, second = sample_rgbd.render(0), sample_rgbd.render(0), sample_rgbd.render(1)
    np.testing.assert_array_equal(first.sensor_mm, again.sensor_mm)
    assert second.camera_x == 0.05 and not np.array_equal(first.depth_m, second.depth_m)
