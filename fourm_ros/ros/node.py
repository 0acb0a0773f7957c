"""perception_node: camera topics in, 4M-21 depth, normals, segmentation, human poses and captions out.

A thin adapter over :class:`fourm_ros.pipeline.Pipeline`. The pipeline is built on a background thread
(fourm_ros.ros.startup: weights, ONNX export and engine builds take minutes), so topics, /diagnostics
(``starting: <stage>``) and parameters are served from the first second; frames that arrive before it is
ready are counted as dropped. Subscription callbacks only park the newest message per camera; a worker
thread converts, batches the cameras into one pipeline call, and publishes, so the executor never blocks.
A message that arrives while the previous one still waits is replaced (the newest frame wins) and counted
as dropped. Every output carries the header of the frame it came from. Bad input is logged (throttled),
counted in /diagnostics, and the node goes on with the next frame. Settings marked ``runtime`` in the
schema can be changed with ``ros2 param set`` while it runs (see :meth:`PerceptionNode._on_set_parameters`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
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
from fourm_ros.ros.diagnostics import PipelineStats
from fourm_ros.ros.inputs import AdaptiveSubscription, inputs_status
from fourm_ros.ros.labels import labels_message
from fourm_ros.ros.markers import caption_marker, root_poses, skeleton_markers
from fourm_ros.ros.params import declare_and_read, read_changed
from fourm_ros.ros.qos import describe_qos, make_qos
from fourm_ros.ros.startup import BackgroundStart, LogBridge, StartupError
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
}
LOG_THROTTLE_S = 5.0
SKELETON_LIFETIME_S = 2.0
WORKER_JOIN_S = 0.5
"""How long a shutdown waits for the worker: long enough to finish publishing, far shorter than a frame
(a frame's inference cannot be interrupted; the process exits without waiting for it)."""
COLOR_OUTPUTS = ("normals/color", "segmentation/color")


@dataclass
class _Camera:
    name: str
    publishers: dict[str, Publisher]
    image_topic: str = ""
    """The resolved (namespaced, remapped) names of the camera's inputs, for log lines."""
    info_topic: str = ""
    info: CameraInfo | None = None
    depth: DepthSensor | None = None


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
        self._condition = threading.Condition()
        self._publish_lock = threading.Lock()
        self._pending: dict[str, Image | CompressedImage] = {}
        self._stopping = False
        self._worker: threading.Thread | None = None
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
        with self._condition:
            if self._stopping:
                return
            self.pipeline = pipeline
            self._worker = threading.Thread(target=self._work, name="fourm_ros_pipeline", daemon=True)
            self._worker.start()
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
            return
        with self._condition:
            if camera.name in self._pending:
                self.stats.frame_dropped()
            self._pending[camera.name] = msg
            self._condition.notify()

    def _on_info(self, camera: _Camera, msg: CameraInfo) -> None:
        camera.info = msg

    def _publish_diagnostics(self) -> None:
        for subscription in self._inputs:
            subscription.refresh()
        name = self.get_fully_qualified_name()
        array = self.stats.to_diagnostic_array(self.get_clock().now().to_msg(), name)
        array.status.append(inputs_status(name, [subscription.report() for subscription in self._inputs]))
        if self.depth_stats is not None:
            array.status.append(self.depth_stats.status(name))
        self._diagnostics.publish(array)

    # ------------------------------------------------------------------ worker thread

    def _work(self) -> None:
        while True:
            with self._condition:
                self._condition.wait_for(lambda: self._pending or self._stopping)
                if self._stopping:
                    return
                batch, self._pending = self._pending, {}
            frames, sources, sensors = [], [], []
            for name, msg in batch.items():
                camera = self._cameras[name]
                rgb = self._to_rgb(camera, msg)
                if rgb is not None and self._camera_info_ok(camera, rgb):
                    frames.append(rgb)
                    sources.append((camera, msg.header))
                    sensors.append(
                        None
                        if camera.depth is None
                        else camera.depth.for_frame(msg.header, rgb.shape[1], rgb.shape[0], camera.info)
                    )
            if not frames:
                continue
            try:
                results = self.pipeline(frames, depth=sensors if self.pipeline.takes_depth else None)
            except Exception as error:  # one failing frame must not stop the node
                self.stats.pipeline_failed(f"{type(error).__name__}: {error}")
                self.get_logger().error(
                    f"pipeline failed on a frame: {error}", throttle_duration_sec=LOG_THROTTLE_S
                )
                continue
            with self._publish_lock:  # a shutdown that began during inference publishes nothing more
                if self._stopping:
                    return
                for (camera, header), result, sensor in zip(sources, results, sensors, strict=True):
                    self._publish(camera, header, result, sensor)
                    self.stats.frame_processed(result.timings)

    def _to_rgb(self, camera: _Camera, msg: Image | CompressedImage) -> np.ndarray | None:
        try:
            if isinstance(msg, CompressedImage):
                return compressed_to_rgb(msg)
            return image_to_rgb(msg, mono16_range=self.settings.mono16_range)
        except BadImageError as error:
            self.stats.bad_message(error.reason)
            self.get_logger().warning(
                f"{camera.image_topic}: dropped a bad image: {error}", throttle_duration_sec=LOG_THROTTLE_S
            )
            return None

    def _publish(
        self, camera: _Camera, header: Header, result: Results, sensor: np.ndarray | None = None
    ) -> None:
        header = copy_header(header)
        out = camera.publishers
        if result.depth is not None:
            out["depth/relative"].publish(depth_image(result.depth, header))
        if result.normals is not None:
            out["normals"].publish(normals_image(result.normals, header))
            if self._publishes("normals/color"):
                out["normals/color"].publish(rgb_image(viz.optical_normals_to_rgb(result.normals), header))
        if result.labels is not None:
            out["segmentation"].publish(labels_image(result.labels, header))
            if self._publishes("segmentation/color"):
                overlay = viz.segmentation_overlay(result.grid_rgb, result.labels, self._palette)
                out["segmentation/color"].publish(rgb_image(overlay, header))
        if result.persons is not None:
            self._publish_persons(out, header, result)
        if result.caption is not None:
            out["caption"].publish(String(data=result.caption))
            out["caption/marker"].publish(caption_marker(result.caption, header))
        self._publish_grid_info(camera, header, result)
        if camera.depth is not None:
            camera.depth.publish(header, result, sensor, camera.info)
        out[topics.PROCESSED].publish(header)

    def _publish_persons(self, out: dict[str, Publisher], header: Header, result: Results) -> None:
        persons = [person for person in result.persons if person.valid]
        joints = [person.joints_3d for person in persons]
        out["human_pose/markers"].publish(
            skeleton_markers(joints, PARENTS, header, lifetime_s=SKELETON_LIFETIME_S)
        )
        positions = np.array([person.joints_3d[0] for person in persons]).reshape(-1, 3)
        rotations = np.array([person.global_orient for person in persons]).reshape(-1, 3, 3)
        out["human_pose/poses"].publish(root_poses(positions, rotations, header))

    def _camera_info_problem(self, camera: _Camera, width: int, height: int) -> str | None:
        if camera.info is None:
            return "missing camera_info"
        if not camera_info_matches(camera.info, width, height):
            return "camera_info size mismatch"
        return None

    def _camera_info_ok(self, camera: _Camera, rgb: np.ndarray) -> bool:
        """False (counted, logged) if the frame needs a CameraInfo it does not have."""
        if not self.settings.require_camera_info:
            return True
        problem = self._camera_info_problem(camera, rgb.shape[1], rgb.shape[0])
        if problem is None:
            return True
        self.stats.bad_message(problem)
        info = camera.info
        detail = (
            "none received yet"
            if info is None
            else f"it is {info.width}×{info.height}, the image {rgb.shape[1]}×{rgb.shape[0]}"
        )
        self.get_logger().warning(
            f"{camera.info_topic}: {problem} ({detail}); frame skipped. "
            "Set ros.require_camera_info false to process frames without it.",
            throttle_duration_sec=LOG_THROTTLE_S,
        )
        return False

    def _publish_grid_info(self, camera: _Camera, header: Header, result: Results) -> None:
        """The grid's CameraInfo beside each dense image topic (image_transport's convention)."""
        infos = [topic for topic in topics.GRID_CAMERA_INFOS if topic in camera.publishers]
        crop = result.crop
        if infos and self._camera_info_problem(camera, crop.input_width, crop.input_height) is None:
            info = camera_info_for_grid(camera.info, crop, header)
            for topic in infos:
                camera.publishers[topic].publish(info)

    def destroy_node(self) -> None:
        """Stop publishing and destroy the node without waiting for a frame in inference or a start-up
        in progress: both can take minutes and cannot be interrupted (fourm_ros.ros.main says how the process
        ends all the same)."""
        with self._publish_lock, self._condition:
            self._stopping = True
            self._condition.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=WORKER_JOIN_S)
        if self._log_bridge is not None:
            self._log_bridge.remove()
            self._log_bridge = None
        super().destroy_node()


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
