"""perception_node's parameters: the pipeline schema plus the node-only ``ros.*`` settings.

Every leaf of both schemas is declared as a ROS parameter with its documentation, type and range taken
from the schema (fourm_ros.pipeline.config.setting), then read back and validated by the same code the CLI
uses, so a bad value stops the node at start-up with a message naming the parameter. Settings marked
``runtime`` in the schema are dynamic (``ros2 param set``; a new value is validated the same way and
refused with the reason if bad); every other one is read-only and its description says so.
"""

from __future__ import annotations

import array
from dataclasses import dataclass, field
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter import Parameter

from fourm_ros.pipeline.config import (
    NODE_SECTION,
    ConfigError,
    PipelineConfig,
    build,
    leaf_settings,
    runtime_changes,
    setting,
)
from fourm_ros.ros.qos import AUTO, DURABILITY, PRESETS, RELIABILITY, make_qos


@dataclass(frozen=True)
class QosSettings:
    """Overrides of one QoS role; empty / 0 keep the role's default (see fourm_ros/ros/qos.py)."""

    preset: str = setting(
        "", "Named QoS profile to start from; empty keeps the role's default.", choices=("", *PRESETS)
    )
    reliability: str = setting(
        "",
        "Reliability; empty keeps the profile's. auto (inputs only, and their default without a preset) "
        "follows the publishers: best effort if any publisher is best effort, else reliable.",
        choices=("", AUTO, *RELIABILITY),
    )
    depth: int = setting(0, "Keep-last depth; 0 keeps the profile's.", minimum=0, maximum=1000)
    durability: str = setting("", "Durability; empty keeps the profile's.", choices=("", *DURABILITY))

    def profile(self, role: str):
        """The role's profile; with ``auto`` reliability, its reliability is only the starting point."""
        if self.reliability == AUTO and role != "input":
            raise ValueError(f"reliability {AUTO!r} is for inputs only (it follows the publishers)")
        return make_qos(
            role,
            preset=self.preset,
            reliability="" if self.reliability == AUTO else self.reliability,
            depth=self.depth,
            durability=self.durability,
        )

    def auto_reliability(self) -> bool:
        """True when an input subscription should follow its publishers' reliability."""
        return self.reliability == AUTO or (not self.reliability and not self.preset)


@dataclass(frozen=True)
class QosConfig:
    input: QosSettings = field(default_factory=QosSettings)
    output: QosSettings = field(default_factory=QosSettings)


@dataclass(frozen=True)
class LanesConfig:
    """How the dense lane (depth, normals, segmentation) and the sequence lane (caption, human poses) share
    the machine; see "Two lanes" in README.md."""

    sequence_share: float = setting(
        0.5,
        "Most fraction of the wall time the sequence lane computes; it sleeps between generation steps for "
        "the rest, so the dense lane has the cores to itself then. 1 = no pauses.",
        minimum=0.05,
        maximum=1.0,
    )
    dense_threads: int = setting(
        0,
        "Torch intra-op threads of the dense lane's worker (torch sets them per thread); 0 = the threads "
        "setting, or the library default.",
        minimum=0,
        maximum=256,
    )
    sequence_threads: int = setting(
        1,
        "Torch intra-op threads of the sequence lane's worker; 0 = the threads setting, or the library "
        "default.",
        minimum=0,
        maximum=256,
    )
    max_batch: int = setting(
        0,
        "Most frames per pipeline call; more cameras are split into several calls. 0 = engines.max_batch "
        "on TensorRT, unlimited otherwise.",
        minimum=0,
        maximum=64,
    )
    sync_slop_s: float = setting(
        0.0,
        "Several cameras: batch only sets of one frame per camera whose stamps lie within this many seconds "
        "(approximate time); 0 = off, each camera's newest frame wins on its own.",
        minimum=0.0,
        maximum=10.0,
    )
    watchdog_factor: float = setting(
        10.0,
        "A lane whose pending frame waits longer than this many times its usual latency is an ERROR.",
        minimum=1.5,
        maximum=1000.0,
    )
    watchdog_min_s: float = setting(
        30.0, "The watchdog never fires before a frame has waited this long.", minimum=0.1, maximum=3600.0
    )


