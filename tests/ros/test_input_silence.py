"""The silent-camera warning: a matched publisher never heard from is reported; one that sent frames and
then paused (a bag that ended, a paused player, replay waiting for the node) is not."""

import time
from dataclasses import dataclass

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import Image

from fourm_ros.ros.inputs import AdaptiveSubscription
from fourm_ros.ros.qos import make_qos

TOPIC = "/silence_test/image"
SILENT_AFTER_S = 0.3


def _spin_until(executor, subscription, condition, seconds=5.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
        subscription.refresh()
        if condition():
            return True
    return False


def _idle(executor, subscription, seconds):
    _spin_until(executor, subscription, lambda: False, seconds)


IMAGE = Image(height=2, width=2, encoding="mono8", step=2, data=bytes(4))


@dataclass
class Setup:
    """A reader node's input subscription and one camera node, spun by hand on one executor."""

    context: rclpy.Context
    executor: SingleThreadedExecutor
    camera: rclpy.node.Node
    subscription: AdaptiveSubscription
    received: list


@pytest.fixture
def setup():
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        reader = rclpy.create_node("silence_reader", context=context)
        camera = rclpy.create_node("silence_camera", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(reader)
        executor.add_node(camera)
        received = []
        subscription = AdaptiveSubscription(
            reader,
            Image,
            TOPIC,
            received.append,
            make_qos("input"),
            auto_reliability=True,
            silent_after_s=SILENT_AFTER_S,
        )
        yield Setup(context, executor, camera, subscription, received)
    finally:
        rclpy.try_shutdown(context=context)


def test_a_paused_camera_is_not_silent_but_a_new_unheard_one_is(setup):
    executor, subscription, received = setup.executor, setup.subscription, setup.received
    publisher = setup.camera.create_publisher(Image, TOPIC, 10)
    assert _spin_until(executor, subscription, lambda: subscription.matched() == 1)
    assert _spin_until(executor, subscription, lambda: (publisher.publish(IMAGE), bool(received))[1])

    _idle(executor, subscription, 4 * SILENT_AFTER_S)  # the camera pauses, still matched
    assert subscription.matched() == 1
    assert subscription.report().silent_periods == 0

    silent = rclpy.create_node("silence_second_camera", context=setup.context)
    silent.create_publisher(Image, TOPIC, 10)  # matched, never publishes
    executor.add_node(silent)
    assert _spin_until(executor, subscription, lambda: subscription.report().silent_periods == 1)


def test_a_frame_that_arrives_before_the_publisher_is_noticed_counts_as_heard(setup):
    """Replay sends its first frame as soon as it matches, before the node's next refresh sees the new
    publisher; lock-step then waits for that frame's results (seconds): that camera is not silent."""
    executor, subscription, received = setup.executor, setup.subscription, setup.received
    publisher = setup.camera.create_publisher(Image, TOPIC, 10)
    deadline = time.monotonic() + 5.0
    while not received and time.monotonic() < deadline:  # no refresh between match and receipt
        if publisher.get_subscription_count() > 0:
            publisher.publish(IMAGE)
        executor.spin_once(timeout_sec=0.05)
    assert received
    _idle(executor, subscription, 4 * SILENT_AFTER_S)
    assert subscription.report().silent_periods == 0
