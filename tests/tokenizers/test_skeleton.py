"""Forward kinematics on the SMPL tree, the generic skeleton, the 4D-Humans camera, ids → persons."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from fourm_ros.tokenizers import text
from fourm_ros.tokenizers.human_pose import PoseDecoder, PoseTokenizerConfig
from fourm_ros.tokenizers.skeleton import (
    JOINT_NAMES,
    PARENTS,
    SMPL_MEAN_PELVIS,
    GenericSkeleton,
    camera_translation,
    focal_length,
    forward_kinematics,
    nearest_rotation,
    persons_from_sequence,
    project,
)

DATA = Path(__file__).parent / "data" / "pose"
J = {name: index for index, name in enumerate(JOINT_NAMES)}
IDENTITY = np.eye(3)
IDENTITY_POSE = np.tile(np.eye(3), (23, 1, 1))


def rotation_z(degrees: float) -> np.ndarray:
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def descendants(joint: int) -> set[int]:
    found = {joint}
    for child, parent in enumerate(PARENTS):
        if parent in found:
            found.add(child)
    return found


def test_identity_rotations_give_the_rest_skeleton():
    skeleton = GenericSkeleton(height_m=1.70)
    rest = skeleton.rest_joints()
    np.testing.assert_allclose(forward_kinematics(rest, IDENTITY, IDENTITY_POSE), rest, atol=1e-12)
    np.testing.assert_allclose(rest[J["pelvis"]], SMPL_MEAN_PELVIS)
    # left is +x in SMPL, and the skeleton is mirror-symmetric
    for side in ("hip", "knee", "ankle", "foot", "collar", "shoulder", "elbow", "wrist", "hand"):
        left, right = rest[J[f"left_{side}"]] - rest[0], rest[J[f"right_{side}"]] - rest[0]
        assert left[0] > 0
        np.testing.assert_allclose(left, right * [-1, 1, 1], atol=1e-12)
    # Winter's proportions
    length = {name: np.linalg.norm(rest[J[name]] - rest[PARENTS[J[name]]]) for name in JOINT_NAMES[1:]}
    assert length["left_elbow"] == pytest.approx(0.188 * 1.70)
    assert length["left_wrist"] == pytest.approx(0.145 * 1.70)
    assert length["left_knee"] == pytest.approx(0.245 * 1.70)
    assert length["left_ankle"] == pytest.approx(0.246 * 1.70)
    assert rest[J["left_shoulder"], 0] - rest[J["right_shoulder"], 0] == pytest.approx(0.259 * 1.70)
    taller = GenericSkeleton(height_m=1.90).rest_joints()
    np.testing.assert_allclose(taller - taller[0], (rest - rest[0]) * 1.90 / 1.70)


def test_rotating_the_left_elbow_moves_only_the_forearm_and_hand():
    rest = GenericSkeleton().rest_joints()
    pose = IDENTITY_POSE.copy()
    pose[J["left_elbow"] - 1] = rotation_z(90)  # body rotations are joints 1..23
    posed = forward_kinematics(rest, IDENTITY, pose)
    moved = descendants(J["left_elbow"]) - {J["left_elbow"]}
    assert moved == {J["left_wrist"], J["left_hand"]}
    still = [joint for joint in range(24) if joint not in moved]
    np.testing.assert_allclose(posed[still], rest[still], atol=1e-12)
    # the forearm pointed along +x (T-pose); a 90° turn about z makes it point up (+y)
    forearm = np.linalg.norm(rest[J["left_wrist"]] - rest[J["left_elbow"]])
    np.testing.assert_allclose(posed[J["left_wrist"]], posed[J["left_elbow"]] + [0, forearm, 0], atol=1e-12)


def test_rotations_compose_down_the_chain():
    rest = GenericSkeleton().rest_joints()
    pose = IDENTITY_POSE.copy()
    pose[J["left_shoulder"] - 1] = rotation_z(90)
    pose[J["left_elbow"] - 1] = rotation_z(90)
    posed = forward_kinematics(rest, IDENTITY, pose)
    upper_arm = np.linalg.norm(rest[J["left_elbow"]] - rest[J["left_shoulder"]])
    forearm = np.linalg.norm(rest[J["left_wrist"]] - rest[J["left_elbow"]])
    np.testing.assert_allclose(
        posed[J["left_elbow"]], posed[J["left_shoulder"]] + [0, upper_arm, 0], atol=1e-12
    )
    np.testing.assert_allclose(posed[J["left_wrist"]], posed[J["left_elbow"]] + [-forearm, 0, 0], atol=1e-12)


def test_global_orientation_turns_the_body_about_the_pelvis():
    rest = GenericSkeleton().rest_joints()
    flip = np.diag([1.0, -1.0, -1.0])  # 180° about x: SMPL's y-up body upright in the y-down camera frame
    posed = forward_kinematics(rest, flip, IDENTITY_POSE)
    pelvis = rest[J["pelvis"]]
    np.testing.assert_allclose(posed[J["pelvis"]], pelvis)
    np.testing.assert_allclose(posed - pelvis, (rest - pelvis) @ flip.T, atol=1e-12)
    assert posed[J["head"], 1] < pelvis[1] < posed[J["left_ankle"], 1]


def test_projection_of_a_known_point():
    assert focal_length() == pytest.approx(5000 / 256 * 224) == pytest.approx(4375)
    np.testing.assert_allclose(project(np.array([0.1, -0.2, 10.0])), [4375 * 0.01 + 112, 4375 * -0.02 + 112])
    np.testing.assert_allclose(project(np.array([[0.0, 0.0, 3.0]])), [[112, 112]])


def test_camera_translation_hand_computed():
    # box centred in the crop, 100 × 200 px → b = 200; s = 1 → depth 2 · 4375 / 200
    np.testing.assert_allclose(camera_translation([1.0, 0.3, -0.2], [62, 12, 162, 212]), [0.3, -0.2, 43.75])
    # off-centre box: (cx, cy) = (25, 50), b = 100, s = 2 → b·s = 200
    np.testing.assert_allclose(camera_translation([2.0, 0, 0], [0, 0, 50, 100]), [-0.87, -0.62, 43.75])


def test_model_origin_projects_to_the_box_centre_when_the_camera_shift_is_zero():
    box = np.array([30.0, 40.0, 130.0, 200.0])
    translation = camera_translation([0.7, 0, 0], box)
    np.testing.assert_allclose(project(translation), [(30 + 130) / 2, (40 + 200) / 2])


def test_camera_translation_matches_the_reference():
    golden = np.load(DATA / "skeleton_reference.npz")  # cam_crop_to_full as visualize_human_poses calls it
    for camera, box, expected in zip(golden["cams"], golden["boxes"], golden["translations"], strict=True):
        np.testing.assert_allclose(camera_translation(camera, box), expected, rtol=1e-12)


def test_skeleton_reference_records_how_it_was_made():
    with np.load(DATA / "skeleton_reference.npz") as golden:
        assert re.fullmatch(r"[0-9a-f]{40}", str(golden["meta/reference_commit"]))
        assert str(golden["meta/command"]).startswith("python tests/golden/make_skeleton_golden.py --ml4m ")
        assert {"python", "torch", "numpy", "smplx"} <= set(json.loads(str(golden["meta/versions"])))


class FixedRotations:
    """A pose decoder that returns identity rotations and records what it was asked."""

    def __init__(self):
        self.calls = []

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        self.calls.append(codes.clone())
        return torch.eye(3).expand(codes.shape[0], 23, 3, 3).clone()


def person(box: str, camera: str, codes: str = "v0=1 v0=2 v0=3 v0=4 v1=5 v1=6 v1=7 v1=8") -> str:
    upright = "v0=999 v0=500 v0=500 v0=500 v0=0 v0=500 v0=500 v0=500 v0=0"  # ≈ diag(1, -1, -1)
    return f"human {box} pose {codes} global {upright} camera {camera} shape {' '.join(['v0=500'] * 10)}"


def emitted(sequence: str) -> list[int]:
    return [text.GENERATION_START_ID, *text.encode(sequence), text.EOS_ID, text.GENERATION_STOP_ID]


def test_persons_from_sequence_decodes_all_readable_persons_at_once():
    sequence = " ".join(
        [
            person("v0=200 v1=100 v2=500 v3=900", "v0=150 v0=50 v0=50"),
            "human v0=1 v1=2 v2=3 v3=4 pose v0=1",  # malformed
            person("v0=600 v1=100 v2=900 v3=900", "v0=40 v0=50 v0=50", codes=" ".join(["v0=9"] * 8)),
        ]
    )
    decoder = FixedRotations()
    skeleton = GenericSkeleton()
    persons = persons_from_sequence(emitted(sequence), decoder, skeleton)
    assert [p.index for p in persons] == [0, 1, 2]
    assert len(decoder.calls) == 1
    assert decoder.calls[0].tolist() == [[1, 2, 3, 4, 517, 518, 519, 520], [9] * 8]

    first, broken, behind = persons
    assert first.valid and first.reason is None
    assert not broken.valid and "missing group" in broken.reason and np.isnan(broken.joints_3d).all()
    assert not behind.valid and "camera scale" in behind.reason
    np.testing.assert_allclose(behind.box_xyxy, np.array([600, 100, 900, 900]) / 999 * 224)

    np.testing.assert_allclose(first.box_xyxy, np.array([200, 100, 500, 900]) / 999 * 224)
    np.testing.assert_allclose(first.camera, [(150 - 49.95) / 49.95, 0.05 / 49.95, 0.05 / 49.95])
    np.testing.assert_allclose(first.rotations, IDENTITY_POSE)
    np.testing.assert_allclose(first.translation, camera_translation(first.camera, first.box_xyxy))
    expected = (
        forward_kinematics(skeleton.rest_joints(), first.global_orient, IDENTITY_POSE) + first.translation
    )
    np.testing.assert_allclose(first.joints_3d, expected)
    np.testing.assert_allclose(first.keypoints_2d, project(expected))
    # upright person: head above the pelvis above the ankles in the image, and inside the box horizontally
    rows = first.keypoints_2d[:, 1]
    assert rows[J["head"]] < rows[J["pelvis"]] < rows[J["left_ankle"]]
    x0, _, x1, _ = first.box_xyxy
    assert x0 < first.keypoints_2d[J["pelvis"], 0] < x1


def test_persons_from_sequence_with_a_real_decoder_and_no_humans():
    config = {"quant_type": "memcodes", "codebook_size": 16, "num_codebooks": 8, "latent_dim": 32}
    config |= {
        "n_channels": 207,
        "enc_type": "BottleneckMLP/B_1-Wi_16",
        "dec_type": "BottleneckMLP/B_1-Wi_16",
    }
    decoder = PoseDecoder(PoseTokenizerConfig.from_dict(config))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in decoder.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    sequence = person("v0=200 v1=100 v2=500 v3=900", "v0=150 v0=50 v0=50", codes=" ".join(["v0=3"] * 8))
    (decoded,) = persons_from_sequence(emitted(sequence), decoder, GenericSkeleton())
    expected = decoder.decode(torch.full((1, 8), 3)).numpy()[0]
    np.testing.assert_allclose(decoded.rotations, expected, rtol=1e-6)
    assert np.isfinite(decoded.keypoints_2d).all()
    assert persons_from_sequence(emitted("none"), decoder, GenericSkeleton()) == []


def test_generic_skeleton_rejects_a_nonsense_height():
    with pytest.raises(ValueError, match="metres"):
        GenericSkeleton(height_m=170)


def test_a_reflected_root_orientation_is_projected_to_the_nearest_rotation():
    """4M-21 generates the root orientation as nine numbers: a reflection (det -1) must not reach the
    quaternion code (it raised on the node's worker and stopped it)."""
    mirrored = "v0=999 v0=500 v0=500 v0=500 v0=0 v0=500 v0=500 v0=500 v0=999"  # diag(1, -1, 1), det -1
    sequence = person("v0=200 v1=100 v2=500 v3=900", "v0=150 v0=50 v0=50").replace(
        "global v0=999 v0=500 v0=500 v0=500 v0=0 v0=500 v0=500 v0=500 v0=0", f"global {mirrored}"
    )
    (mirror,) = persons_from_sequence(emitted(sequence), FixedRotations(), GenericSkeleton())
    assert mirror.valid, mirror.reason
    np.testing.assert_allclose(mirror.global_orient @ mirror.global_orient.T, IDENTITY, atol=1e-12)
    assert np.linalg.det(mirror.global_orient) == pytest.approx(1.0)
    assert np.isfinite(mirror.joints_3d).all()


def test_nearest_rotation_of_noisy_and_degenerate_matrices():
    noisy = rotation_z(30) * 1.02 + 0.01
    projected = nearest_rotation(noisy)
    assert np.linalg.det(projected) == pytest.approx(1.0)
    np.testing.assert_allclose(projected, rotation_z(30), atol=0.02)
    np.testing.assert_allclose(nearest_rotation(rotation_z(75)), rotation_z(75), atol=1e-12)
    assert nearest_rotation(np.zeros((3, 3))) is None
    assert nearest_rotation(np.full((3, 3), np.nan)) is None
