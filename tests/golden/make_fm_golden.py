"""Regenerate tests/data/model/fm_golden_tiny.npz: apple/ml-4m's outputs for the tiny 4M-21 golden model.

    python tests/golden/make_fm_golden.py --ml4m /path/to/ml-4m -o tests/data/model/fm_golden_tiny.npz

The weights are the ones tests/model/test_model_golden.py builds (``golden_tensors``, official key layout);
they are loaded strictly into ml-4m's own ``FM`` (sin-cos tables are the reference's buffers), and every
output is computed by ml-4m's ``GenerationSampler``. Sequences are generated as 4M-21 generates an RGB ->
caption / human_poses target: the target starts empty, so its first sentinel [S_1] is an encoder input next
to the image (``init_empty_target_modality``), greedy (temperature 0), until every row wrote [S_2] or the
token budget is used.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from _reference import REPO_ROOT, parse_arguments, save, use_reference

DEFAULT_OUTPUT = REPO_ROOT / "tests" / "data" / "model" / "fm_golden_tiny.npz"
LOGIT_SLICE = 32
# tokens_per_target of each sequence target (the input [S_1] takes one, so 6 and 270 tokens are generated)
# and the steps whose logits are stored. human_poses runs past 263, the length of its position table, to pin
# what the reference does there.
SEQUENCES = {"caption": (7, list(range(6))), "human_poses": (271, [0, 1, 261, 262, 263, 264, 269])}


def main() -> None:
    args = parse_arguments(__doc__.splitlines()[0], DEFAULT_OUTPUT)
    commit = use_reference(args.ml4m)
    sys.path.insert(0, str(REPO_ROOT / "tests" / "model"))
    from fourm.data.modality_info import MODALITY_INFO
    from fourm.models.fm import FM
    from fourm.models.fm_utils import build_1d_sincos_posemb, build_2d_sincos_posemb
    from fourm.models.generate import (
        GenerationSampler,
        build_chained_generation_schedules,
        init_empty_target_modality,
        init_full_input_modality,
    )
    from test_model_golden import DENSE, GOLDEN_CONFIG, golden_inputs, golden_tensors
    from tokenizers import Tokenizer

    torch.set_grad_enabled(False)
    model = FM(config=GOLDEN_CONFIG.to_dict()).eval()
    tensors = {name: torch.from_numpy(value) for name, value in golden_tensors().items()}
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    buffers = {name for name, _ in model.named_buffers()}
    if unexpected or set(missing) - buffers:
        raise SystemExit(f"golden weights do not match ml-4m's FM: {unexpected=} {missing=}")
    sampler = GenerationSampler(model)
    text_tokenizer = Tokenizer.from_file(
        str(args.ml4m / "fourm" / "utils" / "tokenizer" / "trained" / "text_tokenizer_4m_wordpiece_30k.json")
    )
    inputs = {name: torch.from_numpy(value) for name, value in golden_inputs().items()}
    batch = inputs["image"].shape[0]

    def rgb_input() -> dict:
        mod_dict = {"rgb@224": {"tensor": inputs["image"].clone()}}
        return init_full_input_modality(mod_dict, MODALITY_INFO, "rgb@224", "cpu")

    def visible(tensor: torch.Tensor) -> dict:
        mask = torch.zeros(tensor.shape[:2], dtype=torch.bool)
        return {"tensor": tensor, "input_mask": mask, "target_mask": ~mask}

    def context(mod_dict: dict) -> torch.Tensor:
        """The decoder context the sampler builds before decoding (encoder tokens in mod_dict order)."""
        embedded = {
            m: model.encoder_embeddings[m](d) for m, d in mod_dict.items() if m in model.encoder_embeddings
        }
        tokens, emb, mask, _ = sampler.forward_mask_encoder_generation(embedded)
        return model.decoder_proj_context(model.forward_encoder(tokens + emb, mask)) + emb

    def image_logits(mod_dict: dict, target: str) -> torch.Tensor:
        """Logits of the target's positions that are still to predict (all, in order), one decoder pass."""
        return sampler.forward_enc_dec_maskgit_batched(mod_dict, target)[0]

    def empty_image_target(mod_dict: dict, target: str) -> dict:
        tokens = model.decoder_embeddings[target].num_patches
        return init_empty_target_modality(mod_dict, MODALITY_INFO, target, batch, tokens, "cpu")

    out = {
        "ref_sincos_2d_14_64": build_2d_sincos_posemb(14, 14, 64),
        "ref_sincos_1d_512_64": build_1d_sincos_posemb(512, 64),
        "context": context(rgb_input()),
    }
    everything = rgb_input() | {
        "t5_caption": visible(inputs["t5_vectors"]),
        "caption": visible(inputs["caption_ids"]),
        "tok_dinov2_global": visible(inputs["dinov2_global_ids"]),
    }
    out["context_all"] = context(everything)

    def store_logits(key: str, logits: torch.Tensor, argmax: bool = False) -> None:
        out[f"{key}/slice"], out[f"{key}/lse"] = logits[..., :LOGIT_SLICE], logits.logsumexp(-1)
        if argmax:
            out[f"{key}/argmax"] = logits.argmax(-1)

    for target in DENSE:  # each target decoded alone, as the reference does
        store_logits(target, image_logits(empty_image_target(rgb_input(), target), target), argmax=True)

    unconditional = empty_image_target(rgb_input(), "tok_depth@224")
    unconditional["rgb@224"]["input_mask"][:] = True  # the CFG pass without the image: nothing to encode
    store_logits("uncond", image_logits(unconditional, "tok_depth@224"))

    partial = empty_image_target(rgb_input(), "tok_depth@224")
    depth = partial["tok_depth@224"]
    depth["tensor"].scatter_(1, inputs["depth_known_pos"], inputs["depth_known_ids"])
    depth["input_mask"].scatter_(1, inputs["depth_known_pos"], False)
    depth["target_mask"] = ~depth["input_mask"]  # predict the unknown positions only
    store_logits("partial", image_logits(partial, "tok_depth@224"))

    for target, (length, steps) in SEQUENCES.items():
        ids, logits, encoded = generate_sequence(
            sampler,
            text_tokenizer,
            rgb_input(),
            target,
            length,
            context,
            build_chained_generation_schedules,
            init_empty_target_modality,
            MODALITY_INFO,
        )
        out[f"{target}_ids_conditioned"] = ids
        out[f"{target}_context_conditioned"] = encoded
        out[f"{target}_steps_conditioned"] = torch.tensor(steps)
        store_logits(f"{target}_logits_conditioned", logits[:, steps])

    save(args.output, {name: np.asarray(value) for name, value in out.items()}, commit)


