"""Pairing a depth stream with the colour stream by stamp: the nearest depth frame within a slop, or a
counted reason. A depth frame is never guessed for a colour frame it does not belong to."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

Item = TypeVar("Item")


@dataclass(frozen=True)
class Pairing(Generic[Item]):
    """The depth item paired with a colour frame, or None and why (a short phrase, for counting)."""

    item: Item | None
    offset_s: float | None
    reason: str | None = None


class StampPairer(Generic[Item]):
    """Keeps the last ``history`` depth frames; ``pair`` finds the one nearest a colour stamp.

    Unpaired reasons: "no depth received", "depth too old" (every kept depth frame is older than the colour
    frame by more than ``slop_s``: the depth stream stalled or its clock lags), "depth too new" (the colour
    frame is older than every kept depth frame: it waited too long), "no depth within slop" otherwise.
    """

    def __init__(self, slop_s: float, history: int = 8) -> None:
        if not slop_s > 0:
            raise ValueError(f"depth slop must be > 0 seconds, got {slop_s}")
        if history < 1:
            raise ValueError(f"history must be >= 1, got {history}")
        self.slop_ns = round(slop_s * 1e9)
        self._frames: deque[tuple[int, Item]] = deque(maxlen=history)

    def add(self, stamp_ns: int, item: Item) -> None:
        """Remember a depth frame (any order; the deque keeps the newest arrivals)."""
        self._frames.append((stamp_ns, item))

    def pair(self, stamp_ns: int) -> Pairing[Item]:
        """The depth frame nearest ``stamp_ns`` if it lies within the slop."""
        if not self._frames:
            return Pairing(None, None, "no depth received")
        nearest_stamp, nearest = min(self._frames, key=lambda frame: abs(frame[0] - stamp_ns))
        offset = nearest_stamp - stamp_ns
        if abs(offset) <= self.slop_ns:
            return Pairing(nearest, offset / 1e9)
        stamps = [stamp for stamp, _ in self._frames]
        if max(stamps) < stamp_ns - self.slop_ns:
            reason = "depth too old"
        elif min(stamps) > stamp_ns + self.slop_ns:
            reason = "depth too new"
        else:
            reason = "no depth within slop"
        return Pairing(None, offset / 1e9, reason)
