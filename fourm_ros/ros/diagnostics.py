"""Runtime statistics of the node and their ``/diagnostics`` message.

:class:`PipelineStats` is plain Python: the worker thread records what happens to each frame, a timer
reads it, and one lock keeps both consistent. Only :meth:`PipelineStats.to_diagnostic_array` touches
diagnostic_msgs. Levels: ERROR when the start failed or the pipeline's last attempt failed; WARN while the
node is starting (``starting: <stage>``), when the outputs cannot be trusted or the input is unhealthy
(random weights, no or stale input, zero or future stamps, recent bad messages); OK otherwise. Dropped
frames alone are not a warning: with a depth-1 input the newest frame replaces one the worker had no time
for, by design.

Each lane (fourm_ros.ros.lanes) gets its own status ``<node>: <lane> lane``: rate, latency, drops, faults by
reason and the age of its newest result; ERROR when its watchdog fires (a pending frame waited far longer
than the lane usually takes) or its worker is gone, WARN after a recent fault.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

from fourm_ros.ros.conversion import copy_header
from fourm_ros.ros.lanes import LaneSnapshot
from fourm_ros.ros.topics import PROCESSED_OUTCOME

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


@dataclass(frozen=True)
class Rolling:
    """Mean and max of the last ``count`` values of one quantity."""

    count: int
    mean: float
    max: float
    last: float


def _state(snap: StatsSnapshot) -> str:
    if snap.start_failure:
        return "start failed"
    return "running" if snap.stage is None else f"starting: {snap.stage}"


def _rolling(values: deque) -> Rolling | None:
    if not values:
        return None
    return Rolling(len(values), sum(values) / len(values), max(values), values[-1])


@dataclass(frozen=True)
class StatsSnapshot:
    """A consistent copy of the statistics at one instant."""

    backend: str
    backend_reason: str
    model: str
    random_weights: bool
    stage: str | None
    seconds_in_stage: float
    start_failure: str
    received: int
    processed: int
    dropped: int
    dropped_starting: int
    failed: Mapping[str, int]
    bad: Mapping[str, int]
    last_bad_reason: str
    seconds_since_bad: float | None
    seconds_since_input: float | None
    zero_stamps: int
    stamp_age: Rolling | None
    latency: Mapping[str, Rolling]
    rate_hz: float
    last_error: str
    failing: bool

    @property
    def bad_total(self) -> int:
        return sum(self.bad.values())

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())


class PipelineStats:
    """Counters, rolling latencies and input health of a running node (thread-safe).

    ``received`` counts every input frame; ``processed``, ``dropped``, ``bad`` (by reason) and ``failed``
    (by reason: a fault in conversion, pipeline, message building or publishing) are what became of them,
    so received = processed + dropped + bad + failed once no frame is in flight. ``window`` values are
    kept per rolling quantity; ``stale_after_s`` is the input stamp age that counts as stale;
    ``silence_s`` how long without input is a warning; ``recent_s`` how long a bad message keeps the
    status at WARN and the span the output rate is measured over. ``clock`` is a monotonic clock in
    seconds (injectable for tests).
    """

    def __init__(
        self,
        window: int = 100,
        stale_after_s: float = 1.0,
        silence_s: float = 5.0,
        recent_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1 values, got {window}")
        if min(stale_after_s, silence_s, recent_s) <= 0:
            raise ValueError("stale_after_s, silence_s and recent_s must be > 0 seconds")
        self.window, self.stale_after_s, self.silence_s, self.recent_s = (
            window,
            stale_after_s,
            silence_s,
            recent_s,
        )
        self.clock = clock
        self._lock = threading.Lock()
        self._backend = self._backend_reason = self._model = ""
        self._random_weights = False
        self._received = self._processed = self._dropped = self._dropped_starting = self._zero_stamps = 0
        self._stage: str | None = None
        self._stage_since = self.clock()
        self._start_failure = ""
        self._bad: Counter[str] = Counter()
        self._failed: Counter[str] = Counter()
        self._last_bad_reason = ""
        self._last_bad_time: float | None = None
        self._last_input_time: float | None = None
        self._stamp_age: deque[float] = deque(maxlen=window)
        self._latency: dict[str, deque[float]] = {}
        self._processed_times: deque[float] = deque(maxlen=window)
        self._last_error = ""
        self._last_error_time: float | None = None

    def set_engine(self, backend: str, model: str, random_weights: bool, backend_reason: str = "") -> None:
        """What is running (and why this backend): reported as key/values; random weights make it WARN."""
        with self._lock:
            self._backend, self._model, self._random_weights = backend, model, bool(random_weights)
            self._backend_reason = backend_reason

    def set_stage(self, stage: str | None) -> None:
        """The start-up stage that began now ("loading weights", ...); None once the node serves frames."""
        with self._lock:
            self._stage, self._stage_since = stage, self.clock()

    def start_failed(self, reason: str) -> None:
        """The start failed (the node is about to exit); the status is ERROR with ``reason``."""
        with self._lock:
            self._start_failure = reason

    def input_received(self, stamp_s: float, now_s: float) -> None:
        """A message arrived with header stamp ``stamp_s``; ``now_s`` is the node clock (sim time aware)."""
        with self._lock:
            self._received += 1
            self._last_input_time = self.clock()
            if stamp_s == 0:
                self._zero_stamps += 1
            else:
                self._stamp_age.append(now_s - stamp_s)

    def bad_message(self, reason: str) -> None:
        """A received message could not be used; ``reason`` is a short category ("bad encoding", ...)."""
        with self._lock:
            self._bad[reason] += 1
            self._last_bad_reason = reason
            self._last_bad_time = self.clock()

    def frame_dropped(self) -> None:
        """A valid frame was replaced by a newer one before the worker got to it."""
        with self._lock:
            self._dropped += 1

    def frame_dropped_while_starting(self) -> None:
        """A valid frame arrived before the pipeline was ready to take it."""
        with self._lock:
            self._dropped_starting += 1

    def frame_processed(self, stage_seconds: Mapping[str, float]) -> None:
        """A frame went through the pipeline; ``stage_seconds`` maps stage name → wall time in seconds."""
        with self._lock:
            self._processed += 1
            self._processed_times.append(self.clock())
        self.stage_timings(stage_seconds)

    def stage_timings(self, stage_seconds: Mapping[str, float]) -> None:
        """Wall time per pipeline stage (seconds), e.g. of the sequence lane's work on a frame."""
        with self._lock:
            for stage, seconds in stage_seconds.items():
                self._latency.setdefault(stage, deque(maxlen=self.window)).append(float(seconds))

    def frame_failed(self, reason: str, error: str) -> None:
        """A fault on a frame's path; the status is ERROR until a frame succeeds again."""
        with self._lock:
            self._failed[reason] += 1
        self.pipeline_failed(f"{reason}: {error}")

    def pipeline_failed(self, error: str) -> None:
        """The pipeline raised on a frame; the status is ERROR until a frame succeeds again."""
        with self._lock:
            self._last_error = error
            self._last_error_time = self.clock()

    def snapshot(self) -> StatsSnapshot:
        with self._lock:
            now = self.clock()
            recent = [t for t in self._processed_times if t >= now - self.recent_s]
            span = recent[-1] - recent[0] if len(recent) > 1 else 0.0
            last_ok = self._processed_times[-1] if self._processed_times else None
            return StatsSnapshot(
                backend=self._backend,
                backend_reason=self._backend_reason,
                model=self._model,
                random_weights=self._random_weights,
                stage=self._stage,
                seconds_in_stage=now - self._stage_since,
                start_failure=self._start_failure,
                received=self._received,
                processed=self._processed,
                dropped=self._dropped,
                dropped_starting=self._dropped_starting,
                failed=dict(self._failed),
                bad=dict(self._bad),
                last_bad_reason=self._last_bad_reason,
                seconds_since_bad=None if self._last_bad_time is None else now - self._last_bad_time,
                seconds_since_input=None if self._last_input_time is None else now - self._last_input_time,
                zero_stamps=self._zero_stamps,
                stamp_age=_rolling(self._stamp_age),
                latency={stage: _rolling(values) for stage, values in sorted(self._latency.items())},
                rate_hz=(len(recent) - 1) / span if span > 0 else 0.0,
                last_error=self._last_error,
                failing=self._last_error_time is not None
                and (last_ok is None or self._last_error_time >= last_ok),
            )

    def status(self, snapshot: StatsSnapshot | None = None) -> tuple[int, str]:
        """(level, message) for ``snapshot`` (a fresh one by default); see the module doc for the rules."""
        snap = snapshot or self.snapshot()
        problems: list[tuple[int, str]] = []
        if snap.start_failure:
            problems.append((ERROR, f"start failed: {snap.start_failure}"))
        elif snap.stage is not None:
            problems.append((WARN, f"starting: {snap.stage} ({snap.seconds_in_stage:.0f} s)"))
        if snap.failing:
            problems.append((ERROR, f"pipeline failing: {snap.last_error}"))
        if snap.random_weights:
            problems.append((WARN, "random weights: outputs are meaningless"))
        if snap.seconds_since_input is None:
            problems.append((WARN, "no input received yet"))
        elif snap.seconds_since_input > self.silence_s:
            problems.append((WARN, f"no input for {snap.seconds_since_input:.1f} s"))
        if snap.seconds_since_bad is not None and snap.seconds_since_bad <= self.recent_s:
            problems.append((WARN, f"bad input: {snap.last_bad_reason} ({snap.bad_total} in total)"))
        if snap.zero_stamps:
            problems.append((WARN, f"{snap.zero_stamps} input messages have a zero stamp (driver bug?)"))
        if snap.stamp_age is not None:
            if snap.stamp_age.last > self.stale_after_s:
                problems.append((WARN, f"stale input: stamp is {snap.stamp_age.last:.2f} s old"))
            elif snap.stamp_age.last < -self.stale_after_s:
                problems.append(
                    (
                        WARN,
                        f"input stamp is {-snap.stamp_age.last:.2f} s in the future (clock or use_sim_time?)",
                    )
                )
        if not problems:
            return OK, f"running at {snap.rate_hz:.1f} Hz"
        return max(level for level, _ in problems), "; ".join(message for _, message in problems)

    def to_diagnostic_array(
        self, stamp: Time, node_name: str, lanes: Sequence[LaneSnapshot] = ()
    ) -> DiagnosticArray:
        """``<node_name>: pipeline`` with the level and every figure, then one status per lane."""
        snap = self.snapshot()
        level, message = self.status(snap)
        values = [
            ("state", _state(snap)),
            ("backend", snap.backend),
            ("backend selection", snap.backend_reason),
            ("model", snap.model),
            ("random weights", str(snap.random_weights).lower()),
            ("frames received", snap.received),
            ("frames processed", snap.processed),
            ("frames dropped (busy)", snap.dropped),
            ("frames dropped (starting)", snap.dropped_starting),
            ("frames failed", snap.failed_total),
            *((f"frames failed: {reason}", count) for reason, count in sorted(snap.failed.items())),
            ("bad messages", snap.bad_total),
            *((f"bad messages: {reason}", count) for reason, count in sorted(snap.bad.items())),
            ("input stamps zero", snap.zero_stamps),
            ("output rate (Hz)", f"{snap.rate_hz:.2f}"),
        ]
        if snap.stamp_age is not None:
            values += [
                ("input stamp age (s)", f"{snap.stamp_age.last:.3f}"),
                ("input stamp age mean (s)", f"{snap.stamp_age.mean:.3f}"),
                ("input stamp age max (s)", f"{snap.stamp_age.max:.3f}"),
            ]
        for stage, latency in snap.latency.items():
            values += [
                (f"latency {stage} mean (ms)", f"{latency.mean * 1e3:.1f}"),
                (f"latency {stage} max (ms)", f"{latency.max * 1e3:.1f}"),
            ]
        if snap.last_error:
            values.append(("last error", snap.last_error))
        status = DiagnosticStatus(
            level=level,
            name=f"{node_name}: pipeline",
            message=message,
            hardware_id=snap.backend,
            values=[KeyValue(key=key, value=str(value)) for key, value in values],
        )
        array = DiagnosticArray(status=[status, *(lane_status(lane, node_name) for lane in lanes)])
        array.header.stamp = stamp
        return array


