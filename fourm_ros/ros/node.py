"""perception_node: camera topics in, 4M-21 depth, normals, segmentation, human poses and captions out.

A thin adapter over :class:`fourm_ros.pipeline.Pipeline` and three lanes (fourm_ros.ros.lanes). The
pipeline is built on a background thread (fourm_ros.ros.startup: weights, ONNX export and engine builds take
minutes), so topics, /diagnostics (``starting: <stage>``) and parameters are served from the first second;
frames that arrive before it is ready are counted as dropped and get the outcome ``dropped: starting``.
Once it is ready, subscription callbacks only park the newest message per camera with the CameraInfo of its
stamp; the intake lane converts and validates it and hands it to the dense lane (depth, normals,
segmentation) and, when ``every_n_frames`` says it is due, to the sequence lane (caption, human poses). Each
lane keeps the newest frame per camera (a replaced one is counted as dropped), batches the cameras, and
publishes with the header of the frame it computed, so the dense outputs never wait for a sequence. Every
input frame gets exactly one ``frame_outcome``. Bad input and faults anywhere on a frame's path are logged
(throttled), counted in /diagnostics under their reason, and the lanes go on with the next frame. Nothing is
published once a shutdown has begun. Settings marked ``runtime`` in the schema can be changed with
``ros2 param set`` while it runs (see :meth:`PerceptionNode._on_set_parameters`).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.context import Context
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header, String
from visualization_msgs.msg import Marker, MarkerArray

from fourm_ros import viz
from fourm_ros.pipeline.config import ConfigError, PipelineConfig
from fourm_ros.pipeline.metric_depth import FitSettings
from fourm_ros.pipeline.pipeline import Pipeline
from fourm_ros.pipeline.results import Results
from fourm_ros.ros import topics
from fourm_ros.ros.camera_info import camera_info_for_grid, camera_info_matches
from fourm_ros.ros.conversion import (
    BadImageError,
    compressed_to_rgb,
    copy_header,
    depth_image,
    image_to_rgb,
    labels_image,
    normals_image,
    rgb_image,
)
from fourm_ros.ros.depth_sensor import DepthSensor, MetricDepthStats
from fourm_ros.ros.diagnostics import PipelineStats, frame_outcome
from fourm_ros.ros.inputs import AdaptiveSubscription, inputs_status
from fourm_ros.ros.labels import labels_message
from fourm_ros.ros.lanes import ApproximateTimeSync, DutyCycle, Lane, LaneStats, Stamped, Turns, fault_reason
from fourm_ros.ros.markers import caption_marker, root_poses, skeleton_markers
from fourm_ros.ros.params import declare_and_read, read_changed
from fourm_ros.ros.qos import describe_qos, make_qos
from fourm_ros.ros.startup import BackgroundStart, LogBridge, StartupError, failure_reason
from fourm_ros.tokenizers.semseg import semseg_palette
from fourm_ros.tokenizers.skeleton import PARENTS

MESSAGE_TYPES = {
    "sensor_msgs/msg/Image": Image,
    "sensor_msgs/msg/CameraInfo": CameraInfo,
    "std_msgs/msg/String": String,
    "std_msgs/msg/Header": Header,
    "visualization_msgs/msg/MarkerArray": MarkerArray,
    "visualization_msgs/msg/Marker": Marker,
    "geometry_msgs/msg/PoseArray": PoseArray,
    "diagnostic_msgs/msg/DiagnosticArray": DiagnosticArray,
}
LOG_THROTTLE_S = 5.0
WORKER_JOIN_S = 0.5
"""How long a shutdown waits for the lanes: long enough to finish publishing, far shorter than a frame
(a frame's inference cannot be interrupted; the process exits without waiting for it)."""
COLOR_OUTPUTS = ("normals/color", "segmentation/color")
CAMERA_INFOS_KEPT = 16
"""Recent CameraInfo messages per camera, to pair an image with the one of its own stamp."""


@dataclass
class _Camera:
    name: str
    publishers: dict[str, Publisher]
    image_topic: str = ""
    """The resolved (namespaced, remapped) names of the camera's inputs, for log lines."""
    info_topic: str = ""
    frames_seen: int = 0
    """Good frames so far (every_n_frames counts them); only the intake lane touches it."""
    infos: deque[CameraInfo] = field(default_factory=lambda: deque(maxlen=CAMERA_INFOS_KEPT))
    lock: threading.Lock = field(default_factory=threading.Lock)
    depth: DepthSensor | None = None

    def info_for(self, stamp: Any) -> CameraInfo | None:
        """The CameraInfo with the image's stamp if one arrived, else the newest (None: none yet)."""
        with self.lock:
            infos = list(self.infos)
        same = [info for info in infos if info.header.stamp == stamp]
        return same[-1] if same else (infos[-1] if infos else None)


@dataclass
class _Received:
    """An input message as it arrived, with the CameraInfo that was current then."""

    camera: _Camera
    msg: Image | CompressedImage
    received_at: float
    info: CameraInfo | None

    @property
    def header(self) -> Header:
        return self.msg.header


@dataclass
class _Frame:
    """A converted, validated frame with the CameraInfo it was checked against and its sequence tasks due."""

    camera: _Camera
    header: Header
    rgb: np.ndarray
    info: CameraInfo | None
    received_at: float
    sequence_tasks: tuple[str, ...]


class PerceptionNode(Node):
    """The ROS 2 node around one :class:`Pipeline`; ``pipeline_factory`` builds it from the parameters on
    the start-up thread (default: :meth:`Pipeline.from_config`, which loads the configured weights and
    reports its stages)."""

    def __init__(
        self,
        pipeline_factory: Callable[[PipelineConfig], Pipeline] | None = None,
        *,
        node_name: str = "perception_node",
        **node_options,
    ):
        # What destroy_node needs exists before anything can fail, so a failed start ends cleanly.
        self._publish_lock = threading.Lock()
        self._stopping = False
        self._lanes: dict[str, Lane] = {}
        self._log_bridge: LogBridge | None = None
        self._start: BackgroundStart[Pipeline] | None = None
        self.pipeline: Pipeline | None = None
        self.ready = threading.Event()
        self.start_failure: str | None = None
        """Why the start failed (logged once); None while starting or once ready."""
        super().__init__(node_name, **node_options)
        self.pipeline_config, self.settings = declare_and_read(self)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        log = self.get_logger()
        self.stats = PipelineStats()
        self.stats.set_stage("waiting for the start-up thread")
        self._palette = semseg_palette()
        input_qos = self.settings.qos.input.profile("input")
        output_qos = self.settings.qos.output.profile("output")
        # Colour pictures get publishers even when off, so that publish_color can be switched at run time.
        outputs = topics.outputs_for(self.pipeline_config.tasks.enabled)
        input_type, input_name = (
            (CompressedImage, topics.COMPRESSED_IMAGE)
            if self.settings.input == "compressed"
            else (Image, topics.IMAGE)
        )
        self._cameras: dict[str, _Camera] = {}
        self._inputs: list[AdaptiveSubscription] = []
        metric = self.settings.depth_topic or self.settings.depth_scale > 0
        self.depth_stats = (
            MetricDepthStats("metric" if self.settings.depth_topic else "up to scale") if metric else None
        )
        for name in self.settings.cameras:
            publishers = {
                out.topic: self.create_publisher(
                    MESSAGE_TYPES[out.msgtype],
                    topics.camera_topic(name, out.topic),
                    make_qos("latched") if out.topic == "segmentation/labels" else output_qos,
                )
                for out in outputs
            }
            publishers[topics.FRAME_OUTCOME] = self.create_publisher(
                DiagnosticArray, topics.camera_topic(name, topics.FRAME_OUTCOME), output_qos
            )
            camera = _Camera(name, publishers)
            if self.depth_stats is not None:
                camera.depth = DepthSensor(
                    self,
                    name,
                    depth_topic=self.settings.depth_topic,
                    slop_s=self.settings.depth_slop_s,
                    depth_scale=self.settings.depth_scale,
                    depth_shift=self.settings.depth_shift,
                    fit_settings=FitSettings(
                        inlier_relative_error=self.settings.depth_fit_inlier_error,
                        min_inlier_ratio=self.settings.depth_fit_min_inlier_ratio,
                    ),
                    stats=self.depth_stats,
                    input_qos=input_qos,
                    output_qos=output_qos,
                )
            self._cameras[name] = camera
            image_input = AdaptiveSubscription(
                self,
                input_type,
                topics.camera_topic(name, input_name),
                lambda msg, c=camera: self._on_image(c, msg),
                input_qos,
                auto_reliability=self.settings.qos.input.auto_reliability(),
            )
            self._inputs.append(image_input)
            camera.image_topic = image_input.topic
            camera.info_topic = self.create_subscription(
                CameraInfo,
                topics.camera_topic(name, topics.CAMERA_INFO),
                lambda msg, c=camera: self._on_info(c, msg),
                input_qos,
            ).topic_name
            if "segmentation/labels" in publishers:
                publishers["segmentation/labels"].publish(labels_message())
            log.info(
                f"input {camera.image_topic} [{image_input.qos_description()}] and "
                f"{camera.info_topic} [{describe_qos(input_qos)}]"
            )
            published = [pub.topic_name for topic, pub in publishers.items() if self._publishes(topic)]
            log.info(f"outputs [{describe_qos(output_qos)}]: {', '.join(published)}")
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(self.settings.diagnostics_period_s, self._publish_diagnostics)
        # Installed last: a node whose construction fails must not leave its handler on the loggers.
        self._log_bridge = LogBridge(self.get_logger())
        self._start = BackgroundStart(
            lambda on_stage: self._build_pipeline(pipeline_factory, on_stage),
            on_stage=self._on_stage,
            on_ready=self._on_ready,
            on_failure=self._on_start_failure,
        )
        self._start.start()

    # ------------------------------------------------------------------ start-up (its own thread)

    def _build_pipeline(
        self, factory: Callable[[PipelineConfig], Pipeline] | None, on_stage: Callable[[str], None]
    ) -> Pipeline:
        if factory is None:
            return Pipeline.from_config(self.pipeline_config, on_stage)
        on_stage("building the pipeline")
        return factory(self.pipeline_config)

    def _on_stage(self, stage: str) -> None:
        self.stats.set_stage(stage)
        self.get_logger().info(f"starting: {stage}")

    def _on_ready(self, pipeline: Pipeline) -> None:
        backend = pipeline.backend
        self.stats.set_engine(
            backend.describe(), pipeline.model_name, pipeline.random_weights, backend.selection_reason
        )
        with self._publish_lock:  # destroy_node either sees the lanes to stop, or they never start
            if self._stopping:
                return
            self.pipeline = pipeline
            try:
                self._start_lanes()
            except Exception as error:  # reported like any failed start, not lost with the start-up thread
                failure = failure_reason(error)
            else:
                failure = None
        if failure is not None:
            self._on_start_failure(failure)
            return
        self.stats.set_stage(None)
        self.ready.set()
        self.get_logger().info(f"pipeline ready: {pipeline.describe()}")

    def _on_start_failure(self, reason: str) -> None:
        self.start_failure = reason
        self.stats.start_failed(reason.splitlines()[0])
        self.get_logger().error(f"cannot start: {reason}")
        with self._publish_lock:
            if not self._stopping:
                self._publish_diagnostics()  # the ERROR reaches /diagnostics before the process exits

    def wait_until_started(self, timeout_s: float | None = None) -> None:
        """Block until the pipeline is ready; StartupError if the start failed or ``timeout_s`` passed."""
        if self._start is not None and not self._start.finished.wait(timeout_s):
            raise StartupError(f"perception_node is still starting after {timeout_s} s")
        if self.start_failure is not None:
            raise StartupError(f"perception_node cannot start: {self.start_failure}")

    def _start_lanes(self) -> None:
        """The intake lane converts and validates; the dense and sequence lanes run the pipeline."""
        settings = self.settings.lanes
        backend = self.pipeline.backend.name
        max_batch = settings.max_batch or (
            self.pipeline_config.engines.max_batch if backend == "tensorrt" else None
        )
        self._turns = Turns(exclusive=backend == "tensorrt")
        self._duty = DutyCycle(settings.sequence_share)
        cameras = tuple(camera.strip("/") for camera in self.settings.cameras)
        self._sync = (
            ApproximateTimeSync(cameras, settings.sync_slop_s)
            if settings.sync_slop_s > 0 and len(cameras) > 1
            else None
        )
        self._primary = "dense" if self.pipeline.dense_tasks else "sequence"

        def stats(name: str) -> LaneStats:
            return LaneStats(
                name, watchdog_factor=settings.watchdog_factor, watchdog_min_s=settings.watchdog_min_s
            )

        def lane(name: str, process: Callable, **options: Any) -> Lane:
            return Lane(
                name,
                process,
                on_drop=lambda item: self._dropped(name, item),
                on_fault=lambda items, reason, error: self._faulted(name, items, reason, error),
                stats=stats(name),
                **options,
            )

        # torch.set_num_threads acts on the calling thread and on threads that first use torch later, so each
        # lane sets an explicit count, read here before any lane changed it.
        default_threads = self.pipeline_config.threads or torch.get_num_threads()
        lanes = {"intake": lane("intake", self._convert)}
        if self.pipeline.dense_tasks:
            lanes["dense"] = lane(
                "dense",
                self._run_dense,
                max_batch=max_batch,
                setup=_torch_threads(settings.dense_threads or default_threads),
            )
        if self.pipeline.sequence_tasks:
            lanes["sequence"] = lane(
                "sequence",
                self._run_sequences,
                max_batch=max_batch,
                group_by=lambda frame: frame.sequence_tasks,
                setup=_torch_threads(settings.sequence_threads or default_threads),
            )
        # Started only once all exist, and published whole: /diagnostics reads the dict on another thread.
        self._intake = lanes["intake"]
        self._lanes = lanes
        for started in lanes.values():
            started.start()

    # ------------------------------------------------------------------ callbacks (executor thread)

    def _publishes(self, topic: str) -> bool:
        return self.settings.publish_color or topic not in COLOR_OUTPUTS

    def _on_set_parameters(self, parameters: list[Parameter]) -> SetParametersResult:
        """Accept a change of run-time settings (validated by the same schema); refuse anything else, and
        pipeline settings while the pipeline is still being built."""
        try:
            pipeline_config, settings = read_changed(self, parameters, self.settings)
            if pipeline_config != self.pipeline_config:
                if self.pipeline is None:
                    raise ConfigError(
                        "the node is still starting; change pipeline settings once /diagnostics says running"
                    )
                self.pipeline.reconfigure(pipeline_config)
        except ConfigError as error:
            return SetParametersResult(successful=False, reason=str(error))
        self.pipeline_config, self.settings = pipeline_config, settings
        changes = ", ".join(f"{p.name}={p.value}" for p in parameters)
        self.get_logger().info(f"parameters changed: {changes}")
        return SetParametersResult(successful=True)

    def _on_image(self, camera: _Camera, msg: Image | CompressedImage) -> None:
        now = self.get_clock().now().nanoseconds * 1e-9
        self.stats.input_received(Time.from_msg(msg.header.stamp).nanoseconds * 1e-9, now)
        if not self.ready.is_set():
            self.stats.frame_dropped_while_starting()
            self._publish_outcome(_Received(camera, msg, time.monotonic(), None), "dropped: starting")
            return
        received = _Received(camera, msg, time.monotonic(), camera.info_for(msg.header.stamp))
        self._intake.submit(camera.name, [received])

    def _on_info(self, camera: _Camera, msg: CameraInfo) -> None:
        with camera.lock:
            camera.infos.append(msg)

    def _publish_diagnostics(self) -> None:
        for subscription in self._inputs:
            subscription.refresh()
        name = self.get_fully_qualified_name()
        lanes = [lane.stats.snapshot() for lane in self._lanes.values()]
        array = self.stats.to_diagnostic_array(self.get_clock().now().to_msg(), name, lanes)
        array.status.append(inputs_status(name, [subscription.report() for subscription in self._inputs]))
        if self.depth_stats is not None:
            array.status.append(self.depth_stats.status(name))
        self._diagnostics.publish(array)

    # ------------------------------------------------------------------ intake lane

    def _convert(self, items: list[_Received]) -> None:
        for item in items:
            frame = self._frame(item)
            if frame is None:
                continue
            self._intake.stats.processed(item.received_at)
            if self._sync is None:
                self._submit(frame.camera.name, [frame])
                continue
            stamp_ns = Time.from_msg(frame.header.stamp).nanoseconds
            sets, discarded = self._sync.add(Stamped(frame.camera.name, stamp_ns, frame))
            for old in discarded:
                self._outcome_dropped(old.item, "dropped: no frame of every camera within the slop")
            for found in sets:
                self._submit("time-aligned set", [member.item for member in found])

    def _frame(self, item: _Received) -> _Frame | None:
        """The frame of ``item``, or None after counting and reporting why it cannot be used."""
        camera = item.camera
        try:
            if isinstance(item.msg, CompressedImage):
                rgb = compressed_to_rgb(item.msg)
            else:
                rgb = image_to_rgb(item.msg, mono16_range=self.settings.mono16_range)
        except BadImageError as error:
            self._bad(item, error.reason, f"{camera.image_topic}: dropped a bad image: {error}")
            return None
        except Exception as error:
            self._fault_inside("intake", [item], "conversion", error)
            return None
        # The CameraInfo of the frame's own stamp if it has arrived by now, else the one current at receipt:
        # a newer CameraInfo (another size or K) cannot change what the frame is validated and published with.
        same_stamp = camera.info_for(item.header.stamp)
        info = (
            same_stamp
            if same_stamp is not None and same_stamp.header.stamp == item.header.stamp
            else item.info
        )
        problem = _camera_info_problem(info, rgb.shape[1], rgb.shape[0])
        if problem is not None and self.settings.require_camera_info:
            detail = (
                "none received yet"
                if info is None
                else f"it is {info.width}×{info.height}, the image {rgb.shape[1]}×{rgb.shape[0]}"
            )
            self._bad(
                item,
                problem,
                f"{camera.info_topic}: {problem} ({detail}); frame skipped. "
                "Set ros.require_camera_info false to process frames without it.",
            )
            return None
        index, camera.frames_seen = camera.frames_seen, camera.frames_seen + 1
        due = tuple(
            task
            for task in self.pipeline.sequence_tasks
            if index % getattr(self.pipeline_config.tasks, task).every_n_frames == 0
        )
        return _Frame(camera, item.header, rgb, info if problem is None else None, item.received_at, due)

    def _submit(self, key: str, frames: list[_Frame]) -> None:
        if "dense" in self._lanes:
            self._lanes["dense"].submit(key, frames)
        if "sequence" in self._lanes:
            due = [frame for frame in frames if frame.sequence_tasks]
            if due:
                self._lanes["sequence"].submit(key, due)
            if self._primary == "sequence":
                for frame in frames:
                    if not frame.sequence_tasks:
                        self._outcome_dropped(frame, "skipped: no task due for this frame (every_n_frames)")

    # ------------------------------------------------------------------ dense and sequence lanes

    def _sensors(self, frames: list[_Frame]) -> list[np.ndarray | None]:
        """Each frame's registered sensor depth (None: no depth sensor, or no depth image of its stamp)."""
        sensors = []
        for frame in frames:
            height, width = frame.rgb.shape[:2]
            depth = frame.camera.depth
            found = None if depth is None else depth.for_frame(frame.header, width, height, frame.info)
            sensors.append(found)
        return sensors

    def _run_dense(self, frames: list[_Frame]) -> None:
        sensors = self._sensors(frames)
        with self._turns.held():
            results = self.pipeline.dense(
                [frame.rgb for frame in frames], depth=sensors if self.pipeline.takes_depth else None
            )
        for frame, result, sensor in zip(frames, results, sensors, strict=True):
            self._deliver("dense", frame, result, sensor)

    def _run_sequences(self, frames: list[_Frame]) -> None:
        sensors = self._sensors(frames) if self.pipeline.takes_depth else None
        self._duty.start()
        try:
            with self._turns.held():
                results = self.pipeline.sequences(
                    [frame.rgb for frame in frames],
                    frames[0].sequence_tasks,
                    depth=sensors,
                    pause=self._turns.handing_over(self._pause_sequence),
                )
        except _Stopping:  # ended on purpose: not a fault, nothing to publish
            self.get_logger().info("sequence lane: generation ended early, the node is shutting down")
            return
        for frame, result in zip(frames, results, strict=True):
            self._deliver("sequence", frame, result)

    def _pause_sequence(self) -> None:
        """Between generation steps: give the dense lane its share, and end a generation once the node stops
        (a whole generation can take minutes on a CPU; a shutdown should not wait for it)."""
        if self._stopping:
            raise _Stopping("the node is shutting down")
        self._duty.pause()

    def _deliver(self, lane: str, frame: _Frame, result: Results, sensor: np.ndarray | None = None) -> None:
        """Build, then publish every message of one frame's results; a fault is that frame's alone."""
        primary = lane == self._primary
        try:
            messages = self._messages(frame, result, primary)
        except Exception as error:
            self._fault_inside(lane, [frame], "message building", error)
            return
        failure: Exception | None = None
        with self._publish_lock:  # a shutdown that began during inference publishes nothing more
            if self._stopping:
                return
            for topic, message in messages:
                try:
                    frame.camera.publishers[topic].publish(message)
                except Exception as error:  # the other topics still get their message
                    failure = failure or error
            if primary and failure is None:  # metric depth, then every output is out: say so
                try:
                    if frame.camera.depth is not None and "dense" in self._lanes:
                        frame.camera.depth.publish(copy_header(frame.header), result, sensor, frame.info)
                    frame.camera.publishers[topics.PROCESSED].publish(copy_header(frame.header))
                except Exception as error:
                    failure = error
        if failure is not None:
            self._fault_inside(lane, [frame], "publishing", failure)
            return
        self._lanes[lane].stats.processed(frame.received_at)
        if primary:
            self.stats.frame_processed(result.timings)
            self._publish_outcome(frame, None)
        else:
            self.stats.stage_timings({k: v for k, v in result.timings.items() if k != "preprocess"})

    def _messages(self, frame: _Frame, result: Results, primary: bool) -> list[tuple[str, Any]]:
        header = copy_header(frame.header)
        out = frame.camera.publishers
        messages: list[tuple[str, Any]] = []
        if result.depth is not None:
            messages.append(("depth/relative", depth_image(result.depth, header)))
        if result.normals is not None:
            messages.append(("normals", normals_image(result.normals, header)))
            if self._publishes("normals/color"):
                colour = viz.optical_normals_to_rgb(result.normals)
                messages.append(("normals/color", rgb_image(colour, header)))
        if result.labels is not None:
            messages.append(("segmentation", labels_image(result.labels, header)))
            if self._publishes("segmentation/color"):
                overlay = viz.segmentation_overlay(result.grid_rgb, result.labels, self._palette)
                messages.append(("segmentation/color", rgb_image(overlay, header)))
        if result.persons is not None:
            persons = [person for person in result.persons if person.valid]
            joints = [person.joints_3d for person in persons]
            messages.append(("human_pose/markers", skeleton_markers(joints, PARENTS, header, lifetime_s=0.0)))
            positions = np.array([person.joints_3d[0] for person in persons]).reshape(-1, 3)
            rotations = np.array([person.global_orient for person in persons]).reshape(-1, 3, 3)
            messages.append(("human_pose/poses", root_poses(positions, rotations, header)))
        if result.caption is not None:
            messages.append(("caption", String(data=result.caption)))
            messages.append(("caption/marker", caption_marker(result.caption, header)))
        infos = [topic for topic in topics.GRID_CAMERA_INFOS if topic in out]
        if primary and infos and frame.info is not None:
            # the grid's CameraInfo beside each dense image topic (image_transport's convention), built
            # from the CameraInfo the frame was validated against
            grid_info = camera_info_for_grid(frame.info, result.crop, header)
            messages += [(topic, grid_info) for topic in infos]
        return messages

    # ------------------------------------------------------------------ outcomes (any thread)

    def _bad(self, item: _Received, reason: str, log: str) -> None:
        self.stats.bad_message(reason)
        self.get_logger().warning(log, throttle_duration_sec=LOG_THROTTLE_S)
        self._publish_outcome(item, f"bad input: {reason}")

    def _dropped(self, lane: str, item: _Received | _Frame) -> None:
        if lane in ("intake", self._primary):
            self._outcome_dropped(item, "dropped: replaced by a newer frame")

    def _outcome_dropped(self, item: _Received | _Frame, reason: str) -> None:
        self.stats.frame_dropped()
        self._publish_outcome(item, reason)

    def _fault_inside(self, lane: str, items: list[_Received | _Frame], stage: str, error: Exception) -> None:
        reason = fault_reason(stage, error)
        self._lanes[lane].stats.failed(reason, str(error))
        self._faulted(lane, items, reason, error)

    def _faulted(self, lane: str, items: list[_Received | _Frame], reason: str, error: BaseException) -> None:
        """A fault on the path of ``items`` (already counted by the lane): logged, counted in the node's
        totals and reported as the frames' outcome if ``lane`` decides it; the lane goes on."""
        self.get_logger().error(
            f"{lane} lane, camera {items[0].camera.name or '(no prefix)'}: {reason}: {error}",
            throttle_duration_sec=LOG_THROTTLE_S,
        )
        if lane in ("intake", self._primary):
            for item in items:
                self.stats.frame_failed(reason, str(error))
                self._publish_outcome(item, f"failed: {reason}: {error}")

    def _publish_outcome(self, item: _Received | _Frame, problem: str | None) -> None:
        """The one ``frame_outcome`` of an input frame: None = processed, else why it was not."""
        publisher = item.camera.publishers.get(topics.FRAME_OUTCOME)
        if publisher is None:
            return
        try:
            with self._publish_lock:
                if self._stopping:
                    return
                publisher.publish(frame_outcome(item.header, item.camera.name, problem))
        except Exception as error:
            self.get_logger().error(
                f"could not publish {topics.FRAME_OUTCOME}: {error}", throttle_duration_sec=LOG_THROTTLE_S
            )

    def destroy_node(self) -> None:
        """Stop publishing and destroy the node without waiting for a frame in inference or a start-up
        in progress: both can take minutes and cannot be interrupted (fourm_ros.ros.main says how the process
        ends all the same)."""
        with self._publish_lock:
            self._stopping = True
        deadline = time.monotonic() + WORKER_JOIN_S
        for lane in self._lanes.values():
            lane.stop(timeout_s=max(0.0, deadline - time.monotonic()))
        if self._log_bridge is not None:
            self._log_bridge.remove()
            self._log_bridge = None
        super().destroy_node()

    def join_lanes(self, timeout_s: float) -> bool:
        """Wait for the lanes' threads to end after :meth:`destroy_node` (a sequence generation ends at its
        next step, a dense frame when it is done): an in-process user such as replay must not leave the
        interpreter while they still compute. True when all ended within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        for lane in self._lanes.values():
            lane.stop(timeout_s=max(0.0, deadline - time.monotonic()))
        return not any(lane.alive for lane in self._lanes.values())


class _Stopping(Exception):
    """Ends a sequence generation between two steps when the node shuts down."""


def _camera_info_problem(info: CameraInfo | None, width: int, height: int) -> str | None:
    if info is None:
        return "missing camera_info"
    if not camera_info_matches(info, width, height):
        return "camera_info size mismatch"
    return None


def _torch_threads(count: int) -> Callable[[], None]:
    """Sets torch's intra-op threads of the calling (lane worker) thread: torch keeps them per thread."""
    return lambda: torch.set_num_threads(count)


def _flat_parameters(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings → ROS parameter names and values (None → '', tuples → lists)."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flat_parameters(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = (
                "" if value is None else (list(value) if isinstance(value, tuple) else value)
            )
    return flat


def node_factory(settings: dict[str, Any], namespace: str = "") -> Callable[[Context], PerceptionNode]:
    """Builds perception_node in a given rclpy context with ``settings`` (nested, as in the YAML file)."""
    parameters = [Parameter(name, value=value) for name, value in _flat_parameters(settings).items()]
    return lambda context: PerceptionNode(
        context=context, namespace=namespace or None, parameter_overrides=parameters
    )
