"""Splitting a job's block range into segments (pure logic, no I/O).

Blocks already committed for the dataset revision (by an earlier job) are never planned
again: segments cover only the gaps, so a redeploy resumes without re-extracting.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class PlannedSegment:
    start_block: int
    end_block: int | None  # None: the open tail of a continuous job


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Union of inclusive ranges, sorted, adjacent ones joined."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(ranges):
        if merged and start <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def gaps(start: int, end: int, covered: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of [start, end] not in `covered` (inclusive ranges)."""
    result = []
    cursor = start
    for a, b in merge_ranges(covered):
        if b < cursor:
            continue
        if a > end:
            break
        if a > cursor:
            result.append((cursor, min(a - 1, end)))
        cursor = max(cursor, b + 1)
        if cursor > end:
            break
    if cursor <= end:
        result.append((cursor, end))
    return result


def plan_segments(
    start: int,
    end: int | None,
    *,
    covered: Iterable[tuple[int, int]] = (),
    segment_blocks: int,
    parallelism: int,
    head: int | None = None,
) -> list[PlannedSegment]:
    """Segments for a job over [start, end] (end None: continuous, following the head).

    Bounded work is cut into pieces of at most `segment_blocks`, and into at least
    `parallelism` pieces when the range allows. A continuous job gets, after the bounded
    part up to `head` (when known), one open tail segment.
    """
    covered = merge_ranges(covered)
    max_covered = covered[-1][1] if covered else start - 1
    if end is None:
        bounded_end = head if head is not None else max(max_covered, start - 1)
    else:
        bounded_end = end
    todo = gaps(start, bounded_end, covered) if bounded_end >= start else []
    total = sum(b - a + 1 for a, b in todo)
    planned: list[PlannedSegment] = []
    if total:
        pieces = max(math.ceil(total / segment_blocks), min(parallelism, total))
        size = math.ceil(total / pieces)
        for a, b in todo:
            cursor = a
            while cursor <= b:
                last = min(cursor + size - 1, b)
                planned.append(PlannedSegment(cursor, last))
                cursor = last + 1
    if end is None:
        tail_start = max(bounded_end, max_covered, start - 1) + 1
        planned.append(PlannedSegment(tail_start, None))
    return planned
