"""Soak: perception_node for a long time with several cameras, good and bad frames mixed.

    python -m fourm_ros.benchmarks.soak [--minutes 30] [--cameras 3] [--rate 30] [--interval 60]

The node runs in this process (real rclpy and DDS on the local machine) around a tiny 4M-21 with random
weights and small tokenizer decoders, so the machinery, not the model, is what runs for long. A publisher
thread plays ``--cameras`` cameras at ``--rate`` Hz each; every 7th frame of a camera is bad (an unsupported
encoding, data shorter than its size, or a CameraInfo of another size, in turn). Every ``--interval``
seconds a row gives the process's RSS, open files and threads, the node's counters and its lanes. At the
end: the slope of RSS, open files and threads over the run (after the first row, which includes warm-up),
lane deaths, and whether the counters add up: received = processed + dropped + bad + failed, and one
``frame_outcome`` per received frame. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from collections import Counter

import numpy as np
import rclpy
import torch
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from fourm_ros.pipeline.pipeline import Pipeline
from fourm_ros.pipeline.tiny import tiny_random_components
from fourm_ros.ros import topics
from fourm_ros.ros.bag import pinhole_camera_info, rgb_message
from fourm_ros.ros.node import PerceptionNode

BAD_EVERY = 7
WIDTH, HEIGHT = 320, 240


def _process_figures() -> dict[str, float]:
    with open("/proc/self/status", encoding="ascii") as file:
        status = dict(line.split(":", 1) for line in file.read().splitlines())
    return {
        "rss_mib": int(status["VmRSS"].split()[0]) / 1024,
        "open_files": len(os.listdir("/proc/self/fd")),
        "threads": int(status["Threads"]),
    }


class _Cameras:
    """Plays the cameras from a thread: CameraInfo then Image per frame, every BAD_EVERY-th frame bad."""

    def __init__(self, node, cameras: list[str], rate_hz: float):
        self.node, self.cameras, self.period = node, cameras, 1.0 / rate_hz
        self.publishers = {
            camera: (
                node.create_publisher(Image, topics.camera_topic(camera, topics.IMAGE), 10),
                node.create_publisher(CameraInfo, topics.camera_topic(camera, topics.CAMERA_INFO), 10),
            )
            for camera in cameras
        }
        self.sent: Counter[str] = Counter()
        self.pixels = np.random.default_rng(0).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="soak_cameras", daemon=True)

    def _frame(self, index: int, header: Header) -> tuple[Image, CameraInfo]:
        kind = (index // BAD_EVERY) % 3 if index % BAD_EVERY == BAD_EVERY - 1 else None
        info = pinhole_camera_info(WIDTH, HEIGHT, header)
        if kind == 0:
            self.sent["bad: encoding"] += 1
            return Image(
                header=header, encoding="bayer_rggb8", width=4, height=4, step=4, data=bytes(16)
            ), info
        if kind == 1:
            self.sent["bad: short data"] += 1
            return Image(header=header, encoding="rgb8", width=64, height=48, step=192, data=bytes(100)), info
        if kind == 2:
            self.sent["bad: camera_info size"] += 1
            return rgb_message(self.pixels, header), pinhole_camera_info(WIDTH // 2, HEIGHT // 2, header)
        self.sent["good"] += 1
        return rgb_message(self.pixels, header), info

    def _run(self) -> None:
        index, start = 0, time.monotonic()
        while not self.stop.is_set():
            for camera, (image_pub, info_pub) in self.publishers.items():
                header = Header(
                    frame_id=f"{camera}_optical_frame", stamp=self.node.get_clock().now().to_msg()
                )
                image, info = self._frame(index, header)
                info_pub.publish(info)
                image_pub.publish(image)
            index += 1
            self.stop.wait(max(0.0, start + index * self.period - time.monotonic()))


def _diagnostic_values(array: DiagnosticArray | None) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    if array is None:
        return {}, {}
    pipeline, lanes = {}, {}
    for status in array.status:
        values = {item.key: item.value for item in status.values}
        if status.name.endswith(": pipeline"):
            pipeline = values
        elif status.name.endswith(" lane"):
            level = status.level[0] if isinstance(status.level, bytes) else status.level
            lanes[status.name.rsplit(": ", 1)[1].removesuffix(" lane")] = {**values, "level": str(level)}
    return pipeline, lanes


def _slope_per_hour(times: list[float], values: list[float]) -> float:
    if len(times) < 2:
        return float("nan")
    return float(np.polyfit(np.asarray(times) / 3600, np.asarray(values), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--cameras", type=int, default=3)
    parser.add_argument("--rate", type=float, default=30.0, help="frames per second per camera")
    parser.add_argument("--interval", type=float, default=60.0, help="seconds between rows")
    args = parser.parse_args()
    if args.minutes <= 0 or args.cameras < 1 or args.rate <= 0 or args.interval <= 0:
        parser.error("--minutes, --cameras, --rate and --interval must be positive")
    torch.set_num_threads(1)
    cameras = [f"cam{i}" for i in range(args.cameras)]
    context = rclpy.Context()
    rclpy.init(context=context)
    settings = {
        "random_weights": True,
        "tasks.human_pose.max_tokens": 40,
        "tasks.caption.max_tokens": 16,
        "ros.cameras": cameras,
        "ros.diagnostics_period_s": 1.0,
    }
    components = tiny_random_components()
    node = PerceptionNode(
        lambda config: Pipeline(config, components),
        context=context,
        parameter_overrides=[Parameter(name, value=value) for name, value in settings.items()],
    )
    node.wait_until_started()  # the pipeline is built in the background; frames before are dropped
    probe = rclpy.create_node("soak_probe", context=context)
    newest: dict[str, DiagnosticArray] = {}
    outcomes: Counter[str] = Counter()
    lock = threading.Lock()

    def on_outcome(msg: DiagnosticArray) -> None:
        with lock:
            message = msg.status[0].message
            outcomes["processed" if message == "processed" else message.split(":")[0]] += 1

    probe.create_subscription(DiagnosticArray, "/diagnostics", lambda m: newest.update(last=m), 10)
    for camera in cameras:
        probe.create_subscription(
            DiagnosticArray, topics.camera_topic(camera, topics.FRAME_OUTCOME), on_outcome, 100
        )
    player = _Cameras(probe, cameras, args.rate)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    executor.add_node(probe)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    print(
        f"soak: {args.cameras} cameras × {args.rate:g} Hz, {args.minutes:g} min, 1 in {BAD_EVERY} frames bad"
    )
    with open("/proc/loadavg", encoding="ascii") as file:
        print(f"load average (1/5/15 min): {' '.join(file.read().split()[:3])} on {os.cpu_count()} cores")
    print(
        "  t(s)  RSS(MiB) files threads  received processed dropped  bad failed  outcomes"
        "  lane:out/dropped/level"
    )
    start = time.monotonic()
    player.thread.start()
    samples: list[tuple[float, dict[str, float]]] = []
    end = start + args.minutes * 60

    def row(elapsed: float) -> None:
        figures = _process_figures()
        samples.append((elapsed, figures))
        pipeline, lanes = _diagnostic_values(newest.get("last"))
        with lock:
            outcome_total = sum(outcomes.values())
        lane_text = " ".join(
            f"{name}:{lane.get('frames out')}/{lane.get('frames dropped (replaced)')}/L{lane['level']}"
            for name, lane in lanes.items()
        )
        print(
            f"{elapsed:6.0f} {figures['rss_mib']:9.1f} {figures['open_files']:5.0f} {figures['threads']:7.0f}"
            f"  {pipeline.get('frames received', '-'):>8} {pipeline.get('frames processed', '-'):>9}"
            f" {pipeline.get('frames dropped (busy)', '-'):>7} {pipeline.get('bad messages', '-'):>4}"
            f" {pipeline.get('frames failed', '-'):>6} {outcome_total:>9}  {lane_text}",
            flush=True,
        )

    while time.monotonic() < end:
        time.sleep(min(args.interval, max(0.0, end - time.monotonic())))
        row(time.monotonic() - start)
    player.stop.set()
    player.thread.join()
    drained = time.monotonic() + 60
    while time.monotonic() < drained and not all(lane.idle() for lane in node._lanes.values()):
        time.sleep(0.1)
    time.sleep(3.0)  # the last outcomes and a fresh /diagnostics
    row(time.monotonic() - start)
    executor.shutdown()
    pipeline, _ = _diagnostic_values(newest.get("last"))
    dead = [name for name, lane in node._lanes.items() if not lane.alive]
    node.destroy_node()
    probe.destroy_node()
    rclpy.try_shutdown(context=context)

    later = samples[1:] if len(samples) > 2 else samples
    times = [t for t, _ in later]
    print("\nslopes over the run after the first row (per hour):")
    for key, unit in (("rss_mib", "MiB"), ("open_files", "files"), ("threads", "threads")):
        values = [figures[key] for _, figures in later]
        slope = _slope_per_hour(times, values)
        print(f"  {key:10} {slope:+9.2f} {unit}/h  (first {values[0]:.1f}, last {values[-1]:.1f})")
    print(f"lane deaths: {len(dead)} {dead if dead else ''}".rstrip())
    print(f"sent by the cameras: {dict(player.sent)}")
    counts = {
        key: int(pipeline.get(key, 0))
        for key in (
            "frames received",
            "frames processed",
            "frames dropped (busy)",
            "bad messages",
            "frames failed",
        )
    }
    parts = (
        counts["frames processed"]
        + counts["frames dropped (busy)"]
        + counts["bad messages"]
        + counts["frames failed"]
    )
    print(
        f"received {counts['frames received']} = processed {counts['frames processed']} + dropped "
        f"{counts['frames dropped (busy)']} + bad {counts['bad messages']} + failed {counts['frames failed']}"
        f" = {parts}: {'adds up' if parts == counts['frames received'] else 'DOES NOT add up'}"
    )
    bad_reasons = {key: value for key, value in pipeline.items() if key.startswith("bad messages: ")}
    print(f"bad by reason: {bad_reasons}")
    with lock:
        total = sum(outcomes.values())
        print(f"frame_outcome messages: {total} {dict(outcomes)} (received {counts['frames received']})")


if __name__ == "__main__":
    main()
