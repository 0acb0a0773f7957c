"""Launch perception_node: one or several cameras in, 4M-21 depth, normals, segmentation, poses, captions out.

    ros2 launch fourm_ros perception.launch.py                                    # /camera/image_raw
    ros2 launch fourm_ros perception.launch.py image_topic:=/zed/left/image_rect_color \
        camera_info_topic:=/zed/left/camera_info rviz:=true
    ros2 launch fourm_ros perception.launch.py cameras:=front,left                # /front/image_raw, ...
    ros2 launch fourm_ros perception.launch.py tasks:=depth,segmentation backend:=tensorrt

Outputs go to the node's namespace (``namespace``, default ``fourm``): /fourm/depth/relative, /fourm/normals,
... or /fourm/<camera>/... with several cameras. Settings not given here come from ``params_file``.
The node loads the package's Fast DDS profile for camera-sized frames (``fastdds_profile``) unless the
environment names one already; export it for the camera driver too (README: QoS). rviz2 gets a layout
generated for these arguments (fourm_ros/ros/rviz_config.py).
"""

import os
from pathlib import Path

import yaml
from ament_index_python.packages import PackageNotFoundError, get_package_prefix, get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from fourm_ros.ros.launch_support import (
    fastdds_environment,
    input_qos_overrides,
    rviz_config,
    write_rviz_config,
)

TASKS = ("depth", "normals", "segmentation", "human_pose", "caption")
ARGUMENTS = {
    "namespace": ("fourm", "namespace of perception_node and its outputs"),
    "image_topic": ("/camera/image_raw", "camera image topic (single camera)"),
    "camera_info_topic": ("/camera/camera_info", "camera_info topic (single camera)"),
    "cameras": (
        "",
        "comma-separated camera namespaces, e.g. front,left: reads /<cam>/image_raw and /<cam>/camera_info",
    ),
    "input": (
        "raw",
        "raw (sensor_msgs/Image) or compressed (sensor_msgs/CompressedImage on <image>/compressed)",
    ),
    "input_qos": (
        "",
        "input QoS: auto (follow the camera's publishers: best effort if any is, else reliable), "
        "best_effort, reliable, or a preset (SENSOR_DATA, DEFAULT, SYSTEM_DEFAULT); default: the parameters "
        "file's (auto)",
    ),
    "fastdds_profile": (
        "",
        "Fast DDS profile file for the node (default: the package's config/fastdds_large_frames.xml, unless "
        "FASTDDS_DEFAULT_PROFILES_FILE is set); 'none' = Fast DDS defaults",
    ),
    "params_file": ("", "parameters file (default: the package's config/perception.yaml)"),
    "model": ("", "4M-21 checkpoint: hub repo id or local directory (default: the parameters file's)"),
    "backend": ("", "auto, torch, onnxruntime or tensorrt (default: the parameters file's)"),
    "tasks": ("", f"comma-separated subset of {','.join(TASKS)} (default: the parameters file's)"),
    "random_weights": ("false", "run without trained weights (meaningless outputs, for wiring tests)"),
    "use_sim_time": ("false", "use /clock, e.g. when replaying a bag with ros2 bag play --clock"),
    "rviz": ("false", "also start rviz2, with config/perception.rviz's layout for these topics"),
    "rviz_fixed_frame": ("camera_optical_frame", "rviz2's fixed frame: the camera images' frame_id"),
}


def _items(text: str) -> list[str]:
    return [item.strip().strip("/") for item in text.split(",") if item.strip().strip("/")]


def node_settings(value: dict[str, str]) -> tuple[dict[str, object], list[tuple[str, str]]]:
    """Parameter overrides and remappings of perception_node for the launch arguments ``value``."""
    overrides: dict[str, object] = {
        "use_sim_time": value["use_sim_time"].lower() == "true",
        "random_weights": value["random_weights"].lower() == "true",
        "ros.input": value["input"],
    }
    if value["model"]:
        overrides["model"] = value["model"]
    if value["backend"]:
        overrides["backend"] = value["backend"]
    if value["input_qos"]:
        overrides.update(input_qos_overrides(value["input_qos"]))
    if value["tasks"]:
        chosen = _items(value["tasks"])
        unknown = sorted(set(chosen) - set(TASKS))
        if unknown:
            raise ValueError(f"tasks:={value['tasks']}: unknown tasks {unknown}; choose from {list(TASKS)}")
        overrides.update({f"tasks.{task}.enabled": task in chosen for task in TASKS})
    compressed = "/compressed" if value["input"] == "compressed" else ""
    image = "image" + compressed
    cameras = _items(value["cameras"])
    if not cameras:
        return overrides, [
            (image, value["image_topic"] + compressed),
            ("camera_info", value["camera_info_topic"]),
        ]
    overrides["ros.cameras"] = cameras
    remappings = []
    for camera in cameras:
        remappings += [
            (f"{camera}/{image}", f"/{camera}/image_raw{compressed}"),
            (f"{camera}/camera_info", f"/{camera}/camera_info"),
        ]
    return overrides, remappings


def image_topics(value: dict[str, str]) -> dict[str, str]:
    """Camera prefix → the input image topic it reads (what rviz shows as the camera)."""
    cameras = _items(value["cameras"])
    if not cameras:
        return {"": value["image_topic"]}
    return {camera: f"/{camera}/image_raw" for camera in cameras}


def rviz_node(value: dict[str, str], share: Path) -> Node:
    """rviz2 with the layout for these arguments; a clear error if rviz2 is not installed."""
    try:
        get_package_prefix("rviz2")
    except PackageNotFoundError:
        raise RuntimeError(
            "rviz:=true but rviz2 is not installed (apt install ros-$ROS_DISTRO-rviz2); nothing was started"
        ) from None
    template = yaml.safe_load((share / "config" / "perception.rviz").read_text())
    config = rviz_config(
        template,
        namespace=value["namespace"],
        image_topics=image_topics(value),
        fixed_frame=value["rviz_fixed_frame"],
    )
    return Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", str(write_rviz_config(config))],
        parameters=[{"use_sim_time": value["use_sim_time"].lower() == "true"}],
    )


def launch_nodes(context, share: Path) -> list[Node]:
    """perception_node, and rviz2 with ``rviz:=true``; checked before anything starts."""
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    overrides, remappings = node_settings(value)
    params_file = value["params_file"] or str(share / "config" / "perception.yaml")
    nodes = [rviz_node(value, share)] if value["rviz"].lower() == "true" else []
    return [
        Node(
            package="fourm_ros",
            executable="perception_node",
            name="perception_node",
            namespace=value["namespace"],
            parameters=[params_file, overrides],
            remappings=remappings,
            additional_env=fastdds_environment(value["fastdds_profile"], share / "config", dict(os.environ)),
            output="screen",
            emulate_tty=True,
        ),
        *nodes,
    ]


def generate_launch_description() -> LaunchDescription:
    share = Path(get_package_share_directory("fourm_ros"))
    return LaunchDescription(
        [
            *(
                DeclareLaunchArgument(name, default_value=default, description=text)
                for name, (default, text) in ARGUMENTS.items()
            ),
            OpaqueFunction(function=launch_nodes, args=[share]),
        ]
    )
