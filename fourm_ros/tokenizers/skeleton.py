"""3D skeletons and 2D keypoints of the persons in a generated ``human_poses`` sequence.

4M-21 predicts, per person, the SMPL parameters of its pseudo-labeler 4D-Humans (HMR 2.0): 23 body-joint
rotations (through the pose tokenizer), the global orientation, 10 shape coefficients (betas) and a
weak-perspective camera relative to the person's box. Joints come from forward kinematics on the SMPL
kinematic tree (24 joints: the pelvis and the 23 body joints, SMPL order), either on

* ``GenericSkeleton``: a generic adult built from published segment proportions (no SMPL files needed);
  it ignores the betas, or
* ``SmplSkeleton``: the user's own licensed SMPL model (``.npz``), shaped by the predicted betas, which
  gives the same joints as the SMPL layer the reference uses (``pose2rot=False``, no translation).

Camera convention (4D-Humans ``cam_crop_to_full`` as called by the reference's ``visualize_human_poses``):
the 224×224 input crop is seen by a pinhole camera with focal length 5000 / 256 · 224 = 4375 px (4D-Humans'
5000 px at its 256 px crop, rescaled) and the principal point at the crop centre. The predicted camera
(s, tx, ty) turns into the translation of the SMPL model origin, with b = max(box width, box height) and
(cx, cy) the box centre in crop pixels::

    t = (2 (cx - 112) / (b s) + tx,  2 (cy - 112) / (b s) + ty,  2 · 4375 / (b s))

(4D-Humans' own demo first widens a box to a 3:4 width:height aspect before taking b; the reference's
decoding does not, and neither does this module, so the two differ for boxes wider than 3:4.)

Camera frame: x right, y down, z forward (OpenCV); units are metres of the body model, so the depth is only
as right as the assumed focal length — treat ``joints_3d`` as known up to scale. 2D keypoints are continuous
pixel coordinates of the 224×224 crop, (0, 0) at its top-left corner.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from fourm_ros.tokenizers.human_pose import NUM_BODY_JOINTS, PoseDecoder
from fourm_ros.tokenizers.pose_sequence import CROP_SIZE, PersonTokens, parse_pose_ids

JOINT_NAMES = (
    "pelvis",
    "left_hip",
    "right_hip",
    "spine1",
    "left_knee",
    "right_knee",
    "spine2",
    "left_ankle",
    "right_ankle",
    "spine3",
    "left_foot",
    "right_foot",
    "neck",
    "left_collar",
    "right_collar",
    "head",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hand",
    "right_hand",
)
PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)
"""SMPL kinematic tree: parent of each joint (the pelvis is the root)."""
NUM_JOINTS = len(JOINT_NAMES)
NUM_BETAS = 10

HMR_FOCAL_LENGTH = 5000.0
HMR_CROP_SIZE = 256
"""4D-Humans' focal length in pixels of its 256 px crop (``EXTRA.FOCAL_LENGTH``, ``MODEL.IMAGE_SIZE``)."""
SMPL_MEAN_PELVIS = (-0.0018, -0.2233, 0.0282)
"""Pelvis of the neutral SMPL mean shape in SMPL model coordinates (metres, y up). The predicted camera
translates the model origin, not the pelvis, so the generic skeleton puts its pelvis here."""


def focal_length(image_size: int = CROP_SIZE) -> float:
    """Focal length (pixels) for an image_size crop, as the reference rescales 4D-Humans' 5000 px."""
    return HMR_FOCAL_LENGTH / HMR_CROP_SIZE * image_size


def camera_translation(camera: np.ndarray, box_xyxy: np.ndarray, image_size: int = CROP_SIZE) -> np.ndarray:
    """Weak-perspective camera (s, tx, ty) relative to the box → translation [3] in the camera frame."""
    scale, shift_x, shift_y = (float(value) for value in camera)
    x0, y0, x1, y1 = (float(value) for value in box_xyxy)
    box_size = max(x1 - x0, y1 - y0)
    scaled = box_size * scale + 1e-9  # the reference's guard against s = 0
    centre_x, centre_y = (x0 + x1) / 2, (y0 + y1) / 2
    return np.array(
        [
            2 * (centre_x - image_size / 2) / scaled + shift_x,
            2 * (centre_y - image_size / 2) / scaled + shift_y,
            2 * focal_length(image_size) / scaled,
        ]
    )


