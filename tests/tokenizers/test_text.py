"""4M WordPiece vocabulary: fixed ids, caption decoding of generated ids, det boxes."""

import numpy as np
import pytest
import torch

from fourm_ros.tokenizers import text


def emitted(content: list[int], eos: bool = True, pad: int = 0) -> list[int]:
    """Ids as generation returns them: [S_1] content [EOS] [S_2], then padding."""
    tail = [text.EOS_ID, text.GENERATION_STOP_ID] if eos else []
    return [text.GENERATION_START_ID, *content, *tail, *[text.PAD_ID] * pad]


def test_fixed_ids_match_the_vocabulary():
    names = text.tokens([text.PAD_ID, text.UNK_ID, text.SOS_ID, text.EOS_ID, text.sentinel_id(0)])
    assert names == ["[PAD]", "[UNK]", "[SOS]", "[EOS]", "[S_0]"]
    assert text.tokens([text.GENERATION_START_ID, text.GENERATION_STOP_ID]) == ["[S_1]", "[S_2]"]
    assert text.tokens([text.sentinel_id(199), text.value_token_id(0, 0), text.value_token_id(3, 999)]) == [
        "[S_199]",
        "v0=0",
        "v3=999",
    ]
    assert text.value_token_id(1, 7) == 1211
    assert text.text_tokenizer().token_to_id("person") == 4253
    with pytest.raises(ValueError, match=r"0\.\.199"):
        text.sentinel_id(200)


def test_caption_round_trip_keeps_words_that_are_class_tokens():
    sentence = "A dog sitting on a couch, next to a wine glass."
    ids = text.encode(sentence)
    assert text.text_tokenizer().token_to_id("wine glass") in ids  # class names are single (special) tokens
    expected = "a dog sitting on a couch, next to a wine glass."
    assert text.caption_from_ids(emitted(ids, pad=5)) == expected
    assert text.caption_from_ids(torch.tensor(emitted(ids))) == expected
    assert text.caption_from_ids(np.array([*ids, text.EOS_ID])) == expected  # no start sentinel
    span = text.generated_span(emitted(ids, eos=False))
    assert not span.terminated and list(span.ids) == ids


def test_caption_stops_at_eos_and_ignores_what_follows():
    ids = text.encode("a man riding a horse")
    after = text.encode("on the beach")
    assert text.caption_from_ids([*emitted(ids), *after]) == "a man riding a horse"
    assert text.caption_from_ids([text.GENERATION_START_ID, text.EOS_ID]) == ""


def test_bad_ids_are_refused():
    with pytest.raises(ValueError, match=r"0\.\.29999"):
        text.caption_from_ids([5, 30000])
    with pytest.raises(ValueError, match="1-D"):
        text.caption_from_ids([[5, 6]])
    with pytest.raises(ValueError, match="1-D"):
        text.caption_from_ids(torch.tensor(5))
    with pytest.raises(ValueError, match="integers"):
        text.caption_from_ids(["a"])
    with pytest.raises(ValueError, match="integers"):
        text.caption_from_ids([5.0, 6.5])


def test_detections_from_a_hand_written_sequence():
    sequence = "v0=0 v1=999 v2=500 v3=999 person v0=10 v1=20 v2=300 v3=400 wine glass"
    detections = text.detections_from_ids(emitted(text.encode(sequence)))
    assert detections.skipped == () and detections.terminated
    first, second = detections.boxes
    assert first.label == "person" and second.label == "wine glass"
    np.testing.assert_allclose(first.box_xyxy, [0, 224, 500 / 999 * 224, 224])
    np.testing.assert_allclose(second.box_xyxy, np.array([10, 20, 300, 400]) / 999 * 224)


def test_malformed_boxes_are_skipped_with_reasons():
    sequence = " ".join(
        [
            "table",  # before any box
            "v0=1 v1=2 v2=3 v3=4 dog",  # fine
            "v0=5 v2=6 v1=7 v3=8 cat",  # coordinates out of order
            "v0=1 v1=1 v2=9 v3=9",  # no class
            "v0=2 v1=2 v2=8 v3=8 v1=3 car",  # a value where the class belongs
        ]
    )
    detections = text.detections_from_ids(emitted(text.encode(sequence)))
    assert [box.label for box in detections.boxes] == ["dog"]
    reasons = detections.skipped
    assert len(reasons) == 4
    assert "before the first box" in reasons[0] and "table" in reasons[0]
    assert "v0= v1= v2= v3= in order" in reasons[1]
    assert "no class name" in reasons[2]
    assert "value token 'v1=3'" in reasons[3]


def test_truncated_det_sequence():
    ids = text.encode("v0=1 v1=2 v2=3 v3=4 dog v0=5 v1=6")
    detections = text.detections_from_ids(emitted(ids, eos=False))
    assert [box.label for box in detections.boxes] == ["dog"]
    assert not detections.terminated and detections.skipped[0].startswith("truncated")
