"""The chunks of a derived dataset's segment: its tables over committed dependency ranges.

What a segment run asks of a raw dataset's provider pool, answered from the dependencies'
committed files instead of a node (the extraction engine runs derived segments as it runs
raw ones, through the same writers and fence):
- `chunk(numbers)` waits until every dependency has committed those blocks, then evaluates
  the tables over them (sql/derived_range.py) on a thread;
- `head()` is the last block all dependencies have committed without a gap, and
  `head_moved(timeout)` returns as soon as the catalog hears of a commit: a continuous
  derived job follows its dependencies as they commit, within a round trip of the
  database's NOTIFY (with the worker's shared, listening catalog; without it, every
  `poll_secs`);
- `header(number)` answers a block's hash from the dependency's blocks, which is what the
  segment run checks its committed hashes against after a reorg: a dependency's reorg
  retires and recomputes the derived ranges it reaches.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import heapq
import os
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor

from ampd.datasets.derived import DerivedManifest
from ampd.extract.chunk import BlockHeader, Chunk
from ampd.extract.chunk_size import ChunkLimits
from ampd.logs import get_logger
from ampd.metadb.db import MetadataDb
from ampd.sql.catalog import Catalog, CatalogSnapshot, RevisionTables
from ampd.sql.derived_range import covered_through, evaluate_range
from ampd.sql.references import parse_reference, table_references

log = get_logger("worker")

__all__ = ["DERIVED_CHUNKS", "HEADERS_ALIAS", "DerivedSource", "raw_ancestor"]

# The alias a derived dataset over derived ones reads its raw ancestor's blocks under (for the
# headers only: no SQL can name it, as aliases are identifiers and this one is not).
HEADERS_ALIAS = "-headers"

# A derived chunk costs a query plan and a read of each dependency file it overlaps (whole:
# a file is one row group), whatever its size: chunks of up to 250,000 rows (the output's,
# close to the input's for a decode), at least 2,000 blocks, not bounded by the pace (the
# files are there; a node's pace is what that bound is for).
# As many in flight as there are cores: the work is CPU, partly under the GIL.
# Chunks evaluated at once. The evaluation is partly Python (the decoders): two overlap
# one's Python with the other's reading and filtering, more only fight over the GIL (on the
# bench, 2 took its derived job from 0.30 to 0.22 s, 3 gained nothing more). The files'
# encoding runs beside them, on the writers' threads.
EVALUATIONS = 2
# The evaluations' own threads: few and always the same ones, so that the memory a chunk
# frees is what the next one takes (fresh pages, zeroed by the kernel, cost more than the
# decoding on some machines).
_EVALUATOR = ThreadPoolExecutor(EVALUATIONS, thread_name_prefix="derived")
# Chunks end at file ends, and take whole files up to this many input rows: a few chunks
# for the writers to encode while the next ones are evaluated, each small enough that its
# memory is reused by the next (on the bench, 60,000 against 250,000: 0.22 s against 0.28).
CHUNK_ROWS = 60_000
DERIVED_CHUNKS = ChunkLimits(
    min_blocks=2000,
    max_blocks=100_000,
    target_rows=250_000,
    target_seconds=None,
    in_flight=max(1, os.cpu_count() or 1),
)


class DerivedSource:
    chunk_limits = DERIVED_CHUNKS
    # A chunk's rows are encoded while the next chunks are evaluated (storage/parquet_writer).
    row_group_rows = 16_384

    def __init__(
        self,
        db: MetadataDb,
        data_dir: str,
        manifest: DerivedManifest,
        poll_secs: float,
        catalog: Catalog | None = None,
        start_block: int = 0,
    ) -> None:
        """`start_block`: the segment's first block (the head counts from there);
        `catalog`: a started (listening) catalog to share; without one the source reads
        the database afresh every time it looks."""
        self.manifest = manifest
        self.start_block = start_block
        self.poll_secs = poll_secs
        self.listening = catalog is not None
        self.catalog = catalog if catalog is not None else Catalog(db, data_dir)
        # The files of the dependency table read most, as last seen: (end block, rows).
        self._reads = {
            pair for table in manifest.tables.values() for pair in table_references(table.sql)
        }
        self._files: list[tuple[int, int]] = []
        self._ends: list[int] = []
        self._db = db
        self._turns = _Turns(EVALUATIONS)
        self._headers_from: str | None = None  # a raw ancestor's schema name, once found

    async def __aenter__(self) -> DerivedSource:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def _dependencies(self) -> tuple[CatalogSnapshot, dict[str, RevisionTables]]:
        if not self.listening:
            self.catalog.mark_stale()  # nobody hears of commits: look again every time
        snapshot = await self.catalog.snapshot()
        deps = {}
        for alias, reference in self.manifest.dependencies.items():
            parsed = parse_reference(reference)
            key = str(parsed) if parsed is not None else reference
            if key not in snapshot.schemas:
                raise LookupError(f"dependency {alias!r} ({reference}) is not registered")
            deps[alias] = snapshot.schemas[key]
        if not any("blocks" in r.tables for r in deps.values()):
            # Over derived datasets only: the block headers come from a raw ancestor.
            if self._headers_from is None:
                self._headers_from = await raw_ancestor(self._db, self.manifest)
            if self._headers_from in snapshot.schemas:
                deps[HEADERS_ALIAS] = snapshot.schemas[self._headers_from]
        self._files = _driving_files(deps, self._reads)
        self._ends = [end for end, _ in self._files]
        return snapshot, deps

    def chunk_end(self, first: int, last: int) -> int:
        """Where a chunk from `first` should end: at a file end of the dependency table the
        tables read most rows of, after as many whole files as CHUNK_ROWS rows allow (one
        at least), so that each file is read by one chunk (a file is read whole, whatever
        part of it a chunk needs); `last`, the sizer's end, past the files known."""
        at = bisect.bisect_left(self._ends, first)
        if at == len(self._ends):
            return last
        end, rows = self._files[at]
        for next_end, next_rows in self._files[at + 1 :]:
            if rows + next_rows > CHUNK_ROWS:
                break
            end, rows = next_end, rows + next_rows
        return end

    def _through(self, deps: dict[str, RevisionTables], start: int) -> int:
        through = None
        for revision in deps.values():
            ranges = {
                t: [(f.start_block, f.end_block) for f in files]
                for t, files in revision.tables.items()
            }
            reached = covered_through(ranges, start)
            through = reached if through is None else min(through, reached)
        return start - 1 if through is None else through

    async def chunk(self, numbers: Sequence[int]) -> Chunk:
        first, last = numbers[0], numbers[-1]
        while True:
            seen = self.catalog.changes
            snapshot, deps = await self._dependencies()
            if self._through(deps, first) >= last:
                async with self._turns.turn(first):
                    began = time.monotonic()
                    chunk = await asyncio.get_running_loop().run_in_executor(
                        _EVALUATOR, evaluate_range, self.manifest, deps, snapshot, first, last
                    )
                log.debug(
                    "evaluated blocks %d..%d: %d rows in %.3f s",
                    first,
                    last,
                    sum(b.num_rows for b in chunk.batches.values()),
                    time.monotonic() - began,
                )
                return chunk
            await self._wait(seen)  # the dependencies have not committed it yet

    async def head_moved(self, timeout: float) -> None:
        """Return once a commit may have moved the head (at most `timeout` seconds)."""
        await self._wait(self.catalog.changes, timeout)

    async def _wait(self, seen: int, timeout: float | None = None) -> None:
        timeout = self.poll_secs if timeout is None else timeout
        if self.listening:
            await self.catalog.wait_for_change(seen, timeout)
        else:
            await asyncio.sleep(timeout)

    async def network(self) -> str:
        """The network of the dependencies (the first one's), for the files' block ranges."""
        _, deps = await self._dependencies()
        return next((r.network for r in deps.values() if r.network), "")

    async def head(self, finalized: bool = False) -> int:
        _, deps = await self._dependencies()
        return self._through(deps, self.start_block)

    async def header(self, number: int) -> BlockHeader | None:
        snapshot, deps = await self._dependencies()
        chunk = await asyncio.to_thread(
            evaluate_range, _headers_only(self.manifest), deps, snapshot, number, number
        )
        return chunk.headers[0]


