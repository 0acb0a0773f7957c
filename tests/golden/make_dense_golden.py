"""Regenerate tests/tokenizers/data/dense_golden.npz: apple/ml-4m's dense tokenizer decoders on tiny weights.

    python tests/golden/make_dense_golden.py --ml4m /path/to/ml-4m -o tests/tokenizers/data/dense_golden.npz

The weights are the ones tests/tokenizers/conftest.py builds (``Synthetic.decoder_state``, seeds 1 depth,
2 normal, 3 semseg, official key layout), loaded into ml-4m's own ``DiVAE`` / ``VQVAE`` built from the same
config.json. The decoders are ml-4m's classes at the tiny sizes of the conftest (``TINY_UNET``,
``TINY_VIT``), registered under a new ``dec_type`` name. Recorded: the UNet forward at two timesteps, DDIM
decodes with 1, 3 and 4 steps ("trailing" timesteps, noise from torch.Generator seeded 1234), the training
schedule's alphas_cumprod, and semseg logits on a square and a wide token grid.
"""

from __future__ import annotations

import importlib.util
from functools import partial

import numpy as np
import torch
from _reference import REPO_ROOT, parse_arguments, save, use_reference

DEFAULT_OUTPUT = REPO_ROOT / "tests" / "tokenizers" / "data" / "dense_golden.npz"
SEEDS = {"depth": 1, "normal": 2, "semseg": 3}
CHANNELS = {"depth": 1, "normal": 3}
TIMESTEPS = (999, 421)
DDIM_STEPS = (1, 3, 4)
NOISE_SEED = 1234
INPUT_SEED = 2024


def load_conftest():
    path = REPO_ROOT / "tests" / "tokenizers" / "conftest.py"
    spec = importlib.util.spec_from_file_location("dense_golden_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    args = parse_arguments(__doc__.splitlines()[0], DEFAULT_OUTPUT)
    commit = use_reference(args.ml4m)
    support = load_conftest()
    synthetic = support.Synthetic()

    import fourm.vq.models.unet.unet as reference_unet
    import fourm.vq.models.vit_models as reference_vit
    from fourm.vq.vqvae import VQVAE, DiVAE

    unet, vit = synthetic.unet, synthetic.vit
    reference_unet.unet_golden_tiny = partial(
        reference_unet.PatchedUNetCondCat,
        patch_size=unet.patch_size,
        model_channels=unet.model_channels,
        num_res_blocks=unet.num_res_blocks,
        attention_resolutions=list(unet.attention_downsampling),
        channel_mult=unet.channel_mult,
    )
    reference_vit.vit_golden_tiny_dec = partial(
        reference_vit.ViTDecoder,
        dim_tokens=vit.dim,
        depth=vit.depth,
        num_heads=vit.num_heads,
        mlp_ratio=vit.mlp_ratio,
    )

    def reference_model(kind: str) -> torch.nn.Module:
        config = synthetic.config(kind)
        config["dec_type"] = "vit_golden_tiny_dec" if kind == "semseg" else "unet_golden_tiny"
        model = (VQVAE if kind == "semseg" else DiVAE)(config=config)
        missing, unexpected = model.load_state_dict(synthetic.decoder_state(kind, SEEDS[kind]), strict=False)
        is_encoder_key = synthetic.is_encoder_key(kind)
        if unexpected or any(not is_encoder_key(name) for name in missing):
            raise SystemExit(f"{kind}: golden weights do not match ml-4m's model: {unexpected=} {missing=}")
        return model.eval()

    torch.set_grad_enabled(False)
    rng = np.random.RandomState(INPUT_SEED)
    out = {}
    for kind in ("depth", "normal"):
        model = reference_model(kind)
        codebook = synthetic.config(kind)["codebook_size"]
        tokens = torch.from_numpy(rng.randint(0, codebook, size=(2, 2, 2)))
        size = 16 * tokens.shape[-1]
        sample = torch.from_numpy(rng.standard_normal((2, CHANNELS[kind], size, size)).astype(np.float32))
        timesteps = torch.tensor(TIMESTEPS)
        out[f"{kind}_tokens"] = tokens
        out[f"{kind}_unet_sample"], out[f"{kind}_unet_timesteps"] = sample, timesteps
        out[f"{kind}_unet_out"] = model.decoder(sample, timesteps, model.tokens_to_embedding(tokens))
        for steps in DDIM_STEPS:
            out[f"{kind}_decode_steps{steps}"] = model.decode_tokens(
                tokens,
                timesteps=steps,
                generator=torch.Generator().manual_seed(NOISE_SEED),
                image_size=size,
                verbose=False,
            )
        if kind == "depth":
            out["alphas_cumprod"] = model.noise_scheduler.alphas_cumprod

    semseg = reference_model("semseg")
    codebook = synthetic.config("semseg")["codebook_size"]
    for grid, shape in (("square", (2, 4, 4)), ("wide", (1, 3, 5))):
        tokens = torch.from_numpy(rng.randint(0, codebook, size=shape))
        out[f"semseg_{grid}_tokens"], out[f"semseg_{grid}_logits"] = tokens, semseg.decode_tokens(tokens)

    save(args.output, {name: np.asarray(value) for name, value in out.items()}, commit)


if __name__ == "__main__":
    main()
