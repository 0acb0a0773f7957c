"""Depth-sensor messages to metres, and semantic point clouds to PointCloud2, with the frame's header."""

import sys

import numpy as np
import pytest
from sensor_msgs.msg import Image, PointField
from std_msgs.msg import Header

from fourm_ros import sample_rgbd
from fourm_ros.pipeline import metric_depth, pointcloud
from fourm_ros.pipeline.preprocess import CropMap
from fourm_ros.ros import rgbd
from fourm_ros.ros.bag import depth_message
from fourm_ros.ros.conversion import BadImageError


def _header() -> Header:
    header = Header(frame_id="camera_color_optical_frame")
    header.stamp.sec, header.stamp.nanosec = 12, 345
    return header


def test_16uc1_millimetres_read_as_metres_with_holes_as_nan():
    frame = sample_rgbd.render(0)
    metres = rgbd.depth_to_metres(depth_message(frame.sensor_mm, _header()))
    valid = frame.sensor_mm > 0
    np.testing.assert_allclose(metres[valid], frame.sensor_mm[valid] / 1000.0, rtol=1e-6)
    assert np.isnan(metres[~valid]).all()


@pytest.mark.parametrize("big_endian", [False, True])
def test_32fc1_with_row_padding_and_either_byte_order(big_endian):
    depth = np.array([[1.5, 0.0, np.inf], [np.nan, 2.0, 3.25]], np.float32)
    rows = depth.astype(">f4" if big_endian else "<f4").tobytes()
    padded = b"".join(rows[i * 12 : (i + 1) * 12] + b"\x00" * 4 for i in range(2))
    msg = Image(height=2, width=3, encoding="32FC1", is_bigendian=int(big_endian), step=16, data=padded)
    np.testing.assert_array_equal(rgbd.depth_to_metres(msg), [[1.5, np.nan, np.nan], [np.nan, 2.0, 3.25]])


@pytest.mark.parametrize(
    "msg, reason",
    [
        (Image(height=2, width=2, encoding="rgb8", step=6, data=bytes(12)), "depth encoding"),
        (Image(height=2, width=2, encoding="16UC1", step=2, data=bytes(8)), "depth layout"),
        (Image(height=2, width=2, encoding="16UC1", step=4, data=bytes(6)), "depth layout"),
        (Image(height=0, width=2, encoding="32FC1", step=8, data=b""), "empty image"),
    ],
)
def test_bad_depth_messages_are_refused_with_a_countable_reason(msg, reason):
    with pytest.raises(BadImageError) as error:
        rgbd.depth_to_metres(msg)
    assert error.value.reason == reason


def test_pointcloud2_round_trips_with_the_fields_rviz_reads():
    frame = sample_rgbd.render(0)
    crop = CropMap.centre(sample_rgbd.HEIGHT, sample_rgbd.WIDTH)
    depth = metric_depth.sensor_depth_to_grid(
        metric_depth.sensor_depth_metres(frame.sensor_mm, "16UC1"), crop
    )
    rgb = np.full((224, 224, 3), (10, 20, 30), np.uint8)
    labels = np.full((224, 224), 7, np.uint8)
    k = crop.intrinsics_to_grid(sample_rgbd.K)
    for keep_unknown in (False, True):
        cloud = pointcloud.semantic_cloud(depth, k, rgb, labels, keep_unknown=keep_unknown)
        msg = rgbd.pointcloud2(cloud, _header())
        assert msg.header == _header() and msg.header is not _header()
        assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
            ("x", 0, PointField.FLOAT32, 1),
            ("y", 4, PointField.FLOAT32, 1),
            ("z", 8, PointField.FLOAT32, 1),
            ("rgb", 12, PointField.FLOAT32, 1),
            ("label", 16, PointField.UINT32, 1),
        ]
        assert msg.point_step == 20 and msg.row_step == 20 * msg.width
        assert len(msg.data) == msg.row_step * msg.height
        assert msg.is_bigendian == (sys.byteorder == "big")
        assert msg.is_dense == (not keep_unknown)
        back = rgbd.cloud_from_message(msg)
        np.testing.assert_array_equal(back.view(np.uint8), cloud.view(np.uint8))
    assert (msg.height, msg.width) == (224, 224)
