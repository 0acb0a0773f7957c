"""QoS profiles for the node's subscriptions and publishers, built from plain parameter values.

Defaults follow REP 2003 and the user reports in the peer survey:

- ``input``: best effort, keep last 1, volatile. A best-effort reader matches both reliable and
  best-effort camera drivers, and depth 1 means the newest frame wins instead of a growing backlog.
- ``output``: reliable, keep last 1, volatile, so that rviz2, image_view and ``ros2 bag record`` (reliable
  readers) connect; a slow reader gets the newest result rather than a queue of old ones.
- ``latched``: reliable, keep last 1, transient local, for data published once (the class table) that a
  late subscriber must still receive.

Any of them can start from a named preset instead, with the names Isaac ROS uses for its
``input_qos``/``output_qos`` parameters (``SENSOR_DATA``, ``DEFAULT``, ``SYSTEM_DEFAULT``, ...), and any
single policy can then be overridden. Empty strings and depth 0 mean "keep what the preset/default says".
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_parameter_events,
    qos_profile_parameters,
    qos_profile_sensor_data,
    qos_profile_services_default,
    qos_profile_system_default,
)

ROLE_DEFAULTS = {
    "input": QoSProfile(
        reliability=ReliabilityPolicy.BEST_EFFORT,
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        durability=DurabilityPolicy.VOLATILE,
    ),
    "output": QoSProfile(
        reliability=ReliabilityPolicy.RELIABLE,
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        durability=DurabilityPolicy.VOLATILE,
    ),
    "latched": QoSProfile(
        reliability=ReliabilityPolicy.RELIABLE,
        history=HistoryPolicy.KEEP_LAST,
        depth=1,
        durability=DurabilityPolicy.TRANSIENT_LOCAL,
    ),
}
PRESETS = {
    "SENSOR_DATA": qos_profile_sensor_data,
    "DEFAULT": QoSProfile(depth=10),  # rmw_qos_profile_default: reliable, keep last 10, volatile
    "SYSTEM_DEFAULT": qos_profile_system_default,
    "SERVICES_DEFAULT": qos_profile_services_default,
    "PARAMETERS": qos_profile_parameters,
    "PARAMETER_EVENTS": qos_profile_parameter_events,
}
RELIABILITY = {
    "best_effort": ReliabilityPolicy.BEST_EFFORT,
    "reliable": ReliabilityPolicy.RELIABLE,
    "system_default": ReliabilityPolicy.SYSTEM_DEFAULT,
}
DURABILITY = {
    "volatile": DurabilityPolicy.VOLATILE,
    "transient_local": DurabilityPolicy.TRANSIENT_LOCAL,
    "system_default": DurabilityPolicy.SYSTEM_DEFAULT,
}
AUTO = "auto"
"""Input reliability that follows the publishers (fourm_ros.ros.inputs), as rosbag2 does."""
MAX_DEPTH = 1000


def _choice(table: dict, value: str, what: str, normalise: Callable[[str], str]) -> object | None:
    """``table``'s entry for ``value``, or None when ``value`` is empty (keep the default)."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, one of {sorted(table)}; got {value!r}")
    if not value.strip():
        return None
    key = normalise(value.strip())
    if key not in table:
        raise ValueError(f"unknown {what} {value!r}; expected one of {sorted(table)} (or '' for the default)")
    return table[key]


def _copy(profile: QoSProfile) -> QoSProfile:
    """A new profile with every policy of ``profile`` (deepcopy cannot copy rclpy's durations)."""
    return QoSProfile(
        history=profile.history,
        depth=profile.depth,
        reliability=profile.reliability,
        durability=profile.durability,
        lifespan=profile.lifespan,
        deadline=profile.deadline,
        liveliness=profile.liveliness,
        liveliness_lease_duration=profile.liveliness_lease_duration,
        avoid_ros_namespace_conventions=profile.avoid_ros_namespace_conventions,
    )


def _policy_key(value: str) -> str:
    return value.lower().replace("-", "_")


def make_qos(
    role: str, *, preset: str = "", reliability: str = "", depth: int = 0, durability: str = ""
) -> QoSProfile:
    """The QoS profile for ``role`` ("input", "output" or "latched") with the given overrides applied.

    ``preset`` replaces the role's default wholesale; ``reliability`` (best_effort | reliable |
    system_default), ``depth`` (keep-last history depth, 1..1000) and ``durability`` (volatile |
    transient_local | system_default) then override single policies.
    """
    if role not in ROLE_DEFAULTS:
        raise ValueError(f"unknown QoS role {role!r}; expected one of {sorted(ROLE_DEFAULTS)}")
    if isinstance(depth, bool) or not isinstance(depth, int) or not 0 <= depth <= MAX_DEPTH:
        raise ValueError(f"QoS depth must be an integer in 1..{MAX_DEPTH} (0 = the default); got {depth!r}")
    base = _choice(PRESETS, preset, "QoS preset", str.upper)
    profile = _copy(base or ROLE_DEFAULTS[role])
    chosen_reliability = _choice(RELIABILITY, reliability, "QoS reliability", _policy_key)
    chosen_durability = _choice(DURABILITY, durability, "QoS durability", _policy_key)
    if chosen_reliability is not None:
        profile.reliability = chosen_reliability
    if chosen_durability is not None:
        profile.durability = chosen_durability
    if depth:
        profile.history = HistoryPolicy.KEEP_LAST
        profile.depth = depth
    return profile


def reliability_for_publishers(reliabilities: Iterable[ReliabilityPolicy]) -> ReliabilityPolicy:
    """The reader reliability rosbag2 and ``ros2 topic echo`` choose: best effort if any publisher is best
    effort (a reliable reader would not match it), else reliable (lost fragments of large frames are
    retransmitted instead of losing the frame). No publishers: best effort, which matches any."""
    chosen = list(reliabilities)
    if not chosen or any(policy != ReliabilityPolicy.RELIABLE for policy in chosen):
        return ReliabilityPolicy.BEST_EFFORT
    return ReliabilityPolicy.RELIABLE


def qos_with_reliability(profile: QoSProfile, reliability: ReliabilityPolicy) -> QoSProfile:
    """A copy of ``profile`` with another reliability."""
    copy = _copy(profile)
    copy.reliability = reliability
    return copy


def describe_qos(profile: QoSProfile) -> str:
    """A one-line summary for logs and diagnostics, e.g. ``best_effort, keep_last(1), volatile``."""
    history = profile.history.name.lower()
    if profile.history == HistoryPolicy.KEEP_LAST:
        history = f"keep_last({profile.depth})"
    return f"{profile.reliability.name.lower()}, {history}, {profile.durability.name.lower()}"
