"""CameraInfo of the 224×224 outputs: hand-computed K/P, projection consistency, binning/ROI, mismatches."""

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo, RegionOfInterest
from std_msgs.msg import Header

from fourm_ros.pipeline.preprocess import CropMap
from fourm_ros.ros.camera_info import camera_info_for_grid, camera_info_matches

D = [0.1, -0.2, 0.001, 0.002, 0.05]
R = [0.999, -0.01, 0.04, 0.01, 0.9999, 0.0, -0.04, 0.0, 0.999]


def _header():
    header = Header(frame_id="cam_optical_frame")
    header.stamp.sec, header.stamp.nanosec = 42, 500
    return header


def _info(width, height, k, p, **fields):
    return CameraInfo(
        header=_header(),
        width=width,
        height=height,
        distortion_model="plumb_bob",
        d=D,
        k=k,
        r=R,
        p=p,
        **fields,
    )


def test_landscape_640x480_hand_computed():
    # Crop x 80..559 (480 px), scale 224/480 = 7/15:
    # u' = (u - 80 + 0.5)·7/15 - 0.5, v' = (v + 0.5)·7/15 - 0.5.
    info = _info(
        640,
        480,
        k=[600, 0, 320.5, 0, 610, 240.25, 0, 0, 1],
        p=[580, 0, 318, -58, 0, 590, 242, 0, 0, 0, 1, 0],  # right camera of a stereo pair: Tx = -fx·B
    )
    grid = camera_info_for_grid(info, CropMap.centre(480, 640), _header())
    k = np.array(grid.k).reshape(3, 3)
    p = np.array(grid.p).reshape(3, 4)
    # fx 600·7/15 = 280; fy 610·7/15 = 284.667; cx 241·7/15 - 0.5 = 111.967; cy 240.75·7/15 - 0.5 = 111.85
    np.testing.assert_allclose(k, [[280, 0, 111.9666667], [0, 284.6666667, 111.85], [0, 0, 1]], atol=1e-6)
    # fx 580·7/15 = 270.667; cx 238.5·7/15 - 0.5 = 110.8; Tx -58·7/15 = -27.067;
    # fy 590·7/15 = 275.333; cy 242.5·7/15 - 0.5 = 112.667
    np.testing.assert_allclose(
        p,
        [[270.6666667, 0, 110.8, -27.0666667], [0, 275.3333333, 112.6666667, 0], [0, 0, 1, 0]],
        atol=1e-6,
    )


def test_portrait_480x640_hand_computed():
    # Crop y 80..559, scale 7/15; u' = (u + 0.5)·7/15 - 0.5, v' = (v - 80 + 0.5)·7/15 - 0.5.
    info = _info(
        480,
        640,
        k=[500, 0, 240, 0, 500, 320, 0, 0, 1],
        p=[500, 0, 240, 0, 0, 500, 320, -30, 0, 0, 1, 0],  # vertical stereo: Ty = -fy·B
    )
    grid = camera_info_for_grid(info, CropMap.centre(640, 480), _header())
    # f 500·7/15 = 233.333; cx = cy = 240.5·7/15 - 0.5 = 111.733; Ty -30·7/15 = -14
    np.testing.assert_allclose(
        np.array(grid.k).reshape(3, 3),
        [[233.3333333, 0, 111.7333333], [0, 233.3333333, 111.7333333], [0, 0, 1]],
    )
    np.testing.assert_allclose(
        np.array(grid.p).reshape(3, 4),
        [[233.3333333, 0, 111.7333333, 0], [0, 233.3333333, 111.7333333, -14], [0, 0, 1, 0]],
    )


def _project(matrix, points):
    homogeneous = np.c_[points, np.ones(len(points))] if matrix.shape[1] == 4 else points
    pixels = homogeneous @ matrix.T
    return pixels[:, :2] / pixels[:, 2:]


def _points():
    rng = np.random.default_rng(0)
    return np.c_[rng.uniform(-1, 1, (20, 2)), rng.uniform(1, 5, 20)]


