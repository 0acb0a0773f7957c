"""QoS profiles from parameters: REP 2003 defaults, Isaac-style presets, overrides and clear errors."""

import pytest
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
    qos_profile_system_default,
)

from fourm_ros.ros.params import QosSettings
from fourm_ros.ros.qos import ROLE_DEFAULTS, describe_qos, make_qos, reliability_for_publishers


def _policies(profile: QoSProfile):
    return profile.reliability, profile.history, profile.depth, profile.durability


def test_role_defaults():
    assert _policies(make_qos("input")) == (
        ReliabilityPolicy.BEST_EFFORT,
        HistoryPolicy.KEEP_LAST,
        1,
        DurabilityPolicy.VOLATILE,
    )
    assert _policies(make_qos("output")) == (
        ReliabilityPolicy.RELIABLE,
        HistoryPolicy.KEEP_LAST,
        1,
        DurabilityPolicy.VOLATILE,
    )
    assert _policies(make_qos("latched")) == (
        ReliabilityPolicy.RELIABLE,
        HistoryPolicy.KEEP_LAST,
        1,
        DurabilityPolicy.TRANSIENT_LOCAL,
    )


@pytest.mark.parametrize("name", ["SENSOR_DATA", "sensor_data", " Sensor_Data "])
def test_presets_are_the_rclpy_profiles(name):
    assert make_qos("output", preset=name) == qos_profile_sensor_data


def test_default_and_system_default_presets():
    assert _policies(make_qos("input", preset="DEFAULT")) == (
        ReliabilityPolicy.RELIABLE,
        HistoryPolicy.KEEP_LAST,
        10,
        DurabilityPolicy.VOLATILE,
    )
    assert make_qos("input", preset="SYSTEM_DEFAULT") == qos_profile_system_default


def test_overrides_apply_on_top_of_a_preset_without_changing_it():
    profile = make_qos(
        "input", preset="SYSTEM_DEFAULT", reliability="Reliable", depth=3, durability="transient-local"
    )
    assert _policies(profile) == (
        ReliabilityPolicy.RELIABLE,
        HistoryPolicy.KEEP_LAST,
        3,
        DurabilityPolicy.TRANSIENT_LOCAL,
    )
    assert qos_profile_system_default.history == HistoryPolicy.SYSTEM_DEFAULT
    assert ROLE_DEFAULTS["input"].depth == 1
    assert make_qos("output", depth=5).depth == 5
    assert make_qos("input", reliability="reliable").reliability == ReliabilityPolicy.RELIABLE


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"preset": "SENSORDATA"}, r"unknown QoS preset 'SENSORDATA'; expected one of \['DEFAULT'"),
        ({"reliability": "best effort?"}, r"unknown QoS reliability .*'best_effort', 'reliable'"),
        ({"durability": "latched"}, r"unknown QoS durability 'latched'; expected one of"),
        ({"depth": -1}, r"depth must be an integer in 1..1000 \(0 = the default\); got -1"),
        ({"depth": 1001}, r"got 1001"),
        ({"depth": True}, r"got True"),
        ({"depth": 2.0}, r"got 2.0"),
        ({"reliability": 1}, r"QoS reliability must be a string"),
    ],
)
def test_invalid_values_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_qos("input", **kwargs)


def test_unknown_role():
    with pytest.raises(ValueError, match=r"unknown QoS role 'camera'; expected one of \['input', 'latched'"):
        make_qos("camera")


def test_describe_for_logs():
    assert describe_qos(make_qos("input")) == "best_effort, keep_last(1), volatile"
    assert describe_qos(make_qos("latched")) == "reliable, keep_last(1), transient_local"
    assert describe_qos(qos_profile_system_default) == "system_default, system_default, system_default"


@pytest.mark.parametrize(
    ("publishers", "chosen"),
    [
        ([], ReliabilityPolicy.BEST_EFFORT),
        ([ReliabilityPolicy.RELIABLE], ReliabilityPolicy.RELIABLE),
        ([ReliabilityPolicy.RELIABLE, ReliabilityPolicy.RELIABLE], ReliabilityPolicy.RELIABLE),
        ([ReliabilityPolicy.RELIABLE, ReliabilityPolicy.BEST_EFFORT], ReliabilityPolicy.BEST_EFFORT),
        ([ReliabilityPolicy.BEST_EFFORT], ReliabilityPolicy.BEST_EFFORT),
    ],
)
def test_auto_reliability_follows_the_publishers_as_rosbag2_does(publishers, chosen):
    """Reliable only when every publisher is (repairs lost fragments); best effort matches everyone."""
    assert reliability_for_publishers(publishers) == chosen


def test_auto_is_the_input_default_and_for_inputs_only():
    assert QosSettings().auto_reliability()
    assert QosSettings(reliability="auto", preset="SENSOR_DATA").auto_reliability()
    assert not QosSettings(preset="SENSOR_DATA").auto_reliability()
    assert not QosSettings(reliability="best_effort").auto_reliability()
    assert QosSettings(reliability="auto").profile("input").reliability == ReliabilityPolicy.BEST_EFFORT
    with pytest.raises(ValueError, match="inputs only"):
        QosSettings(reliability="auto").profile("output")
