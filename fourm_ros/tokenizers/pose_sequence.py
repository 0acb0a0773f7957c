"""Parser of the ``human_poses`` token sequence of 4M-21.

Format (reference ``HumanPoseTransform`` and ``visualize_human_poses``), per person 39 words::

    human v0=x0 v1=y0 v2=x1 v3=y1  <four groups in any order>

with the groups ``pose`` + 8 pose-tokenizer codes (code k < 512 written ``v0=k``, else ``v1=k-512``),
``global`` + 9 values of the global-orientation rotation matrix (row-major, (v - 499.5) / 499.5),
``camera`` + 3 values of the 4D-Humans weak-perspective camera (s, tx, ty), (v - 49.95) / 49.95, and
``shape`` + 10 SMPL betas, (v - 499.5) / 166.5. Group values are written as ``v0=`` tokens. The box is xyxy,
each coordinate round(x · 999) of the position normalized to the 224×224 input crop. Persons follow each
other; the single word ``none`` means "no humans".

Model output can be malformed (missing or repeated group, wrong number of values, a stray token, a sequence
cut off by the token budget). Such a person is skipped with a reason, never with an exception; the other
persons are still read.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from fourm_ros.tokenizers import text

PERSON_WORD = "human"
NO_HUMANS_WORD = "none"
GROUP_SIZES = {"pose": 8, "global": 9, "camera": 3, "shape": 10}
"""Number of values after each group keyword."""
POSE_CODE_SPLIT = 512
"""Pose codes k >= 512 are written ``v1=k-512``: one value-token axis holds only 1000 values."""
GLOBAL_ORIENT_CENTER = GLOBAL_ORIENT_SCALE = 499.5
CAMERA_CENTER = CAMERA_SCALE = 49.95
BETAS_CENTER, BETAS_SCALE = 499.5, 166.5
CROP_SIZE = 224
"""The model's input crop; boxes and keypoints are in its pixels."""


@dataclass(frozen=True)
class PersonTokens:
    """One person as read from the sequence (values dequantized, not yet decoded)."""

    box_xyxy: np.ndarray
    """[4] float, xyxy in pixels of the 224×224 input crop."""
    pose_codes: np.ndarray
    """[8] int64, one pose-tokenizer code per Memcodes head."""
    global_orient: np.ndarray
    """[3, 3] float, root rotation (as quantized; not re-orthonormalized, like the reference)."""
    camera: np.ndarray
    """[3] float, weak-perspective camera (s, tx, ty) relative to the person's box."""
    betas: np.ndarray
    """[10] float, SMPL shape coefficients."""


@dataclass(frozen=True)
class SkippedPerson:
    """A person that could not be read: its position among the ``human`` groups, and why."""

    index: int
    reason: str


@dataclass(frozen=True)
class PoseSequence:
    """Everything read from one ``human_poses`` sequence.

    ``persons`` and ``skipped`` together cover every ``human`` group; ``index`` gives the order.
    ``no_humans`` is True when the sequence says ``none``. ``notes`` lists tokens outside any person.
    """

    persons: tuple[tuple[int, PersonTokens], ...]
    skipped: tuple[SkippedPerson, ...]
    no_humans: bool
    terminated: bool
    notes: tuple[str, ...] = ()


class _Malformed(Exception):
    """Internal: the reason a person is skipped."""


def _is_sentinel(word: str) -> bool:
    return word.startswith("[S_") and word.endswith("]")


def _value(word: str, axes: Sequence[int], where: str) -> tuple[int, int]:
    parsed = text.parse_value_token(word)
    if parsed is None:
        raise _Malformed(f"unexpected token {word!r} in {where}; expected a value token")
    if parsed[0] not in axes:
        expected = "/".join(f"v{axis}=" for axis in axes)
        raise _Malformed(f"wrong value token {word!r} in {where}; expected {expected}")
    return parsed


def _pose_code(word: str) -> int:
    axis, value = _value(word, (0, 1), "group 'pose'")
    if axis == 1 and value >= POSE_CODE_SPLIT:
        raise _Malformed(f"pose code {word!r} is out of range (v1= carries codes 512..1023: values < 512)")
    return value + POSE_CODE_SPLIT * axis


