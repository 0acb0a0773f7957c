"""Paths and small helpers shared by the tests of every room (importable as ``support``)."""

from pathlib import Path

TEST_DATA = Path(__file__).parent / "data"
KEYS_DIR = TEST_DATA / "keys"
