"""Lanes: newest-frame-wins work queues with their own worker thread, fault isolation, stats and a watchdog.

perception_node runs three lanes: ``intake`` (conversion and validation of the received messages),
``dense`` (depth, normals, segmentation at frame rate) and ``sequence`` (captions and human poses,
autoregressive and slower). Each lane has one pending slot per key (a camera, or one slot for a
time-aligned set of cameras): a newer submission replaces the waiting one, which is handed back as
dropped, so no lane ever builds a backlog and the dense lane never waits for a sequence.

Nothing here imports rclpy: the node gives each lane its ``process`` function and callbacks. A lane never
dies: an exception escaping ``process`` is counted under its reason, the batch is retried frame by frame
(so one camera's fault does not cost the other cameras their frame), and the worker goes on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

LOG = logging.getLogger("fourm_ros.lanes")
Item = TypeVar("Item")


def fault_reason(stage: str, error: BaseException) -> str:
    """A short, countable reason: the stage and the exception type (the message goes to the log)."""
    return f"{stage}: {type(error).__name__}"


def split_batch(items: Sequence[Item], max_batch: int | None) -> list[list[Item]]:
    """``items`` in chunks of at most ``max_batch`` (None: one chunk), in order: engines built for
    ``max_batch`` frames per call run several cameras in several calls instead of failing."""
    if max_batch is not None and max_batch < 1:
        raise ValueError(f"max_batch must be >= 1 or None, got {max_batch}")
    if not items:
        return []
    step = len(items) if max_batch is None else max_batch
    return [list(items[i : i + step]) for i in range(0, len(items), step)]


@dataclass(frozen=True)
class LaneSnapshot:
    """A consistent copy of one lane's figures (seconds are monotonic-clock seconds)."""

    name: str
    alive: bool
    submitted: int
    processed: int
    dropped: int
    failed: dict[str, int]
    last_fault: str
    seconds_since_fault: float | None
    rate_hz: float
    latency_mean_s: float | None
    latency_max_s: float | None
    compute_mean_s: float | None
    seconds_since_result: float | None
    pending_for_s: float | None
    stalled_after_s: float

    @property
    def stalled(self) -> bool:
        """A frame has waited far longer than the lane usually takes (the watchdog)."""
        return self.pending_for_s is not None and self.pending_for_s > self.stalled_after_s


