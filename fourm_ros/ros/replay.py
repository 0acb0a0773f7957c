"""Replay a camera rosbag2 through perception_node and record everything it publishes into a new bag.

The input bag (sqlite3 or mcap, read with the ``rosbags`` library) is played on the node's input topics
through rclpy, either at the recorded rate or in lock-step (the next frame goes out when the node reports
the previous one done on ``processed``, so no frame is dropped). Every output topic of the node is
recorded as serialised CDR into a rosbag2 that ``ros2 bag info`` / ``ros2 bag play`` read.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.serialization import deserialize_message
from rclpy.time import Time
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from tqdm import tqdm

from fourm_ros.errors import UserError
from fourm_ros.ros import topics
from fourm_ros.ros.bag import BagWriter
from fourm_ros.ros.node import MESSAGE_TYPES
from fourm_ros.ros.qos import make_qos

LOG = logging.getLogger("fourm_ros.replay")
INFO_LEAD_S = 0.02
"""Pause between a frame's camera_info and its image: messages of two topics are not ordered by DDS."""
IMAGE_TYPES = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CompressedImage": CompressedImage}


class ReplayError(UserError, RuntimeError):
    """The bag cannot be replayed (no camera topic, no node listening, ...); the message says why."""


@dataclass
class ReplaySummary:
    frames_sent: int = 0
    frames_processed: int = 0
    recorded: dict[str, int] = field(default_factory=dict)
    """Messages recorded per output topic."""
    seconds: float = 0.0


@dataclass(frozen=True)
class CameraStream:
    image_topic: str
    image_type: type
    info_topic: str | None


def find_camera(reader: Reader, image_topic: str | None = None) -> CameraStream:
    """The camera stream of a bag: its image topic (raw or compressed) and the camera_info beside it."""
    images = {c.topic: c.msgtype for c in reader.connections if c.msgtype in IMAGE_TYPES}
    infos = [c.topic for c in reader.connections if c.msgtype == "sensor_msgs/msg/CameraInfo"]
    if image_topic is None:
        if not images:
            found = sorted({f"{c.topic} ({c.msgtype})" for c in reader.connections})
            raise ReplayError(f"no sensor_msgs/Image or CompressedImage topic in the bag; it has {found}")
        if len(images) > 1:
            raise ReplayError(
                f"the bag has several image topics {sorted(images)}; choose one with --image-topic"
            )
        image_topic = next(iter(images))
    elif image_topic not in images:
        raise ReplayError(f"{image_topic} is not an image topic of the bag; image topics: {sorted(images)}")
    base = image_topic.removesuffix("/compressed").rsplit("/", 1)[0]
    info = (
        f"{base}/camera_info" if f"{base}/camera_info" in infos else (infos[0] if len(infos) == 1 else None)
    )
    return CameraStream(image_topic, IMAGE_TYPES[images[image_topic]], info)


def _stamp_key(header: Header) -> tuple[int, int, str]:
    return header.stamp.sec, header.stamp.nanosec, header.frame_id


class _Recorder:
    """Subscribes (raw) to every output topic and writes what arrives into the output bag."""

    def __init__(self, node: Node, namespace: str, bag: BagWriter, keep: Callable[[str, bytes, type], None]):
        self.bag, self.keep, self.lock = bag, keep, threading.Lock()
        self.counts: dict[str, int] = {}
        self.processed: set[tuple[int, int, str]] = set()
        self.clock = node.get_clock()
        for out in topics.OUTPUTS:
            name = f"{namespace.rstrip('/')}/{out.topic}"
            qos = make_qos("latched") if out.topic == "segmentation/labels" else make_qos("output", depth=50)
            node.create_subscription(
                MESSAGE_TYPES[out.msgtype],
                name,
                lambda data, n=name, o=out: self._write(n, o, data),
                qos,
                raw=True,
            )

    def _write(self, topic: str, out: topics.Output, data: bytes) -> None:
        with self.lock:
            self.bag.write(topic, out.msgtype, data, self.clock.now().nanoseconds)
            self.counts[topic] = self.counts.get(topic, 0) + 1
            if out.topic == topics.PROCESSED:
                self.processed.add(_stamp_key(deserialize_message(data, Header)))
        self.keep(out.topic, data, MESSAGE_TYPES[out.msgtype])

    def done(self, header: Header) -> bool:
        with self.lock:
            return _stamp_key(header) in self.processed