def project(points: np.ndarray, image_size: int = CROP_SIZE) -> np.ndarray:
    """Camera-frame points [..., 3] → pixels [..., 2] of the image_size crop (pinhole, centred)."""
    points = np.asarray(points, dtype=np.float64)
    return focal_length(image_size) * points[..., :2] / points[..., 2:3] + image_size / 2


def nearest_rotation(matrix: np.ndarray) -> np.ndarray | None:
    """The proper rotation (orthonormal, determinant +1) nearest to ``matrix`` [3, 3] in the Frobenius
    norm, or None when there is no unique one (not finite, or rank < 2).

    4M-21 generates the root orientation as nine quantised numbers, so the matrix is only roughly a
    rotation and can even be a reflection (determinant < 0), which no quaternion represents. The SVD
    ``U diag(1, 1, d) Vᵀ`` with ``d = det(U Vᵀ)`` is the standard projection (Kabsch).
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (3, 3) or not np.isfinite(matrix).all():
        return None
    u, singular, vt = np.linalg.svd(matrix)
    if singular[1] <= 1e-9 * max(singular[0], 1e-300):
        return None
    sign = np.sign(np.linalg.det(u @ vt)) or 1.0
    return u @ np.diag([1.0, 1.0, sign]) @ vt


def forward_kinematics(
    rest_joints: np.ndarray,
    global_orient: np.ndarray,
    rotations: np.ndarray,
    parents: Iterable[int] = PARENTS,
) -> np.ndarray:
    """Posed joints [24, 3] in model coordinates.

    rest_joints [24, 3]: joint positions in the rest (T) pose. global_orient [3, 3]: root rotation, applied
    about the pelvis. rotations [23, 3, 3]: each body joint's rotation relative to its parent (joints 1..23).
    As in SMPL, the pelvis stays at its rest position and every other joint is
    ``parent position + parent's world rotation @ (rest offset from the parent)``.
    """
    rest_joints = np.asarray(rest_joints, dtype=np.float64)
    local = np.concatenate([np.asarray(global_orient)[None], np.asarray(rotations)]).astype(np.float64)
    world = np.empty_like(local)
    posed = np.empty_like(rest_joints)
    for joint, parent in enumerate(parents):
        if parent < 0:
            world[joint] = local[joint]
            posed[joint] = rest_joints[joint]
        else:
            world[joint] = world[parent] @ local[joint]
            posed[joint] = posed[parent] + world[parent] @ (rest_joints[joint] - rest_joints[parent])
    return posed


class Skeleton(Protocol):
    """Rest-pose joints of a body model on the SMPL tree."""

    def rest_joints(self, betas: np.ndarray) -> np.ndarray:
        """[24, 3] rest-pose joints (SMPL model coordinates: x to the body's left, y up, z forward)."""
        ...


# Winter, "Biomechanics and Motor Control of Human Movement", 4th ed. (2009), Fig. 4.1 (after Drillis &
# Contini 1966): landmark heights above the floor and widths, as fractions of body height H.
_WINTER = {
    "vertex": 1.000,
    "chin": 0.870,
    "shoulder": 0.818,
    "elbow": 0.630,
    "hip": 0.530,
    "wrist": 0.485,
    "fingertip": 0.377,
    "knee": 0.285,
    "ankle": 0.039,
    "shoulder_width": 0.259,
    "hip_width": 0.191,
    "foot_length": 0.152,
}


@dataclass(frozen=True)
class GenericSkeleton:
    """A generic adult of height ``height_m`` in the SMPL T-pose, from Winter's segment proportions.

    Source: D. A. Winter, "Biomechanics and Motor Control of Human Movement", 4th ed., Wiley 2009, Fig. 4.1
    (segment lengths as fractions of body height, after Drillis & Contini 1966). Arm segments are the
    standing height differences shoulder→elbow→wrist (0.188 H, 0.145 H), hand length wrist→fingertip
    0.108 H, leg segments hip→knee→ankle (0.245 H, 0.246 H), shoulder (acromion) width 0.259 H, hip width
    0.191 H, foot length 0.152 H. Placement choices of ours, not from the source: pelvis and hip joints at
    hip height, hip joints halfway between the mid-line and the trochanter (a quarter of the hip width
    from the mid-line), shoulder joints at the acromions, collars halfway to them, neck halfway between
    shoulder and chin, head at the centre of chin→vertex, spine1..3 evenly between pelvis and neck, the
    SMPL "hand" joint half a hand length beyond the wrist, the foot joint (ball of the foot) on the floor
    half a foot length in front of the ankle. The whole skeleton is shifted so that its pelvis lies where
    SMPL's mean-shape pelvis lies (``SMPL_MEAN_PELVIS``). Betas are ignored. It is an approximation: joint
    centres of a real body (or of SMPL) differ by centimetres, e.g. shoulder joints sit medial to the
    acromions.
    """

    height_m: float = 1.70

    def __post_init__(self) -> None:
        if not (math.isfinite(self.height_m) and 0.5 <= self.height_m <= 2.5):
            raise ValueError(f"height_m must be a body height in metres (0.5..2.5), got {self.height_m}")

    def rest_joints(self, betas: np.ndarray | None = None) -> np.ndarray:
        w = _WINTER
        neck = (w["shoulder"] + w["chin"]) / 2
        hip_x, collar_x, shoulder_x = w["hip_width"] / 4, w["shoulder_width"] / 4, w["shoulder_width"] / 2
        elbow_x = shoulder_x + w["shoulder"] - w["elbow"]
        wrist_x = elbow_x + w["elbow"] - w["wrist"]
        hand_x = wrist_x + (w["wrist"] - w["fingertip"]) / 2
        spine = [w["hip"] + k / 4 * (neck - w["hip"]) for k in (1, 2, 3)]
        foot_z = w["foot_length"] / 2
        # (x, y, z) per joint in SMPL order, as fractions of H above the floor.
        joints = [
            (0, w["hip"], 0),
            (hip_x, w["hip"], 0),
            (-hip_x, w["hip"], 0),
            (0, spine[0], 0),
            (hip_x, w["knee"], 0),
            (-hip_x, w["knee"], 0),
            (0, spine[1], 0),
            (hip_x, w["ankle"], 0),
            (-hip_x, w["ankle"], 0),
            (0, spine[2], 0),
            (hip_x, 0, foot_z),
            (-hip_x, 0, foot_z),
            (0, neck, 0),
            (collar_x, w["shoulder"], 0),
            (-collar_x, w["shoulder"], 0),
            (0, (w["chin"] + w["vertex"]) / 2, 0),
            (shoulder_x, w["shoulder"], 0),
            (-shoulder_x, w["shoulder"], 0),
            (elbow_x, w["shoulder"], 0),
            (-elbow_x, w["shoulder"], 0),
            (wrist_x, w["shoulder"], 0),
            (-wrist_x, w["shoulder"], 0),
            (hand_x, w["shoulder"], 0),
            (-hand_x, w["shoulder"], 0),
        ]
        joints = np.array(joints, dtype=np.float64) * self.height_m
        return joints - joints[0] + np.array(SMPL_MEAN_PELVIS)


_SMPL_NPZ_HOWTO = (
    "Convert the SMPL .pkl once, in an environment you trust (it needs chumpy and scipy): "
    "python -c \"import pickle, numpy as np; d = pickle.load(open('SMPL_NEUTRAL.pkl', 'rb'), "
    "encoding='latin1'); np.savez('SMPL_NEUTRAL.npz', v_template=np.array(d['v_template']), "
    "shapedirs=np.array(d['shapedirs']), J_regressor=d['J_regressor'].toarray(), "
    "kintree_table=np.array(d['kintree_table']))\""
)


class SmplSkeleton:
    """Joints of the user's own SMPL model shaped by the predicted betas (SMPL files are not shipped).

    Reads only a plain ``.npz`` (no pickles) with ``v_template`` [V, 3], ``shapedirs`` [V, 3, >=10],
    ``J_regressor`` [24, V] (dense) and ``kintree_table`` [2, 24] or ``parents`` [24].
    """

    def __init__(self, joint_template: np.ndarray, joint_shapedirs: np.ndarray):
        self.joint_template = np.asarray(joint_template, dtype=np.float64)
        self.joint_shapedirs = np.asarray(joint_shapedirs, dtype=np.float64)

    @classmethod
    def from_npz(cls, path: str | os.PathLike) -> SmplSkeleton:
        path = Path(path).expanduser()
        if path.suffix in (".pkl", ".pickle"):
            raise ValueError(
                f"{path} is a pickle; fourm_ros does not unpickle files (that can run arbitrary code). "
                + _SMPL_NPZ_HOWTO
            )
        if not path.is_file():
            raise FileNotFoundError(f"SMPL model file {path} does not exist")
        if not zipfile.is_zipfile(path):
            raise ValueError(
                f"{path} is not a readable .npz file (a zip archive of .npy arrays). {_SMPL_NPZ_HOWTO}"
            )
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except ValueError as error:
            raise ValueError(
                f"{path} holds Python objects (pickled arrays, e.g. a sparse J_regressor) and is refused; "
                f"store plain numeric arrays. {_SMPL_NPZ_HOWTO}"
            ) from error
        except (OSError, EOFError, zipfile.BadZipFile) as error:
            raise ValueError(f"{path} is not a readable .npz file: {error}") from error
        return cls(*_smpl_joint_model(arrays, path))

    def rest_joints(self, betas: np.ndarray) -> np.ndarray:
        betas = np.asarray(betas, dtype=np.float64)
        if betas.shape != (NUM_BETAS,):
            raise ValueError(f"betas must have shape [{NUM_BETAS}], got {list(betas.shape)}")
        return self.joint_template + self.joint_shapedirs @ betas


def _smpl_joint_model(arrays: dict[str, np.ndarray], path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Joint template [24, 3] and joint shape directions [24, 3, 10] (the joint regressor applied to both)."""
    absent = [key for key in ("v_template", "shapedirs", "J_regressor") if key not in arrays]
    if "kintree_table" not in arrays and "parents" not in arrays:
        absent.append("kintree_table (or parents)")
    if absent:
        raise ValueError(
            f"{path} lacks {absent}; an SMPL .npz needs v_template, shapedirs, J_regressor, "
            f"kintree_table. {_SMPL_NPZ_HOWTO}"
        )
    template, shapedirs, regressor = (arrays[key] for key in ("v_template", "shapedirs", "J_regressor"))
    vertices = template.shape[0] if template.ndim == 2 else -1
    if template.shape != (vertices, 3):
        raise ValueError(f"{path}: v_template must be [V, 3], got {list(template.shape)}")
    if shapedirs.ndim != 3 or shapedirs.shape[:2] != (vertices, 3) or shapedirs.shape[2] < NUM_BETAS:
        raise ValueError(
            f"{path}: shapedirs must be [{vertices}, 3, >={NUM_BETAS}], got {list(shapedirs.shape)}"
        )
    if regressor.shape != (NUM_JOINTS, vertices):
        raise ValueError(
            f"{path}: J_regressor must be [{NUM_JOINTS}, {vertices}] (the 24-joint SMPL body model), got "
            f"{list(regressor.shape)}"
        )
    parents = arrays["parents"] if "parents" in arrays else arrays["kintree_table"][0]
    parents = [int(parent) for parent in np.asarray(parents).reshape(-1)]
    if len(parents) != NUM_JOINTS or tuple(parents[1:]) != PARENTS[1:]:
        raise ValueError(f"{path}: kinematic tree {parents} is not the 24-joint SMPL tree {list(PARENTS)}")
    regressor = regressor.astype(np.float64)
    joint_template = regressor @ template.astype(np.float64)
    joint_shapedirs = np.einsum("jv,vcb->jcb", regressor, shapedirs[:, :, :NUM_BETAS].astype(np.float64))
    return joint_template, joint_shapedirs


@dataclass(frozen=True)
class Person:
    """One person of a ``human_poses`` sequence, decoded. When ``valid`` is False, ``reason`` says why and
    every number that could not be computed is NaN."""

    index: int
    """Position among the persons of the sequence."""
    box_xyxy: np.ndarray
    """[4] box in pixels of the 224×224 input crop."""
    rotations: np.ndarray
    """[23, 3, 3] body-joint rotations relative to the parent joint (SMPL order, joints 1..23)."""
    global_orient: np.ndarray
    """[3, 3] root rotation (model → camera frame): the generated matrix projected onto the nearest proper
    rotation (see :func:`nearest_rotation`); as generated when the person is invalid."""
    betas: np.ndarray
    """[10] SMPL shape coefficients (used by SmplSkeleton only)."""
    camera: np.ndarray
    """[3] predicted weak-perspective camera (s, tx, ty) relative to the box."""
    translation: np.ndarray
    """[3] camera-frame translation of the model origin."""
    joints_3d: np.ndarray
    """[24, 3] joints in the camera frame (x right, y down, z forward; metres up to scale)."""
    keypoints_2d: np.ndarray
    """[24, 2] joints projected into the 224×224 crop, in pixels."""
    valid: bool
    reason: str | None = None


def _nan(*shape: int) -> np.ndarray:
    return np.full(shape, np.nan)


def _invalid(index: int, reason: str, tokens: PersonTokens | None = None) -> Person:
    def known(name: str, *shape: int) -> np.ndarray:
        return np.asarray(getattr(tokens, name), dtype=np.float64) if tokens is not None else _nan(*shape)

    return Person(
        index=index,
        box_xyxy=known("box_xyxy", 4),
        rotations=_nan(NUM_BODY_JOINTS, 3, 3),
        global_orient=known("global_orient", 3, 3),
        betas=known("betas", NUM_BETAS),
        camera=known("camera", 3),
        translation=_nan(3),
        joints_3d=_nan(NUM_JOINTS, 3),
        keypoints_2d=_nan(NUM_JOINTS, 2),
        valid=False,
        reason=reason,
    )


def person_from_tokens(
    index: int, tokens: PersonTokens, rotations: np.ndarray, skeleton: Skeleton, image_size: int = CROP_SIZE
) -> Person:
    """Joints and keypoints of one parsed person whose pose codes are decoded to ``rotations`` [23, 3, 3]."""
    rotations = np.asarray(rotations, dtype=np.float64)
    x0, y0, x1, y1 = tokens.box_xyxy
    if max(x1 - x0, y1 - y0) <= 0:
        return _invalid(
            index, f"degenerate box {tokens.box_xyxy.round(1).tolist()} (no width or height)", tokens
        )
    if tokens.camera[0] <= 0:
        return _invalid(
            index, f"camera scale {tokens.camera[0]:.3f} <= 0 puts the person at no finite depth", tokens
        )
    global_orient = nearest_rotation(tokens.global_orient)
    if global_orient is None:
        return _invalid(index, "the generated root orientation is not a usable rotation (rank < 2)", tokens)
    translation = camera_translation(tokens.camera, tokens.box_xyxy, image_size)
    posed = forward_kinematics(skeleton.rest_joints(tokens.betas), global_orient, rotations)
    joints = posed + translation
    valid, reason = True, None
    if not np.isfinite(joints).all():
        valid, reason = False, "non-finite joints (the decoded rotations are not finite)"
    elif (joints[:, 2] <= 0).any():
        valid, reason = False, "joints at or behind the camera plane cannot be projected"
    keypoints = project(joints, image_size) if valid else _nan(NUM_JOINTS, 2)
    return Person(
        index=index,
        box_xyxy=np.asarray(tokens.box_xyxy, dtype=np.float64),
        rotations=rotations,
        global_orient=global_orient,
        betas=np.asarray(tokens.betas, dtype=np.float64),
        camera=np.asarray(tokens.camera, dtype=np.float64),
        translation=translation,
        joints_3d=joints,
        keypoints_2d=keypoints,
        valid=valid,
        reason=reason,
    )


def persons_from_sequence(ids: Iterable[int], pose_decoder: PoseDecoder, skeleton: Skeleton) -> list[Person]:
    """Generated ``human_poses`` ids → one Person per ``human`` group, in sequence order.

    Persons that cannot be parsed are returned with ``valid=False`` and the parser's reason; the pose decoder
    runs once for all readable persons.
    """
    sequence = parse_pose_ids(ids)
    persons = [_invalid(skipped.index, skipped.reason) for skipped in sequence.skipped]
    if sequence.persons:
        codes = torch.from_numpy(np.stack([tokens.pose_codes for _, tokens in sequence.persons]))
        rotations = pose_decoder.decode(codes).float().cpu().numpy()
        for (index, tokens), person_rotations in zip(sequence.persons, rotations, strict=True):
            persons.append(person_from_tokens(index, tokens, person_rotations, skeleton))
    return sorted(persons, key=lambda person: person.index)
