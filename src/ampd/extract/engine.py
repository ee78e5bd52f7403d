"""Extract a block range of a raw dataset into Parquet files, committing as it goes.

The engine knows no source kind: a ChunkSource (extract/chunk.py) of the dataset's kind
turns block numbers into Arrow batches per table, and the target names the tables and their
schemas. Blocks are fetched in chunks, several chunks in flight at once, and consumed in
order: checked for an unbroken hash chain, and written to one TableWriter per table. The
writers always close together, at the same block, so each commit covers one block range in
every table: that is what lets a checkpoint say "every table is done up to here".

A file that is in the store but not committed never outlives the extraction that wrote it:
on any error or cancellation, files whose commit was never attempted are deleted, and files
whose commit was cut short (it may or may not have landed) are settled by the target, which
asks the metadata database which of them are not committed and deletes those.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import pyarrow as pa

from ampd.extract.chunk import BlockHeader, Chunk, ChunkSource
from ampd.extract.chunk_size import ChunkSizer
from ampd.logs import get_logger
from ampd.storage.parquet_writer import ClosedFile, TableWriter, WriterSettings
from ampd.storage.paths import TableLocation
from ampd.storage.store import ObjectStore

log = get_logger("extract")

T = TypeVar("T")

CommitFn = Callable[[list[ClosedFile]], Awaitable[Any]]
# Object keys whose commit was cut short -> those certainly not committed (safe to delete).
SettleFn = Callable[[list[str]], Awaitable[list[str]]]
SETTLE_TIMEOUT_SECS = 3.0  # bounded: a graceful shutdown waits for it
ProgressFn = Callable[[int, dict[str, int]], None]  # (blocks done, rows per table)


class ReorgDetected(Exception):
    """Block `block`'s parent is not the block before it as we know it: the chain moved."""

    def __init__(self, block: int) -> None:
        super().__init__(f"reorg detected at block {block}")
        self.block = block


@dataclass(frozen=True)
class ExtractionTarget:
    """Where and how the files of one dataset revision are written."""

    network: str
    # The tables written, in the order of a commit's files, and their schemas (the source
    # kind's: a manifest's `schemas`).
    schemas: Mapping[str, pa.Schema]
    store: ObjectStore
    writer: WriterSettings | Any  # WriterSettings, or a config `[writer]` section
    table_prefixes: dict[str, str]  # table -> "<namespace>/<dataset>/<table>/<revision>"
    discard_on: tuple[type[BaseException], ...] = field(default=())
    # Which of the keys of a cut-short commit did not land; None: keep them (a later run's
    # orphan cleanup owns them).
    settle: SettleFn | None = None
    # Called with the keys that could not be settled (the database did not answer).
    hand_off: Callable[[list[str]], None] | None = None

    def settings(self) -> WriterSettings:
        if isinstance(self.writer, WriterSettings):
            return self.writer
        return WriterSettings.from_config(self.writer)

    def location(self, table: str) -> TableLocation:
        namespace, dataset, name, revision = self.table_prefixes[table].split("/")
        return TableLocation(namespace, dataset, name, revision)


