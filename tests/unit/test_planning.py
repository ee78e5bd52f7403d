"""Splitting job ranges into segments."""

from __future__ import annotations

from ampd.controller.planning import PlannedSegment, gaps, merge_ranges, plan_segments


def spans(planned: list[PlannedSegment]) -> list[tuple[int, int | None]]:
    return [(p.start_block, p.end_block) for p in planned]


def test_bounded_range_is_cut_by_segment_blocks() -> None:
    assert spans(plan_segments(0, 249, segment_blocks=100, parallelism=1)) == [
        (0, 83),
        (84, 167),
        (168, 249),
    ]


def test_parallelism_forces_at_least_that_many_segments() -> None:
    planned = plan_segments(10, 21, segment_blocks=100_000, parallelism=6)
    assert spans(planned) == [(10, 11), (12, 13), (14, 15), (16, 17), (18, 19), (20, 21)]


def test_parallelism_larger_than_range() -> None:
    assert spans(plan_segments(5, 7, segment_blocks=100, parallelism=10)) == [
        (5, 5),
        (6, 6),
        (7, 7),
    ]


def test_covered_blocks_are_not_planned_again() -> None:
    planned = plan_segments(0, 99, covered=[(0, 49), (60, 69)], segment_blocks=1000, parallelism=1)
    assert spans(planned) == [(50, 59), (70, 99)]


def test_fully_covered_range_plans_nothing() -> None:
    assert plan_segments(0, 99, covered=[(0, 99)], segment_blocks=10, parallelism=4) == []


def test_continuous_job_gets_a_tail_after_the_head() -> None:
    planned = plan_segments(0, None, segment_blocks=50, parallelism=1, head=99)
    assert spans(planned) == [(0, 49), (50, 99), (100, None)]


def test_continuous_job_without_head_is_one_tail_after_what_is_covered() -> None:
    assert spans(plan_segments(0, None, covered=[(0, 20)], segment_blocks=50, parallelism=1)) == [
        (21, None)
    ]


def test_every_block_is_in_exactly_one_segment() -> None:
    covered = [(3, 7), (30, 31), (90, 200)]
    planned = plan_segments(0, 120, covered=covered, segment_blocks=7, parallelism=3)
    blocks = [b for p in planned for b in range(p.start_block, p.end_block + 1)]
    assert len(blocks) == len(set(blocks))
    expected = {b for b in range(121)} - {b for a, z in covered for b in range(a, z + 1)}
    assert set(blocks) == expected
    assert all(p.end_block - p.start_block + 1 <= 7 for p in planned)


def test_range_helpers() -> None:
    assert merge_ranges([(5, 6), (0, 2), (3, 4), (10, 12)]) == [(0, 6), (10, 12)]
    assert gaps(0, 10, [(2, 3), (8, 20)]) == [(0, 1), (4, 7)]
    assert gaps(5, 4, []) == []