def generate_sequence(
    sampler, text_tokenizer, mod_dict, target, length, context, build_schedules, init_empty, info
):
    """Greedy RGB -> ``target`` with ml-4m's ``GenerationSampler.generate``; returns the generated ids [B, T]
    (without the leading [S_1]), the logits that chose each of them [B, T, V] and the encoder context."""
    batch = mod_dict["rgb@224"]["tensor"].shape[0]
    mod_dict = init_empty(mod_dict, info, target, batch, length, "cpu")
    encoded = context(mod_dict)
    schedule = build_schedules(
        cond_domains=["rgb@224"],
        target_domains=[target],
        tokens_per_target=[length],
        autoregression_schemes=["autoregressive"],
        decoding_steps=[None],
        token_decoding_schedules=[None],
        temps=[0.0],
        temp_schedules=["constant"],
        cfg_scales=[1.0],
        cfg_schedules=["constant"],
    )
    model, recorded = sampler.model, {"logits": [], "ids": None}
    forward_logits, merge = model.forward_logits, sampler.merge_sequences_batched

    def record_logits(*args, **kwargs):
        logits = forward_logits(*args, **kwargs)
        recorded["logits"].append(logits[target].reshape(batch, -1, logits[target].shape[-1])[:, -1])
        return logits

    def record_ids(mod_dict, pred_ids, *args, **kwargs):
        recorded["ids"] = pred_ids.clone()
        return merge(mod_dict, pred_ids, *args, **kwargs)

    model.forward_logits, sampler.merge_sequences_batched = record_logits, record_ids
    try:
        sampler.generate(mod_dict, schedule, text_tokenizer=text_tokenizer, seed=0)
    finally:
        del model.forward_logits, sampler.merge_sequences_batched
    ids = recorded["ids"][:, 1:]  # drop the start token [S_1]
    return ids, torch.stack(recorded["logits"], dim=1), encoded


if __name__ == "__main__":
    main()
