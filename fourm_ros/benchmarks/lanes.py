"""Two lanes: dense outputs with sequences enabled vs dense only, through the real node.

    python -m fourm_ros.benchmarks.lanes [--size B] [--seconds 60] [--rate 10] [--rounds 2] [--share 0.5]

perception_node runs in this process (real rclpy and DDS on this machine) around 4M-21 ``--size`` with
random weights and the official tokenizer decoders; one camera plays ``--rate`` Hz. Two nodes share the
weights: one with the dense tasks only, one with captions and human poses too (``ros.lanes.sequence_share``
= ``--share``). The camera feeds them in turn, ``--rounds`` times ``--seconds``/``--rounds`` each, so load
from other processes on a shared machine hits both alike; after each turn the lanes finish what they hold
before the other node's turn. Printed per variant: dense outputs per second (from the turn's first frame
until the dense lane is done), their latency (camera stamp → ``processed`` received), the sequence lane's
outputs per second and latency, and the time one sequence generation takes. Goals (issue #9 §2): no dense
latency includes a whole sequence generation, and the dense rate with sequences is at least the dense
lane's share (1 − share) of the dense-only rate, minus 10 %. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from fourm_ros.pipeline.config import PipelineConfig
from fourm_ros.pipeline.pipeline import Pipeline
from fourm_ros.pipeline.tiny import tiny_random_components
from fourm_ros.pipeline.weights import random_components
from fourm_ros.ros import topics
from fourm_ros.ros.bag import pinhole_camera_info, rgb_message
from fourm_ros.ros.node import PerceptionNode

VARIANTS = ("dense only", "with sequences")
NAMESPACES = {"dense only": "dense_only", "with sequences": "two_lanes"}


class _Recorder:
    """Latency (s) and arrival times of the dense (``processed``) and sequence (``caption``) outputs."""

    def __init__(self, node, clock) -> None:
        self.clock, self.lock = clock, threading.Lock()
        self.dense: dict[str, list[tuple[float, float]]] = {variant: [] for variant in VARIANTS}
        self.sequence: dict[str, list[tuple[float, float]]] = {variant: [] for variant in VARIANTS}
        for variant, namespace in NAMESPACES.items():
            node.create_subscription(
                Header, f"/{namespace}/{topics.PROCESSED}", lambda m, v=variant: self._dense(v, m), 100
            )
            node.create_subscription(
                Marker, f"/{namespace}/caption/marker", lambda m, v=variant: self._marker(v, m), 100
            )

    def _now(self) -> float:
        return self.clock.now().nanoseconds * 1e-9

    def _dense(self, variant: str, header: Header) -> None:
        now = self._now()
        with self.lock:
            self.dense[variant].append((now, now - Time.from_msg(header.stamp).nanoseconds * 1e-9))

    def _marker(self, variant: str, marker: Marker) -> None:
        now = self._now()
        with self.lock:
            self.sequence[variant].append((now, now - Time.from_msg(marker.header.stamp).nanoseconds * 1e-9))


def _summary(records: list[tuple[float, float]], seconds: float) -> str:
    if not records:
        return "none"
    latencies = [latency for _, latency in records]
    return (
        f"{len(records) / seconds:.3f} /s ({len(records)} in {seconds:.0f} s), latency median "
        f"{statistics.median(latencies):.2f} s, max {max(latencies):.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="B", choices=("B", "L", "XL", "tiny"), help="tiny: a smoke test")
    parser.add_argument("--seconds", type=float, default=60.0, help="camera time per variant, all rounds")
    parser.add_argument("--rate", type=float, default=10.0, help="camera frames per second")
    parser.add_argument("--rounds", type=int, default=2, help="turns per variant (interleaved)")
    parser.add_argument("--share", type=float, default=0.5, help="ros.lanes.sequence_share")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: library default)")
    args = parser.parse_args()
    if args.seconds <= 0 or args.rate <= 0 or args.rounds < 1 or not 0.05 <= args.share <= 1:
        parser.error("--seconds and --rate must be > 0, --rounds >= 1, --share in [0.05, 1]")
    with open("/proc/loadavg", encoding="ascii") as file:
        load = " ".join(file.read().split()[:3])
    print(f"4M-21 {args.size}, random weights; camera {args.rate:g} Hz; load average (1/5/15 min) {load}")
    model = f"EPFL-VILAB/4M-21_{'B' if args.size == 'tiny' else args.size}"
    config = PipelineConfig.from_dict({"model": model, "random_weights": True, "threads": args.threads})
    start = time.perf_counter()
    components = tiny_random_components() if args.size == "tiny" else random_components(config)
    print(f"random weights built in {time.perf_counter() - start:.0f} s")
    context = rclpy.Context()
    rclpy.init(context=context)
    nodes = {}
    for variant, namespace in NAMESPACES.items():
        settings = {"random_weights": True, "model": config.model, "ros.lanes.sequence_share": args.share}
        if variant == "dense only":
            settings.update({"tasks.caption.enabled": False, "tasks.human_pose.enabled": False})
        nodes[variant] = PerceptionNode(
            lambda pipeline_config: Pipeline(pipeline_config, components),
            node_name=f"perception_{namespace}",
            context=context,
            namespace=namespace,
            parameter_overrides=[Parameter(name, value=value) for name, value in settings.items()],
        )
    for node in nodes.values():  # the pipeline is built in the background; frames before are dropped
        node.wait_until_started()
    probe = rclpy.create_node("lanes_benchmark", context=context)
    recorder = _Recorder(probe, probe.get_clock())
    cameras = {
        variant: (
            probe.create_publisher(Image, f"/{namespace}/{topics.IMAGE}", 10),
            probe.create_publisher(CameraInfo, f"/{namespace}/{topics.CAMERA_INFO}", 10),
        )
        for variant, namespace in NAMESPACES.items()
    }
    executor = SingleThreadedExecutor(context=context)
    for node in (*nodes.values(), probe):
        executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    time.sleep(2.0)  # discovery
    pixels = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    dense_time = {variant: 0.0 for variant in VARIANTS}
    sequence_time = {variant: 0.0 for variant in VARIANTS}
    turn = args.seconds / args.rounds
    print(f"interleaved: {args.rounds} × {turn:.0f} s per variant (warm-up frame first)")
    for variant in VARIANTS:  # warm-up: one frame through each node, not counted
        header = Header(frame_id="camera", stamp=probe.get_clock().now().to_msg())
        image_pub, info_pub = cameras[variant]
        info_pub.publish(pinhole_camera_info(640, 480, header))
        image_pub.publish(rgb_message(pixels, header))
        time.sleep(0.5)
        while not all(lane.idle() for lane in nodes[variant]._lanes.values()):
            time.sleep(0.1)
    with recorder.lock:
        for table in (recorder.dense, recorder.sequence):
            for records in table.values():
                records.clear()
    generation: list[float] = []
    for _ in range(args.rounds):
        for variant in VARIANTS:
            image_pub, info_pub = cameras[variant]
            begin = probe.get_clock().now().nanoseconds * 1e-9
            index, wall = 0, time.monotonic()
            while time.monotonic() < wall + turn:
                header = Header(frame_id="camera", stamp=probe.get_clock().now().to_msg())
                info_pub.publish(pinhole_camera_info(640, 480, header))
                image_pub.publish(rgb_message(pixels, header))
                index += 1
                time.sleep(max(0.0, wall + index / args.rate - time.monotonic()))
            lanes = nodes[variant]._lanes
            while not (lanes["intake"].idle() and lanes["dense"].idle()):
                time.sleep(0.05)
            dense_time[variant] += probe.get_clock().now().nanoseconds * 1e-9 - begin
            # the sequence lane finishes what it holds, so the other node's turn runs alone
            while not all(lane.idle() for lane in lanes.values()):
                time.sleep(0.05)
            sequence_time[variant] += probe.get_clock().now().nanoseconds * 1e-9 - begin
    for variant in VARIANTS:
        sequence = nodes[variant]._lanes.get("sequence")
        if sequence is not None:
            compute = sequence.stats.snapshot().compute_mean_s
            if compute is not None:
                generation.append(compute)
    executor.shutdown()
    for node in (*nodes.values(), probe):
        node.destroy_node()
    rclpy.try_shutdown(context=context)

    print(f"\n{'variant':16} dense outputs | sequence outputs (caption marker)")
    for variant in VARIANTS:
        sequence = (
            "-" if variant == "dense only" else _summary(recorder.sequence[variant], sequence_time[variant])
        )
        print(f"{variant:16} {_summary(recorder.dense[variant], dense_time[variant])} | {sequence}")
    dense_only = len(recorder.dense["dense only"]) / dense_time["dense only"]
    with_sequences = len(recorder.dense["with sequences"]) / dense_time["with sequences"]
    ratio = with_sequences / dense_only if dense_only else float("nan")
    goal = (1 - args.share) - 0.10
    print(
        f"\ndense rate with sequences / dense only: {ratio:.2f} (goal >= dense share {1 - args.share:.2f} "
        f"- 0.10 = {goal:.2f}: {'met' if ratio >= goal else 'NOT met'})"
    )
    if generation and recorder.dense["with sequences"]:
        worst = max(latency for _, latency in recorder.dense["with sequences"])
        typical = statistics.median(latency for _, latency in recorder.dense["dense only"])
        print(
            f"one sequence generation (caption + human poses) takes {generation[0]:.2f} s; the worst dense "
            f"latency with sequences is {worst:.2f} s (dense only: median {typical:.2f} s)"
        )
    with open("/proc/loadavg", encoding="ascii") as file:
        print(f"load average at the end (1/5/15 min): {' '.join(file.read().split()[:3])}")


if __name__ == "__main__":
    main()
