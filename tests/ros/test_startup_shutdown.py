"""perception_node as its own process (its real entry point): Ctrl-C in every state ends it at once, without
a traceback, with status 0; a failed start says why once and exits with status 1."""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from node_process import FAILURE
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from fourm_ros.ros.bag import rgb_message

pytestmark = pytest.mark.ros
TESTS = Path(__file__).resolve().parents[1]
NODE_PROCESS = TESTS / "node_process.py"
LAUNCH_SIGTERM_TIMEOUT_S = 5.0
"""ros2 launch sends SIGINT, then SIGTERM after this long: the node must be gone before."""
ROS_ARGUMENTS = [
    "--ros-args",
    "-p",
    "tasks.human_pose.max_tokens:=12",
    "-p",
    "tasks.caption.max_tokens:=8",
    "-p",
    "ros.require_camera_info:=false",
]
TRACEBACK_MARKERS = ("Traceback", "KeyboardInterrupt", "RCLError", "terminate called")


class NodeProcess:
    """The node in a subprocess; its console output (the ROS log goes to stderr) collected line by line."""

    def __init__(self, *options: str):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
        env.update(PYTHONUNBUFFERED="1", RCUTILS_COLORIZED_OUTPUT="0")
        self.process = subprocess.Popen(
            [sys.executable, str(NODE_PROCESS), *options, *ROS_ARGUMENTS],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.output:
            assert self.process.poll() is None, f"the node exited early:\n{self.output}"
            assert time.monotonic() < deadline, f"no {text!r} within {timeout} s:\n{self.output}"
            time.sleep(0.05)

    def interrupt(self) -> tuple[int, float]:
        """Ctrl-C as ros2 launch delivers it: the terminal's SIGINT, then launch's; (status, seconds)."""
        start = time.monotonic()
        self.process.send_signal(signal.SIGINT)
        time.sleep(0.2)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        return self.finish(), time.monotonic() - start

    def finish(self, timeout: float = 30.0) -> int:
        try:
            status = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise
        self._reader.join(timeout=5)
        return status


SCENARIOS = {
    "loading": ("--load-s", "120"),
    "idle": (),
    "inference": ("--frame-s", "120"),
    "failed start": ("--fail",),
    "bad parameter": ("--ros-args", "-p", "ros.input:=h264"),
}


@pytest.fixture(scope="module")
def node_process():
    """``node_process(scenario)``: its node process. All start at once (each spends seconds importing)."""
    started = {name: NodeProcess(*options) for name, options in SCENARIOS.items()}
    yield started.__getitem__
    for item in started.values():
        if item.process.poll() is None:
            item.process.kill()
            item.process.wait()


def _assert_clean_stop(node: NodeProcess) -> None:
    status, seconds = node.interrupt()
    output = node.output
    assert status == 0, output
    assert seconds < LAUNCH_SIGTERM_TIMEOUT_S, f"took {seconds:.1f} s:\n{output}"
    assert not [marker for marker in TRACEBACK_MARKERS if marker in output], output
    assert "SIGINT: shutting down" in output


def test_ctrl_c_while_loading_ends_at_once(node_process):
    node = node_process("loading")
    node.wait_for("starting: building the pipeline")
    _assert_clean_stop(node)


def test_ctrl_c_when_idle_ends_at_once(node_process):
    node = node_process("idle")
    node.wait_for("pipeline ready")
    _assert_clean_stop(node)


def test_ctrl_c_during_inference_ends_at_once(node_process):
    node = node_process("inference")
    node.wait_for("pipeline ready")
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        camera = rclpy.create_node("camera", context=context)
        publisher = camera.create_publisher(Image, "image", 10)
        frame = rgb_message(np.zeros((48, 64, 3), np.uint8), Header(frame_id="camera_optical_frame"))
        deadline = time.monotonic() + 30
        while "inference started" not in node.output:
            assert time.monotonic() < deadline, node.output
            publisher.publish(frame)
            time.sleep(0.2)
        _assert_clean_stop(node)
    finally:
        rclpy.shutdown(context=context)


def test_a_failed_start_says_why_once_and_exits_non_zero(node_process):
    node = node_process("failed start")
    status = node.finish()
    output = node.output
    assert status == 1, output
    assert output.count(FAILURE) == 1, output
    assert "cannot start" in output
    assert not [marker for marker in TRACEBACK_MARKERS if marker in output], output


def test_a_bad_parameter_says_why_once_and_exits_non_zero(node_process):
    node = node_process("bad parameter")
    status = node.finish()
    output = node.output
    assert status == 1, output
    assert output.count("ros.input: must be one of") == 1, output
    assert not [marker for marker in TRACEBACK_MARKERS if marker in output], output
