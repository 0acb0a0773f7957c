"""Camera messages to frames (H×W×3 uint8 RGB) and pipeline results to image messages.

Colour conversion is delegated to a maintained library: ``cv_bridge`` when the system ROS provides it,
otherwise ``rosbags-image`` (both apply OpenCV's ``cvtColor`` to the same bytes, so they agree). What those
libraries do not do reliably is done here, before they see the data: every field of the message is
validated (a malformed message must not become a crash or a garbage frame), row padding in ``step`` is
removed (rosbags-image ignores ``step``; cv_bridge mishandles padding that is not a whole number of
pixels), and ``mono16`` is scaled to 8 bit here (the two libraries round differently, and sensors that use
fewer than 16 bits need an explicit range). The libraries therefore only ever see tightly packed 8-bit
rows in native byte order.
"""

from __future__ import annotations

import array
import functools
import sys
from dataclasses import dataclass

import cv2
import numpy as np
from rosbags.image import image_to_cvimage
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

try:  # The system ROS's cv_bridge, if there is one; rosbags-image (a pip dependency) otherwise.
    from cv_bridge import CvBridge
except ImportError as error:
    CvBridge = None
    _CV_BRIDGE_IMPORT_ERROR = str(error)

MAX_SIDE = 16384
"""Largest accepted image side in pixels; anything larger is a corrupt header, not a camera."""
MAX_PIXELS = 100_000_000

BYTES_PER_PIXEL = {
    "rgb8": 3,
    "bgr8": 3,
    "rgba8": 4,
    "bgra8": 4,
    "mono8": 1,
    "mono16": 2,
    "yuv422": 2,  # UYVY byte order (sensor_msgs image_encodings: deprecated name of "uyvy")
    "uyvy": 2,
    "yuv422_yuy2": 2,  # YUYV byte order (deprecated name of "yuyv")
    "yuyv": 2,
}
SUPPORTED_ENCODINGS = tuple(BYTES_PER_PIXEL)
_YUV422 = ("yuv422", "uyvy", "yuv422_yuy2", "yuyv")
_LIBRARY_ENCODING = {"uyvy": "yuv422", "yuyv": "yuv422_yuy2", "mono16": "mono8"}
"""The name handed to the library: the YUV names every cv_bridge release knows; mono16 arrives as mono8."""