def _figure(value: float | None, scale: float = 1.0, digits: int = 3) -> str:
    return "" if value is None else f"{value * scale:.{digits}f}"


def lane_level(lane: LaneSnapshot, recent_s: float = 10.0) -> tuple[int, str]:
    """ERROR when the lane's worker is gone or its watchdog fired; WARN after a fault within ``recent_s``."""
    if not lane.alive:
        return ERROR, f"{lane.name} lane: worker thread is not running"
    if lane.stalled:
        return ERROR, (
            f"{lane.name} lane stalled: a frame has waited {lane.pending_for_s:.1f} s "
            f"(watchdog at {lane.stalled_after_s:.1f} s)"
        )
    if lane.seconds_since_fault is not None and lane.seconds_since_fault <= recent_s:
        return WARN, f"{lane.name} lane: {sum(lane.failed.values())} faults, last {lane.last_fault}"
    return OK, f"{lane.name} lane: {lane.rate_hz:.2f} Hz"


def lane_status(lane: LaneSnapshot, node_name: str) -> DiagnosticStatus:
    """The ``<node_name>: <lane> lane`` status: rate, latency, drops, faults, age of the newest result."""
    level, message = lane_level(lane)
    values = [
        ("frames in", lane.submitted),
        ("frames out", lane.processed),
        ("frames dropped (replaced)", lane.dropped),
        ("faults", sum(lane.failed.values())),
        *((f"faults: {reason}", count) for reason, count in sorted(lane.failed.items())),
        ("rate (Hz)", f"{lane.rate_hz:.2f}"),
        ("latency mean (ms)", _figure(lane.latency_mean_s, 1e3, 1)),
        ("latency max (ms)", _figure(lane.latency_max_s, 1e3, 1)),
        ("compute per batch mean (ms)", _figure(lane.compute_mean_s, 1e3, 1)),
        ("newest result age (s)", _figure(lane.seconds_since_result)),
        ("pending for (s)", _figure(lane.pending_for_s)),
        ("watchdog after (s)", _figure(lane.stalled_after_s, 1.0, 1)),
    ]
    if lane.last_fault:
        values.append(("last fault", lane.last_fault))
    return DiagnosticStatus(
        level=level,
        name=f"{node_name}: {lane.name} lane",
        message=message,
        values=[KeyValue(key=key, value=str(value)) for key, value in values],
    )


def frame_outcome(header: Any, camera: str, problem: str | None) -> DiagnosticArray:
    """The ``frame_outcome`` of one input frame: its header, one status named after the camera ('' = no
    prefix), OK with message "processed" when its dense outputs were published, else WARN with the reason."""
    status = DiagnosticStatus(
        level=OK if problem is None else WARN,
        name=camera,
        message=PROCESSED_OUTCOME if problem is None else problem,
    )
    return DiagnosticArray(header=copy_header(header), status=[status])
