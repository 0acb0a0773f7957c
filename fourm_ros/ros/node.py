"""perception_node: camera topics in, 4M-21 depth, normals, segmentation, human poses and captions out.

A thin adapter over :class:`fourm_ros.pipeline.Pipeline`. Subscription callbacks only park the newest
message per camera; a worker thread converts, batches the cameras into one pipeline call, and publishes,
so the executor never blocks. A message that arrives while the previous one still waits is replaced (the
newest frame wins) and counted as dropped. Every output carries the header of the frame it came from.
Bad input is logged (throttled), counted in /diagnostics, and the node goes on with the next frame.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseArray
from rclpy.context import Context
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.publisher import Publisher
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header, String
from visualization_msgs.msg import Marker, MarkerArray

from fourm_ros import viz
from fourm_ros.backends.base import BackendError
from fourm_ros.checkpoint import CheckpointError
from fourm_ros.pipeline.config import ConfigError, PipelineConfig
from fourm_ros.pipeline.metric_depth import FitSettings
from fourm_ros.pipeline.pipeline import Pipeline
from fourm_ros.pipeline.results import Results
from fourm_ros.pipeline.weights import RANDOM_WEIGHTS_WARNING
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
from fourm_ros.ros.params import declare_and_read
from fourm_ros.ros.qos import describe_qos, make_qos
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


@dataclass
class _Camera:
    name: str
    publishers: dict[str, Publisher]
    info: CameraInfo | None = None
    depth: DepthSensor | None = None


class PerceptionNode(Node):
    """The ROS 2 node around one :class:`Pipeline`; ``pipeline_factory`` builds it from the parameters
    (default: :meth:`Pipeline.from_config`, which loads the configured weights)."""

    def __init__(
        self,
        pipeline_factory: Callable[[PipelineConfig], Pipeline] | None = None,
        *,
        node_name: str = "perception_node",
        **node_options,
    ):
        super().__init__(node_name, **node_options)
        self.pipeline_config, self.settings = declare_and_read(self)
        log = self.get_logger()
        self.pipeline = (pipeline_factory or Pipeline.from_config)(self.pipeline_config)
        self.stats = PipelineStats()
        self.stats.set_engine(
            self.pipeline.backend.describe(), self.pipeline.model_name, self.pipeline.random_weights
        )
        log.info(f"pipeline ready: {self.pipeline.describe()}")
        if self.pipeline.random_weights:
            log.warning(RANDOM_WEIGHTS_WARNING)
        self._palette = semseg_palette()
        input_qos = self.settings.qos.input.profile("input")
        output_qos = self.settings.qos.output.profile("output")
        outputs = topics.outputs_for(self.pipeline.tasks)
        if not self.settings.publish_color:
            outputs = tuple(out for out in outputs if not out.topic.endswith("/color"))
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
            self._inputs.append(
                AdaptiveSubscription(
                    self,
                    input_type,
                    topics.camera_topic(name, input_name),
                    lambda msg, c=camera: self._on_image(c, msg),
                    input_qos,
                    auto_reliability=self.settings.qos.input.auto_reliability(),
                )
            )
            self.create_subscription(
                CameraInfo,
                topics.camera_topic(name, topics.CAMERA_INFO),
                lambda msg, c=camera: self._on_info(c, msg),
                input_qos,
            )
            if "segmentation/labels" in publishers:
                publishers["segmentation/labels"].publish(labels_message())
        cameras = [name or "(no prefix)" for name in self._cameras]
        inputs = ", ".join(f"{sub.topic} [{sub.qos_description()}]" for sub in self._inputs)
        log.info(f"cameras {cameras}, inputs {inputs}")
        log.info(f"outputs [{describe_qos(output_qos)}]: {', '.join(out.topic for out in outputs)}")
        self._diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(self.settings.diagnostics_period_s, self._publish_diagnostics)
        self._condition = threading.Condition()
        self._pending: dict[str, Image | CompressedImage] = {}
        self._stopping = False
        self._worker = threading.Thread(target=self._work, name="fourm_ros_pipeline", daemon=True)
        self._worker.start()

    # ------------------------------------------------------------------ callbacks (executor thread)

    def _on_image(self, camera: _Camera, msg: Image | CompressedImage) -> None:
        now = self.get_clock().now().nanoseconds * 1e-9
        self.stats.input_received(Time.from_msg(msg.header.stamp).nanoseconds * 1e-9, now)
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
            topic = topics.camera_topic(
                camera.name, topics.COMPRESSED_IMAGE if isinstance(msg, CompressedImage) else topics.IMAGE
            )
            self.get_logger().warning(
                f"{topic}: dropped a bad image: {error}", throttle_duration_sec=LOG_THROTTLE_S
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
            if "normals/color" in out:
                out["normals/color"].publish(rgb_image(viz.optical_normals_to_rgb(result.normals), header))
        if result.labels is not None:
            out["segmentation"].publish(labels_image(result.labels, header))
            if "segmentation/color" in out:
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
            f"{topics.camera_topic(camera.name, topics.CAMERA_INFO)}: {problem} ({detail}); frame skipped. "
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
        with self._condition:
            self._stopping = True
            self._condition.notify()
        self._worker.join(timeout=30.0)
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


def main(args: list[str] | None = None) -> int:
    """``ros2 run fourm_ros perception_node``."""
    rclpy.init(args=args)
    try:
        node = PerceptionNode()
    except (ConfigError, CheckpointError, BackendError, ValueError, OSError) as error:
        print(f"perception_node cannot start: {error}", file=sys.stderr)
        rclpy.try_shutdown()
        return 1
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0
