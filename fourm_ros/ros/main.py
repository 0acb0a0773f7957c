"""``perception_node`` (``ros2 run fourm_ros perception_node``): spin until Ctrl-C, SIGTERM or a failed start.

Ctrl-C ends the node within a second in every state (importing, loading weights, idle, mid-inference), with
no traceback and exit status 0; a failed start logs its reason once and exits with status 1.

Once ROS is shut down and the logs are flushed, :func:`main` ends the process with ``os._exit`` rather than
returning. The pipeline may be inside a minutes-long native call (a frame's inference, an ONNX export, a
TensorRT build) that cannot be interrupted, and letting the interpreter finalise under such a thread can
abort the process (``terminate called without an active exception``: the thread is unwound through C++
frames). Even when idle, finalising torch and its friends took 4-5 s on a busy 2-core machine, nearly all
of ``ros2 launch``'s 5 s between SIGINT and SIGTERM; there is nothing left for it to do.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from fourm_ros.pipeline.config import PipelineConfig
    from fourm_ros.pipeline.pipeline import Pipeline

SPIN_POLL_S = 0.1
"""How often the spin loop returns to Python, where signal handlers run (so Ctrl-C acts within this)."""


def _leave_at_once(number: int, frame: Any) -> None:
    os._exit(0)  # nothing has started yet: there is nothing to clean up


def main(
    args: list[str] | None = None,
    pipeline_factory: Callable[[PipelineConfig], Pipeline] | None = None,
) -> NoReturn:
    """Run perception_node and end the process with its exit status; ``pipeline_factory`` replaces the
    configured pipeline (tests)."""
    # Importing torch and rclpy takes seconds; a Ctrl-C meanwhile ends the process quietly.
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, _leave_at_once)
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    from fourm_ros.errors import UserError
    from fourm_ros.ros.node import PerceptionNode
    from fourm_ros.ros.startup import StopSignals

    # rclpy's own handlers would raise KeyboardInterrupt wherever the main thread happens to be (a
    # callback, destroy_node) and shut the context down under the worker; StopSignals only asks to stop.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    log = rclpy.logging.get_logger("perception_node")
    stop = StopSignals(lambda name: log.info(f"{name}: shutting down"))
    stop.install()
    try:
        node = PerceptionNode(pipeline_factory)
    except UserError as error:  # a bad parameter; the context's shutdown destroys the half-made node
        log.error(f"cannot start: {error}")
        rclpy.try_shutdown()
        _exit(1)
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    while not stop.requested.is_set() and node.start_failure is None and rclpy.ok():
        executor.spin_once(timeout_sec=SPIN_POLL_S)
    status = 0 if node.start_failure is None else 1
    executor.shutdown()
    node.destroy_node()
    rclpy.try_shutdown()
    _exit(status)


def _exit(status: int) -> NoReturn:
    """End the process now (see the module docstring), ignoring any further signal."""
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
