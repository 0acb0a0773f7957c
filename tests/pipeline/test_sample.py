"""The sample photographs load offline from the scikit-image wheel and are real, varied pictures."""

import socket

import cv2
import numpy as np
import pytest
import skimage.data

from fourm_ros import sample


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the sample frames tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_frames_load_offline_as_real_rgb_photographs(no_network):
    frames = sample.sample_frames()
    assert 6 <= len(frames) <= 10
    assert len({f.name for f in frames}) == len(frames)
    for frame in frames:
        assert frame.rgb.dtype == np.uint8 and frame.rgb.ndim == 3 and frame.rgb.shape[2] == 3, frame.name
        assert frame.rgb.std() > 20, f"{frame.name} looks blank"
        assert len(np.unique(frame.rgb)) > 100, f"{frame.name} has too few grey levels for a photograph"
        assert "public domain" in frame.source or "CC0" in frame.source, frame.name


def test_frames_include_people_and_vary_in_size_and_aspect():
    frames = sample.sample_frames()
    assert any(f.has_people for f in frames) and not all(f.has_people for f in frames)
    shapes = {f.rgb.shape[:2] for f in frames}
    assert (224, 224) not in shapes and len(shapes) >= 5
    aspects = [w / h for h, w in shapes]
    assert min(aspects) < 0.75 and max(aspects) > 1.3 and any(a == 1.0 for a in aspects)


def test_frames_are_the_pixels_skimage_itself_loads():
    frames = {f.name: f.rgb for f in sample.sample_frames()}
    np.testing.assert_array_equal(frames["astronaut"], skimage.data.astronaut())
    camera = skimage.data.camera()
    np.testing.assert_array_equal(frames["cameraman"], np.stack([camera] * 3, axis=-1))
    np.testing.assert_array_equal(frames["rocket_portrait"], skimage.data.rocket()[:, 200:440])


def test_write_sample_images_round_trips_and_records_sources(tmp_path):
    paths = sample.write_sample_images(tmp_path / "frames")
    frames = sample.sample_frames()
    assert [p.name for p in paths] == [f"{i:02d}_{f.name}.png" for i, f in enumerate(frames)]
    for path, frame in zip(paths, frames, strict=True):
        np.testing.assert_array_equal(cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB), frame.rgb)
    sources = (tmp_path / "frames" / "SOURCES.txt").read_text().splitlines()
    assert sources == [f"{p.name}: {f.source}" for p, f in zip(paths, frames, strict=True)]


def test_a_missing_data_file_fails_loudly(tmp_path, monkeypatch):
    monkeypatch.setattr(sample, "_skimage_data_dir", lambda: tmp_path)
    with pytest.raises(FileNotFoundError, match="scikit-image wheel"):
        sample.sample_frames()
