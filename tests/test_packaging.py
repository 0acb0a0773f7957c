"""What a user installs: launch and rviz files (and their topics), the ament index entry, console scripts."""

import subprocess
import sys
import zipfile
from pathlib import Path

import yaml

from fourm_ros.ros import topics

CONFIG = Path(__file__).resolve().parents[1] / "config"


def test_every_rviz_topic_is_published_by_the_node_or_the_camera():
    rviz = yaml.safe_load((CONFIG / "perception.rviz").read_text())
    shown = {d["Topic"]["Value"] for d in rviz["Visualization Manager"]["Displays"] if "Topic" in d}
    published = {f"/fourm/{out.topic}" for out in topics.OUTPUTS}
    assert shown - published == {"/camera/image_raw"}
    assert {"/fourm/depth/relative", "/fourm/human_pose/markers", "/fourm/caption/marker"} <= shown
    assert rviz["Visualization Manager"]["Global Options"]["Fixed Frame"] == "camera_optical_frame"


def test_the_package_installs_launch_config_and_entry_points(tmp_path):
    """What colcon / pip install: share/fourm_ros/{package.xml,launch,config}, the ament index marker, and the
    perception_node and fourm-ros console scripts."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(CONFIG.parent),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("fourm_ros-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    share = "fourm_ros-0.1.0.data/data/share/"
    for path in (
        "fourm_ros/package.xml",
        "fourm_ros/launch/perception.launch.py",
        "fourm_ros/config/perception.yaml",
        "fourm_ros/config/perception.rviz",
        "ament_index/resource_index/packages/fourm_ros",
    ):
        assert share + path in names, path
    assert {"fourm_ros/data/modalities.yaml", "fourm_ros/data/text_tokenizer_4m_wordpiece_30k.json"} <= set(
        names
    )
    entry_points = zipfile.ZipFile(wheel).read("fourm_ros-0.1.0.dist-info/entry_points.txt").decode()
    assert "perception_node = fourm_ros.ros.node:main" in entry_points
    assert "fourm-ros = fourm_ros.cli:main" in entry_points
