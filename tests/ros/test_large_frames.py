"""Camera-sized frames reach the node's input with the shipped Fast DDS profile, from reliable and
best-effort publishers; a publisher whose frames never arrive is reported. Real DDS between processes."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros
PEER = Path(__file__).with_name("large_frames_peer.py")
PROFILE = Path(__file__).resolve().parents[2] / "config" / "fastdds_large_frames.xml"
SECONDS = 1.2


def _environment(profile: bool) -> dict[str, str]:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")
    }
    if profile:
        environment["FASTDDS_DEFAULT_PROFILES_FILE"] = str(PROFILE)
    return environment


def _run(publisher: list[str], publisher_profile: bool, silent_after_s: float = 5.0) -> tuple[dict, dict]:
    """Start the reader, then the camera; both JSON reports."""
    if os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp") != "rmw_fastrtps_cpp":
        pytest.skip("the profile is for Fast DDS")
    reader = subprocess.Popen(
        [sys.executable, str(PEER), "count", str(silent_after_s)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=_environment(profile=True),
        text=True,
    )
    camera = subprocess.run(
        [sys.executable, str(PEER), "publish", *publisher, str(SECONDS)],
        capture_output=True,
        env=_environment(profile=publisher_profile),
        text=True,
        timeout=60,
    )
    time.sleep(silent_after_s + 0.5)  # the reader's last look at the publisher
    out, _ = reader.communicate(timeout=60)
    assert camera.returncode == 0 and reader.returncode == 0, camera.stderr
    return json.loads(camera.stdout.strip().splitlines()[-1]), json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("reliability", "encoding", "expected_qos"),
    [("best_effort", "rgb8", "best_effort"), ("reliable", "bgr8", "reliable")],
)
def test_full_hd_frames_arrive_with_the_shipped_profile(reliability, encoding, expected_qos):
    sent, got = _run([reliability, "1920", "1080", encoding], publisher_profile=True)
    assert sent["sent"] >= 3
    assert got["received"] == sent["sent"], got
    assert got["sizes"] == [[1920, 1080, encoding, 1920 * 1080 * 3]]
    assert got["qos"].startswith(expected_qos)  # auto followed the publisher
    assert got["silent_periods"] == 0


def test_a_matched_publisher_whose_frames_never_arrive_is_reported():
    """A best-effort full-HD camera without the profile: Fast DDS drops the frames, the input says so."""
    sent, got = _run(["best_effort", "1920", "1080", "rgb8"], publisher_profile=False, silent_after_s=1.0)
    assert got["received"] < sent["sent"]
    assert got["silent_periods"] >= 1