class LaneStats:
    """Counters and rolling timings of one lane (thread-safe).

    ``latency`` is receipt → results published (what a subscriber sees); ``compute`` is the time the
    worker spent on a batch. The watchdog threshold is ``watchdog_factor`` × the usual (mean) latency, never
    below ``watchdog_min_s`` (the first frames of a big model take longer than the rest).
    """

    def __init__(
        self,
        name: str,
        window: int = 50,
        recent_s: float = 10.0,
        watchdog_factor: float = 10.0,
        watchdog_min_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if watchdog_factor <= 1 or watchdog_min_s <= 0:
            raise ValueError("watchdog_factor must be > 1 and watchdog_min_s > 0 seconds")
        self.name, self.recent_s, self.clock = name, recent_s, clock
        self.watchdog_factor, self.watchdog_min_s = watchdog_factor, watchdog_min_s
        self._lock = threading.Lock()
        self._submitted = self._processed = self._dropped = 0
        self._failed: Counter[str] = Counter()
        self._last_fault = ""
        self._last_fault_time: float | None = None
        self._latency: deque[float] = deque(maxlen=window)
        self._compute: deque[float] = deque(maxlen=window)
        self._done_times: deque[float] = deque(maxlen=window)
        self._pending_since: float | None = None
        self._alive = True

    def submitted(self, count: int = 1) -> None:
        with self._lock:
            self._submitted += count
            if self._pending_since is None:
                self._pending_since = self.clock()

    def taken(self) -> None:
        """The worker took every pending frame: the slot is empty again."""
        with self._lock:
            self._pending_since = None

    def dropped(self, count: int = 1) -> None:
        with self._lock:
            self._dropped += count

    def processed(self, received_at: float) -> None:
        """One frame's results are out; ``received_at`` is the clock time the frame arrived."""
        with self._lock:
            now = self.clock()
            self._processed += 1
            self._latency.append(now - received_at)
            self._done_times.append(now)

    def computed(self, seconds: float) -> None:
        with self._lock:
            self._compute.append(seconds)

    def failed(self, reason: str, detail: str = "") -> None:
        with self._lock:
            self._failed[reason] += 1
            self._last_fault = f"{reason} ({detail})" if detail else reason
            self._last_fault_time = self.clock()

    def died(self) -> None:
        with self._lock:
            self._alive = False

    def stalled_after_s(self) -> float:
        with self._lock:
            return self._stalled_after()

    def _stalled_after(self) -> float:
        usual = sum(self._latency) / len(self._latency) if self._latency else 0.0
        return max(self.watchdog_min_s, self.watchdog_factor * usual)

    def snapshot(self) -> LaneSnapshot:
        with self._lock:
            now = self.clock()
            recent = [t for t in self._done_times if t >= now - self.recent_s]
            span = recent[-1] - recent[0] if len(recent) > 1 else 0.0
            return LaneSnapshot(
                name=self.name,
                alive=self._alive,
                submitted=self._submitted,
                processed=self._processed,
                dropped=self._dropped,
                failed=dict(self._failed),
                last_fault=self._last_fault,
                seconds_since_fault=None if self._last_fault_time is None else now - self._last_fault_time,
                rate_hz=(len(recent) - 1) / span if span > 0 else 0.0,
                latency_mean_s=sum(self._latency) / len(self._latency) if self._latency else None,
                latency_max_s=max(self._latency) if self._latency else None,
                compute_mean_s=sum(self._compute) / len(self._compute) if self._compute else None,
                seconds_since_result=now - self._done_times[-1] if self._done_times else None,
                pending_for_s=None if self._pending_since is None else now - self._pending_since,
                stalled_after_s=self._stalled_after(),
            )


class DutyCycle:
    """Keeps a worker computing at most ``share`` of the wall time: :meth:`pause` (called between small
    steps, e.g. generation steps) sleeps in proportion to the time computed since the last pause, so the
    other lane has the cores to itself for the rest. ``share`` 1 never sleeps."""

    def __init__(
        self,
        share: float,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if not 0 < share <= 1:
            raise ValueError(f"share must be in (0, 1], got {share}")
        self.share, self._sleep, self._clock = share, sleep, clock
        self._resumed = clock()

    def start(self) -> None:
        """Computing begins now (a batch starts)."""
        self._resumed = self._clock()

    def pause(self) -> None:
        if self.share >= 1:
            return
        busy = self._clock() - self._resumed
        self._sleep(busy * (1 - self.share) / self.share)
        self._resumed = self._clock()


class Lane(Generic[Item]):
    """One worker thread serving a newest-wins pending slot per key.

    ``process(batch)`` handles the frames of all keys that were pending when the worker woke, grouped by
    ``group_by`` (e.g. the tasks due) and split into chunks of at most ``max_batch``; ``on_drop(item)``
    is told of every item replaced before the worker got to it; ``on_fault(items, reason, error)`` of
    items whose ``process`` raised (after a retry frame by frame when the chunk held several). ``setup``
    runs first on the worker thread (e.g. per-thread torch settings). ``stats`` counts submissions, drops
    and faults here; ``process`` reports what it published.
    """

    def __init__(
        self,
        name: str,
        process: Callable[[list[Item]], None],
        *,
        on_drop: Callable[[Item], None] = lambda item: None,
        on_fault: Callable[[list[Item], str, BaseException], None] = lambda items, reason, error: None,
        max_batch: int | None = None,
        group_by: Callable[[Item], Hashable] = lambda item: None,
        setup: Callable[[], None] | None = None,
        stats: LaneStats | None = None,
    ) -> None:
        split_batch([], max_batch)  # validates max_batch
        self.name = name
        self.stats = stats or LaneStats(name)
        self._process, self._on_drop, self._on_fault = process, on_drop, on_fault
        self._max_batch, self._group_by, self._setup = max_batch, group_by, setup
        self._condition = threading.Condition()
        self._pending: dict[Hashable, list[Item]] = {}
        self._stopping = False
        self._busy = False
        self._thread = threading.Thread(target=self._run, name=f"fourm_ros_{name}_lane", daemon=True)

    def start(self) -> Lane[Item]:
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, key: Hashable, items: Iterable[Item]) -> None:
        """Park ``items`` under ``key``, replacing (and dropping) what waited there."""
        items = list(items)
        with self._condition:
            if self._stopping:
                replaced, items = items, []
            else:
                replaced = self._pending.pop(key, [])
                if items:
                    self._pending[key] = items
                    self.stats.submitted(len(items))
                self._condition.notify()
        self._drop(replaced)

    def idle(self) -> bool:
        """Nothing pending and nothing being processed (tests and benchmarks wait for this)."""
        with self._condition:
            return not self._pending and not self._busy

    def stop(self, timeout_s: float = 5.0) -> list[Item]:
        """Stop after the current batch; returns the items still pending (not processed)."""
        with self._condition:
            self._stopping = True
            left = [item for items in self._pending.values() for item in items]
            self._pending = {}
            self._condition.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)
        return left

    def _drop(self, items: list[Item]) -> None:
        if items:
            self.stats.dropped(len(items))
        for item in items:
            self._guarded("on_drop", self._on_drop, item)

    def _guarded(self, what: str, function: Callable, *args) -> None:
        try:
            function(*args)
        except Exception as error:  # a callback's fault must not end the lane
            self.stats.failed(fault_reason(f"lane {what}", error), str(error))
            LOG.exception("lane %s: %s raised", self.name, what)

    def _run(self) -> None:
        try:
            if self._setup is not None:
                self._guarded("setup", self._setup)
            while True:
                with self._condition:
                    self._busy = False
                    self._condition.wait_for(lambda: self._pending or self._stopping)
                    if self._stopping:
                        return
                    batch = [item for items in self._pending.values() for item in items]
                    self._pending = {}
                    self._busy = True
                self.stats.taken()
                groups: dict[Hashable, list[Item]] = {}
                for item in batch:
                    groups.setdefault(self._group_by(item), []).append(item)
                for group in groups.values():
                    for chunk in split_batch(group, self._max_batch):
                        self._serve(chunk)
        except BaseException:
            self.stats.died()
            LOG.exception("lane %s: the worker thread ended unexpectedly", self.name)
            raise

    def _serve(self, chunk: list[Item]) -> None:
        start = time.perf_counter()
        try:
            self._process(chunk)
        except Exception as error:
            if len(chunk) > 1:  # find the frame at fault; the others are served
                for item in chunk:
                    self._serve([item])
                return
            reason = fault_reason("pipeline", error)
            self.stats.failed(reason, str(error))
            self._guarded("on_fault", self._on_fault, chunk, reason, error)
        finally:
            self.stats.computed(time.perf_counter() - start)


