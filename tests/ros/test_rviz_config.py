"""config/perception.rviz shows the node's real output topics (under the launch file's default namespace)."""

from pathlib import Path

import yaml

from fourm_ros.ros import topics

CONFIG = Path(__file__).resolve().parents[2] / "config"


def test_every_rviz_topic_is_published_by_the_node_or_the_camera():
    rviz = yaml.safe_load((CONFIG / "perception.rviz").read_text())
    shown = {d["Topic"]["Value"] for d in rviz["Visualization Manager"]["Displays"] if "Topic" in d}
    published = {f"/fourm/{out.topic}" for out in topics.OUTPUTS}
    assert shown - published == {"/camera/image_raw"}
    assert {"/fourm/depth/relative", "/fourm/human_pose/markers", "/fourm/caption/marker"} <= shown
    assert rviz["Visualization Manager"]["Global Options"]["Fixed Frame"] == "camera_optical_frame"


def test_setup_installs_launch_and_config_files():
    setup = (CONFIG.parent / "setup.py").read_text()
    assert 'glob("launch/*.launch.py")' in setup
    assert 'glob("config/*.yaml") + glob("config/*.rviz")' in setup
