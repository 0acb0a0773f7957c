"""Replaying a camera bag through the node gives an output bag that matches the input frames one to one."""

import cv2
import numpy as np
import pytest
from rclpy.parameter import Parameter
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader
from std_msgs.msg import Header
from support import banner_share, tiny_components

from fourm_ros import cli
from fourm_ros.pipeline.pipeline import Pipeline
from fourm_ros.ros.bag import write_camera_bag
from fourm_ros.ros.node import MESSAGE_TYPES, PerceptionNode
from fourm_ros.ros.replay import ReplayError, replay

pytestmark = pytest.mark.ros
FAST = {"tasks.human_pose.max_tokens": 10, "tasks.caption.max_tokens": 6}


@pytest.fixture(scope="module")
def components():
    return tiny_components()


def _frames():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(48, 64, 3), (64, 48, 3), (40, 40, 3)]]


def _node_factory(components, **overrides):
    parameters = [Parameter(name, value=value) for name, value in {**FAST, **overrides}.items()]
    return lambda context: PerceptionNode(
        lambda config: Pipeline(config, components), context=context, parameter_overrides=parameters
    )


def _stamps(bag, topic, msgtype):
    with Reader(bag) as reader:
        wanted = [c for c in reader.connections if c.topic == topic]
        messages = [
            deserialize_message(data, MESSAGE_TYPES[msgtype]) for _, _, data in reader.messages(wanted)
        ]
    return [(m.stamp if isinstance(m, Header) else m.header.stamp) for m in messages]


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_replay_records_one_output_per_input_frame_by_stamp(tmp_path, components, storage):
    source = write_camera_bag(tmp_path / "in", _frames(), storage=storage)
    summary = replay(source, tmp_path / "out", node_factory=_node_factory(components), storage=storage)
    assert summary.frames_sent == 3 and summary.frames_processed == 3
    with Reader(source) as reader:
        wanted = [c for c in reader.connections if c.topic == "/camera/image_raw"]
        sent = sorted((m[1]) for m in reader.messages(wanted))
    for topic, msgtype in [
        ("/depth/relative", "sensor_msgs/msg/Image"),
        ("/normals", "sensor_msgs/msg/Image"),
        ("/segmentation", "sensor_msgs/msg/Image"),
        ("/depth/camera_info", "sensor_msgs/msg/CameraInfo"),
        ("/human_pose/poses", "geometry_msgs/msg/PoseArray"),
        ("/processed", "std_msgs/msg/Header"),
    ]:
        stamps = _stamps(tmp_path / "out", topic, msgtype)
        assert sorted(s.sec * 10**9 + s.nanosec for s in stamps) == sent, topic
    with Reader(tmp_path / "out") as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts["/human_pose/markers"] == counts["/caption"] == 3
    assert counts["/segmentation/labels"] == 1


def test_replay_needs_a_listening_node(tmp_path):
    source = write_camera_bag(tmp_path / "in", _frames()[:1])
    with pytest.raises(ReplayError, match="no node subscribes to /image"):
        replay(source, tmp_path / "out", connect_timeout_s=0.5)


def test_replay_needs_a_camera_topic(tmp_path):
    from fourm_ros.ros.bag import BagWriter

    with BagWriter(tmp_path / "in") as bag:
        bag.write_message("/chatter", Header(frame_id="x"), 1)
    with pytest.raises(ReplayError, match="no sensor_msgs/Image or CompressedImage topic"):
        replay(tmp_path / "in", tmp_path / "out", connect_timeout_s=0.5)


def test_cli_replay_runs_the_node_and_draws_pictures(tmp_path, components, monkeypatch, capsys):
    monkeypatch.setattr(Pipeline, "from_config", classmethod(lambda cls, config: cls(config, components)))
    source = write_camera_bag(tmp_path / "in", _frames(), compressed=True)
    args = [
        "replay",
        str(source),
        "-o",
        str(tmp_path / "out"),
        "--run-node",
        "--pictures",
        str(tmp_path / "png"),
    ]
    args += [
        "--random-weights",
        "--set",
        "tasks.human_pose.max_tokens=10",
        "--set",
        "tasks.caption.max_tokens=6",
    ]
    args += ["--set", "ros.input=compressed"]
    assert cli.main(args) == 0
    assert "3 processed" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "png").iterdir()) == [
        "frame_000.png",
        "frame_001.png",
        "frame_002.png",
    ]
    sheet = cv2.imread(str(tmp_path / "png" / "frame_000.png"))[..., ::-1]
    assert banner_share(sheet) > 0.05
