"""The 4M-21 encoder-decoder with only the embeddings and heads of the selected modalities.

Layout and key names equal the official checkpoints (``EPFL-VILAB/4M-21_{B,L,XL}``), so those load strictly.
Inference paths:

* ``encode(rgb)`` -> decoder context (the encoder runs once per frame);
* ``decode_dense(context, targets)`` -> logits of several image-token targets in ONE decoder pass;
* ``decode_step`` / ``generate_sequence`` -> autoregressive captions / poses with a static-shape KV cache;
* ``generate_image`` -> multi-step MaskGIT / ROAR decoding with classifier-free guidance.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from fourm_ros import checkpoint, modalities
from fourm_ros.modalities import ModalityKind

from . import generation
from .config import FourMConfig
from .embeddings import DecoderEmbedding, ModalityEmbedding, decoder_embedding, encoder_embedding
from .layers import Block, DecoderBlock, LayerNorm

RGB = "rgb@224"
DEFAULT_INPUTS = (RGB,)
DEFAULT_OUTPUTS = ("tok_depth@224", "tok_normal@224", "tok_semseg@224", "caption", "human_poses")

# WordPiece ids of the 4M text tokenizer used by the span-masking generation convention.
PAD_ID, EOS_ID = 0, 3
FIRST_SENTINEL_ID = 5  # [S_1]: every generated sequence starts with it
NEXT_SENTINEL_ID = 6  # [S_2]: the reference stops generating there; [EOS] precedes it
INIT_STD = 0.02


class FourM(nn.Module):
    """4M-21 with encoder embeddings for ``inputs`` and decoder embeddings/heads for ``outputs``.

    ``FourM(config, ...)`` builds with deterministic random weights from ``seed`` (see ``init_weights``);
    ``seed=None`` leaves parameters uninitialised (for loading), ``device="meta"`` allocates nothing.
    """

    def __init__(
        self,
        config: FourMConfig,
        inputs: Sequence[str] = DEFAULT_INPUTS,
        outputs: Sequence[str] = DEFAULT_OUTPUTS,
        *,
        seed: int | None = 0,
        device: str | torch.device | None = None,
        dtype: torch.dtype = torch.float32,
    ):
        super().__init__()
        self.config = config
        self.inputs, self.outputs = _check_selection(config, inputs, outputs)
        device = torch.device(device) if device is not None else torch.get_default_device()
        dim, heads, hidden = config.dim, config.num_heads, config.mlp_hidden
        with torch.device("meta"):  # allocate once, on the target device, below
            self.encoder_embeddings = nn.ModuleDict(
                {name: encoder_embedding(modalities.get(name), dim) for name in self.inputs}
            )
            self.decoder_embeddings = nn.ModuleDict(
                {name: decoder_embedding(modalities.get(name), dim) for name in self.outputs}
            )
            self.encoder = nn.ModuleList(Block(dim, heads, hidden) for _ in range(config.encoder_depth))
            self.encoder_norm = LayerNorm(dim)
            self.decoder_proj_context = nn.Linear(dim, dim)
            self.decoder = nn.ModuleList(
                DecoderBlock(dim, heads, hidden) for _ in range(config.decoder_depth)
            )
            self.decoder_norm = LayerNorm(dim)
            self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.to(dtype)
        if device.type != "meta":
            self.to_empty(device=device)
            self.reset_buffers()
            if seed is not None:
                self.init_weights(seed)

    # ------------------------------------------------------------------ weights

    @torch.no_grad()
    def reset_buffers(self) -> None:
        """Recompute the deterministic buffers: sin-cos position tables and zero LayerNorm biases."""
        for module in self.modules():
            if isinstance(module, ModalityEmbedding):
                module.reset_buffers()
            elif isinstance(module, LayerNorm):
                module.bias.zero_()

    @torch.no_grad()
    def init_weights(self, seed: int) -> None:
        """Deterministic random weights (for tests and benchmarks), drawn on the CPU from ``seed``:
        Linear weights Xavier-uniform, biases 0, LayerNorm weights 1, token/modality/learned position
        embeddings and the mask token N(0, 0.02)."""
        generator = torch.Generator().manual_seed(seed)

        def normal(tensor: Tensor) -> None:
            tensor.copy_(torch.empty(tensor.shape).normal_(0.0, INIT_STD, generator=generator))

        def uniform(tensor: Tensor, bound: float) -> None:
            tensor.copy_(torch.empty(tensor.shape).uniform_(-bound, bound, generator=generator))

        for module in self.modules():
            if isinstance(module, nn.Linear):
                uniform(module.weight, (6.0 / sum(module.weight.shape)) ** 0.5)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, LayerNorm):
                module.weight.fill_(1.0)
            elif isinstance(module, nn.Embedding):
                normal(module.weight)
            elif isinstance(module, ModalityEmbedding):
                normal(module.mod_emb)
                if isinstance(module.pos_emb, nn.Parameter):
                    normal(module.pos_emb)
        normal(self.mask_token)

    @classmethod
    def from_pretrained(
        cls,
        source: str | os.PathLike,
        inputs: Sequence[str] = DEFAULT_INPUTS,
        outputs: Sequence[str] = DEFAULT_OUTPUTS,
        *,
        cache_dir: str | os.PathLike | None = None,
        offline: bool = False,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
    ) -> FourM:
        """Load an official 4M-21 checkpoint (local HF-layout directory or hub repo id) strictly.

        Only the selected modalities are loaded; keys of the checkpoint's other modalities are skipped as
        known, any other key mismatch is a ``CheckpointError``. Sin-cos tables and zero LayerNorm biases
        may be absent from the file (they are computed)."""
        found = checkpoint.resolve(source, cache_dir=cache_dir, offline=offline)
        try:
            config = FourMConfig.from_dict(found.config)
        except (ValueError, KeyError) as error:
            raise checkpoint.CheckpointError(
                f"{found.directory / checkpoint.CONFIG_NAME}: {error}"
            ) from error
        model = cls(config, inputs, outputs, seed=None, device=device, dtype=dtype)
        official = official_keys(config)
        computable = {name for name, _ in model.named_buffers()}
        checkpoint.load_state(model, found.weights, computable=computable, known_unused=official.__contains__)
        return model.eval().requires_grad_(False)

    # ------------------------------------------------------------------ encoder

    def encode(
        self, rgb: Tensor | None = None, tokens: Mapping[str, Tensor | tuple[Tensor, Tensor]] | None = None
    ) -> Tensor:
        """Decoder context [B, N, D] = decoder_proj_context(encoder_norm(encoder(x + emb))) + emb.

        ``rgb``: ImageNet-normalised [B, 3, 224, 224]. ``tokens``: optional further known inputs, modality
        -> ids [B, K] (an image token grid or a WordPiece sequence at positions 0..K-1; t5_caption: vectors
        [B, K, 4096]) or a pair (ids [B, K], positions [B, K]) for tokens known only at some positions
        (the same count in every row). Each modality must be among the model's inputs."""
        parts = [] if rgb is None else [self._input(RGB)(rgb)]
        for name, values in (tokens or {}).items():
            if name == RGB:
                raise ValueError("pass the image as the rgb argument, not in tokens")
            parts.append(
                self._input(name)(*values) if isinstance(values, tuple) else self._input(name)(values)
            )
        if not parts:
            raise ValueError("encode() needs at least one input (rgb or tokens)")
        return self._encode(parts)

    def sequence_context(
        self,
        rgb: Tensor,
        targets: Sequence[str],
        select: Tensor | None = None,
        sentinels: tuple[Tensor, Tensor] | None = None,
        tokens: Mapping[str, Tensor] | None = None,
    ) -> Tensor:
        """Decoder contexts [T*B, N+1, D] for generating each sequence target from ``rgb`` [B, 3, 224, 224],
        rows ordered target-major (row ``t * B + b`` is frame b conditioned for target t). ``select``: an
        optional LongTensor [T] of indices into ``targets`` (default: all, in order), so one exported graph
        serves any subset of its targets; ``sentinels``: ``sentinel_inputs(targets)`` computed once;
        ``tokens``: further known inputs of each frame as in ``encode`` (e.g. ``tok_depth@224`` ids
        [B, 196] of an RGB-D frame), in every target's context, so N counts them too.

        4M-21 generates a sequence target with that target's first sentinel [S_1] among the encoder inputs
        (the empty target as one masked span). In the reference (ml-4m ``fourm/models/generate.py``),
        ``init_empty_target_modality`` / ``empty_seq_modality`` make [S_1] at index 0 the target's only
        input token (``input_mask`` False there), and ``GenerationSampler.autoregressive_step_batched``
        embeds every modality of the dict that has an encoder embedding (the image and the target itself)
        and runs them through ``forward_mask_encoder_generation`` and the encoder; the resulting context,
        which the target's decoder cross-attends to, includes [S_1] embedded by the target's own encoder
        embedding at position 0. So each target has its own context, equal to
        ``encode(rgb, {target: [[S_1]] * B})``; here the image is embedded once and every target's
        context runs in one encoder batch (all have N+1 tokens)."""
        image_x, image_emb = self._input(RGB)(rgb)
        for name, ids in (tokens or {}).items():
            if name == RGB or modalities.get(name).kind is ModalityKind.SEQUENCE:
                raise ValueError(f"sequence_context() takes image-grid token inputs, not {name!r}")
            known_x, known_emb = self._input(name)(ids)
            image_x = torch.cat((image_x, known_x), dim=1)
            image_emb = torch.cat((image_emb, known_emb), dim=1)
        sentinel_x, sentinel_emb = self.sentinel_inputs(targets) if sentinels is None else sentinels
        if select is not None:
            sentinel_x, sentinel_emb = (
                sentinel_x.index_select(0, select),
                sentinel_emb.index_select(0, select),
            )

        def rows(image: Tensor, token: Tensor) -> Tensor:
            count, (batch, length, dim) = token.shape[0], image.shape
            image = image.unsqueeze(0).expand(count, -1, -1, -1)
            token = token.unsqueeze(1).expand(-1, batch, -1, -1)
            return torch.cat((image, token), dim=2).reshape(-1, length + 1, dim)

        return self._encode([(rows(image_x, sentinel_x), rows(image_emb, sentinel_emb))])

    def sentinel_inputs(self, targets: Sequence[str]) -> tuple[Tensor, Tensor]:
        """Each sequence target's [S_1] at position 0 through its encoder embedding: content and position +
        modality embedding, each [T, 1, D] (constants of the weights)."""
        if not targets:
            raise ValueError("sequence_context() needs at least one sequence target")
        sentinel = torch.full((1, 1), FIRST_SENTINEL_ID, dtype=torch.long, device=self.mask_token.device)
        parts = []
        for name in targets:
            if modalities.get(name).kind is not ModalityKind.SEQUENCE:
                raise ValueError(f"{name!r} is not a sequence modality")
            parts.append(self._input(name)(sentinel))
        return torch.cat([part[0] for part in parts]), torch.cat([part[1] for part in parts])

    def _encode(self, parts: list[tuple[Tensor, Tensor]], batch: int = 0) -> Tensor:
        if not parts:  # nothing to condition on: an empty context
            return self.mask_token.new_zeros(batch, 0, self.config.dim)
        x, emb = torch.cat([part[0] for part in parts], dim=1), torch.cat([part[1] for part in parts], dim=1)
        x = x + emb
        for block in self.encoder:
            x = block(x)
        return self.decoder_proj_context(self.encoder_norm(x)) + emb

    def _input(self, name: str) -> nn.Module:
        if name not in self.encoder_embeddings:
            raise ValueError(
                f"{name!r} is not an input of this model (inputs: {', '.join(self.inputs)}); "
                "build or load the model with it in `inputs`"
            )
        return self.encoder_embeddings[name]

    # ------------------------------------------------------------------ decoder

    def precompute_cross_kv(self, context: Tensor) -> Tensor:
        """Cross-attention keys/values of every decoder layer: [L, 2, B, H, N, head_dim]."""
        return torch.stack([block.context_kv(context) for block in self.decoder])

    def _decode(self, x: Tensor, cross_kv: Tensor, groups: int = 1, mask: Tensor | None = None) -> Tensor:
        for block, kv in zip(self.decoder, cross_kv, strict=True):
            x = block(x, kv, groups, mask)
        return self.decoder_norm(x)

    def _output(self, name: str, kind: ModalityKind) -> DecoderEmbedding:
        if name not in self.decoder_embeddings:
            raise ValueError(
                f"{name!r} is not an output of this model (outputs: {', '.join(self.outputs)}); "
                "build or load the model with it in `outputs`"
            )
        if modalities.get(name).kind is not kind:
            raise ValueError(
                f"{name!r} is a {modalities.get(name).kind.value} modality, expected {kind.value}"
            )
        return self.decoder_embeddings[name]

    def _image_queries(self, name: str, positions: Tensor | None = None) -> Tensor:
        """Decoder input for image-token positions: mask token + position + modality embedding."""
        return self.mask_token + self._output(name, ModalityKind.IMAGE_TOKENS).emb(positions)

    def decode_dense(self, context: Tensor, targets: Sequence[str] | None = None) -> dict[str, Tensor]:
        """Logits [B, T, vocab] of every token of each image-token target, all predicted at once.

        Targets with the same token count run as ONE decoder pass: their query sets are folded into the
        batch for self-attention and share the cross-attention keys/values, which are computed once.
        Equivalent to the reference decoding each target alone (one ROAR/MaskGIT step, no CFG)."""
        targets = tuple(self._default_image_targets() if targets is None else targets)
        if not targets:
            raise ValueError("decode_dense() needs at least one image-token target")
        by_length: dict[int, list[str]] = {}
        for name in dict.fromkeys(targets):
            self._output(name, ModalityKind.IMAGE_TOKENS)
            by_length.setdefault(modalities.get(name).num_tokens, []).append(name)
        cross_kv = self.precompute_cross_kv(context)
        logits = {}
        for length, group in by_length.items():
            queries = torch.cat([self._image_queries(name) for name in group], dim=1)
            y = self._decode(queries.expand(context.shape[0], -1, -1), cross_kv, groups=len(group))
            for index, name in enumerate(group):
                head = self.decoder_embeddings[name].to_logits
                logits[name] = head(y[:, index * length : (index + 1) * length])
        return {name: logits[name] for name in targets}

    def decode_dense_tokens(self, context: Tensor, targets: Sequence[str] | None = None) -> dict[str, Tensor]:
        """Argmax tokens [B, T] of ``decode_dense`` (the minimum-compute RGB -> X path)."""
        return {name: logits.argmax(dim=-1) for name, logits in self.decode_dense(context, targets).items()}

    def _default_image_targets(self) -> tuple[str, ...]:
        return tuple(n for n in self.outputs if modalities.get(n).kind is ModalityKind.IMAGE_TOKENS)

    # ------------------------------------------------------------------ sequences (autoregressive)

    def empty_self_cache(self, batch: int, max_length: int) -> Tensor:
        """A zero self-attention cache [L, 2, B, H, max_length, head_dim] for ``decode_step``."""
        cfg = self.config
        shape = (cfg.decoder_depth, 2, batch, cfg.num_heads, max_length, cfg.head_dim)
        return self.mask_token.new_zeros(shape)

    def decode_step(
        self, target: str, token: Tensor, position: Tensor, self_cache: Tensor, cross_kv: Tensor
    ) -> tuple[Tensor, Tensor]:
        """One autoregressive step, a pure static-shape tensor function (exportable).

        ``token`` [B, 1] ids at sequence index ``position`` (LongTensor [1]); ``self_cache``
        [L, 2, B, H, S, hd] keys/values of indices < position; ``cross_kv`` from ``precompute_cross_kv``.
        Returns the next-token logits [B, vocab] and the cache with this token's keys/values added."""
        x = self.embed_sequence_token(target, token, position)
        hidden, cache = self.decode_step_hidden(x, position, self_cache, cross_kv)
        return self.sequence_logits(target, hidden), cache

    def embed_sequence_token(self, target: str, token: Tensor, position: Tensor) -> Tensor:
        """Decoder input [B, 1, D] of ``token`` [B, 1] at sequence index ``position`` [1] of ``target``."""
        head = self._output(target, ModalityKind.SEQUENCE)
        return head.token_emb(token) + head.emb(position.reshape(1, 1).expand_as(token))

    def decode_step_hidden(
        self, x: Tensor, position: Tensor, self_cache: Tensor, cross_kv: Tensor, *, in_place: bool = False
    ) -> tuple[Tensor, Tensor]:
        """The decoder blocks on embedded tokens ``x`` [R, 1, D] at ``position`` [1]: the normalised hidden
        state [R, D] and the updated cache. Target-agnostic: rows of different sequence targets (each with
        its own cross K/V and cache rows) share one pass, so the decoder weights are read once per step.

        ``in_place=True`` (eager inference) writes the new keys/values into ``self_cache`` itself and
        returns it, attending to the filled prefix only; the default is the pure static-shape function
        that is exported. Both give the same values."""
        if in_place:
            index = int(position.reshape(-1)[0])
            for block, kv, cache in zip(self.decoder, cross_kv, self_cache, strict=True):
                x = block.forward_in_place(x, kv, index, cache)
            return self.decoder_norm(x)[:, 0], self_cache
        caches = []
        for block, kv, cache in zip(self.decoder, cross_kv, self_cache, strict=True):
            x, cache = block.forward_cached(x, kv, position, cache)
            caches.append(cache)
        return self.decoder_norm(x)[:, 0], torch.stack(caches)

    def sequence_logits(self, target: str, hidden: Tensor) -> Tensor:
        """Next-token logits [B, vocab] of ``target`` from ``decode_step_hidden``'s hidden state [B, D]."""
        return self._output(target, ModalityKind.SEQUENCE).to_logits(hidden)

    def _sequence_logits(self, target: str, ids: Tensor, cross_kv: Tensor) -> Tensor:
        """Next-token logits [B, vocab] re-decoding the whole prefix ``ids`` [B, T] (reference behaviour)."""
        head = self._output(target, ModalityKind.SEQUENCE)
        length = ids.shape[1]
        x = head.token_emb(ids) + head.emb(torch.arange(length, device=ids.device).expand_as(ids))
        causal = torch.ones(length, length, dtype=torch.bool, device=ids.device).tril()
        return head.to_logits(self._decode(x, cross_kv, mask=causal)[:, -1])

    @torch.no_grad()
    def generate_sequence(
        self,
        context: Tensor,
        target: str,
        max_tokens: int | None = None,
        temperature: float = 0.0,
        top_k: int = 0,
        top_p: float = 1.0,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        stop_ids: Sequence[int] = (EOS_ID, NEXT_SENTINEL_ID),
    ) -> Tensor:
        """Generate a WordPiece sequence (caption, human_poses, ...) for every frame of ``context``.

        Span-masking convention of 4M: the decoder starts from [S_1] at position 0 and writes
        ``... [EOS] [S_2]``. A row is finished at its first token in ``stop_ids`` (default [EOS] or [S_2];
        the reference stops at [S_2] only, which adds one step but no text). Returns the generated ids
        [B, T] (T <= max_tokens) including each row's stop token, [PAD]-filled after it.
        ``max_tokens`` defaults to the modality's token budget minus the start token (255 for captions).
        ``use_cache=False`` re-decodes the whole prefix every step, as the reference does."""
        head = self._output(target, ModalityKind.SEQUENCE)
        limit = head.pos_emb.shape[1]
        max_tokens = head.modality.num_tokens - 1 if max_tokens is None else max_tokens
        if not 1 <= max_tokens <= limit:
            raise ValueError(f"max_tokens must be in [1, {limit}] for {target}, got {max_tokens}")
        batch, device = context.shape[0], context.device
        cross_kv = self.precompute_cross_kv(context)
        start = torch.full((batch, 1), FIRST_SENTINEL_ID, device=device)
        if use_cache:
            cache = self.empty_self_cache(batch, max_tokens)  # owned here, so updated in place

            def step(token: Tensor, index: int) -> Tensor:
                position = torch.tensor([index], device=device)
                x = self.embed_sequence_token(target, token, position)
                hidden, _ = self.decode_step_hidden(x, position, cache, cross_kv, in_place=True)
                return self.sequence_logits(target, hidden)

        else:
            prefix = start[:, :0]

            def step(token: Tensor, index: int) -> Tensor:
                nonlocal prefix
                prefix = torch.cat((prefix, token), dim=1)
                return self._sequence_logits(target, prefix, cross_kv)

        return generation.autoregress(
            step, start, max_tokens, stop_ids, PAD_ID, temperature, top_k, top_p, generator
        )

    # ------------------------------------------------------------------ images (MaskGIT / ROAR)

    def decode_positions(self, context: Tensor, target: str, positions: Tensor) -> Tensor:
        """Logits [B, K, vocab] of image target ``target`` at ``positions`` [B, K] only; the K queries
        attend to each other (one MaskGIT / ROAR step of the reference). A context with zero tokens is
        the unconditional pass of classifier-free guidance."""
        queries = self._image_queries(target, positions)
        y = self._decode(queries, self.precompute_cross_kv(context))
        return self.decoder_embeddings[target].to_logits(y)

    @torch.no_grad()
    def generate_image(
        self,
        rgb: Tensor,
        target: str,
        *,
        steps: int = 1,
        scheme: str = "roar",
        schedule: str = "cosine",
        temperature: float = 0.0,
        temperature_schedule: str = "constant",
        top_k: int = 0,
        top_p: float = 1.0,
        cfg_scale: float = 1.0,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Decode the image tokens [B, T] of ``target`` from ``rgb`` in ``steps`` passes.

        ``scheme="roar"``: each step predicts a random subset of the unknown positions (linear schedule);
        ``"maskgit"``: each step predicts all unknown positions and keeps the most probable samples
        (``schedule`` "cosine" or "linear"). Decoded tokens re-enter the encoder through the target's
        encoder embedding, so ``steps > 1`` needs ``target`` among the inputs. ``cfg_scale != 1`` adds an
        unconditional pass without the image (only the already decoded tokens; none at step 1, where the
        context is empty and cross-attention contributes nothing): logits = u + cfg_scale * (c - u).
        The repo's RGB->X demo setting is roar, 1 step, temperature 0.01, top_p 0.8, cfg_scale 2."""
        self._output(target, ModalityKind.IMAGE_TOKENS)
        generation.check_sampling(temperature, top_k, top_p)
        if scheme not in ("roar", "maskgit"):
            raise ValueError(f"unknown decoding scheme {scheme!r}; choose 'roar' or 'maskgit'")
        total = modalities.get(target).num_tokens
        counts = generation.token_schedule("linear" if scheme == "roar" else schedule, steps, total)
        temps = generation.temperature_schedule(temperature_schedule, temperature, counts)
        if len(counts) > 1 and target not in self.encoder_embeddings:
            raise ValueError(
                f"multi-step decoding feeds decoded {target} tokens back through its encoder embedding; "
                f"build or load the model with {target!r} in `inputs`"
            )
        image = self._input(RGB)(rgb)
        batch, device = rgb.shape[0], rgb.device
        ids = torch.zeros(batch, total, dtype=torch.long, device=device)
        known = torch.zeros(batch, total, dtype=torch.bool, device=device)
        for count, temp in zip(counts, temps, strict=True):
            # Every row knows the same number of tokens; list known positions first, each part in order.
            order = torch.sort(known.long(), dim=1, descending=True, stable=True).indices
            done = int(known[0].sum())
            known_pos, unknown_pos = order[:, :done], order[:, done:]
            if scheme == "roar":
                pick = torch.rand(unknown_pos.shape, generator=generator, device=device).argsort(dim=1)
                unknown_pos = unknown_pos.gather(1, pick[:, :count])
            decoded = [self.encoder_embeddings[target](ids.gather(1, known_pos), known_pos)] if done else []
            logits = self.decode_positions(self._encode([image, *decoded]), target, unknown_pos)
            if cfg_scale != 1.0:
                unconditional = self.decode_positions(self._encode(decoded, batch), target, unknown_pos)
                logits = unconditional + cfg_scale * (logits - unconditional)
            samples, probs = generation.sample_logits(logits, temp, top_k, top_p, generator)
            if scheme == "maskgit":
                keep = probs.topk(count, dim=1).indices
                unknown_pos, samples = unknown_pos.gather(1, keep), samples.gather(1, keep)
            ids.scatter_(1, unknown_pos, samples)
            known.scatter_(1, unknown_pos, True)
        return ids


def _check_selection(
    config: FourMConfig, inputs: Sequence[str], outputs: Sequence[str]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if isinstance(inputs, str) or isinstance(outputs, str):
        raise TypeError("inputs and outputs are sequences of modality names, e.g. ('rgb@224',)")
    inputs, outputs = tuple(dict.fromkeys(inputs)), tuple(dict.fromkeys(outputs))
    for name in (*inputs, *outputs):
        modalities.get(name)
    bad_in = [name for name in inputs if name not in config.encoder_modalities]
    bad_out = [name for name in outputs if name not in config.decoder_modalities]
    if bad_in:
        raise ValueError(
            f"inputs {bad_in} are not encoder modalities of this checkpoint: {config.encoder_modalities}"
        )
    if bad_out:
        raise ValueError(
            f"outputs {bad_out} are not decoder modalities of this checkpoint: {config.decoder_modalities}"
        )
    if not inputs:
        raise ValueError("a FourM model needs at least one input modality")
    return inputs, outputs


def official_keys(config: FourMConfig) -> set[str]:
    """Every state-dict key of the official checkpoint with ``config`` (all its modalities)."""
    full = FourM(config, config.encoder_modalities, config.decoder_modalities, device="meta")
    return set(full.state_dict())
