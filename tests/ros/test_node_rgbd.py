"""perception_node with a depth sensor: pairing, metric depth and points, and bad depth that is counted
while the colour outputs keep flowing (real rclpy on an isolated domain, tiny random-weight pipeline)."""

import dataclasses
import threading
import time

import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_msgs.msg import Header
from support import tiny_components

from fourm_ros import sample_rgbd
from fourm_ros.pipeline.pipeline import Pipeline
from fourm_ros.pipeline.preprocess import CropMap
from fourm_ros.ros.bag import depth_message, matrix_camera_info, rgb_message
from fourm_ros.ros.rgbd import cloud_from_message

pytestmark = pytest.mark.ros
DENSE_ONLY = {
    "tasks.normals.enabled": False,
    "tasks.caption.enabled": False,
    "tasks.human_pose.enabled": False,
}
CROP = CropMap.centre(sample_rgbd.HEIGHT, sample_rgbd.WIDTH)
K_GRID = CROP.intrinsics_to_grid(sample_rgbd.K)
TRUTH, SURFACE, _ = sample_rgbd.ray_cast(K_GRID, CROP.size, CROP.size)


class PerfectDepthPipeline(Pipeline):
    """The tiny random pipeline, except that its relative depth is the synthetic scene's exact relative depth:
    random weights cannot predict depth, and this test is about the node's plumbing, not the model."""

    def dense(self, frames, depth=None):  # the node's dense lane
        relative = ((TRUTH - TRUTH.mean()) / TRUTH.std()).astype(np.float32)
        return [dataclasses.replace(r, depth=relative) for r in super().dense(frames, depth)]


@pytest.fixture(scope="module")
def components():
    return tiny_components()


class RGBDHarness:
    def __init__(self, components, overrides, pipeline=Pipeline):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        parameters = [Parameter(k, value=v) for k, v in {**DENSE_ONLY, **overrides}.items()]
        from fourm_ros.ros.node import PerceptionNode

        self.node = PerceptionNode(
            lambda config: pipeline(config, components), context=self.context, parameter_overrides=parameters
        )
        self.probe = rclpy.create_node("probe", context=self.context)
        self.received, self.lock = {}, threading.Lock()
        self.pub = {
            "image": self.probe.create_publisher(Image, "image", 10),
            "camera_info": self.probe.create_publisher(CameraInfo, "camera_info", 10),
            "depth": self.probe.create_publisher(Image, "depth/image_raw", 10),
            "depth_info": self.probe.create_publisher(CameraInfo, "depth/camera_info", 10),
        }
        for topic, kind in (
            ("processed", Header),
            ("depth/relative", Image),
            ("depth/metric", Image),
            ("points", PointCloud2),
            ("/diagnostics", DiagnosticArray),
        ):
            self.probe.create_subscription(kind, topic, lambda m, t=topic: self._record(t, m), 10)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.probe)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        needed = ("image", "camera_info") + (("depth",) if overrides.get("ros.depth_topic") else ())
        self.wait_for(lambda: all(self.pub[name].get_subscription_count() >= 1 for name in needed))

    def _record(self, topic, msg):
        with self.lock:
            self.received.setdefault(topic, []).append(msg)

    def messages(self, topic):
        with self.lock:
            return list(self.received.get(topic, []))

    def wait_for(self, condition, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out; received: { {t: len(m) for t, m in self.received.items()} }")

    def send(self, stamp_ns, depth=None, depth_stamp_ns=None):
        """Colour frame 0 of the synthetic scene at ``stamp_ns``; ``depth`` an Image sent just before it."""
        frame = sample_rgbd.render(0)
        header = Header(frame_id="camera_color_optical_frame")
        header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 10**9)
        info = matrix_camera_info(sample_rgbd.K, sample_rgbd.WIDTH, sample_rgbd.HEIGHT, header)
        if depth is not None:
            depth_header = Header(frame_id=header.frame_id)
            depth_header.stamp.sec, depth_header.stamp.nanosec = divmod(depth_stamp_ns or stamp_ns, 10**9)
            depth.header = depth_header
            self.pub["depth_info"].publish(info)
            self.pub["depth"].publish(depth)
        self.pub["camera_info"].publish(info)
        time.sleep(0.1)
        self.pub["image"].publish(rgb_message(frame.rgb, header))
        self.wait_for(lambda: any(m == header for m in self.messages("processed")))
        return header

    def metric_values(self, key="mode"):
        """The latest "metric depth" diagnostics status that reports ``key``, and its values."""

        def latest():
            for message in reversed(self.messages("/diagnostics")):
                for status in message.status:
                    values = {item.key: item.value for item in status.values}
                    if status.name.endswith(": metric depth") and key in values:
                        return status, values
            return None

        self.wait_for(lambda: latest() is not None)
        return latest()

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        self.probe.destroy_node()
        rclpy.shutdown(context=self.context)
        self.thread.join(timeout=5)


