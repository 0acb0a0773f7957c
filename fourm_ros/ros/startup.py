"""How perception_node starts and stops: a background start, Python logs on the node's logger, quiet signals.

Loading the weights, exporting the ONNX graphs and building TensorRT engines takes seconds to many
minutes. :class:`BackgroundStart` does it on a thread of its own, so the executor serves /diagnostics
(``starting: <stage>``), parameters and the input callbacks from the first second; frames that arrive
meanwhile are counted as dropped. A failed start is reported once, with its reason, and the process exits
non-zero (:mod:`fourm_ros.ros.main`).

Why a plain node with a loader thread and not a managed (lifecycle) node: rclpy's lifecycle support works
here (ros-rclpy 9.1.2 pulls in the lifecycle_msgs and rcl_lifecycle wheels; Humble's rclpy has the same
``rclpy.lifecycle`` API), but a transition callback runs on the executor and must return its result, so a
minutes-long ``on_configure`` would block /diagnostics just the same and still need a thread of its own.
A lifecycle node also stays unconfigured until something drives it: ``ros2 run``, the in-process replay
and the tests would each need a manager, and launch_ros' lifecycle events are not in the PyPI wheels. The
plain node behaves the same under every way of running it; what lifecycle would add (an external manager
deciding when to start, deactivating to free the GPU) is not needed by anything yet.

:class:`LogBridge` routes the ``fourm_ros`` Python loggers (backend choice and why, export and engine-build
progress, the random-weights banner) to the node's logger: the console and /rosout.
:class:`StopSignals` turns SIGINT and SIGTERM into a request the spin loop checks, so no
``KeyboardInterrupt`` cuts a callback or the shutdown in half; later signals (``ros2 launch`` sends
SIGINT to the process group and then to the node) are ignored.
"""

from __future__ import annotations

import logging
import signal
import threading
import traceback
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from fourm_ros.errors import UserError

T = TypeVar("T")
PYTHON_LOGGER = "fourm_ros"


class StartupError(UserError, RuntimeError):
    """The node could not start; the message says why."""


def failure_reason(error: BaseException) -> str:
    """One message for a failed start: the explanation of an error a user can act on, or the type, message
    and traceback of anything else (a bug, to be reported with its traceback)."""
    if isinstance(error, (UserError, OSError, ValueError)):
        return str(error)
    trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return f"unexpected {type(error).__name__}: {error}\n{trace}"


class BackgroundStart(Generic[T]):
    """Runs ``load(on_stage)`` on a daemon thread, then ``on_ready(result)`` or ``on_failure(reason)``.

    Daemon, because a load can sit for minutes inside native code (torch, ONNX export, TensorRT) that
    cannot be interrupted: a shutdown does not wait for it (see fourm_ros.ros.main)."""

    def __init__(
        self,
        load: Callable[[Callable[[str], None]], T],
        *,
        on_stage: Callable[[str], None],
        on_ready: Callable[[T], None],
        on_failure: Callable[[str], None],
    ) -> None:
        self._load, self._on_stage = load, on_stage
        self._on_ready, self._on_failure = on_ready, on_failure
        self.finished = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fourm_ros_startup", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            result = self._load(self._on_stage)
        except Exception as error:
            self._on_failure(failure_reason(error))
        else:
            self._on_ready(result)
        finally:
            self.finished.set()


class LogBridge(logging.Handler):
    """Forwards the records of the ``fourm_ros`` Python loggers to an rclpy logger (console and /rosout).

    While installed, those loggers do not propagate to the root logger (a program that configured
    logging, like ``fourm-ros replay --run-node``, would print each line twice) and their level follows
    the rclpy logger's. :meth:`remove` restores both."""

    def __init__(self, ros_logger: Any, name: str = PYTHON_LOGGER) -> None:
        super().__init__()
        self._ros_logger = ros_logger
        self._logger = logging.getLogger(name)
        self._saved = (self._logger.level, self._logger.propagate)
        # rcutils and Python logging share their numeric levels (DEBUG 10 ... FATAL/CRITICAL 50).
        self._logger.setLevel(int(ros_logger.get_effective_level()) or logging.INFO)
        self._logger.propagate = False
        self._logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            source = record.name.removeprefix(f"{PYTHON_LOGGER}.")
            message = f"[{source}] {record.getMessage()}"
            # rclpy ties a severity to each calling line ("Logger severity cannot be changed between
            # calls"), so every severity has a line of its own.
            if record.levelno >= logging.CRITICAL:
                self._ros_logger.fatal(message)
            elif record.levelno >= logging.ERROR:
                self._ros_logger.error(message)
            elif record.levelno >= logging.WARNING:
                self._ros_logger.warning(message)
            elif record.levelno >= logging.INFO:
                self._ros_logger.info(message)
            else:
                self._ros_logger.debug(message)
        except Exception:
            self.handleError(record)

    def remove(self) -> None:
        self._logger.removeHandler(self)
        self._logger.setLevel(self._saved[0])
        self._logger.propagate = self._saved[1]


class StopSignals:
    """SIGINT and SIGTERM set :attr:`requested` instead of raising; the spin loop polls it.

    Python runs signal handlers on the main thread between bytecodes, so the loop must return to Python
    regularly (``spin_once`` with a short timeout). ``on_first`` hears the signal that asked to stop."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, on_first: Callable[[str], None] = lambda name: None) -> None:
        self.requested = threading.Event()
        self._on_first = on_first

    def install(self) -> None:
        for number in self.SIGNALS:
            signal.signal(number, self._handle)

    def _handle(self, number: int, frame: Any) -> None:
        if not self.requested.is_set():
            self.requested.set()
            self._on_first(signal.Signals(number).name)
