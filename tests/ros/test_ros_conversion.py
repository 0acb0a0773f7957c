"""Camera messages → RGB frames for every supported encoding, bad input, and results → image messages."""

import array
import importlib.util
import sys
import types

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from fourm_ros.ros import conversion
from fourm_ros.ros.conversion import (
    BadImageError,
    compressed_to_rgb,
    depth_image,
    image_to_rgb,
    labels_image,
    normals_image,
    rgb_image,
)

HEIGHT, WIDTH = 4, 6
PADDINGS = (0, 1, 8)  # 1 byte is not a whole pixel for any encoding
FILL = 0xAB  # padding bytes are non-zero so that reading them shows up in the result


def _rgb(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def _header():
    header = Header(frame_id="camera_color_optical_frame")
    header.stamp.sec, header.stamp.nanosec = 1700000000, 123456789
    return header


def _message(encoding, rows, padding=0, big_endian=False):
    """An Image whose rows are ``rows`` (H × row bytes, uint8) followed by ``padding`` filler bytes."""
    height, row_bytes = rows.shape
    padded = np.full((height, row_bytes + padding), FILL, dtype=np.uint8)
    padded[:, :row_bytes] = rows
    return Image(
        header=_header(),
        height=height,
        width=WIDTH,
        encoding=encoding,
        is_bigendian=int(big_endian),
        step=row_bytes + padding,
        data=array.array("B", padded.tobytes()),
    )


def _alpha():
    return np.random.default_rng(7).integers(0, 256, (HEIGHT, WIDTH, 1), dtype=np.uint8)


COLOUR_CASES = {
    "rgb8": lambda rgb: rgb,
    "bgr8": lambda rgb: rgb[..., ::-1],
    "rgba8": lambda rgb: np.concatenate([rgb, _alpha()], axis=2),
    "bgra8": lambda rgb: np.concatenate([rgb[..., ::-1], _alpha()], axis=2),
}


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("encoding", sorted(COLOUR_CASES))
def test_colour_encodings_give_the_rgb_image(encoding, padding):
    rgb = _rgb()
    pixels = COLOUR_CASES[encoding](rgb)
    msg = _message(encoding, pixels.reshape(HEIGHT, -1), padding)
    out = image_to_rgb(msg)
    assert out.dtype == np.uint8 and out.shape == (HEIGHT, WIDTH, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


@pytest.mark.parametrize("padding", PADDINGS)
def test_mono8_is_replicated_to_three_channels(padding):
    grey = _rgb()[..., 0]
    out = image_to_rgb(_message("mono8", grey, padding))
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=2))


