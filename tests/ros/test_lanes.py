"""The lane machinery on its own (no ROS): newest wins, faults isolated, stats, watchdog, time alignment."""

import threading
import time

import pytest

from fourm_ros.ros.lanes import (
    ApproximateTimeSync,
    DutyCycle,
    Lane,
    LaneStats,
    Stamped,
    Turns,
    split_batch,
)


def _wait(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.005)
    raise AssertionError("timed out")


class Recorder:
    def __init__(self, fail_on=(), gate=None):
        self.batches, self.dropped, self.faults = [], [], []
        self.fail_on, self.gate = set(fail_on), gate

    def process(self, batch):
        if self.gate is not None:
            self.gate.wait()
        if self.fail_on & set(batch):
            raise RuntimeError(f"cannot process {sorted(self.fail_on & set(batch))}")
        self.batches.append(list(batch))

    def lane(self, **options):
        return Lane(
            "test",
            self.process,
            on_drop=self.dropped.append,
            on_fault=lambda items, reason, error: self.faults.append((list(items), reason)),
            **options,
        ).start()


def test_newest_item_per_key_wins_and_the_replaced_one_is_dropped():
    gate = threading.Event()
    recorder = Recorder(gate=gate)
    lane = recorder.lane()
    lane.submit("a", ["a0"])
    _wait(lambda: not lane.idle() and lane.stats.snapshot().pending_for_s is None)  # a0 taken, worker blocked
    for item in ("a1", "a2", "a3"):
        lane.submit("a", [item])
    lane.submit("b", ["b1"])
    gate.set()
    _wait(lane.idle)
    assert recorder.batches == [["a0"], ["a3", "b1"]]  # one batch for both keys, newest of "a"
    assert recorder.dropped == ["a1", "a2"]
    snap = lane.stats.snapshot()
    assert (snap.submitted, snap.dropped) == (5, 2)
    lane.stop()


def test_a_fault_is_isolated_to_its_item_and_the_lane_goes_on():
    gate = threading.Event()
    recorder = Recorder(fail_on={"bad"}, gate=gate)
    lane = recorder.lane()
    lane.submit("a", ["good", "bad", "also good"])
    gate.set()
    _wait(lane.idle)
    assert recorder.batches == [["good"], ["also good"]]  # retried one by one, only "bad" failed
    assert recorder.faults == [(["bad"], "pipeline: RuntimeError")]
    lane.submit("a", ["later"])
    _wait(lambda: recorder.batches[-1] == ["later"])
    snap = lane.stats.snapshot()
    assert snap.alive and snap.failed == {"pipeline: RuntimeError": 1}
    assert "cannot process ['bad']" in snap.last_fault
    lane.stop()


def test_a_raising_callback_does_not_end_the_lane():
    def broken_drop(item):
        raise ValueError("drop handler broke")

    gate = threading.Event()
    lane = Lane("test", lambda batch: gate.wait(), on_drop=broken_drop).start()
    lane.submit("a", [1])
    _wait(lambda: not lane.idle() and lane.stats.snapshot().pending_for_s is None)
    lane.submit("a", [2])
    lane.submit("a", [3])  # drops 2 through the broken handler
    gate.set()
    _wait(lane.idle)
    assert lane.alive
    assert lane.stats.snapshot().failed == {"lane on_drop: ValueError": 1}
    lane.stop()


def test_batches_are_grouped_and_split_to_max_batch():
    gate = threading.Event()
    recorder = Recorder(gate=gate)
    lane = recorder.lane(max_batch=2, group_by=lambda item: item[0])
    lane.submit("block", ["x"])
    _wait(lambda: lane.stats.snapshot().pending_for_s is None)
    for camera in "abcde":
        lane.submit(camera, [("p" if camera in "abd" else "q") + camera])
    gate.set()
    _wait(lane.idle)
    assert recorder.batches == [["x"], ["pa", "pb"], ["pd"], ["qc", "qe"]]
    assert split_batch([1, 2, 3], None) == [[1, 2, 3]]
    with pytest.raises(ValueError, match="max_batch"):
        split_batch([1], 0)
    lane.stop()


def test_stats_rate_latency_and_the_watchdog():
    now = [100.0]
    stats = LaneStats("dense", watchdog_factor=5.0, watchdog_min_s=1.0, clock=lambda: now[0])
    for _ in range(5):
        stats.submitted()
        stats.taken()
        now[0] += 0.5
        stats.processed(received_at=now[0] - 0.4)
    snap = stats.snapshot()
    assert snap.rate_hz == pytest.approx(2.0)
    assert snap.latency_mean_s == pytest.approx(0.4)
    assert snap.seconds_since_result == pytest.approx(0.0)
    assert snap.stalled_after_s == pytest.approx(2.0)  # 5 × 0.4 s, above the 1 s floor
    stats.submitted()
    now[0] += 1.9
    stats.submitted()  # a replacement does not restart the clock: the slot has been busy since then
    assert not stats.snapshot().stalled
    now[0] += 0.2
    snap = stats.snapshot()
    assert snap.stalled and snap.pending_for_s == pytest.approx(2.1)
    stats.taken()
    assert not stats.snapshot().stalled


