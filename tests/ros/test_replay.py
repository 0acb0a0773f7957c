"""Replaying a camera bag through the node gives an output bag that matches the input frames one to one."""

import dataclasses
import signal
import subprocess
import sys
import threading
import time

import cv2
import numpy as np
import pytest
import rclpy
import rclpy.node
import yaml
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from support import banner_share, tiny_components

from fourm_ros import cli, sample_rgbd
from fourm_ros.pipeline.pipeline import Pipeline
from fourm_ros.pipeline.preprocess import CropMap
from fourm_ros.ros.bag import CAMERA_FRAME, ros_distro, write_camera_bag, write_rgbd_bag
from fourm_ros.ros.node import MESSAGE_TYPES, PerceptionNode
from fourm_ros.ros.replay import OUTPUT_TYPES, ReplayError, replay

pytestmark = pytest.mark.ros
FAST = {"tasks.human_pose.max_tokens": 10, "tasks.caption.max_tokens": 6}


@pytest.fixture(scope="module")
def components():
    return tiny_components()


def _frames():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(48, 64, 3), (64, 48, 3), (40, 40, 3)]]


def _node_factory(components, pipeline=Pipeline, **overrides):
    parameters = [Parameter(name, value=value) for name, value in {**FAST, **overrides}.items()]
    return lambda context: PerceptionNode(
        lambda config: pipeline(config, components), context=context, parameter_overrides=parameters
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


def test_replay_needs_a_listening_node_and_leaves_no_empty_bag(tmp_path):
    source = write_camera_bag(tmp_path / "in", _frames()[:1])
    with pytest.raises(ReplayError, match="no node subscribes to /camera/image_raw"):
        replay(source, tmp_path / "out", connect_timeout_s=0.5)
    assert not (tmp_path / "out").exists()


class _SlowStartingNode(rclpy.node.Node):
    """Stands for perception_node loading its weights: it listens to the camera from the start, and notes
    how many camera publishers it saw when its start finished."""

    def __init__(self, context):
        super().__init__("slow_starting", context=context)
        self.create_subscription(Image, "/camera/image_raw", lambda msg: None, 10)
        self.publishers_while_starting: int | None = None

    def wait_until_started(self):
        time.sleep(0.5)
        self.publishers_while_starting = self.count_publishers("/camera/image_raw")


def test_replay_publishes_the_camera_only_once_the_node_has_started(tmp_path):
    """A camera publisher matched while the node loads would send nothing for seconds, and the node would
    warn that the camera's frames are lost in transport (as make demo did)."""
    started = []
    source = write_camera_bag(tmp_path / "in", _frames()[:1])

    def factory(context):
        started.append(_SlowStartingNode(context))
        return started[-1]

    replay(source, tmp_path / "out", node_factory=factory, frame_timeout_s=0.5, connect_timeout_s=5)
    assert started[0].publishers_while_starting == 0


def test_replay_needs_a_camera_topic(tmp_path):
    from fourm_ros.ros.bag import BagWriter

    with BagWriter(tmp_path / "in") as bag:
        bag.write_message("/chatter", Header(frame_id="x"), 1)
    with pytest.raises(ReplayError, match="no sensor_msgs/Image or CompressedImage topic"):
        replay(tmp_path / "in", tmp_path / "out", connect_timeout_s=0.5)


def test_cli_replay_runs_the_node_and_draws_pictures(tmp_path, components, monkeypatch, capsys):
    monkeypatch.setattr(
        Pipeline, "from_config", classmethod(lambda cls, config, on_stage=None: cls(config, components))
    )
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


class _LaunchedNode:
    """perception_node as perception.launch.py starts it: namespace fourm, inputs remapped to /camera/*,
    in its own context and executor (a separate process would behave the same)."""

    def __init__(self, node_factory):
        self.context = rclpy.Context()
        rclpy.init(
            args=["--ros-args", "-r", "image:=/camera/image_raw", "-r", "camera_info:=/camera/camera_info"],
            context=self.context,
        )
        self.node = node_factory(self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def close(self):
        self.executor.shutdown()
        self.thread.join()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self.context)


def test_readme_recipe_replays_the_bag_topics_into_a_launched_node(tmp_path, components):
    """`fourm-ros replay my_bag -o out --namespace /fourm --record-inputs` next to a default launch."""
    parameters = [Parameter(name, value=value) for name, value in FAST.items()]
    launched = _LaunchedNode(
        lambda context: PerceptionNode(
            lambda config: Pipeline(config, components),
            context=context,
            namespace="fourm",
            parameter_overrides=parameters,
        )
    )
    try:
        source = write_camera_bag(tmp_path / "in", _frames())
        summary = replay(source, tmp_path / "out", namespace="/fourm", record_inputs=True)
    finally:
        launched.close()
    assert summary.frames_sent == summary.frames_processed == 3 and not summary.skipped
    with Reader(source) as reader:
        sent = sorted(t for _, t, _ in reader.messages([c for c in reader.connections if "image" in c.topic]))
    with Reader(tmp_path / "out") as reader:
        times = {c.topic: [] for c in reader.connections}
        for connection, timestamp, data in reader.messages():
            message = deserialize_message(data, MESSAGE_TYPES[connection.msgtype])
            header = message if isinstance(message, Header) else getattr(message, "header", None)
            if header is not None:  # message time = the header stamp of the frame it came from
                assert timestamp == header.stamp.sec * 10**9 + header.stamp.nanosec, connection.topic
            times[connection.topic].append(timestamp)
    for topic in ("/camera/image_raw", "/camera/camera_info", "/fourm/depth/relative", "/fourm/processed"):
        assert sorted(times[topic]) == sent, topic
    for topic in (
        "/fourm/depth/camera_info",
        "/fourm/normals/camera_info",
        "/fourm/segmentation/camera_info",
    ):
        assert sorted(times[topic]) == sent, topic
    assert "grid/camera_info" not in " ".join(times)
    metadata = yaml.safe_load((tmp_path / "out" / "metadata.yaml").read_text())
    assert metadata["rosbag2_bagfile_information"]["ros_distro"] == ros_distro() != "rosbags"


class _RejectingNode:
    """A stand-in for perception_node that keeps the frame_outcome contract: one DiagnosticArray per input
    frame with its header; the frames in ``rejected`` (by stamp second) are skipped, the rest processed."""

    def __init__(self, context, rejected):
        self.node = rclpy.create_node("rejecting_node", context=context)
        self.rejected = rejected
        self.outcome = self.node.create_publisher(DiagnosticArray, "frame_outcome", 10)
        self.processed = self.node.create_publisher(Header, "processed", 10)
        self.node.create_subscription(Image, "/camera/image_raw", self._on_image, 10)

    def _on_image(self, msg):
        skipped = msg.header.stamp.sec in self.rejected
        status = DiagnosticStatus(
            name="",
            level=DiagnosticStatus.WARN if skipped else DiagnosticStatus.OK,
            message="bad encoding 'rgb9'" if skipped else "processed",
        )
        self.outcome.publish(DiagnosticArray(header=msg.header, status=[status]))
        if not skipped:
            self.processed.publish(msg.header)


def test_lock_step_goes_past_frames_the_node_skips_and_reports_them(tmp_path):
    source = write_camera_bag(tmp_path / "in", _frames(), rate_hz=1.0, start_ns=10 * 10**9)
    start = time.monotonic()
    summary = replay(
        source,
        tmp_path / "out",
        frame_timeout_s=60.0,
        node_factory=lambda context: _RejectingNode(context, rejected={11}).node,
    )
    assert time.monotonic() - start < 30  # not a frame timeout: the skip answered the frame
    assert summary.frames_sent == 3 and summary.frames_processed == 2 and summary.unanswered == 0
    assert summary.skipped == [(11.0, "bad encoding 'rgb9'")]
    assert summary.recorded["/frame_outcome"] == 3


def test_rate_mode_records_the_last_frames_outputs(tmp_path, components):
    source = write_camera_bag(tmp_path / "in", _frames(), rate_hz=20.0)
    summary = replay(source, tmp_path / "out", rate=1.0, node_factory=_node_factory(components))
    assert summary.unanswered == 0
    last = max(
        _stamps(tmp_path / "in", "/camera/image_raw", "sensor_msgs/msg/Image"),
        key=lambda s: (s.sec, s.nanosec),
    )
    assert last in _stamps(tmp_path / "out", "/processed", "std_msgs/msg/Header")
    assert last in _stamps(tmp_path / "out", "/depth/relative", "sensor_msgs/msg/Image")


def test_ctrl_c_ends_replay_without_a_traceback_or_an_empty_bag(tmp_path):
    source = write_camera_bag(tmp_path / "in", _frames()[:1])
    command = "import sys; from fourm_ros import cli; sys.exit(cli.main(sys.argv[1:]))"
    process = subprocess.Popen(
        [sys.executable, "-c", command, "--quiet", "replay", str(source), "-o", str(tmp_path / "out")],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240  # torch's import alone can take a minute on a loaded machine
    while not (tmp_path / "out").exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)  # the output bag is opened, then replay waits (30 s) for a node to subscribe
    assert (tmp_path / "out").exists(), "replay did not open its output bag"
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "terminate called" not in stderr
    assert "replay interrupted" in stderr
    assert not (tmp_path / "out").exists()


class _SceneDepthPipeline(Pipeline):
    """The tiny random pipeline with the synthetic RGB-D scene's exact relative depth (random weights cannot
    predict depth; a trusted fit to the sensor is what makes the node publish depth/metric and points)."""

    def dense(self, frames, depth=None):  # the node's dense lane
        crop = CropMap.centre(sample_rgbd.HEIGHT, sample_rgbd.WIDTH)
        truth, _, _ = sample_rgbd.ray_cast(crop.intrinsics_to_grid(sample_rgbd.K), crop.size, crop.size)
        relative = ((truth - truth.mean()) / truth.std()).astype(np.float32)
        return [dataclasses.replace(r, depth=relative) for r in super().dense(frames, depth)]


def test_replay_plays_the_depth_topic_and_records_metric_depth_and_points(tmp_path, components):
    frame = sample_rgbd.render(0)
    source = write_rgbd_bag(tmp_path / "in", [(frame.rgb, frame.sensor_mm)] * 2, sample_rgbd.K)
    dense_only = {f"tasks.{task}.enabled": False for task in ("normals", "caption", "human_pose")}
    node = _node_factory(
        components, _SceneDepthPipeline, **dense_only, **{"ros.depth_topic": "/camera/depth/image_raw"}
    )
    summary = replay(
        source, tmp_path / "out", depth_topic="/camera/depth/image_raw", node_factory=node, record_inputs=True
    )
    assert summary.frames_sent == summary.frames_processed == 2
    colour = _stamps(source, "/camera/image_raw", "sensor_msgs/msg/Image")
    assert _stamps(tmp_path / "out", "/camera/depth/image_raw", "sensor_msgs/msg/Image") == colour
    assert len(_stamps(tmp_path / "out", "/camera/depth/camera_info", "sensor_msgs/msg/CameraInfo")) == 2
    with Reader(tmp_path / "out") as reader:
        wanted = [c for c in reader.connections if c.topic in ("/points", "/depth/metric")]
        outputs = {c.topic: [] for c in wanted}
        for connection, timestamp, data in reader.messages(wanted) if wanted else ():
            message = deserialize_message(data, OUTPUT_TYPES[connection.msgtype])
            assert message.header.frame_id == CAMERA_FRAME
            assert timestamp == message.header.stamp.sec * 10**9 + message.header.stamp.nanosec
            outputs[connection.topic].append(message.header.stamp)
    # one depth/metric and one cloud per colour frame, at its stamp
    assert outputs.get("/points") == outputs.get("/depth/metric") == colour


def test_replay_refuses_a_depth_topic_the_bag_does_not_have(tmp_path):
    source = write_camera_bag(tmp_path / "in", _frames()[:1])
    with pytest.raises(ReplayError, match="not a depth image topic"):
        replay(source, tmp_path / "out", depth_topic="/camera/depth/image_raw", connect_timeout_s=0.5)


def test_cli_finds_the_bags_depth_topic_for_a_node_with_a_depth_topic(tmp_path):
    frame = sample_rgbd.render(0)
    rgbd = write_rgbd_bag(tmp_path / "rgbd", [(frame.rgb, frame.sensor_mm)], sample_rgbd.K)
    with_depth = {"ros": {"depth_topic": "depth/image_raw"}}
    assert cli._bag_depth_topic(rgbd, with_depth) == "/camera/depth/image_raw"
    assert cli._bag_depth_topic(rgbd, {}) is None  # the node reads no depth: none is played
    colour_only = write_camera_bag(tmp_path / "colour", _frames()[:1])
    with pytest.raises(ReplayError, match="0 depth image topics"):
        cli._bag_depth_topic(colour_only, with_depth)