def _mono16_values():
    values = np.random.default_rng(3).integers(0, 65536, (HEIGHT, WIDTH)).astype(np.uint16)
    values.flat[:4] = [0, 65535, 257 * 100, 257 * 200 + 128]  # exact levels and a rounding case
    return values


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize("big_endian", [False, True])
def test_mono16_honours_byte_order_and_scales_the_full_range(big_endian, padding):
    values = _mono16_values()
    raw = values.astype(">u2" if big_endian else "<u2").view(np.uint8).reshape(HEIGHT, -1)
    out = image_to_rgb(_message("mono16", raw, padding, big_endian))
    expected = np.floor(values.astype(np.float64) * 255 / 65535 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(out[..., 0], expected)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    assert out.flat[: 4 * 3 : 3].tolist() == [0, 255, 100, 200]


def test_mono16_range_for_a_12_bit_sensor_is_stretched_and_clipped():
    values = np.array([0, 4095, 2048, 60000, 1000, 3000] * HEIGHT, dtype="<u2").reshape(HEIGHT, WIDTH)
    out = image_to_rgb(_message("mono16", values.view(np.uint8)), mono16_range=(0, 4095))
    expected = np.floor(np.minimum(values, 4095).astype(np.float64) * 255 / 4095 + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(out[..., 1], expected)
    assert out[0, :4, 0].tolist() == [0, 255, 128, 255]
    with pytest.raises(ValueError, match="mono16_range"):
        image_to_rgb(_message("mono16", values.view(np.uint8)), mono16_range=(10, 10))


def _yuv_pairs():
    """Per pixel pair: Y0, Y1, U, V (one chroma sample shared by two pixels)."""
    rng = np.random.default_rng(5)
    y = rng.integers(16, 236, (HEIGHT, WIDTH)).astype(np.uint8)
    u = rng.integers(16, 241, (HEIGHT, WIDTH // 2)).astype(np.uint8)
    v = rng.integers(16, 241, (HEIGHT, WIDTH // 2)).astype(np.uint8)
    return y, u, v


def _bt601_limited_range(y, u, v):
    """The ITU-R BT.601 studio-swing YUV → RGB conversion OpenCV applies to 4:2:2 camera data."""
    u, v = np.repeat(u, 2, axis=1).astype(np.float64) - 128, np.repeat(v, 2, axis=1).astype(np.float64) - 128
    luma = 1.164 * (y.astype(np.float64) - 16)
    rgb = np.stack([luma + 1.596 * v, luma - 0.391 * u - 0.813 * v, luma + 2.018 * u], axis=-1)
    return np.clip(np.rint(rgb), 0, 255)


@pytest.mark.parametrize("padding", PADDINGS)
@pytest.mark.parametrize(
    ("encoding", "order"),
    [("yuv422", "UYVY"), ("uyvy", "UYVY"), ("yuv422_yuy2", "YUYV"), ("yuyv", "YUYV")],
)
def test_yuv422_byte_orders(encoding, order, padding):
    y, u, v = _yuv_pairs()
    packed = np.empty((HEIGHT, WIDTH // 2, 4), dtype=np.uint8)
    planes = {"Y0": y[:, 0::2], "Y1": y[:, 1::2], "U": u, "V": v}
    names = ["U", "Y0", "V", "Y1"] if order == "UYVY" else ["Y0", "U", "Y1", "V"]
    for position, name in enumerate(names):
        packed[..., position] = planes[name]
    out = image_to_rgb(_message(encoding, packed.reshape(HEIGHT, -1), padding))
    assert np.abs(out.astype(np.int16) - _bt601_limited_range(y, u, v)).max() <= 1


def test_the_frame_does_not_alias_the_message_buffer():
    rgb = _rgb()
    msg = _message("rgb8", rgb.reshape(HEIGHT, -1))
    out = image_to_rgb(msg)
    msg.data[0] = (int(msg.data[0]) + 1) % 256
    np.testing.assert_array_equal(out, rgb)


def _bad(**fields):
    msg = _message("rgb8", _rgb().reshape(HEIGHT, -1))
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


@pytest.mark.parametrize(
    ("msg", "message"),
    [
        (_bad(encoding="bayer_rggb8"), r"unsupported image encoding 'bayer_rggb8'; expected one of rgb8"),
        (_bad(encoding="RGB8"), r"unsupported image encoding 'RGB8'"),
        (_bad(width=0), r"empty \(0×4\); expected width and height >= 1"),
        (_bad(height=0), r"empty"),
        (_bad(width=20000, step=60000), r"20000×4, which no camera produces; expected at most 16384"),
        (_bad(width=12000, height=9000, step=36000), r"at most 16384 pixels a side and 100 MP"),
        (
            _bad(step=17),
            r"step 17 is shorter than one row: expected step >= width·bytes per pixel = 6·3 = 18",
        ),
        (
            _bad(data=array.array("B", bytes(50))),
            r"data has 50 bytes; expected at least step·height = 18·4 = 72",
        ),
        (_bad(encoding="yuyv", width=5, step=10), r"odd width 5.*must be even"),
    ],
)
def test_bad_images_are_rejected_with_what_is_expected(msg, message):
    with pytest.raises(BadImageError, match=message):
        image_to_rgb(msg)


@pytest.mark.parametrize(
    ("msg", "reason"),
    [
        (_bad(encoding="bayer_rggb8"), "unsupported encoding"),
        (_bad(width=0), "empty image"),
        (_bad(width=20000, step=60000), "absurd size"),
        (_bad(step=17), "short step"),
        (_bad(data=array.array("B", bytes(50))), "short data"),
        (_bad(encoding="yuyv", width=5, step=10), "odd width"),
    ],
)
def test_bad_images_carry_a_short_reason_for_diagnostics(msg, reason):
    with pytest.raises(BadImageError) as caught:
        image_to_rgb(msg)
    assert caught.value.reason == reason


def test_bad_image_error_is_a_value_error():
    assert issubclass(BadImageError, ValueError)


def _compressed(data, fmt):
    return CompressedImage(header=_header(), format=fmt, data=array.array("B", bytes(data)))


def _encode(extension, image, *params):
    ok, encoded = cv2.imencode(extension, image, list(params))
    assert ok
    return encoded.tobytes()


def _smooth_rgb(height=32, width=48):
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx * 5, yy * 7, (xx + yy) * 3], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("fmt", ["jpeg", "rgb8; jpeg compressed bgr8", ""])
def test_jpeg_round_trip(fmt):
    rgb = _smooth_rgb()
    encoded = _encode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), cv2.IMWRITE_JPEG_QUALITY, 95)
    out = compressed_to_rgb(_compressed(encoded, fmt))
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert np.abs(out.astype(np.int16) - rgb).mean() < 2.0  # lossy, but the channels are not swapped


@pytest.mark.parametrize("fmt", ["png", "bgr8; png compressed bgr8"])
def test_png_round_trip_is_exact(fmt):
    rgb = _smooth_rgb()
    encoded = _encode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(compressed_to_rgb(_compressed(encoded, fmt)), rgb)


def test_grey_png_decodes_to_rgb():
    grey = _smooth_rgb()[..., 0]
    encoded = _encode(".png", grey)
    np.testing.assert_array_equal(
        compressed_to_rgb(_compressed(encoded, "mono8; png compressed mono8")), np.dstack([grey] * 3)
    )


def test_bad_compressed_images_are_rejected():
    jpeg, png = _encode(".jpg", _smooth_rgb()), _encode(".png", _smooth_rgb())
    cases = [
        (_compressed(b"", "jpeg"), r"has no data"),
        (_compressed(b"\xff\xd8\xff" + bytes(200), "jpeg"), r"corrupt or truncated"),
        (_compressed(jpeg[: len(jpeg) // 2], "jpeg"), r"corrupt or truncated"),
        (_compressed(png[: len(png) // 2], "png"), r"corrupt or truncated"),
        (_compressed(b"GIF89a" + bytes(20), "jpeg"), r"neither JPEG \(ff d8 ff\) nor PNG"),
        (_compressed(jpeg, "tiff"), r"unsupported compressed image format 'tiff'; expected jpeg or png"),
        (_compressed(png, "16UC1; compressedDepth png"), r"compressedDepth \(depth\) stream"),
    ]
    for msg, message in cases:
        with pytest.raises(BadImageError, match=message) as caught:
            compressed_to_rgb(msg)
        assert caught.value.reason in {
            "no data",
            "corrupt compressed",
            "not jpeg or png",
            "unsupported format",
            "compressed depth",
        }


def _decode(msg, dtype, channels):
    values = np.frombuffer(
        bytes(msg.data), dtype=np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    )
    shape = (msg.height, msg.width) if channels == 1 else (msg.height, msg.width, channels)
    return values.reshape(shape)


@pytest.mark.parametrize(
    ("build", "encoding", "dtype", "channels"),
    [
        (depth_image, "32FC1", np.float32, 1),
        (normals_image, "32FC3", np.float32, 3),
        (labels_image, "mono8", np.uint8, 1),
        (rgb_image, "rgb8", np.uint8, 3),
    ],
)
def test_builders_copy_the_header_and_hold_the_array(build, encoding, dtype, channels):
    rng = np.random.default_rng(11)
    shape = (5, 7) if channels == 1 else (5, 7, channels)
    values = (rng.normal(size=shape) if dtype == np.float32 else rng.integers(0, 256, shape)).astype(dtype)
    header = _header()
    msg = build(np.asfortranarray(values), header)  # a non-contiguous input is packed
    assert msg.header == header and msg.header is not header
    assert (msg.encoding, msg.height, msg.width) == (encoding, 5, 7)
    assert msg.step == 7 * channels * np.dtype(dtype).itemsize
    assert len(msg.data) == msg.step * msg.height
    assert msg.is_bigendian == (sys.byteorder == "big" and np.dtype(dtype).itemsize > 1)
    np.testing.assert_array_equal(_decode(msg, dtype, channels), values)


def test_rgb_output_converts_back_to_the_same_frame():
    rgb = _rgb()
    np.testing.assert_array_equal(image_to_rgb(rgb_image(rgb, _header())), rgb)


@pytest.mark.parametrize(
    ("build", "value", "message"),
    [
        (depth_image, np.zeros((4, 4), np.float64), r"32FC1 image needs dtype float32, got float64"),
        (depth_image, np.zeros((4, 4, 1), np.float32), r"needs a H×W array, got shape \(4, 4, 1\)"),
        (normals_image, np.zeros((4, 4, 2), np.float32), r"needs a H×W×3 array"),
        (labels_image, np.zeros((4, 4), np.int32), r"mono8 image needs dtype uint8"),
        (rgb_image, np.zeros((0, 4, 3), np.uint8), r"empty"),
    ],
)
def test_builders_reject_wrong_arrays(build, value, message):
    with pytest.raises(ValueError, match=message):
        build(value, _header())


def test_without_cv_bridge_the_rosbags_image_path_is_used():
    if importlib.util.find_spec("cv_bridge") is not None:
        pytest.skip("cv_bridge is installed here; the fallback is not the default")
    assert conversion.DEFAULT_LIBRARY == "rosbags-image"
    assert conversion.CV_BRIDGE_PROBLEM.startswith("cv_bridge cannot be imported")
    with pytest.raises(ValueError, match="'cv_bridge' is not available: cv_bridge cannot be imported"):
        image_to_rgb(_message("rgb8", _rgb().reshape(HEIGHT, -1)), library="cv_bridge")
    with pytest.raises(ValueError, match="library must be one of"):
        image_to_rgb(_message("rgb8", _rgb().reshape(HEIGHT, -1)), library="pillow")


class _WorkingBridge:
    """Converts the tight rows it is given with OpenCV, as cv_bridge does (only what the probe needs)."""

    def imgmsg_to_cv2(self, msg, desired_encoding):
        assert (msg.encoding, desired_encoding, msg.is_bigendian) == ("bgr8", "rgb8", sys.byteorder == "big")
        pixels = np.ndarray((msg.height, msg.width, 3), np.uint8, buffer=msg.data)
        return cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB)


class _BrokenBridge:
    """Imports, then fails on first use, like a cv_bridge built against another NumPy."""

    def imgmsg_to_cv2(self, msg, desired_encoding):
        raise ImportError("numpy.core.multiarray failed to import")


def _conversion_with_cv_bridge(monkeypatch, bridge_class):
    """A private copy of the conversion module that imports ``bridge_class`` as cv_bridge.CvBridge."""
    fake = types.ModuleType("cv_bridge")
    fake.CvBridge = bridge_class
    monkeypatch.setitem(sys.modules, "cv_bridge", fake)
    spec = importlib.util.spec_from_file_location("conversion_with_fake_cv_bridge", conversion.__file__)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up while executing
    spec.loader.exec_module(module)
    return module


def test_a_working_cv_bridge_is_preferred(monkeypatch):
    module = _conversion_with_cv_bridge(monkeypatch, _WorkingBridge)
    assert module.DEFAULT_LIBRARY == "cv_bridge" and module.CV_BRIDGE_PROBLEM == ""


def test_a_cv_bridge_that_fails_on_first_use_falls_back_to_rosbags_image(monkeypatch):
    module = _conversion_with_cv_bridge(monkeypatch, _BrokenBridge)
    assert module.DEFAULT_LIBRARY == "rosbags-image"
    assert "cv_bridge does not work here (ImportError: numpy.core.multiarray" in module.CV_BRIDGE_PROBLEM
    rgb = _rgb()
    np.testing.assert_array_equal(
        module.image_to_rgb(_message("bgr8", rgb[..., ::-1].reshape(HEIGHT, -1))), rgb
    )


def test_cv_bridge_and_rosbags_image_give_identical_frames():
    pytest.importorskip("cv_bridge", reason="only where the system ROS provides cv_bridge")
    y, u, v = _yuv_pairs()
    uyvy = np.stack([u, y[:, 0::2], v, y[:, 1::2]], axis=-1).reshape(HEIGHT, -1)
    messages = [_message(name, build(_rgb()).reshape(HEIGHT, -1), 1) for name, build in COLOUR_CASES.items()]
    messages += [
        _message("mono8", _rgb()[..., 0], 1),
        _message("mono16", _mono16_values().astype(">u2").view(np.uint8).reshape(HEIGHT, -1), 1, True),
        _message("uyvy", uyvy, 1),
        _message("yuv422", uyvy, 1),
    ]
    for msg in messages:
        np.testing.assert_array_equal(
            image_to_rgb(msg, library="cv_bridge"), image_to_rgb(msg, library="rosbags-image"), msg.encoding
        )
