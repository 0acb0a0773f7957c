"""Topic names and message types of perception_node, in one place for the node, replay and the launch file.

Names are relative, so a node namespace (``fourm`` in perception.launch.py) and per-camera prefixes
apply. The CameraInfo of the 224×224 outputs is published beside each dense image topic
(``depth/camera_info``, ``normals/camera_info``, ``segmentation/camera_info``), where image_transport,
depth_image_proc and rviz2's Camera display look for it (the ``camera_info`` sibling of ``<dir>/image``),
all with the image's header. None is named plain ``camera_info``: that is the node's input, usually
remapped to the camera driver's topic.
"""

from __future__ import annotations

from dataclasses import dataclass

IMAGE = "image"
COMPRESSED_IMAGE = "image/compressed"
CAMERA_INFO = "camera_info"
PROCESSED = "processed"
"""std_msgs/Header of every frame whose outputs are all published: lets replay pace itself and tools
measure end-to-end latency."""
FRAME_OUTCOME = "frame_outcome"
"""diagnostic_msgs/DiagnosticArray, exactly one per input frame, with the frame's header and one status:
name = the camera namespace ('' = none), level OK (0) when the frame's dense outputs were published, WARN (1)
when it was skipped, dropped or failed; message = "processed" or the reason. Lock-step replay waits on it.
Published for every node whatever its tasks, so it is not one of the task ``OUTPUTS``."""
PROCESSED_OUTCOME = "processed"


@dataclass(frozen=True)
class Output:
    topic: str
    msgtype: str
    task: str | None
    """The task that produces it; None if any enabled dense task does."""


OUTPUTS: tuple[Output, ...] = (
    Output("depth/relative", "sensor_msgs/msg/Image", "depth"),
    Output("normals", "sensor_msgs/msg/Image", "normals"),
    Output("normals/color", "sensor_msgs/msg/Image", "normals"),
    Output("segmentation", "sensor_msgs/msg/Image", "segmentation"),
    Output("segmentation/color", "sensor_msgs/msg/Image", "segmentation"),
    Output("segmentation/labels", "std_msgs/msg/String", "segmentation"),
    Output("human_pose/markers", "visualization_msgs/msg/MarkerArray", "human_pose"),
    Output("human_pose/poses", "geometry_msgs/msg/PoseArray", "human_pose"),
    Output("caption", "std_msgs/msg/String", "caption"),
    Output("caption/marker", "visualization_msgs/msg/Marker", "caption"),
    Output("depth/camera_info", "sensor_msgs/msg/CameraInfo", "depth"),
    Output("normals/camera_info", "sensor_msgs/msg/CameraInfo", "normals"),
    Output("segmentation/camera_info", "sensor_msgs/msg/CameraInfo", "segmentation"),
    Output(PROCESSED, "std_msgs/msg/Header", None),
)
RGBD_OUTPUTS: tuple[Output, ...] = (
    Output("depth/metric", "sensor_msgs/msg/Image", "depth"),
    Output("points", "sensor_msgs/msg/PointCloud2", "depth"),
)
"""Metric outputs with ros.depth_topic (``depth/metric``, whose camera is ``depth/camera_info``, and
``points``) or with ros.depth_scale (``points`` only)."""
DENSE_TASKS = ("depth", "normals", "segmentation")
GRID_CAMERA_INFOS = tuple(f"{task}/camera_info" for task in DENSE_TASKS)
"""The grid's CameraInfo topics, one beside each dense task's images."""


def camera_topic(camera: str, name: str) -> str:
    """``name`` under a camera prefix ('' = no prefix)."""
    return f"{camera.strip('/')}/{name}" if camera.strip("/") else name


def outputs_for(tasks: tuple[str, ...]) -> tuple[Output, ...]:
    """The outputs published when ``tasks`` are enabled."""
    dense = any(task in DENSE_TASKS for task in tasks)
    return tuple(
        out
        for out in OUTPUTS
        if out.task in tasks or (out.task is None and (dense or out.topic == PROCESSED))
    )
