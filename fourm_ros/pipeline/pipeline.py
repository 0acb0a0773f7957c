"""The perception pipeline: RGB frames in, typed :class:`Results` out, on any backend.

Stages per batch of frames: preprocess → encoder (once) → one batched decoder pass for every dense target
→ tokenizer decoders (depth / normals DDIM, segmentation) → captions and human poses, each conditioned on
the image and its own [S_1] as 4M-21 generates them, by joint autoregression with a KV cache (every
``every_n_frames`` frames). The backend runs the tensor graphs; the loops and the
token/skeleton parsing live here, so every backend computes the same thing.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from time import perf_counter
from typing import Any

import numpy as np
import torch

from fourm_ros.backends.base import Backend
from fourm_ros.backends.graphs import DENSE_TARGETS, SEQUENCE_TARGETS
from fourm_ros.backends.job import job_graphs
from fourm_ros.backends.select import choose_backend, create_backend
from fourm_ros.backends.torch_backend import TorchBackend
from fourm_ros.heap import release_free_heap
from fourm_ros.model import generation
from fourm_ros.model.fourm import FIRST_SENTINEL_ID, FourM
from fourm_ros.pipeline.config import ConfigError, PipelineConfig, runtime_changes
from fourm_ros.pipeline.metric_depth import sensor_depth_to_grid
from fourm_ros.pipeline.preprocess import CropMap, preprocess
from fourm_ros.pipeline.results import PersonResult, Results
from fourm_ros.pipeline.weights import (
    RANDOM_WEIGHTS_WARNING,
    TOKENIZER_TASKS,
    Components,
    load_components,
    precision_note,
    resolve_precision,
)
from fourm_ros.tokenizers import divae, skeleton, text
from fourm_ros.tokenizers.ddim import DDIMSampler
from fourm_ros.tokenizers.depth_encoder import standardize_depth

LOG = logging.getLogger("fourm_ros.pipeline")
SensorDepth = Sequence[np.ndarray | None] | None
"""Per frame: registered sensor depth in metres (frame size, NaN = no return), or None."""
STOP_IDS = (text.EOS_ID, text.GENERATION_STOP_ID)


@dataclass(frozen=True)
class _Prepared:
    """A batch after preprocessing: model input [B, 3, 224, 224], crop maps and the 224 crops (uint8)."""

    rgb: np.ndarray
    crops: list[CropMap]
    grids: np.ndarray
    depth_tokens: np.ndarray | None = None
    """tok_depth@224 input ids [B, 196] when every frame came with usable sensor depth."""


def _take(prepared: _Prepared, rows: Sequence[int]) -> _Prepared:
    depth_tokens = None if prepared.depth_tokens is None else prepared.depth_tokens[list(rows)]
    return _Prepared(
        prepared.rgb[list(rows)], [prepared.crops[r] for r in rows], prepared.grids[list(rows)], depth_tokens
    )


@contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    """Adds the seconds spent in the block to ``timings[stage]``."""
    start = perf_counter()
    try:
        yield
    finally:
        timings[stage] = timings.get(stage, 0.0) + perf_counter() - start


class _GraphPoseDecoder:
    """The pose graph of a backend behind the ``decode(codes)`` interface the skeleton code expects."""

    def __init__(self, backend: Backend):
        self.backend = backend

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        rotations = self.backend.run("pose_rotations", codes=codes.numpy().astype(np.int64))["rotations"]
        return torch.from_numpy(self.backend.to_numpy(rotations))


class Pipeline:
    """Runs the enabled tasks of ``config`` on batches of frames. Build it once; call it per batch."""

    def __init__(self, config: PipelineConfig, components: Components, backend: Backend | None = None):
        self.config = config
        self.tasks = config.tasks.enabled
        self.random_weights = components.random_weights
        self.model_name = components.model_name
        self._model_config = components.model.config
        self._dense = tuple(task for task in DENSE_TARGETS if task in self.tasks)
        self._sequences = tuple(task for task in SEQUENCE_TARGETS if task in self.tasks)
        decoders = {
            task: getattr(components, task) if task in self.tasks else None for task in TOKENIZER_TASKS
        }
        missing = [task for task, decoder in decoders.items() if task in self.tasks and decoder is None]
        if missing:
            raise ValueError(f"tasks {missing} are enabled but their tokenizer decoders were not loaded")
        self._diffusion_tasks = tuple(task for task in ("depth", "normals") if task in self.tasks)
        self._samplers = {
            task: DDIMSampler(
                decoders[task].config.num_train_timesteps,
                zero_terminal_snr=decoders[task].config.zero_terminal_snr,
                clip_sample=decoders[task].config.clip_sample,
            )
            for task in self._diffusion_tasks
        }
        self._channels = {task: decoders[task].config.n_channels for task in self._diffusion_tasks}
        if backend is None:
            backend = TorchBackend(job_graphs(config, components), config.device)
            backend.selection_reason = "torch: the pipeline was built from given components (no selection)"
        self.backend = backend
        # Only the torch backend computes with the torch modules; other backends keep their own copies,
        # so the pipeline holds on to the modules (gigabytes) only when it runs on torch.
        self._model: FourM | None = components.model if self.backend.name == "torch" else None
        self._skeleton = (
            skeleton.SmplSkeleton.from_npz(config.smpl_model)
            if config.smpl_model
            else skeleton.GenericSkeleton()
        )
        self._pose_decoder = _GraphPoseDecoder(self.backend)
        self._depth_input = components.depth_encoder is not None
        self._frames_seen = 0  # every_n_frames counts frames across calls of __call__
        # Sequence sampling (temperature > 0): one generator per task, so a task's ids do not depend on
        # which other tasks run with it.
        self._generators = {
            task: torch.Generator().manual_seed(index) for index, task in enumerate(SEQUENCE_TARGETS)
        }
        if self.random_weights:
            LOG.warning(RANDOM_WEIGHTS_WARNING)
        if self._sampled_dense and self._depth_input:
            raise ValueError(
                "inputs: [rgb, depth] conditions the one-pass dense decoder; dense_decoding with steps > 1, "
                "temperature > 0 or cfg_scale != 1 samples from rgb alone: keep the dense_decoding defaults"
            )
        if self._sampled_dense and self.backend.name != "torch":
            raise ValueError(
                "dense_decoding with steps > 1, temperature > 0 or cfg_scale != 1 runs on the torch backend "
                f"only; set backend: torch or keep the defaults (got backend {self.backend.name})"
            )

    @classmethod
    def from_config(
        cls, config: PipelineConfig, on_stage: Callable[[str], None] = lambda stage: None
    ) -> Pipeline:
        """Load the weights the configuration names and build the pipeline on the configured backend.
        ``on_stage`` hears each start-up stage as it begins (it can take minutes: a node reports it)."""
        if config.threads:
            torch.set_num_threads(config.threads)
        on_stage("loading weights")
        backend_name = choose_backend(config)[0]
        note = precision_note(config, backend_name)
        config = resolve_precision(config, backend_name)
        components = load_components(config)
        backend = create_backend(
            config,
            job_graphs(config, components),
            model_id=components.model_name,
            max_batch=config.engines.max_batch,
            on_stage=on_stage,
            release_exported=True,  # an exported backend never computes with the torch copies again
            precision_note=note,
        )
        pipeline = cls(config, components, backend)
        release_free_heap()  # what loading and exporting freed; see fourm_ros.heap
        return pipeline

    def reconfigure(self, config: PipelineConfig) -> list[str]:
        """Switch to ``config`` between calls; returns the changed setting paths. Only settings marked
        ``runtime`` may differ, and a sequence's ``max_tokens`` only on torch (the exported step graphs
        have a KV cache of fixed length); anything else is a ConfigError and nothing changes."""
        changed = runtime_changes(self.config, config)
        fixed_cache = [
            path for path in changed if path.endswith(".max_tokens") and self.backend.name != "torch"
        ]
        if fixed_cache:
            raise ConfigError(
                f"{', '.join(fixed_cache)}: the {self.backend.name} backend runs step graphs exported with a "
                "KV cache of that length; restart the node to change it"
            )
        self.config = config
        return changed

    @property
    def _sampled_dense(self) -> bool:
        settings = self.config.dense_decoding
        return bool(self._dense) and (
            settings.steps > 1 or settings.temperature > 0 or settings.cfg_scale != 1
        )

    def describe(self) -> str:
        return f"{self.model_name} on {self.backend.describe()}; tasks: {', '.join(self.tasks)}"

    @property
    def takes_depth(self) -> bool:
        """True when the model is conditioned on sensor depth too (``inputs: [rgb, depth]``)."""
        return self._depth_input

    @property
    def dense_tasks(self) -> tuple[str, ...]:
        """The enabled dense tasks (depth, normals, segmentation): the node's frame-rate lane."""
        return self._dense

    @property
    def sequence_tasks(self) -> tuple[str, ...]:
        """The enabled sequence tasks (caption, human_pose): autoregressive, the node's slower lane."""
        return self._sequences

    def __call__(self, frames: Sequence[np.ndarray], depth: SensorDepth = None) -> list[Results]:
        """Results for each frame (several frames, e.g. several cameras, run as one batch): every dense task,
        and each sequence task on the frames it is due (``every_n_frames`` counts frames, not calls).

        ``depth``: with ``inputs: [rgb, depth]``, each frame's registered sensor depth in metres (frame
        size, NaN = no return; see ``fourm_ros.pipeline.metric_depth``), conditioning every task on it."""
        timings: dict[str, float] = {}
        prepared = self._prepare(frames, timings, depth)
        fields = self._new_fields(len(frames))
        if self._dense:
            self._run_dense(prepared, fields, timings)
        due: dict[tuple[str, ...], list[int]] = {}
        for b in range(len(frames)):
            index, self._frames_seen = self._frames_seen, self._frames_seen + 1
            tasks = tuple(
                task
                for task in self._sequences
                if index % getattr(self.config.tasks, task).every_n_frames == 0
            )
            if tasks:
                due.setdefault(tasks, []).append(b)
        for tasks, rows in due.items():
            sub_fields = self._new_fields(len(rows))
            self._run_sequences(_take(prepared, rows), tasks, sub_fields, timings)
            for row, sub in zip(rows, sub_fields, strict=True):
                fields[row]["tokens"].update(sub.pop("tokens"))
                fields[row].update(sub)
        return self._results(prepared, fields, timings)

    def dense(self, frames: Sequence[np.ndarray], depth: SensorDepth = None) -> list[Results]:
        """Only the dense tasks of each frame (sequence fields stay None); ``depth`` as in ``__call__``."""
        timings: dict[str, float] = {}
        prepared = self._prepare(frames, timings, depth)
        fields = self._new_fields(len(frames))
        if self._dense:
            self._run_dense(prepared, fields, timings)
        return self._results(prepared, fields, timings)

    def sequences(
        self,
        frames: Sequence[np.ndarray],
        tasks: Sequence[str] | None = None,
        depth: SensorDepth = None,
        pause: Callable[[], None] | None = None,
    ) -> list[Results]:
        """Only the sequence tasks ``tasks`` (default: every enabled one) of each frame, whatever
        ``every_n_frames`` says: the caller decides which frames are due (dense fields stay None).
        ``pause`` is called before each generation step, so a caller can yield the CPU to other work."""
        tasks = self._sequences if tasks is None else tuple(tasks)
        unknown = [task for task in tasks if task not in self._sequences]
        if unknown:
            raise ValueError(f"sequence tasks {unknown} are not enabled; enabled: {list(self._sequences)}")
        timings: dict[str, float] = {}
        prepared = self._prepare(frames, timings, depth)
        fields = self._new_fields(len(frames))
        self._run_sequences(prepared, tasks, fields, timings, pause)
        return self._results(prepared, fields, timings)

    def _prepare(
        self, frames: Sequence[np.ndarray], timings: dict[str, float], depth: SensorDepth
    ) -> _Prepared:
        with _timed(timings, "preprocess"):
            prepared = _Prepared(*preprocess(frames))
        if depth is None:
            return prepared
        if not self._depth_input:
            raise ValueError(
                "sensor depth was given but the pipeline's inputs are [rgb]; set inputs: [rgb, depth]"
            )
        if len(depth) != len(frames):
            raise ValueError(
                f"got {len(depth)} depth images for {len(frames)} frames; give one per frame (or None)"
            )
        with _timed(timings, "depth_tokenizer"):
            grids = [
                None if item is None else sensor_depth_to_grid(item, crop)
                for item, crop in zip(depth, prepared.crops, strict=True)
            ]
            if any(grid is None or not np.isfinite(grid).any() for grid in grids):
                return prepared  # a frame without usable depth: the batch is conditioned on rgb alone
            standardized = np.stack([standardize_depth(grid) for grid in grids])[:, None]
            tokens = self.backend.run("depth_tokenizer", depth=standardized)["depth_tokens"]
        return dataclasses.replace(prepared, depth_tokens=self.backend.to_numpy(tokens).astype(np.int64))

    def _context(self, prepared: _Prepared) -> Any:
        """The encoder's context of the batch: rgb, plus the depth tokens when the batch has them."""
        if prepared.depth_tokens is None:
            return self.backend.run("encoder", rgb=prepared.rgb)["context"]
        return self.backend.run("rgbd_encoder", rgb=prepared.rgb, depth_tokens=prepared.depth_tokens)[
            "context"
        ]

    @staticmethod
    def _new_fields(batch: int) -> list[dict[str, Any]]:
        return [{"tokens": {}} for _ in range(batch)]

    def _results(
        self, prepared: _Prepared, fields: list[dict[str, Any]], timings: dict[str, float]
    ) -> list[Results]:
        return [
            Results(
                crop=crop,
                grid_rgb=grid,
                random_weights=self.random_weights,
                timings=dict(timings),
                conditioned_on=("rgb",) if prepared.depth_tokens is None else ("rgb", "depth"),
                **frame_fields,
            )
            for crop, grid, frame_fields in zip(prepared.crops, prepared.grids, fields, strict=True)
        ]

    def _run_dense(
        self, prepared: _Prepared, fields: list[dict[str, Any]], timings: dict[str, float]
    ) -> None:
        """Encoder, one batched dense decoder pass, then the tokenizer decoders of every dense task."""

        def put(name: str, values: Sequence[Any]) -> None:
            for frame_fields, value in zip(fields, values, strict=True):
                frame_fields[name] = value

        rgb = prepared.rgb
        context = None
        if not self._sampled_dense:
            with _timed(timings, "encoder"):
                context = self._context(prepared)
        with _timed(timings, "dense_decoder"):
            tokens = self._dense_tokens(rgb, context)
        for task, grid in tokens.items():
            for b, frame_fields in enumerate(fields):
                frame_fields["tokens"][DENSE_TARGETS[task]] = grid[b]
        for task in self._diffusion_tasks:
            with _timed(timings, f"{task}_decoder"):
                put(task, self._diffusion(task, tokens[task]))
        if "segmentation" in self._dense:
            with _timed(timings, "segmentation_decoder"):
                labels = self.backend.run("segmentation_labels", tokens=tokens["segmentation"])["labels"]
                put("labels", self.backend.to_numpy(labels).astype(np.uint8))

    def _run_sequences(
        self,
        prepared: _Prepared,
        tasks: Sequence[str],
        fields: list[dict[str, Any]],
        timings: dict[str, float],
        pause: Callable[[], None] | None = None,
    ) -> None:
        """Captions and human poses: each conditioned as 4M-21 generates it (its own encoder context with
        its [S_1], all targets in one encoder batch), then generated together, one decoder pass per step."""
        tasks = [task for task in self._sequences if task in tasks]  # the graphs' row order
        if not tasks:
            return
        select = np.array([self._sequences.index(task) for task in tasks], dtype=np.int64)
        with _timed(timings, "sequence_context"):
            if prepared.depth_tokens is None:
                cross_kv = self.backend.run("sequence_cross_kv", rgb=prepared.rgb, targets=select)
            else:  # RGB-D: every target's context also holds the frame's depth tokens
                cross_kv = self.backend.run(
                    "rgbd_sequence_cross_kv",
                    rgb=prepared.rgb,
                    depth_tokens=prepared.depth_tokens,
                    targets=select,
                )
            cross_kv = cross_kv["cross_kv"]
        with _timed(timings, "sequences"):
            generated = self._generate(tasks, cross_kv, len(fields), pause)
        for task, ids in generated.items():
            ids = ids.numpy()
            for b, frame_fields in enumerate(fields):
                frame_fields["tokens"][SEQUENCE_TARGETS[task]] = ids[b]
            if task == "caption":
                for frame_fields, row in zip(fields, ids, strict=True):
                    frame_fields["caption"] = text.caption_from_ids(row)
                continue
            with _timed(timings, "pose_decoder"):
                decoded = [
                    skeleton.persons_from_sequence(row, self._pose_decoder, self._skeleton) for row in ids
                ]
            for frame_fields, people, crop in zip(fields, decoded, prepared.crops, strict=True):
                frame_fields["persons"] = [PersonResult.from_decoded(p, crop) for p in people]

    def _dense_tokens(self, rgb: np.ndarray, context: Any) -> dict[str, np.ndarray]:
        """Token grids [B, 14, 14] per dense task: one batched argmax pass, or the sampled torch path."""
        names = [DENSE_TARGETS[task] for task in self._dense]
        if self._sampled_dense:
            tokens = self._sampled_tokens(torch.from_numpy(rgb), names)
        else:
            tokens = self.backend.to_numpy(self.backend.run("dense_decoder", context=context)["tokens"])
        side = round(tokens.shape[-1] ** 0.5)
        return {
            task: tokens[:, i].reshape(-1, side, side).astype(np.int64) for i, task in enumerate(self._dense)
        }

    def _sampled_tokens(self, rgb: torch.Tensor, names: Sequence[str]) -> np.ndarray:
        settings = self.config.dense_decoding
        generator = torch.Generator().manual_seed(settings.seed)
        device = next(self._model.parameters()).device
        tokens = [
            self._model.generate_image(
                rgb.to(device),
                name,
                steps=settings.steps,
                scheme=settings.scheme,
                temperature=settings.temperature,
                top_k=settings.top_k,
                top_p=settings.top_p,
                cfg_scale=settings.cfg_scale,
                generator=generator,
            ).cpu()
            for name in names
        ]
        return torch.stack(tokens, dim=1).numpy()

    def _diffusion(self, task: str, tokens: np.ndarray) -> np.ndarray:
        """Depth [B, H, W] or unit normals [B, H, W, 3] from token grids, with the task's DDIM settings."""
        settings = getattr(self.config.tasks, task)
        side = tokens.shape[-1] * 16
        shape = (tokens.shape[0], self._channels[task], side, side)

        def predict_x0(sample: torch.Tensor, timestep: int) -> torch.Tensor:
            out = self.backend.run(
                f"{task}_x0",
                tokens=tokens,
                sample=sample.numpy(),
                timestep=np.array([timestep], dtype=np.int64),
            )
            return torch.from_numpy(self.backend.to_numpy(out["x0"]))

        # The same seeded noise for every frame: results repeat and do not depend on the batch.
        noise = torch.randn((1, *shape[1:]), generator=torch.Generator().manual_seed(settings.seed))
        output = self._samplers[task].sample(
            predict_x0, shape, settings.diffusion_steps, noise=noise.expand(shape)
        )
        if task == "depth":
            return divae.relative_depth(output)
        return divae.optical_frame_normals(divae.unit_normals(output))

    def _generate(
        self,
        tasks: Sequence[str],
        cross_kv: Any,
        batch: int,
        pause: Callable[[], None] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Autoregressive ids [B, T] of each sequence task, all tasks in one batch through the shared step
        graph: rows target-major as in ``cross_kv``, one self-attention cache padded to the longest
        max_tokens; a task whose rows are all finished drops out (its rows leave the cache and cross K/V).
        Each task samples with its own generator, so the ids equal generating each task alone; ``pause``
        runs before every step (the node's lanes yield there)."""
        settings = {task: getattr(self.config.tasks, task) for task in tasks}
        cfg = self._model_config
        length = max(rule.max_tokens for rule in settings.values())
        shape = (cfg.decoder_depth, 2, len(tasks) * batch, cfg.num_heads, length, cfg.head_dim)
        cache: Any = np.zeros(shape, dtype=np.float32)
        running = list(tasks)
        run, to_numpy = self.backend.run, self.backend.to_numpy

        def embed(task: str, token: torch.Tensor, position: np.ndarray) -> np.ndarray:
            out = run(f"{SEQUENCE_TARGETS[task]}_embed", token=token.numpy(), position=position)
            return to_numpy(out["embedded"])

        def head(task: str, hidden: np.ndarray) -> torch.Tensor:
            out = run(f"{SEQUENCE_TARGETS[task]}_logits", hidden=hidden)
            return torch.from_numpy(to_numpy(out["logits"]))

        def step(tokens: dict[str, torch.Tensor], index: int) -> dict[str, torch.Tensor]:
            nonlocal cache, cross_kv, running
            if pause is not None:
                pause()
            if list(tokens) != running:  # a task finished: keep the rows of the others
                rows = np.concatenate([np.arange(batch) + running.index(task) * batch for task in tokens])
                cache, cross_kv = (
                    np.ascontiguousarray(to_numpy(value)[:, :, rows]) for value in (cache, cross_kv)
                )
                running = list(tokens)
            position = np.array([index], dtype=np.int64)
            embedded = np.concatenate([embed(task, token, position) for task, token in tokens.items()])
            out = run(
                "sequence_step", embedded=embedded, position=position, self_cache=cache, cross_kv=cross_kv
            )
            cache = out["next_cache"]
            hidden = to_numpy(out["hidden"])
            return {task: head(task, hidden[k * batch : (k + 1) * batch]) for k, task in enumerate(running)}

        start = torch.full((batch, 1), FIRST_SENTINEL_ID, dtype=torch.long)
        sampling = {
            task: generation.Sampling(rule.temperature, rule.top_k, rule.top_p, self._generators[task])
            for task, rule in settings.items()
        }
        return generation.autoregress_jointly(
            step,
            dict.fromkeys(tasks, start),
            {task: rule.max_tokens for task, rule in settings.items()},
            STOP_IDS,
            text.PAD_ID,
            sampling,
        )
