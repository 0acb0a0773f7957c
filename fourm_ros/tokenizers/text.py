"""The 4M WordPiece vocabulary and the decoding of generated text sequences (caption, det).

Every sequence modality of 4M-21 (caption, det, human_poses, ...) is written with one WordPiece vocabulary of
30000 ids, shipped as ``data/text_tokenizer_4m_wordpiece_30k.json``. Its fixed ids: ``[PAD]`` 0, ``[UNK]`` 1,
``[SOS]`` 2, ``[EOS]`` 3, the sentinels ``[S_k]`` = 4 + k (k < 200), the value tokens ``v<a>=<n>``
(a = 0..3, n = 0..999) = 204 + 1000·a + n, then the 80 COCO class names (one token each, "wine glass"
included) and the learned word pieces.

Generation convention (T5-style span masking of the reference, ``fourm/data/masking.py`` and
``fourm/models/generate.py``): training appends ``[EOS]`` to every sequence, and the target of a fully
masked sequence is ``[S_1] tokens… [EOS] [S_2]``. A sequence is therefore generated from scratch by starting
the decoder with ``[S_1]`` and stopping once it emits ``[S_2]``; the text is what lies between ``[S_1]`` and
``[EOS]``. All added tokens (class names included) are "special" in the JSON, so text is decoded with
special tokens kept, never skipped, or "a dog on a couch" would lose "dog" and "couch".
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources

from tokenizers import Tokenizer

VOCAB_SIZE = 30000
PAD_ID = 0
UNK_ID = 1
SOS_ID = 2
EOS_ID = 3
FIRST_SENTINEL_ID = 4
NUM_SENTINELS = 200
FIRST_VALUE_ID = FIRST_SENTINEL_ID + NUM_SENTINELS
VALUE_BINS = 1000
"""Value tokens ``v<a>=<n>`` carry n in 0..999 (coordinates are quantized as round(x · 999))."""
VALUE_AXES = 4

_VOCAB_FILE = "data/text_tokenizer_4m_wordpiece_30k.json"
_VALUE_TOKEN = re.compile(r"^v([0-3])=(\d{1,3})$")


def sentinel_id(k: int) -> int:
    """Id of the sentinel ``[S_k]``."""
    if not 0 <= k < NUM_SENTINELS:
        raise ValueError(f"sentinel index must be in 0..{NUM_SENTINELS - 1}, got {k}")
    return FIRST_SENTINEL_ID + k


GENERATION_START_ID = sentinel_id(1)
"""The decoder's first token when a sequence modality is generated from scratch (``[S_1]``)."""
GENERATION_STOP_ID = sentinel_id(2)
"""Generation of a sequence modality ends when the model emits this id (``[S_2]``)."""


def is_sentinel(token_id: int) -> bool:
    return FIRST_SENTINEL_ID <= token_id < FIRST_SENTINEL_ID + NUM_SENTINELS


def value_token_id(axis: int, value: int) -> int:
    """Id of ``v<axis>=<value>``."""
    if not (0 <= axis < VALUE_AXES and 0 <= value < VALUE_BINS):
        raise ValueError(f"value tokens are v0..v3 with values 0..999, got v{axis}={value}")
    return FIRST_VALUE_ID + axis * VALUE_BINS + value


def parse_value_token(token: str) -> tuple[int, int] | None:
    """``"v2=17"`` → ``(2, 17)``; any other token → None."""
    match = _VALUE_TOKEN.match(token)
    if match is None or int(match.group(2)) >= VALUE_BINS:
        return None
    return int(match.group(1)), int(match.group(2))


@cache
def text_tokenizer() -> Tokenizer:
    """The 4M WordPiece tokenizer from the package data, checked against the id layout this module assumes."""
    text = resources.files("fourm_ros").joinpath(_VOCAB_FILE).read_text(encoding="utf-8")
    tokenizer = Tokenizer.from_str(text)
    expected = {
        PAD_ID: "[PAD]",
        UNK_ID: "[UNK]",
        SOS_ID: "[SOS]",
        EOS_ID: "[EOS]",
        sentinel_id(0): "[S_0]",
        sentinel_id(NUM_SENTINELS - 1): f"[S_{NUM_SENTINELS - 1}]",
        value_token_id(0, 0): "v0=0",
        value_token_id(VALUE_AXES - 1, VALUE_BINS - 1): f"v{VALUE_AXES - 1}={VALUE_BINS - 1}",
    }
    wrong = {i: tokenizer.id_to_token(i) for i, want in expected.items() if tokenizer.id_to_token(i) != want}
    if wrong or tokenizer.get_vocab_size() != VOCAB_SIZE:
        raise RuntimeError(
            f"{_VOCAB_FILE} does not have the 4M id layout (size {tokenizer.get_vocab_size()}, expected "
            f"{VOCAB_SIZE}; unexpected tokens at ids {wrong}); the package data is damaged"
        )
    return tokenizer


def encode(text: str) -> list[int]:
    """WordPiece ids of ``text`` (no framing tokens added)."""
    return text_tokenizer().encode(text).ids


