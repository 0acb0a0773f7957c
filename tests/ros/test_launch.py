"""perception.launch.py starts perception_node with the launch arguments' parameters and remaps.

Runs where launch_ros is importable (a ROS 2 installation); the PyPI ROS wheels do not ship it.
"""

import importlib.util
from pathlib import Path

import pytest

launch = pytest.importorskip(
    "launch", reason="launch / launch_ros come with a ROS 2 installation, not the PyPI wheels"
)
pytest.importorskip("launch_ros", reason="launch_ros comes with a ROS 2 installation, not the PyPI wheels")

from launch import LaunchContext  # noqa: E402
from launch.actions import DeclareLaunchArgument, OpaqueFunction  # noqa: E402
from launch_ros.actions import Node  # noqa: E402

LAUNCH_FILE = Path(__file__).resolve().parents[2] / "launch" / "perception.launch.py"


@pytest.fixture
def launch_module(monkeypatch, tmp_path):
    import ament_index_python.packages

    monkeypatch.setattr(
        ament_index_python.packages, "get_package_share_directory", lambda name: str(tmp_path)
    )
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "fastdds_large_frames.xml").write_text("<profiles/>")
    spec = importlib.util.spec_from_file_location("perception_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _node(module, **arguments):
    description = module.generate_launch_description()
    context = LaunchContext()
    for action in description.entities:
        if isinstance(action, DeclareLaunchArgument):
            context.launch_configurations[action.name] = arguments.get(
                action.name, action.default_value[0].text
            )
    (opaque,) = [action for action in description.entities if isinstance(action, OpaqueFunction)]
    (node,) = opaque.execute(context)
    assert isinstance(node, Node)
    node._perform_substitutions(context)
    return node


def test_default_launch_reads_the_camera_topics(launch_module):
    node = _node(launch_module)
    assert node.node_executable == "perception_node" and node.node_package == "fourm_ros"
    assert node.expanded_node_namespace == "/fourm"
    assert dict(node.expanded_remapping_rules) == {
        "image": "/camera/image_raw",
        "camera_info": "/camera/camera_info",
    }


def test_arguments_become_parameters_and_remaps(launch_module):
    node = _node(
        launch_module, cameras="front,left", input="compressed", tasks="depth,caption", backend="onnxruntime"
    )
    assert dict(node.expanded_remapping_rules) == {
        "front/image/compressed": "/front/image_raw/compressed",
        "front/camera_info": "/front/camera_info",
        "left/image/compressed": "/left/image_raw/compressed",
        "left/camera_info": "/left/camera_info",
    }
    overrides, _ = launch_module.node_settings(
        {
            **{name: default for name, (default, _) in launch_module.ARGUMENTS.items()},
            "tasks": "depth,caption",
        }
    )
    assert overrides["tasks.depth.enabled"] and overrides["tasks.caption.enabled"]
    assert not overrides["tasks.normals.enabled"]


def test_unknown_task_is_refused(launch_module):
    arguments = {name: default for name, (default, _) in launch_module.ARGUMENTS.items()}
    with pytest.raises(ValueError, match="unknown tasks"):
        launch_module.node_settings({**arguments, "tasks": "depth,teleport"})


def test_input_qos_argument_becomes_input_qos_parameters(launch_module):
    arguments = {name: default for name, (default, _) in launch_module.ARGUMENTS.items()}
    overrides, _ = launch_module.node_settings({**arguments, "input_qos": "reliable"})
    assert overrides["ros.qos.input.reliability"] == "reliable" and overrides["ros.qos.input.preset"] == ""
    overrides, _ = launch_module.node_settings(arguments)
    assert "ros.qos.input.reliability" not in overrides  # the parameters file's (auto)


def test_rviz_without_rviz2_stops_before_starting_the_node(launch_module, monkeypatch):
    import ament_index_python.packages

    def missing(name):
        raise ament_index_python.packages.PackageNotFoundError(name)

    monkeypatch.setattr(launch_module, "get_package_prefix", missing)
    with pytest.raises(RuntimeError, match="rviz2 is not installed"):
        _node(launch_module, rviz="true")
