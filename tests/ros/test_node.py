"""perception_node with real rclpy and DDS on an isolated domain, around a tiny random-weight pipeline."""

import re
import threading
import time

import cv2
import numpy as np
import pytest
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rcl_interfaces.msg import Log
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from support import tiny_components

from fourm_ros.pipeline.config import ConfigError
from fourm_ros.pipeline.pipeline import Pipeline
from fourm_ros.pipeline.preprocess import CropMap
from fourm_ros.ros import topics
from fourm_ros.ros.bag import pinhole_camera_info, rgb_message
from fourm_ros.ros.node import MESSAGE_TYPES, PerceptionNode
from fourm_ros.ros.qos import make_qos

pytestmark = pytest.mark.ros
FAST = {"tasks.human_pose.max_tokens": 12, "tasks.caption.max_tokens": 8}


@pytest.fixture(scope="module")
def components():
    return tiny_components()


class Harness:
    """A node under test, a probe node that plays the camera and records every output, one executor."""

    def __init__(self, components, overrides, cameras=("",)):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        parameters = [Parameter(name, value=value) for name, value in {**FAST, **overrides}.items()]
        self.node = PerceptionNode(
            lambda config: Pipeline(config, components), context=self.context, parameter_overrides=parameters
        )
        self.node.wait_until_started(timeout_s=20.0)
        self.probe = rclpy.create_node("probe", context=self.context)
        self.received: dict[str, list] = {}
        self.lock = threading.Lock()
        self.publishers = {}
        for camera in cameras:
            kind = CompressedImage if overrides.get("ros.input") == "compressed" else Image
            name = topics.COMPRESSED_IMAGE if kind is CompressedImage else topics.IMAGE
            self.publishers[camera] = (
                self.probe.create_publisher(kind, topics.camera_topic(camera, name), 10),
                self.probe.create_publisher(CameraInfo, topics.camera_topic(camera, topics.CAMERA_INFO), 10),
            )
            for out in topics.OUTPUTS:
                topic = topics.camera_topic(camera, out.topic)
                qos = make_qos("latched") if out.topic == "segmentation/labels" else 10
                self.probe.create_subscription(
                    MESSAGE_TYPES[out.msgtype], topic, lambda msg, t=topic: self._record(t, msg), qos
                )
        self.probe.create_subscription(
            DiagnosticArray, "/diagnostics", lambda m: self._record("/diagnostics", m), 10
        )
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.probe)
        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()
        self.wait_for(
            lambda: all(
                pub.get_subscription_count() >= 1 for pair in self.publishers.values() for pub in pair
            )
        )

    def _record(self, topic, msg):
        with self.lock:
            self.received.setdefault(topic, []).append(msg)

    def messages(self, topic):
        with self.lock:
            return list(self.received.get(topic, []))

    def wait_for(self, condition, timeout=20.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out; received so far: { {t: len(m) for t, m in self.received.items()} }")

    def send(self, image, stamp_ns, camera="", info=True, frame_id="camera_optical_frame"):
        header = Header(frame_id=frame_id)
        header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 10**9)
        image_pub, info_pub = self.publishers[camera]
        if info:
            info_pub.publish(
                pinhole_camera_info(info[0], info[1], header) if isinstance(info, tuple) else info
            )
            time.sleep(0.05)  # camera_info first, as drivers do
        if isinstance(image, np.ndarray):
            image = rgb_message(image, header)
        image.header = header
        image_pub.publish(image)
        return header

    def processed(self, header, camera=""):
        return [m for m in self.messages(topics.camera_topic(camera, topics.PROCESSED)) if m == header]

    def close(self):
        self.executor.shutdown()
        self.thread.join(timeout=5)  # before the context goes: a spin still waiting would raise
        self.node.destroy_node()
        self.probe.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def harness(components):
    made = []

    def make(overrides=None, cameras=("",)):
        made.append(Harness(components, overrides or {}, cameras))
        return made[-1]

    yield make
    for item in made:
        item.close()