@dataclass(frozen=True)
class NodeConfig:
    """Settings only the ROS node uses (the ``ros`` section of config/perception.yaml)."""

    input: str = setting(
        "raw",
        "Subscribe to image (sensor_msgs/Image) or to image/compressed (sensor_msgs/CompressedImage).",
        choices=("raw", "compressed"),
    )
    cameras: tuple[str, ...] = setting(
        ("",),
        "Camera namespaces: each reads <ns>/image and <ns>/camera_info and publishes under <ns>/, and '' "
        "means no prefix. The frames of all cameras are batched into one forward pass.",
    )
    require_camera_info: bool = setting(
        True,
        "Skip (and count) frames without a matching CameraInfo; if false, publish them without the "
        "*/camera_info outputs.",
        runtime=True,
    )
    publish_color: bool = setting(
        True, "Also publish normals/color and segmentation/color (rgb8 pictures).", runtime=True
    )
    mono16_range: tuple[int, ...] = setting(
        (0, 65535), "The mono16 input values shown as black and white, as [low, high].", runtime=True
    )
    diagnostics_period_s: float = setting(
        1.0, "Period of the /diagnostics messages in seconds.", minimum=0.1, maximum=60.0
    )
    depth_topic: str = setting(
        "",
        "Registered depth image (16UC1 mm or 32FC1 m, e.g. aligned_depth_to_color/image_raw, with its "
        "camera_info beside it) for metric depth and points; empty means no depth sensor.",
    )
    depth_slop_s: float = setting(
        0.02,
        "Largest stamp difference in seconds between a colour frame and its depth frame.",
        minimum=0.001,
        maximum=1.0,
    )
    depth_scale: float = setting(
        0.0,
        "Without a depth sensor: metres per standard deviation of relative depth, to publish points up to "
        "scale; 0 publishes no points.",
        minimum=0.0,
    )
    depth_shift: float = setting(
        3.0,
        "Without a depth sensor: metres at the image's mean relative depth (used with depth_scale).",
        minimum=0.0,
    )
    depth_fit_min_inlier_ratio: float = setting(
        0.5, "Refuse the metric fit when fewer valid sensor pixels agree with it.", minimum=0.0, maximum=1.0
    )
    depth_fit_inlier_error: float = setting(
        0.05, "A sensor pixel agrees when |fit - sensor| <= this × sensor depth.", minimum=0.001, maximum=1.0
    )
    qos: QosConfig = field(default_factory=QosConfig)
    lanes: LanesConfig = field(default_factory=LanesConfig)

    def validate(self) -> NodeConfig:
        names = [camera.strip("/") for camera in self.cameras]
        if not names:
            raise ConfigError("ros.cameras: give at least one camera namespace ('' = none)")
        if len(set(names)) != len(names):
            raise ConfigError(f"ros.cameras: duplicate camera namespaces in {list(self.cameras)}")
        low_high = self.mono16_range
        if len(low_high) != 2 or not 0 <= low_high[0] < low_high[1] <= 65535:
            raise ConfigError(
                f"ros.mono16_range: expected [low, high] with 0 <= low < high <= 65535, got {list(low_high)}"
            )
        if not self.depth_topic and self.depth_scale > 0 and self.depth_shift <= 0:
            raise ConfigError("ros.depth_shift: must be > 0 metres when ros.depth_scale is set")
        for role in ("input", "output"):
            try:
                getattr(self.qos, role).profile(role)
            except ValueError as error:
                raise ConfigError(f"ros.qos.{role}: {error}") from error
        return self


RUNTIME_NOTE = "Can be changed while the node runs."
READ_ONLY_NOTE = "Read-only: set it at start-up (parameters file, -p or a launch argument)."


def _descriptor(info: Any) -> ParameterDescriptor:
    text = info.doc + (f" One of {list(info.choices)}." if info.choices else "")
    text += f" {RUNTIME_NOTE if info.runtime else READ_ONLY_NOTE}"
    descriptor = ParameterDescriptor(description=text, read_only=not info.runtime)
    if info.kind is float:
        # Accept integers on the command line (-p x:=2) as well as doubles; the schema converts them.
        descriptor.dynamic_typing = True
    if info.kind is int and (info.minimum is not None or info.maximum is not None):
        low = int(info.minimum if info.minimum is not None else -(2**31))
        high = int(info.maximum if info.maximum is not None else 2**31 - 1)
        descriptor.integer_range = [IntegerRange(from_value=low, to_value=high, step=0)]
    if info.kind is float and info.minimum is not None and info.maximum is not None:
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=float(info.minimum), to_value=float(info.maximum), step=0.0)
        ]
    return descriptor


def _ros_default(info: Any) -> Any:
    if info.default is None:
        return ""  # ROS parameters have no null; '' means "not set"
    return list(info.default) if isinstance(info.default, tuple) else info.default


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for path, value in flat.items():
        *parents, leaf = path.split(".")
        target = nested
        for name in parents:
            target = target.setdefault(name, {})
        target[leaf] = value
    return nested


SCHEMAS = ((PipelineConfig, ""), (NodeConfig, f"{NODE_SECTION}."))


def _plain(value: Any) -> Any:
    """rclpy hands integer and double arrays over as ``array.array`` (parameter services, files); the
    schema takes lists."""
    return list(value) if isinstance(value, array.array) else value


def _configs(flat: dict[str, Any]) -> tuple[PipelineConfig, NodeConfig]:
    values = _nest({path: _plain(value) for path, value in flat.items()})
    node_values = values.pop(NODE_SECTION)
    return PipelineConfig.from_dict(values), build(NodeConfig, node_values, NODE_SECTION).validate()


def declare_and_read(node: Node) -> tuple[PipelineConfig, NodeConfig]:
    """Declare every setting on ``node`` and return both validated configurations."""
    flat = {}
    for schema, prefix in SCHEMAS:
        for info in leaf_settings(schema, prefix):
            try:
                parameter = node.declare_parameter(info.path, _ros_default(info), _descriptor(info))
            except (InvalidParameterValueException, InvalidParameterTypeException) as error:
                raise ConfigError(f"{info.path}: {error}") from error
            flat[info.path] = parameter.value
    return _configs(flat)


def read_changed(
    node: Node, parameters: list[Parameter], current: NodeConfig
) -> tuple[PipelineConfig, NodeConfig]:
    """Both configurations as they would be with ``parameters`` set on ``node``, validated by the schema;
    a ConfigError names a bad value or a node setting that may not change while the node runs (the
    pipeline checks its own settings in Pipeline.reconfigure). Parameters outside the schemas (e.g.
    use_sim_time) are left to rclpy."""
    flat = {
        info.path: node.get_parameter(info.path).value
        for schema, prefix in SCHEMAS
        for info in leaf_settings(schema, prefix)
    }
    flat.update({parameter.name: parameter.value for parameter in parameters if parameter.name in flat})
    pipeline_config, settings = _configs(flat)
    runtime_changes(current, settings, f"{NODE_SECTION}.")
    return pipeline_config, settings
