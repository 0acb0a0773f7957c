"""ONNX export of a job's graphs: one .onnx file per graph, a manifest, and a cache that reuses an export.

The exporter traces the graph modules of ``fourm_ros.backends.graphs`` (TorchScript-based exporter, opset
17 or newer, so LayerNorm becomes one LayerNormalization node that TensorRT maps to its normalisation
layer). Every axis is static except the batch (frames) axis and the persons axis of the pose graph, so
TensorRT can specialise its kernels and needs an optimisation profile only for those.

Weights are stored once: every initializer of every graph goes into one ``weights.bin`` (ONNX external
data), and a tensor that several graphs hold (the decoder in the dense, cross-K/V and step graphs) is
written once, found by its bytes, and referenced by offset from each graph. So the export takes about the
size of the weights on disk, and ONNX Runtime can map every weight once for all its sessions
(``fourm_ros.backends.onnxruntime_backend``).

An export is fully determined by the graphs' weights, their structure (targets, KV-cache lengths, I/O
specs), the opset and the torch / onnx / fourm_ros versions; ``export_key`` hashes exactly that, and
``cached_export`` keeps each export in ``<cache_dir>/export-<key>`` so a second start reuses it. The batch
profile is NOT part of the key: the ONNX batch axis is dynamic, only TensorRT engines depend on the profile
(their own cache key covers it). A manifest (``manifest.json``) records what was exported and the sha256 of
every file; a file that is missing or whose hash differs makes the export invalid and it is redone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
import os
import shutil
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import fourm_ros
from fourm_ros.backends.base import BackendError

LOG = logging.getLogger("fourm_ros.export")
OPSET = 17
MANIFEST_NAME = "manifest.json"
WEIGHTS_NAME = "weights.bin"
WEIGHT_ALIGNMENT = 64
"""Offsets of the weights in ``weights.bin``: cache-line aligned, so each is viewed in place, aligned."""
INLINE_BYTES = 1024
"""Initializers smaller than this stay inside the graph file (shapes, scalars, small biases)."""
TRACE_BATCH = 2
"""Frames in the traced example: 2, so no size-1 broadcast is baked into a graph whose batch is dynamic."""
_HASH_CHUNK = 1 << 22


class ExportFileError(BackendError):
    """An exported file is missing or cannot be loaded; exporting again fixes it."""


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _numpy_dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: name, dtype (numpy name) and shape (axis names for dynamic axes)."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]


@dataclass(frozen=True)
class GraphFile:
    """One exported graph: its file (and external weight file, if any), their hashes and its I/O."""

    name: str
    file: str
    sha256: str
    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    recurrent: Mapping[str, str] = field(default_factory=dict)
    data_file: str | None = None
    data_sha256: str | None = None


@dataclass
class Manifest:
    """What an export directory holds; ``directory`` is where it was read from (not stored)."""

    key: str
    model: str
    weights_sha256: str
    graphs: dict[str, GraphFile]
    key_fields: dict[str, Any]
    tasks: tuple[str, ...] = ()
    created: str = ""
    directory: Path = Path()

    def path(self, graph: str) -> Path:
        return self.directory / self.graphs[graph].file

    def to_json(self) -> str:
        data = asdict(self)
        del data["directory"]
        return json.dumps(data, indent=2, sort_keys=True)

    def save(self) -> None:
        write_atomic(self.directory / MANIFEST_NAME, self.to_json().encode())

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Manifest:
        """Read an export directory's ``manifest.json``; a missing or malformed one is a BackendError."""
        directory = Path(directory)
        path = directory / MANIFEST_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            graphs = {
                name: GraphFile(
                    **{
                        **graph,
                        "inputs": tuple(_tensor_info(item) for item in graph["inputs"]),
                        "outputs": tuple(_tensor_info(item) for item in graph["outputs"]),
                    }
                )
                for name, graph in data.pop("graphs").items()
            }
            return cls(**{**data, "tasks": tuple(data.get("tasks", ()))}, graphs=graphs, directory=directory)
        except FileNotFoundError as error:
            raise BackendError(f"{directory} is not an ONNX export: it has no {MANIFEST_NAME}") from error
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise BackendError(
                f"{path} is unreadable or malformed ({error}); delete {directory} to export again"
            ) from error

    def problems(self) -> list[str]:
        """Why the files on disk do not match the manifest (empty when every file is present and intact)."""
        found = []
        checked = set()  # the shared weights file is hashed once, not once per graph
        for graph in self.graphs.values():
            for name, digest in ((graph.file, graph.sha256), (graph.data_file, graph.data_sha256)):
                if name is None or name in checked:
                    continue
                checked.add(name)
                path = self.directory / name
                if not path.is_file():
                    found.append(f"{name} is missing")
                elif file_sha256(path) != digest:
                    found.append(f"{name} is corrupt (its sha256 differs from the manifest)")
        return found