@pytest.fixture
def harness(components):
    made = []

    def make(overrides, pipeline=Pipeline):
        made.append(RGBDHarness(components, overrides, pipeline))
        return made[-1]

    yield make
    for item in made:
        item.close()


def test_metric_depth_and_points_carry_the_colour_header_and_lie_on_the_scene(harness):
    h = harness({"ros.depth_topic": "depth/image_raw"}, PerfectDepthPipeline)
    frame = sample_rgbd.render(0)
    header = h.send(1_000_000_000, depth_message(frame.sensor_mm, Header()))
    h.wait_for(lambda: h.messages("depth/metric") and h.messages("points"))
    depth_msg, cloud_msg = h.messages("depth/metric")[-1], h.messages("points")[-1]
    assert depth_msg.header == header == cloud_msg.header
    assert depth_msg.encoding == "32FC1" and (depth_msg.height, depth_msg.width) == (224, 224)
    metric = np.frombuffer(bytes(depth_msg.data), np.float32).reshape(224, 224)
    assert np.isfinite(metric).all()  # sensor holes filled by the fit
    window = np.lib.stride_tricks.sliding_window_view(np.pad(SURFACE, 1, mode="edge"), (3, 3))
    interior = window.min(axis=(2, 3)) == window.max(axis=(2, 3))  # edges take the nearer surface
    # min pooling keeps the nearest of ~2 input rows: up to 3 % on the floor near the horizon
    np.testing.assert_allclose(metric[interior], TRUTH[interior], rtol=0.04)
    points = cloud_from_message(cloud_msg)
    assert points.shape == (224 * 224,)
    xyz = np.stack([points["x"], points["y"], points["z"]], axis=-1).reshape(224, 224, 3)
    distance = sample_rgbd.plane_distance(xyz, SURFACE)
    assert np.median(distance / xyz[..., 2]) < 1e-3
    _, values = h.metric_values("fit inlier ratio")
    assert values["mode"] == "metric" and float(values["fit inlier ratio"]) > 0.9
    assert values["last fit"] == "trusted" and int(values["metric frames published"]) >= 1


def test_bad_depth_is_counted_and_colour_outputs_keep_flowing(harness):
    h = harness({"ros.depth_topic": "depth/image_raw", "ros.depth_slop_s": 0.02})
    frame = sample_rgbd.render(0)
    second = 10**9
    h.send(1 * second)  # no depth yet
    h.send(2 * second, depth_message(frame.sensor_mm[::2, ::2].copy(), Header()))  # wrong size
    rgb = Image(height=2, width=2, encoding="rgb8", step=6, data=bytes(12))
    h.send(3 * second, rgb)  # wrong encoding
    h.send(4 * second, depth_message(np.zeros_like(frame.sensor_mm), Header()))  # all invalid
    h.send(9 * second, depth_message(frame.sensor_mm, Header()), depth_stamp_ns=5 * second)  # stale
    assert len(h.messages("depth/relative")) == 5  # every colour frame was served
    assert not h.messages("depth/metric") and not h.messages("points")
    _, values = h.metric_values("unpaired: depth too old")
    assert values["unpaired: no depth received"] == "1"
    assert values["bad depth: not registered (size)"] == "1"
    assert values["bad depth: depth encoding"] == "1"
    assert values["fit refused: too few valid sensor pixels"] == "1"


def test_without_a_sensor_points_are_published_only_up_to_scale(harness):
    h = harness({"ros.depth_scale": 1.0, "ros.depth_shift": 4.0}, PerfectDepthPipeline)
    header = h.send(10**9)
    h.wait_for(lambda: h.messages("points"))
    assert h.messages("points")[-1].header == header and not h.messages("depth/metric")
    status, values = h.metric_values()
    assert values["mode"] == "up to scale" and "up to scale" in status.message
    points = cloud_from_message(h.messages("points")[-1])
    np.testing.assert_allclose(
        np.sort(points["z"]), np.sort(((TRUTH - TRUTH.mean()) / TRUTH.std() + 4.0).ravel()), rtol=1e-5
    )