def _read_person(words: Sequence[str]) -> PersonTokens:
    """words: everything after ``human`` up to the next ``human`` (or the end)."""
    if len(words) < 4:
        raise _Malformed(f"box has {len(words)} of 4 values")
    box = [_value(word, (axis,), "the box")[1] for axis, word in enumerate(words[:4])]
    groups: dict[str, list[str]] = {}
    current = None
    for word in words[4:]:
        if word in GROUP_SIZES:
            if word in groups:
                raise _Malformed(f"duplicate group {word!r}")
            current = groups[word] = []
        elif current is None:
            expected = ", ".join(GROUP_SIZES)
            raise _Malformed(f"unexpected token {word!r} after the box; expected a group: {expected}")
        else:
            current.append(word)
    missing = [name for name in GROUP_SIZES if name not in groups]
    if missing:
        raise _Malformed(f"missing group(s) {', '.join(missing)}")
    numbers = {}
    for name, group in groups.items():
        if name == "pose":
            numbers[name] = np.array([_pose_code(word) for word in group], dtype=np.int64)
        else:
            where = f"group {name!r}"
            numbers[name] = np.array([_value(word, (0,), where)[1] for word in group], dtype=np.float64)
        if len(group) != GROUP_SIZES[name]:
            raise _Malformed(f"group {name!r} has {len(group)} values, expected {GROUP_SIZES[name]}")
    return PersonTokens(
        box_xyxy=np.array([text.value_to_pixels(value, CROP_SIZE) for value in box]),
        pose_codes=numbers["pose"],
        global_orient=((numbers["global"] - GLOBAL_ORIENT_CENTER) / GLOBAL_ORIENT_SCALE).reshape(3, 3),
        camera=(numbers["camera"] - CAMERA_CENTER) / CAMERA_SCALE,
        betas=(numbers["shape"] - BETAS_CENTER) / BETAS_SCALE,
    )


def parse_pose_tokens(words: Sequence[str] | str, terminated: bool = True) -> PoseSequence:
    """Read persons from the words of a ``human_poses`` sequence (a list of tokens, or one string).

    ``terminated`` False means the sequence was cut off (no ``[EOS]``): an unreadable last person is then
    reported as truncated. A string is split on whitespace and read up to its first ``[EOS]``.
    """
    if isinstance(words, str):
        words = words.split()
    words = [word for word in words if word != "[PAD]"]
    while words and _is_sentinel(words[0]):
        words = words[1:]
    ends = [i for i, word in enumerate(words) if word == "[EOS]" or _is_sentinel(word)]
    if ends:
        words, terminated = words[: ends[0]], True
    starts = [i for i, word in enumerate(words) if word == PERSON_WORD]
    leading = words[: starts[0]] if starts else list(words)
    no_humans = leading[:1] == [NO_HUMANS_WORD]
    stray = leading[1:] if no_humans else leading
    notes = []
    if stray:
        notes.append(f"ignored tokens outside any person: {' '.join(stray)!r}")
    if no_humans and starts:
        notes.append("the sequence says 'none' but also lists persons")
    persons, skipped = [], []
    for index, start in enumerate(starts):
        end = starts[index + 1] if index + 1 < len(starts) else len(words)
        try:
            persons.append((index, _read_person(words[start + 1 : end])))
        except _Malformed as error:
            reason = str(error)
            if end == len(words) and not terminated:
                reason = f"truncated (the sequence ended without [EOS]): {reason}"
            skipped.append(SkippedPerson(index, reason))
    return PoseSequence(tuple(persons), tuple(skipped), no_humans, terminated, tuple(notes))


def parse_pose_ids(ids: Iterable[int]) -> PoseSequence:
    """Read persons from generated ``human_poses`` ids (``[S_1] … [EOS] [S_2]``, framing optional)."""
    span = text.generated_span(ids)
    return parse_pose_tokens(text.tokens(span.ids), terminated=span.terminated)