def test_a_hung_process_call_trips_the_watchdog():
    gate = threading.Event()
    stats = LaneStats("sequence", watchdog_factor=2.0, watchdog_min_s=0.1)
    lane = Lane("sequence", lambda batch: gate.wait(), stats=stats).start()
    lane.submit("a", [1])
    _wait(lambda: stats.snapshot().pending_for_s is None)
    lane.submit("a", [2])  # waits behind the hung call
    _wait(lambda: stats.snapshot().stalled, timeout=2.0)
    gate.set()
    _wait(lane.idle)
    assert not stats.snapshot().stalled
    lane.stop()


def test_duty_cycle_sleeps_in_proportion_to_the_work():
    now, slept = [0.0], []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    duty = DutyCycle(0.25, sleep=sleep, clock=lambda: now[0])
    duty.start()
    now[0] += 0.02  # one step's work
    duty.pause()
    now[0] += 0.01
    duty.pause()
    assert slept == pytest.approx([0.06, 0.03])  # 3 × the work for a 25 % share
    DutyCycle(1.0, sleep=sleep).pause()
    assert len(slept) == 2
    with pytest.raises(ValueError, match="share"):
        DutyCycle(0.0)


def test_turns_hand_over_between_steps():
    turns = Turns(exclusive=True)
    order = []

    def dense():
        with turns.held():
            order.append("dense")

    with turns.held():
        other = threading.Thread(target=dense)
        other.start()
        time.sleep(0.05)
        assert order == []  # the other lane waits while the turn is held
        turns.handing_over(lambda: time.sleep(0.05))()
        order.append("sequence step")
    other.join(1.0)
    assert order == ["dense", "sequence step"]


def test_approximate_time_sync_pairs_the_newest_set_within_the_slop():
    sync = ApproximateTimeSync(["left", "right"], slop_s=0.01)
    ms = 10**6
    assert sync.add(Stamped("left", 100 * ms, "L100")) == ([], [])
    assert sync.add(Stamped("left", 133 * ms, "L133")) == ([], [])
    sets, discarded = sync.add(Stamped("right", 135 * ms, "R135"))
    assert [[f.item for f in found] for found in sets] == [["L133", "R135"]]
    assert [f.item for f in discarded] == ["L100"]  # older than the set: never part of one
    sets, discarded = sync.add(Stamped("right", 170 * ms, "R170"))
    assert sets == [] and discarded == []
    sets, _ = sync.add(Stamped("left", 200 * ms, "L200"))
    assert sets == []  # 30 ms apart: beyond the slop
    sets, discarded = sync.add(Stamped("left", 168 * ms, "L168"))
    assert [[f.item for f in found] for found in sets] == [["L168", "R170"]]
    assert discarded == []  # L200 waits for a right frame near it
    with pytest.raises(ValueError, match="unknown camera"):
        sync.add(Stamped("top", 0, "T"))


def test_approximate_time_sync_bounds_its_queues():
    sync = ApproximateTimeSync(["a", "b"], slop_s=0.001, queue_size=2)
    sync.add(Stamped("a", 1, "a1"))
    sync.add(Stamped("a", 2, "a2"))
    _, discarded = sync.add(Stamped("a", 3, "a3"))
    assert [f.item for f in discarded] == ["a1"]


def test_lane_status_levels_and_figures():
    from diagnostic_msgs.msg import DiagnosticStatus

    from fourm_ros.ros.diagnostics import lane_status

    now = [0.0]
    stats = LaneStats("sequence", watchdog_factor=4.0, watchdog_min_s=1.0, clock=lambda: now[0])
    stats.submitted()
    stats.taken()
    now[0] = 2.0
    stats.processed(received_at=0.0)
    status = lane_status(stats.snapshot(), "/fourm/perception_node")
    values = {item.key: item.value for item in status.values}
    assert status.name == "/fourm/perception_node: sequence lane" and status.level == DiagnosticStatus.OK
    assert values["latency mean (ms)"] == "2000.0" and values["frames out"] == "1"
    assert values["newest result age (s)"] == "0.000" and values["watchdog after (s)"] == "8.0"
    stats.failed("message building: ValueError", "a reflection")
    status = lane_status(stats.snapshot(), "n")
    assert status.level == DiagnosticStatus.WARN and "message building: ValueError" in status.message
    stats.submitted()
    now[0] = 11.0
    status = lane_status(stats.snapshot(), "n")
    assert status.level == DiagnosticStatus.ERROR and "sequence lane stalled" in status.message
    stats.died()
    assert "not running" in lane_status(stats.snapshot(), "n").message


def test_frame_outcome_message():
    from diagnostic_msgs.msg import DiagnosticStatus
    from std_msgs.msg import Header

    from fourm_ros.ros.diagnostics import frame_outcome

    header = Header(frame_id="left_optical")
    header.stamp.sec = 3
    ok = frame_outcome(header, "left", None)
    assert ok.header == header and len(ok.status) == 1
    assert (ok.status[0].name, ok.status[0].level, ok.status[0].message) == (
        "left",
        DiagnosticStatus.OK,
        "processed",
    )
    skipped = frame_outcome(header, "", "bad input: short data")
    assert (skipped.status[0].name, skipped.status[0].level) == ("", DiagnosticStatus.WARN)
    assert skipped.status[0].message == "bad input: short data"
