"""Regenerate tests/tokenizers/data/pose/skeleton_reference.npz: SMPL joints and the 4D-Humans camera.

    python tests/golden/make_skeleton_golden.py --ml4m /path/to/ml-4m \
        -o tests/tokenizers/data/pose/skeleton_reference.npz

Needs ``smplx`` (PyPI) next to ml-4m's dependencies. No SMPL model is shipped (it is licensed), so
``smpl_joints`` come from smplx's ``SMPLLayer(pose2rot=False)`` built on the synthetic SMPL model and the
pose inputs that tests/tokenizers/test_skeleton_smpl.py makes (``synthetic_smpl()``, ``pose_inputs()``).
That model has no faces, pose blend shapes or skinning weights; smplx needs them to build the layer, and
they move only the vertices, never the 24 joints, so inert ones are supplied. ``translations`` are ml-4m's
``cam_crop_to_full`` on the cameras and 224-px boxes below, with the box centre / size and the focal length
that ml-4m's ``visualize_human_poses`` gives it (HMR2 config: ``EXTRA.FOCAL_LENGTH`` 5000 at
``MODEL.IMAGE_SIZE`` 256, scaled to the 224-px image), computed in float64.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
from _reference import REPO_ROOT, parse_arguments, save, use_reference

DEFAULT_OUTPUT = REPO_ROOT / "tests" / "tokenizers" / "data" / "pose" / "skeleton_reference.npz"
IMAGE_SIZE = 224.0
HMR2_FOCAL_LENGTH, HMR2_IMAGE_SIZE = 5000.0, 256.0
# (scale, tx, ty) in the crop and the xyxy box in the 224-px image: an ordinary, a wide and a small box.
CAMERAS = np.array([[0.9, 0.05, -0.1], [3.0, -0.4, 0.3], [12.5, 0.0, 0.2]])
BOXES = np.array([[20.0, 30.0, 90.0, 200.0], [100.0, 50.0, 210.0, 120.0], [5.5, 7.25, 40.0, 60.0]])


def smpl_joints(model: dict, inputs: dict) -> np.ndarray:
    """The 24 SMPL joints of smplx's layer for each person, float32 as smplx computes them."""
    from smplx import SMPLLayer
    from smplx.utils import Struct

    vertices = model["v_template"].shape[0]
    skinning = np.zeros((vertices, 24), np.float32)
    skinning[:, 0] = 1.0
    data = Struct(
        **model,
        f=np.zeros((1, 3), np.int64),
        posedirs=np.zeros((vertices, 3, 207), np.float32),
        weights=skinning,
    )
    layer = SMPLLayer(model_path="", data_struct=data, num_betas=10).eval()
    output = layer(
        betas=torch.from_numpy(inputs["betas"]).float(),
        global_orient=torch.from_numpy(inputs["global_orient"]).float()[:, None],
        body_pose=torch.from_numpy(inputs["rotations"]).float(),
        pose2rot=False,
    )
    return output.joints[:, :24].numpy()


def main() -> None:
    args = parse_arguments(__doc__.splitlines()[0], DEFAULT_OUTPUT)
    commit = use_reference(args.ml4m)
    sys.path.insert(0, str(REPO_ROOT / "tests" / "tokenizers"))
    from fourm.utils.hmr2_utils.hmr2.utils.renderer import cam_crop_to_full
    from test_skeleton_smpl import pose_inputs, synthetic_smpl

    torch.set_grad_enabled(False)
    joints = smpl_joints(synthetic_smpl(), pose_inputs())

    boxes = torch.from_numpy(BOXES)
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    sizes = (boxes[:, 2:] - boxes[:, :2]).max(dim=1).values
    image_sizes = torch.full((len(BOXES), 2), IMAGE_SIZE, dtype=torch.float64)
    focal = HMR2_FOCAL_LENGTH / HMR2_IMAGE_SIZE * IMAGE_SIZE
    translations = cam_crop_to_full(torch.from_numpy(CAMERAS), centres, sizes, image_sizes, focal)
    arrays = {"smpl_joints": joints, "cams": CAMERAS, "boxes": BOXES, "translations": translations.numpy()}
    save(args.output, arrays, commit)


if __name__ == "__main__":
    main()