def _image(height=480, width=640, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_every_output_carries_the_input_header_encoding_and_size(harness):
    h = harness()
    header = h.send(_image(), 1_000_000_123, info=(640, 480))
    every = [out.topic for out in topics.OUTPUTS]
    h.wait_for(lambda: all(h.messages(topic) for topic in every))
    expected = {
        "depth/relative": "32FC1",
        "normals": "32FC3",
        "normals/color": "rgb8",
        "segmentation": "mono8",
        "segmentation/color": "rgb8",
    }
    for topic, encoding in expected.items():
        (msg,) = h.messages(topic)
        assert msg.header == header, topic
        assert (msg.encoding, msg.width, msg.height) == (encoding, 224, 224), topic
    for topic in ("human_pose/markers", "caption/marker"):
        (msg,) = h.messages(topic)
        markers = msg.markers if hasattr(msg, "markers") else [msg]
        assert all(marker.header == header for marker in markers)
    (poses,) = h.messages("human_pose/poses")
    assert poses.header == header
    assert len(h.messages("caption")) == 1
    (labels,) = h.messages("segmentation/labels")
    assert '"unlabeled_id": 0' in labels.data


def test_camera_info_beside_each_dense_image_is_the_crop_and_resize_of_the_input_camera(harness):
    h = harness()
    header = Header(frame_id="camera_optical_frame")
    header.stamp.sec = 7
    info = pinhole_camera_info(640, 480, header)
    sent = h.send(_image(), 7 * 10**9, info=info)
    beside = ("depth/camera_info", "normals/camera_info", "segmentation/camera_info")
    h.wait_for(lambda: all(h.messages(topic) for topic in beside))
    (grid,) = h.messages("depth/camera_info")
    assert [h.messages(topic) for topic in beside[1:]] == [[grid], [grid]]
    assert grid.header == sent and (grid.width, grid.height) == (224, 224)
    assert "grid/camera_info" not in {out.topic for out in topics.OUTPUTS}
    s = 224 / 480  # crop x 80..559, then 480 → 224
    fx, cx, cy = info.k[0], info.k[2], info.k[5]
    np.testing.assert_allclose(grid.k[0], fx * s)
    np.testing.assert_allclose(grid.k[2], (cx + 0.5 - 80) * s - 0.5)
    np.testing.assert_allclose(grid.k[5], (cy + 0.5) * s - 0.5)
    np.testing.assert_allclose(grid.p[0], fx * s)
    np.testing.assert_allclose(grid.p[2], (cx + 0.5 - 80) * s - 0.5)
    assert list(grid.d) == list(info.d)
    assert CropMap.centre(480, 640).left == 80


def test_burst_keeps_latency_bounded_and_counts_drops(harness):
    h = harness()
    h.publishers[""][1].publish(pinhole_camera_info(320, 240, Header(frame_id="camera_optical_frame")))
    time.sleep(0.1)
    headers = [h.send(_image(240, 320, i), 10**9 * (i + 1), info=False) for i in range(30)]
    h.wait_for(lambda: h.processed(headers[-1]))  # the newest frame always gets through
    processed = h.messages(topics.PROCESSED)
    assert len(processed) < len(headers)  # no backlog: frames arriving while busy were replaced
    h.wait_for(
        lambda: any(_value(d, "frames dropped (busy)") not in (None, "0") for d in h.messages("/diagnostics"))
    )


def _value(diagnostics, key):
    for status in diagnostics.status:
        for item in status.values:
            if item.key == key:
                return item.value
    return None


BAD_IMAGES = {
    "unsupported encoding": lambda: Image(encoding="bayer_rggb8", width=4, height=4, step=4, data=bytes(16)),
    "short data": lambda: Image(encoding="rgb8", width=64, height=48, step=192, data=bytes(100)),
    "empty image": lambda: Image(encoding="rgb8", width=0, height=0, step=0, data=b""),
    "absurd size": lambda: Image(encoding="mono8", width=100000, height=2, step=100000, data=bytes(16)),
}


@pytest.mark.parametrize("reason", sorted(BAD_IMAGES))
def test_bad_image_is_counted_and_the_next_good_frame_is_served(harness, reason):
    h = harness()
    bad = h.send(BAD_IMAGES[reason](), 5 * 10**9, info=(64, 48))
    good = h.send(_image(48, 64), 6 * 10**9, info=(64, 48))
    h.wait_for(lambda: h.processed(good))
    assert not h.processed(bad)
    h.wait_for(lambda: any(_value(d, f"bad messages: {reason}") == "1" for d in h.messages("/diagnostics")))


def test_corrupt_jpeg_is_counted_and_the_next_good_one_served(harness):
    h = harness({"ros.input": "compressed"})
    _, jpeg = cv2.imencode(".jpg", _image(48, 64))
    bad = h.send(CompressedImage(format="jpeg", data=jpeg.tobytes()[:200]), 5 * 10**9, info=(64, 48))
    good = h.send(CompressedImage(format="jpeg", data=jpeg.tobytes()), 6 * 10**9, info=(64, 48))
    h.wait_for(lambda: h.processed(good))
    assert not h.processed(bad)
    h.wait_for(
        lambda: any(_value(d, "bad messages: corrupt compressed") == "1" for d in h.messages("/diagnostics"))
    )


def test_missing_camera_info_skips_the_frame_until_it_arrives(harness):
    h = harness()
    skipped = h.send(_image(48, 64), 5 * 10**9, info=False)
    h.wait_for(
        lambda: any(_value(d, "bad messages: missing camera_info") == "1" for d in h.messages("/diagnostics"))
    )
    served = h.send(_image(48, 64), 6 * 10**9, info=(64, 48))
    h.wait_for(lambda: h.processed(served))
    assert not h.processed(skipped)


def test_frames_without_camera_info_are_served_when_allowed(harness):
    h = harness({"ros.require_camera_info": False})
    served = h.send(_image(48, 64), 5 * 10**9, info=False)
    h.wait_for(lambda: h.processed(served) and h.messages("depth/relative"))
    assert not any(h.messages(f"{task}/camera_info") for task in topics.DENSE_TASKS)


def test_several_cameras_publish_under_their_namespaces(harness):
    h = harness({"ros.cameras": ["front", "left"]}, cameras=("front", "left"))
    h.send(_image(48, 64, 1), 5 * 10**9, camera="front", info=(64, 48), frame_id="front_optical")
    h.send(_image(64, 48, 2), 5 * 10**9, camera="left", info=(48, 64), frame_id="left_optical")
    h.wait_for(lambda: h.messages("front/depth/relative") and h.messages("left/depth/relative"))
    assert h.messages("front/depth/relative")[0].header.frame_id == "front_optical"
    assert h.messages("left/depth/relative")[0].header.frame_id == "left_optical"


def test_diagnostics_name_backend_model_and_random_weights(harness):
    h = harness()
    h.wait_for(lambda: h.messages("/diagnostics"))
    status = h.messages("/diagnostics")[-1].status[0]
    values = {item.key: item.value for item in status.values}
    assert "torch" in values["backend"] and values["random weights"] == "true"
    assert status.level == DiagnosticStatus.WARN and "random weights" in status.message


def test_invalid_parameter_stops_the_node_with_its_name(components):
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        with pytest.raises(ConfigError, match=r"ros\.input"):
            PerceptionNode(
                lambda config: Pipeline(config, components),
                context=context,
                parameter_overrides=[Parameter("ros.input", value="h264")],
            )
    finally:
        rclpy.shutdown(context=context)


def test_input_reliability_follows_the_camera_and_is_reported(harness):
    """The probe's camera publishes reliable: the node's input switches to reliable and says so."""
    h = harness()
    served = h.send(_image(48, 64), 3 * 10**9, info=(64, 48))
    h.wait_for(lambda: h.processed(served))

    def inputs_status():
        for diagnostics in h.messages("/diagnostics"):
            for status in diagnostics.status:
                if status.name.endswith("perception_node: inputs"):
                    yield status

    h.wait_for(lambda: any(_value_of(s, "/image qos", "").startswith("reliable,") for s in inputs_status()))
    status = [s for s in inputs_status() if _value_of(s, "/image qos", "").startswith("reliable,")][-1]
    assert _value_of(status, "/image publishers") == "1" and _value_of(status, "/image matched") == "1"
    assert _value_of(status, "/image silent publishers") == "0" and status.level == DiagnosticStatus.OK
    later = h.send(_image(48, 64), 4 * 10**9, info=(64, 48))  # through the reliable subscription
    h.wait_for(lambda: h.processed(later))


def _value_of(status, key, default=None):
    return next((item.value for item in status.values if item.key == key), default)


def _status(diagnostics):
    return diagnostics.status[0]


@pytest.fixture
def spinning():
    """``spinning(*nodes)``: spin them in a fresh context on a thread; all is shut down and joined after."""
    context = rclpy.Context()
    rclpy.init(context=context)
    executor = SingleThreadedExecutor(context=context)
    thread = threading.Thread(target=executor.spin, daemon=True)
    spun = []

    def spin(*nodes):
        for node in nodes:
            executor.add_node(node)
            spun.append(node)
        if not thread.is_alive():
            thread.start()

    yield context, spin
    executor.shutdown()
    if thread.is_alive():
        thread.join(timeout=5)  # before the context goes: a spin still waiting would raise
    for node in spun:  # explicitly: a context's shutdown skips every other node it tracks
        node.destroy_node()
    rclpy.shutdown(context=context)


def test_start_up_runs_beside_the_executor_and_drops_frames_until_ready(components, spinning):
    """While the pipeline is being built /diagnostics says so and incoming frames count as dropped."""
    context, spin = spinning
    release = threading.Event()

    def slow_factory(config):
        release.wait()
        return Pipeline(config, components)

    fast_diagnostics = {**FAST, "ros.diagnostics_period_s": 0.2}
    node = PerceptionNode(
        slow_factory,
        context=context,
        parameter_overrides=[Parameter(name, value=value) for name, value in fast_diagnostics.items()],
    )
    spin(node)
    try:
        probe = rclpy.create_node("probe", context=context)
        name = f"{node.get_fully_qualified_name()}: pipeline"
        received = []
        probe.create_subscription(
            DiagnosticArray, "/diagnostics", lambda m: _status(m).name == name and received.append(m), 10
        )
        outcomes = []
        probe.create_subscription(DiagnosticArray, topics.FRAME_OUTCOME, outcomes.append, 100)
        image_pub = probe.create_publisher(Image, "image", 10)
        info_pub = probe.create_publisher(CameraInfo, "camera_info", 10)
        spin(probe)
        sent = []

        def latest(key):
            return _value(received[-1], key) if received else None

        def send_until(key, not_values, period_s):
            deadline = time.monotonic() + 60
            while latest(key) in not_values:
                assert time.monotonic() < deadline, [_status(d).message for d in received[-1:]]
                header = Header(frame_id="camera_optical_frame")
                header.stamp.sec = len(sent) + 1
                sent.append(header)
                info_pub.publish(pinhole_camera_info(64, 48, header))
                image_pub.publish(rgb_message(_image(48, 64), header))
                time.sleep(period_s)

        send_until("frames dropped (starting)", (None, "0"), 0.1)
        # Each frame dropped while starting still gets its one outcome (lock-step replay waits for it).
        deadline = time.monotonic() + 20
        while not outcomes:
            assert time.monotonic() < deadline, "no frame_outcome while starting"
            time.sleep(0.05)
        assert _status(outcomes[0]).message == "dropped: starting"
        assert outcomes[0].header in sent
        status = _status(received[-1])
        assert latest("state") == "starting: building the pipeline"
        assert status.level == DiagnosticStatus.WARN and "starting: building the pipeline" in status.message
        assert latest("frames processed") == "0" and not node.ready.is_set()
        release.set()
        node.wait_until_started(timeout_s=60)
        send_until("frames processed", (None, "0"), 0.3)
        assert latest("state") == "running"
        deadline = time.monotonic() + 20
        while _status(outcomes[-1]).message != "processed":
            assert time.monotonic() < deadline, [_status(o).message for o in outcomes]
            time.sleep(0.05)
        assert latest("backend selection").startswith("torch: ")
    finally:
        release.set()


def test_pipeline_logs_and_resolved_topic_names_reach_rosout(components, spinning):
    context, spin = spinning
    probe = rclpy.create_node("probe", context=context)
    logs = []
    rosout_qos = QoSProfile(depth=1000, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    probe.create_subscription(Log, "/rosout", lambda m: logs.append(m.msg), rosout_qos)
    spin(probe)
    node = PerceptionNode(
        lambda config: Pipeline(config, components),
        context=context,
        namespace="fourm",
        cli_args=["--ros-args", "-r", "image:=/camera/image_raw"],
        parameter_overrides=[Parameter(name, value=value) for name, value in FAST.items()],
    )
    spin(node)
    node.wait_until_started(timeout_s=60)
    deadline = time.monotonic() + 60
    while not any("pipeline ready" in line for line in logs):
        assert time.monotonic() < deadline, logs
        time.sleep(0.05)
    assert any(
        line.startswith("input /camera/image_raw [") and " and /fourm/camera_info [" in line for line in logs
    ), logs
    assert any(line.startswith("outputs") and "/fourm/depth/relative" in line for line in logs)
    # A Python logging record of the pipeline (its random-weights banner), through the bridge.
    assert any(line.startswith("[pipeline] RANDOM WEIGHTS") for line in logs), logs


def _set(h, **values):
    """ros2 param set through the node's real set_parameters service; the results in order."""
    client = h.probe.create_client(SetParameters, "/perception_node/set_parameters")
    assert client.wait_for_service(timeout_sec=10)
    request = SetParameters.Request(
        parameters=[Parameter(name, value=value).to_parameter_msg() for name, value in values.items()]
    )
    future = client.call_async(request)
    h.wait_for(future.done)
    h.probe.destroy_client(client)
    return future.result().results


def test_run_time_parameters_are_validated_and_applied(harness):
    h = harness()
    results = _set(h, **{"tasks.caption.every_n_frames": 3, "tasks.caption.temperature": 0.7})
    assert all(result.successful for result in results), [result.reason for result in results]
    assert h.node.pipeline.config.tasks.caption.every_n_frames == 3
    assert h.node.pipeline.config.tasks.caption.temperature == 0.7
    (result,) = _set(h, **{"ros.publish_color": False})
    assert result.successful, result.reason
    header = h.send(_image(48, 64), 5 * 10**9, info=(64, 48))
    h.wait_for(lambda: h.processed(header))
    assert h.messages("normals") and not h.messages("normals/color")
    assert h.messages("caption")  # the first frame (0 of every 3) still gets a caption


@pytest.mark.parametrize(
    ("values", "reason"),
    [
        ({"model": "EPFL-VILAB/4M-21_L"}, "read-only"),
        ({"ros.input": "compressed"}, "read-only"),
        ({"tasks.caption.temperature": "hot"}, r"tasks\.caption\.temperature: must be a number"),
        ({"ros.mono16_range": [10, 5]}, r"ros\.mono16_range: expected \[low, high\]"),
    ],
)
def test_other_parameter_changes_are_refused_with_the_reason(harness, values, reason):
    h = harness()
    before = (h.node.pipeline.config, h.node.settings)
    (result,) = _set(h, **values)
    assert not result.successful and re.search(reason, result.reason), result.reason
    assert (h.node.pipeline.config, h.node.settings) == before
