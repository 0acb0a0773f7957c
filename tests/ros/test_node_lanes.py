"""perception_node's lanes with real rclpy: faults at every stage, a reflected pose, bursts on both lanes,
split batches, the CameraInfo race, time-aligned cameras, the watchdog and one outcome per frame."""

import threading
import time

import numpy as np
import pytest
import ros.test_node as node_tests
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from sensor_msgs.msg import Image
from std_msgs.msg import Header
from support import tiny_components

from fourm_ros.pipeline.pipeline import Pipeline
from fourm_ros.pipeline.preprocess import CropMap
from fourm_ros.pipeline.results import PersonResult
from fourm_ros.ros import topics
from fourm_ros.ros.bag import pinhole_camera_info
from fourm_ros.ros.camera_info import camera_info_for_grid

pytestmark = pytest.mark.ros
OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR
FAST_DIAGNOSTICS = {"ros.diagnostics_period_s": 0.2}


class ScriptedPipeline(Pipeline):
    """The real pipeline, with gates to hold a lane mid-call, injected faults, and a record of batches."""

    def __init__(self, config, components):
        super().__init__(config, components)
        self.dense_batches, self.sequence_batches = [], []
        self.dense_gate, self.sequence_gate = threading.Event(), threading.Event()
        self.dense_gate.set()
        self.sequence_gate.set()
        self.dense_entered, self.sequence_entered = threading.Event(), threading.Event()
        self.dense_faults = 0
        self.reflected_poses = 0

    def dense(self, frames, depth=None):
        self.dense_batches.append(len(frames))
        self.dense_entered.set()
        assert self.dense_gate.wait(30)
        if self.dense_faults:
            self.dense_faults -= 1
            raise RuntimeError("injected pipeline fault")
        return super().dense(frames, depth)

    def sequences(self, frames, tasks=None, depth=None, pause=None):
        self.sequence_batches.append(len(frames))
        self.sequence_entered.set()
        assert self.sequence_gate.wait(30)
        results = super().sequences(frames, tasks, depth, pause=pause)
        if self.reflected_poses and "human_pose" in (tasks or self.sequence_tasks):
            self.reflected_poses -= 1
            results = [_with_person(result, _reflected_person()) for result in results]
        return results


def _reflected_person() -> PersonResult:
    """A person whose root 'rotation' is a reflection, as an unprojected generated matrix can be."""
    joints = np.tile([0.0, 0.0, 5.0], (24, 1)) + np.arange(24)[:, None] * 0.01
    return PersonResult(
        box_xyxy=np.array([10.0, 10, 50, 90]),
        keypoints_2d=np.zeros((24, 2)),
        box_xyxy_grid=np.array([10.0, 10, 50, 90]),
        keypoints_2d_grid=np.zeros((24, 2)),
        joints_3d=joints,
        rotations=np.tile(np.eye(3), (23, 1, 1)),
        global_orient=np.diag([1.0, -1.0, 1.0]),
        betas=np.zeros(10),
        camera=np.array([1.0, 0, 0]),
        translation=np.array([0, 0, 5.0]),
        valid=True,
        reason=None,
    )


def _with_person(result, person):
    fields = dict(result.__dict__)
    fields["persons"] = [person]
    return type(result)(**fields)


@pytest.fixture(scope="module")
def components():
    return tiny_components()


@pytest.fixture
def harness(components, monkeypatch):
    monkeypatch.setattr(node_tests, "Pipeline", ScriptedPipeline)
    made = []

    def make(overrides=None, cameras=("",)):
        h = node_tests.Harness(components, {**FAST_DIAGNOSTICS, **(overrides or {})}, cameras)
        made.append(h)
        for camera in cameras:
            topic = topics.camera_topic(camera, topics.FRAME_OUTCOME)
            h.probe.create_subscription(DiagnosticArray, topic, lambda m, t=topic: h._record(t, m), 100)
            publisher = h.node._cameras[camera].publishers[topics.FRAME_OUTCOME]
            h.wait_for(lambda p=publisher: p.get_subscription_count() >= 1)
        return h

    yield make
    for item in made:
        item.close()


_image = node_tests._image
_value = node_tests._value


def _outcomes(h, header=None, camera=""):
    messages = h.messages(topics.camera_topic(camera, topics.FRAME_OUTCOME))
    return [m for m in messages if header is None or m.header == header]


def _lane(h, lane):
    """The newest /diagnostics status of ``lane`` ("dense", "sequence", "intake")."""
    for array in reversed(h.messages("/diagnostics")):
        for status in array.status:
            if status.name.endswith(f": {lane} lane"):
                return status
    return None


