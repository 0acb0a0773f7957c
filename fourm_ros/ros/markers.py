"""rviz markers for human poses and captions, in the image's optical frame (x right, y down, z forward).

Everything is stamped with the image header, never ``map`` or ``now()`` (the ros2_trt_pose complaint in
the peer survey), so rviz places the markers with the frame they were computed from.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point, Pose, PoseArray, Quaternion
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from fourm_ros.ros.conversion import copy_header

SKELETON_NAMESPACE = "fourm_ros/skeleton"
CAPTION_NAMESPACE = "fourm_ros/caption"
_GOLDEN_RATIO = 0.618033988749895


def person_colour(index: int) -> ColorRGBA:
    """A distinct, stable colour per person index (hues spaced by the golden ratio)."""
    red, green, blue = colorsys.hsv_to_rgb((index * _GOLDEN_RATIO) % 1.0, 0.85, 0.95)
    return ColorRGBA(r=red, g=green, b=blue, a=1.0)


def _duration(seconds: float) -> Duration:
    whole = int(seconds)
    return Duration(sec=whole, nanosec=round((seconds - whole) * 1e9))


def _marker(header: Header, namespace: str, marker_id: int, kind: int, lifetime_s: float) -> Marker:
    marker = Marker(header=copy_header(header), ns=namespace, id=marker_id, type=kind, action=Marker.ADD)
    marker.pose.orientation.w = 1.0  # identity; rviz rejects an all-zero quaternion
    marker.lifetime = _duration(lifetime_s)
    return marker


def _check_parents(parents: Sequence[int]) -> list[int]:
    parents = [int(parent) for parent in parents]
    for joint, parent in enumerate(parents):
        if not -1 <= parent < len(parents) or parent == joint:
            raise ValueError(
                f"parents[{joint}] = {parent}; expected -1 (root) or another joint index "
                f"in 0..{len(parents) - 1}"
            )
    return parents


def skeleton_markers(
    persons_joints: Sequence[np.ndarray],
    parents: Sequence[int],
    header: Header,
    valid: Sequence[np.ndarray] | None = None,
    namespace: str = SKELETON_NAMESPACE,
    lifetime_s: float = 0.5,
    line_width: float = 0.02,
    joint_diameter: float = 0.05,
) -> MarkerArray:
    """Bones (LINE_LIST) and joints (SPHERE_LIST) per person, after a DELETEALL of ``namespace``.

    ``persons_joints``: one [J, 3] array of joint positions in metres per person; ``parents[j]`` is the
    parent joint of j (-1 for the root). ``valid`` optionally masks joints per person; non-finite joints
    are always skipped. The DELETEALL removes people from the previous frame who are gone now, and the
    lifetime clears everything if the node stops publishing.
    """
    parents = _check_parents(parents)
    if valid is not None and len(valid) != len(persons_joints):
        raise ValueError(f"valid has {len(valid)} entries; expected one per person ({len(persons_joints)})")
    clear = Marker(header=copy_header(header), ns=namespace, action=Marker.DELETEALL)
    markers = [clear]
    for person, joints in enumerate(persons_joints):
        joints = np.asarray(joints, dtype=np.float64)
        if joints.shape != (len(parents), 3):
            raise ValueError(
                f"person {person} joints have shape {joints.shape}; "
                f"expected ({len(parents)}, 3) to match parents"
            )
        usable = np.isfinite(joints).all(axis=1)
        if valid is not None:
            mask = np.asarray(valid[person], dtype=bool)
            if mask.shape != (len(parents),):
                raise ValueError(f"valid[{person}] has shape {mask.shape}; expected ({len(parents)},)")
            usable &= mask
        points = [Point(x=x, y=y, z=z) for x, y, z in joints.tolist()]
        colour = person_colour(person)

        bones = _marker(header, namespace, 2 * person, Marker.LINE_LIST, lifetime_s)
        bones.scale.x = line_width
        bones.color = colour
        for joint, parent in enumerate(parents):
            if parent >= 0 and usable[joint] and usable[parent]:
                bones.points += [points[parent], points[joint]]

        spheres = _marker(header, namespace, 2 * person + 1, Marker.SPHERE_LIST, lifetime_s)
        spheres.scale.x = spheres.scale.y = spheres.scale.z = joint_diameter
        spheres.color = colour
        spheres.points = [point for point, ok in zip(points, usable, strict=True) if ok]
        markers += [marker for marker in (bones, spheres) if marker.points]
    return MarkerArray(markers=markers)


def rotation_to_quaternion(rotation: np.ndarray) -> np.ndarray:
    """A 3×3 rotation matrix → a unit quaternion (x, y, z, w) with w >= 0.

    The matrix is first projected onto the nearest rotation (SVD), so float16 round-off or a slightly
    non-orthonormal network output still gives a valid quaternion; the largest of w, x, y, z is then
    computed first (Shepperd), which avoids dividing by a small number near 180° rotations.
    """
    matrix = np.asarray(rotation, dtype=np.float64)
    if matrix.shape != (3, 3) or not np.isfinite(matrix).all():
        raise ValueError(f"expected a finite 3×3 rotation matrix, got shape {matrix.shape}")
    u, _, vt = np.linalg.svd(matrix)
    if np.linalg.det(u @ vt) < 0:
        raise ValueError("the matrix is a reflection (determinant < 0), not a rotation")
    r = u @ vt
    trace = np.trace(r)
    largest = int(np.argmax([trace, r[0, 0], r[1, 1], r[2, 2]]))
    if largest == 0:
        w = 0.5 * np.sqrt(1.0 + trace)
        x, y, z = (r[2, 1] - r[1, 2]) / (4 * w), (r[0, 2] - r[2, 0]) / (4 * w), (r[1, 0] - r[0, 1]) / (4 * w)
    else:
        i = largest - 1
        j, k = (i + 1) % 3, (i + 2) % 3
        q = np.empty(3)
        q[i] = 0.5 * np.sqrt(1.0 + r[i, i] - r[j, j] - r[k, k])
        q[j] = (r[j, i] + r[i, j]) / (4 * q[i])
        q[k] = (r[k, i] + r[i, k]) / (4 * q[i])
        w = (r[k, j] - r[j, k]) / (4 * q[i])
        x, y, z = q
    quaternion = np.array([x, y, z, w])
    quaternion /= np.linalg.norm(quaternion)
    return -quaternion if quaternion[3] < 0 else quaternion


def root_poses(positions: np.ndarray, rotations: np.ndarray, header: Header) -> PoseArray:
    """One pose per person (root joint position [N, 3] in metres, orientation [N, 3, 3]) as a PoseArray."""
    positions = np.asarray(positions, dtype=np.float64)
    rotations = np.asarray(rotations, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1:] != (3,):
        raise ValueError(f"positions must have shape [N, 3], got {positions.shape}")
    if rotations.shape != (len(positions), 3, 3):
        raise ValueError(
            f"rotations must have shape [{len(positions)}, 3, 3] to match, got {rotations.shape}"
        )
    if not np.isfinite(positions).all():
        raise ValueError("positions must be finite")
    poses = []
    for position, rotation in zip(positions.tolist(), rotations, strict=True):
        x, y, z, w = rotation_to_quaternion(rotation).tolist()
        poses.append(
            Pose(
                position=Point(x=position[0], y=position[1], z=position[2]),
                orientation=Quaternion(x=x, y=y, z=z, w=w),
            )
        )
    return PoseArray(header=copy_header(header), poses=poses)


def caption_marker(
    text: str,
    header: Header,
    position: Sequence[float] = (0.0, -0.35, 1.0),
    height: float = 0.06,
    lifetime_s: float = 0.0,
    namespace: str = CAPTION_NAMESPACE,
) -> Marker:
    """The caption as camera-facing text, by default 1 m ahead and above the image centre (y is down).

    The id is fixed, so each caption replaces the previous one; lifetime 0 keeps it until then, which
    suits captions that are only computed every few frames.
    """
    marker = _marker(header, namespace, 0, Marker.TEXT_VIEW_FACING, lifetime_s)
    x, y, z = (float(value) for value in position)
    marker.pose.position = Point(x=x, y=y, z=z)
    marker.scale.z = height
    marker.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
    marker.text = text
    return marker
