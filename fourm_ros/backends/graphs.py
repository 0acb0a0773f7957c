"""The pipeline's compute graphs as torch modules with fixed, named inputs and outputs.

The torch backend runs these modules directly; the ONNX exporter traces the very same modules, so ONNX
Runtime and TensorRT compute what PyTorch computes. Each graph is a pure tensor function with static
control flow (no data-dependent Python branches), and the Python-side loops (autoregression, DDIM steps)
stay in the pipeline, shared by every backend.

Graphs (B = frames in the batch, T = dense targets, N = encoder tokens, S = sequence cache length):

- ``encoder``: rgb f32 [B,3,224,224] → context [B,N,D]
- ``depth_tokenizer``: depth f32 [B,1,224,224] (standardised) → depth_tokens i64 [B,196] (RGB-D input)
- ``rgbd_encoder``: rgb, depth_tokens → context [B,N+196,D]
- ``dense_decoder``: context → tokens i64 [B,T,196] (argmax, T targets in one decoder pass)
- ``sequence_cross_kv``: rgb [B,3,224,224], targets i64 [T] → cross_kv [L,2,T*B,H,N+1,hd] (each target's
  context: the image and that target's [S_1], as 4M-21 generates sequences; rows target-major)
- ``rgbd_sequence_cross_kv``: rgb, depth_tokens i64 [B,196], targets → cross_kv [L,2,T*B,H,N+197,hd]
  (RGB-D jobs: the image, its depth tokens and the target's [S_1])
- ``<target>_embed``: token i64 [B,1], position i64 [1] → embedded [B,1,D]
- ``sequence_step``: embedded [R,1,D], position i64 [1], self_cache [L,2,R,H,S,hd], cross_kv [L,2,R,H,N+1,hd]
  → hidden [R,D], next_cache (R rows of any targets in one pass: the decoder weights are read once per step
  for caption and human poses together; S = the longest max_tokens)
- ``<target>_logits``: hidden [B,D] → logits f32 [B,V]
- ``<depth|normals>_x0``: tokens i64 [B,14,14], sample f32 [B,C,224,224], timestep i64 [1] → x0 f32
- ``segmentation_labels``: tokens i64 [B,14,14] → labels i64 [B,224,224]
- ``pose_rotations``: codes i64 [P,8] → rotations f32 [P,23,3,3]

Every graph also makes ``example_inputs(batch)``: zero-valued inputs of the shapes and dtypes it is called
with, which the ONNX exporter traces and which tests and benchmarks feed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from fourm_ros import modalities
from fourm_ros.model.fourm import FIRST_SENTINEL_ID, FourM
from fourm_ros.tokenizers.depth_encoder import DepthEncoder
from fourm_ros.tokenizers.divae import DiVAEDecoder
from fourm_ros.tokenizers.human_pose import PoseDecoder
from fourm_ros.tokenizers.semseg import SemsegDecoder

DENSE_TARGETS = {"depth": "tok_depth@224", "normals": "tok_normal@224", "segmentation": "tok_semseg@224"}
"""Pipeline task → 4M-21 modality of its tokens."""
SEQUENCE_TARGETS = {"caption": "caption", "human_pose": "human_poses"}
GRID = 14
"""Side of every token grid the pipeline decodes: 224-pixel frames in 16-pixel tokens."""
CONTEXT_AXIS = "context_tokens"
"""The encoder-context length axis of RGB-D jobs: 196 tokens (rgb) or 392 (rgb + depth) per frame."""
SEQUENCE_CONTEXT_TOKENS = GRID * GRID + 1
"""Encoder tokens of a sequence target's context from rgb alone: the image and the target's [S_1]."""
SEQUENCE_CONTEXT_AXIS = "sequence_context_tokens"
"""The sequence-context length axis of RGB-D jobs: 197 tokens (rgb + [S_1]) or 393 (rgb + depth + [S_1])."""


@dataclass(frozen=True)
class GraphSpec:
    """Names of a graph's inputs and outputs, in call order, and the axes that vary between calls."""

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    dynamic_axes: dict[str, dict[int, str]]
    recurrent: Mapping[str, str] = field(default_factory=dict)
    """Output → the input it is fed back into on the next call (a device backend keeps both on the device)."""


def _dtype(module: nn.Module) -> torch.dtype:
    return next(module.parameters()).dtype


