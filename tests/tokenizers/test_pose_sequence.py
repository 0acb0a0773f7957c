"""human_poses parser: reference-encoded persons, any group order, malformed persons, 'none'."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from fourm_ros.tokenizers import text
from fourm_ros.tokenizers.pose_sequence import parse_pose_ids, parse_pose_tokens

DATA = Path(__file__).parent / "data" / "pose"
CROP = 224


def person_words(seed: int, order=("pose", "global", "camera", "shape")) -> tuple[list[str], dict]:
    """The 39 words of one well-formed person (our own writer, following the documented format)."""
    rng = np.random.RandomState(seed)
    box = sorted(rng.randint(0, 1000, 2)) + sorted(rng.randint(0, 1000, 2))
    box = [box[0], box[2], box[1], box[3]]
    codes = rng.randint(0, 1024, 8)
    groups = {
        "pose": [f"v0={c}" if c < 512 else f"v1={c - 512}" for c in codes],
        "global": [f"v0={v}" for v in rng.randint(0, 1000, 9)],
        "camera": [f"v0={v}" for v in rng.randint(0, 1000, 3)],
        "shape": [f"v0={v}" for v in rng.randint(0, 1000, 10)],
    }
    words = ["human", *(f"v{axis}={value}" for axis, value in enumerate(box))]
    for name in order:
        words += [name, *groups[name]]
    return words, {"box": box, "codes": codes, **groups}


def framed(words: list[str], eos: bool = True) -> list[int]:
    """Ids as the model emits them: [S_1] content [EOS] [S_2] (or cut off without [EOS])."""
    content = text.encode(" ".join(words))
    tail = [text.EOS_ID, text.GENERATION_STOP_ID] if eos else []
    return [text.GENERATION_START_ID, *content, *tail]


def test_reference_encoded_persons_round_trip_within_quantization():
    fixture = json.loads((DATA / "pose_sequence_reference.json").read_text())
    for parsed in (parse_pose_ids(fixture["ids"]), parse_pose_tokens(fixture["decoded"])):
        assert parsed.skipped == () and not parsed.no_humans and parsed.terminated
        assert [index for index, _ in parsed.persons] == [0, 1, 2]
        for (_, person), source in zip(parsed.persons, fixture["persons"], strict=True):
            np.testing.assert_allclose(person.box_xyxy, np.array(source["box"]) * CROP, atol=0.5 / 999 * CROP)
            np.testing.assert_array_equal(person.pose_codes, source["codes"])
            np.testing.assert_allclose(
                person.global_orient, source["global_orient"], atol=0.5 / 499.5 + 1e-12
            )
            np.testing.assert_allclose(person.camera, source["camera"], atol=0.5 / 49.95 + 1e-12)
            np.testing.assert_allclose(person.betas, source["betas"], atol=0.5 / 166.5 + 1e-12)


def test_reference_fixture_records_how_it_was_made():
    meta = json.loads((DATA / "pose_sequence_reference.json").read_text())["meta"]
    assert re.fullmatch(r"[0-9a-f]{40}", meta["reference_commit"])
    assert meta["command"].startswith("python tests/golden/make_pose_sequence_golden.py --ml4m ")
    assert {"python", "torch", "numpy", "tokenizers"} <= set(meta["versions"])


def test_dequantization_constants():
    words = ["human", "v0=0", "v1=999", "v2=333", "v3=666"]
    words += ["pose", "v0=0", "v0=511", "v1=0", "v1=511", "v0=1", "v0=2", "v0=3", "v1=4"]
    words += ["global", *(["v0=0", "v0=999", "v0=500"] * 3)]
    words += ["camera", "v0=0", "v0=999", "v0=50"]
    words += ["shape", "v0=0", "v0=999", *(["v0=500"] * 8)]
    ((_, person),) = parse_pose_tokens(words).persons
    np.testing.assert_allclose(person.box_xyxy, [0, 224, 333 / 999 * 224, 666 / 999 * 224])
    assert person.pose_codes.tolist() == [0, 511, 512, 1023, 1, 2, 3, 516]
    np.testing.assert_allclose(person.global_orient[0], [-1, 1, 0.5 / 499.5])
    np.testing.assert_allclose(person.camera, [-1, 19, 0.05 / 49.95])
    np.testing.assert_allclose(person.betas[:3], [-3, 3, 0.5 / 166.5])


def test_groups_in_any_order_and_several_persons():
    orders = [
        ("pose", "global", "camera", "shape"),
        ("shape", "camera", "global", "pose"),
        ("global", "shape", "pose", "camera"),
    ]
    words, sources = [], []
    for seed, order in enumerate(orders):
        person, source = person_words(seed, order)
        words += person
        sources.append(source)
    parsed = parse_pose_ids(framed(words))
    assert parsed.skipped == () and len(parsed.persons) == 3
    for (_, person), source in zip(parsed.persons, sources, strict=True):
        np.testing.assert_array_equal(person.pose_codes, source["codes"])
        np.testing.assert_allclose(person.box_xyxy, np.array(source["box"]) / 999 * CROP)
        expected_betas = (np.array([int(word[3:]) for word in source["shape"]]) - 499.5) / 166.5
        np.testing.assert_allclose(person.betas, expected_betas)


def _with_second_person(broken: list[str]) -> list[str]:
    first, _ = person_words(1)
    third, _ = person_words(3)
    return first + broken + third


def _broken(seed: int, edit) -> list[str]:
    words, _ = person_words(seed)
    return edit(list(words))


def _set_first_value(words: list[str], group: str, word: str) -> list[str]:
    at = words.index(group) + 1
    return [*words[:at], word, *words[at + 1 :]]


def _insert(words: list[str], at: int, word: str) -> list[str]:
    return [*words[:at], word, *words[at:]]


def _drop_group(words: list[str], group: str) -> list[str]:
    at = words.index(group)
    return [*words[:at], *words[at + 4 :]]


MALFORMED = {
    "missing group": (lambda w: _drop_group(w, "camera"), "missing group(s) camera"),
    "duplicate group": (lambda w: [*w, "camera", "v0=1", "v0=2", "v0=3"], "duplicate group 'camera'"),
    "too few values": (lambda w: w[: w.index("shape") + 10], "group 'shape' has 9 values, expected 10"),
    "too many values": (lambda w: _insert(w, w.index("camera") + 1, "v0=7"), "group 'camera' has 4 values"),
    "stray word": (
        lambda w: _set_first_value(w, "global", "dog"),
        "unexpected token 'dog' in group 'global'",
    ),
    "wrong value axis": (
        lambda w: _set_first_value(w, "global", "v2=5"),
        "wrong value token 'v2=5' in group",
    ),
    "pose code out of range": (
        lambda w: _set_first_value(w, "pose", "v1=600"),
        "pose code 'v1=600' is out of",
    ),
    "box not xyxy": (lambda w: [w[0], w[2], w[1], *w[3:]], "wrong value token"),
    "word before groups": (lambda w: _insert(w, 5, "person"), "unexpected token 'person' after the box"),
}


@pytest.mark.parametrize("kind", MALFORMED)
def test_malformed_person_is_skipped_with_reason_and_others_are_read(kind):
    edit, reason = MALFORMED[kind]
    parsed = parse_pose_ids(framed(_with_second_person(_broken(2, edit))))
    assert [index for index, _ in parsed.persons] == [0, 2]
    (skipped,) = parsed.skipped
    assert skipped.index == 1
    assert reason in skipped.reason
    first, _ = person_words(1)
    np.testing.assert_array_equal(
        parsed.persons[0][1].pose_codes, parse_pose_tokens(first).persons[0][1].pose_codes
    )


def test_truncated_last_person_is_reported_as_truncated():
    first, _ = person_words(1)
    second, _ = person_words(2)
    parsed = parse_pose_ids(framed(first + second[:20], eos=False))
    assert not parsed.terminated
    assert [index for index, _ in parsed.persons] == [0]
    (skipped,) = parsed.skipped
    assert skipped.index == 1 and skipped.reason.startswith("truncated")


def test_same_cut_with_eos_is_not_called_truncated():
    first, _ = person_words(1)
    second, _ = person_words(2)
    (skipped,) = parse_pose_ids(framed(first + second[:20])).skipped
    assert "truncated" not in skipped.reason and "missing group" in skipped.reason


def test_none_means_no_humans():
    parsed = parse_pose_ids(framed(["none"]))
    assert parsed.no_humans and parsed.persons == () and parsed.skipped == () and parsed.notes == ()
    empty = parse_pose_ids([text.GENERATION_START_ID, text.EOS_ID])
    assert not empty.no_humans and empty.persons == ()


def test_framing_padding_and_stray_prefix():
    words, source = person_words(4)
    ids = [text.PAD_ID, *framed(["camera", *words]), text.PAD_ID, text.PAD_ID]
    parsed = parse_pose_ids(ids)
    assert len(parsed.persons) == 1 and parsed.skipped == ()
    np.testing.assert_array_equal(parsed.persons[0][1].pose_codes, source["codes"])
    assert parsed.notes and "camera" in parsed.notes[0]
    # everything after [EOS] / the stop sentinel is not part of the sequence
    (_, after_eos) = parse_pose_ids([*framed(words), *text.encode("human v0=1")]).persons[0]
    np.testing.assert_array_equal(after_eos.pose_codes, source["codes"])
