"""A persistent TensorRT engine cache that never loads an engine on a stack it was not built for.

A TensorRT engine is only valid for the exact TensorRT version and GPU (compute capability) that built it,
and for the ONNX file, precision, shape profile and workspace it was built with; stale engines after a
JetPack upgrade are the most common complaint about TensorRT nodes. So every engine has a record (JSON, next
to it) holding its full key and its own sha256. An engine is loaded only if its record's key equals the
current key and the file's hash matches; otherwise it is rebuilt, and the log line says which field changed
(e.g. ``tensorrt 10.3.0 → 10.7.0``). An engine that TensorRT cannot deserialise is rebuilt too.

This module is pure Python: TensorRT is reached only through the ``build`` and ``deserialize`` callables
handed to :class:`EngineCache` (``fourm_ros.backends.tensorrt_backend`` provides the real ones), so the key
and rebuild logic are tested without TensorRT or a GPU.

Layout, inside an export directory (see ``fourm_ros.backends.export``)::

    tensorrt/<graph>.<precision>.engine     the serialised engine
    tensorrt/<graph>.<precision>.json       its record: key fields, engine sha256, build time
    tensorrt/timing-<trt>-sm<cc>.cache      TensorRT's timing cache (faster rebuilds on the same stack)
    tensorrt/fp16_check.json                the fp16-vs-fp32 check result (``fourm_ros.backends.fp16_check``)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import fourm_ros
from fourm_ros.backends.base import BackendError
from fourm_ros.backends.export import GraphFile, file_sha256, write_atomic

LOG = logging.getLogger("fourm_ros.engines")
PRECISIONS = ("fp16", "fp32")
ENGINE_DIR = "tensorrt"


@dataclass(frozen=True)
class Stack:
    """The software and hardware an engine is built for."""

    tensorrt: str
    gpu: str
    compute_capability: str


@dataclass(frozen=True)
class BatchProfile:
    """TensorRT optimisation profile of the dynamic axes: frames per call and persons per pose call.

    ``max_batch`` is the largest number of frames (e.g. cameras) run together; the engine accepts 1 to
    ``max_batch`` and is tuned for ``opt_batch``. The pose graph decodes the persons of one frame; its
    default maximum is generous because the pose network is tiny."""

    max_batch: int = 1
    opt_batch: int = 1
    max_persons: int = 32
    opt_persons: int = 2
    max_targets: int = 2
    """Sequence targets generated together (caption, human poses): the sequence graphs' ``targets`` axis,
    and their ``rows`` axis (frames x targets, target-major)."""

    def __post_init__(self) -> None:
        if not 1 <= self.opt_batch <= self.max_batch:
            raise ValueError(f"need 1 <= opt_batch <= max_batch, got {self.opt_batch} and {self.max_batch}")
        if not 1 <= self.opt_persons <= self.max_persons:
            raise ValueError(
                f"need 1 <= opt_persons <= max_persons, got {self.opt_persons} and {self.max_persons}"
            )
        if self.max_targets < 1:
            raise ValueError(f"need max_targets >= 1, got {self.max_targets}")

    def axis(self, name: str) -> tuple[int, int, int]:
        """(min, opt, max) of a named dynamic axis."""
        if name == "batch":
            return 1, self.opt_batch, self.max_batch
        if name == "persons":
            return 1, self.opt_persons, self.max_persons
        if name == "context_tokens":  # RGB-D jobs: rgb alone (196) or rgb + depth tokens (392)
            return 196, 392, 392
        if name == "sequence_context_tokens":  # RGB-D jobs' sequence contexts: the above + [S_1]
            return 197, 393, 393
        if name == "targets":
            return 1, self.max_targets, self.max_targets
        if name == "rows":
            return 1, self.opt_batch * self.max_targets, self.max_batch * self.max_targets
        raise BackendError(
            f"no optimisation profile for the dynamic axis {name!r} "
            "(known: batch, persons, targets, rows, context_tokens, sequence_context_tokens)"
        )


Shape = tuple[int, ...]
ProfileEntry = tuple[str, Shape, Shape, Shape]


def profile_shapes(graph: GraphFile, profile: BatchProfile) -> tuple[ProfileEntry, ...]:
    """(input, min, opt, max shape) for every input of ``graph`` with a dynamic axis."""
    entries = []
    for info in graph.inputs:
        if all(isinstance(size, int) for size in info.shape):
            continue
        shapes = [
            tuple(size if isinstance(size, int) else profile.axis(size)[which] for size in info.shape)
            for which in range(3)
        ]
        entries.append((info.name, *shapes))
    return tuple(entries)


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; two engines with equal keys are interchangeable."""

    graph: str
    onnx_sha256: str
    precision: str
    profile: tuple[ProfileEntry, ...]
    workspace_mb: int
    tensorrt: str
    gpu: str
    compute_capability: str
    builder: str = fourm_ros.__version__
    """fourm_ros version: its build settings (e.g. normalisation kept in fp32) shape the engine too."""

    @classmethod
    def create(
        cls, graph: GraphFile, stack: Stack, *, precision: str, profile: BatchProfile, workspace_mb: int
    ) -> EngineKey:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        return cls(
            graph=graph.name,
            onnx_sha256=graph.sha256 + (f"+{graph.data_sha256}" if graph.data_sha256 else ""),
            precision=precision,
            profile=profile_shapes(graph, profile),
            workspace_mb=workspace_mb,
            tensorrt=stack.tensorrt,
            gpu=stack.gpu,
            compute_capability=stack.compute_capability,
        )

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(asdict(self)))  # tuples → lists, as stored

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EngineKey:
        names = {item.name for item in fields(cls)}
        if set(data) != names:
            raise ValueError(f"engine key fields {sorted(data)} differ from {sorted(names)}")
        profile = tuple(
            (name, tuple(low), tuple(opt), tuple(high)) for name, low, opt, high in data["profile"]
        )
        return cls(**{**data, "profile": profile})

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def differences(self, other: EngineKey) -> list[str]:
        """Human-readable ``field old → new`` for every field that differs from ``other`` (the new key)."""
        changes = []
        for item in fields(self):
            old, new = getattr(self, item.name), getattr(other, item.name)
            if old != new:
                if item.name == "profile":
                    old, new = _profile_text(old), _profile_text(new)
                changes.append(f"{item.name} {old} → {new}")
        return changes


