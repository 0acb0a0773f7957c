"""Safe, strict loading of checkpoints in the Hugging Face layout (``config.json`` + ``*.safetensors``).

One set of rules for every weight file fourm_ros reads (the 4M-21 model and each tokenizer):

* safetensors only: a pickle-based file (``.bin``, ``.pt``, ``.pth``, ``.ckpt``) is refused, never unpickled;
* every tensor the module needs is in the file with the module's shape, except deterministic buffers the
  module can compute itself (sin-cos tables, all-zero LayerNorm biases);
* nothing in the file is silently ignored: a key is either loaded, or declared known-but-unused by the
  caller (another modality, a tokenizer's encoder half), or it is an error;
* every error names the offending keys, the file, and what was expected.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from fourm_ros.errors import UserError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_MAX_LISTED_KEYS = 20


class CheckpointError(UserError, RuntimeError):
    """A checkpoint could not be found, read or matched to the module; the message says what to do."""


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint resolved to local files."""

    source: str
    directory: Path
    weights: Path
    config: dict


def _list_keys(keys: Collection[str]) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:_MAX_LISTED_KEYS])
    more = len(keys) - _MAX_LISTED_KEYS
    return shown + (f", … and {more} more" if more > 0 else "")


def _refuse_pickle(path: Path) -> None:
    raise CheckpointError(
        f"{path} is a pickle-based PyTorch file; fourm_ros loads weights only from safetensors, because "
        "unpickling can run arbitrary code. Use the model.safetensors file from the official Hugging Face "
        "repository, or convert a file you trust with safetensors.torch.save_file()."
    )


def _local_checkpoint(path: Path, source: str, weights_name: str) -> Checkpoint:
    if path.is_file():
        if path.suffix in PICKLE_SUFFIXES:
            _refuse_pickle(path)
        if path.suffix != ".safetensors":
            raise CheckpointError(f"{path} is not a .safetensors file or a checkpoint directory")
        directory, weights = path.parent, path
    else:
        directory, weights = path, path / weights_name
        if not weights.is_file():
            pickles = sorted(p.name for p in path.iterdir() if p.suffix in PICKLE_SUFFIXES)
            if pickles:
                _refuse_pickle(path / pickles[0])
            raise CheckpointError(
                f"checkpoint directory {path} has no {weights_name}; expected the Hugging Face layout "
                f"({CONFIG_NAME} + {weights_name})"
            )
    return Checkpoint(source=source, directory=directory, weights=weights, config=read_config(directory))


def read_config(directory: str | os.PathLike) -> dict:
    """The ``config.json`` of a checkpoint directory, as a dict."""
    config_path = Path(directory) / CONFIG_NAME
    if not config_path.is_file():
        raise CheckpointError(
            f"checkpoint directory {directory} has no {CONFIG_NAME}; expected the Hugging Face layout "
            f"({CONFIG_NAME} + {WEIGHTS_NAME})"
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{config_path} is not valid JSON: {error}") from error
    if not isinstance(config, dict):
        raise CheckpointError(f"{config_path} must hold a JSON object, found {type(config).__name__}")
    return config


def _hub_checkpoint(
    repo_id: str, cache_dir: str | os.PathLike | None, offline: bool, weights_name: str
) -> Checkpoint:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    paths = []
    for filename in (CONFIG_NAME, weights_name):
        try:
            paths.append(
                Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir, local_files_only=offline))
            )
        except LocalEntryNotFoundError as error:
            how = (
                "offline mode is on and it is not in the local cache"
                if offline
                else "the Hugging Face hub could not be reached and it is not in the local cache"
            )
            raise CheckpointError(
                f"cannot get {filename} of {repo_id}: {how}. Download it where the hub is reachable "
                f"(`fourm-ros download`), or pass a local directory holding {CONFIG_NAME} and {weights_name}."
            ) from error
        except (RepositoryNotFoundError, GatedRepoError) as error:
            raise CheckpointError(
                f"Hugging Face repository {repo_id} does not exist or is not accessible: {error}"
            ) from error
        except EntryNotFoundError as error:
            raise CheckpointError(f"repository {repo_id} has no file {filename}") from error
        except OSError as error:
            raise CheckpointError(
                f"cannot download {filename} of {repo_id}: {error}. Pass a local directory holding "
                f"{CONFIG_NAME} and {weights_name} instead."
            ) from error
    return _local_checkpoint(paths[1], repo_id, weights_name)


def resolve(
    source: str | os.PathLike,
    *,
    cache_dir: str | os.PathLike | None = None,
    offline: bool = False,
    weights_name: str = WEIGHTS_NAME,
) -> Checkpoint:
    """Find a checkpoint: a local directory / .safetensors file, or a Hugging Face repo id (downloaded
    into ``cache_dir``, or looked up only in the cache when ``offline``)."""
    text = os.fspath(source)
    path = Path(text).expanduser()
    if path.exists():
        return _local_checkpoint(path, text, weights_name)
    if path.suffix in PICKLE_SUFFIXES:
        _refuse_pickle(path)
    if _REPO_ID.match(text) and not text.startswith((".", "~")):
        return _hub_checkpoint(text, cache_dir, offline, weights_name)
    raise CheckpointError(f"checkpoint {text!r} is neither an existing path nor a Hugging Face repo id")


def read_shapes(weights: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Tensor names and shapes of a safetensors file, read from its header only."""
    try:
        with safe_open(os.fspath(weights), framework="pt") as handle:
            names = handle.keys()  # a safe_open handle is not iterable
            return {key: tuple(handle.get_slice(key).get_shape()) for key in names}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{weights} is not a readable safetensors file: {error}") from error


def load_state(
    module: torch.nn.Module,
    weights: str | os.PathLike,
    *,
    computable: Collection[str] = (),
    known_unused: Callable[[str], bool] = lambda key: False,
    rename: Mapping[str, str] | None = None,
) -> list[str]:
    """Copy a safetensors file into ``module`` strictly; return the keys that were loaded.

    ``computable``: module keys that may be absent from the file (their computed values are kept).
    ``known_unused``: file keys that belong to the checkpoint's layout but are not needed by this module.
    ``rename``: file key → module key, for layouts that differ only in names.
    Tensors are cast to the dtype of the module's tensor they replace.
    """
    targets = dict(module.state_dict(keep_vars=True))
    rename = dict(rename or {})
    shapes = read_shapes(weights)
    to_module = {key: rename.get(key, key) for key in shapes}
    unexpected = [key for key, name in to_module.items() if name not in targets and not known_unused(key)]
    missing = sorted(set(targets) - set(to_module.values()) - set(computable))
    mismatched = [
        f"{key}: file {list(shapes[key])} vs module {list(targets[name].shape)}"
        for key, name in to_module.items()
        if name in targets and tuple(targets[name].shape) != shapes[key]
    ]
    problems = []
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_list_keys(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_list_keys(unexpected)}")
    if mismatched:
        problems.append(f"shape mismatches ({len(mismatched)}): {'; '.join(mismatched[:_MAX_LISTED_KEYS])}")
    if problems:
        raise CheckpointError(f"{weights} does not match {type(module).__name__}: " + " | ".join(problems))
    loaded = []
    try:
        with safe_open(os.fspath(weights), framework="pt") as handle, torch.no_grad():
            for key, name in to_module.items():
                if name in targets:
                    targets[name].copy_(handle.get_tensor(key))
                    loaded.append(key)
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{weights} could not be read completely: {error}") from error
    return loaded