def _tensor_info(data: Mapping[str, Any]) -> TensorInfo:
    return TensorInfo(data["name"], data["dtype"], tuple(data["shape"]))


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temporary file and rename, so a crash never leaves a half-written file under ``path``."""
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)


# ---------------------------------------------------------------------------------------------- key


def _dtype(graph: nn.Module) -> torch.dtype:
    return next(graph.parameters()).dtype


def graphs_dtype(graphs: Mapping[str, nn.Module]) -> torch.dtype:
    return _dtype(next(iter(graphs.values())))


def weights_fingerprint(graphs: Mapping[str, nn.Module]) -> str:
    """sha256 over every distinct weight tensor of the graphs (names, dtypes, shapes and bytes).

    Computed from the loaded modules rather than the checkpoint files, so it identifies real checkpoints,
    local fine-tunes and random weights alike, and only the parts of a checkpoint the job uses."""
    digest = hashlib.sha256()
    seen: set[tuple[int, torch.dtype, tuple[int, ...]]] = set()
    for graph_name in sorted(graphs):
        for name, tensor in graphs[graph_name].state_dict().items():
            identity = (tensor.data_ptr(), tensor.dtype, tuple(tensor.shape))
            if identity in seen:
                continue
            seen.add(identity)
            digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
            # flatten(): the values in logical order whatever the layout (channels-last conv weights).
            digest.update(tensor.detach().cpu().flatten().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def graph_structure(graph: nn.Module) -> dict[str, Any]:
    """What besides the weights determines a graph's export: its class, I/O spec, targets, cache length."""
    spec = graph.spec
    fields: dict[str, Any] = {
        "kind": type(graph).__name__,
        "inputs": list(spec.inputs),
        "outputs": list(spec.outputs),
        "dynamic_axes": {
            name: {str(k): v for k, v in axes.items()} for name, axes in spec.dynamic_axes.items()
        },
    }
    for attribute in ("targets", "target", "cache_length"):
        if hasattr(graph, attribute):
            value = getattr(graph, attribute)
            fields[attribute] = list(value) if isinstance(value, tuple) else value
    return fields


def export_key(
    graphs: Mapping[str, nn.Module], weights_sha256: str, opset: int = OPSET
) -> tuple[str, dict[str, Any]]:
    """The cache key of an export (sha256 hex) and the fields it hashes."""
    import onnx

    fields = {
        "weights_sha256": weights_sha256,
        "graphs": {name: graph_structure(graph) for name, graph in sorted(graphs.items())},
        "dtype": _numpy_dtype_name(graphs_dtype(graphs)),
        "opset": opset,
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "fourm_ros": fourm_ros.__version__,
    }
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest(), fields


# ---------------------------------------------------------------------------------------------- export


def _shape(tensor: torch.Tensor, axes: Mapping[int, str]) -> tuple[int | str, ...]:
    return tuple(axes.get(axis, size) for axis, size in enumerate(tensor.shape))


def torchscript_exporter_options(export: Callable[..., Any] = torch.onnx.export) -> dict[str, bool]:
    """Keyword arguments that select the traced (TorchScript) exporter: ``dynamo=False`` where ``export``
    has that keyword (torch >= 2.5; later releases default to dynamo), nothing on older torch (JetPack 6.0's
    2.4 wheels), which has only the traced exporter and raises TypeError on the keyword."""
    return {"dynamo": False} if "dynamo" in inspect.signature(export).parameters else {}


