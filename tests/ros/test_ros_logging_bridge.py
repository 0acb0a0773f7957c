"""The bridge from the pipeline's Python logging to the node's rclpy logger."""

import logging

import pytest
from rclpy.logging import get_logger

from fourm_ros.ros.startup import LogBridge


@pytest.mark.ros
def test_records_of_every_severity_reach_the_rclpy_logger(monkeypatch):
    bridge = LogBridge(get_logger("fourm_ros_bridge_test"))
    errors = []
    monkeypatch.setattr(bridge, "handleError", lambda record: errors.append(record))
    try:
        log = logging.getLogger("fourm_ros.pipeline")
        # rclpy refuses a second severity from the same calling line; the bridge must never hit that.
        for _ in range(2):
            log.info("ready")
            log.warning("random weights")
            log.error("failed")
    finally:
        bridge.remove()
    assert errors == []
