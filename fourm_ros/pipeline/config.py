"""The pipeline's configuration: one schema, read from YAML or a dict, shared by the CLI and the ROS node.

The same file serves both: ``config/perception.yaml`` is a ROS 2 parameters file whose
``ros__parameters`` hold the pipeline keys below plus a ``ros`` section that only the node reads.
Every value is validated here, so a typo or an out-of-range value is reported with the allowed values
instead of surfacing later as a wrong result.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

DEFAULT_MODEL = "EPFL-VILAB/4M-21_B"
DEFAULT_TOKENIZERS = {
    "depth": "EPFL-VILAB/4M_tokenizers_depth_8k_224-448",
    "normals": "EPFL-VILAB/4M_tokenizers_normal_8k_224-448",
    "segmentation": "EPFL-VILAB/4M_tokenizers_semseg_4k_224-448",
    "human_pose": "EPFL-VILAB/4M_tokenizers_human-poses_1k_8",
}
BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
DTYPES = ("float32", "bfloat16", "float16")
PRECISIONS = ("fp16", "fp32")
NODE_SECTION = "ros"
"""Key of the node-only settings inside a shared parameters file; the pipeline ignores it."""


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range; the message names it."""


def _check(condition: bool, path: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{path}: {message}")


@dataclass(frozen=True)
class SamplingConfig:
    """How tokens are drawn from logits; temperature 0 is argmax (deterministic)."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0

    def validate(self, path: str) -> None:
        _check(self.temperature >= 0, f"{path}.temperature", f"must be >= 0, got {self.temperature}")
        _check(self.top_k >= 0, f"{path}.top_k", f"must be >= 0 (0 = off), got {self.top_k}")
        _check(0 < self.top_p <= 1, f"{path}.top_p", f"must be in (0, 1] (1 = off), got {self.top_p}")


@dataclass(frozen=True)
class DenseDecodingConfig(SamplingConfig):
    """Decoding of the image-like targets (depth, normals, segmentation tokens).

    ``steps`` 1 predicts all 196 tokens in one batched decoder pass (the fast path); more steps use
    ROAR/MaskGIT re-encoding. ``cfg_scale`` 1 disables classifier-free guidance (which doubles the cost).
    """

    steps: int = 1
    scheme: str = "roar"
    cfg_scale: float = 1.0
    seed: int = 0

    def validate(self, path: str) -> None:
        super().validate(path)
        _check(1 <= self.steps <= 196, f"{path}.steps", f"must be in 1..196, got {self.steps}")
        _check(
            self.scheme in ("roar", "maskgit"),
            f"{path}.scheme",
            f"must be roar or maskgit, got {self.scheme!r}",
        )
        _check(self.cfg_scale >= 0, f"{path}.cfg_scale", f"must be >= 0, got {self.cfg_scale}")


@dataclass(frozen=True)
class DiffusionTaskConfig:
    """Depth or normals: the DiVAE decoder runs ``diffusion_steps`` DDIM steps (1 = its x0 prediction)."""

    enabled: bool = True
    diffusion_steps: int = 1
    seed: int = 0

    def validate(self, path: str) -> None:
        _check(1 <= self.diffusion_steps <= 1000, f"{path}.diffusion_steps", "must be in 1..1000")


@dataclass(frozen=True)
class SegmentationTaskConfig:
    enabled: bool = True

    def validate(self, path: str) -> None:
        pass


@dataclass(frozen=True)
class SequenceTaskConfig(SamplingConfig):
    """Caption or human poses: autoregressive decoding, run every ``every_n_frames`` frames."""

    enabled: bool = True
    every_n_frames: int = 1
    max_tokens: int = 64

    def validate(self, path: str) -> None:
        super().validate(path)
        _check(self.every_n_frames >= 1, f"{path}.every_n_frames", "must be >= 1")
        _check(1 <= self.max_tokens <= 512, f"{path}.max_tokens", "must be in 1..512")


@dataclass(frozen=True)
class TasksConfig:
    depth: DiffusionTaskConfig = field(default_factory=DiffusionTaskConfig)
    normals: DiffusionTaskConfig = field(default_factory=DiffusionTaskConfig)
    segmentation: SegmentationTaskConfig = field(default_factory=SegmentationTaskConfig)
    human_pose: SequenceTaskConfig = field(default_factory=lambda: SequenceTaskConfig(max_tokens=275))
    caption: SequenceTaskConfig = field(default_factory=SequenceTaskConfig)

    def validate(self, path: str) -> None:
        for item in fields(self):
            getattr(self, item.name).validate(f"{path}.{item.name}")

    @property
    def enabled(self) -> tuple[str, ...]:
        return tuple(item.name for item in fields(self) if getattr(self, item.name).enabled)


@dataclass(frozen=True)
class TokenizersConfig:
    """Where each tokenizer decoder's checkpoint comes from (hub repo id or local directory)."""

    depth: str = DEFAULT_TOKENIZERS["depth"]
    normals: str = DEFAULT_TOKENIZERS["normals"]
    segmentation: str = DEFAULT_TOKENIZERS["segmentation"]
    human_pose: str = DEFAULT_TOKENIZERS["human_pose"]

    def validate(self, path: str) -> None:
        for item in fields(self):
            _check(bool(getattr(self, item.name)), f"{path}.{item.name}", "must not be empty")


@dataclass(frozen=True)
class EnginesConfig:
    """TensorRT engine building and caching (see engines/README.md)."""

    cache_dir: str = "~/.cache/fourm_ros/engines"
    precision: str = "fp16"
    workspace_mb: int = 2048
    allow_unverified_fp16: bool = False

    def validate(self, path: str) -> None:
        _check(self.precision in PRECISIONS, f"{path}.precision", f"must be one of {PRECISIONS}")
        _check(self.workspace_mb >= 64, f"{path}.workspace_mb", "must be >= 64")
        _check(
            not Path(self.cache_dir).expanduser().resolve().is_relative_to("/tmp"),
            f"{path}.cache_dir",
            "must be a persistent directory, not under /tmp (engines take minutes to build)",
        )


@dataclass(frozen=True)
class PipelineConfig:
    """Everything the pipeline needs to run; see config/perception.yaml for the documented defaults."""

    model: str = DEFAULT_MODEL
    tokenizers: TokenizersConfig = field(default_factory=TokenizersConfig)
    cache_dir: str | None = None
    offline: bool = False
    random_weights: bool = False
    backend: str = "auto"
    device: str = "cpu"
    dtype: str = "float32"
    threads: int = 0
    tasks: TasksConfig = field(default_factory=TasksConfig)
    dense_decoding: DenseDecodingConfig = field(default_factory=DenseDecodingConfig)
    engines: EnginesConfig = field(default_factory=EnginesConfig)

    def validate(self) -> PipelineConfig:
        _check(bool(self.model), "model", "must name a hub repo id or a local directory")
        _check(self.backend in BACKENDS, "backend", f"must be one of {BACKENDS}, got {self.backend!r}")
        _check(self.dtype in DTYPES, "dtype", f"must be one of {DTYPES}, got {self.dtype!r}")
        _check(
            self.device == "cpu" or self.device.startswith("cuda"),
            "device",
            f"must be cpu, cuda or cuda:N, got {self.device!r}",
        )
        _check(self.threads >= 0, "threads", "must be >= 0 (0 = library default)")
        _check(bool(self.tasks.enabled), "tasks", "at least one task must be enabled")
        for name in ("tokenizers", "tasks", "dense_decoding", "engines"):
            getattr(self, name).validate(name)
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PipelineConfig:
        """Build and validate from nested mappings; unknown keys and wrong types are errors."""
        values = {key: value for key, value in (data or {}).items() if key != NODE_SECTION}
        return _build(cls, values, "").validate()

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> PipelineConfig:
        """Read a plain YAML mapping or a ROS 2 parameters file (the first ``ros__parameters`` found)."""
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as error:
            raise ConfigError(f"cannot read configuration file {path}: {error}") from error
        except yaml.YAMLError as error:
            raise ConfigError(f"{path} is not valid YAML: {error}") from error
        return cls.from_dict(ros_parameters(data) if data else {})

    def replace(self, **changes: Any) -> PipelineConfig:
        """A copy with top-level fields changed (validated)."""
        return dataclasses.replace(self, **changes).validate()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def ros_parameters(data: Any) -> dict[str, Any]:
    """The ``ros__parameters`` mapping of a ROS 2 parameters file, or ``data`` itself if it is plain."""
    if isinstance(data, dict):
        if "ros__parameters" in data:
            return data["ros__parameters"]
        for value in data.values():
            if isinstance(value, dict) and "ros__parameters" in value:
                return value["ros__parameters"]
        return data
    raise ConfigError(f"a configuration must be a mapping, got {type(data).__name__}")


def _build(cls: type, values: Any, path: str) -> Any:
    where = path or "configuration"
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {values!r}")
    hints = get_type_hints(cls)
    known = {item.name for item in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; known keys: {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        key = f"{path}.{name}" if path else name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, key)
        else:
            kwargs[name] = _coerce(hint, value, key)
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, path: str) -> Any:
    if hint == str | None:
        if value is None or value == "":
            return None
        hint = str
    if hint is bool:
        _check(isinstance(value, bool), path, f"must be true or false, got {value!r}")
    elif hint is int:
        _check(
            isinstance(value, int) and not isinstance(value, bool), path, f"must be an integer, got {value!r}"
        )
    elif hint is float:
        _check(
            isinstance(value, (int, float)) and not isinstance(value, bool),
            path,
            f"must be a number, got {value!r}",
        )
        value = float(value)
    elif hint is str:
        _check(isinstance(value, str), path, f"must be a string, got {value!r}")
    return value
