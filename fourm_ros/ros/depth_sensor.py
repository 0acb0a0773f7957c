"""perception_node's depth-sensor input and metric outputs, for one camera (``ros.depth_topic``).

The depth image must be registered to the colour camera (RGB-D drivers publish it as e.g.
``aligned_depth_to_color/image_raw``): same size, same camera matrix. Depth frames are kept as they
arrive and paired with each colour frame by stamp (``ros.depth_slop_s``); an unpaired, malformed or
unregistered depth frame is counted under its reason and the colour outputs are published as usual.
Per frame, 4M-21's relative depth is fitted to the sensor (``fourm_ros.pipeline.metric_depth``); a
trusted fit publishes ``depth/metric`` (32FC1 metres, sensor holes filled by the fit) and ``points``
(PointCloud2 x, y, z, rgb, label in the frame's optical frame), a refused one only its reason. Without a
depth topic, ``ros.depth_scale`` > 0 publishes ``points`` "up to scale" from the relative depth alone.
"""

from __future__ import annotations

import threading
from collections import Counter

import numpy as np
from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import QoSProfile
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header

from fourm_ros.pipeline import metric_depth, pointcloud
from fourm_ros.pipeline.metric_depth import DepthFit, FitSettings, UpToScale
from fourm_ros.pipeline.pairing import StampPairer
from fourm_ros.pipeline.results import Results
from fourm_ros.ros import topics
from fourm_ros.ros.camera_info import camera_info_for_grid, camera_info_matches
from fourm_ros.ros.conversion import BadImageError, depth_image
from fourm_ros.ros.rgbd import depth_to_metres, pointcloud2

DEPTH, POINTS = (out.topic for out in topics.RGBD_OUTPUTS)
OK, WARN = DiagnosticStatus.OK, DiagnosticStatus.WARN


