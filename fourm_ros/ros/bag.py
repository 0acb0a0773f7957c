"""rosbag2 files without a ROS installation: the sample camera bag and the raw-message writer replay uses.

Messages are built and (de)serialised by rclpy itself, so the bytes in a bag are exactly what travels on
the wire; the ``rosbags`` library only handles the container (sqlite3 or mcap) and message definitions.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from rclpy.serialization import serialize_message
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

STORAGE = {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}
CAMERA_FRAME = "camera_optical_frame"
_TYPESTORE = get_typestore(Stores.ROS2_HUMBLE)


class BagWriter:
    """A rosbag2 being written: topics are registered on first use, data are serialised CDR bytes.

    ``write`` may be called from any thread (e.g. subscription callbacks): one writer thread owns the
    storage, as sqlite3 requires, and ``close`` waits until everything is on disk.
    """

    def __init__(self, path: str | os.PathLike, storage: str = "mcap") -> None:
        if storage not in STORAGE:
            raise ValueError(f"storage must be one of {sorted(STORAGE)}, got {storage!r}")
        self.path = Path(path)
        if self.path.exists():
            raise FileExistsError(f"{self.path} exists already; choose a new output bag path")
        self.count = 0
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        opened = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(storage, opened), name="bag_writer", daemon=True
        )
        self._thread.start()
        opened.wait()
        if self._error is not None:
            raise self._error

    def _run(self, storage: str, opened: threading.Event) -> None:
        try:
            writer = Writer(self.path, version=8, storage_plugin=STORAGE[storage])
            writer.open()
        except BaseException as error:  # reported to the constructor's caller
            self._error = error
            opened.set()
            return
        opened.set()
        connections: dict[str, object] = {}
        try:
            while (item := self._queue.get()) is not None:
                topic, msgtype, data, timestamp_ns = item
                if topic not in connections:
                    connections[topic] = writer.add_connection(topic, msgtype, typestore=_TYPESTORE)
                writer.write(connections[topic], timestamp_ns, data)
                self.count += 1
        except BaseException as error:  # reported by close()
            self._error = error
        finally:
            writer.close()
            _set_ros_distro(self.path / "metadata.yaml", ros_distro())

    def write(self, topic: str, msgtype: str, data: bytes, timestamp_ns: int) -> None:
        self._queue.put((topic, msgtype, bytes(data), timestamp_ns))

    def write_message(self, topic: str, message: object, timestamp_ns: int) -> None:
        self.write(topic, message_type_name(message), serialize_message(message), timestamp_ns)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            raise OSError(f"writing {self.path} failed: {self._error}") from self._error

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


RCLPY_MAJOR_TO_DISTRO = {3: "humble", 4: "iron", 7: "jazzy", 9: "kilted"}
"""rclpy's major version per ROS 2 distribution, for the PyPI wheels (they set no ROS_DISTRO)."""


def ros_distro() -> str:
    """The ROS 2 distribution in use: ROS_DISTRO (set by every setup.bash), else rclpy's version's."""
    if os.environ.get("ROS_DISTRO"):
        return os.environ["ROS_DISTRO"]
    from importlib.metadata import PackageNotFoundError, version

    for distribution in ("rclpy", "ros-rclpy"):
        try:
            major = int(version(distribution).split(".")[0])
        except (PackageNotFoundError, ValueError):
            continue
        return RCLPY_MAJOR_TO_DISTRO.get(major, "unknown")
    return "unknown"


def _set_ros_distro(metadata: Path, distro: str) -> None:
    """rosbags writes ``ros_distro: rosbags``; rosbag2 writes the distribution that recorded the bag."""
    if metadata.exists():
        text = metadata.read_text()
        metadata.write_text(text.replace("ros_distro: rosbags", f"ros_distro: {distro}", 1))


def message_type_name(message: object) -> str:
    """'sensor_msgs/msg/Image' for an rclpy message instance or class."""
    cls = message if isinstance(message, type) else type(message)
    return f"{cls.__module__.split('.')[0]}/msg/{cls.__name__}"


