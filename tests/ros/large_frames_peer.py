"""One side of the large-frame test, run as its own process (a Fast DDS profile is read once per process).

python large_frames_peer.py publish RELIABILITY WIDTH HEIGHT ENCODING SECONDS
    a camera driver: waits for a subscriber, then publishes frames at 5 Hz for SECONDS
python large_frames_peer.py count SILENT_AFTER_S
    the node's input: an AdaptiveSubscription (reliability auto) until stdin closes, then a JSON report
"""

import json
import sys
import threading
import time

import numpy as np
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from fourm_ros.ros.inputs import AdaptiveSubscription
from fourm_ros.ros.qos import make_qos

TOPIC = "/camera/image_raw"
RATE_HZ = 5.0


def publish(reliability: str, width: int, height: int, encoding: str, seconds: float) -> None:
    node = rclpy.create_node("camera_driver")
    policy = ReliabilityPolicy.RELIABLE if reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT
    qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=5, reliability=policy)
    publisher = node.create_publisher(Image, TOPIC, qos)
    deadline = time.monotonic() + 30
    while publisher.get_subscription_count() == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.5)  # the reader looks at the publishers and settles its reliability (refresh every 0.2 s)
    data = np.random.default_rng(0).integers(0, 256, width * height * 3, dtype=np.uint8)
    message = Image(height=height, width=width, encoding=encoding, step=width * 3, data=data.tobytes())
    message.header.frame_id = "camera_optical_frame"
    sent, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        message.header.stamp.sec = sent
        publisher.publish(message)
        sent += 1
        time.sleep(1 / RATE_HZ)
    time.sleep(1.0)  # reliable: let the last frame's fragments be repaired before the writer goes away
    print(json.dumps({"sent": sent}))


def count(silent_after_s: float) -> None:
    node = rclpy.create_node("perception_input")
    received = []
    subscription = AdaptiveSubscription(
        node,
        Image,
        TOPIC,
        lambda msg: received.append((msg.width, msg.height, msg.encoding, len(msg.data))),
        make_qos("input"),
        auto_reliability=True,
        silent_after_s=silent_after_s,
    )
    node.create_timer(0.2, subscription.refresh)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    stdin_closed = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stdin_closed.set()), daemon=True).start()
    while not stdin_closed.is_set():
        executor.spin_once(timeout_sec=0.1)
    report = subscription.report()
    print(
        json.dumps(
            {
                "received": len(received),
                "sizes": sorted(set(received)),
                "qos": report.qos,
                "silent_periods": report.silent_periods,
            }
        )
    )


if __name__ == "__main__":
    rclpy.init()
    if sys.argv[1] == "publish":
        publish(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], float(sys.argv[6]))
    else:
        count(float(sys.argv[2]))
    rclpy.try_shutdown()
