"""One segment run: a worker extracting one segment under one epoch.

Bounded segments run to their end block and complete. The open tail of a continuous job
follows the head every `poll_interval_secs`, checking each new block's parent against the
last committed hash to catch reorgs. Every file group is committed through the fence.

A bounded run asked to split into p parts (p - 1 idle workers are waiting) keeps a 1/p
share of what it has not fetched yet and records p - 1 even new segments for the rest.
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import psycopg

from ampd.config import Config
from ampd.datasets.derived import DERIVED_KIND
from ampd.datasets.registry import load_manifest
from ampd.extract.chunk import ConversionError
from ampd.extract.engine import (
    ExtractionTarget,
    RangeBounds,
    ReorgDetected,
    Tuning,
    extract_range,
    shares,
    unless_stopped,
)
from ampd.extract.fetch_processes import FetchProcesses
from ampd.extract.parallel import ProcessPoolSource
from ampd.extract.sources import open_source, providers_for
from ampd.logs import get_logger, node_id_var
from ampd.metadb.db import MetadataDb
from ampd.metadb.segments import (
    Fence,
    FenceLost,
    SegmentFence,
    SegmentIncomplete,
    committed_tail,
)
from ampd.sql.catalog import Catalog
from ampd.sql.derived_range import BlockNumUnknown
from ampd.storage.paths import parse_file_name
from ampd.storage.store import ObjectStore
from ampd.worker.derived_source import DerivedSource

log = get_logger("worker")


class DeepReorg(Exception):
    """A reorg reaching below the tail segment: not repairable by this segment."""


class StopMode(enum.Enum):
    STOP = "stop"  # the job is stopping: commit the file in hand, then STOPPED
    RELEASE = "release"  # the worker is leaving: commit the file in hand, hand the segment back
    ABORT = "abort"  # not ours any more: stop now, commit nothing


@dataclass(frozen=True)
class SegmentInfo:
    id: int
    job_id: int
    epoch: int
    start_block: int
    end_block: int | None
    checkpoint_block: int | None
    attempts: int
    manifest_hash: str
    namespace: str
    name: str

    @property
    def next_block(self) -> int:
        return self.start_block if self.checkpoint_block is None else self.checkpoint_block + 1


def retry_delay(attempts: int) -> float:
    """Backoff before a failed segment is tried again: 1 s, 2 s, 4 s ... up to 60 s."""
    return min(2.0 ** max(attempts, 0), 60.0) * random.uniform(0.9, 1.1)


class SegmentRun:
    def __init__(
        self,
        db: MetadataDb,
        config: Config,
        store: ObjectStore,
        node_id: str,
        segment: SegmentInfo,
        hand_off: Callable[[SegmentFence, list[str]], None] | None = None,
        fetchers: FetchProcesses | None = None,
        catalog: Callable[[], Awaitable[Catalog]] | None = None,
    ) -> None:
        self.db = db
        self._catalog = catalog  # the worker's shared, listening catalog (derived segments)
        self.fetchers = fetchers  # the worker's fetch processes; None: fetch in this process
        self._hand_off = hand_off  # keys it could not settle, for the worker to retry
        self.config = config
        self.store = store
        self.node_id = node_id
        self.segment = segment
        self.stop_event = asyncio.Event()
        self.mode: StopMode | None = None
        self.task: asyncio.Task[None] | None = None
        self._cancelled = False
        self.rerun = False  # ended early with the segment still ours: reconcile starts it again
        self._fence: SegmentFence | None = None
        self._bounds: RangeBounds | None = None  # of the bounded extraction, once it runs
        self._split: asyncio.Task[None] | None = None  # recording a split, at most one
        self._split_unknown = False  # a split whose record may not have landed: no more splits

    def request_stop(self, mode: StopMode) -> None:
        # ABORT wins over the graceful modes; the first graceful mode is kept.
        if self.mode is None or mode is StopMode.ABORT:
            self.mode = mode
        self.stop_event.set()
        if mode is StopMode.ABORT and self.task is not None and not self._cancelled:
            self._cancelled = True  # once: a second cancel would cut the clean-up short
            self.task.cancel()

    async def run(self) -> None:
        node_id_var.set(self.node_id)
        seg = self.segment
        revisions = {
            r["table_name"]: r
            for r in await self.db.fetch_all(
                "active_table_revisions", {"manifest_hash": seg.manifest_hash}
            )
        }
        fence = SegmentFence(
            self.db,
            Fence(seg.id, self.node_id, seg.epoch),
            {t: r["id"] for t, r in revisions.items()},
        )
        self._fence = fence
        try:
            await fence.mark_running()
            await self._delete_orphans(revisions)
            manifest_row = await self.db.fetch_one("get_manifest", {"hash": seg.manifest_hash})
            manifest = load_manifest(manifest_row["manifest"])
            if manifest.kind == DERIVED_KIND:
                catalog = await self._catalog() if self._catalog is not None else None
                pool: Any = DerivedSource(
                    self.db,
                    self.config.data_dir,
                    manifest,
                    self.config.poll_interval_secs,
                    catalog,
                    start_block=seg.start_block,
                )
                network = await pool.network()
            else:
                pool = None
                network = manifest.network
            target = ExtractionTarget(
                network=network,
                schemas=manifest.schemas,
                store=self.store,
                writer=self.config.writer,
                table_prefixes={t: r["path"] for t, r in revisions.items()},
                discard_on=(FenceLost,),
                settle=fence.uncommitted,
                hand_off=self._handing_off(fence),
            )
            log.info(
                "segment %d (job %d, epoch %d): blocks %d..%s from %d",
                seg.id,
                seg.job_id,
                seg.epoch,
                seg.start_block,
                "head" if seg.end_block is None else seg.end_block,
                seg.next_block,
            )
            if pool is None:
                # Provider files may live in an object store: read them off the event loop.
                providers = await asyncio.to_thread(
                    providers_for, manifest, self.config.providers_dir
                )
                if self.fetchers is not None:
                    pool = ProcessPoolSource(
                        manifest.kind,
                        providers,
                        shared=self.fetchers,
                        max_attempts=20,
                        finalized=manifest.finalized_blocks_only,
                    )
                else:
                    pool = open_source(
                        manifest.kind,
                        providers,
                        max_attempts=20,
                        finalized=manifest.finalized_blocks_only,
                    )
            async with pool:
                if seg.end_block is not None:
                    await self._bounded(pool, target, fence, seg.next_block, seg.end_block)
                else:
                    await self._follow_head(pool, target, fence, manifest.finalized_blocks_only)
            await self._finish(fence)
        except FenceLost as exc:
            log.warning("%s; stopping it", exc)
        except SegmentIncomplete as exc:
            # Its split did not land: the rest of the segment is still this segment's.
            log.warning("%s; it is run again from its checkpoint", exc)
            self.rerun = True
        except asyncio.CancelledError:
            log.info("segment %d: aborted", seg.id)
            raise
        except psycopg.OperationalError as exc:
            # The database went away: the segment is still ours in the database, and the
            # worker's reconciliation restarts it from the checkpoint once it is back.
            log.warning("segment %d: metadata database unavailable, pausing: %s", seg.id, exc)
        except (ConversionError, DeepReorg, BlockNumUnknown) as exc:
            log.error("segment %d: fatal: %s", seg.id, exc)
            await self._finish_quietly(fence, "FATAL", str(exc))
        except Exception as exc:  # noqa: BLE001 - any other failure is retried by the controller
            log.error(
                "segment %d failed (will be retried): %s: %s", seg.id, type(exc).__name__, exc
            )
            await self._finish_quietly(
                fence, "FAILED", f"{type(exc).__name__}: {exc}", retry_delay(seg.attempts)
            )

    def _handing_off(self, fence: SegmentFence) -> Callable[[list[str]], None] | None:
        hand_off = self._hand_off
        if hand_off is None:
            return None
        return lambda keys: hand_off(fence, keys)

    async def _delete_orphans(self, revisions: dict[str, dict[str, Any]]) -> None:
        """Delete objects a previous run of this segment wrote but never committed.

        Only this segment's owner writes files starting inside its range, and a file's name
        starts with its first block, so the uncommitted objects there are orphans.
        """
        seg = self.segment
        first = seg.next_block
        last = seg.end_block
        rows = await self.db.fetch_all(
            "file_paths_from",
            {"revision_ids": [r["id"] for r in revisions.values()], "from_block": first},
        )
        committed = {row["path"] for row in rows}
        deleted = 0
        for revision in revisions.values():
            for obj in await self.store.list(revision["path"] + "/"):
                try:
                    start = parse_file_name(obj.key.rsplit("/", 1)[-1])
                except ValueError:
                    continue
                if start >= first and (last is None or start <= last) and obj.key not in committed:
                    await self.store.delete(obj.key)
                    deleted += 1
        if deleted:
            log.info(
                "segment %d: deleted %d uncommitted object(s) of an earlier run", seg.id, deleted
            )

    async def _bounded(
        self, pool: Any, target: ExtractionTarget, fence: SegmentFence, start: int, end: int
    ) -> None:
        if start > end:
            return
        self._bounds = RangeBounds(end)
        await extract_range(
            pool,
            target,
            start,
            end,
            fence.commit,
            stop=self.stop_event,
            tuning=Tuning.from_env(),
            bounds=self._bounds,
        )

    def request_split(self, min_blocks: int, parts: int = 2) -> None:
        """Split off all but a 1/`parts` share of what the bounded extraction has not fetched
        yet (if at least `min_blocks` are not requested) into `parts - 1` new segments,
        recorded in the background. Ignored
        before the extraction starts, once stopping, while a split is being recorded, and
        after one whose record may not have landed."""
        bounds, fence, seg = self._bounds, self._fence, self.segment
        if (
            bounds is None
            or fence is None
            or self.mode is not None
            or self._split_unknown
            or (self._split is not None and not self._split.done())
        ):
            return
        old_end = bounds.end
        first = bounds.split(min_blocks, parts)
        if first is None:
            log.debug("segment %d: too little left to split", seg.id)
            return
        # From here on the run ends at first - 1, whatever becomes of the record: if it does
        # not land, completion is refused and the segment runs again from its checkpoint.
        self.segment = replace(seg, end_block=first - 1)
        # What is given away makes one new segment for each of the other parts.
        starts = shares(first, old_end, parts - 1)
        self._split = asyncio.create_task(
            self._record_split(fence, old_end, starts), name=f"split-{seg.id}"
        )

    async def _record_split(self, fence: SegmentFence, old_end: int, starts: list[int]) -> None:
        seg, first = self.segment, starts[0]
        try:
            new_ids = await fence.split(seg.job_id, old_end, starts)
        except FenceLost as exc:
            log.warning("%s; stopping it", exc)
            self.request_stop(StopMode.ABORT)
            return
        except (psycopg.Error, OSError) as exc:
            self._split_unknown = True
            log.warning(
                "segment %d: the split at block %d may not be recorded (%s); the run ends at "
                "block %d",
                seg.id,
                first,
                exc,
                first - 1,
            )
            return
        log.info(
            "segment %d: split at block %d: blocks %d..%d are new segment(s) %s",
            seg.id,
            first,
            first,
            old_end,
            ", ".join(map(str, new_ids)),
        )

    async def _follow_head(
        self, pool: Any, target: ExtractionTarget, fence: SegmentFence, finalized: bool
    ) -> None:
        seg = self.segment
        next_block = seg.next_block
        # The block before the tail may have been committed by a bounded segment: chain to it.
        expected_parent = await self._last_hash(next_block - 1)
        while not self.stop_event.is_set():
            head = await unless_stopped(pool.head(finalized=finalized), self.stop_event)
            if head is None:  # stopped while asking (the provider may be down)
                break
            if head >= next_block:
                tuning = Tuning.from_env()
                try:
                    next_block = 1 + await extract_range(
                        pool,
                        target,
                        next_block,
                        head,
                        fence.commit,
                        stop=self.stop_event,
                        expected_parent=expected_parent,
                        tuning=tuning,
                    )
                except ReorgDetected as reorg:
                    next_block = await self._rewind(pool, fence, reorg.block)
                expected_parent = await self._last_hash(next_block - 1)
                continue
            await self._until_head_moves(pool)

    async def _until_head_moves(self, pool: Any) -> None:
        """Wait a poll interval, less when the source can tell the head moved, or a stop."""
        poll = self.config.poll_interval_secs
        moved = getattr(pool, "head_moved", None)  # a source that hears of new blocks
        waits = [asyncio.ensure_future(self.stop_event.wait())]
        waits.append(asyncio.ensure_future(moved(poll) if moved else asyncio.sleep(poll)))
        try:
            await asyncio.wait(waits, timeout=poll, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()

    async def _last_hash(self, block: int) -> bytes | None:
        """Hash of `block` as committed (the last block of a committed file), if it is."""
        if block < 0:
            return None
        for row in await committed_tail(self.db, self.segment.manifest_hash, block):
            if row["end_block"] == block:
                return bytes(row["hash"])
        return None

    async def _rewind(self, pool: Any, fence: SegmentFence, fork_block: int) -> int:
        """Walk back, file by file, to the last committed block the node still agrees with;
        retire what follows it. Raises DeepReorg if the fork is older than this segment."""
        floor = self.segment.start_block - 1
        rows = await committed_tail(self.db, self.segment.manifest_hash, max(floor, 0))
        ends = sorted(
            {r["end_block"] for r in rows if floor <= r["end_block"] < fork_block}, reverse=True
        )
        ancestor = None
        for end in ends:
            header = await pool.header(end)
            committed = await self._last_hash(end)
            if header is not None and committed == bytes.fromhex(header.hash[2:]):
                ancestor = end
                break
            if end == floor:
                raise DeepReorg(
                    f"segment {self.segment.id}: the chain was reorganized below block "
                    f"{self.segment.start_block}, deeper than the reorg margin"
                )
        if ancestor is None:
            ancestor = floor
        retired = await fence.rewind(self.segment.manifest_hash, ancestor)
        log.warning(
            "segment %d: reorg at block %d; retired %d file(s), resuming after block %d",
            self.segment.id,
            fork_block,
            len(retired),
            ancestor,
        )
        return ancestor + 1

    async def _finish(self, fence: SegmentFence) -> None:
        if self._split is not None:
            await asyncio.wait([self._split])  # the segment's end is settled first
        seg = self.segment
        if self.mode is StopMode.RELEASE:
            return  # the worker hands its segments back when it leaves
        if self.mode is StopMode.STOP:
            await fence.finish(seg.job_id, "STOPPED")
            log.info("segment %d stopped", seg.id)
        elif seg.end_block is not None:
            await fence.finish(seg.job_id, "COMPLETED")
            log.info("segment %d completed", seg.id)

    async def _finish_quietly(
        self, fence: SegmentFence, status: str, error: str, retry_in: float = 0.0
    ) -> None:
        try:
            await fence.finish(self.segment.job_id, status, error, retry_in)
        except FenceLost:
            pass
        except psycopg.Error as exc:
            # The database is away; reconciliation or failover will sort the segment out.
            log.warning("segment %d: could not record %s: %s", self.segment.id, status, exc)
