"""Blocks per chunk: fixed when set, else grown from the rows per block and the pace seen."""

import pytest

from ampd.extract.chunk_size import MAX_BLOCKS, MIN_BLOCKS, TARGET_ROWS, ChunkLimits, ChunkSizer


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


def test_a_sources_own_limits_replace_the_nodes():
    limits = ChunkLimits(min_blocks=2000, max_blocks=100_000, target_rows=250_000,
                         target_seconds=None)  # fmt: skip
    clock = Clock()
    s = ChunkSizer(None, 1, clock=clock, limits=limits)
    s.started()
    assert s.next(1_000_000) == 2000  # nothing seen yet: the smallest
    s.record(2000, 24_000)  # 12 rows a block
    clock.now = 10.0  # a slow start does not hold the size down without a pace bound
    assert s.next(1_000_000) == 250_000 * 2000 // 24_000


def test_a_derived_source_ends_chunks_after_whole_dependency_files():
    from ampd.worker.derived_source import CHUNK_ROWS, DerivedSource

    source = DerivedSource.__new__(DerivedSource)
    third = CHUNK_ROWS // 3
    # (end block, rows) of the files of the table read most.
    source._files = [(1563, third), (4048, third), (11557, CHUNK_ROWS * 2), (20001, third)]
    source._ends = [end for end, _ in source._files]
    # Whole files while they fit CHUNK_ROWS; the sizer's proposal does not cut a file.
    assert source.chunk_end(2, 2001) == 4048
    assert source.chunk_end(1564, 1600) == 4048  # from inside a file: to its end, and on
    assert source.chunk_end(4049, 4100) == 11557  # a file over the bound: alone
    assert source.chunk_end(11558, 11600) == 20001
    assert source.chunk_end(20002, 20500) == 20500  # past the files known: as proposed


def test_a_derived_source_aligns_to_the_table_its_sql_reads_most():
    from ampd.sql.catalog import CommittedFile, RevisionTables
    from ampd.worker.derived_source import _driving_files

    def files(*spans):
        return tuple(CommittedFile(i, f"f{i}", a, b, rows) for i, (a, b, rows) in enumerate(spans))

    deps = {
        "raw": RevisionTables(
            "h",
            {
                "blocks": files((0, 99, 100), (100, 199, 100)),
                "logs": files((0, 149, 9000), (150, 199, 3000)),
                "transactions": files((0, 49, 500), (50, 199, 1500)),
            },
        )
    }
    reads = {("raw", "logs"), ("raw", "transactions")}
    assert _driving_files(deps, reads) == [(149, 9000), (199, 3000)]
    assert _driving_files(deps, {("raw", "transactions")}) == [(49, 500), (199, 1500)]
    # Reading none of them (headers only): the heaviest table of all.
    assert _driving_files(deps, set()) == [(149, 9000), (199, 3000)]


async def test_derived_evaluations_take_turns_lowest_block_first():
    """At most `limit` at once, and a waiting chunk of lower blocks goes before later
    ones whatever the order they asked in; a cancelled waiter leaves no trace."""
    import asyncio

    from ampd.worker.derived_source import _Turns

    turns = _Turns(1)
    order: list[int] = []
    release = asyncio.Event()

    async def evaluate(first: int) -> None:
        async with turns.turn(first):
            order.append(first)
            if first == 0:
                await release.wait()

    holder = asyncio.create_task(evaluate(0))
    await asyncio.sleep(0)
    later = [asyncio.create_task(evaluate(n)) for n in (300, 200, 100)]
    cancelled = asyncio.create_task(evaluate(50))
    await asyncio.sleep(0.01)
    assert order == [0]  # one at a time
    cancelled.cancel()
    await asyncio.sleep(0.01)
    release.set()
    await asyncio.gather(holder, *later)
    assert order == [0, 100, 200, 300]
    assert cancelled.cancelled() and turns._waiting == [] and turns._running == 0
