"""Skeleton and caption markers, root poses, and rotation matrix → quaternion."""

import numpy as np
import pytest
from std_msgs.msg import Header
from visualization_msgs.msg import Marker

from fourm_ros.ros.markers import (
    SKELETON_NAMESPACE,
    caption_marker,
    root_poses,
    rotation_to_quaternion,
    skeleton_markers,
)

PARENTS = [-1, 0, 1, 0]  # root, child, grandchild, second child


def _header():
    header = Header(frame_id="cam_optical_frame")
    header.stamp.sec, header.stamp.nanosec = 12, 34
    return header


def _xyz(point):
    return (point.x, point.y, point.z)


def _person(offset):
    return np.array([[0, 0, 2], [0, -0.5, 2], [0, -1, 2], [0.3, 0, 2]], dtype=np.float64) + offset


def test_skeleton_markers_per_person_after_delete_all():
    header = _header()
    first, second = _person(0.0), _person(1.0)
    valid = [np.ones(4, bool), np.array([True, True, False, True])]
    markers = skeleton_markers([first, second], PARENTS, header, valid=valid, lifetime_s=0.25).markers
    assert [m.action for m in markers] == [Marker.DELETEALL] + [Marker.ADD] * 4
    assert markers[0].ns == SKELETON_NAMESPACE
    assert [(m.type, m.id) for m in markers[1:]] == [
        (Marker.LINE_LIST, 0),
        (Marker.SPHERE_LIST, 1),
        (Marker.LINE_LIST, 2),
        (Marker.SPHERE_LIST, 3),
    ]
    for marker in markers:
        assert marker.header == header and marker.header is not header
    bones = [_xyz(p) for p in markers[1].points]
    assert bones == [
        tuple(first[0]),
        tuple(first[1]),
        tuple(first[1]),
        tuple(first[2]),
        tuple(first[0]),
        tuple(first[3]),
    ]
    # joint 2 of the second person is invalid: its bone and its sphere are left out
    assert [_xyz(p) for p in markers[3].points] == [tuple(second[i]) for i in (0, 1, 0, 3)]
    assert [_xyz(p) for p in markers[4].points] == [tuple(second[i]) for i in (0, 1, 3)]
    first_colour, second_colour = markers[1].color, markers[3].color
    assert markers[2].color == first_colour and first_colour != second_colour and first_colour.a == 1.0
    assert (markers[1].lifetime.sec, markers[1].lifetime.nanosec) == (0, 250_000_000)
    assert markers[1].pose.orientation.w == 1.0 and markers[1].scale.x > 0 and markers[2].scale.z > 0


def test_non_finite_joints_are_skipped_and_no_people_clears_all():
    joints = _person(0.0)
    joints[3] = np.nan
    markers = skeleton_markers([joints], PARENTS, _header()).markers
    assert len(markers[2].points) == 3 and len(markers[1].points) == 4
    empty = skeleton_markers([], PARENTS, _header()).markers
    assert [m.action for m in empty] == [Marker.DELETEALL]


@pytest.mark.parametrize(
    ("persons", "parents", "valid", "message"),
    [
        ([np.zeros((3, 3))], PARENTS, None, r"person 0 joints have shape \(3, 3\); expected \(4, 3\)"),
        ([np.zeros((4, 3))], [-1, 0, 5, 0], None, r"parents\[2\] = 5; expected -1 \(root\) or another joint"),
        ([np.zeros((4, 3))], [-1, 1, 1, 0], None, r"parents\[1\] = 1"),
        (
            [np.zeros((4, 3))],
            PARENTS,
            [np.ones(4, bool)] * 2,
            r"valid has 2 entries; expected one per person",
        ),
        ([np.zeros((4, 3))], PARENTS, [np.ones(3, bool)], r"valid\[0\] has shape \(3,\); expected \(4,\)"),
    ],
)
def test_skeleton_input_errors(persons, parents, valid, message):
    with pytest.raises(ValueError, match=message):
        skeleton_markers(persons, parents, _header(), valid=valid)