class _Turns:
    """At most `limit` holders at once, the lowest first block first: the chunk the
    engine waits for is never held up behind later ones."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._running = 0
        self._waiting: list[int] = []  # first blocks, a heap
        self._changed = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def turn(self, first: int) -> AsyncIterator[None]:
        async with self._changed:
            heapq.heappush(self._waiting, first)
            try:
                await self._changed.wait_for(
                    lambda: self._running < self.limit and self._waiting[0] == first
                )
            except BaseException:
                self._waiting.remove(first)
                heapq.heapify(self._waiting)
                self._changed.notify_all()
                raise
            heapq.heappop(self._waiting)
            self._running += 1
        try:
            yield
        finally:
            self._running -= 1
            async with self._changed:
                self._changed.notify_all()


def _driving_files(
    deps: dict[str, RevisionTables], reads: set[tuple[str, str]]
) -> list[tuple[int, int]]:
    """(end block, rows) of each file of the dependency table that the tables read (all
    tables, when they read none: the headers' blocks) with the most rows, by end block."""
    tables = [
        files
        for alias, revision in deps.items()
        for name, files in revision.tables.items()
        if (alias, name) in reads
    ] or [files for revision in deps.values() for files in revision.tables.values()]
    heaviest = max(tables, key=lambda files: sum(f.rows for f in files), default=[])
    return sorted((f.end_block, f.rows) for f in heaviest)


def _headers_only(manifest: DerivedManifest) -> DerivedManifest:
    """The manifest without tables: evaluating it gives just the range's headers."""
    return DerivedManifest(manifest.dependencies, {}, {}, [], manifest.raw)


async def raw_ancestor(db: MetadataDb, manifest: DerivedManifest, depth: int = 0) -> str | None:
    """`ns/name@hash` of the first raw dataset among the dependencies, their dependencies'
    and so on (the one whose blocks give a derived dataset over derived ones its headers)."""
    from ampd.datasets.registry import DatasetRegistry

    for revision in await DatasetRegistry(db).dependencies(manifest.dependencies.values()):
        if not isinstance(revision.manifest, DerivedManifest):
            return f"{revision.namespace}/{revision.name}@{revision.manifest_hash}"
        if depth < 16:  # registration refuses cycles; this bounds a corrupt registry
            found = await raw_ancestor(db, revision.manifest, depth + 1)
            if found is not None:
                return found
    return None