class Encoder(nn.Module):
    """RGB → the decoder context of the 4M-21 encoder (run once per frame)."""

    spec = GraphSpec(("rgb",), ("context",), {"rgb": {0: "batch"}, "context": {0: "batch"}})

    def __init__(self, model: FourM):
        super().__init__()
        self.model = model

    def forward(self, rgb: Tensor) -> Tensor:
        return self.model.encode(rgb.to(_dtype(self.model)))

    def example_inputs(self, batch: int) -> tuple[Tensor, ...]:
        size = self.model.config.image_size
        return (torch.zeros(batch, 3, size, size),)


class DepthTokenizer(nn.Module):
    """Standardised sensor depth → ``tok_depth@224`` ids (the depth tokenizer's encoder half)."""

    spec = GraphSpec(("depth",), ("depth_tokens",), {"depth": {0: "batch"}, "depth_tokens": {0: "batch"}})

    def __init__(self, encoder: DepthEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, depth: Tensor) -> Tensor:
        return self.encoder.tokenize(depth)[0].flatten(1)

    def example_inputs(self, batch: int) -> tuple[Tensor, ...]:
        return (torch.zeros(batch, 1, GRID * 16, GRID * 16),)


class RGBDEncoder(nn.Module):
    """RGB and depth tokens → the decoder context, depth entering as ``tok_depth@224`` input tokens."""

    spec = GraphSpec(
        ("rgb", "depth_tokens"),
        ("context",),
        {"rgb": {0: "batch"}, "depth_tokens": {0: "batch"}, "context": {0: "batch"}},
    )

    def __init__(self, model: FourM):
        super().__init__()
        self.model = model

    def forward(self, rgb: Tensor, depth_tokens: Tensor) -> Tensor:
        return self.model.encode(rgb.to(_dtype(self.model)), {"tok_depth@224": depth_tokens})

    def example_inputs(self, batch: int) -> tuple[Tensor, ...]:
        size = self.model.config.image_size
        return torch.zeros(batch, 3, size, size), torch.zeros(batch, GRID * GRID, dtype=torch.long)


class DenseDecoder(nn.Module):
    """Context → argmax tokens of every dense target, all targets in one batched decoder pass."""

    spec = GraphSpec(("context",), ("tokens",), {"context": {0: "batch"}, "tokens": {0: "batch"}})

    def __init__(self, model: FourM, targets: Sequence[str]):
        super().__init__()
        self.model, self.targets = model, tuple(targets)

    def forward(self, context: Tensor) -> Tensor:
        logits = self.model.decode_dense(context.to(_dtype(self.model)), self.targets)
        return torch.stack([logits[name].argmax(dim=-1) for name in self.targets], dim=1)

    def example_inputs(self, batch: int) -> tuple[Tensor, ...]:
        return (_example_context(self.model, batch),)


class SequenceCrossKV(nn.Module):
    """RGB → the cross-attention keys/values of every selected sequence target, each conditioned as 4M-21
    generates it (the image and that target's [S_1], see ``FourM.sequence_context``): all targets in one
    encoder batch. ``targets`` i64 [T] indexes ``self.targets``; rows of the output are target-major.
    With ``depth_tokens`` (the ``rgbd_sequence_cross_kv`` graph of RGB-D jobs) every context also holds the
    frame's 196 ``tok_depth@224`` tokens."""

    spec = GraphSpec(
        ("rgb", "targets"),
        ("cross_kv",),
        {"rgb": {0: "batch"}, "targets": {0: "targets"}, "cross_kv": {2: "rows"}},
    )

    def __init__(self, model: FourM, targets: Sequence[str], depth_tokens: bool = False):
        super().__init__()
        self.model, self.targets, self.depth_tokens = model, tuple(targets), depth_tokens
        if depth_tokens:
            self.spec = GraphSpec(
                ("rgb", "depth_tokens", "targets"),
                ("cross_kv",),
                {**self.spec.dynamic_axes, "depth_tokens": {0: "batch"}},
            )
        # The [S_1] embeddings are constants of the weights: computed once, so the export carries two
        # [T, 1, D] tables instead of every target's whole encoder token table.
        with torch.no_grad():
            sentinel_x, sentinel_emb = model.sentinel_inputs(self.targets)
        self.register_buffer("sentinel_x", sentinel_x, persistent=False)
        self.register_buffer("sentinel_emb", sentinel_emb, persistent=False)

    def forward(self, rgb: Tensor, *inputs: Tensor) -> Tensor:
        """``inputs``: (targets) or, with depth tokens, (depth_tokens, targets) as in ``spec``."""
        *depth_tokens, targets = inputs
        tokens = {"tok_depth@224": depth_tokens[0]} if depth_tokens else None
        sentinels = (self.sentinel_x, self.sentinel_emb)
        context = self.model.sequence_context(
            rgb.to(_dtype(self.model)), self.targets, targets, sentinels, tokens
        )
        return self.model.precompute_cross_kv(context)

    def example_inputs(self, batch: int) -> tuple[Tensor, ...]:
        size = self.model.config.image_size
        rgb, targets = torch.zeros(batch, 3, size, size), torch.arange(len(self.targets))
        if self.depth_tokens:
            return rgb, torch.zeros(batch, GRID * GRID, dtype=torch.long), targets
        return rgb, targets


