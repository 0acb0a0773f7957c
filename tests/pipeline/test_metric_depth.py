"""Metric depth from a depth sensor: reading, resampling onto the grid, the robust fit and its refusals."""

import numpy as np
import pytest

from fourm_ros import sample_rgbd
from fourm_ros.pipeline import metric_depth as md
from fourm_ros.pipeline.preprocess import CropMap


def _smooth_relative(seed: int = 0, size: int = 224) -> np.ndarray:
    """A standardised relative-depth-like field: a ramp plus blobs, zero mean and unit spread."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:size, 0:size] / size
    field = 2.0 * v + np.sin(6 * u + rng.uniform(0, 6)) + 0.5 * np.cos(9 * v * u + rng.uniform(0, 6))
    return ((field - field.mean()) / field.std()).astype(np.float32)


def test_sensor_depth_reads_millimetres_and_metres_with_invalid_as_nan():
    mm = np.array([[0, 1000, 65535]], dtype=np.uint16)
    np.testing.assert_allclose(md.sensor_depth_metres(mm, "16UC1"), [[np.nan, 1.0, 65.535]], rtol=1e-6)
    np.testing.assert_allclose(md.sensor_depth_metres(mm, "mono16"), [[np.nan, 1.0, 65.535]], rtol=1e-6)
    metres = np.array([[0.0, np.nan, np.inf, -np.inf, -1.0, 2.5]], dtype=np.float32)
    out = md.sensor_depth_metres(metres, "32FC1")
    assert np.isnan(out[0, :5]).all() and out[0, 5] == np.float32(2.5)
    assert np.isnan(metres[0, 1]) and metres[0, 0] == 0  # the caller's array is not modified


@pytest.mark.parametrize(
    "data, encoding, message",
    [
        (np.zeros((4, 4), np.uint16), "rgb8", "not a depth image"),
        (np.zeros((4, 4), np.float32), "16UC1", "uint16 millimetres"),
        (np.zeros((4, 4), np.uint16), "32FC1", "float32 metres"),
        (np.zeros((4, 4, 3), np.uint16), "16UC1", "H×W with one channel"),
    ],
)
def test_sensor_depth_refuses_what_is_not_a_depth_image(data, encoding, message):
    with pytest.raises(ValueError, match=message):
        md.sensor_depth_metres(data, encoding)


def test_grid_resampling_refuses_an_unregistered_size():
    with pytest.raises(ValueError, match="registered to the colour camera"):
        md.sensor_depth_to_grid(np.ones((240, 320), np.float32), CropMap.centre(480, 640))


def test_grid_resampling_keeps_the_nearest_surface_and_never_interpolates_across_holes():
    rng = np.random.default_rng(0)
    depth = np.where(rng.random((480, 640)) < 0.5, 1.0, 3.0).astype(np.float32)
    depth[rng.random(depth.shape) < 0.2] = np.nan
    depth[100:200, 200:300] = np.nan  # a hole wider than any footprint
    crop = CropMap.centre(480, 640)
    grid = md.sensor_depth_to_grid(depth, crop)
    assert grid.shape == (224, 224) and grid.dtype == np.float32
    assert set(np.unique(grid[np.isfinite(grid)])) <= {1.0, 3.0}  # only measured values, no blends
    # Grid cells whose whole footprint lies in the hole stay unknown.
    inner = crop.boxes_to_grid(np.array([201, 101, 299, 199]))
    x0, y0, x1, y1 = int(np.ceil(inner[0])), int(np.ceil(inner[1])), int(inner[2]), int(inner[3])
    assert np.isnan(grid[y0:y1, x0:x1]).all()
    # One near pixel in a footprint wins over the far ones around it (min pooling).
    far = np.full((480, 640), 4.0, np.float32)
    far[240, 320] = 0.5
    cell = np.round(crop.points_to_grid(np.array([320.0, 240.0]))).astype(int)
    assert md.sensor_depth_to_grid(far, crop)[cell[1], cell[0]] == np.float32(0.5)


def test_grid_resampling_is_the_identity_on_a_224_image_and_upsamples_by_nearest():
    depth = np.random.default_rng(1).uniform(0.5, 5.0, (224, 224)).astype(np.float32)
    np.testing.assert_array_equal(md.sensor_depth_to_grid(depth, CropMap.centre(224, 224)), depth)
    small = np.arange(1, 113 * 150 + 1, dtype=np.float32).reshape(113, 150)
    grid = md.sensor_depth_to_grid(small, CropMap.centre(113, 150))
    assert set(np.unique(grid)) <= set(np.unique(small))


def test_fit_recovers_a_known_scale_and_shift_despite_outliers_and_holes():
    relative = _smooth_relative()
    scale, shift = 0.8, 2.5
    rng = np.random.default_rng(2)
    sensor = (scale * relative + shift) * (1 + rng.normal(0, 0.003, relative.shape))
    outliers = rng.random(relative.shape) < 0.3
    sensor[outliers] = rng.uniform(0.2, 10.0, outliers.sum())
    sensor[rng.random(relative.shape) < 0.2] = np.nan
    sensor[:60, :60] = np.nan
    fit = md.fit_relative_depth(relative, sensor.astype(np.float32))
    assert fit.trusted and fit.reason is None
    assert fit.scale == pytest.approx(scale, rel=5e-3) and fit.shift == pytest.approx(shift, rel=2e-3)
    assert 0.65 < fit.inlier_ratio < 0.75  # ~70 % of the valid pixels are not outliers
    assert fit.residual < 0.005
    assert fit.valid_pixels == int(np.isfinite(sensor).sum())


def test_fit_is_exact_on_noise_free_data():
    relative = _smooth_relative(3)
    fit = md.fit_relative_depth(relative, (1.7 * relative + 4.0).astype(np.float32))
    assert fit.trusted and fit.inlier_ratio == 1.0
    assert fit.scale == pytest.approx(1.7, rel=1e-5) and fit.shift == pytest.approx(4.0, rel=1e-5)


@pytest.mark.parametrize(
    "make_sensor, reason",
    [
        (lambda rel, rng: np.full(rel.shape, np.nan, np.float32), "too few valid sensor pixels"),
        (lambda rel, rng: np.where(rng.random(rel.shape) < 0.01, 2.0, np.nan), "too few valid sensor pixels"),
        (lambda rel, rng: rng.uniform(0.3, 10.0, rel.shape), "inlier ratio"),
        (lambda rel, rng: -1.0 * rel + 4.0, "near and far"),
    ],
    ids=["all invalid", "almost all invalid", "unrelated", "inverted"],
)
def test_fit_refuses_untrustworthy_sensor_data_with_a_reason(make_sensor, reason):
    relative = _smooth_relative(4)
    fit = md.fit_relative_depth(relative, make_sensor(relative, np.random.default_rng(5)).astype(np.float32))
    assert not fit.trusted and reason in fit.reason
    with pytest.raises(ValueError, match="untrusted fit"):
        md.metric_depth(relative, np.full(relative.shape, np.nan, np.float32), fit)


def test_fit_refuses_a_flat_relative_depth():
    fit = md.fit_relative_depth(np.zeros((224, 224), np.float32), np.full((224, 224), 2.0, np.float32))
    assert not fit.trusted and "flat" in fit.reason


def test_fit_refuses_when_inliers_are_too_noisy():
    relative = _smooth_relative(6)
    noisy = (relative + 4.0) * (1 + np.random.default_rng(7).normal(0, 0.03, relative.shape))
    fit = md.fit_relative_depth(
        relative, noisy.astype(np.float32), md.FitSettings(max_relative_residual=0.01)
    )
    assert not fit.trusted and "residual" in fit.reason and fit.residual > 0.01


def test_metric_depth_keeps_measurements_and_fills_holes_from_the_fit():
    relative = _smooth_relative(8)
    truth = (0.5 * relative + 3.0).astype(np.float32)
    sensor = truth.copy()
    sensor[50:90, 100:180] = np.nan
    sensor[0, 0] = truth[0, 0] + 0.01  # a measurement is kept even when it disagrees slightly
    fit = md.fit_relative_depth(relative, sensor)
    metric = md.metric_depth(relative, sensor, fit)
    assert metric.dtype == np.float32 and np.isfinite(metric).all()
    assert metric[0, 0] == sensor[0, 0]
    np.testing.assert_allclose(metric[50:90, 100:180], truth[50:90, 100:180], rtol=1e-4)
    negative = md.metric_depth(relative - 100.0, sensor, fit)  # model behind the camera in the hole
    assert np.isnan(negative[50:90, 100:180]).all()


def test_up_to_scale_depth_needs_positive_numbers():
    with pytest.raises(ValueError, match="depth_scale"):
        md.UpToScale(0.0, 3.0)
    with pytest.raises(ValueError, match="depth_shift"):
        md.UpToScale(1.0, float("nan"))
    depth = md.UpToScale(0.5, 2.0).depth(np.array([[0.0, 2.0, -5.0]], np.float32))
    np.testing.assert_allclose(depth, [[2.0, 3.0, np.nan]])


def test_fit_settings_are_validated():
    with pytest.raises(ValueError, match="min_inlier_ratio"):
        md.FitSettings(min_inlier_ratio=1.5)
    with pytest.raises(ValueError, match="inlier_relative_error"):
        md.FitSettings(inlier_relative_error=0)


def test_synthetic_sensor_fit_recovers_the_scenes_scale():
    frame = sample_rgbd.render(0)
    crop = CropMap.centre(sample_rgbd.HEIGHT, sample_rgbd.WIDTH)
    truth, _, _ = sample_rgbd.ray_cast(crop.intrinsics_to_grid(sample_rgbd.K), crop.size, crop.size)
    relative = ((truth - truth.mean()) / truth.std()).astype(np.float32)  # what a perfect model returns
    grid = md.sensor_depth_to_grid(md.sensor_depth_metres(frame.sensor_mm, "16UC1"), crop)
    fit = md.fit_relative_depth(relative, grid)
    assert fit.trusted and fit.inlier_ratio > 0.95
    assert fit.scale == pytest.approx(truth.std(), rel=0.01)
    assert fit.shift == pytest.approx(truth.mean(), rel=0.01)
