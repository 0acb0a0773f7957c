"""fp16 engines are trusted only after they agree with fp32 on real frames.

fp16 TensorRT builds of ViTs are known to go wrong silently (LayerNorm after attention overflowing; e.g.
TensorRT issues #4723, #4355, #2564). ``check_fp16`` runs the whole pipeline with fp32 and with fp16 engines
on the sample frames (``fourm_ros.sample``) and compares what users get:

=========================== ======================================================= ==================
metric                      meaning                                                  pass if
=========================== ======================================================= ==================
dense_token_agreement       equal depth / normal / segmentation tokens (all grids)   >= 0.97
sequence_token_agreement    equal caption / pose ids, position by position           >= 0.90
segmentation_agreement      equal class per pixel                                    >= 0.97
depth_mean_abs_error        mean |Δ| of standardised relative depth (unit spread)    <= 0.05
normals_mean_angle_deg      mean angle between the unit normals                      <= 3.0
=========================== ======================================================= ==================

The sequence threshold is lower because greedy decoding amplifies one flipped near-tie into a different
continuation. The thresholds are initial values, not yet calibrated on a device with real weights.
The result is stored next to the engines (``tensorrt/fp16_check.json``) together with the sha256 of every
fp16 engine it checked. ``planned_precision`` (used by the backend factory before it builds anything) runs
fp16 engines only with a passing result for exactly those engines, or when ``engines.allow_unverified_fp16``
is set; otherwise the fp32 engines run and the log says why.
"""

from __future__ import annotations

import gc
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from fourm_ros.backends.export import write_atomic

if TYPE_CHECKING:
    from fourm_ros.pipeline.config import EnginesConfig, PipelineConfig
    from fourm_ros.pipeline.results import Results

LOG = logging.getLogger("fourm_ros.fp16_check")
REPORT_NAME = "fp16_check.json"
BUILD_COMMAND = "ros2 run fourm_ros fourm-ros build-engines"
"""The command that builds the engines and runs the check (``fourm-ros build-engines`` in a pip venv)."""
_PAD_ID = 0


@dataclass(frozen=True)
class Fp16Thresholds:
    dense_token_agreement: float = 0.97
    sequence_token_agreement: float = 0.90
    segmentation_agreement: float = 0.97
    depth_mean_abs_error: float = 0.05
    normals_mean_angle_deg: float = 3.0

    def failures(self, metrics: Mapping[str, float]) -> list[str]:
        """``metric value vs threshold`` for every metric outside its threshold."""
        found = []
        for name, limit in asdict(self).items():
            if name not in metrics:
                continue
            value, lower_is_better = metrics[name], name.endswith(("error", "deg"))
            if (value > limit) if lower_is_better else (value < limit):
                found.append(f"{name} {value:.4f} {'>' if lower_is_better else '<'} {limit}")
        return found


