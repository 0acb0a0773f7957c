"""Sample camera bags are real rosbag2 files that rosbags (and so ros2 bag) can read back."""

import numpy as np
import pytest
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from fourm_ros.ros.bag import BagWriter, message_type_name, write_camera_bag


def _frames():
    rng = np.random.default_rng(0)
    return [
        rng.integers(0, 256, (48, 64, 3), dtype=np.uint8),
        rng.integers(0, 256, (60, 40, 3), dtype=np.uint8),
    ]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_raw_camera_bag_round_trips(tmp_path, storage):
    frames = _frames()
    path = write_camera_bag(tmp_path / "bag", frames, rate_hz=4.0, storage=storage)
    with Reader(path) as reader:
        topics = {c.topic: c.msgtype for c in reader.connections}
        assert topics == {
            "/camera/image_raw": "sensor_msgs/msg/Image",
            "/camera/camera_info": "sensor_msgs/msg/CameraInfo",
        }
        images, infos = [], []
        for connection, timestamp, data in reader.messages():
            kind = Image if connection.msgtype.endswith("Image") else CameraInfo
            message = deserialize_message(data, kind)
            (images if kind is Image else infos).append((timestamp, message))
    assert [t for t, _ in images] == [1_700_000_000_000_000_000, 1_700_000_000_250_000_000]
    for (timestamp, image), (_, info), frame in zip(images, infos, frames, strict=True):
        assert image.header.stamp.sec * 10**9 + image.header.stamp.nanosec == timestamp
        assert image.header.frame_id == "camera_optical_frame" == info.header.frame_id
        assert image.header == info.header
        decoded = np.frombuffer(bytes(image.data), np.uint8).reshape(image.height, image.width, 3)
        np.testing.assert_array_equal(decoded, frame)
        assert (info.width, info.height) == (frame.shape[1], frame.shape[0])
        assert info.k[2] == pytest.approx((frame.shape[1] - 1) / 2)


def test_compressed_camera_bag_holds_jpeg(tmp_path):
    path = write_camera_bag(tmp_path / "bag", _frames()[:1], compressed=True)
    with Reader(path) as reader:
        (connection, _, data), *_ = [m for m in reader.messages() if m[0].topic.endswith("compressed")]
        message = deserialize_message(data, CompressedImage)
    assert connection.topic == "/camera/image_raw/compressed"
    assert message.format == "jpeg" and bytes(message.data[:2]) == b"\xff\xd8"


def test_writer_refuses_to_overwrite_and_unknown_storage(tmp_path):
    write_camera_bag(tmp_path / "bag", _frames()[:1])
    with pytest.raises(FileExistsError, match="exists already"):
        BagWriter(tmp_path / "bag")
    with pytest.raises(ValueError, match="storage must be one of"):
        BagWriter(tmp_path / "other", storage="db3")


def test_message_type_name():
    assert message_type_name(Image()) == "sensor_msgs/msg/Image"
    assert message_type_name(CameraInfo) == "sensor_msgs/msg/CameraInfo"
