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
import os
from collections.abc import Sequence

from ampd.datasets.derived import DerivedManifest
from ampd.extract.chunk import BlockHeader, Chunk
from ampd.extract.chunk_size import ChunkLimits
from ampd.logs import get_logger
from ampd.metadb.db import MetadataDb
from ampd.sql.catalog import Catalog, CatalogSnapshot, RevisionTables
from ampd.sql.derived_range import covered_through, evaluate_range
from ampd.sql.references import parse_reference

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
DERIVED_CHUNKS = ChunkLimits(
    min_blocks=2000,
    max_blocks=100_000,
    target_rows=250_000,
    target_seconds=None,
    in_flight=max(1, os.cpu_count() or 1),
)


class DerivedSource:
    chunk_limits = DERIVED_CHUNKS

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
        self._ends: list[int] = []  # the dependencies' file ends, as last seen
        self._db = db
        self._headers_from: str | None = None  # a raw ancestor's schema name, once found
        self._warm = asyncio.Lock()  # held while the first range is evaluated
        self._warmed = False

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
        self._ends = sorted(
            {f.end_block for r in deps.values() for files in r.tables.values() for f in files}
        )
        return snapshot, deps

    def chunk_end(self, first: int, last: int) -> int:
        """Where a chunk from `first` that would end at `last` should end: at the last
        dependency file end in first..last, so that each file is read by one chunk (a
        file is one row group, read whole); `last` when none ends there."""
        at = bisect.bisect_right(self._ends, last) - 1
        return self._ends[at] if at >= 0 and self._ends[at] >= first else last

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
                if not self._warmed:
                    await self._warm_up(deps, snapshot, first)
                return await asyncio.to_thread(
                    evaluate_range, self.manifest, deps, snapshot, first, last
                )
            await self._wait(seen)  # the dependencies have not committed it yet

    async def _warm_up(
        self, deps: dict[str, RevisionTables], snapshot: CatalogSnapshot, block: int
    ) -> None:
        """Evaluate one block before the first chunks run. Cold, the chunks in flight would
        each plan the tables and load what their first run loads, all at once, fighting
        over the GIL and the import lock: on the bench's 20,000 blocks that doubled the
        first chunks' time (0.56 s against 0.28 s with this one-block run first)."""
        async with self._warm:
            if not self._warmed:
                await asyncio.to_thread(evaluate_range, self.manifest, deps, snapshot, block, block)
                self._warmed = True

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
