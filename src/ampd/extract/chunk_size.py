"""How many blocks each fetch asks for.

Every chunk costs about the same fixed work whatever its size: its requests, the parse and
the column conversion (a few hundred Arrow and numpy calls), the hand-over from a fetch
process, a write per table. On a chain of light blocks (a test chain, a quiet L2) that
fixed part dominates at 100 blocks per chunk: on the benchmark chain (6 transactions and 12
logs a block) 100-block chunks cost 4.1 CPU-seconds for 20,000 blocks, 800-block ones 2.6.

So unless a size is set, chunks grow from MIN_BLOCKS towards TARGET_ROWS rows (blocks,
transactions and logs) as the rows per block of the chunks done so far say, and never past:
- MAX_BLOCKS blocks (a chain of empty blocks),
- what the extraction does in TARGET_SECONDS at its pace so far (a slow or distant node
  keeps small chunks: a stop, a split of the range or the last chunk waits on less),
- an even share of what is left among the chunks in flight (the range ends evenly).
A chain of heavy blocks (mainnet has hundreds of rows a block) keeps MIN_BLOCKS.

A source may set other bounds (`ChunkLimits`, its `chunk_limits` attribute): a derived
dataset's source reads committed files, not a node, and its fixed cost per chunk (a query
plan, a read of each file) asks for chunks of many more rows.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

__all__ = ["ChunkLimits", "ChunkSizer"]

MIN_BLOCKS = 100
MAX_BLOCKS = 1000
TARGET_ROWS = 16_000
TARGET_SECONDS = 0.5


@dataclass(frozen=True)
class ChunkLimits:
    """The bounds a sized chunk keeps to (the defaults: a node's)."""

    min_blocks: int = MIN_BLOCKS
    max_blocks: int = MAX_BLOCKS
    target_rows: int = TARGET_ROWS
    target_seconds: float | None = TARGET_SECONDS  # None: no bound by the pace
    in_flight: int | None = None  # at most this many chunks at once (None: as tuned)


class ChunkSizer:
    """Blocks for the next chunk: `fixed` when given, else sized from what is seen."""

    def __init__(
        self,
        fixed: int | None = None,
        in_flight: int = 1,
        clock=time.monotonic,  # noqa: ANN001
        limits: ChunkLimits | None = None,
    ) -> None:
        if fixed is not None and fixed < 1:
            raise ValueError(f"chunk size {fixed}: expected at least 1 block")
        self.fixed = fixed
        self.in_flight = max(1, in_flight)
        self.limits = limits or ChunkLimits()
        self._clock = clock
        self._began: float | None = None
        self._blocks = 0
        self._rows = 0

    def started(self) -> None:
        """The extraction starts now (its pace counts from here)."""
        self._began = self._clock()

    def record(self, blocks: int, rows: int) -> None:
        """A chunk of `blocks` blocks with `rows` rows in all tables is done."""
        self._blocks += blocks
        self._rows += rows

    def next(self, remaining: int) -> int:
        """Blocks for the next chunk, `remaining` blocks being left to ask for."""
        if self.fixed is not None:
            return max(1, min(self.fixed, remaining))
        size = self._sized()
        share = math.ceil(remaining / self.in_flight)
        return max(1, min(remaining, max(self.limits.min_blocks, min(size, share))))

    def _sized(self) -> int:
        limits = self.limits
        if not self._blocks:
            return limits.min_blocks
        by_rows = limits.target_rows * self._blocks // max(self._rows, 1)
        size = min(limits.max_blocks, by_rows)
        if self._began is not None and limits.target_seconds is not None:
            elapsed = self._clock() - self._began
            if elapsed > 0:
                size = min(size, int(self._blocks / elapsed * limits.target_seconds))
        return max(limits.min_blocks, size)