def replay(
    in_bag: str | Path,
    out_bag: str | Path,
    *,
    rate: float | None = None,
    namespace: str = "",
    image_topic: str | None = None,
    frame_timeout_s: float = 120.0,
    connect_timeout_s: float = 30.0,
    storage: str = "mcap",
    context: Context | None = None,
    node_factory: Callable[[Context], Node] | None = None,
    keep: Callable[[str, bytes, type], None] = lambda topic, data, kind: None,
    on_input: Callable[[Image | CompressedImage], None] = lambda msg: None,
    progress: bool = False,
) -> ReplaySummary:
    """Play ``in_bag`` into the node and record its outputs into ``out_bag``.

    ``rate``: None = lock-step (as fast as the node consumes frames), else a factor of the recorded rate.
    ``namespace``: the node's namespace (its inputs are ``<ns>/image``, ``<ns>/camera_info``).
    ``node_factory``: build perception_node in this process (else one must be running).
    ``keep`` / ``on_input``: callbacks that see each recorded output (topic, CDR bytes, type) and each
    input image, e.g. to draw pictures. ``progress``: a progress bar of the frames on stderr.
    """
    own_context = context is None
    if own_context:
        context = Context()
        rclpy.init(context=context)
    summary = ReplaySummary()
    start = time.monotonic()
    executor = SingleThreadedExecutor(context=context)
    nodes: list[Node] = []
    try:
        with Reader(Path(in_bag)) as reader, BagWriter(out_bag, storage) as bag:
            camera = find_camera(reader, image_topic)
            player = rclpy.create_node("fourm_ros_replay", context=context)
            nodes.append(player)
            prefix = namespace.rstrip("/")
            input_name = topics.COMPRESSED_IMAGE if camera.image_type is CompressedImage else topics.IMAGE
            image_pub = player.create_publisher(camera.image_type, f"{prefix}/{input_name}", 10)
            info_pub = player.create_publisher(CameraInfo, f"{prefix}/{topics.CAMERA_INFO}", 10)
            recorder = _Recorder(player, prefix, bag, keep)
            executor.add_node(player)
            if node_factory is not None:
                nodes.append(node_factory(context))
                executor.add_node(nodes[-1])
            spinner = threading.Thread(target=executor.spin, daemon=True)
            spinner.start()
            if not _wait(lambda: image_pub.get_subscription_count() > 0, connect_timeout_s):
                raise ReplayError(
                    f"no node subscribes to {image_pub.topic_name}; start perception_node in that namespace "
                    "(or replay with --run-node)"
                )
            frames = sum(c.msgcount for c in reader.connections if c.topic == camera.image_topic)
            with tqdm(total=frames, unit="frame", desc="replay", disable=not progress) as bar:

                def played(message: Image | CompressedImage) -> None:
                    on_input(message)
                    bar.update()

                _play(reader, camera, image_pub, info_pub, recorder, summary, rate, frame_timeout_s, played)
            time.sleep(0.5)  # let the last outputs of the last frame arrive
            summary.recorded = dict(recorder.counts)
            summary.frames_processed = len(recorder.processed)
    finally:
        executor.shutdown()
        for node in nodes:
            node.destroy_node()
        if own_context:
            rclpy.try_shutdown(context=context)
    summary.seconds = time.monotonic() - start
    return summary


def _wait(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _play(reader, camera, image_pub, info_pub, recorder, summary, rate, frame_timeout_s, on_input) -> None:
    """Publish each frame after the camera_info with its stamp (or the latest before it), so the node
    never pairs an image with the previous frame's calibration."""
    infos: dict[tuple[int, int], CameraInfo] = {}
    if camera.info_topic is not None:
        for _, _, data in reader.messages(
            connections=[c for c in reader.connections if c.topic == camera.info_topic]
        ):
            info = deserialize_message(data, CameraInfo)
            infos[(info.header.stamp.sec, info.header.stamp.nanosec)] = info
    stamps = sorted(infos)
    images = [c for c in reader.connections if c.topic == camera.image_topic]
    first_ns, wall_start = None, time.monotonic()
    for _, timestamp, data in reader.messages(connections=images):
        message = deserialize_message(data, camera.image_type)
        if rate is not None:
            first_ns = timestamp if first_ns is None else first_ns
            delay = (timestamp - first_ns) * 1e-9 / rate - (time.monotonic() - wall_start)
            if delay > 0:
                time.sleep(delay)
        key = (message.header.stamp.sec, message.header.stamp.nanosec)
        earlier = stamps[: bisect.bisect_right(stamps, key)]
        if earlier:
            info_pub.publish(infos[earlier[-1]])
            time.sleep(INFO_LEAD_S)
        image_pub.publish(message)
        on_input(message)
        summary.frames_sent += 1
        if rate is None and not _wait(lambda m=message: recorder.done(m.header), frame_timeout_s):
            stamp = Time.from_msg(message.header.stamp).nanoseconds * 1e-9
            LOG.warning(
                "no output for the frame stamped %.3f s within %.0f s; going on", stamp, frame_timeout_s
            )