def _lane_value(status, key):
    return next((item.value for item in status.values if item.key == key), None) if status else None


def _served_after_fault(h, faulty, reason_prefix):
    """The faulty frame has a WARN outcome naming the reason; a good frame after it is fully served."""
    h.wait_for(lambda: _outcomes(h, faulty))
    (outcome,) = _outcomes(h, faulty)
    assert outcome.status[0].level == WARN
    assert outcome.status[0].message.startswith(f"failed: {reason_prefix}"), outcome.status[0].message
    assert not h.processed(faulty)
    good = h.send(_image(48, 64, 9), 9 * 10**9, info=(64, 48))
    h.wait_for(lambda: h.processed(good) and _outcomes(h, good))
    assert _outcomes(h, good)[0].status[0].level == OK
    assert _outcomes(h, good)[0].status[0].message == "processed"
    h.wait_for(
        lambda: any(
            (_value(d, f"frames failed: {reason_prefix}") or "0") == "1" for d in h.messages("/diagnostics")
        )
    )
    assert all(lane.alive for lane in h.node._lanes.values())


class _Once:
    """Raises RuntimeError on the first call, then behaves like ``function``."""

    def __init__(self, function):
        self.function, self.raised = function, False

    def __call__(self, *args, **kwargs):
        if not self.raised:
            self.raised = True
            raise RuntimeError("injected fault")
        return self.function(*args, **kwargs)


def test_a_raising_converter_costs_one_frame(harness, monkeypatch):
    import fourm_ros.ros.node as node_module

    monkeypatch.setattr(node_module, "image_to_rgb", _Once(node_module.image_to_rgb))
    h = harness()
    faulty = h.send(_image(48, 64), 5 * 10**9, info=(64, 48))
    _served_after_fault(h, faulty, "conversion: RuntimeError")


def test_a_raising_pipeline_costs_one_frame(harness):
    h = harness()
    h.node.pipeline.dense_faults = 1
    faulty = h.send(_image(48, 64), 5 * 10**9, info=(64, 48))
    _served_after_fault(h, faulty, "pipeline: RuntimeError")


def test_a_raising_message_builder_costs_one_frame(harness, monkeypatch):
    import fourm_ros.ros.node as node_module

    monkeypatch.setattr(node_module, "depth_image", _Once(node_module.depth_image))
    h = harness()
    faulty = h.send(_image(48, 64), 5 * 10**9, info=(64, 48))
    _served_after_fault(h, faulty, "message building: RuntimeError")


def test_a_raising_publisher_costs_one_frame_and_the_other_topics_still_publish(harness):
    h = harness()
    publishers = h.node._cameras[""].publishers
    real = publishers["depth/relative"]

    class Broken:
        def __init__(self):
            self.publish = _Once(real.publish)

    publishers["depth/relative"] = Broken()
    faulty = h.send(_image(48, 64), 5 * 10**9, info=(64, 48))
    _served_after_fault(h, faulty, "publishing: RuntimeError")
    h.wait_for(lambda: any(m.header == faulty for m in h.messages("normals")))  # despite the broken topic


def test_a_reflected_root_rotation_does_not_stop_the_sequence_lane(harness):
    h = harness()
    h.node.pipeline.reflected_poses = 1
    first = h.send(_image(48, 64), 5 * 10**9, info=(64, 48))
    h.wait_for(lambda: h.processed(first))  # the dense outputs do not depend on the pose
    h.wait_for(lambda: _lane_value(_lane(h, "sequence"), "faults: message building: ValueError") == "1")
    assert not any(m.header == first for m in h.messages("human_pose/poses"))
    second = h.send(_image(48, 64, 1), 6 * 10**9, info=(64, 48))
    # Both outputs of the second frame: each topic arrives on its own (CI saw the poses before the marker).
    for topic in ("human_pose/poses", "caption/marker"):
        h.wait_for(lambda topic=topic: any(m.header == second for m in h.messages(topic)))
    assert h.node._lanes["sequence"].alive


