"""Launch perception_node: one or several cameras in, 4M-21 depth, normals, segmentation, poses, captions out.

    ros2 launch fourm_ros perception.launch.py                                    # /camera/image_raw
    ros2 launch fourm_ros perception.launch.py image_topic:=/zed/left/image_rect_color \
        camera_info_topic:=/zed/left/camera_info rviz:=true
    ros2 launch fourm_ros perception.launch.py cameras:=front,left                # /front/image_raw, ...
    ros2 launch fourm_ros perception.launch.py tasks:=depth,segmentation backend:=tensorrt

Outputs go to the node's namespace (``namespace``, default ``fourm``): /fourm/depth/relative, /fourm/normals,
... or /fourm/<camera>/... with several cameras. Settings not given here come from ``params_file``.
"""

from pathlib import Path

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

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
    "params_file": ("", "parameters file (default: the package's config/perception.yaml)"),
    "model": ("", "4M-21 checkpoint: hub repo id or local directory (default: the parameters file's)"),
    "backend": ("", "auto, torch, onnxruntime or tensorrt (default: the parameters file's)"),
    "tasks": ("", f"comma-separated subset of {','.join(TASKS)} (default: the parameters file's)"),
    "random_weights": ("false", "run without trained weights (meaningless outputs, for wiring tests)"),
    "use_sim_time": ("false", "use /clock, e.g. when replaying a bag with ros2 bag play --clock"),
    "rviz": ("false", "also start rviz2 with config/perception.rviz"),
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


def _node(context, share: Path) -> list[Node]:
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    overrides, remappings = node_settings(value)
    params_file = value["params_file"] or str(share / "config" / "perception.yaml")
    return [
        Node(
            package="fourm_ros",
            executable="perception_node",
            name="perception_node",
            namespace=value["namespace"],
            parameters=[params_file, overrides],
            remappings=remappings,
            output="screen",
            emulate_tty=True,
        )
    ]


def generate_launch_description() -> LaunchDescription:
    share = Path(get_package_share_directory("fourm_ros"))
    return LaunchDescription(
        [
            *(
                DeclareLaunchArgument(name, default_value=default, description=text)
                for name, (default, text) in ARGUMENTS.items()
            ),
            OpaqueFunction(function=_node, args=[share]),
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz2",
                arguments=[
                    "-d",
                    str(share / "config" / "perception.rviz"),
                    "-f",
                    LaunchConfiguration("rviz_fixed_frame"),
                ],
                parameters=[
                    {"use_sim_time": ParameterValue(LaunchConfiguration("use_sim_time"), value_type=bool)}
                ],
                condition=IfCondition(LaunchConfiguration("rviz")),
            ),
        ]
    )
