"""What a user installs: launch and rviz files (and their topics), the ament index entry, console scripts."""

import re
import subprocess
import sys
import zipfile
from pathlib import Path
from xml.etree import ElementTree

import pytest
import yaml

from fourm_ros.ros import topics
from fourm_ros.ros.launch_support import (
    fastdds_environment,
    input_qos_overrides,
    rviz_config,
    write_rviz_config,
)

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config"


def test_every_rviz_topic_is_published_by_the_node_or_the_camera():
    rviz = yaml.safe_load((CONFIG / "perception.rviz").read_text())
    shown = {d["Topic"]["Value"] for d in rviz["Visualization Manager"]["Displays"] if "Topic" in d}
    published = {f"/fourm/{out.topic}" for out in topics.OUTPUTS + topics.RGBD_OUTPUTS}
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
        "fourm_ros/config/fastdds_large_frames.xml",
        "ament_index/resource_index/packages/fourm_ros",
    ):
        assert share + path in names, path
    assert {"fourm_ros/data/modalities.yaml", "fourm_ros/data/text_tokenizer_4m_wordpiece_30k.json"} <= set(
        names
    )
    entry_points = zipfile.ZipFile(wheel).read("fourm_ros-0.1.0.dist-info/entry_points.txt").decode()
    assert "perception_node = fourm_ros.ros.main:main" in entry_points
    assert "fourm-ros = fourm_ros.cli:main" in entry_points


def _shown(config):
    displays = config["Visualization Manager"]["Displays"]
    return {d["Topic"]["Value"]: d["Name"] for d in displays if "Topic" in d}


def test_rviz_follows_the_namespace_cameras_and_image_topic(tmp_path):
    template = yaml.safe_load((CONFIG / "perception.rviz").read_text())
    single = rviz_config(
        template, namespace="robot", image_topics={"": "/zed/left/image_rect_color"}, fixed_frame="zed_left"
    )
    shown = _shown(single)
    assert "/zed/left/image_rect_color" in shown and "/camera/image_raw" not in shown
    assert {"/robot/depth/relative", "/robot/normals/color", "/robot/caption/marker"} <= set(shown)
    assert not any(topic.startswith("/fourm") for topic in shown)
    assert single["Visualization Manager"]["Global Options"]["Fixed Frame"] == "zed_left"

    rig = rviz_config(
        template,
        namespace="/fourm",
        image_topics={"front": "/front/image_raw", "left": "/left/image_raw"},
        fixed_frame="camera_optical_frame",
    )
    shown = _shown(rig)
    published = {
        f"/fourm/{camera}/{out.topic}"
        for camera in ("front", "left")
        for out in topics.OUTPUTS + topics.RGBD_OUTPUTS
    }
    assert set(shown) - published == {"/front/image_raw", "/left/image_raw"}
    assert shown["/fourm/left/depth/relative"] == "Relative depth [left]"
    path = write_rviz_config(rig, tmp_path)
    assert yaml.safe_load(path.read_text()) == rig
    assert write_rviz_config(rig, tmp_path) == path  # same layout, same file


def test_input_qos_launch_argument():
    assert input_qos_overrides("auto") == {"ros.qos.input.reliability": "auto", "ros.qos.input.preset": ""}
    assert input_qos_overrides("reliable")["ros.qos.input.reliability"] == "reliable"
    assert input_qos_overrides("sensor_data") == {
        "ros.qos.input.preset": "SENSOR_DATA",
        "ros.qos.input.reliability": "",
    }
    with pytest.raises(ValueError, match="input_qos:=fast"):
        input_qos_overrides("fast")


def test_the_node_gets_the_large_frame_profile_unless_the_user_chose_one():
    profile = str(CONFIG / "fastdds_large_frames.xml")
    jazzy, humble = ({"ROS_DISTRO": distro} for distro in ("jazzy", "humble"))
    assert fastdds_environment("", CONFIG, jazzy) == {"FASTDDS_DEFAULT_PROFILES_FILE": profile}
    assert fastdds_environment("", CONFIG, humble) == {"FASTRTPS_DEFAULT_PROFILES_FILE": profile}
    assert fastdds_environment("", CONFIG, {"FASTDDS_DEFAULT_PROFILES_FILE": "/mine.xml"}) == {}
    assert fastdds_environment("none", CONFIG, {}) == {}
    with pytest.raises(FileNotFoundError, match="no such file"):
        fastdds_environment("/nowhere.xml", CONFIG, {})


