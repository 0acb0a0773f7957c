"""Depth-sensor messages in, metric depth and semantic point clouds out (messages only; math is ROS-free).

``depth_to_metres`` reads a registered depth ``sensor_msgs/Image`` (16UC1 millimetres or 32FC1 metres, row
padding and byte order honoured) into float32 metres with NaN where the sensor had no return (REP 118),
with a :class:`~fourm_ros.ros.conversion.BadImageError` and a countable reason for anything else.
``pointcloud2`` packs the points of :func:`fourm_ros.pipeline.pointcloud.semantic_cloud` as
``sensor_msgs/PointCloud2`` with fields x, y, z, rgb (FLOAT32, PCL's packed 0x00RRGGBB) and label (UINT32).
"""

from __future__ import annotations

import array
import sys

import numpy as np
from sensor_msgs.msg import Image, PointCloud2, PointField
from std_msgs.msg import Header

from fourm_ros.pipeline.metric_depth import sensor_depth_metres
from fourm_ros.pipeline.pointcloud import POINT_DTYPE
from fourm_ros.ros.conversion import BadImageError, _check_size, copy_header

DEPTH_ENCODINGS = {"16UC1": "u2", "mono16": "u2", "32FC1": "f4"}


def depth_to_metres(msg: Image) -> np.ndarray:
    """A registered depth image → float32 H×W metres, NaN = no return (see module doc)."""
    if msg.encoding not in DEPTH_ENCODINGS:
        raise BadImageError(
            f"depth image encoding {msg.encoding!r} is not a depth encoding; expected 16UC1 (millimetres) or "
            "32FC1 (metres), REP 118",
            reason="depth encoding",
        )
    _check_size(msg.height, msg.width, f"{msg.encoding} depth image")
    kind = DEPTH_ENCODINGS[msg.encoding]
    itemsize = int(kind[1])
    row_bytes = msg.width * itemsize
    if msg.step < row_bytes or len(msg.data) < msg.step * msg.height:
        raise BadImageError(
            f"{msg.encoding} depth image has step {msg.step} and {len(msg.data)} bytes; expected step >= "
            f"{row_bytes} and at least step·height = {msg.step * msg.height} bytes",
            reason="depth layout",
        )
    dtype = np.dtype(kind).newbyteorder(">" if msg.is_bigendian else "<")
    rows = np.frombuffer(bytes(msg.data), np.uint8, msg.step * msg.height).reshape(msg.height, msg.step)
    values = rows[:, :row_bytes].copy().view(dtype).reshape(msg.height, msg.width)
    native = values.astype(np.dtype(kind).newbyteorder("="))
    return sensor_depth_metres(native, "32FC1" if kind == "f4" else "16UC1")


_FIELDS = (
    ("x", PointField.FLOAT32),
    ("y", PointField.FLOAT32),
    ("z", PointField.FLOAT32),
    ("rgb", PointField.FLOAT32),
    ("label", PointField.UINT32),
)


def pointcloud2(cloud: np.ndarray, header: Header) -> PointCloud2:
    """Points of ``POINT_DTYPE`` (1-D: unorganised, dense; 2-D: organised, NaN where unknown) → message."""
    if cloud.dtype != POINT_DTYPE or cloud.ndim not in (1, 2):
        raise ValueError(
            f"expected a 1-D or 2-D array of POINT_DTYPE points, got {cloud.dtype} {cloud.shape}"
        )
    height, width = (1, cloud.shape[0]) if cloud.ndim == 1 else cloud.shape
    data = array.array("B")
    data.frombytes(np.ascontiguousarray(cloud).tobytes())
    return PointCloud2(
        header=copy_header(header),
        height=height,
        width=width,
        fields=[
            PointField(name=name, offset=POINT_DTYPE.fields[name][1], datatype=kind, count=1)
            for name, kind in _FIELDS
        ],
        is_bigendian=sys.byteorder == "big",
        point_step=POINT_DTYPE.itemsize,
        row_step=POINT_DTYPE.itemsize * width,
        data=data,
        is_dense=bool(cloud.ndim == 1 or np.isfinite(cloud["z"]).all()),
    )


def cloud_from_message(msg: PointCloud2) -> np.ndarray:
    """The points of a message written by :func:`pointcloud2` (for tests and tools)."""
    names = [field.name for field in msg.fields]
    if names != [name for name, _ in _FIELDS] or msg.point_step != POINT_DTYPE.itemsize:
        raise ValueError(f"not an x,y,z,rgb,label cloud: fields {names}, point_step {msg.point_step}")
    points = np.frombuffer(bytes(msg.data), POINT_DTYPE, msg.width * msg.height)
    return points.reshape(msg.height, msg.width) if msg.height > 1 else points