def _rotate(quaternion, vector):
    """Rotate ``vector`` by the unit quaternion (x, y, z, w): v' = q v q*."""
    x, y, z, w = quaternion
    u = np.array([x, y, z])
    return 2 * u.dot(vector) * u + (w * w - u.dot(u)) * vector + 2 * w * np.cross(u, vector)


def _random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


HALF = np.sqrt(0.5)


@pytest.mark.parametrize(
    ("matrix", "quaternion"),
    [
        (np.eye(3), [0, 0, 0, 1]),
        ([[0, -1, 0], [1, 0, 0], [0, 0, 1]], [0, 0, HALF, HALF]),  # +90° about z: x → y
        ([[1, 0, 0], [0, 0, -1], [0, 1, 0]], [HALF, 0, 0, HALF]),  # +90° about x: y → z
        ([[1, 0, 0], [0, -1, 0], [0, 0, -1]], [1, 0, 0, 0]),  # 180° about x
        ([[-1, 0, 0], [0, 1, 0], [0, 0, -1]], [0, 1, 0, 0]),  # 180° about y
        ([[-1, 0, 0], [0, -1, 0], [0, 0, 1]], [0, 0, 1, 0]),  # 180° about z
    ],
)
def test_known_rotations(matrix, quaternion):
    np.testing.assert_allclose(rotation_to_quaternion(np.array(matrix, dtype=float)), quaternion, atol=1e-12)


def test_random_rotations_rotate_the_axes_like_the_matrix():
    rng = np.random.default_rng(0)
    for _ in range(200):
        rotation = _random_rotation(rng)
        quaternion = rotation_to_quaternion(rotation)
        assert quaternion[3] >= 0 and np.linalg.norm(quaternion) == pytest.approx(1.0)
        for axis in np.eye(3):
            np.testing.assert_allclose(_rotate(quaternion, axis), rotation @ axis, atol=1e-9)


def test_slightly_non_orthonormal_matrix_gives_the_nearest_rotation():
    rng = np.random.default_rng(1)
    rotation = _random_rotation(rng)
    noisy = rotation + rng.normal(scale=1e-3, size=(3, 3))
    quaternion = rotation_to_quaternion(noisy)
    assert np.linalg.norm(quaternion) == pytest.approx(1.0)
    np.testing.assert_allclose(_rotate(quaternion, np.array([1.0, 0, 0])), rotation[:, 0], atol=5e-3)


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        (np.diag([1.0, 1.0, -1.0]), "reflection"),
        (np.full((3, 3), np.nan), "finite 3×3"),
        (np.eye(4), r"shape \(4, 4\)"),
    ],
)
def test_invalid_rotations(matrix, message):
    with pytest.raises(ValueError, match=message):
        rotation_to_quaternion(matrix)


def test_root_poses():
    header = _header()
    positions = np.array([[0.1, 0.2, 3.0], [-1.0, 0.5, 4.0]])
    rotations = np.stack([np.eye(3), [[0, -1, 0], [1, 0, 0], [0, 0, 1]]])
    poses = root_poses(positions, rotations, header)
    assert poses.header == header and poses.header is not header
    assert [_xyz(p.position) for p in poses.poses] == [tuple(p) for p in positions]
    orientation = poses.poses[1].orientation
    np.testing.assert_allclose(
        [orientation.x, orientation.y, orientation.z, orientation.w], [0, 0, HALF, HALF]
    )
    with pytest.raises(ValueError, match=r"rotations must have shape \[2, 3, 3\]"):
        root_poses(positions, rotations[:1], header)
    with pytest.raises(ValueError, match=r"positions must have shape \[N, 3\]"):
        root_poses(positions[:, :2], rotations, header)


def test_caption_marker():
    header = _header()
    marker = caption_marker("a person riding a bicycle", header, position=(0.0, -0.4, 1.5), height=0.1)
    assert marker.type == Marker.TEXT_VIEW_FACING and marker.action == Marker.ADD
    assert marker.text == "a person riding a bicycle"
    assert marker.header == header and marker.header is not header
    assert _xyz(marker.pose.position) == (0.0, -0.4, 1.5) and marker.pose.orientation.w == 1.0
    assert marker.scale.z == 0.1 and marker.color.a == 1.0
    assert caption_marker("next", header).id == marker.id  # a new caption replaces the previous one
