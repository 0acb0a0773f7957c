"""A short sequence of real photographs that ships with scikit-image, for demos, tests and sample bags.

The files are read straight from the installed scikit-image wheel (``skimage/data``), never through
``skimage.data``'s downloader, so loading works offline and a missing file fails loudly. Sizes and aspect
ratios differ on purpose (square, landscape, portrait, large) so the pipeline's centre crop is exercised.
Licences are as stated in the scikit-image 0.26 docstrings of the matching ``skimage.data`` functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import cv2
import numpy as np


@dataclass(frozen=True)
class SampleFrame:
    """One photograph: RGB uint8 H×W×3 pixels plus what it shows and where it comes from."""

    name: str
    rgb: np.ndarray
    has_people: bool
    source: str


@dataclass(frozen=True)
class _FrameSpec:
    name: str
    filename: str
    has_people: bool
    source: str
    columns: tuple[int, int] | None = (
        None  # a horizontal crop (x0, x1) that turns a landscape into a portrait
    )


_FRAMES = (
    _FrameSpec(
        "astronaut",
        "astronaut.png",
        True,
        "skimage.data.astronaut: Eileen Collins, NASA Great Images database; no known copyright "
        "restrictions, released into the public domain.",
    ),
    _FrameSpec(
        "cameraman",
        "camera.png",
        True,
        "skimage.data.camera (grayscale, replicated to RGB): photograph by Lav Varshney, CC0.",
    ),
    _FrameSpec(
        "coffee",
        "coffee.png",
        False,
        "skimage.data.coffee: coffee cup, photograph by Rachel Michetti (Pikolo Espresso Bar), CC0.",
    ),
    _FrameSpec(
        "chelsea",
        "chelsea.png",
        False,
        "skimage.data.chelsea: Chelsea the cat, photograph by Stefan van der Walt, CC0.",
    ),
    _FrameSpec(
        "rocket_portrait",
        "rocket.jpg",
        False,
        "skimage.data.rocket, columns 200-440 (portrait crop): DSCOVR on Falcon 9, SpaceX, released into "
        "the public domain.",
        columns=(200, 440),
    ),
    _FrameSpec(
        "clock_motion_blur",
        "clock_motion.png",
        False,
        "skimage.data.clock (grayscale, replicated to RGB): wall clock photographed while moving the camera, "
        "by Stefan van der Walt, released into the public domain.",
    ),
    _FrameSpec(
        "hubble_deep_field",
        "hubble_deep_field.jpg",
        False,
        "skimage.data.hubble_deep_field: Hubble eXtreme Deep Field, NASA; may be freely used in the public "
        "domain.",
    ),
)


def _skimage_data_dir() -> Path:
    try:
        return Path(str(resources.files("skimage") / "data"))
    except ModuleNotFoundError as error:
        raise RuntimeError(
            "the sample frames come from scikit-image's bundled data: install scikit-image "
            "(pip install -r requirements.txt)"
        ) from error


def _load(spec: _FrameSpec, directory: Path) -> SampleFrame:
    path = directory / spec.filename
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)  # grayscale files come back with three equal channels
    if bgr is None:
        raise FileNotFoundError(
            f"sample image {spec.filename!r} is missing or unreadable at {path}; it ships inside the "
            "scikit-image wheel (see requirements.txt), reinstall scikit-image"
        )
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if spec.columns is not None:
        rgb = np.ascontiguousarray(rgb[:, spec.columns[0] : spec.columns[1]])
    return SampleFrame(spec.name, rgb, spec.has_people, spec.source)


def sample_frames() -> list[SampleFrame]:
    """The sample sequence in a fixed order (fresh arrays on every call; about 10 MB in total)."""
    directory = _skimage_data_dir()
    return [_load(spec, directory) for spec in _FRAMES]


def write_sample_images(directory: str | Path) -> list[Path]:
    """Write the frames as numbered PNGs plus SOURCES.txt (origin and licence of each); return the PNGs."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    notes = []
    for index, frame in enumerate(sample_frames()):
        path = directory / f"{index:02d}_{frame.name}.png"
        if not cv2.imwrite(str(path), cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR)):
            raise OSError(f"could not write {path}")
        paths.append(path)
        notes.append(f"{path.name}: {frame.source}")
    (directory / "SOURCES.txt").write_text("\n".join(notes) + "\n", encoding="utf-8")
    return paths
