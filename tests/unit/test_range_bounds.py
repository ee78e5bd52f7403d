"""The split point of a range being extracted (`RangeBounds`): a share of what is not
fetched yet, never a block already requested, declined when too little is left; and the
even shares of what is given away."""

from __future__ import annotations

import pytest

from ampd.extract.engine import RangeBounds, shares


class Writer:
    end_block: int | None = None


def started(end: int, first_unrequested: int, writers: list[Writer] | None = None) -> RangeBounds:
    bounds = RangeBounds(end)
    bounds.start(first_unrequested, writers or [])
    return bounds


def test_split_keeps_the_first_half_of_the_unrequested_blocks() -> None:
    writers = [Writer(), Writer()]
    bounds = started(999, 200, writers)  # 200..999 not requested: 800 blocks
    assert bounds.split(100) == 600
    assert bounds.end == 599
    assert [w.end_block for w in writers] == [599, 599], "the files close at the new end"
    bounds.first_unrequested = bounds.first_pending = 300  # nothing in flight
    assert bounds.split(100) == 450  # 300..599: 300 blocks, 150 kept
    assert bounds.end == 449


def test_an_odd_remainder_gives_the_larger_half_away() -> None:
    bounds = started(10, 0)  # 11 blocks
    assert bounds.split(1) == 5
    assert bounds.end == 4


def test_split_declines_when_too_little_is_left() -> None:
    bounds = started(999, 900)  # 100 blocks left
    assert bounds.split(101) is None
    assert bounds.end == 999
    assert bounds.split(100) == 950
    one = started(5, 5)  # a single block can not be shared, whatever the minimum
    assert one.split(1) is None and one.end == 5
    done = started(5, 6)  # everything requested
    assert done.split(1) is None and done.end == 5


def test_split_never_goes_below_the_first_unrequested_block() -> None:
    for end in range(0, 40):
        for first in range(0, end + 2):
            bounds = started(end, first)
            split_at = bounds.split(1)
            if split_at is None:
                assert end - first + 1 < 2 and bounds.end == end
            else:
                assert first < split_at <= end
                assert bounds.end == split_at - 1 >= first


def test_no_split_before_the_extraction_starts() -> None:
    bounds = RangeBounds(999)
    assert bounds.split(1) is None and bounds.end == 999


def test_a_split_into_parts_keeps_one_part() -> None:
    writers = [Writer()]
    bounds = started(999, 100, writers)  # 100..999: 900 blocks
    assert bounds.split(100, parts=3) == 400  # 300 kept, 600 given away
    assert bounds.end == 399 and writers[0].end_block == 399
    two = started(1, 0)  # 2 blocks can make 2 parts, not 3
    assert two.split(1, parts=3) is None and two.end == 1
    assert two.split(1, parts=2) == 1
    with pytest.raises(ValueError, match="at least 2 parts"):
        started(99, 0).split(1, parts=1)


def test_blocks_in_flight_count_toward_the_owners_share() -> None:
    bounds = started(999, 400)  # 0..399 requested
    bounds.first_pending = 100  # 100..399 still in flight: 900 blocks not fetched yet
    assert bounds.split(100, parts=3) == 400, "the in-flight 300 are the owner's whole share"
    bounds = started(1299, 400)
    bounds.first_pending = 100  # 1,200 not fetched: 400 each
    assert bounds.split(100, parts=3) == 500  # the owner: 300 in flight and 100 more
    assert bounds.end == 499


def test_the_share_never_reaches_below_the_first_unrequested_block() -> None:
    for pending in range(0, 30):
        for first in range(pending, 40):
            for parts in (2, 3, 4):
                bounds = started(39, first)
                bounds.first_pending = pending
                split_at = bounds.split(1, parts)
                if split_at is None:
                    assert 39 - first + 1 < parts
                else:
                    assert first <= split_at and 39 - split_at + 1 >= parts - 1


def test_shares_are_even_and_cover_the_range() -> None:
    assert shares(10, 19, 1) == [10]
    assert shares(10, 19, 2) == [10, 15]
    assert shares(0, 9, 3) == [0, 3, 6]  # 3, 3 and 4 blocks
    assert shares(0, 2, 3) == [0, 1, 2]
    with pytest.raises(ValueError, match="2 blocks cannot make 3 parts"):
        shares(0, 1, 3)