def test_dense_outputs_never_wait_for_a_sequence(harness):
    h = harness()
    pipeline = h.node.pipeline
    pipeline.sequence_gate.clear()  # the sequence lane is stuck in a generation
    first = h.send(_image(48, 64), 5 * 10**9, info=(64, 48))
    assert pipeline.sequence_entered.wait(20)
    later = [h.send(_image(48, 64, i), (6 + i) * 10**9, info=(64, 48)) for i in range(3)]
    h.wait_for(lambda: h.processed(first) and h.processed(later[-1]))
    assert not h.messages("caption")
    pipeline.sequence_gate.set()
    # the sequence lane then serves the newest frame it holds, with that frame's header
    h.wait_for(lambda: any(m.header == later[-1] for m in h.messages("caption/marker")))
    marker = next(m for m in h.messages("caption/marker") if m.header == later[-1])
    assert marker.lifetime.sec == 0 and marker.lifetime.nanosec == 0  # stays until the next caption
    skeleton = h.messages("human_pose/markers")[-1]
    assert skeleton.markers[0].action == skeleton.markers[0].DELETEALL
    assert all((m.lifetime.sec, m.lifetime.nanosec) == (0, 0) for m in skeleton.markers[1:])


def test_a_burst_on_both_lanes_gives_one_outcome_per_frame_and_counts_that_add_up(harness):
    # a reliable input with a deep queue: the burst reaches the node, whose lanes keep only the newest frame
    h = harness({"ros.qos.input.reliability": "reliable", "ros.qos.input.depth": 50})
    h.publishers[""][1].publish(pinhole_camera_info(64, 48, Header(frame_id="camera_optical_frame")))
    h.wait_for(lambda: h.node._cameras[""].infos)
    headers = [h.send(_image(48, 64, i), 10**9 * (i + 1), info=False) for i in range(30)]
    h.wait_for(lambda: h.processed(headers[-1]))
    h.wait_for(lambda: any(m.header == headers[-1] for m in h.messages("caption/marker")))

    def received():
        diagnostics = h.messages("/diagnostics")
        return int(_value(diagnostics[-1], "frames received") or 0) if diagnostics else 0

    # every frame the node received has exactly one outcome, and the counts add up
    h.wait_for(lambda: received() >= 2 and len(_outcomes(h)) == received())
    stamps = [o.header.stamp.sec for o in _outcomes(h)]
    assert len(set(stamps)) == len(stamps) and set(stamps) <= {i + 1 for i in range(30)}
    messages = [o.status[0].message for o in _outcomes(h)]
    assert set(messages) == {"processed", "dropped: replaced by a newer frame"}
    assert len(h.messages(topics.PROCESSED)) == messages.count("processed")

    def adds_up(d):
        keys = (
            "frames received",
            "frames processed",
            "frames dropped (busy)",
            "frames failed",
            "bad messages",
        )
        numbers = [_value(d, key) for key in keys]
        if None in numbers:
            return False
        total, *parts = map(int, numbers)
        return (
            total == len(stamps)
            and total == sum(parts)
            and parts[1] == messages.count("dropped: replaced by a newer frame")
        )

    h.wait_for(lambda: adds_up(h.messages("/diagnostics")[-1]))
    assert int(_lane_value(_lane(h, "dense"), "frames out")) == messages.count("processed")


def test_cameras_beyond_max_batch_are_split_not_failed(harness):
    cameras = ("a", "b", "c")
    h = harness({"ros.cameras": list(cameras), "ros.lanes.max_batch": 1}, cameras=cameras)
    pipeline = h.node.pipeline
    pipeline.dense_gate.clear()
    blocker = h.send(_image(48, 64), 4 * 10**9, camera="a", info=(64, 48))
    assert pipeline.dense_entered.wait(20)
    sent = {c: h.send(_image(48, 64, i), 5 * 10**9, camera=c, info=(64, 48)) for i, c in enumerate(cameras)}
    h.wait_for(lambda: h.node._lanes["dense"].stats.snapshot().submitted >= 4)
    pipeline.dense_gate.set()
    h.wait_for(lambda: all(h.processed(header, camera=c) for c, header in sent.items()))
    assert h.processed(blocker, camera="a")
    assert max(pipeline.dense_batches) == 1 and max(pipeline.sequence_batches) == 1
    assert not any(_value(d, "frames failed") not in (None, "0") for d in h.messages("/diagnostics"))


@pytest.mark.parametrize("change", ["another size", "another K"])
def test_output_camera_info_is_the_one_validated_with_the_frame(harness, change):
    h = harness()
    pipeline = h.node.pipeline
    pipeline.dense_gate.clear()
    header = Header(frame_id="camera_optical_frame")
    header.stamp.sec = 7
    validated = pinhole_camera_info(640, 480, header)
    sent = h.send(_image(), 7 * 10**9, info=validated)
    assert pipeline.dense_entered.wait(20)
    newer_header = Header(frame_id="camera_optical_frame")
    newer_header.stamp.sec = 8
    newer = pinhole_camera_info(*((320, 240) if change == "another size" else (640, 480)), newer_header)
    if change == "another K":
        newer.k[0] = newer.k[4] = 123.0
    h.publishers[""][1].publish(newer)
    h.wait_for(lambda: h.node._cameras[""].infos[-1].header.stamp.sec == 8)
    pipeline.dense_gate.set()
    h.wait_for(lambda: h.messages("depth/camera_info"))
    (grid,) = h.messages("depth/camera_info")
    expected = camera_info_for_grid(validated, CropMap.centre(480, 640), sent)
    assert grid.header == sent
    np.testing.assert_allclose(grid.k, expected.k)
    np.testing.assert_allclose(grid.p, expected.p)