class SequenceEmbed(nn.Module):
    """A sequence target's tokens [B, 1] at index ``position`` → decoder inputs [B, 1, D]."""

    spec = GraphSpec(("token", "position"), ("embedded",), {"token": {0: "batch"}, "embedded": {0: "batch"}})

    def __init__(self, model: FourM, target: str):
        super().__init__()
        self.model, self.target = model, target

    def forward(self, token: Tensor, position: Tensor) -> Tensor:
        return self.model.embed_sequence_token(self.target, token, position)

    def example_inputs(self, batch: int) -> tuple[Tensor, ...]:
        return torch.full((batch, 1), FIRST_SENTINEL_ID, dtype=torch.long), torch.zeros(1, dtype=torch.long)


class SequenceStep(nn.Module):
    """One autoregressive step of the decoder blocks for R rows of any sequence targets at once (each row
    with its own cross K/V and self-attention cache rows), with a static-shape cache of length S."""

    spec = GraphSpec(
        ("embedded", "position", "self_cache", "cross_kv"),
        ("hidden", "next_cache"),
        {
            "embedded": {0: "rows"},
            "self_cache": {2: "rows"},
            "cross_kv": {2: "rows"},
            "hidden": {0: "rows"},
            "next_cache": {2: "rows"},
        },
        recurrent={"next_cache": "self_cache"},
    )

    def __init__(self, model: FourM, cache_length: int):
        super().__init__()
        self.model = model
        self.cache_length = cache_length
        """The static cache length S an export bakes in (the longest max_tokens); torch runs any length."""

    def forward(
        self, embedded: Tensor, position: Tensor, self_cache: Tensor, cross_kv: Tensor
    ) -> tuple[Tensor, Tensor]:
        dtype = _dtype(self.model)
        # Eagerly (the torch backend) the cache is updated in place, so a step does not copy it; the
        # traced export is the pure static-shape function.
        return self.model.decode_step_hidden(
            embedded.to(dtype),
            position,
            self_cache.to(dtype),
            cross_kv.to(dtype),
            in_place=not torch.jit.is_tracing(),
        )

    def example_inputs(self, batch: int) -> tuple[Tensor, ...]:
        cfg = self.model.config
        cache = (cfg.decoder_depth, 2, batch, cfg.num_heads, self.cache_length, cfg.head_dim)
        cross = (cfg.decoder_depth, 2, batch, cfg.num_heads, SEQUENCE_CONTEXT_TOKENS, cfg.head_dim)
        embedded = torch.zeros(batch, 1, cfg.dim)
        return embedded, torch.zeros(1, dtype=torch.long), torch.zeros(cache), torch.zeros(cross)


class SequenceLogits(nn.Module):
    """A sequence target's head: the step's hidden state [B, D] → next-token logits f32 [B, V]."""

    spec = GraphSpec(("hidden",), ("logits",), {"hidden": {0: "batch"}, "logits": {0: "batch"}})

    def __init__(self, model: FourM, target: str):
        super().__init__()
        self.model, self.target = model, target

    def forward(self, hidden: Tensor) -> Tensor:
        return self.model.sequence_logits(self.target, hidden.to(_dtype(self.model))).float()

    def example_inputs(self, batch: int) -> tuple[Tensor, ...]:
        return (torch.zeros(batch, self.model.config.dim),)


class DiffusionX0(nn.Module):
    """The DiVAE network: tokens + noisy sample at a timestep → predicted clean depth/normal image."""

    spec = GraphSpec(
        ("tokens", "sample", "timestep"),
        ("x0",),
        {"tokens": {0: "batch"}, "sample": {0: "batch"}, "x0": {0: "batch"}},
    )

    def __init__(self, decoder: DiVAEDecoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, tokens: Tensor, sample: Tensor, timestep: Tensor) -> Tensor:
        dtype = _dtype(self.decoder.decoder)
        latents = self.decoder.quantize(tokens).to(dtype)
        return self.decoder.decoder(sample.to(dtype), timestep, latents).float()

    def example_inputs(self, batch: int) -> tuple[Tensor, ...]:
        config = self.decoder.config
        side = GRID * config.patch_size
        sample = torch.zeros(batch, config.n_channels, side, side)
        timestep = torch.full((1,), config.num_train_timesteps - 1, dtype=torch.long)
        return torch.zeros(batch, GRID, GRID, dtype=torch.long), sample, timestep


