"""Blocks per chunk: fixed when set, else grown from the rows per block and the pace seen."""

import pytest

from ampd.extract.chunk_size import MAX_BLOCKS, MIN_BLOCKS, TARGET_ROWS, ChunkSizer


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def sizer(in_flight: int = 1, fixed: int | None = None) -> tuple[ChunkSizer, Clock]:
    clock = Clock()
    s = ChunkSizer(fixed, in_flight, clock=clock)
    s.started()
    return s, clock


def test_a_fixed_size_is_kept_and_cut_at_the_end_of_the_range():
    s, clock = sizer(fixed=7)
    s.record(7, 10_000)
    clock.now = 100.0
    assert s.next(1_000) == 7
    assert s.next(3) == 3


def test_a_fixed_size_below_one_block_is_refused():
    with pytest.raises(ValueError, match="chunk size 0"):
        ChunkSizer(0)


def test_before_any_chunk_is_done_chunks_have_the_smallest_size():
    s, _ = sizer()
    assert s.next(1_000_000) == MIN_BLOCKS
    assert s.next(40) == 40


def test_light_blocks_grow_the_chunks_towards_the_row_target():
    s, clock = sizer()
    s.record(1_000, 19_000)  # 19 rows a block
    clock.now = 0.1  # fast: the pace allows far more than the row target
    assert s.next(1_000_000) == TARGET_ROWS // 19


def test_empty_blocks_stop_at_the_largest_size():
    s, clock = sizer()
    s.record(5_000, 5_000)
    clock.now = 0.1
    assert s.next(1_000_000) == MAX_BLOCKS


def test_heavy_blocks_keep_the_smallest_size():
    s, clock = sizer()
    s.record(100, 60_000)  # mainnet-like: 600 rows a block
    clock.now = 0.01
    assert s.next(1_000_000) == MIN_BLOCKS


def test_a_slow_pace_keeps_chunks_small():
    s, clock = sizer()
    s.record(400, 400)  # light blocks, but 200 blocks/s
    clock.now = 2.0
    assert s.next(1_000_000) == MIN_BLOCKS
    clock.now = 0.25  # 1,600 blocks/s: half a second's worth
    assert s.next(1_000_000) == 800


def test_the_end_of_the_range_is_shared_among_the_chunks_in_flight():
    s, clock = sizer(in_flight=4)
    s.record(10_000, 10_000)
    clock.now = 0.1
    assert s.next(100_000) == MAX_BLOCKS
    assert s.next(2_000) == 500  # four chunks of 500 finish together
    assert s.next(250) == MIN_BLOCKS  # but never below the smallest size
    assert s.next(30) == 30  # save for the last blocks