class MetricDepthStats:
    """Pairing, fit and refusal counts of every camera (thread-safe), as one DiagnosticStatus."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._lock = threading.Lock()
        self._paired = self._published = 0
        self._unpaired: Counter[str] = Counter()
        self._bad: Counter[str] = Counter()
        self._refused: Counter[str] = Counter()
        self._last_fit: DepthFit | None = None

    def paired(self) -> None:
        with self._lock:
            self._paired += 1

    def unpaired(self, reason: str) -> None:
        with self._lock:
            self._unpaired[reason] += 1

    def bad(self, reason: str) -> None:
        with self._lock:
            self._bad[reason] += 1

    def fitted(self, fit: DepthFit) -> None:
        with self._lock:
            self._last_fit = fit
            if fit.trusted:
                self._published += 1
            else:
                self._refused[fit.reason.split(" (")[0]] += 1

    def published(self) -> None:
        with self._lock:
            self._published += 1

    def status(self, node_name: str) -> DiagnosticStatus:
        with self._lock:
            values = [
                ("mode", self.mode),
                ("depth frames paired", self._paired),
                ("metric frames published", self._published),
                *((f"unpaired: {reason}", count) for reason, count in sorted(self._unpaired.items())),
                *((f"bad depth: {reason}", count) for reason, count in sorted(self._bad.items())),
                *((f"fit refused: {reason}", count) for reason, count in sorted(self._refused.items())),
            ]
            fit = self._last_fit
            if fit is not None:
                values += [
                    ("fit inlier ratio", f"{fit.inlier_ratio:.3f}"),
                    ("fit residual (relative)", f"{fit.residual:.4f}"),
                    ("fit scale (m)", f"{fit.scale:.4f}"),
                    ("fit shift (m)", f"{fit.shift:.4f}"),
                    ("fit valid pixels", fit.valid_pixels),
                    ("last fit", "trusted" if fit.trusted else f"refused: {fit.reason}"),
                ]
            problems = sum(self._unpaired.values()) + sum(self._bad.values()) + sum(self._refused.values())
            level = WARN if (fit is not None and not fit.trusted) or self.mode == "up to scale" else OK
            message = (
                "up to scale (depth_scale, no sensor)"
                if self.mode == "up to scale"
                else (f"metric; {problems} frames without metric output" if problems else "metric")
            )
        return DiagnosticStatus(
            level=level,
            name=f"{node_name}: metric depth",
            message=message,
            values=[KeyValue(key=key, value=str(value)) for key, value in values],
        )


class DepthSensor:
    """One camera's depth subscription, pairing and metric publishers (created by perception_node)."""

    def __init__(
        self,
        node: Node,
        camera: str,
        *,
        depth_topic: str,
        slop_s: float,
        depth_scale: float,
        depth_shift: float,
        fit_settings: FitSettings,
        stats: MetricDepthStats,
        input_qos: QoSProfile,
        output_qos: QoSProfile,
    ) -> None:
        self.stats = stats
        self.fit_settings = fit_settings
        self.up_to_scale = None if depth_topic or depth_scale <= 0 else UpToScale(depth_scale, depth_shift)
        self.pairer: StampPairer[Image] | None = StampPairer(slop_s) if depth_topic else None
        self._lock = threading.Lock()
        self._depth_info: CameraInfo | None = None
        self.publishers = {
            POINTS: node.create_publisher(PointCloud2, topics.camera_topic(camera, POINTS), output_qos)
        }
        if depth_topic:
            self.publishers[DEPTH] = node.create_publisher(
                Image, topics.camera_topic(camera, DEPTH), output_qos
            )
            topic = topics.camera_topic(camera, depth_topic)
            node.create_subscription(Image, topic, self._on_depth, input_qos)
            info_topic = f"{topic.rsplit('/', 1)[0]}/camera_info" if "/" in topic else "camera_info"
            node.create_subscription(CameraInfo, info_topic, self._on_depth_info, input_qos)

    def _on_depth(self, msg: Image) -> None:
        with self._lock:
            self.pairer.add(Time.from_msg(msg.header.stamp).nanoseconds, msg)

    def _on_depth_info(self, msg: CameraInfo) -> None:
        self._depth_info = msg

    def for_frame(
        self, header: Header, width: int, height: int, colour_info: CameraInfo | None
    ) -> np.ndarray | None:
        """The registered sensor depth (metres, NaN holes) of the colour frame, or None (counted)."""
        if self.pairer is None:
            return None
        with self._lock:
            pairing = self.pairer.pair(Time.from_msg(header.stamp).nanoseconds)
        if pairing.item is None:
            self.stats.unpaired(pairing.reason)
            return None
        self.stats.paired()
        msg = pairing.item
        try:
            depth = depth_to_metres(msg)
        except BadImageError as error:
            self.stats.bad(error.reason)
            return None
        if depth.shape != (height, width):
            self.stats.bad("not registered (size)")
            return None
        info = self._depth_info
        if info is not None and colour_info is not None and camera_info_matches(info, width, height):
            k_depth, k_colour = np.reshape(info.k, (3, 3)), np.reshape(colour_info.k, (3, 3))
            if not np.allclose(k_depth, k_colour, rtol=1e-3, atol=1e-3):
                self.stats.bad("not registered (camera matrix)")
                return None
        return depth

    def publish(
        self, header: Header, result: Results, sensor: np.ndarray | None, info: CameraInfo | None
    ) -> None:
        """``depth/metric`` and ``points`` of a frame (see module doc); nothing without a usable camera."""
        if result.depth is None or info is None or np.reshape(info.k, (3, 3))[2, 2] == 0:
            return
        crop = result.crop
        if not camera_info_matches(info, crop.input_width, crop.input_height):
            return
        k_grid = np.reshape(camera_info_for_grid(info, crop, header).k, (3, 3))
        if sensor is not None:
            grid = metric_depth.sensor_depth_to_grid(sensor, crop)
            fit = metric_depth.fit_relative_depth(result.depth, grid, self.fit_settings)
            self.stats.fitted(fit)
            if not fit.trusted:
                return
            metric = metric_depth.metric_depth(result.depth, grid, fit)
            self.publishers[DEPTH].publish(depth_image(metric, header))
        elif self.up_to_scale is not None:
            metric = self.up_to_scale.depth(result.depth)
            self.stats.published()
        else:
            return
        cloud = pointcloud.semantic_cloud(metric, k_grid, result.grid_rgb, result.labels)
        self.publishers[POINTS].publish(pointcloud2(cloud, header))