def _profile_text(profile: tuple[ProfileEntry, ...]) -> str:
    return ", ".join(
        f"{name} {list(low)}..{list(high)} (opt {list(opt)})" for name, low, opt, high in profile
    )


def engine_record(directory: Path, graph: str, precision: str) -> dict[str, Any] | None:
    """The stored record of an engine, or None if there is none or it is unreadable."""
    try:
        record = json.loads((Path(directory) / f"{graph}.{precision}.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


Builder = Callable[[Path, EngineKey, Path], bytes]
"""(onnx file, key, timing-cache file) → serialised engine; raises BackendError when the build fails."""
Deserializer = Callable[[bytes], Any]
"""Serialised engine → engine object, or None when TensorRT rejects the bytes."""


class EngineCache:
    """Loads engines from ``directory`` or builds them, with a record per engine (see the module doc)."""

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        build: Builder,
        deserialize: Deserializer,
        log: logging.Logger = LOG,
    ):
        self.directory = Path(directory)
        self._build = build
        self._deserialize = deserialize
        self.log = log

    def engine_path(self, graph: str, precision: str) -> Path:
        return self.directory / f"{graph}.{precision}.engine"

    def record_path(self, graph: str, precision: str) -> Path:
        return self.directory / f"{graph}.{precision}.json"  # read by engine_record

    def timing_cache_path(self, key: EngineKey) -> Path:
        return self.directory / f"timing-{key.tensorrt}-sm{key.compute_capability.replace('.', '')}.cache"

    def record(self, graph: str, precision: str) -> dict[str, Any] | None:
        return engine_record(self.directory, graph, precision)

    def stale_reason(self, key: EngineKey) -> str | None:
        """Why the cached engine for ``key`` cannot be used (None: it can)."""
        engine = self.engine_path(key.graph, key.precision)
        if not engine.is_file():
            return "no cached engine"
        record = self.record(key.graph, key.precision)
        if record is None:
            return "its record is missing or unreadable"
        try:
            cached = EngineKey.from_dict(record["key"])
        except (KeyError, TypeError, ValueError) as error:
            return f"its record is malformed ({error})"
        changes = cached.differences(key)
        if changes:
            return "changed since it was built: " + "; ".join(changes)
        if file_sha256(engine) != record.get("engine_sha256"):
            return "the engine file is corrupt (its sha256 differs from its record)"
        return None

    def current_digests(self, keys: Mapping[str, EngineKey]) -> dict[str, str] | None:
        """Graph → sha256 of its cached engine when every engine of ``keys`` is built for exactly its key and
        intact (what a start would load without building), else None."""
        digests = {}
        for graph, key in keys.items():
            if self.stale_reason(key) is not None:
                return None
            digests[graph] = self.record(key.graph, key.precision)["engine_sha256"]
        return digests

    def load(self, key: EngineKey, onnx_path: Path) -> Any:
        """The engine for ``key``: the cached one if valid, else a fresh build (stored for next time)."""
        reason = self.stale_reason(key)
        if reason is None:
            engine, problem = self._read(self.engine_path(key.graph, key.precision).read_bytes())
            if engine is not None:
                self.log.info("loaded TensorRT engine %s (%s)", key.graph, key.precision)
                return engine
            reason = f"TensorRT could not deserialise the cached engine{problem}"
        self.log.warning("building TensorRT engine %s (%s): %s", key.graph, key.precision, reason)
        return self._rebuild(key, onnx_path)

    def _read(self, data: bytes) -> tuple[Any, str]:
        """(engine or None, why not)."""
        try:
            return self._deserialize(data), ""
        except Exception as error:  # TensorRT may raise instead of returning None on bad bytes
            return None, f" ({error})"

    def _rebuild(self, key: EngineKey, onnx_path: Path) -> Any:
        self.directory.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        data = self._build(onnx_path, key, self.timing_cache_path(key))
        seconds = time.perf_counter() - start
        engine_path = self.engine_path(key.graph, key.precision)
        write_atomic(engine_path, data)
        record = {
            "key": key.to_dict(),
            "key_digest": key.digest(),
            "engine_sha256": hashlib.sha256(data).hexdigest(),
            "engine_bytes": len(data),
            "build_seconds": round(seconds, 1),
            "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        write_atomic(self.record_path(key.graph, key.precision), json.dumps(record, indent=2).encode())
        self.log.info(
            "built TensorRT engine %s (%s, %.1f MB) in %.0f s",
            key.graph,
            key.precision,
            len(data) / 1e6,
            seconds,
        )
        engine, problem = self._read(data)
        if engine is None:
            raise BackendError(
                f"TensorRT built the {key.precision} engine for {key.graph} but cannot deserialise it"
                f"{problem}; see the TensorRT errors above ({engine_path})"
            )
        return engine
