"""Depth frames pair with colour frames by stamp within the slop; everything else has a counted reason."""

import pytest

from fourm_ros.pipeline.pairing import StampPairer

MS = 1_000_000


def test_the_nearest_depth_within_the_slop_is_paired():
    pairer = StampPairer(slop_s=0.02)
    for stamp in (0, 33 * MS, 66 * MS):
        pairer.add(stamp, f"depth@{stamp // MS}")
    paired = pairer.pair(40 * MS)
    assert paired.item == "depth@33" and paired.offset_s == pytest.approx(-0.007) and paired.reason is None
    assert pairer.pair(66 * MS).item == "depth@66"


@pytest.mark.parametrize(
    "depth_stamps, colour_stamp, reason",
    [
        ((), 0, "no depth received"),
        ((0, 10 * MS), 500 * MS, "depth too old"),
        ((500 * MS,), 0, "depth too new"),
        ((0, 100 * MS), 50 * MS, "no depth within slop"),
    ],
)
def test_unpaired_colour_frames_say_why(depth_stamps, colour_stamp, reason):
    pairer = StampPairer(slop_s=0.02)
    for stamp in depth_stamps:
        pairer.add(stamp, stamp)
    paired = pairer.pair(colour_stamp)
    assert paired.item is None and paired.reason == reason


def test_only_recent_depth_frames_are_kept_and_settings_are_checked():
    pairer = StampPairer(slop_s=0.01, history=2)
    for stamp in (0, 100 * MS, 200 * MS):
        pairer.add(stamp, stamp)
    assert pairer.pair(0).reason == "depth too new"
    with pytest.raises(ValueError, match="slop"):
        StampPairer(slop_s=0)
