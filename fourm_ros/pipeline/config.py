"""The pipeline's configuration: one schema, read from YAML or a dict, shared by the CLI and the ROS node.

The same file serves both: ``config/perception.yaml`` is a ROS 2 parameters file whose
``ros__parameters`` hold the pipeline keys below plus a ``ros`` section that only the node reads.
Each setting carries its documentation and its allowed values as data (:func:`setting`), so that
validation here, the node's parameter descriptors and ``--help`` texts all come from one place, and a typo
or an out-of-range value is reported with what is allowed instead of surfacing later as a wrong result.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from fourm_ros.errors import UserError

DEFAULT_MODEL = "EPFL-VILAB/4M-21_B"
NODE_SECTION = "ros"
"""Key of the node-only settings inside a shared parameters file; the pipeline ignores it."""


class ConfigError(UserError, ValueError):
    """A configuration value is unknown, of the wrong type or out of range; the message names it."""


def setting(
    default: Any,
    doc: str,
    *,
    choices: tuple | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    runtime: bool = False,
) -> Any:
    """A documented dataclass field with its allowed values. ``doc`` is one or more sentences;
    ``runtime`` marks a setting that a running node may change (``ros2 param set``) without a restart."""
    return field(
        default=default,
        metadata={"doc": doc, "choices": choices, "minimum": minimum, "maximum": maximum, "runtime": runtime},
    )


def _check(condition: bool, path: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"{path}: {message}")


@dataclass(frozen=True)
class DiffusionTaskConfig:
    """Depth or normals, decoded by the DiVAE diffusion decoder."""

    enabled: bool = setting(True, "Compute and publish this output.")
    diffusion_steps: int = setting(
        1,
        "Number of DDIM steps of the diffusion decoder; 1 uses its direct x0 prediction (fastest).",
        minimum=1,
        maximum=1000,
        runtime=True,
    )
    seed: int = setting(
        0, "Seed of the diffusion noise, so that results repeat exactly.", minimum=0, runtime=True
    )


@dataclass(frozen=True)
class SegmentationTaskConfig:
    enabled: bool = setting(True, "Compute and publish semantic segmentation (COCO panoptic, 133 classes).")


@dataclass(frozen=True)
class SequenceTaskConfig:
    """Caption or human poses: autoregressive decoding, run every ``every_n_frames`` frames."""

    enabled: bool = setting(True, "Compute and publish this output.")
    every_n_frames: int = setting(
        1,
        "Generate on every n-th frame only, since autoregression is the slow part.",
        minimum=1,
        runtime=True,
    )
    max_tokens: int = setting(
        64,
        "Longest generated sequence in tokens. The ONNX Runtime and TensorRT graphs are exported with a "
        "KV cache of this length, so on those backends it changes only with a restart.",
        minimum=1,
        maximum=512,
        runtime=True,
    )
    temperature: float = setting(
        0.0, "Sampling temperature; 0 decodes greedily (deterministic).", minimum=0.0, runtime=True
    )
    top_k: int = setting(
        0, "Sample from the k most likely tokens only; 0 turns it off.", minimum=0, runtime=True
    )
    top_p: float = setting(
        1.0, "Nucleus sampling probability mass; 1 turns it off.", minimum=1e-6, maximum=1.0, runtime=True
    )


@dataclass(frozen=True)
class TasksConfig:
    depth: DiffusionTaskConfig = field(default_factory=DiffusionTaskConfig)
    normals: DiffusionTaskConfig = field(default_factory=DiffusionTaskConfig)
    segmentation: SegmentationTaskConfig = field(default_factory=SegmentationTaskConfig)
    human_pose: SequenceTaskConfig = field(default_factory=lambda: SequenceTaskConfig(max_tokens=275))
    caption: SequenceTaskConfig = field(default_factory=SequenceTaskConfig)

    @property
    def enabled(self) -> tuple[str, ...]:
        return tuple(item.name for item in fields(self) if getattr(self, item.name).enabled)


@dataclass(frozen=True)
class DenseDecodingConfig:
    """Decoding of the image-like targets (depth, normals and segmentation tokens)."""

    steps: int = setting(
        1,
        "Decoding steps; 1 decodes all tokens in one batched pass, more use ROAR or MaskGIT steps.",
        minimum=1,
        maximum=196,
    )
    scheme: str = setting("roar", "Token schedule when steps > 1.", choices=("roar", "maskgit"))
    temperature: float = setting(0.0, "Sampling temperature; 0 takes the argmax.", minimum=0.0)
    top_k: int = setting(0, "Sample from the k most likely tokens only; 0 turns it off.", minimum=0)
    top_p: float = setting(
        1.0, "Nucleus sampling probability mass; 1 turns it off.", minimum=1e-6, maximum=1.0
    )
    cfg_scale: float = setting(
        1.0,
        "Classifier-free guidance scale; 1 turns it off (2.0, as in ml-4m's demo, doubles the cost).",
        minimum=0.0,
    )
    seed: int = setting(0, "Seed of sampled dense decoding.", minimum=0)


STAGE_PRECISIONS = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class PrecisionConfig:
    """Compute dtype of the stages whose outputs are continuous (the tokenizer decoders).

    Their error is bounded and measurable, unlike the argmax tokens of the 4M-21 encoder and decoder, whose
    dtype stays ``dtype``. ``auto`` = bfloat16 where the device computes it natively (a CPU with AVX-512
    BF16 or AMX, a CUDA GPU with bf16), else float32; errors and speed-ups are in the README (Performance).
    A stage set to a non-float32 dtype runs on torch, whatever ``backend`` runs the rest."""

    depth: str = setting("auto", "Compute dtype of the depth DiVAE decoder.", choices=STAGE_PRECISIONS)
    normals: str = setting(
        "auto", "Compute dtype of the surface-normal DiVAE decoder.", choices=STAGE_PRECISIONS
    )
    segmentation: str = setting(
        "auto", "Compute dtype of the segmentation decoder.", choices=STAGE_PRECISIONS
    )


@dataclass(frozen=True)
class TokenizersConfig:
    """Where each tokenizer decoder's checkpoint comes from (hub repo id or local directory)."""

    depth: str = setting(
        "EPFL-VILAB/4M_tokenizers_depth_8k_224-448", "The depth DiVAE tokenizer (hub repo id or directory)."
    )
    normals: str = setting(
        "EPFL-VILAB/4M_tokenizers_normal_8k_224-448",
        "The surface-normal DiVAE tokenizer (hub repo id or directory).",
    )
    segmentation: str = setting(
        "EPFL-VILAB/4M_tokenizers_semseg_4k_224-448",
        "The semantic-segmentation VQ-VAE (hub repo id or directory).",
    )
    human_pose: str = setting(
        "EPFL-VILAB/4M_tokenizers_human-poses_1k_8",
        "The human-pose (SMPL) tokenizer (hub repo id or directory).",
    )