@dataclass
class Fp16Report:
    metrics: dict[str, float]
    failures: list[str]
    frames: int
    thresholds: dict[str, float] = field(default_factory=lambda: asdict(Fp16Thresholds()))
    engines: dict[str, str] = field(default_factory=dict)
    """Graph → sha256 of the fp16 engine that was checked."""
    created: str = ""

    @property
    def passed(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        values = ", ".join(f"{name} {value:.4f}" for name, value in self.metrics.items())
        verdict = "PASSED" if self.passed else "FAILED (" + "; ".join(self.failures) + ")"
        return f"fp16 check on {self.frames} frames {verdict}: {values}"


def _agreement(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    return int(np.count_nonzero(a == b)), a.size


def _sequence_agreement(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """Equal ids over the positions where either sequence has a token (pads on both sides don't count)."""
    length = max(len(a), len(b))
    a, b = (np.pad(x, (0, length - len(x)), constant_values=_PAD_ID) for x in (a, b))
    used = (a != _PAD_ID) | (b != _PAD_ID)
    return int(np.count_nonzero((a == b) & used)), int(np.count_nonzero(used))


def compare_results(
    reference: Sequence[Results], candidate: Sequence[Results], thresholds: Fp16Thresholds | None = None
) -> Fp16Report:
    """Agreement of ``candidate`` (fp16) with ``reference`` (fp32) results of the same frames."""
    if len(reference) != len(candidate):
        raise ValueError(f"need results of the same frames, got {len(reference)} and {len(candidate)}")
    thresholds = thresholds or Fp16Thresholds()
    counts: dict[str, list[int]] = {}
    sums: dict[str, list[float]] = {}

    def count(name: str, hits_total: tuple[int, int]) -> None:
        entry = counts.setdefault(name, [0, 0])
        entry[0] += hits_total[0]
        entry[1] += hits_total[1]

    def average(name: str, values: np.ndarray) -> None:
        entry = sums.setdefault(name, [0.0, 0])
        entry[0] += float(values.sum())
        entry[1] += values.size

    for ref, cand in zip(reference, candidate, strict=True):
        for name, tokens in ref.tokens.items():
            other = cand.tokens[name]
            if tokens.ndim == 2:
                count("dense_token_agreement", _agreement(tokens, other))
            else:
                count("sequence_token_agreement", _sequence_agreement(tokens, other))
        if ref.labels is not None:
            count("segmentation_agreement", _agreement(ref.labels, cand.labels))
        if ref.depth is not None:
            average("depth_mean_abs_error", np.abs(ref.depth.astype(np.float64) - cand.depth))
        if ref.normals is not None:
            valid = (np.linalg.norm(ref.normals, axis=-1) > 0) & (np.linalg.norm(cand.normals, axis=-1) > 0)
            cosine = np.clip(np.sum(ref.normals.astype(np.float64) * cand.normals, axis=-1), -1.0, 1.0)
            average("normals_mean_angle_deg", np.degrees(np.arccos(cosine[valid])))
    metrics = {name: hits / total if total else 1.0 for name, (hits, total) in counts.items()}
    metrics.update({name: total / n if n else 0.0 for name, (total, n) in sums.items()})
    return Fp16Report(
        metrics=metrics,
        failures=thresholds.failures(metrics),
        frames=len(reference),
        thresholds=asdict(thresholds),
        created=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    )


def store_report(report: Fp16Report, engine_dir: Path, engines: Mapping[str, str]) -> Path:
    """Write the report next to the engines, bound to the sha256 of each checked fp16 engine."""
    report.engines = dict(engines)
    path = Path(engine_dir) / REPORT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(asdict(report), indent=2, sort_keys=True).encode())
    return path


def load_report(engine_dir: Path) -> Fp16Report | None:
    try:
        return Fp16Report(**json.loads((Path(engine_dir) / REPORT_NAME).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def unverified_reason(engine_dir: Path, engines: Mapping[str, str]) -> str | None:
    """Why the fp16 engines with these sha256 are not verified (None: a passing check covers them all)."""
    report = load_report(engine_dir)
    if report is None:
        return "they were never checked against fp32"
    if report.engines != dict(engines):
        return "they were rebuilt after the last fp16 check"
    if not report.passed:
        return "they FAILED the fp16 check: " + "; ".join(report.failures)
    return None


def planned_precision(
    settings: EnginesConfig, engine_dir: Path, fp16_engines: Mapping[str, str] | None
) -> tuple[str, str]:
    """The precision a start runs (``fp16`` or ``fp32``) and why, decided BEFORE any engine is built, so
    that no start builds fp16 engines only to refuse them. fp16 runs when configured and either verified by
    a passing check of exactly the current fp16 engines (``fp16_engines``: graph → sha256, None when they
    are not all built) or allowed unverified; otherwise the fp32 engines run, and the reason says how to
    get fp16."""
    if settings.precision == "fp32":
        return "fp32", "engines.precision is fp32"
    if settings.allow_unverified_fp16:
        return "fp16", "UNVERIFIED fp16 engines (engines.allow_unverified_fp16 is true)"
    reason = "they are not built yet" if fp16_engines is None else unverified_reason(engine_dir, fp16_engines)
    if reason is None:
        return "fp16", "the fp16 engines passed the fp16 check"
    return "fp32", (
        f"fp32 engines instead of fp16: the fp16 engines are not verified ({reason}); `{BUILD_COMMAND}` "
        "builds and checks them (or set engines.precision: fp32, or engines.allow_unverified_fp16: true)"
    )


def run_frames(pipeline: Any, frames: Sequence[np.ndarray], batch: int) -> list[Results]:
    """The pipeline's results for ``frames``, ``batch`` frames per call."""
    results = []
    for start in range(0, len(frames), batch):
        results.extend(pipeline(list(frames[start : start + batch])))
    return results


def check_fp16(
    config: PipelineConfig,
    *,
    frames: Sequence[np.ndarray] | None = None,
    max_batch: int = 1,
    log: logging.Logger = LOG,
) -> Fp16Report:
    """Build (or load) fp32 and fp16 engines of the configured job, compare them on the sample frames and
    store the result next to the fp16 engines. Needs TensorRT and a CUDA GPU."""
    import torch

    from fourm_ros.backends import job
    from fourm_ros.backends.tensorrt_backend import engine_directory, require_tensorrt, tensorrt_backend
    from fourm_ros.pipeline.pipeline import Pipeline
    from fourm_ros.sample import sample_frames

    require_tensorrt(job.tensorrt_device(config))  # fail before the long export
    config = job.float32(config)
    components, manifest = job.export_for(config, log=log)
    profile = job.batch_profile(config, max_batch)
    device = job.tensorrt_device(config)
    frames = [frame.rgb for frame in sample_frames()] if frames is None else list(frames)
    results = []
    for precision in ("fp32", "fp16"):
        backend = tensorrt_backend(
            manifest,
            precision=precision,
            workspace_mb=config.engines.workspace_mb,
            profile=profile,
            device=device,
        )
        results.append(run_frames(Pipeline(config, components, backend), frames, max_batch))
        del backend  # one set of engines in memory at a time: an 8 GB Orin may not hold both
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # the freed buffers, back from torch's cache to the driver
    report = compare_results(*results)
    path = store_report(report, engine_directory(manifest), job.engine_digests(manifest, "fp16"))
    (log.info if report.passed else log.error)("%s (stored in %s)", report.summary(), path)
    return report