def _trace_to_onnx(graph: nn.Module, example: tuple[torch.Tensor, ...], path: Path, opset: int) -> None:
    spec = graph.spec
    with warnings.catch_warnings(), torch.no_grad():
        # Tracer notes about Python-side shape checks (static by design) and the exporter's deprecation
        # notice are expected; anything that matters fails the numeric checks of the tests instead.
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        torch.onnx.export(
            graph,
            example,
            str(path),
            input_names=list(spec.inputs),
            output_names=list(spec.outputs),
            dynamic_axes={name: dict(axes) for name, axes in spec.dynamic_axes.items()},
            opset_version=opset,
            do_constant_folding=True,
            **torchscript_exporter_options(),
        )


class SharedWeights:
    """One weights file for all graphs of an export: each distinct initializer is written once (found by
    its dtype and bytes) and every graph that holds it points at the same offset (ONNX external data)."""

    def __init__(self, path: Path):
        self.path = path
        self._handle = open(path, "wb")  # noqa: SIM115 (closed by close(), after the last graph)
        self._offsets: dict[tuple[int, bytes], int] = {}
        self.referenced_bytes = 0
        """Bytes of all external initializers of all graphs, shared ones counted once per graph."""

    def externalize(self, model: Any) -> bool:
        """Move ``model``'s initializers (above ``INLINE_BYTES``) into the file; True if any was moved."""
        from onnx import TensorProto, external_data_helper

        moved = False
        for tensor in model.graph.initializer:
            if not tensor.HasField("raw_data") or len(tensor.raw_data) < INLINE_BYTES:
                continue
            data = tensor.raw_data
            identity = (tensor.data_type, hashlib.sha256(data).digest())
            offset = self._offsets.get(identity)
            if offset is None:
                offset = -self._handle.tell() % WEIGHT_ALIGNMENT + self._handle.tell()
                self._handle.seek(offset)
                self._handle.write(data)
                self._offsets[identity] = offset
            self.referenced_bytes += len(data)
            external_data_helper.set_external_data(tensor, self.path.name, offset=offset, length=len(data))
            tensor.data_location = TensorProto.EXTERNAL
            tensor.ClearField("raw_data")
            moved = True
        return moved

    def close(self) -> int:
        """Finish the file; returns its size in bytes."""
        self._handle.close()
        return self.path.stat().st_size


def _save_sharing_weights(source: Path, target: Path, weights: SharedWeights) -> bool:
    """Re-save the traced model at ``source`` as ``target`` with its weights in ``weights``; True if the
    graph references the weights file."""
    import onnx

    model = onnx.load(str(source))  # above 2 GiB the tracer wrote external files next to it: loaded too
    moved = weights.externalize(model)
    onnx.save_model(model, str(target))
    return moved


