"""Node statistics: counters, rolling latencies, health levels and the /diagnostics message."""

import threading

import pytest
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

from fourm_ros.ros.diagnostics import PipelineStats


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def _stats(**kwargs):
    clock = FakeClock()
    stats = PipelineStats(clock=clock, **kwargs)
    stats.set_engine("onnxruntime (cpu)", "EPFL-VILAB/4M-21_B", random_weights=False)
    return stats, clock


def _healthy_frame(stats, clock, seconds=0.1):
    clock.now += seconds
    stats.input_received(stamp_s=500.0, now_s=500.05)
    stats.frame_processed({"encode": 0.010, "decode": 0.030})


def _values(array: DiagnosticArray):
    return {item.key: item.value for item in array.status[0].values}


def test_healthy_node_is_ok_with_rate_and_latencies():
    stats, clock = _stats()
    for _ in range(11):
        _healthy_frame(stats, clock)
    array = stats.to_diagnostic_array(Time(sec=7, nanosec=9), "fourm_ros")
    status = array.status[0]
    assert array.header.stamp == Time(sec=7, nanosec=9)
    assert status.level == DiagnosticStatus.OK
    assert status.name == "fourm_ros: pipeline" and status.hardware_id == "onnxruntime (cpu)"
    assert status.message == "running at 10.0 Hz"
    values = _values(array)
    assert values["frames received"] == "11" and values["frames processed"] == "11"
    assert values["model"] == "EPFL-VILAB/4M-21_B" and values["random weights"] == "false"
    assert values["latency decode mean (ms)"] == "30.0" and values["latency encode max (ms)"] == "10.0"
    assert values["input stamp age (s)"] == "0.050"
    assert values["output rate (Hz)"] == "10.00"


def test_nothing_received_yet_is_a_warning():
    stats, _ = _stats()
    level, message = stats.status()
    assert level == DiagnosticStatus.WARN and message == "no input received yet"


def test_random_weights_warn():
    stats, clock = _stats()
    stats.set_engine("torch (cpu)", "random", random_weights=True)
    _healthy_frame(stats, clock)
    level, message = stats.status()
    assert level == DiagnosticStatus.WARN and "random weights: outputs are meaningless" in message


def test_failure_is_an_error_until_a_frame_succeeds():
    stats, clock = _stats()
    _healthy_frame(stats, clock)
    stats.pipeline_failed("CUDA out of memory")
    level, message = stats.status()
    assert level == DiagnosticStatus.ERROR and message == "pipeline failing: CUDA out of memory"
    assert _values(stats.to_diagnostic_array(Time(), "n"))["last error"] == "CUDA out of memory"
    _healthy_frame(stats, clock)
    assert stats.status()[0] == DiagnosticStatus.OK


def test_bad_messages_are_counted_by_reason_and_warn_while_recent():
    stats, clock = _stats(recent_s=10.0)
    _healthy_frame(stats, clock)
    stats.bad_message("bad encoding")
    stats.bad_message("bad encoding")
    stats.bad_message("corrupt jpeg")
    level, message = stats.status()
    assert level == DiagnosticStatus.WARN and message == "bad input: corrupt jpeg (3 in total)"
    values = _values(stats.to_diagnostic_array(Time(), "n"))
    assert values["bad messages"] == "3" and values["bad messages: bad encoding"] == "2"
    for _ in range(110):  # 11 s of good frames later the warning is over, the counts stay
        _healthy_frame(stats, clock)
    assert stats.status() == (DiagnosticStatus.OK, "running at 10.0 Hz")
    assert _values(stats.to_diagnostic_array(Time(), "n"))["bad messages: corrupt jpeg"] == "1"


def test_stale_future_and_zero_stamps_warn():
    stats, _ = _stats(stale_after_s=1.0)
    stats.input_received(stamp_s=10.0, now_s=12.5)
    assert stats.status() == (DiagnosticStatus.WARN, "stale input: stamp is 2.50 s old")
    stats.input_received(stamp_s=20.0, now_s=17.0)
    assert "3.00 s in the future" in stats.status()[1]
    stats.input_received(stamp_s=0.0, now_s=17.0)
    assert "1 input messages have a zero stamp" in stats.status()[1]


def test_silent_input_warns():
    stats, clock = _stats(silence_s=5.0)
    _healthy_frame(stats, clock)
    clock.now += 6.0
    level, message = stats.status()
    assert level == DiagnosticStatus.WARN and message == "no input for 6.0 s"


def test_dropped_frames_are_counted_but_not_a_warning():
    stats, clock = _stats()
    _healthy_frame(stats, clock)
    stats.input_received(stamp_s=500.0, now_s=500.05)
    stats.frame_dropped()
    assert stats.status()[0] == DiagnosticStatus.OK
    assert _values(stats.to_diagnostic_array(Time(), "n"))["frames dropped (busy)"] == "1"


def test_latency_is_a_rolling_window():
    stats, _ = _stats(window=3)
    for seconds in (1.0, 0.004, 0.002, 0.003):
        stats.frame_processed({"decode": seconds})
    latency = stats.snapshot().latency["decode"]
    assert latency.count == 3 and latency.max == pytest.approx(0.004) and latency.mean == pytest.approx(0.003)


def test_concurrent_updates_are_all_counted():
    stats = PipelineStats()
    per_thread, threads = 2000, 4
    stop = threading.Event()

    def worker():
        for index in range(per_thread):
            stats.input_received(stamp_s=1.0, now_s=1.01)
            if index % 4 == 0:
                stats.bad_message("bad encoding")
            elif index % 4 == 1:
                stats.frame_dropped()
            else:
                stats.frame_processed({"total": 0.001})

    def reader():
        while not stop.is_set():
            stats.to_diagnostic_array(Time(), "n")

    reading = threading.Thread(target=reader)
    reading.start()
    workers = [threading.Thread(target=worker) for _ in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    stop.set()
    reading.join()
    snap = stats.snapshot()
    assert snap.received == per_thread * threads
    assert snap.bad == {"bad encoding": per_thread * threads // 4}
    assert snap.dropped == per_thread * threads // 4
    assert snap.processed == per_thread * threads // 2


def test_invalid_settings():
    with pytest.raises(ValueError, match="window must be >= 1"):
        PipelineStats(window=0)
    with pytest.raises(ValueError, match="must be > 0 seconds"):
        PipelineStats(stale_after_s=0)
