"""Replay a camera rosbag2 through perception_node and record everything it publishes into a new bag.

The input bag (sqlite3 or mcap, read with the ``rosbags`` library) is played through rclpy on its own
topic names (``/camera/image_raw``, ``/camera/camera_info``), which is what a node started with the
package's launch file reads; an in-process node (``node_factory``) is remapped to them. Frames go out
either at the recorded rate or in lock-step: the next frame goes out when the node reports the previous
one done, on ``processed`` or on ``frame_outcome`` (a skipped frame: bad input, no camera_info), so no
frame is dropped and a rejected frame never stalls the replay. Every output topic of the node (and, on
request, the input images) is recorded as serialised CDR into a rosbag2 that ``ros2 bag info`` / ``ros2
bag play`` read, each message at the stamp of the frame it belongs to. An RGB-D bag's registered depth
topic (``depth_topic``, with the camera_info beside it) is played too, each depth frame just before the
colour frame of its stamp, so that a node with ``ros.depth_topic`` pairs them and publishes
``depth/metric`` and ``points``.
"""

from __future__ import annotations

import bisect
import contextlib
import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.serialization import deserialize_message
from rclpy.signals import SignalHandlerOptions
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Header
from tqdm import tqdm

from fourm_ros.errors import UserError
from fourm_ros.ros import topics
from fourm_ros.ros.bag import BagWriter, message_type_name
from fourm_ros.ros.node import MESSAGE_TYPES
from fourm_ros.ros.qos import make_qos

LOG = logging.getLogger("fourm_ros.replay")
INFO_LEAD_S = 0.02
"""Pause between a frame's camera_info and its image: messages of two topics are not ordered by DDS."""
MATCH_SETTLE_S = 2.0
"""Pause between the node's subscription matching the camera publishers and the first frame. DDS can match
the writer side before the reader side (a frame sent at once never arrives: CI lost one so on a loaded
machine), and perception_node moves a best-effort input to reliable within about a second of seeing a
reliable publisher."""
LAST_OUTPUTS_S = 0.5
"""How long to keep recording after the last frame is done: its other outputs are still in flight."""
LANES_JOIN_S = 60.0
"""How long replay waits, at the end, for an in-process node's lanes to finish the frame they compute."""
DEPTH_ENCODINGS = ("16UC1", "32FC1")
"""Encodings of a depth image (mm, m): an image topic with one of them is depth, not the colour camera."""
IMAGE_TYPES = {"sensor_msgs/msg/Image": Image, "sensor_msgs/msg/CompressedImage": CompressedImage}
FRAME_OUTCOME = "frame_outcome"
"""diagnostic_msgs/DiagnosticArray, one per input frame: header = the frame's, level 0 = processed,
1 = skipped with the reason as message (the node's contract with replay)."""

OUTPUT_TYPES = {**MESSAGE_TYPES, "sensor_msgs/msg/PointCloud2": PointCloud2}
"""The message classes of every output recorded (the node's, and the RGB-D ``points``)."""

StampKey = tuple[int, int, str]


class ReplayError(UserError, RuntimeError):
    """The bag cannot be replayed (no camera topic, no node listening, ...); the message says why."""


@dataclass
class ReplaySummary:
    frames_sent: int = 0
    frames_processed: int = 0
    skipped: list[tuple[float, str]] = field(default_factory=list)
    """(stamp in s, reason) of every frame the node reported as skipped on ``frame_outcome``."""
    unanswered: int = 0
    """Lock-step frames the node neither processed nor skipped within the frame timeout."""
    recorded: dict[str, int] = field(default_factory=dict)
    """Messages recorded per topic."""
    seconds: float = 0.0


@dataclass(frozen=True)
class CameraStream:
    image_topic: str
    image_type: type
    info_topic: str | None


@dataclass(frozen=True)
class DepthStream:
    image_topic: str
    info_topic: str | None


