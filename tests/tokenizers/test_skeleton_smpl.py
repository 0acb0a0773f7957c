"""User-supplied SMPL model (.npz only): joints equal smplx's SMPL layer; pickles, bad files refused."""

from pathlib import Path

import numpy as np
import pytest

from fourm_ros.tokenizers.skeleton import PARENTS, SmplSkeleton, forward_kinematics

DATA = Path(__file__).parent / "data" / "pose"


def synthetic_smpl(seed: int = 11, vertices: int = 6890) -> dict:
    """A random stand-in for an SMPL model (no SMPL data is shipped); the golden joints came from smplx's
    SMPLLayer(pose2rot=False) on exactly these arrays."""
    rng = np.random.RandomState(seed)
    v_template = (rng.standard_normal((vertices, 3)) * 0.3).astype(np.float32)
    shapedirs = (rng.standard_normal((vertices, 3, 10)) * 0.01).astype(np.float32)
    regressor = np.zeros((24, vertices), dtype=np.float32)
    for joint in range(24):
        picked = rng.choice(vertices, 8, replace=False)
        weights = rng.uniform(0.1, 1.0, 8)
        regressor[joint, picked] = weights / weights.sum()
    kintree = np.array([[2**32 - 1, *PARENTS[1:]], list(range(24))], dtype=np.int64)
    return {
        "v_template": v_template,
        "shapedirs": shapedirs,
        "J_regressor": regressor,
        "kintree_table": kintree,
    }


def pose_inputs(seed: int = 12, persons: int = 3) -> dict:
    """Random rotation matrices (Rodrigues) and betas; same recipe as the golden."""
    rng = np.random.RandomState(seed)

    def rotations(count):
        axis = rng.standard_normal((count, 3))
        axis /= np.linalg.norm(axis, axis=1, keepdims=True)
        angle = rng.uniform(-np.pi, np.pi, (count, 1, 1))
        cross = np.zeros((count, 3, 3))
        cross[:, 0, 1], cross[:, 0, 2], cross[:, 1, 2] = -axis[:, 2], axis[:, 1], -axis[:, 0]
        cross = cross - cross.transpose(0, 2, 1)
        return np.eye(3) + np.sin(angle) * cross + (1 - np.cos(angle)) * cross @ cross

    return {
        "global_orient": rotations(persons),
        "rotations": rotations(persons * 23).reshape(persons, 23, 3, 3),
        "betas": rng.uniform(-3, 3, (persons, 10)),
    }


@pytest.fixture
def smpl_file(tmp_path):
    path = tmp_path / "SMPL_TEST.npz"
    np.savez(path, **synthetic_smpl())
    return path


def test_joints_equal_the_smpl_layer_of_the_reference(smpl_file):
    golden = np.load(DATA / "skeleton_reference.npz")["smpl_joints"]
    skeleton = SmplSkeleton.from_npz(smpl_file)
    inputs = pose_inputs()
    for i, expected in enumerate(golden):
        rest = skeleton.rest_joints(inputs["betas"][i])
        posed = forward_kinematics(rest, inputs["global_orient"][i], inputs["rotations"][i])
        np.testing.assert_allclose(posed, expected, atol=1e-5)


def test_betas_change_the_joints_linearly(smpl_file):
    skeleton = SmplSkeleton.from_npz(smpl_file)
    zero = skeleton.rest_joints(np.zeros(10))
    model = synthetic_smpl()
    np.testing.assert_allclose(zero, model["J_regressor"] @ model["v_template"], atol=1e-6)
    betas = np.arange(10) / 5.0
    direction = np.einsum("jv,vcb->jcb", model["J_regressor"], model["shapedirs"]) @ betas
    np.testing.assert_allclose(skeleton.rest_joints(betas) - zero, direction, atol=1e-6)
    with pytest.raises(ValueError, match=r"\[10\]"):
        skeleton.rest_joints(np.zeros(300))


def test_parents_array_and_wider_shape_space_are_accepted(tmp_path):
    model = synthetic_smpl(vertices=50)
    model["parents"] = np.array([-1, *PARENTS[1:]])
    del model["kintree_table"]
    model["shapedirs"] = np.concatenate([model["shapedirs"], np.ones((50, 3, 290), np.float32)], axis=2)
    np.savez(tmp_path / "smpl300.npz", **model)
    skeleton = SmplSkeleton.from_npz(tmp_path / "smpl300.npz")
    reference = synthetic_smpl(vertices=50)
    expected = reference["J_regressor"] @ (
        reference["v_template"] + reference["shapedirs"] @ np.full(10, 0.5)
    )
    np.testing.assert_allclose(skeleton.rest_joints(np.full(10, 0.5)), expected, atol=1e-6)


def test_pickle_is_refused_with_conversion_instructions(tmp_path):
    path = tmp_path / "SMPL_NEUTRAL.pkl"
    path.write_bytes(b"not read")
    with pytest.raises(ValueError, match=r"pickle.*np\.savez"):
        SmplSkeleton.from_npz(path)


def test_npz_with_pickled_objects_is_refused(tmp_path):
    model = synthetic_smpl(vertices=50)
    model["J_regressor"] = np.array([{"sparse": True}], dtype=object)
    np.savez(tmp_path / "objects.npz", **model)
    with pytest.raises(ValueError, match="Python objects"):
        SmplSkeleton.from_npz(tmp_path / "objects.npz")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.pop("shapedirs"), "lacks"),
        (lambda m: m.pop("kintree_table"), "kintree_table"),
        (lambda m: m.update(J_regressor=np.zeros((52, 50), np.float32)), "24-joint SMPL body"),
        (lambda m: m.update(shapedirs=np.zeros((50, 3, 4), np.float32)), "shapedirs must be"),
        (lambda m: m.update(v_template=np.zeros((50, 2), np.float32)), "v_template must be"),
        (lambda m: m["kintree_table"].__setitem__((0, 5), 3), "kinematic tree"),
    ],
)
def test_bad_model_files_are_refused_with_the_problem_named(tmp_path, edit, message):
    model = synthetic_smpl(vertices=50)
    edit(model)
    np.savez(tmp_path / "bad.npz", **model)
    with pytest.raises(ValueError, match=message):
        SmplSkeleton.from_npz(tmp_path / "bad.npz")


def test_missing_or_unreadable_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        SmplSkeleton.from_npz(tmp_path / "absent.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable"):
        SmplSkeleton.from_npz(tmp_path / "junk.npz")
