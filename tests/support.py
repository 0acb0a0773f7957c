"""Paths and small helpers shared by the tests of every room (importable as ``support``)."""

from pathlib import Path

TEST_DATA = Path(__file__).parent / "data"
KEYS_DIR = TEST_DATA / "keys"


def banner_share(rgb) -> float:
    """Share of an RGB picture's pixels in the red of the random-weights banner."""
    return float(((rgb[..., 0] > 150) & (rgb[..., 1] < 80) & (rgb[..., 2] < 80)).mean())


TINY_TASKS = ("depth", "normals", "segmentation", "human_pose", "caption")


def tiny_components(seed: int = 0, dtype=None, depth_input: bool = False):
    """The tiny random-weight job of :func:`fourm_ros.pipeline.tiny.tiny_random_components`."""
    from fourm_ros.pipeline.tiny import tiny_random_components

    return tiny_random_components(seed, dtype, depth_input)