def _as_ids(ids: Iterable[int]) -> list[int]:
    values = ids.tolist() if hasattr(ids, "tolist") else list(ids)
    if not isinstance(values, list) or any(isinstance(value, list) for value in values):
        raise ValueError("expected one sequence of token ids (1-D), got a nested one; decode row by row")
    try:
        values = [operator.index(value) for value in values]
    except (TypeError, ValueError) as error:
        raise ValueError(f"token ids must be integers: {error}") from error
    bad = [value for value in values if not 0 <= value < VOCAB_SIZE]
    if bad:
        raise ValueError(f"token ids must be in 0..{VOCAB_SIZE - 1}, got {bad[:5]}")
    return values


def tokens(ids: Iterable[int]) -> list[str]:
    """The vocabulary entry of each id (class names such as "wine glass" are one entry)."""
    tokenizer = text_tokenizer()
    return [tokenizer.id_to_token(i) for i in _as_ids(ids)]


@dataclass(frozen=True)
class GeneratedSpan:
    """The content of one generated sequence: the ids between the start sentinel and ``[EOS]``.

    ``terminated`` is False when the sequence ended (token budget exhausted) before any ``[EOS]`` or
    sentinel, i.e. the content may be cut short.
    """

    ids: tuple[int, ...]
    terminated: bool


def generated_span(ids: Iterable[int]) -> GeneratedSpan:
    """Extract the content of a generated sequence (``[S_1] … [EOS] [S_2]``, with or without the start).

    Leading sentinels are dropped, the content ends at the first ``[EOS]`` or sentinel, ``[PAD]`` is ignored.
    """
    values = _as_ids(ids)
    start = 0
    while start < len(values) and (is_sentinel(values[start]) or values[start] == PAD_ID):
        start += 1
    content = []
    for value in values[start:]:
        if value == EOS_ID or is_sentinel(value):
            return GeneratedSpan(tuple(content), terminated=True)
        if value != PAD_ID:
            content.append(value)
    return GeneratedSpan(tuple(content), terminated=False)


def caption_from_ids(ids: Iterable[int]) -> str:
    """The caption text of a generated ``caption`` sequence."""
    span = generated_span(ids)
    return text_tokenizer().decode(list(span.ids), skip_special_tokens=False).strip()


@dataclass(frozen=True)
class Detection:
    """One ``det`` box: xyxy in pixels of the model's 224×224 input crop, and its class name."""

    box_xyxy: tuple[float, float, float, float]
    label: str


@dataclass(frozen=True)
class Detections:
    """Boxes read from a ``det`` sequence, and why any box was skipped."""

    boxes: tuple[Detection, ...]
    skipped: tuple[str, ...]
    terminated: bool


def value_to_pixels(value: int, image_size: int) -> float:
    """A quantized coordinate (round(x · 999), x normalized to [0, 1]) in pixels of an image_size image."""
    return value / (VALUE_BINS - 1) * image_size


def _detection_chunk(chunk: Sequence[int], image_size: int) -> Detection | str:
    """One box from ``v0 v1 v2 v3 <class words>``, or the reason it cannot be read."""
    words = tokens(chunk)
    values = [parse_value_token(word) for word in words[:4]]
    axes = [value[0] if value else None for value in values]
    if axes != [0, 1, 2, 3]:
        return f"box {' '.join(words[:4])!r}: expected the four coordinates v0= v1= v2= v3= in order"
    label_ids = list(chunk[4:])
    if not label_ids:
        return f"box {' '.join(words)!r}: no class name after the coordinates"
    stray = [word for word in words[4:] if parse_value_token(word)]
    if stray:
        return f"box {' '.join(words)!r}: value token {stray[0]!r} where the class name belongs"
    label = text_tokenizer().decode(label_ids, skip_special_tokens=False).strip()
    x0, y0, x1, y1 = (value_to_pixels(value[1], image_size) for value in values)
    return Detection(box_xyxy=(x0, y0, x1, y1), label=label)


def detections_from_ids(ids: Iterable[int], image_size: int = 224) -> Detections:
    """Boxes of a generated ``det`` sequence: ``v0=xmin v1=ymin v2=xmax v3=ymax <coco class>`` repeated.

    A malformed box is skipped with a reason; the other boxes are still read.
    """
    span = generated_span(ids)
    chunks: list[list[int]] = []
    skipped = []
    leading = []
    for token_id in span.ids:
        parsed = parse_value_token(text_tokenizer().id_to_token(token_id))
        if parsed is not None and parsed[0] == 0:
            chunks.append([token_id])
        elif chunks:
            chunks[-1].append(token_id)
        else:
            leading.append(token_id)
    if leading:
        skipped.append(f"tokens before the first box ignored: {' '.join(tokens(leading))!r}")
    boxes = []
    for number, chunk in enumerate(chunks, start=1):
        result = _detection_chunk(chunk, image_size)
        if isinstance(result, str) and number == len(chunks) and not span.terminated:
            result = f"truncated (the sequence ended without [EOS]): {result}"
        (boxes if isinstance(result, Detection) else skipped).append(result)
    return Detections(boxes=tuple(boxes), skipped=tuple(skipped), terminated=span.terminated)