class SegmentationLabels(nn.Module):
    """Semseg tokens → per-pixel class ids (0 = unlabeled)."""

    spec = GraphSpec(("tokens",), ("labels",), {"tokens": {0: "batch"}, "labels": {0: "batch"}})

    def __init__(self, decoder: SemsegDecoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, tokens: Tensor) -> Tensor:
        return self.decoder(tokens).argmax(dim=1)

    def example_inputs(self, batch: int) -> tuple[Tensor, ...]:
        return (torch.zeros(batch, GRID, GRID, dtype=torch.long),)


class PoseRotations(nn.Module):
    """8 pose codes per person → 23 SMPL body-joint rotation matrices."""

    spec = GraphSpec(("codes",), ("rotations",), {"codes": {0: "persons"}, "rotations": {0: "persons"}})

    def __init__(self, decoder: PoseDecoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, codes: Tensor) -> Tensor:
        return self.decoder(codes).float()

    def example_inputs(self, batch: int) -> tuple[Tensor, ...]:
        """``batch`` persons."""
        return (torch.zeros(batch, self.decoder.config.num_codebooks, dtype=torch.long),)


def _example_context(model: FourM, batch: int) -> Tensor:
    return torch.zeros(batch, GRID * GRID, model.config.dim)


def build_graphs(
    model: FourM,
    *,
    dense_targets: Sequence[str] = (),
    sequence_targets: Sequence[str] = (),
    cache_lengths: Mapping[str, int] | None = None,
    depth: DiVAEDecoder | None = None,
    normals: DiVAEDecoder | None = None,
    segmentation: SemsegDecoder | None = None,
    human_pose: PoseDecoder | None = None,
    depth_encoder: DepthEncoder | None = None,
) -> dict[str, nn.Module]:
    """The graphs a job needs, by name; ``dense_targets`` / ``sequence_targets`` are 4M-21 modality names,
    ``cache_lengths`` the KV-cache length (max_tokens) of each sequence target for export (default: the
    modality's whole token budget); the shared step graph's cache holds the longest."""
    graphs: dict[str, nn.Module] = {"encoder": Encoder(model)}
    if depth_encoder is not None:
        graphs["depth_tokenizer"] = DepthTokenizer(depth_encoder)
        graphs["rgbd_encoder"] = RGBDEncoder(model)
    if dense_targets:
        graphs["dense_decoder"] = DenseDecoder(model, dense_targets)
    if sequence_targets:
        lengths = [
            (cache_lengths or {}).get(target, modalities.get(target).num_tokens - 1)
            for target in sequence_targets
        ]
        graphs["sequence_cross_kv"] = SequenceCrossKV(model, sequence_targets)
        if depth_encoder is not None:
            graphs["rgbd_sequence_cross_kv"] = SequenceCrossKV(model, sequence_targets, depth_tokens=True)
        graphs["sequence_step"] = SequenceStep(model, max(lengths))
    for target in sequence_targets:
        graphs[f"{target}_embed"] = SequenceEmbed(model, target)
        graphs[f"{target}_logits"] = SequenceLogits(model, target)
    if depth is not None:
        graphs["depth_x0"] = DiffusionX0(depth)
    if normals is not None:
        graphs["normals_x0"] = DiffusionX0(normals)
    if segmentation is not None:
        graphs["segmentation_labels"] = SegmentationLabels(segmentation)
    if human_pose is not None:
        graphs["pose_rotations"] = PoseRotations(human_pose)
    if depth_encoder is not None:
        _variable_context(graphs)
    return {name: graph.eval() for name, graph in graphs.items()}


def _variable_context(graphs: Mapping[str, nn.Module]) -> None:
    """Let the graphs that read an encoder context take it with or without a frame's depth tokens: the
    dense decoder 196 or 392 context tokens, the sequence step 197 or 393 (each with the target's [S_1]);
    rgb-only jobs keep their static shapes and exports."""
    where = {"context": (1, CONTEXT_AXIS), "cross_kv": (4, SEQUENCE_CONTEXT_AXIS)}
    for graph in graphs.values():
        if isinstance(graph, (DenseDecoder, SequenceStep)):
            axes = {name: dict(axes) for name, axes in graph.spec.dynamic_axes.items()}
            for name in set(graph.spec.inputs + graph.spec.outputs) & set(where):
                dim, axis = where[name]
                axes.setdefault(name, {})[dim] = axis
            graph.spec = dataclasses.replace(graph.spec, dynamic_axes=axes)
