"""The weights a job needs: which checkpoints, downloading them, and building the modules.

A job needs the 4M-21 model (with only the embeddings/heads of its tasks) and one tokenizer decoder per
enabled map or pose task. ``download`` fetches exactly that set into the hub cache; ``load_components``
loads it strictly. Random weights are used only when the configuration asks for them, and then everything
downstream is flagged (``Components.random_weights``).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from fourm_ros import checkpoint
from fourm_ros.backends.graphs import DENSE_TARGETS, SEQUENCE_TARGETS
from fourm_ros.model.config import FourMConfig
from fourm_ros.model.fourm import FourM
from fourm_ros.pipeline.config import PipelineConfig
from fourm_ros.tokenizers.depth_encoder import DepthEncoder, DepthEncoderConfig
from fourm_ros.tokenizers.divae import DiVAEConfig, DiVAEDecoder
from fourm_ros.tokenizers.human_pose import PoseDecoder, PoseTokenizerConfig
from fourm_ros.tokenizers.loading import materialize, official_config
from fourm_ros.tokenizers.semseg import SemsegConfig, SemsegDecoder

LOG = logging.getLogger("fourm_ros.weights")
INPUT_MODALITIES = {"rgb": "rgb@224", "depth": "tok_depth@224"}
"""``inputs`` entry → the 4M-21 modality it enters the encoder as."""
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
    depth_encoder: DepthEncoder | None = None
    """The depth tokenizer's encoder half, when ``inputs`` include depth."""


def model_outputs(config: PipelineConfig) -> tuple[str, ...]:
    """The 4M-21 modalities the enabled tasks decode (dense targets first)."""
    tasks = config.tasks.enabled
    dense = [DENSE_TARGETS[task] for task in DENSE_TARGETS if task in tasks]
    return (*dense, *(SEQUENCE_TARGETS[task] for task in SEQUENCE_TARGETS if task in tasks))


def model_inputs(config: PipelineConfig) -> tuple[str, ...]:
    """The 4M-21 encoder inputs: the modalities of ``config.inputs``, and each enabled sequence target,
    whose [S_1] conditions its generation (see ``FourM.sequence_context``)."""
    tasks = config.tasks.enabled
    return (
        *(INPUT_MODALITIES[name] for name in config.inputs),
        *(SEQUENCE_TARGETS[task] for task in SEQUENCE_TARGETS if task in tasks),
    )


def required_sources(config: PipelineConfig) -> dict[str, str]:
    """Component name → checkpoint (repo id or directory) for the enabled tasks."""
    tasks = config.tasks.enabled
    sources = {"model": config.model}
    sources.update({task: getattr(config.tokenizers, task) for task in TOKENIZER_TASKS if task in tasks})
    if "depth" in config.inputs:
        sources["depth_encoder"] = config.tokenizers.depth
    return sources


def download(config: PipelineConfig) -> dict[str, checkpoint.Checkpoint]:
    """Fetch every checkpoint the job needs into the hub cache (progress bars on stderr)."""
    return {
        name: checkpoint.resolve(source, cache_dir=config.cache_dir, offline=config.offline)
        for name, source in required_sources(config).items()
    }


PRECISION_TASKS = ("depth", "normals", "segmentation")
"""Tasks with a ``precision`` setting: their decoders produce continuous outputs (maps, class scores)."""
CPU_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16", "bf16"})
"""/proc/cpuinfo flags of native bfloat16 matmul: x86 AVX-512 BF16 or AMX, Arm v8.6 BF16."""


def _dtype(config: PipelineConfig) -> torch.dtype:
    return getattr(torch, config.dtype)


@functools.cache
def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (elsewhere bf16 is emulated, slower than float32)."""
    try:
        lines = Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines()
    except OSError:
        return False
    flags = next(
        (line.partition(":")[2].split() for line in lines if line.startswith(("flags", "Features"))), []
    )
    return not CPU_BF16_FLAGS.isdisjoint(flags)


def stage_dtype(config: PipelineConfig, task: str, backend: str = "torch") -> torch.dtype:
    """The dtype ``task``'s tokenizer decoder computes in when ``backend`` runs the job.

    ``precision.<task>: auto`` is bfloat16 only where the stage runs on a CPU that computes bf16 natively
    (a TensorRT job keeps it on the GPU, in the engine's precision); tasks without a precision setting
    follow ``dtype``."""
    if task not in PRECISION_TASKS:
        return _dtype(config)
    chosen = getattr(config.precision, task)
    if chosen == "auto":
        on_cpu = config.device == "cpu" and backend != "tensorrt"
        return torch.bfloat16 if on_cpu and cpu_has_native_bfloat16() else torch.float32
    return getattr(torch, chosen)


def precision_note(config: PipelineConfig, backend: str) -> str:
    """What ``precision: auto`` chose for the enabled stages on a CPU, and why (empty elsewhere): a user who
    reads that the decoders run bf16 by default can see from the log why they do not on this machine."""
    auto = [
        task
        for task in PRECISION_TASKS
        if task in config.tasks.enabled and getattr(config.precision, task) == "auto"
    ]
    if not auto or config.device != "cpu" or backend == "tensorrt":
        return ""
    stages = ", ".join(auto)
    if stage_dtype(config, auto[0], backend) == torch.bfloat16:
        return f"precision auto: {stages} decoders in bfloat16 (this CPU multiplies bf16 natively)"
    flags = ", ".join(sorted(CPU_BF16_FLAGS))
    return (
        f"precision auto: {stages} decoders in float32 (this CPU has no native bfloat16, none of the "
        f"/proc/cpuinfo flags {flags}; emulated bf16 is slower than float32)"
    )


def resolve_precision(config: PipelineConfig, backend: str) -> PipelineConfig:
    """``config`` with every ``precision`` setting concrete (``auto`` resolved for ``backend`` here)."""
    concrete = {
        task: str(stage_dtype(config, task, backend)).removeprefix("torch.") for task in PRECISION_TASKS
    }
    return dataclasses.replace(config, precision=dataclasses.replace(config.precision, **concrete))


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
            decoders[task] = kinds[task].from_pretrained(
                source, **{**where, "dtype": stage_dtype(config, task)}
            )
    depth_encoder = None
    if "depth" in config.inputs:
        LOG.info("loading the depth tokenizer encoder %s", config.tokenizers.depth)
        depth_encoder = DepthEncoder.from_pretrained(config.tokenizers.depth, **where)
    return Components(
        model=model,
        **decoders,
        random_weights=False,
        model_name=str(config.model),
        depth_encoder=depth_encoder,
    )


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
        decoder = randomize(materialize(decoder, stage_dtype(config, task)), seed)
        return decoder.to(device=device).eval().requires_grad_(False)

    decoders = {task: build(task) for task in TOKENIZER_TASKS}
    depth_encoder = None
    if "depth" in config.inputs:
        with torch.device("meta"):
            depth_encoder = DepthEncoder(DepthEncoderConfig.from_json(official_config("depth"), "depth"))
        depth_encoder = randomize(materialize(depth_encoder, dtype), seed)
        depth_encoder = depth_encoder.to(device=device).eval().requires_grad_(False)
    return Components(
        model=model.eval().requires_grad_(False),
        **decoders,
        random_weights=True,
        model_name=f"{config.model} (random weights)",
        depth_encoder=depth_encoder,
    )