@dataclass(frozen=True)
class EnginesConfig:
    """TensorRT engine building and caching (see engines/README.md)."""

    cache_dir: str = setting(
        "~/.cache/fourm_ros/engines", "Persistent cache of ONNX exports and engines (never under /tmp)."
    )
    precision: str = setting("fp16", "Precision the TensorRT engines are built in.", choices=("fp16", "fp32"))
    workspace_mb: int = setting(2048, "Workspace limit of the TensorRT builder in MiB.", minimum=64)
    max_batch: int = setting(
        1,
        "Most frames per call the TensorRT engines accept; set it to the number of cameras.",
        minimum=1,
        maximum=16,
    )
    allow_unverified_fp16: bool = setting(
        False, "Use an fp16 engine even if it failed the fp16-vs-fp32 check."
    )


@dataclass(frozen=True)
class PipelineConfig:
    """Everything the pipeline needs to run; see config/perception.yaml for the documented defaults."""

    model: str = setting(
        DEFAULT_MODEL, "The 4M-21 checkpoint: a hub repo id (EPFL-VILAB/4M-21_B|_L|_XL) or a local directory."
    )
    tokenizers: TokenizersConfig = field(default_factory=TokenizersConfig)
    cache_dir: str | None = setting(None, "Hugging Face cache directory; empty uses the hub's default.")
    offline: bool = setting(False, "Never contact the hub; use cached or local checkpoints only.")
    random_weights: bool = setting(
        False, "Run WITHOUT trained weights: the outputs are meaningless and flagged as such."
    )
    backend: str = setting(
        "auto",
        "Inference backend; auto picks the best one available and says why in the log and /diagnostics.",
        choices=("auto", "torch", "onnxruntime", "tensorrt"),
    )
    device: str = setting("cpu", "Compute device: cpu, cuda or cuda:N.")
    dtype: str = setting("float32", "Compute dtype of torch.", choices=("float32", "bfloat16", "float16"))
    threads: int = setting(
        0, "CPU threads of torch and ONNX Runtime; 0 keeps the library default.", minimum=0
    )
    smpl_model: str | None = setting(
        None,
        "Your licensed SMPL model (.npz) for body-shaped 3D joints; empty uses a generic adult skeleton.",
    )
    inputs: tuple[str, ...] = setting(
        ("rgb",),
        "What 4M-21 is conditioned on: [rgb], or [rgb, depth] to add a registered depth sensor's 196 "
        "tok_depth@224 tokens (encoder half of tokenizers.depth); frames without depth run on rgb alone.",
        choices=(("rgb",), ("rgb", "depth")),
    )
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    dense_decoding: DenseDecodingConfig = field(default_factory=DenseDecodingConfig)
    engines: EnginesConfig = field(default_factory=EnginesConfig)

    def validate(self) -> PipelineConfig:
        """Checks that span fields or need more than a range (per-field checks run in from_dict)."""
        _check(bool(self.model), "model", "must name a hub repo id or a local directory")
        _check(
            self.device == "cpu"
            or self.device == "cuda"
            or (self.device.startswith("cuda:") and self.device[5:].isdigit()),
            "device",
            f"must be cpu, cuda or cuda:N, got {self.device!r}",
        )
        _check(bool(self.tasks.enabled), "tasks", "at least one task must be enabled")
        _check(
            not Path(self.engines.cache_dir).expanduser().resolve().is_relative_to("/tmp"),
            "engines.cache_dir",
            "must be a persistent directory, not under /tmp (engines take minutes to build)",
        )
        for item in fields(self.tokenizers):
            _check(bool(getattr(self.tokenizers, item.name)), f"tokenizers.{item.name}", "must not be empty")
        return self

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> PipelineConfig:
        """Build and validate from nested mappings; unknown keys, wrong types and bad values are errors."""
        values = {key: value for key, value in (data or {}).items() if key != NODE_SECTION}
        return build(cls, values).validate()

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> PipelineConfig:
        """Read a plain YAML mapping or a ROS 2 parameters file (the first ``ros__parameters`` found)."""
        return cls.from_dict(read_yaml(path))

    def replace(self, **changes: Any) -> PipelineConfig:
        """A copy with top-level fields changed, validated like from_dict."""
        return PipelineConfig.from_dict({**self.to_dict(), **changes})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """The settings mapping of a YAML file: a plain mapping, or the ``ros__parameters`` of a ROS 2
    parameters file."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"cannot read configuration file {path}: {error}") from error
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {error}") from error
    return ros_parameters(data) if data else {}


def ros_parameters(data: Any) -> dict[str, Any]:
    """The ``ros__parameters`` mapping of a ROS 2 parameters file, or ``data`` itself if it is plain."""
    if not isinstance(data, dict):
        raise ConfigError(f"a configuration must be a mapping, got {type(data).__name__}")
    if "ros__parameters" in data:
        return data["ros__parameters"]
    for value in data.values():
        if isinstance(value, dict) and "ros__parameters" in value:
            return value["ros__parameters"]
    return data


@dataclass(frozen=True)
class SettingInfo:
    """One leaf setting of a schema, for parameter declarations and help texts."""

    path: str
    kind: type
    default: Any
    doc: str
    choices: tuple | None
    minimum: float | None
    maximum: float | None
    runtime: bool
    """True: a running node may change it (``ros2 param set``); False: read at start-up only."""


def leaf_settings(schema: type, prefix: str = "", defaults: Any = None) -> Iterator[SettingInfo]:
    """Every leaf setting of a schema dataclass, depth first, with dotted paths and effective defaults."""
    hints = get_type_hints(schema)
    defaults = schema() if defaults is None else defaults
    for item in fields(schema):
        path = f"{prefix}{item.name}"
        hint = hints[item.name]
        default = getattr(defaults, item.name)
        if dataclasses.is_dataclass(hint):
            yield from leaf_settings(hint, f"{path}.", default)
            continue
        meta = item.metadata
        kind = str if hint == str | None else hint
        yield SettingInfo(
            path,
            kind,
            default,
            meta["doc"],
            meta["choices"],
            meta["minimum"],
            meta["maximum"],
            meta["runtime"],
        )


def runtime_changes(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths of the settings that differ between two instances of one schema; a ConfigError if
    one of them may change only at start-up (``runtime=False``), naming it."""
    changed = [
        info
        for info, after in zip(
            leaf_settings(type(old), prefix, old), leaf_settings(type(new), prefix, new), strict=True
        )
        if info.default != after.default
    ]
    fixed = [info.path for info in changed if not info.runtime]
    if fixed:
        raise ConfigError(f"{', '.join(fixed)}: read-only while the node runs; restart the node to change it")
    return [info.path for info in changed]