LIBRARIES = ("cv_bridge", "rosbags-image")

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class BadImageError(ValueError):
    """A camera message that cannot be a valid image; the message says what is wrong and what is expected,
    ``reason`` is a short category for counting in diagnostics."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class _PackedImage:
    """The duck-typed ``sensor_msgs/Image`` handed to the libraries: tight rows, native byte order."""

    height: int
    width: int
    encoding: str
    step: int
    data: np.ndarray
    is_bigendian: int = int(sys.byteorder == "big")


@functools.cache
def _bridge():
    return CvBridge()


def _cv_bridge_problem() -> str:
    """Why cv_bridge cannot be used here, or "" when it converts a probe image correctly.

    Importing cv_bridge is not enough: its compiled part loads on first use and fails there when the
    system's build does not match this NumPy (e.g. a NumPy-1 cv_bridge under NumPy 2).
    """
    if CvBridge is None:
        return f"cv_bridge cannot be imported ({_CV_BRIDGE_IMPORT_ERROR})"
    probe = _PackedImage(height=1, width=2, encoding="bgr8", step=6, data=np.arange(6, dtype=np.uint8)[None])
    try:
        converted = _bridge().imgmsg_to_cv2(probe, desired_encoding="rgb8")
    except Exception as error:  # any failure of the system library means: use the fallback
        return f"cv_bridge does not work here ({type(error).__name__}: {error})"
    if not np.array_equal(converted, [[[2, 1, 0], [5, 4, 3]]]):
        return "cv_bridge converted a probe image wrongly"
    return ""


CV_BRIDGE_PROBLEM = _cv_bridge_problem()
DEFAULT_LIBRARY = "rosbags-image" if CV_BRIDGE_PROBLEM else "cv_bridge"
"""cv_bridge when the system ROS provides a working one, else rosbags-image; log it at start-up."""


def copy_header(header: Header) -> Header:
    """An independent copy of ``header`` (stamp and frame_id), so outputs never alias the input message."""
    out = Header(frame_id=header.frame_id)
    out.stamp.sec = header.stamp.sec
    out.stamp.nanosec = header.stamp.nanosec
    return out


def _check_size(height: int, width: int, what: str) -> None:
    if width == 0 or height == 0:
        raise BadImageError(
            f"{what} is empty ({width}×{height}); expected width and height >= 1", reason="empty image"
        )
    if width > MAX_SIDE or height > MAX_SIDE or width * height > MAX_PIXELS:
        raise BadImageError(
            f"{what} is {width}×{height}, which no camera produces; expected at most {MAX_SIDE} pixels a "
            f"side and {MAX_PIXELS // 1_000_000} MP (a corrupt or mis-typed header?)",
            reason="absurd size",
        )


def validate_image(msg: Image) -> int:
    """Check every layout field of ``msg`` against its encoding; return the bytes per pixel."""
    encoding = msg.encoding
    if encoding not in BYTES_PER_PIXEL:
        raise BadImageError(
            f"unsupported image encoding {encoding!r}; expected one of {', '.join(SUPPORTED_ENCODINGS)} "
            "(republish other formats, e.g. with image_proc's debayer node)",
            reason="unsupported encoding",
        )
    _check_size(msg.height, msg.width, f"{encoding} image")
    bytes_per_pixel = BYTES_PER_PIXEL[encoding]
    row_bytes = msg.width * bytes_per_pixel
    if encoding in _YUV422 and msg.width % 2:
        raise BadImageError(
            f"{encoding} image has odd width {msg.width}; YUV 4:2:2 shares chroma between pixel pairs, "
            "so the width must be even",
            reason="odd width",
        )
    if msg.step < row_bytes:
        raise BadImageError(
            f"{encoding} image step {msg.step} is shorter than one row: expected step >= width·bytes per "
            f"pixel = {msg.width}·{bytes_per_pixel} = {row_bytes}",
            reason="short step",
        )
    needed = msg.step * msg.height
    if len(msg.data) < needed:
        raise BadImageError(
            f"{encoding} image data has {len(msg.data)} bytes; expected at least step·height = "
            f"{msg.step}·{msg.height} = {needed}",
            reason="short data",
        )
    return bytes_per_pixel


def image_to_rgb(
    msg: Image, *, mono16_range: tuple[int, int] = (0, 65535), library: str = DEFAULT_LIBRARY
) -> np.ndarray:
    """A ``sensor_msgs/Image`` → an H×W×3 uint8 RGB array that owns its memory.

    ``mono16`` maps ``mono16_range`` (inclusive, e.g. (0, 4095) for a 12-bit sensor) linearly onto
    0..255, rounding to nearest and clipping outside the range. The default is the full 16-bit range, the
    same scaling as cv_bridge; a fixed range keeps the brightness stable from frame to frame, unlike a
    per-frame min/max stretch. ``library`` chooses the colour-conversion library (see :data:`LIBRARIES`).
    """
    if library not in LIBRARIES:
        raise ValueError(f"library must be one of {LIBRARIES}, got {library!r}")
    if library == "cv_bridge" and CV_BRIDGE_PROBLEM:
        raise ValueError(f"library 'cv_bridge' is not available: {CV_BRIDGE_PROBLEM}")
    low, high = mono16_range
    if not 0 <= low < high <= 65535:
        raise ValueError(f"mono16_range must satisfy 0 <= low < high <= 65535, got {mono16_range}")
    bytes_per_pixel = validate_image(msg)
    raw = np.frombuffer(msg.data, dtype=np.uint8, count=msg.step * msg.height).reshape(msg.height, msg.step)
    rows = raw[:, : msg.width * bytes_per_pixel]
    if msg.encoding == "mono16":
        rows = _mono16_to_mono8(rows, bool(msg.is_bigendian), mono16_range)
    packed = np.ascontiguousarray(rows)
    image = _PackedImage(
        height=msg.height,
        width=msg.width,
        encoding=_LIBRARY_ENCODING.get(msg.encoding, msg.encoding),
        step=packed.shape[1],
        data=packed,
    )
    if library == "cv_bridge":
        rgb = _bridge().imgmsg_to_cv2(image, desired_encoding="rgb8")
    else:
        rgb = image_to_cvimage(image, "rgb8")
    if np.may_share_memory(rgb, raw) or not rgb.flags.c_contiguous:
        rgb = np.array(rgb, order="C", copy=True)  # never alias the message's buffer
    return rgb


@functools.lru_cache(maxsize=4)
def _mono16_table(low: int, high: int) -> np.ndarray:
    """uint8 level for every 16-bit value: (v - low)·255/(high - low), rounded, clipped to 0..255."""
    values = np.clip(np.arange(65536, dtype=np.float64), low, high)
    return np.floor((values - low) * (255.0 / (high - low)) + 0.5).astype(np.uint8)


def _mono16_to_mono8(rows: np.ndarray, big_endian: bool, value_range: tuple[int, int]) -> np.ndarray:
    return _mono16_table(*value_range)[rows.view(">u2" if big_endian else "<u2")]


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """A JPEG or PNG ``sensor_msgs/CompressedImage`` → an H×W×3 uint8 RGB array.

    ``format`` is image_transport's string ("jpeg", "png", "rgb8; jpeg compressed bgr8", ...). Grey,
    16-bit and alpha PNGs are decoded to 8-bit RGB. Decoding uses OpenCV directly: it is what both
    cv_bridge and rosbags-image call, and both of them mishandle grey images here.
    """
    fmt = msg.format.strip().lower()
    if "compresseddepth" in fmt:
        raise BadImageError(
            f"compressed image format {msg.format!r} is a compressedDepth (depth) stream; expected a colour "
            "jpeg or png stream such as <camera>/image_raw/compressed",
            reason="compressed depth",
        )
    if fmt and not any(codec in fmt for codec in ("jpeg", "jpg", "png")):
        raise BadImageError(
            f"unsupported compressed image format {msg.format!r}; expected jpeg or png (image_transport "
            "'compressed'), e.g. 'jpeg' or 'rgb8; jpeg compressed bgr8'",
            reason="unsupported format",
        )
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise BadImageError(
            f"compressed image ({msg.format!r}) has no data; expected JPEG or PNG bytes", reason="no data"
        )
    head = data[:8].tobytes()
    if not (head.startswith(_JPEG_MAGIC) or head.startswith(_PNG_MAGIC)):
        raise BadImageError(
            f"compressed image ({msg.format!r}) data starts with {head.hex(' ')}, which is neither JPEG "
            "(ff d8 ff) nor PNG (89 50 4e 47 0d 0a 1a 0a)",
            reason="not jpeg or png",
        )
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise BadImageError(
            f"compressed image ({msg.format!r}, {data.size} bytes) is corrupt or truncated: OpenCV could "
            "not decode it",
            reason="corrupt compressed",
        )
    _check_size(bgr.shape[0], bgr.shape[1], "decoded compressed image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _array_image(array_: np.ndarray, header: Header, encoding: str, dtype: type, channels: int) -> Image:
    """An Image message holding ``array_`` verbatim: tight rows, native byte order, the input header."""
    expected_ndim = 2 if channels == 1 else 3
    shape_text = "H×W" if channels == 1 else f"H×W×{channels}"
    if not isinstance(array_, np.ndarray):
        raise TypeError(f"{encoding} image needs a numpy array ({shape_text} {np.dtype(dtype).name})")
    if array_.ndim != expected_ndim or (channels > 1 and array_.shape[2] != channels):
        raise ValueError(f"{encoding} image needs a {shape_text} array, got shape {array_.shape}")
    if array_.dtype != dtype:
        raise ValueError(f"{encoding} image needs dtype {np.dtype(dtype).name}, got {array_.dtype}")
    height, width = array_.shape[:2]
    _check_size(height, width, f"{encoding} output")
    contiguous = np.ascontiguousarray(array_)
    data = array.array("B")
    data.frombytes(memoryview(contiguous).cast("B"))  # one copy, and rclpy takes array('B') as is
    return Image(
        header=copy_header(header),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=int(sys.byteorder == "big" and contiguous.dtype.itemsize > 1),
        step=width * channels * contiguous.dtype.itemsize,
        data=data,
    )


def depth_image(depth: np.ndarray, header: Header) -> Image:
    """float32 H×W → ``32FC1`` (REP 118 layout; the values keep whatever units the caller documents)."""
    return _array_image(depth, header, "32FC1", np.float32, 1)


def normals_image(normals: np.ndarray, header: Header) -> Image:
    """float32 H×W×3 unit vectors in the optical frame → ``32FC3``."""
    return _array_image(normals, header, "32FC3", np.float32, 3)


def labels_image(labels: np.ndarray, header: Header) -> Image:
    """uint8 H×W class ids (see :mod:`fourm_ros.ros.labels`) → ``mono8``."""
    return _array_image(labels, header, "mono8", np.uint8, 1)


def rgb_image(rgb: np.ndarray, header: Header) -> Image:
    """uint8 H×W×3 RGB → ``rgb8``."""
    return _array_image(rgb, header, "rgb8", np.uint8, 3)
