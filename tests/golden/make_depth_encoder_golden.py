"""Regenerate ``tests/tokenizers/data/depth_encoder_golden.npz`` by running apple/ml-4m's own code.

Run once by hand (not by pytest), with a checkout of ml-4m and einops importable, e.g.::

    git --git-dir=<ml-4m.git> archive HEAD fourm/vq fourm/data/modality_transforms.py | tar x -C /tmp/ml4m
    pip install --target /tmp/ml4m-pkgs einops
    PYTHONPATH=/tmp/ml4m-pkgs:tests/tokenizers:tests \
        .venv/bin/python tests/golden/make_depth_encoder_golden.py /tmp/ml4m

What runs from ml-4m: ``ViTEncoder`` (fourm/vq/models/vit_models.py), a 1×1 ``Conv2d`` ``quant_proj`` and
``VectorQuantize`` with ``use_cosine_sim=True`` (fourm/vq/quantizers/quantize_lucid.py), composed as
``VQ.encode`` composes them (fourm/vq/vqvae.py); and ``DepthTransform.truncated_depth_standardization``
(fourm/data/modality_transforms.py), taken out of that file by name because the file's other imports
(albumentations, torchvision) are not needed for it. Weights are tiny and synthetic (the tokenizer tests'
``synthetic_tensors``, seed ``SEED``), so only inputs and outputs are stored.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch
from conftest import TINY_DEPTH_ENCODER as TINY_CONFIG
from conftest import TINY_VIT, Synthetic

from fourm_ros.tokenizers.depth_encoder import fill_holes

SEED = 11
OUTPUT = Path(__file__).resolve().parents[1] / "tokenizers" / "data" / "depth_encoder_golden.npz"


def _module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _standardization(path: Path):
    """ml-4m's truncated_depth_standardization, compiled from its source file."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "truncated_depth_standardization":
            node.decorator_list = []
            namespace = {"torch": torch}
            exec(compile(ast.Module([node], []), str(path), "exec"), namespace)
            return namespace[node.name]
    raise LookupError(f"truncated_depth_standardization not found in {path}")


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


def main(reference: Path) -> None:
    vit = _module(reference / "fourm/vq/models/vit_models.py", "ref_vit_models")
    lucid = _module(reference / "fourm/vq/quantizers/quantize_lucid.py", "ref_quantize_lucid")
    standardize = _standardization(reference / "fourm/data/modality_transforms.py")

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
    np.savez_compressed(OUTPUT, seed=np.array(SEED), **arrays)
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    main(Path(sys.argv[1]))