class RangeBounds:
    """The end of a range being extracted, which a split may bring forward.

    `first_unrequested` is the first block no fetch has been started for: the producer moves
    it right after starting each fetch, and reads `end` before each. Blocks from there on
    can be given away. `first_pending` is the first block whose fetch has not come back
    yet: what lies between the two is in flight, and is counted in the owner's share of a
    split. Created by the caller, handed to `extract_range`, which attaches its table
    writers (they close their files at `end`).
    """

    def __init__(self, end: int) -> None:
        self.end = end
        self.first_unrequested: int | None = None  # None until the extraction starts
        self.first_pending: int | None = None
        self._writers: list[TableWriter] = []

    def start(self, first: int, writers: Sequence[TableWriter]) -> None:
        self.first_unrequested = first
        self.first_pending = first
        self._writers = list(writers)

    def split(self, min_blocks: int, parts: int = 2) -> int | None:
        """Keep a 1/`parts` share of the blocks not fetched yet (those in flight first) and
        give the rest away: the range now ends before the returned block, which the
        extraction will never request. The share is never less than what is in flight. None
        (nothing changes) before the extraction starts or when fewer than `min_blocks` (and
        at least `parts`) blocks are left to request."""
        if parts < 2:
            raise ValueError(f"a split needs at least 2 parts, not {parts}")
        first = self.first_unrequested
        if first is None:
            return None
        remaining = self.end - first + 1
        if remaining < max(min_blocks, parts):
            return None
        pending = first if self.first_pending is None else min(self.first_pending, first)
        split_at = max(first, pending + (self.end - pending + 1) // parts)
        self.end = split_at - 1
        for writer in self._writers:
            writer.end_block = self.end  # the open files close at the new end
        return split_at


def shares(first: int, end: int, parts: int) -> list[int]:
    """The first block of each of `parts` consecutive shares of `first..end`, as even as
    can be (the later shares one block larger when it does not divide)."""
    size = end - first + 1
    if parts < 1 or size < parts:
        raise ValueError(f"{size} blocks cannot make {parts} parts")
    return [first + size * i // parts for i in range(parts)]


@dataclass
class Tuning:
    """How hard to pull on the provider."""

    chunk_blocks: int | None = None  # blocks per fetch; None: sized as extract/chunk_size.py says
    chunks_in_flight: int = 4

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Tuning:
        """Defaults, overridden by AMP_EXTRACT_CHUNK_BLOCKS and AMP_EXTRACT_CHUNKS_IN_FLIGHT."""
        env = os.environ if env is None else env
        values = {}
        for field_name, var in (
            ("chunk_blocks", "AMP_EXTRACT_CHUNK_BLOCKS"),
            ("chunks_in_flight", "AMP_EXTRACT_CHUNKS_IN_FLIGHT"),
        ):
            raw = env.get(var)
            if raw:
                if not raw.isdigit() or int(raw) < 1:
                    raise ValueError(f"invalid {var}={raw!r}: expected a positive integer")
                values[field_name] = int(raw)
        return cls(**values)


async def extract_range(
    source: ChunkSource,
    target: ExtractionTarget,
    start: int,
    end: int,
    on_commit: CommitFn,
    *,
    stop: asyncio.Event | None = None,
    expected_parent: bytes | str | None = None,
    tuning: Tuning | None = None,
    progress: ProgressFn | None = None,
    bounds: RangeBounds | None = None,
) -> int:
    """Extract blocks `start..end` (inclusive) and hand each closed file group to `on_commit`.

    Files close together when one of them reaches the writer's size or age limit, at `end`,
    or when `stop` is set (the file in hand is committed first). With `bounds` (whose end
    must be `end`), a split may bring the end forward while the extraction runs. Returns the last block
    handed to `on_commit` (start - 1 if none). Raises ReorgDetected when the hash chain
    breaks (nothing past the last commit is kept). If `on_commit` raises, the files of that
    group are deleted when the error is one of `target.discard_on` (the commit certainly did
    not happen) and settled otherwise (it may have), then the error propagates.
    """
    bounds = bounds or RangeBounds(end)
    if bounds.end != end:
        raise ValueError(f"the range bounds end at {bounds.end}, not at {end}")
    if end < start:
        return start - 1
    chunks = source
    tuning = tuning or Tuning()
    settings = target.settings()
    eager = getattr(source, "row_group_rows", None)  # a source whose chunks are large
    if eager is not None:
        settings = replace(settings, row_group_rows=eager)
    writers = {
        table: TableWriter(
            target.store, target.location(table), schema, target.network, settings, end_block=end
        )
        for table, schema in target.schemas.items()
    }
    bounds.start(start, list(writers.values()))
    parent = _as_hex(expected_parent)
    committed = start - 1
    done_blocks = 0
    rows = dict.fromkeys(target.schemas, 0)
    group = _Group()
    limits = getattr(source, "chunk_limits", None)  # a source's own bounds, if it has them
    in_flight = tuning.chunks_in_flight
    if limits is not None and limits.in_flight is not None:
        in_flight = min(in_flight, limits.in_flight)
    fetches: asyncio.Queue[asyncio.Task[Chunk] | None] = asyncio.Queue(maxsize=in_flight)
    sizer = ChunkSizer(tuning.chunk_blocks, in_flight, limits=limits)
    sizer.started()
    producer = asyncio.create_task(_produce(chunks, bounds, sizer, fetches, stop))
    task: asyncio.Task[Chunk] | None = None  # the fetch in hand
    try:
        while True:
            task = await fetches.get()
            if task is None:
                break
            # Files whose time is up are closed and committed while the next chunk is still
            # on its way (a slow or rate-limited provider), not only once it comes.
            while not task.done() and not (stop is not None and stop.is_set()):
                due = _flush_due_in(writers.values())
                if due is None:
                    break
                if due > 0:
                    await _wait_for(task, stop, due)
                else:
                    committed = await _commit_group(writers, group, on_commit, target, committed)
            chunk = await unless_stopped(task, stop)
            if chunk is None:
                # Stopped while this chunk was still being fetched (a provider may be down
                # and retried for ever): drop it, and commit what is written.
                task.cancel()
                committed = await _commit_group(writers, group, on_commit, target, committed)
                break
            batches, headers = chunk.batches, chunk.headers
            log.debug("fetched blocks %d..%d", headers[0].number, headers[-1].number)
            parent = _check_chain(headers, parent)
            # The tables at once: their encoding and store work overlaps on threads.
            await _each((w.write(batches[t], headers) for t, w in writers.items()), group.files)
            for table in writers:
                rows[table] += batches[table].num_rows
            sizer.record(len(headers), sum(batch.num_rows for batch in batches.values()))
            done_blocks += len(headers)
            bounds.first_pending = headers[-1].number + 1
            if group.files or (stop is not None and stop.is_set()):
                committed = await _commit_group(writers, group, on_commit, target, committed)
            if progress is not None:
                progress(done_blocks, dict(rows))
            if stop is not None and stop.is_set():
                break
        return committed
    except BaseException:
        # Shielded: a second cancellation must not leave files behind half cleaned up.
        await asyncio.shield(asyncio.ensure_future(_clean_up(writers, group, target)))
        raise
    finally:
        if task is not None and not task.done():  # cancelled meanwhile (its segment moved)
            task.cancel()
        if not producer.done():
            producer.cancel()
            # wait() never raises the producer's CancelledError, and lets ours through.
            await asyncio.wait([producer])
        while not fetches.empty():
            leftover = fetches.get_nowait()
            if leftover is not None:
                leftover.cancel()


def _flush_due_in(writers: Iterable[TableWriter]) -> float | None:
    """Seconds until the first open file is due to be closed for its age; None if none is."""
    dues = [d for w in writers if (d := w.flush_due_in) is not None]
    return min(dues) if dues else None


async def _wait_for(task: asyncio.Task[Any], stop: asyncio.Event | None, timeout: float) -> None:
    """Until `task` ends, `stop` is set or `timeout` seconds pass; `task` is left running."""
    stopped = asyncio.ensure_future(stop.wait()) if stop is not None else None
    try:
        await asyncio.wait([task] + ([stopped] if stopped else []), timeout=timeout,
                           return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
    finally:
        if stopped is not None:
            stopped.cancel()


async def unless_stopped(work: Awaitable[T], stop: asyncio.Event | None) -> T | None:
    """The result of `work`, or None if `stop` is set first (`work` is then left running:
    the caller cancels it). Without `stop`, just `await work`."""
    if stop is None:
        return await work
    future = asyncio.ensure_future(work)
    if stop.is_set() and not future.done():
        return None
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({future, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if future.done():
        return future.result()
    return None


async def _produce(
    source: ChunkSource,
    bounds: RangeBounds,
    sizer: ChunkSizer,
    out: asyncio.Queue[asyncio.Task[Chunk] | None],
    stop: asyncio.Event | None,
) -> None:
    """Start fetches in block order, up to `bounds.end` as it is when each fetch starts; the
    bounded queue limits how many are in flight."""
    assert bounds.first_unrequested is not None
    cursor = bounds.first_unrequested
    # A source that prefers its own chunk ends, unless a fixed chunk size was asked for.
    align = getattr(source, "chunk_end", None) if sizer.fixed is None else None
    while cursor <= bounds.end and not (stop is not None and stop.is_set()):
        last = cursor + sizer.next(bounds.end - cursor + 1) - 1
        if align is not None:
            last = max(cursor, min(align(cursor, last), bounds.end))
        numbers = list(range(cursor, last + 1))
        task = asyncio.create_task(source.chunk(numbers))
        bounds.first_unrequested = last + 1  # at once: a split must never give these away
        try:
            await out.put(task)
        except asyncio.CancelledError:  # nobody will read it: stop it here
            task.cancel()
            raise
        cursor = last + 1
    # Only on a normal end: a cancelled producer must not block on a queue nobody reads.
    await out.put(None)


def _check_chain(headers: Sequence[BlockHeader], parent: str | None) -> str | None:
    if getattr(headers, "linked", False):  # linked inside: only where it meets `parent`
        headers = [headers[0], headers[-1]] if len(headers) > 1 else headers[:1]
        first = headers[0]
        if parent is not None and first.parent_hash.lower() != parent:
            raise ReorgDetected(first.number)
        return headers[-1].hash.lower()
    for header in headers:
        if parent is not None and header.parent_hash.lower() != parent:
            raise ReorgDetected(header.number)
        parent = header.hash.lower()
    return parent


@dataclass
class _Group:
    """The closed files of one block range, in the store and not yet committed."""

    files: list[ClosedFile] = field(default_factory=list)
    committing: bool = False  # on_commit was called and has not returned


async def _commit_group(
    writers: dict[str, TableWriter],
    group: _Group,
    on_commit: CommitFn,
    target: ExtractionTarget,
    committed: int,
) -> int:
    """Close the other writers at the same block, then commit the group."""
    tables_closed = {f.table for f in group.files}
    await _each((w.close_file() for t, w in writers.items() if t not in tables_closed), group.files)
    if not group.files:
        return committed
    closed = sorted(group.files, key=lambda f: list(target.schemas).index(f.table))
    log.debug(
        "committing blocks %d..%d (%d files)",
        closed[0].start_block,
        closed[0].end_block,
        len(closed),
    )
    group.committing = True
    try:
        await on_commit(closed)
    except target.discard_on:
        group.committing = False  # certainly not committed: deleted on the way out
        raise
    group.files, group.committing = [], False
    return closed[0].end_block


async def _each(calls: Iterable[Awaitable[ClosedFile | None]], closed: list[ClosedFile]) -> None:
    """Run the writers' `calls` at once and add the files they closed to `closed`, in
    order, even when one of them fails (a closed file is in the store: the clean-up must
    know of it). Every call has ended when this returns or raises: the first error is
    raised after the others end, and a cancellation cancels them all and waits for them."""
    tasks = [asyncio.ensure_future(call) for call in calls]
    if not tasks:
        return
    try:
        await asyncio.wait(tasks)
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()
        await asyncio.shield(asyncio.wait(tasks))
        raise
    finally:
        closed += [t.result() for t in tasks if t.done() and not t.cancelled()
                   and t.exception() is None and t.result() is not None]  # fmt: skip
    for task in tasks:
        if task.cancelled():
            raise asyncio.CancelledError
        if task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


async def _clean_up(
    writers: dict[str, TableWriter], group: _Group, target: ExtractionTarget
) -> None:
    """After an error or a cancellation: nothing written and uncommitted stays behind."""
    for writer in writers.values():
        await writer.abort()
    keys = [f.key for f in group.files]
    if not keys:
        return
    if group.committing:  # the commit was cut short: it may have landed
        keys = await _settle(keys, target)
    for key in keys:
        try:
            await target.store.delete(key)
        except OSError as exc:
            log.warning("could not delete uncommitted object %s: %s", key, exc)


async def _settle(keys: list[str], target: ExtractionTarget) -> list[str]:
    """The keys of a cut-short commit that certainly did not land (to delete)."""
    if target.settle is None:
        return []
    try:
        return await asyncio.wait_for(target.settle(keys), SETTLE_TIMEOUT_SECS)
    except Exception as exc:  # noqa: BLE001 - the database may be away; hand the keys on
        log.warning("could not tell whether %d file(s) were committed: %s", len(keys), exc)
        if target.hand_off is not None:
            target.hand_off(keys)
        return []


def _as_hex(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return "0x" + bytes(value).hex()
    return value.lower()