def depth_image_topics(reader: Reader) -> list[str]:
    """The bag's raw image topics whose first message is a depth image (16UC1 or 32FC1)."""
    found = []
    for connection in reader.connections:
        if connection.msgtype != "sensor_msgs/msg/Image":
            continue
        for _, _, data in reader.messages(connections=[connection]):
            if deserialize_message(data, Image).encoding in DEPTH_ENCODINGS:
                found.append(connection.topic)
            break
    return sorted(set(found))


def find_depth(reader: Reader, depth_topic: str) -> DepthStream:
    """The registered depth stream of a bag: ``depth_topic`` and the camera_info beside it (if any)."""
    depths = depth_image_topics(reader)
    if depth_topic not in depths:
        raise ReplayError(
            f"{depth_topic} is not a depth image topic (sensor_msgs/Image, {' or '.join(DEPTH_ENCODINGS)}) "
            f"of the bag; depth topics: {depths}"
        )
    info = f"{depth_topic.rsplit('/', 1)[0]}/camera_info"
    infos = {c.topic for c in reader.connections if c.msgtype == "sensor_msgs/msg/CameraInfo"}
    return DepthStream(depth_topic, info if info in infos else None)


def find_camera(reader: Reader, image_topic: str | None = None) -> CameraStream:
    """The camera stream of a bag: its image topic (raw or compressed) and the camera_info beside it
    (depth image topics are not candidates for the colour camera)."""
    depths = set(depth_image_topics(reader)) if image_topic is None else set()
    images = {
        c.topic: c.msgtype for c in reader.connections if c.msgtype in IMAGE_TYPES and c.topic not in depths
    }
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


def node_input_names(camera: CameraStream) -> tuple[str, str]:
    """perception_node's own (relative) input names for this stream: image[/compressed], camera_info."""
    image = topics.COMPRESSED_IMAGE if camera.image_type is CompressedImage else topics.IMAGE
    return image, topics.CAMERA_INFO


def remap_arguments(camera: CameraStream) -> list[str]:
    """``--ros-args -r`` rules that make an in-process perception_node read the bag's own topics."""
    image, info = node_input_names(camera)
    rules = [f"{image}:={camera.image_topic}"]
    if camera.info_topic is not None:
        rules.append(f"{info}:={camera.info_topic}")
    return ["--ros-args", *(arg for rule in rules for arg in ("-r", rule))]


def _stamp_key(header: Header) -> StampKey:
    return header.stamp.sec, header.stamp.nanosec, header.frame_id