def test_the_large_frame_profile_gives_shared_memory_room_for_full_hd_frames():
    root = ElementTree.parse(CONFIG / "fastdds_large_frames.xml").getroot()
    namespace = {"dds": root.tag.split("}")[0].strip("{")}
    descriptors = root.iterfind(".//dds:transport_descriptor", namespace)
    (shm,) = [d for d in descriptors if d.findtext("dds:type", "", namespace) == "SHM"]
    assert int(shm.findtext("dds:segment_size", "0", namespace)) >= 4 * 1920 * 1080 * 3
    participant = root.find("dds:participant", namespace)
    assert participant.get("is_default_profile") == "true"
    used = [t.text for t in participant.iterfind(".//dds:userTransports/dds:transport_id", namespace)]
    assert shm.findtext("dds:transport_id", "", namespace) in used and len(used) == 2  # SHM + UDPv4


def test_colcon_installs_the_executables_where_ros2_launch_looks():
    """ros2 launch runs <prefix>/lib/fourm_ros/perception_node: setup.cfg sends console scripts there."""
    setup_cfg = (CONFIG.parent / "setup.cfg").read_text()
    assert "[install]\ninstall_scripts=$base/lib/fourm_ros" in setup_cfg


def _bash_blocks(markdown: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", markdown, flags=re.DOTALL)


def test_colcon_instructions_call_the_commands_as_they_are_on_path():
    """colcon installs console scripts into lib/fourm_ros (setup.cfg), which is not on PATH: every README
    block that builds with colcon must run them through `ros2 run fourm_ros ...` (or launch the node)."""
    assert "install_scripts=$base/lib/fourm_ros" in (ROOT / "setup.cfg").read_text()
    colcon_blocks = [
        block
        for path in (ROOT / "README.md", ROOT / "engines" / "README.md")
        for block in _bash_blocks(path.read_text())
        if "colcon build" in block or "ros2 run" in block
    ]
    assert len(colcon_blocks) >= 3  # JetPack 6, JetPack 7, engines/README.md
    for block in colcon_blocks:
        for command in ("fourm-ros", "perception_node"):
            bare = re.findall(rf"(?<!ros2 run fourm_ros ){command}\b", block)
            assert not bare, f"{command} is not on PATH after colcon build:\n{block}"


def test_the_robot_pip_steps_keep_numpy_1_and_never_upgrade():
    """rosdep's pip keys run `pip3 install -U` (numpy 2 over the distribution's OpenCV): package.xml has
    none, and the README's pip steps go through the JetPack constraints file, which pins numpy 1.x."""
    package = (ROOT / "package.xml").read_text()
    assert not re.findall(r"<exec_depend>[^<]*-pip</exec_depend>", package)
    for key in ("python3-pil", "builtin_interfaces", "rcl_interfaces", "ament_index_python"):
        assert f"<exec_depend>{key}</exec_depend>" in package
    pins = dict(
        line.split("==")
        for line in (ROOT / "constraints" / "jetpack6.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    assert pins["numpy"].startswith("1.") and pins["pillow"] == "9.0.1"
    robot_pip = [
        line
        for block in _bash_blocks((ROOT / "README.md").read_text())
        if "colcon build" in block
        for line in block.replace("\\\n", " ").splitlines()
        if re.match(r"\s*(PIP_\w+=\S+ )?pip3? install", line)
    ]
    assert len(robot_pip) >= 3
    for line in robot_pip:
        assert "-U" not in line.split() and "--upgrade" not in line
        assert "constraints/jetpack6.txt" in line or "PyTorch wheel" in line, line


def test_every_requirement_has_a_jetpack_6_pin():
    """The JetPack lane installs the packages of requirements.txt at the versions of the constraints files;
    an unpinned one would silently test the newest release instead of what a Jetson has."""
    names = [
        re.split(r"[=<>~!]", line)[0].strip().lower()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    pinned = {
        line.split("==")[0].strip().lower()
        for path in (ROOT / "constraints").glob("jetpack6*.txt")
        for line in path.read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    assert len(names) > 20
    assert [name for name in names if name not in pinned] == []