def pinhole_camera_info(width: int, height: int, header: Header, hfov_deg: float = 60.0) -> CameraInfo:
    """A plausible distortion-free camera for photographs that come without calibration."""
    focal = (width / 2) / np.tan(np.radians(hfov_deg) / 2)
    cx, cy = (width - 1) / 2, (height - 1) / 2
    info = CameraInfo(header=header, width=width, height=height, distortion_model="plumb_bob")
    info.d = [0.0] * 5
    info.k = [focal, 0.0, cx, 0.0, focal, cy, 0.0, 0.0, 1.0]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [focal, 0.0, cx, 0.0, 0.0, focal, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return info


def rgb_message(rgb: np.ndarray, header: Header) -> Image:
    height, width = rgb.shape[:2]
    return Image(
        header=header,
        height=height,
        width=width,
        encoding="rgb8",
        is_bigendian=0,
        step=width * 3,
        data=np.ascontiguousarray(rgb).tobytes(),
    )


def depth_message(depth_mm: np.ndarray, header: Header) -> Image:
    """A 16UC1 depth image in millimetres (0 = no return), as RGB-D drivers publish it (REP 118)."""
    if depth_mm.dtype != np.uint16 or depth_mm.ndim != 2:
        raise ValueError(f"depth must be H×W uint16 millimetres, got {depth_mm.dtype} {depth_mm.shape}")
    height, width = depth_mm.shape
    return Image(
        header=header,
        height=height,
        width=width,
        encoding="16UC1",
        is_bigendian=0,
        step=width * 2,
        data=np.ascontiguousarray(depth_mm, dtype="<u2").tobytes(),
    )


def matrix_camera_info(k: np.ndarray, width: int, height: int, header: Header) -> CameraInfo:
    """A distortion-free CameraInfo of the 3×3 camera matrix ``k``."""
    info = CameraInfo(header=header, width=width, height=height, distortion_model="plumb_bob")
    info.d = [0.0] * 5
    info.k = [float(value) for value in np.asarray(k, dtype=np.float64).ravel()]
    info.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    info.p = [float(value) for value in np.hstack([k, np.zeros((3, 1))]).ravel()]
    return info


def jpeg_message(rgb: np.ndarray, header: Header, quality: int = 90) -> CompressedImage:
    import cv2

    ok, encoded = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return CompressedImage(header=header, format="jpeg", data=encoded.tobytes())


def write_camera_bag(
    path: str | os.PathLike,
    frames: Sequence[np.ndarray],
    *,
    rate_hz: float = 2.0,
    camera: str = "/camera",
    frame_id: str = CAMERA_FRAME,
    compressed: bool = False,
    storage: str = "mcap",
    start_ns: int = 1_700_000_000_000_000_000,
) -> Path:
    """Write RGB frames as a camera stream: ``<camera>/image_raw`` (or ``/image_raw/compressed``, JPEG)
    plus ``<camera>/camera_info``, one frame every 1/``rate_hz`` seconds, stamps starting at ``start_ns``."""
    if rate_hz <= 0:
        raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
    image_topic = f"{camera}/image_raw" + ("/compressed" if compressed else "")
    with BagWriter(path, storage) as bag:
        for index, rgb in enumerate(frames):
            stamp_ns = start_ns + round(index * 1e9 / rate_hz)
            header = Header(frame_id=frame_id)
            header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
            image = jpeg_message(rgb, header) if compressed else rgb_message(rgb, header)
            bag.write_message(image_topic, image, stamp_ns)
            bag.write_message(
                f"{camera}/camera_info", pinhole_camera_info(rgb.shape[1], rgb.shape[0], header), stamp_ns
            )
    return Path(path)


def write_rgbd_bag(
    path: str | os.PathLike,
    frames: Sequence[tuple[np.ndarray, np.ndarray]],
    k: np.ndarray,
    *,
    rate_hz: float = 5.0,
    camera: str = "/camera",
    frame_id: str = CAMERA_FRAME,
    storage: str = "mcap",
    start_ns: int = 1_700_000_000_000_000_000,
) -> Path:
    """Write (rgb, depth in mm) pairs as an RGB-D camera whose depth is registered to the colour camera:
    ``<camera>/image_raw`` + ``<camera>/camera_info`` (as in :func:`write_camera_bag`, so every colour-only
    reader works unchanged) and ``<camera>/depth/image_raw`` (16UC1) + ``<camera>/depth/camera_info``, the
    depth with the colour frame's header and camera matrix ``k``."""
    if rate_hz <= 0:
        raise ValueError(f"rate_hz must be > 0, got {rate_hz}")
    with BagWriter(path, storage) as bag:
        for index, (rgb, depth_mm) in enumerate(frames):
            if depth_mm.shape != rgb.shape[:2]:
                raise ValueError(
                    f"frame {index}: depth {depth_mm.shape} is not registered to {rgb.shape[:2]}"
                )
            stamp_ns = start_ns + round(index * 1e9 / rate_hz)
            header = Header(frame_id=frame_id)
            header.stamp.sec, header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
            info = matrix_camera_info(k, rgb.shape[1], rgb.shape[0], header)
            bag.write_message(f"{camera}/image_raw", rgb_message(rgb, header), stamp_ns)
            bag.write_message(f"{camera}/camera_info", info, stamp_ns)
            bag.write_message(f"{camera}/depth/image_raw", depth_message(depth_mm, header), stamp_ns)
            bag.write_message(f"{camera}/depth/camera_info", info, stamp_ns)
    return Path(path)
