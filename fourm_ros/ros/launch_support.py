"""What perception.launch.py computes from its arguments, here so that it is tested without ROS launch.

- ``input_qos_overrides``: the input QoS parameters for the ``input_qos`` launch argument.
- ``fastdds_environment``: the Fast DDS profile variables for the node (large camera frames).
- ``rviz_config`` / ``write_rviz_config``: the rviz2 layout for the namespace, cameras and image topics.

config/perception.rviz is the rviz template: its displays are written for the launch defaults (input
``/camera/image_raw``, outputs under ``/fourm``). :func:`rviz_config` repeats them for every camera with
the topics the node really uses, and :func:`write_rviz_config` stores the result where rviz2 can read it
(perception.launch.py calls it at launch time). No rclpy here: it is plain YAML.
"""

from __future__ import annotations

import copy
import hashlib
import os
from pathlib import Path

import yaml

RELIABILITIES = ("auto", "best_effort", "reliable")
PRESETS = ("SENSOR_DATA", "DEFAULT", "SYSTEM_DEFAULT")
FASTDDS_PROFILE = "fastdds_large_frames.xml"
"""In share/fourm_ros/config: the Fast DDS transports for camera-sized frames."""
TEMPLATE_INPUT_TOPIC = "/camera/image_raw"
TEMPLATE_NAMESPACE = "/fourm"


def input_qos_overrides(text: str) -> dict[str, str]:
    """``ros.qos.input.*`` for the ``input_qos`` argument: a reliability (or auto), or a named preset."""
    reliability = text.strip().lower().replace("-", "_")
    if reliability in RELIABILITIES:
        return {"ros.qos.input.reliability": reliability, "ros.qos.input.preset": ""}
    if text.strip().upper() in PRESETS:
        return {"ros.qos.input.preset": text.strip().upper(), "ros.qos.input.reliability": ""}
    raise ValueError(f"input_qos:={text}: expected one of {[*RELIABILITIES, *PRESETS]}")


def fastdds_environment(value: str, config_dir: Path, environ: dict[str, str]) -> dict[str, str]:
    """The profile-file variable to add for the node: none if the environment names a profile already."""
    distro = environ.get("ROS_DISTRO", "")
    if (
        value.lower() == "none"
        or environ.get("FASTDDS_DEFAULT_PROFILES_FILE")
        or environ.get("FASTRTPS_DEFAULT_PROFILES_FILE")
    ):
        return {}
    profile = value or str(config_dir / FASTDDS_PROFILE)
    if not Path(profile).is_file():
        raise FileNotFoundError(f"fastdds_profile:={profile}: no such file")
    # Humble's Fast DDS 2.6 reads the FASTRTPS_ name; newer ones read FASTDDS_ and warn about the old name.
    name = "FASTRTPS_DEFAULT_PROFILES_FILE" if distro == "humble" else "FASTDDS_DEFAULT_PROFILES_FILE"
    return {name: profile}


def _join(*parts: str) -> str:
    return "/" + "/".join(part.strip("/") for part in parts if part.strip("/"))


def rviz_config(template: dict, *, namespace: str, image_topics: dict[str, str], fixed_frame: str) -> dict:
    """``template`` with its camera displays repeated per camera.

    ``image_topics``: camera prefix ('' = none) → the resolved input image topic shown as "Camera (input)".
    Output displays (topics under the template's ``/fourm``) move to ``/<namespace>/<camera>/...``.
    """
    config = copy.deepcopy(template)
    manager = config["Visualization Manager"]
    per_camera = [d for d in manager["Displays"] if "Topic" in d]
    displays = [d for d in manager["Displays"] if "Topic" not in d]
    for camera, image_topic in image_topics.items():
        for display in per_camera:
            shown = copy.deepcopy(display)
            topic = shown["Topic"]["Value"]
            if topic == TEMPLATE_INPUT_TOPIC:
                shown["Topic"]["Value"] = image_topic
            elif topic.startswith(TEMPLATE_NAMESPACE + "/"):
                shown["Topic"]["Value"] = _join(namespace, camera, topic[len(TEMPLATE_NAMESPACE) :])
            else:
                raise ValueError(f"rviz template topic {topic} is neither the input nor under /fourm")
            if len(image_topics) > 1:
                shown["Name"] = f"{shown['Name']} [{camera}]"
            displays.append(shown)
    manager["Displays"] = displays
    manager["Global Options"]["Fixed Frame"] = fixed_frame
    return config


def write_rviz_config(config: dict, directory: str | os.PathLike | None = None) -> Path:
    """Write ``config`` to a file named after its content (the cache directory by default); its path."""
    text = yaml.safe_dump(config, sort_keys=False)
    folder = Path(directory or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fourm_ros")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"perception_{hashlib.sha256(text.encode()).hexdigest()[:12]}.rviz"
    if not path.exists():
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(text)
        temporary.replace(path)
    return path