def _stamp_ns(header: Header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


class _Recorder:
    """Subscribes (raw) to every output topic and writes what arrives into the output bag, each message
    at its header stamp (messages without a header, the caption string and the class table, at the stamp
    of the last frame sent)."""

    def __init__(self, node: Node, namespace: str, bag: BagWriter, keep: Callable[[str, bytes, type], None]):
        self.bag, self.keep, self.lock = bag, keep, threading.Lock()
        self.counts: dict[str, int] = {}
        self.processed: set[StampKey] = set()
        self.skipped: dict[StampKey, str] = {}
        self.last_sent_ns = 0
        for out in (*topics.OUTPUTS, *topics.RGBD_OUTPUTS):
            qos = make_qos("latched") if out.topic == "segmentation/labels" else make_qos("output", depth=50)
            self._subscribe(node, f"{namespace}/{out.topic}", out.msgtype, qos, out.topic)
        outcome_type = message_type_name(DiagnosticArray)
        self._subscribe(node, f"{namespace}/{FRAME_OUTCOME}", outcome_type, make_qos("output", depth=50))

    def _subscribe(self, node: Node, name: str, msgtype: str, qos, output: str | None = None) -> None:
        kind = DiagnosticArray if output is None else OUTPUT_TYPES[msgtype]
        node.create_subscription(
            kind, name, lambda data: self._write(name, msgtype, kind, output, data), qos, raw=True
        )

    def _write(self, topic: str, msgtype: str, kind: type, output: str | None, data: bytes) -> None:
        message = deserialize_message(data, kind)
        header = message if isinstance(message, Header) else getattr(message, "header", None)
        with self.lock:
            stamp_ns = _stamp_ns(header) if header is not None else self.last_sent_ns
            self.bag.write(topic, msgtype, data, stamp_ns)
            self.counts[topic] = self.counts.get(topic, 0) + 1
            if output == topics.PROCESSED:
                self.processed.add(_stamp_key(header))
            elif output is None:
                self._outcome(message)
        if output is not None:
            self.keep(output, data, kind)

    def _outcome(self, message: DiagnosticArray) -> None:
        key = _stamp_key(message.header)
        for status in message.status:
            level = status.level[0] if isinstance(status.level, bytes) else status.level  # a byte field
            if level == DiagnosticStatus.OK[0]:
                self.processed.add(key)
            else:
                self.skipped[key] = status.message

    def done(self, header: Header) -> bool:
        """The node processed or skipped this frame."""
        key = _stamp_key(header)
        with self.lock:
            return key in self.processed or key in self.skipped


def replay(
    in_bag: str | Path,
    out_bag: str | Path,
    *,
    rate: float | None = None,
    namespace: str = "",
    image_topic: str | None = None,
    depth_topic: str | None = None,
    node_inputs: bool = False,
    record_inputs: bool = False,
    frame_timeout_s: float = 120.0,
    connect_timeout_s: float = 30.0,
    storage: str = "mcap",
    node_factory: Callable[[Context], Node] | None = None,
    keep: Callable[[str, bytes, type], None] = lambda topic, data, kind: None,
    on_input: Callable[[Image | CompressedImage], None] = lambda msg: None,
    progress: bool = False,
) -> ReplaySummary:
    """Play ``in_bag`` into the node and record its outputs into ``out_bag``.

    ``rate``: None = lock-step (as fast as the node consumes frames), else a factor of the recorded rate.
    ``namespace``: the node's namespace, where its outputs are (``/fourm`` with the launch file).
    ``node_inputs``: publish on the node's own input names (``<namespace>/image``,
    ``<namespace>/camera_info``) instead of the bag's topics, for a node started without remapping.
    ``depth_topic``: also play this registered depth topic of the bag (and its camera_info), on the
    bag's own names, each depth frame before the colour frame of its stamp; the node must subscribe to it.
    ``record_inputs``: also record the played images and camera_info (one bag shows input and outputs).
    ``node_factory``: build perception_node in this process (remapped to the bag's topics) instead of
    talking to a running one. ``keep`` / ``on_input``: callbacks that see each recorded output (topic, CDR
    bytes, type) and each input image, e.g. to draw pictures. ``progress``: a progress bar on stderr.
    If the replay fails or is interrupted before anything was recorded, no output bag is left behind.
    """
    summary = ReplaySummary()
    start = time.monotonic()
    prefix = "/" + namespace.strip("/") if namespace.strip("/") else ""
    out_path = Path(out_bag)
    with Reader(Path(in_bag)) as reader:
        camera = find_camera(reader, image_topic)
        depth = find_depth(reader, depth_topic) if depth_topic else None
        context = Context()
        remaps = remap_arguments(camera) if node_factory is not None and not node_inputs else []
        # Ctrl-C stays a KeyboardInterrupt in this thread: the finally below shuts down in order.
        rclpy.init(args=remaps, context=context, signal_handler_options=SignalHandlerOptions.NO)
        executor = SingleThreadedExecutor(context=context)
        nodes: list[Node] = []
        spinner: threading.Thread | None = None
        bag: BagWriter | None = None
        try:
            bag = BagWriter(out_path, storage)
            player = rclpy.create_node("fourm_ros_replay", context=context)
            nodes.append(player)
            image_name, info_name = (
                (f"{prefix}/{name}" for name in node_input_names(camera))
                if node_inputs
                else (camera.image_topic, camera.info_topic or f"{prefix}/{topics.CAMERA_INFO}")
            )
            recorder = _Recorder(player, prefix, bag, keep)
            executor.add_node(player)
            if node_factory is not None:
                nodes.append(node_factory(context))
                executor.add_node(nodes[-1])
            spinner = threading.Thread(target=_spin, args=(executor,), name="replay_executor", daemon=True)
            spinner.start()
            wait_until_started = getattr(nodes[-1], "wait_until_started", None) if node_factory else None
            if wait_until_started is not None:  # perception_node loads in the background; frames meanwhile
                wait_until_started()  # would be dropped (other in-process nodes are ready at once)
            # The camera publishers appear once the node has started: a matched publisher that sends
            # nothing while the node loads its weights would be reported as a silent camera.
            image_pub = player.create_publisher(camera.image_type, image_name, 10)
            info_pub = player.create_publisher(CameraInfo, info_name, 10)
            depth_pubs = (
                None
                if depth is None
                else (
                    player.create_publisher(Image, depth.image_topic, 10),
                    player.create_publisher(CameraInfo, depth.info_topic, 10) if depth.info_topic else None,
                )
            )
            if not _wait(lambda: image_pub.get_subscription_count() > 0, connect_timeout_s):
                raise ReplayError(
                    f"no node subscribes to {image_pub.topic_name}; start perception_node so that it reads "
                    "it (the launch file's defaults read /camera/image_raw), pass --namespace for its "
                    "outputs, or replay with --run-node"
                )
            if depth_pubs is not None and not _wait(
                lambda: depth_pubs[0].get_subscription_count() > 0, connect_timeout_s
            ):
                raise ReplayError(
                    f"no node subscribes to the depth topic {depth.image_topic}; run perception_node with "
                    f"ros.depth_topic set to it (replay --run-node does), or replay without --depth-topic"
                )
            time.sleep(MATCH_SETTLE_S)
            frames = sum(c.msgcount for c in reader.connections if c.topic == camera.image_topic)

            def record(topic: str, message: object) -> None:
                if record_inputs:
                    bag.write_message(topic, message, _stamp_ns(message.header))
                    with recorder.lock:
                        recorder.counts[topic] = recorder.counts.get(topic, 0) + 1

            with tqdm(total=frames, unit="frame", desc="replay", disable=not progress) as bar:

                def played(message: Image | CompressedImage) -> None:
                    on_input(message)
                    bar.update()

                last = _play(
                    reader,
                    camera,
                    (image_pub, info_pub),
                    (depth, depth_pubs),
                    recorder,
                    summary,
                    rate,
                    frame_timeout_s,
                    record,
                    played,
                )
                if last is not None and rate is not None:  # lock-step waited for every frame already
                    _wait_for_frame(recorder, last, frame_timeout_s, summary)
            time.sleep(LAST_OUTPUTS_S)
            with recorder.lock:
                summary.recorded = dict(recorder.counts)
                summary.frames_processed = len(recorder.processed)
                summary.skipped = sorted(
                    (sec + nanosec * 1e-9, reason) for (sec, nanosec, _), reason in recorder.skipped.items()
                )
        except BaseException:
            _discard_if_empty(bag, out_path)
            raise
        finally:
            executor.shutdown()
            if spinner is not None:
                spinner.join()
            for node in reversed(nodes):
                node.destroy_node()
            for node in nodes:  # an in-process perception_node's lanes may still be computing
                if hasattr(node, "join_lanes") and not node.join_lanes(LANES_JOIN_S):
                    LOG.warning("perception_node's lanes still compute after %.0f s", LANES_JOIN_S)
            rclpy.try_shutdown(context=context)
    bag.close()
    summary.seconds = time.monotonic() - start
    return summary


def _spin(executor: SingleThreadedExecutor) -> None:
    """The executor thread: ends quietly when the replay shuts the executor or its context down."""
    with contextlib.suppress(ExternalShutdownException):
        executor.spin()


def _discard_if_empty(bag: BagWriter | None, path: Path) -> None:
    """Close a bag of a failed or interrupted replay; remove it if nothing was recorded into it."""
    if bag is None:
        return
    try:
        bag.close()
    except OSError as error:
        LOG.warning("closing %s failed: %s", path, error)
    if bag.count == 0:
        shutil.rmtree(path, ignore_errors=True)


def _wait(condition: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _wait_for_frame(recorder: _Recorder, header: Header, timeout_s: float, summary: ReplaySummary) -> None:
    """Wait until the node processed or skipped the frame of ``header``; count it if it did neither."""
    if not _wait(lambda: recorder.done(header), timeout_s):
        summary.unanswered += 1
        LOG.warning(
            "no processed / frame_outcome for the frame stamped %.3f s within %.0f s; going on",
            _stamp_ns(header) * 1e-9,
            timeout_s,
        )


def _play(
    reader: Reader,
    camera: CameraStream,
    publishers: tuple,
    depth_stream: tuple,
    recorder: _Recorder,
    summary: ReplaySummary,
    rate: float | None,
    frame_timeout_s: float,
    record: Callable[[str, object], None],
    on_input: Callable[[Image | CompressedImage], None],
) -> Header | None:
    """Publish each frame after the camera_info with its stamp (or the latest before it), so the node
    never pairs an image with the previous frame's calibration, and after the depth frames (with their
    camera_info) stamped up to it; the last frame's header (None: no frame)."""
    image_pub, info_pub = publishers
    depth, (depth_pub, depth_info_pub) = depth_stream if depth_stream[0] is not None else (None, (None, None))
    infos = _by_stamp(reader, camera.info_topic, CameraInfo)
    stamps = sorted(infos)
    depth_frames = _by_stamp(reader, depth.image_topic if depth else None, Image)
    depth_infos = _by_stamp(reader, depth.info_topic if depth else None, CameraInfo)
    depth_stamps, depth_sent = sorted(depth_frames), 0
    images = [c for c in reader.connections if c.topic == camera.image_topic]
    first_ns, wall_start, last = None, time.monotonic(), None
    for _, timestamp, data in reader.messages(connections=images):
        message = deserialize_message(data, camera.image_type)
        if rate is not None:
            first_ns = timestamp if first_ns is None else first_ns
            delay = (timestamp - first_ns) * 1e-9 / rate - (time.monotonic() - wall_start)
            if delay > 0:
                time.sleep(delay)
        key = (message.header.stamp.sec, message.header.stamp.nanosec)
        for depth_key in depth_stamps[depth_sent : bisect.bisect_right(depth_stamps, key)]:
            if depth_key in depth_infos:
                depth_info_pub.publish(depth_infos[depth_key])
                record(depth_info_pub.topic_name, depth_infos[depth_key])
            depth_pub.publish(depth_frames[depth_key])
            record(depth_pub.topic_name, depth_frames[depth_key])
            depth_sent += 1
        earlier = stamps[: bisect.bisect_right(stamps, key)]
        if earlier:
            info_pub.publish(infos[earlier[-1]])
            record(info_pub.topic_name, infos[earlier[-1]])
            time.sleep(INFO_LEAD_S)
        with recorder.lock:
            recorder.last_sent_ns = _stamp_ns(message.header)
        image_pub.publish(message)
        record(image_pub.topic_name, message)
        on_input(message)
        summary.frames_sent += 1
        last = message.header
        if rate is None:
            _wait_for_frame(recorder, message.header, frame_timeout_s, summary)
    return last


def _by_stamp(reader: Reader, topic: str | None, kind: type) -> dict[tuple[int, int], object]:
    """The messages of ``topic`` (none for None) keyed by their header stamp (sec, nanosec)."""
    if topic is None:
        return {}
    messages = {}
    for _, _, data in reader.messages(connections=[c for c in reader.connections if c.topic == topic]):
        message = deserialize_message(data, kind)
        messages[(message.header.stamp.sec, message.header.stamp.nanosec)] = message
    return messages