def test_time_aligned_cameras_are_batched_as_sets(harness):
    cameras = ("left", "right")
    h = harness({"ros.cameras": list(cameras), "ros.lanes.sync_slop_s": 0.02}, cameras=cameras)
    pipeline = h.node.pipeline
    ms = 10**6
    left = h.send(_image(48, 64, 1), 1000 * ms, camera="left", info=(64, 48))
    right = h.send(_image(48, 64, 2), 1005 * ms, camera="right", info=(64, 48))
    h.wait_for(lambda: h.processed(left, camera="left") and h.processed(right, camera="right"))
    assert pipeline.dense_batches == [2]  # one set, one batch
    lonely = h.send(_image(48, 64, 3), 2000 * ms, camera="left", info=(64, 48))
    right2 = h.send(_image(48, 64, 4), 2500 * ms, camera="right", info=(64, 48))
    left2 = h.send(_image(48, 64, 5), 2510 * ms, camera="left", info=(64, 48))
    h.wait_for(lambda: h.processed(left2, camera="left") and h.processed(right2, camera="right"))
    h.wait_for(lambda: _outcomes(h, lonely, camera="left"))
    (outcome,) = _outcomes(h, lonely, camera="left")
    assert outcome.status[0].level == WARN and "slop" in outcome.status[0].message
    assert outcome.status[0].name == "left"
    assert pipeline.dense_batches == [2, 2]


def test_a_stalled_lane_turns_diagnostics_error_naming_it(harness):
    h = harness({"ros.lanes.watchdog_min_s": 0.3})
    pipeline = h.node.pipeline
    pipeline.dense_gate.clear()
    h.send(_image(48, 64), 5 * 10**9, info=(64, 48))
    assert pipeline.dense_entered.wait(20)
    h.send(_image(48, 64, 1), 6 * 10**9, info=(64, 48))  # waits behind the hung call
    h.wait_for(lambda: _lane(h, "dense") is not None and _lane(h, "dense").level == ERROR)
    status = _lane(h, "dense")
    assert "dense lane stalled" in status.message
    pipeline.dense_gate.set()
    h.wait_for(lambda: _lane(h, "dense").level != ERROR)


def test_bad_input_has_a_warn_outcome_with_its_reason(harness):
    h = harness()
    bad = h.send(
        Image(encoding="bayer_rggb8", width=4, height=4, step=4, data=bytes(16)), 5 * 10**9, info=(4, 4)
    )
    h.wait_for(lambda: _outcomes(h, bad))
    (outcome,) = _outcomes(h, bad)
    assert (outcome.status[0].level, outcome.status[0].name) == (WARN, "")
    assert outcome.status[0].message == "bad input: unsupported encoding"


def test_a_shutdown_ends_a_generation_between_two_steps(components, monkeypatch):
    monkeypatch.setattr(node_tests, "Pipeline", ScriptedPipeline)
    long_generation = {"tasks.caption.max_tokens": 64, "tasks.human_pose.max_tokens": 275}
    h = node_tests.Harness(components, {**FAST_DIAGNOSTICS, **long_generation}, ("",))
    pipeline, steps = h.node.pipeline, []
    generate = pipeline.sequences

    def slow_sequences(frames, tasks=None, depth=None, pause=None):
        def slow_pause():  # 0.2 s a step: the 275 steps of a whole generation would take a minute
            steps.append(time.monotonic())
            time.sleep(0.2)
            pause()

        return generate(frames, tasks, depth, pause=slow_pause)

    pipeline.sequences = slow_sequences
    h.send(_image(48, 64), 5 * 10**9, info=(64, 48))
    h.wait_for(lambda: len(steps) >= 3)
    stopped_at = time.monotonic()
    h.close()
    assert h.node.join_lanes(10.0)
    assert time.monotonic() - stopped_at < 5.0
    assert len(steps) < 60
    assert h.node._lanes["sequence"].stats.snapshot().failed == {}, "a deliberate stop is not a fault"
