"""The weights a job needs: which checkpoints, downloading them, and building the modules.

A job needs the 4M-21 model (with only the embeddings/heads of its tasks) and one tokenizer decoder per
enabled map or pose task. ``download`` fetches exactly that set into the hub cache; ``load_components``
loads it strictly. Random weights are used only when the configuration asks for them, and then everything
downstream is flagged (``Components.random_weights``).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fourm_ros import checkpoint
from fourm_ros.backends.graphs import DENSE_TARGETS, SEQUENCE_TARGETS
from fourm_ros.model.config import FourMConfig
from fourm_ros.model.fourm import RGB, FourM
from fourm_ros.pipeline.config import PipelineConfig
from fourm_ros.tokenizers.divae import DiVAEConfig, DiVAEDecoder
from fourm_ros.tokenizers.human_pose import PoseDecoder, PoseTokenizerConfig
from fourm_ros.tokenizers.loading import official_config
from fourm_ros.tokenizers.semseg import SemsegConfig, SemsegDecoder

LOG = logging.getLogger("fourm_ros.weights")
TOKENIZER_TASKS = ("depth", "normals", "segmentation", "human_pose")
"""Tasks whose output needs a tokenizer decoder (the caption is plain WordPiece text)."""
RANDOM_WEIGHTS_WARNING = "RANDOM WEIGHTS: fourm_ros runs without trained weights; every output is meaningless"
_PRESET_SUFFIX = re.compile(r"_(B|L|XL)$")


@dataclass
class Components:
    """Everything a pipeline computes with, loaded once at start."""

    model: FourM
    depth: DiVAEDecoder | None
    normals: DiVAEDecoder | None
    segmentation: SemsegDecoder | None
    human_pose: PoseDecoder | None
    random_weights: bool
    model_name: str


def model_outputs(config: PipelineConfig) -> tuple[str, ...]:
    """The 4M-21 modalities the enabled tasks decode (dense targets first)."""
    tasks = config.tasks.enabled
    dense = [DENSE_TARGETS[task] for task in DENSE_TARGETS if task in tasks]
    return (*dense, *(SEQUENCE_TARGETS[task] for task in SEQUENCE_TARGETS if task in tasks))


def model_inputs(config: PipelineConfig) -> tuple[str, ...]:
    """The 4M-21 encoder inputs: the image, and each enabled sequence target, whose [S_1] conditions its
    generation (see ``FourM.sequence_context``)."""
    tasks = config.tasks.enabled
    return (RGB, *(SEQUENCE_TARGETS[task] for task in SEQUENCE_TARGETS if task in tasks))


def required_sources(config: PipelineConfig) -> dict[str, str]:
    """Component name → checkpoint (repo id or directory) for the enabled tasks."""
    tasks = config.tasks.enabled
    sources = {"model": config.model}
    sources.update({task: getattr(config.tokenizers, task) for task in TOKENIZER_TASKS if task in tasks})
    return sources


def download(config: PipelineConfig) -> dict[str, checkpoint.Checkpoint]:
    """Fetch every checkpoint the job needs into the hub cache (progress bars on stderr)."""
    return {
        name: checkpoint.resolve(source, cache_dir=config.cache_dir, offline=config.offline)
        for name, source in required_sources(config).items()
    }


def _dtype(config: PipelineConfig) -> torch.dtype:
    return getattr(torch, config.dtype)


def load_components(config: PipelineConfig) -> Components:
    """Load (or, if ``config.random_weights``, randomly initialise) the model and tokenizer decoders."""
    if config.random_weights:
        return random_components(config)
    dtype, device, tasks = _dtype(config), config.device, config.tasks.enabled
    where = {"cache_dir": config.cache_dir, "offline": config.offline, "dtype": dtype, "device": device}
    LOG.info("loading %s (%s)", config.model, ", ".join(model_outputs(config)))
    model = FourM.from_pretrained(
        config.model, inputs=model_inputs(config), outputs=model_outputs(config), **where
    )
    decoders: dict[str, nn.Module | None] = dict.fromkeys(TOKENIZER_TASKS)
    kinds = {
        "depth": DiVAEDecoder,
        "normals": DiVAEDecoder,
        "segmentation": SemsegDecoder,
        "human_pose": PoseDecoder,
    }
    for task in TOKENIZER_TASKS:
        if task in tasks:
            source = getattr(config.tokenizers, task)
            LOG.info("loading the %s tokenizer decoder %s", task, source)
            decoders[task] = kinds[task].from_pretrained(source, **where)
    return Components(model=model, **decoders, random_weights=False, model_name=str(config.model))


def _random_model_config(source: str) -> FourMConfig:
    directory = Path(source).expanduser()
    if (directory / checkpoint.CONFIG_NAME).is_file():
        return FourMConfig.from_dict(checkpoint.read_config(directory))
    match = _PRESET_SUFFIX.search(source)
    if match is None:
        raise checkpoint.CheckpointError(
            f"random_weights needs the architecture of {source!r}: give a 4M-21 repo id ending in _B, _L or "
            "_XL, or a local directory holding its config.json"
        )
    return FourMConfig.preset(match.group(1))


@torch.no_grad()
def randomize(module: nn.Module, seed: int) -> nn.Module:
    """Deterministic random weights for any decoder: weights N(0, 1/fan_in), norm weights 1, biases 0."""
    generator = torch.Generator().manual_seed(seed)
    for name, tensor in module.state_dict(keep_vars=True).items():
        leaf = name.rsplit(".", 1)[-1]
        if tensor.ndim >= 2:
            fan_in = tensor[0].numel()
            tensor.copy_(torch.randn(tensor.shape, generator=generator) / fan_in**0.5)
        elif leaf == "weight":
            tensor.fill_(1.0)
        else:
            tensor.zero_()
    return module


def random_components(config: PipelineConfig, seed: int = 0) -> Components:
    """The official architectures (or the local config.json's) with deterministic random weights."""
    dtype, device, tasks = _dtype(config), config.device, config.tasks.enabled
    model = FourM(
        _random_model_config(config.model),
        inputs=model_inputs(config),
        outputs=model_outputs(config),
        seed=seed,
        device=device,
        dtype=dtype,
    )

    def build(task: str) -> nn.Module | None:
        if task not in tasks:
            return None
        settings = official_config(task)
        with torch.device("meta"):
            if task in ("depth", "normals"):
                decoder = DiVAEDecoder(DiVAEConfig.from_json(settings, task))
            elif task == "segmentation":
                decoder = SemsegDecoder(SemsegConfig.from_json(settings, task))
            else:
                decoder = PoseDecoder(PoseTokenizerConfig.from_dict(settings))
        decoder = randomize(decoder.to_empty(device="cpu"), seed)
        return decoder.to(device=device, dtype=dtype).eval().requires_grad_(False)

    decoders = {task: build(task) for task in TOKENIZER_TASKS}
    return Components(
        model=model.eval().requires_grad_(False),
        **decoders,
        random_weights=True,
        model_name=f"{config.model} (random weights)",
    )
