"""Regenerate tests/tokenizers/data/depth_encoder_golden.npz: ml-4m's depth tokenizer encoder half.

    python tests/golden/make_depth_encoder_golden.py --ml4m /path/to/ml-4m \
        -o tests/tokenizers/data/depth_encoder_golden.npz

What runs from ml-4m: ``ViTEncoder`` (fourm/vq/models/vit_models.py), a 1×1 ``Conv2d`` ``quant_proj`` and
``VectorQuantize`` with ``use_cosine_sim=True`` (fourm/vq/quantizers/quantize_lucid.py), composed as
``VQ.encode`` composes them (fourm/vq/vqvae.py); and ``DepthTransform.truncated_depth_standardization``
(fourm/data/modality_transforms.py). Weights are tiny and synthetic (the tokenizer tests'
``synthetic_tensors``, seed ``SEED``), so only inputs, outputs and the provenance (``meta/``) are stored.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from _reference import REPO_ROOT, parse_arguments, save, use_reference

from fourm_ros.tokenizers.depth_encoder import fill_holes

SEED = 11
DEFAULT_OUTPUT = REPO_ROOT / "tests" / "tokenizers" / "data" / "depth_encoder_golden.npz"


def depth_maps() -> list[np.ndarray]:
    """Metric depth with holes: a 64×64 (4×4 tokens) and a 224×224 (14×14 tokens) map."""
    rng = np.random.default_rng(SEED)
    maps = []
    for size in (64, 224):
        v, u = np.mgrid[0:size, 0:size] / size
        depth = 1.0 + 3.0 * v + 0.5 * np.sin(7 * u) + rng.uniform(0, 0.05, (size, size))
        depth[rng.random((size, size)) < 0.1] = np.nan
        maps.append(depth.astype(np.float32))
    return maps


def main() -> None:
    args = parse_arguments(__doc__.splitlines()[0], DEFAULT_OUTPUT)
    commit = use_reference(args.ml4m)
    sys.path.insert(0, str(REPO_ROOT / "tests" / "tokenizers"))  # its conftest: the tiny configs, weights
    from conftest import TINY_DEPTH_ENCODER as TINY_CONFIG
    from conftest import TINY_VIT, Synthetic
    from fourm.data.modality_transforms import DepthTransform
    from fourm.vq.models import vit_models as vit
    from fourm.vq.quantizers import quantize_lucid as lucid

    standardize = DepthTransform.truncated_depth_standardization

    state = Synthetic().depth_encoder_state(SEED)
    encoder = vit.ViTEncoder(
        in_channels=1,
        patch_size=TINY_CONFIG.patch_size,
        resolution=TINY_CONFIG.image_size,
        dim_tokens=TINY_VIT.dim,
        depth=TINY_VIT.depth,
        num_heads=TINY_VIT.num_heads,
        mlp_ratio=TINY_VIT.mlp_ratio,
        qkv_bias=True,
        patch_proj=True,
        post_mlp=True,
    )
    encoder.load_state_dict({k[8:]: v for k, v in state.items() if k.startswith("encoder.")}, strict=True)
    quant_proj = torch.nn.Conv2d(TINY_VIT.dim, TINY_CONFIG.latent_dim, 1)
    quant_proj.load_state_dict({k[11:]: v for k, v in state.items() if k.startswith("quant_proj.")})
    quantize = lucid.VectorQuantize(
        dim=TINY_CONFIG.latent_dim,
        codebook_size=TINY_CONFIG.codebook_size,
        codebook_dim=TINY_CONFIG.latent_dim,
        heads=1,
        use_cosine_sim=True,
        threshold_ema_dead_code=0,
    )
    codebook = {k[19:]: v for k, v in state.items() if k.startswith("quantize._codebook.")}
    quantize._codebook.load_state_dict(codebook, strict=False)
    assert torch.equal(quantize._codebook.embed, codebook["embed"])
    for module in (encoder, quant_proj, quantize):
        module.eval()

    arrays: dict[str, np.ndarray] = {}
    for index, depth in enumerate(depth_maps()):
        filled = fill_holes(depth)
        label = torch.from_numpy(filled.astype(np.float64) * 512.0)  # Omnidata units, as our code assumes
        with torch.no_grad():
            # DepthTransform.depth_to_tensor: label / (2**16 - 1), then the standardisation.
            standardized = standardize((label / (2**16 - 1.0)).float().unsqueeze(0))
            latents = quant_proj(encoder(standardized.unsqueeze(0)))
            _, _, tokens = quantize(latents)
            normed = torch.nn.functional.normalize(latents.permute(0, 2, 3, 1), dim=-1)
            similarity = normed @ torch.nn.functional.normalize(codebook["embed"], dim=-1).t()
        top = similarity.topk(2, dim=-1).values
        arrays[f"depth_{index}"] = depth
        arrays[f"standardized_{index}"] = standardized[0].numpy()
        arrays[f"tokens_{index}"] = tokens.numpy()
        arrays[f"margin_{index}"] = (top[..., 0] - top[..., 1]).numpy()
        print(f"map {index}: {tokens.shape[1]}×{tokens.shape[2]} tokens, {len(np.unique(tokens))} distinct")
    save(args.output, {"seed": np.array(SEED), **arrays}, commit)


if __name__ == "__main__":
    main()
