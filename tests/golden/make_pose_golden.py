"""Regenerate tests/tokenizers/data/pose/pose_decoder_tiny.npz: ml-4m's human-pose tokenizer decoder output.

    python tests/golden/make_pose_golden.py --ml4m /path/to/ml-4m \
        -o tests/tokenizers/data/pose/pose_decoder_tiny.npz

The weights are the ones tests/tokenizers/test_pose_decoder.py builds (``synthetic_weights`` of the full
official layout at ``TINY_CONFIG``, seed 0), loaded strictly into ml-4m's ``VQVAE`` built from that config.
Codes are decoded as ml-4m's ``visualize_human_poses`` does: ``decode_tokens`` on [N, 4, 1, 1], reshaped to
23 rotation matrices per person.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from _reference import REPO_ROOT, parse_arguments, save, use_reference

DEFAULT_OUTPUT = REPO_ROOT / "tests" / "tokenizers" / "data" / "pose" / "pose_decoder_tiny.npz"
PERSONS = 5
INPUT_SEED = 2024


def main() -> None:
    args = parse_arguments(__doc__.splitlines()[0], DEFAULT_OUTPUT)
    commit = use_reference(args.ml4m)
    sys.path.insert(0, str(REPO_ROOT / "tests" / "tokenizers"))
    from fourm.vq.vqvae import VQVAE
    from test_pose_decoder import TINY_CONFIG, official_layout, synthetic_weights

    torch.set_grad_enabled(False)
    model = VQVAE(config=dict(TINY_CONFIG)).eval()
    model.load_state_dict(synthetic_weights(official_layout(TINY_CONFIG), 0), strict=True)
    shape = (PERSONS, TINY_CONFIG["num_codebooks"])
    codes = torch.from_numpy(
        np.random.RandomState(INPUT_SEED).randint(0, TINY_CONFIG["codebook_size"], shape)
    )
    rotations = model.decode_tokens(codes[:, :, None, None]).reshape(PERSONS, 23, 3, 3)
    save(args.output, {"codes": codes.numpy(), "rotations": rotations.numpy()}, commit)


if __name__ == "__main__":
    main()
