"""Regenerate tests/tokenizers/data/pose/pose_sequence_reference.json: persons written as ml-4m writes them.

    python tests/golden/make_pose_sequence_golden.py --ml4m /path/to/ml-4m \
        -o tests/tokenizers/data/pose/pose_sequence_reference.json

Three persons are drawn from ``INPUT_SEED`` (box xyxy in [0, 1] of the crop, a proper rotation matrix as
global orientation, eight pose codes that include the v0/v1 boundary 511 / 512, betas in [-3, 3], a camera
inside the clip range [-1, 19]). They go through ml-4m's ``HumanPoseTransform``: ``preprocess`` (the
4D-Humans json layout) and ``convert_humanposes_to_string``, whose random group order comes from
``torch.manual_seed(ORDER_SEED)``. The string is encoded with the checkout's 4M WordPiece tokenizer and
framed as the model emits a target: ``[S_1]`` content ``[EOS]`` ``[S_2]``; ``decoded`` is the tokenizer's
decoding of those ids. The provenance is the ``meta`` object.
"""

from __future__ import annotations

import json

import numpy as np
import torch
from _reference import REPO_ROOT, parse_arguments, provenance, use_reference

DEFAULT_OUTPUT = REPO_ROOT / "tests" / "tokenizers" / "data" / "pose" / "pose_sequence_reference.json"
TOKENIZER_FILE = "fourm/utils/tokenizer/trained/text_tokenizer_4m_wordpiece_30k.json"
PERSONS = 3
INPUT_SEED = 2025
ORDER_SEED = 0


def rotation(rng: np.random.RandomState) -> np.ndarray:
    """A rotation about a random axis by a random angle (Rodrigues)."""
    axis = rng.standard_normal(3)
    axis /= np.linalg.norm(axis)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    angle = rng.uniform(-np.pi, np.pi)
    return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross


def draw_persons(rng: np.random.RandomState) -> list[dict]:
    persons = []
    for _ in range(PERSONS):
        x0, x1 = np.sort(rng.uniform(0, 1, 2))
        y0, y1 = np.sort(rng.uniform(0, 1, 2))
        codes = np.concatenate([[511, 512], rng.randint(0, 1024, 6)])
        camera = [rng.uniform(0.5, 18.5), *rng.uniform(-0.9, 0.9, 2)]
        persons.append(
            {
                "box": [x0, y0, x1, y1],
                "global_orient": rotation(rng).tolist(),
                "codes": codes.tolist(),
                "betas": rng.uniform(-3, 3, 10).tolist(),
                "camera": camera,
            }
        )
    return persons


def main() -> None:
    args = parse_arguments(__doc__.splitlines()[0], DEFAULT_OUTPUT)
    commit = use_reference(args.ml4m)
    from fourm.data.modality_transforms import HumanPoseTransform
    from tokenizers import Tokenizer

    persons = draw_persons(np.random.RandomState(INPUT_SEED))
    sample = {
        "bbox_xyxy": [p["box"] for p in persons],
        "pose_tokenized": [p["codes"] for p in persons],
        "pred_cam": [p["camera"] for p in persons],
        "pred_smpl_params": {
            "global_orient": [[p["global_orient"]] for p in persons],
            "betas": [p["betas"] for p in persons],
        },
    }
    transform = HumanPoseTransform()
    torch.manual_seed(ORDER_SEED)
    sequence = transform.convert_humanposes_to_string(transform.preprocess(sample))

    tokenizer = Tokenizer.from_file(str(args.ml4m / TOKENIZER_FILE))
    content = tokenizer.encode(sequence.strip()).ids
    special = {name: tokenizer.token_to_id(name) for name in ("[S_1]", "[EOS]", "[S_2]")}
    ids = [special["[S_1]"], *content, special["[EOS]"], special["[S_2]"]]
    meta = {key.removeprefix("meta/"): str(value) for key, value in provenance(commit).items()}
    meta["versions"] = json.loads(meta["versions"])
    meta["inputs"] = f"np.random.RandomState({INPUT_SEED}), torch.manual_seed({ORDER_SEED})"
    fixture = {
        "source": "apple/ml-4m HumanPoseTransform.convert_humanposes_to_string + 4M WordPiece tokenizer",
        "meta": meta,
        "persons": persons,
        "ids": ids,
        "decoded": tokenizer.decode(ids, skip_special_tokens=False),
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(fixture, indent=1) + "\n")
    print(f"wrote {args.output}: {len(persons)} persons, {len(ids)} ids, reference commit {commit}")


if __name__ == "__main__":
    main()
