"""Preprocessing as 4M was trained, and exact mapping between input pixels and the 224 grid."""

import numpy as np
import pytest
from PIL import Image

from fourm_ros.pipeline.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CropMap,
    crop_and_resize,
    preprocess,
)


def _frame(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("height", "width", "left", "top", "side"),
    [(480, 640, 80, 0, 480), (640, 480, 0, 80, 480), (481, 640, 79, 0, 481), (224, 224, 0, 0, 224)],
)
def test_centre_crop_is_the_shorter_side_centred(height, width, left, top, side):
    crop = CropMap.centre(height, width)
    assert (crop.left, crop.top, crop.side) == (left, top, side)
    assert crop.scale == pytest.approx(224 / side)


def test_known_pixel_maps_to_the_grid_and_back_exactly():
    crop = CropMap.centre(480, 640)  # crop x 80..559, scale 224/480
    centre = np.array([319.5, 239.5])  # the centre of the image is the centre of the grid
    np.testing.assert_allclose(crop.points_to_grid(centre), [111.5, 111.5])
    # The left edge of the crop (x = 79.5 between pixels 79 and 80) is the left edge of the grid (-0.5).
    np.testing.assert_allclose(crop.points_to_grid([79.5, -0.5]), [-0.5, -0.5])
    points = np.random.default_rng(1).uniform(0, 480, (10, 2))
    np.testing.assert_allclose(crop.points_to_input(crop.points_to_grid(points)), points, atol=1e-9)


def test_boxes_map_by_edges():
    crop = CropMap.centre(480, 640)
    np.testing.assert_allclose(crop.boxes_to_input([0, 0, 224, 224]), [80, 0, 560, 480])
    box = np.array([100.0, 50.0, 300.0, 400.0])
    np.testing.assert_allclose(crop.boxes_to_input(crop.boxes_to_grid(box)), box)


def test_intrinsics_follow_the_crop_and_resize():
    crop = CropMap.centre(480, 640)
    k = np.array([[500.0, 0, 320.0], [0, 510.0, 240.0], [0, 0, 1]])
    kg = crop.intrinsics_to_grid(k)
    s = 224 / 480
    np.testing.assert_allclose(kg[0, 0], 500 * s)
    np.testing.assert_allclose(kg[1, 1], 510 * s)
    np.testing.assert_allclose(kg[:2, 2], crop.points_to_grid([320.0, 240.0]))
    # Projection consistency: a 3D point projects to the grid where its input projection maps to.
    point = np.array([0.3, -0.2, 2.0])
    uv_input = (k @ point)[:2] / point[2]
    uv_grid = (kg @ point)[:2] / point[2]
    np.testing.assert_allclose(uv_grid, crop.points_to_grid(uv_input), atol=1e-9)
    p = np.hstack([k, [[10.0], [0.0], [0.0]]])
    assert crop.intrinsics_to_grid(p).shape == (3, 4)
    with pytest.raises(ValueError, match="3×3 K or 3×4 P"):
        crop.intrinsics_to_grid(np.eye(2))


def test_resize_is_pil_bicubic_of_the_centre_crop():
    frame = _frame(300, 400)
    crop = CropMap.centre(300, 400)
    pil_bicubic = 3  # Image.BICUBIC / Image.Resampling.BICUBIC: the same value in Pillow 9.0 to 13
    expected = np.asarray(Image.fromarray(frame[:, 50:350]).resize((224, 224), pil_bicubic))
    np.testing.assert_array_equal(crop_and_resize(frame, crop), expected)


def test_normalisation_and_layout():
    frame = np.zeros((224, 224, 3), dtype=np.uint8)
    frame[..., 0] = 255
    batch, crops, grids = preprocess([frame])
    assert batch.shape == (1, 3, 224, 224) and batch.dtype == np.float32
    assert crops[0] == CropMap(224, 224, 0, 0, 224)
    np.testing.assert_array_equal(grids[0], frame)
    expected = (np.array([1.0, 0.0, 0.0]) - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(batch[0, :, 5, 7], expected, rtol=1e-6)


def test_batch_equals_single_frames():
    frames = [_frame(300, 400, 1), _frame(224, 500, 2), _frame(640, 480, 3)]
    batch, crops, grids = preprocess(frames)
    for i, frame in enumerate(frames):
        single, (crop,), (grid,) = preprocess([frame])
        np.testing.assert_array_equal(batch[i : i + 1], single)
        np.testing.assert_array_equal(grids[i], grid)
        assert crops[i] == crop


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ([[1, 2, 3]], "numpy array"),
        (np.zeros((10, 10), np.uint8), "H×W×3"),
        (np.zeros((10, 10, 4), np.uint8), "H×W×3"),
        (np.zeros((10, 10, 3), np.float32), "uint8"),
        (np.zeros((0, 10, 3), np.uint8), "empty"),
    ],
)
def test_bad_frames_are_explained(frame, message):
    with pytest.raises((TypeError, ValueError), match=message):
        preprocess([frame])


def test_empty_batch_is_explained():
    with pytest.raises(ValueError, match="at least one frame"):
        preprocess([])