def export_graphs(
    graphs: Mapping[str, nn.Module],
    directory: str | os.PathLike,
    *,
    model: str,
    weights_sha256: str | None = None,
    tasks: Sequence[str] = (),
    opset: int = OPSET,
    log: logging.Logger = LOG,
) -> Manifest:
    """Export every graph to ``<directory>/<name>.onnx``, their weights once into ``weights.bin``, and
    write the manifest; returns it. ``model`` names the checkpoint for humans (recorded, not hashed)."""
    if opset < 17:
        raise ValueError(f"opset must be >= 17 (LayerNormalization for TensorRT), got {opset}")
    other = {name: _dtype(graph) for name, graph in graphs.items() if _dtype(graph) != torch.float32}
    if other:
        found = ", ".join(f"{name} {_numpy_dtype_name(dtype)}" for name, dtype in sorted(other.items()))
        raise BackendError(
            f"ONNX export needs float32 weights, got {found}: TensorRT chooses its own precision "
            "(engines.precision) and ONNX Runtime runs float32; set dtype: float32 (dtype and precision.* "
            "are settings of the torch backend)"
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights_sha256 = weights_sha256 or weights_fingerprint(graphs)
    key, key_fields = export_key(graphs, weights_sha256, opset)
    files: dict[str, GraphFile] = {}
    shares: dict[str, bool] = {}
    weights = SharedWeights(directory / WEIGHTS_NAME)
    try:
        for name, graph in graphs.items():
            start = time.perf_counter()
            example = graph.example_inputs(TRACE_BATCH)
            with torch.no_grad():
                outputs = graph(*example)
            outputs = (outputs,) if isinstance(outputs, torch.Tensor) else tuple(outputs)
            target = directory / f"{name}.onnx"
            scratch = directory / f".trace-{name}"
            shutil.rmtree(scratch, ignore_errors=True)
            scratch.mkdir()
            try:
                _trace_to_onnx(graph, example, scratch / target.name, opset)
                shares[name] = _save_sharing_weights(scratch / target.name, target, weights)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
            axes = graph.spec.dynamic_axes
            files[name] = GraphFile(
                name=name,
                file=target.name,
                sha256=file_sha256(target),
                inputs=tuple(
                    TensorInfo(n, _numpy_dtype_name(t.dtype), _shape(t, axes.get(n, {})))
                    for n, t in zip(graph.spec.inputs, example, strict=True)
                ),
                outputs=tuple(
                    TensorInfo(n, _numpy_dtype_name(t.dtype), _shape(t, axes.get(n, {})))
                    for n, t in zip(graph.spec.outputs, outputs, strict=True)
                ),
                recurrent=dict(graph.spec.recurrent),
            )
            log.info("exported %s in %.1f s", target.name, time.perf_counter() - start)
    finally:
        size = weights.close()
    data_sha256 = file_sha256(weights.path)
    files = {
        name: dataclasses.replace(file, data_file=WEIGHTS_NAME, data_sha256=data_sha256)
        if shares[name]
        else file
        for name, file in files.items()
    }
    log.info(
        "%s: %.1f MB for %.1f MB of graph weights (shared tensors stored once)",
        WEIGHTS_NAME,
        size / 1e6,
        weights.referenced_bytes / 1e6,
    )
    manifest = Manifest(
        key=key,
        model=model,
        weights_sha256=weights_sha256,
        graphs=files,
        key_fields=key_fields,
        tasks=tuple(tasks),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        directory=directory,
    )
    manifest.save()
    return manifest


def export_directory(cache_dir: str | os.PathLike, key: str) -> Path:
    """Where the export with ``key`` lives inside the cache."""
    return Path(cache_dir).expanduser() / f"export-{key[:16]}"


def cached_export(
    graphs: Mapping[str, nn.Module],
    cache_dir: str | os.PathLike,
    *,
    model: str,
    tasks: Sequence[str] = (),
    opset: int = OPSET,
    log: logging.Logger = LOG,
) -> Manifest:
    """The export of ``graphs`` in ``cache_dir``: reused when present and intact, else (re)exported.

    A new export is written to a temporary directory and renamed into place, so an interrupted export or
    two processes exporting at once never leave a half-written export under the final name."""
    weights_sha256 = weights_fingerprint(graphs)
    key, _ = export_key(graphs, weights_sha256, opset)
    directory = export_directory(cache_dir, key)
    if directory.exists():
        reason = _reuse_problem(directory, key)
        if reason is None:
            log.info("reusing the ONNX export in %s", directory)
            return Manifest.load(directory)
        log.warning("ONNX export in %s is not usable (%s); exporting again", directory, reason)
        shutil.rmtree(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    partial = directory.with_name(f".{directory.name}.{os.getpid()}.partial")
    shutil.rmtree(partial, ignore_errors=True)
    log.info("exporting %d graphs of %s to ONNX (opset %d) in %s", len(graphs), model, opset, directory)
    start = time.perf_counter()
    try:
        export_graphs(
            graphs, partial, model=model, weights_sha256=weights_sha256, tasks=tasks, opset=opset, log=log
        )
        try:
            os.rename(partial, directory)
        except OSError:  # another process finished the same export first: use theirs
            if _reuse_problem(directory, key) is not None:
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    log.info("ONNX export finished in %.1f s", time.perf_counter() - start)
    return Manifest.load(directory)


def _reuse_problem(directory: Path, key: str) -> str | None:
    try:
        manifest = Manifest.load(directory)
    except BackendError as error:
        return str(error)
    if manifest.key != key:
        return "its manifest has a different key"
    problems = manifest.problems()
    return "; ".join(problems) if problems else None
