"""Input subscriptions whose reliability follows the publishers, and that notice publishers never heard from.

``ros.qos.input.reliability: auto`` (the default) does what rosbag2 and ``ros2 topic echo`` do: look at the
QoS of the topic's publishers (``get_publishers_info_by_topic``) and subscribe best effort if any of them
is best effort, else reliable. A reliable reader of a reliable camera driver gets large frames repaired
by retransmission (Fast DDS sends a sample that does not fit its shared-memory segment as UDP fragments,
and a best-effort reader loses the frame with any fragment); a best-effort reader still matches every
publisher. Until a publisher appears the subscription is best effort; the choice is looked at again
whenever the set of publishers changes (perception_node looks every diagnostics period, 1 s by default),
and the subscription is re-created if it must change. The old one
stays until the new one has matched the publishers, so no frame is lost in the switch; a frame that both
deliver meanwhile is passed on once.

Frames that a transport drops are invisible to ROS (no sequence numbers), but a publisher that the
subscription matches and has not heard from once, ``silent_after_s`` after it appeared, is not: it is
counted, logged (throttled) and reported in /diagnostics with the likely cause (typically frames too large
for the transport, which then never arrive).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from diagnostic_msgs.msg import DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.subscription import Subscription

from fourm_ros.ros.qos import describe_qos, qos_with_reliability, reliability_for_publishers

SILENT_AFTER_S = 5.0
LOG_THROTTLE_S = 10.0
LARGE_FRAMES_HINT = (
    "if it is publishing, its frames are lost in transport, usually because they are larger than the "
    "transport carries (with Fast DDS load share/fourm_ros/config/fastdds_large_frames.xml in the camera "
    "driver too, see README: QoS)"
)


@dataclass
class InputReport:
    """What one input topic looks like from the node, for logs and /diagnostics."""

    topic: str
    qos: str
    publishers: int
    matched: int
    messages: int
    silent_publishers: int
    silent_periods: int


class AdaptiveSubscription:
    """One input subscription; call :meth:`refresh` periodically (the node's diagnostics timer does)."""

    def __init__(
        self,
        node: Node,
        msg_type: type,
        topic: str,
        callback: Callable[[object], None],
        qos: QoSProfile,
        *,
        auto_reliability: bool,
        silent_after_s: float = SILENT_AFTER_S,
    ) -> None:
        self._node, self._type, self._callback = node, msg_type, callback
        self._auto, self._silent_after_s = auto_reliability, silent_after_s
        self.qos = qos_with_reliability(qos, ReliabilityPolicy.BEST_EFFORT) if auto_reliability else qos
        self.topic = node.resolve_topic_name(topic)
        self.messages = 0
        self.silent_periods = 0
        self._silent_publishers = 0
        self._publisher_gids: tuple[bytes, ...] = ()
        self._quiet_since: float | None = None
        self._messages_at_match = 0
        """``messages`` when the current set of publishers appeared: none since is a silent publisher."""
        self._messages_at_refresh = 0
        """``messages`` at the end of the last refresh: a message since may be from a publisher the next
        refresh finds new (replay sends its first frame the moment it matches)."""
        self._last_stamp: tuple[int, int, str] | None = None
        self._retiring: Subscription | None = None
        self.subscription: Subscription = self._subscribe()
        self.refresh()

    def _subscribe(self) -> Subscription:
        return self._node.create_subscription(self._type, self.topic, self._on_message, self.qos)

    def _on_message(self, msg: object) -> None:
        stamp = (msg.header.stamp.sec, msg.header.stamp.nanosec, msg.header.frame_id)
        if self._retiring is not None and stamp == self._last_stamp:
            return  # the same frame through the old and the new subscription
        self._last_stamp = stamp
        self.messages += 1
        self._callback(msg)

    def refresh(self) -> None:
        """Follow the publishers' reliability (auto) and look for matched publishers that stay silent."""
        infos = self._node.get_publishers_info_by_topic(self.topic)
        gids = tuple(sorted(bytes(info.endpoint_gid) for info in infos))
        if self._retiring is not None and self.matched() >= len(infos):
            self._node.destroy_subscription(self._retiring)
            self._retiring = None
        if self._auto and gids != self._publisher_gids and infos:
            wanted = reliability_for_publishers(info.qos_profile.reliability for info in infos)
            if wanted != self.qos.reliability:
                self.qos = qos_with_reliability(self.qos, wanted)
                if self._retiring is not None:
                    self._node.destroy_subscription(self._retiring)
                self._retiring, self.subscription = self.subscription, self._subscribe()
                self._node.get_logger().info(
                    f"{self.topic}: {len(infos)} publisher(s) ({_reliabilities(infos)}); subscribed "
                    f"[{describe_qos(self.qos)}]"
                )
        if gids != self._publisher_gids:
            self._messages_at_match, self._quiet_since = self._messages_at_refresh, None
        self._publisher_gids = gids
        self._watch_silence(time.monotonic())
        self._messages_at_refresh = self.messages

    def _watch_silence(self, now: float) -> None:
        """Count and log matched publishers not heard from once since they appeared. One heard from is a
        camera that can pause (a bag that ended, a driver between streams), not a transport losing it."""
        matched = self.matched()
        if matched == 0 or self.messages != self._messages_at_match:
            self._quiet_since = None
            self._silent_publishers = 0
            return
        if self._quiet_since is None:
            self._quiet_since = now
        if now - self._quiet_since < self._silent_after_s:
            return
        if self._silent_publishers == 0:
            self.silent_periods += 1
        self._silent_publishers = matched
        self._node.get_logger().warning(
            f"{self.topic}: {matched} matched publisher(s), no message for {now - self._quiet_since:.0f} s: "
            f"{LARGE_FRAMES_HINT}",
            throttle_duration_sec=LOG_THROTTLE_S,
        )

    def matched(self) -> int:
        """Publishers the subscription is matched with (the graph's count where rclpy cannot tell)."""
        count = getattr(self.subscription, "get_publisher_count", None)
        if count is not None:
            return count()
        compatible = [
            info
            for info in self._node.get_publishers_info_by_topic(self.topic)
            if self.qos.reliability != ReliabilityPolicy.RELIABLE
            or info.qos_profile.reliability == ReliabilityPolicy.RELIABLE
        ]
        return len(compatible)

    def qos_description(self) -> str:
        """The subscription's QoS, and whether its reliability follows the publishers."""
        return describe_qos(self.qos) + (", reliability auto" if self._auto else "")

    def report(self) -> InputReport:
        return InputReport(
            topic=self.topic,
            qos=self.qos_description(),
            publishers=len(self._publisher_gids),
            matched=self.matched(),
            messages=self.messages,
            silent_publishers=self._silent_publishers,
            silent_periods=self.silent_periods,
        )


def _reliabilities(infos: list) -> str:
    names = sorted({info.qos_profile.reliability.name.lower() for info in infos})
    return ", ".join(names)


def inputs_status(node_name: str, reports: list[InputReport]) -> DiagnosticStatus:
    """``<node>: inputs``: per input topic its QoS, publishers, messages and publishers never heard from."""
    silent = [report for report in reports if report.silent_publishers]
    values = []
    for report in reports:
        values += [
            KeyValue(key=f"{report.topic} qos", value=report.qos),
            KeyValue(key=f"{report.topic} publishers", value=str(report.publishers)),
            KeyValue(key=f"{report.topic} matched", value=str(report.matched)),
            KeyValue(key=f"{report.topic} messages", value=str(report.messages)),
            KeyValue(key=f"{report.topic} silent publishers", value=str(report.silent_publishers)),
            KeyValue(key=f"{report.topic} silent periods", value=str(report.silent_periods)),
        ]
    message = (
        f"matched publishers never heard from on {', '.join(r.topic for r in silent)}: {LARGE_FRAMES_HINT}"
        if silent
        else "inputs ok"
    )
    return DiagnosticStatus(
        level=DiagnosticStatus.WARN if silent else DiagnosticStatus.OK,
        name=f"{node_name}: inputs",
        message=message,
        hardware_id="",
        values=values,
    )
