"""Shared plumbing of the golden-file scripts: import apple/ml-4m from a checkout, record provenance.

Nothing here is ml-4m code. ml-4m imports some packages at module level that the computations recorded in the
golden files never use (image augmentation, S3, data loading); when one of those is not installed it is
replaced by an inert placeholder module (listed in the file's metadata), so the reference runs with only
torch, numpy, einops, diffusers==0.20.0, huggingface_hub<=0.24, tokenizers, webdataset and braceexpand
(plus smplx for the SMPL joints of the skeleton file).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import importlib.util
import json
import platform
import subprocess
import sys
import types
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
# Imported by ml-4m at module level, never called on the paths the golden files record.
PLACEHOLDER_PACKAGES = (
    "torchvision",
    "boto3",
    "botocore",
    "pandas",
    "cv2",
    "albumentations",
    "pyrender",
    "trimesh",
    "yacs",
)
VERSIONED_PACKAGES = (
    "torch",
    "numpy",
    "einops",
    "diffusers",
    "huggingface_hub",
    "tokenizers",
    "safetensors",
    "smplx",
)


class _Placeholder(type):
    """An absent package's attribute: usable in definitions at import time, fails loudly when used on data."""

    def __getattr__(cls, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder(f"{cls.__name__}.{name}", (), {})

    def __call__(cls, *args, **kwargs):
        return _InertObject(cls.__name__)


class _InertObject:
    def __init__(self, name: str):
        self._name = name

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self._name} was called, but its package is not installed")


class _PlaceholderModule(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        return _Placeholder(f"{self.__name__}.{name}", (), {})


class _PlaceholderFinder:
    """Last on sys.meta_path: only packages that are really absent get a placeholder."""

    def __init__(self, roots: set[str]):
        self.roots, self.used = roots, set()

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] not in self.roots:
            return None
        self.used.add(fullname.split(".")[0])
        return importlib.util.spec_from_loader(fullname, self, is_package=True)

    def create_module(self, spec):
        module = _PlaceholderModule(spec.name)
        module.__path__ = []
        return module

    def exec_module(self, module) -> None:
        pass


_FINDER = _PlaceholderFinder(set(PLACEHOLDER_PACKAGES))


def parse_arguments(description: str, default_output: Path) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--ml4m", type=Path, required=True, help="a git checkout of apple/ml-4m")
    parser.add_argument("-o", "--output", type=Path, default=default_output, help="the golden file to write")
    return parser.parse_args()


def use_reference(checkout: Path) -> str:
    """Make ``import fourm`` load the checkout; return its commit (refuses a checkout with local changes)."""
    checkout = checkout.resolve()
    if not (checkout / "fourm" / "models" / "fm.py").is_file():
        raise SystemExit(f"{checkout} is not an apple/ml-4m checkout (no fourm/models/fm.py)")
    commit = _git(checkout, "rev-parse", "HEAD")
    if _git(checkout, "status", "--porcelain", "--untracked-files=no"):
        raise SystemExit(f"{checkout} has local changes; the golden files must come from a clean commit")
    sys.path.insert(0, str(checkout))
    sys.path.insert(1, str(REPO_ROOT / "tests"))
    if _FINDER not in sys.meta_path:
        sys.meta_path.append(_FINDER)
    return commit


def _git(directory: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(directory), *args], check=True, capture_output=True, text=True
    ).stdout.strip()


def provenance(reference_commit: str) -> dict[str, np.ndarray]:
    """The metadata entries every golden file carries (0-d unicode arrays, loadable without pickle)."""
    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "absent"
    fourm_ros = _git(REPO_ROOT, "rev-parse", "HEAD")
    # Golden files written by an earlier script of the same run do not count as changes.
    golden_files = (":(exclude)*.npz", ":(exclude)tests/tokenizers/data/pose/pose_sequence_reference.json")
    if _git(REPO_ROOT, "status", "--porcelain", "--untracked-files=no", "--", ".", *golden_files):
        fourm_ros += " (with uncommitted changes)"
    record = {
        "reference_repo": "https://github.com/apple/ml-4m",
        "reference_commit": reference_commit,
        "fourm_ros_commit": fourm_ros,
        "command": " ".join(["python", _relative(Path(sys.argv[0])), *map(_relative_argument, sys.argv[1:])]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": json.dumps(versions, sort_keys=True),
        "placeholder_packages": ",".join(sorted(_FINDER.used)),
    }
    return {f"meta/{key}": np.array(value) for key, value in record.items()}


def _relative(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def _relative_argument(argument: str) -> str:
    return _relative(Path(argument)) if argument.startswith(("/", ".")) else argument


def save(path: Path, arrays: dict[str, np.ndarray], reference_commit: str) -> None:
    arrays = {**arrays, **provenance(reference_commit)}
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)
    print(f"wrote {path}: {len(arrays)} arrays, reference commit {reference_commit}")
