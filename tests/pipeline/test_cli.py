"""fourm-ros infer / download / sample-bag: outputs a person looks at, raw dumps, and every error path."""

import re

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import Reader
from support import banner_share, tiny_components

from fourm_ros import cli
from fourm_ros.pipeline.pipeline import Pipeline


@pytest.fixture(scope="module")
def components():
    return tiny_components()


@pytest.fixture
def tiny_pipeline(monkeypatch, components):
    """Pipeline.from_config builds the tiny random-weight pipeline with the configuration given."""
    monkeypatch.setattr(Pipeline, "from_config", classmethod(lambda cls, config: cls(config, components)))


def _png(path, height=120, width=160, seed=0):
    rgb = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    cv2.imwrite(str(path), rgb[..., ::-1])
    return rgb


FAST = ["--set", "tasks.human_pose.max_tokens=10", "--set", "tasks.caption.max_tokens=6"]


def test_infer_writes_pictures_and_raw_dumps_for_images_and_folders(tmp_path, tiny_pipeline):
    _png(tmp_path / "a.png")
    folder = tmp_path / "folder"
    folder.mkdir()
    _png(folder / "b.jpg", 200, 100, 1)
    _png(folder / "c.png", 90, 90, 2)
    out = tmp_path / "out"
    assert (
        cli.main(["infer", str(tmp_path / "a.png"), str(folder), "-o", str(out), "--random-weights", *FAST])
        == 0
    )
    assert sorted(p.name for p in out.iterdir()) == ["a", "b", "c"]
    names = {p.name for p in (out / "b").iterdir()}
    assert {
        "input.png",
        "depth.png",
        "normals.png",
        "segmentation.png",
        "human_pose.png",
        "caption.png",
    } <= names
    assert {"sheet.png", "raw.npz"} <= names
    raw = np.load(out / "b" / "raw.npz")
    assert bool(raw["random_weights"])
    assert raw["depth"].shape == (224, 224) and raw["labels"].dtype == np.uint8
    assert raw["tokens/tok_depth@224"].shape == (14, 14)
    assert list(raw["input_height_width"]) == [200, 100]
    depth = cv2.imread(str(out / "b" / "depth.png"))
    assert depth.shape[1] == 100  # drawn at the input's crop resolution
    for picture in ("depth.png", "human_pose.png", "caption.png"):
        top = cv2.imread(str(out / "b" / picture))[2, :, ::-1]
        assert (top[:, 0] > 150).mean() > 0.5 and (top[:, 1] < 80).mean() > 0.5, picture  # the red banner
    assert banner_share(cv2.imread(str(out / "b" / "sheet.png"))[..., ::-1]) > 0.05


def test_infer_reads_video_frames(tmp_path, tiny_pipeline):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for index in range(4):
        writer.write(np.full((48, 64, 3), 40 * index, np.uint8))
    writer.release()
    out = tmp_path / "out"
    assert cli.main(["infer", str(video), "-o", str(out), "--every", "2", "--random-weights", *FAST]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["clip_000000", "clip_000002"]


def test_infer_on_the_bundled_sample(tmp_path, tiny_pipeline):
    assert cli.main(["-q", "infer", "--sample", "-o", str(tmp_path), "--random-weights", *FAST]) == 0
    assert len(list(tmp_path.iterdir())) >= 6


def _file(name, content):
    def make(directory):
        path = directory / name
        path.write_bytes(content)
        return path

    return make


def _empty_folder(directory):
    (directory / "empty").mkdir()
    return directory / "empty"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda directory: directory / "missing.png", "cannot read"),
        (_file("broken.png", b"not a png"), "cannot read"),
        (_file("broken.mp4", b"\x00" * 64), "cannot open .* as a video"),
        (_file("notes.txt", b"x"), r"unsupported input type \.txt"),
        (_empty_folder, "holds no images"),
    ],
)
def test_bad_inputs_are_explained(tmp_path, tiny_pipeline, capsys, make, message):
    path = make(tmp_path)
    assert cli.main(["-q", "infer", str(path), "-o", str(tmp_path / "out"), "--random-weights"]) == 2
    assert re.search(message, capsys.readouterr().err)


def test_missing_weights_offline_is_explained(tmp_path, capsys):
    code = cli.main(["download", "--offline", "--set", f"cache_dir={tmp_path}"])
    assert code == 2
    assert "EPFL-VILAB/4M-21_B" in capsys.readouterr().err


def test_bad_setting_is_explained(tmp_path, capsys):
    assert cli.main(["infer", "--sample", "-o", str(tmp_path), "--set", "tasks.depth.diffusion_steps=0"]) == 2
    assert "tasks.depth.diffusion_steps" in capsys.readouterr().err


def test_sample_bag_holds_every_sample_frame(tmp_path):
    assert cli.main(["sample-bag", str(tmp_path / "bag"), "--storage", "sqlite3"]) == 0
    with Reader(tmp_path / "bag") as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    assert counts["/camera/image_raw"] == counts["/camera/camera_info"] >= 6


@pytest.mark.parametrize("command", ["build-engines", "check-fp16"])
def test_tensorrt_commands_explain_a_missing_tensorrt_before_any_work(command, capsys):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert cli.main([command, "--random-weights"]) == 2
        assert "TensorRT is not importable" in capsys.readouterr().err
    else:
        pytest.skip("TensorRT is installed here; tests/backends/test_tensorrt_backend.py covers the build")


def test_rgbd_sample_bag_holds_registered_depth_with_the_colour_header(tmp_path):
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, Image

    from fourm_ros import sample_rgbd

    assert cli.main(["sample-bag", str(tmp_path / "bag"), "--rgbd", "--frames", "2"]) == 0
    messages: dict[str, list] = {}
    with Reader(tmp_path / "bag") as reader:
        for connection, _, data in reader.messages():
            kind = CameraInfo if connection.topic.endswith("camera_info") else Image
            messages.setdefault(connection.topic, []).append(deserialize_message(data, kind))
    assert sorted(messages) == [
        "/camera/camera_info",
        "/camera/depth/camera_info",
        "/camera/depth/image_raw",
        "/camera/image_raw",
    ]
    assert all(len(items) == 2 for items in messages.values())
    for index, (colour, depth) in enumerate(
        zip(messages["/camera/image_raw"], messages["/camera/depth/image_raw"], strict=True)
    ):
        assert depth.header == colour.header and depth.encoding == "16UC1" and colour.encoding == "rgb8"
        frame = sample_rgbd.render(index)
        decoded = np.frombuffer(bytes(depth.data), "<u2").reshape(depth.height, depth.width)
        np.testing.assert_array_equal(decoded, frame.sensor_mm)
    info = messages["/camera/depth/camera_info"][0]
    np.testing.assert_allclose(np.reshape(info.k, (3, 3)), sample_rgbd.K)


def test_rgbd_sample_bag_refuses_compression(tmp_path, capsys):
    assert cli.main(["sample-bag", str(tmp_path / "bag"), "--rgbd", "--compressed"]) == 2
    assert "16UC1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["infer", "--every", "0", "-o", "out", "a.png"],
            "argument --every: expected an integer >= 1, got 0",
        ),
        (["replay", "--rate", "0", "in", "-o", "out"], "argument --rate: expected a number > 0, got 0"),
        (["sample-bag", "--rate", "0", "out"], "argument --rate: expected a number > 0, got 0"),
        (["replay", "--rate", "inf", "in", "-o", "out"], "argument --rate: expected a number > 0, got inf"),
        (["bench", "--batch", "two"], "argument --batch: expected an integer >= 1, got 'two'"),
    ],
)
def test_command_line_numbers_are_validated(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