def test_grid_camera_projects_where_the_crop_maps_input_pixels():
    info = _info(
        640,
        480,
        k=[612.3, 0.5, 331.7, 0, 611.1, 236.2, 0, 0, 1],
        p=[600.0, 0, 322.0, -45.0, 0, 600.0, 240.0, 3.0, 0, 0, 1, 0],
    )
    crop = CropMap.centre(480, 640)
    grid = camera_info_for_grid(info, crop, _header())
    for field, shape in (("k", (3, 3)), ("p", (3, 4))):
        before = np.array(getattr(info, field)).reshape(shape)
        after = np.array(getattr(grid, field)).reshape(shape)
        expected = crop.points_to_grid(_project(before, _points()))
        np.testing.assert_allclose(_project(after, _points()), expected, atol=1e-9)


def test_binning_and_roi_of_the_input_are_folded_into_k_and_p():
    # Calibrated at 1280×960; the image is the ROI x 160..1119, y 120..839 binned 2×: 480×360 pixels.
    k_full = np.array([1200.0, 0, 640.5, 0, 1200.0, 480.5, 0, 0, 1]).reshape(3, 3)
    info = _info(
        1280,
        960,
        k=k_full.ravel(),
        p=np.c_[k_full, [-120.0, 0, 0]].ravel(),
        binning_x=2,
        binning_y=2,
        roi=RegionOfInterest(x_offset=160, y_offset=120, width=960, height=720, do_rectify=True),
    )
    assert camera_info_matches(info, 480, 360)
    assert not camera_info_matches(info, 1280, 960)
    crop = CropMap.centre(360, 480)
    grid = camera_info_for_grid(info, crop, _header())
    sensor = _project(k_full, _points())
    image = (sensor - [160, 120] + 0.5) / 2 - 0.5  # binned pixel j covers sensor pixels 2j and 2j+1
    np.testing.assert_allclose(
        _project(np.array(grid.k).reshape(3, 3), _points()), crop.points_to_grid(image)
    )
    p = np.array(grid.p).reshape(3, 4)
    np.testing.assert_allclose(p[0, 3], -120.0 / 2 * crop.scale)  # Tx scales with the pixel size
    assert (grid.binning_x, grid.binning_y) == (0, 0)


def test_output_message_fields():
    info = _info(
        640, 480, k=[600, 0, 320, 0, 600, 240, 0, 0, 1], p=[600, 0, 320, 0, 0, 600, 240, 0, 0, 0, 1, 0]
    )
    header = _header()
    header.stamp.sec = 99
    grid = camera_info_for_grid(info, CropMap.centre(480, 640), header)
    assert (grid.width, grid.height) == (224, 224)
    assert grid.header == header and grid.header is not header
    assert grid.distortion_model == "plumb_bob"
    np.testing.assert_array_equal(grid.d, D)
    np.testing.assert_array_equal(grid.r, R)
    roi = grid.roi
    assert (roi.x_offset, roi.y_offset, roi.width, roi.height, roi.do_rectify) == (0, 0, 224, 224, False)


def test_uncalibrated_camera_stays_uncalibrated():
    info = _info(640, 480, k=[0.0] * 9, p=[0.0] * 12)
    grid = camera_info_for_grid(info, CropMap.centre(480, 640), _header())
    assert not np.any(grid.k) and not np.any(grid.p)


def test_camera_info_of_another_image_is_detected_and_refused():
    info = _info(
        1280, 720, k=[900, 0, 640, 0, 900, 360, 0, 0, 1], p=[900, 0, 640, 0, 0, 900, 360, 0, 0, 0, 1, 0]
    )
    assert camera_info_matches(info, 1280, 720)
    assert not camera_info_matches(info, 640, 480)
    assert not camera_info_matches(CameraInfo(), 640, 480)  # an all-default message belongs to nothing
    with pytest.raises(ValueError, match=r"describes a 1280×720 image .* but the frame is 640×480"):
        camera_info_for_grid(info, CropMap.centre(480, 640), _header())