def build(schema: type, values: Any, path: str = "") -> Any:
    """An instance of ``schema`` from nested mappings; every value is type- and range-checked."""
    where = path or "configuration"
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: expected a mapping, got {values!r}")
    hints = get_type_hints(schema)
    known = {item.name: item for item in fields(schema)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; known keys: {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        key = f"{path}.{name}" if path else name
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = build(hint, value, key)
        else:
            kwargs[name] = _coerce(hint, value, key)
            _check_allowed(known[name].metadata, kwargs[name], key)
    return schema(**kwargs)


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
    elif getattr(hint, "__origin__", None) is tuple:
        _check(isinstance(value, (list, tuple)), path, f"must be a list, got {value!r}")
        value = tuple(_coerce(hint.__args__[0], item, f"{path}[{i}]") for i, item in enumerate(value))
    return value


def _check_allowed(meta: Any, value: Any, path: str) -> None:
    if value is None:
        return
    choices, minimum, maximum = meta.get("choices"), meta.get("minimum"), meta.get("maximum")
    if choices is not None:
        _check(value in choices, path, f"must be one of {list(choices)}, got {value!r}")
    if minimum is not None and maximum is not None:
        _check(minimum <= value <= maximum, path, f"must be in [{minimum}, {maximum}], got {value!r}")
    elif minimum is not None:
        _check(value >= minimum, path, f"must be >= {minimum}, got {value!r}")
    elif maximum is not None:
        _check(value <= maximum, path, f"must be <= {maximum}, got {value!r}")