@dataclass(frozen=True)
class Stamped(Generic[Item]):
    """An item of one camera at one stamp (nanoseconds), for time alignment."""

    camera: str
    stamp_ns: int
    item: Item


class ApproximateTimeSync(Generic[Item]):
    """Groups one frame per camera whose stamps lie within ``slop_s`` (message_filters' approximate-time
    idea, newest set first): :meth:`add` returns the sets that became complete and the frames that can
    no longer be part of any set (older than the newest complete set, or beyond ``queue_size`` per camera).
    """

    def __init__(self, cameras: Sequence[str], slop_s: float, queue_size: int = 5) -> None:
        if slop_s <= 0:
            raise ValueError(f"slop_s must be > 0 seconds, got {slop_s}")
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if not cameras or len(set(cameras)) != len(cameras):
            raise ValueError(f"cameras must be distinct and at least one, got {list(cameras)}")
        self.cameras, self.slop_ns, self.queue_size = tuple(cameras), round(slop_s * 1e9), queue_size
        self._queues: dict[str, list[Stamped[Item]]] = {camera: [] for camera in self.cameras}
        self._lock = threading.Lock()

    def add(self, frame: Stamped[Item]) -> tuple[list[list[Stamped[Item]]], list[Stamped[Item]]]:
        """(complete sets, each in camera order; frames discarded)."""
        if frame.camera not in self._queues:
            raise ValueError(f"unknown camera {frame.camera!r}; expected one of {list(self.cameras)}")
        with self._lock:
            queue = self._queues[frame.camera]
            queue.append(frame)
            queue.sort(key=lambda f: f.stamp_ns)
            discarded = queue[: -self.queue_size]
            del queue[: -self.queue_size]
            sets = []
            found = self._newest_set()
            if found is not None:
                sets.append(found)
                for camera, chosen in zip(self.cameras, found, strict=True):
                    kept = [f for f in self._queues[camera] if f.stamp_ns > chosen.stamp_ns]
                    discarded += [
                        f for f in self._queues[camera] if f.stamp_ns <= chosen.stamp_ns and f is not chosen
                    ]
                    self._queues[camera] = kept
            return sets, discarded

    def _newest_set(self) -> list[Stamped[Item]] | None:
        """The set with the newest pivot whose spread is within the slop, if every camera has a frame."""
        if any(not queue for queue in self._queues.values()):
            return None
        pivots = sorted({f.stamp_ns for queue in self._queues.values() for f in queue}, reverse=True)
        for pivot in pivots:
            chosen = []
            for camera in self.cameras:
                near = min(self._queues[camera], key=lambda f: abs(f.stamp_ns - pivot))
                chosen.append(near)
            stamps = [f.stamp_ns for f in chosen]
            if max(stamps) - min(stamps) <= self.slop_ns:
                return chosen
        return None


class Turns:
    """Lets lanes share a backend that cannot run two calls at once (TensorRT: one execution context and
    its buffers per graph). A lane holds the turn for a call; the sequence lane hands it over between
    generation steps, so the dense lane waits at most one step, not a whole sequence. ``exclusive`` False
    (torch, ONNX Runtime: concurrent calls are safe) makes every method free."""

    def __init__(self, exclusive: bool) -> None:
        self._lock = threading.Lock() if exclusive else None

    @contextmanager
    def held(self) -> Iterator[None]:
        if self._lock is None:
            yield
            return
        with self._lock:
            yield

    def handing_over(self, pause: Callable[[], None]) -> Callable[[], None]:
        """``pause`` run without the turn (call it only while holding it)."""
        if self._lock is None:
            return pause

        def pause_without_turn() -> None:
            self._lock.release()
            try:
                pause()
            finally:
                self._lock.acquire()

        return pause_without_turn
