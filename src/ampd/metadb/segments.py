"""The commit fence: what a worker may do to a segment it owns.

Every write is conditional on `(segment id, node id, epoch)`. A worker whose segment was
reassigned (it was presumed dead) touches zero rows, learns that it lost the segment, and
must stop and delete what it wrote but did not commit. A commit never goes past the
segment's end block, and a segment completes only with its checkpoint at its end block: the
owner may split its segment (end it earlier and hand the rest to a new segment), and a run
that ended early on a split that did not land cannot skip the blocks after it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from psycopg.types.json import Jsonb

from ampd.metadb.db import MetadataDb, execute, fetch_all, fetch_one
from ampd.metadb.jobs import JOB_CHANGES_CHANNEL, record_event

# Channel that query servers LISTEN on to pick up newly committed files.
TABLE_CHANGES_CHANNEL = "table_changes"


class FenceLost(Exception):
    """The segment is no longer this worker's (new owner or epoch): stop working on it."""

    def __init__(self, segment_id: int, node_id: str, epoch: int) -> None:
        super().__init__(
            f"segment {segment_id} is no longer owned by {node_id} at epoch {epoch}: "
            "it was reassigned"
        )
        self.segment_id = segment_id


class SegmentIncomplete(Exception):
    """A COMPLETED finish refused: the segment is still ours, but its checkpoint is short of
    its end block (the run ended early for a split that was not recorded)."""

    def __init__(self, segment_id: int, checkpoint: int | None, end: int | None) -> None:
        super().__init__(
            f"segment {segment_id} cannot complete: it is committed up to block "
            f"{'none' if checkpoint is None else checkpoint} of {end}"
        )
        self.segment_id = segment_id


class CommittableFile(Protocol):
    """What the extraction engine hands over for each closed Parquet file."""

    table: str
    start_block: int
    end_block: int
    prev_hash: str  # 0x hex
    hash: str  # 0x hex
    rows: int
    bytes: int  # object size
    key: str
    file_name: str
    metadata: dict[str, Any]
    footer: bytes  # the Parquet footer (storage/footer.py); b"" when unknown


@dataclass(frozen=True)
class Fence:
    """The identity under which one worker runs one segment."""

    segment_id: int
    node_id: str
    epoch: int


class SegmentFence:
    """Fenced writes for one segment run (one worker, one epoch)."""

    def __init__(self, db: MetadataDb, fence: Fence, revision_ids: dict[str, int]) -> None:
        self.db = db
        self.fence = fence
        self.revision_ids = revision_ids

    def _key(self) -> dict[str, Any]:
        return {
            "id": self.fence.segment_id,
            "node_id": self.fence.node_id,
            "epoch": self.fence.epoch,
        }

    def _lost(self) -> FenceLost:
        return FenceLost(self.fence.segment_id, self.fence.node_id, self.fence.epoch)

    async def mark_running(self) -> None:
        async with self.db.transaction() as conn:
            if await fetch_one(conn, "fence_mark_running", self._key()) is None:
                raise self._lost()

    async def commit(self, files: Sequence[CommittableFile]) -> list[int]:
        """Commit the files of one block range (one per table) and move the checkpoint.

        All in one transaction: the file rows and the checkpoint, or nothing. Raises
        FenceLost when the segment is not ours any more (nothing is committed then).
        """
        start, end = files[0].start_block, files[0].end_block
        if any(f.start_block != start or f.end_block != end for f in files):
            raise ValueError("the files of one commit must cover the same block range")
        async with self.db.transaction() as conn:
            moved = await fetch_one(
                conn,
                "fence_advance_checkpoint",
                {**self._key(), "start_block": start, "end_block": end},
            )
            if moved is None:
                raise self._lost()
            ids = []
            for f in files:
                row = await fetch_one(
                    conn,
                    "insert_file",
                    {
                        "table_revision_id": self.revision_ids[f.table],
                        "segment_id": self.fence.segment_id,
                        "file_name": f.file_name,
                        "path": f.key,
                        "object_size": f.bytes,
                        "row_count": f.rows,
                        "start_block": f.start_block,
                        "end_block": f.end_block,
                        "prev_hash": _hash_bytes(f.prev_hash),
                        "hash": _hash_bytes(f.hash),
                        "metadata": Jsonb(f.metadata),
                    },
                )
                ids.append(row["id"])
                if f.footer:
                    await execute(conn, "insert_footer", {"file_id": row["id"], "footer": f.footer})
            await conn.execute(
                "SELECT pg_notify(%s, %s)", (TABLE_CHANGES_CHANNEL, ",".join(map(str, ids)))
            )
        return ids

    async def uncommitted(self, keys: Sequence[str]) -> list[str]:
        """Of `keys`, written by this run, those whose commit did not land (safe to delete).

        A commit holds the segment's row lock from its checkpoint update to its end, so once
        this takes the lock no commit of these files is in flight: one whose COMMIT was sent
        has ended, and one cut short before it rolls back and can never land.
        """
        async with self.db.transaction() as conn:
            await fetch_one(conn, "lock_segment", {"id": self.fence.segment_id})
            rows = await fetch_all(
                conn,
                "committed_paths_of_segment",
                {
                    "segment_id": self.fence.segment_id,
                    "revision_ids": list(self.revision_ids.values()),
                    "paths": list(keys),
                },
            )
        committed = {row["path"] for row in rows}
        return [key for key in keys if key not in committed]

    async def finish(
        self, job_id: int, status: str, error: str | None = None, retry_in: float = 0.0
    ) -> int:
        """End this run of the segment: COMPLETED, STOPPED, FAILED (retry later) or FATAL.

        Returns the segment's failure count. Raises FenceLost if it is not ours any more,
        SegmentIncomplete for COMPLETED before the checkpoint reached the end block.
        """
        async with self.db.transaction() as conn:
            row = await fetch_one(
                conn,
                "fence_finish_segment",
                {**self._key(), "status": status, "error": error, "retry_in": retry_in},
            )
            if row is None:
                owned = await fetch_one(conn, "fence_owned_segment", self._key())
                if owned is not None and status == "COMPLETED":
                    raise SegmentIncomplete(
                        self.fence.segment_id, owned["checkpoint_block"], owned["end_block"]
                    )
                raise self._lost()
            if status in ("FAILED", "FATAL"):
                await record_event(
                    conn,
                    job_id,
                    f"SEGMENT_{status}",
                    self.fence.node_id,
                    {
                        "segment_id": self.fence.segment_id,
                        "error": error,
                        "attempts": row["attempts"],
                    },
                )
            await conn.execute("SELECT pg_notify(%s, %s)", (JOB_CHANGES_CHANNEL, str(job_id)))
        return row["attempts"]

    async def split(self, job_id: int, old_end: int, starts: Sequence[int]) -> list[int]:
        """End this segment at `starts[0] - 1` and give `starts[0]..old_end` to new PENDING
        segments of the job, one from each of `starts` (ascending) to the next; returns
        their ids.

        One transaction: the shortened end (only while the end is still `old_end`), the new
        segments, a SEGMENT_SPLIT job event for each, and a `job_changes` notification. The
        caller must never request a block from `starts[0]` on. Raises FenceLost when the
        segment is not ours any more, or its end is not `old_end`.
        """
        if not starts or list(starts) != sorted(set(starts)) or starts[-1] > old_end:
            raise ValueError(f"split starts {list(starts)} are not ascending within ..{old_end}")
        ends = [*(start - 1 for start in starts[1:]), old_end]
        new_ids: list[int] = []
        async with self.db.transaction() as conn:
            moved = await fetch_one(
                conn,
                "fence_split_segment",
                {**self._key(), "old_end": old_end, "new_end": starts[0] - 1},
            )
            if moved is None:
                raise self._lost()
            for start, end in zip(starts, ends, strict=True):
                new = await fetch_one(
                    conn,
                    "insert_segment",
                    {
                        "job_id": job_id,
                        "start_block": start,
                        "end_block": end,
                        "checkpoint_block": None,
                    },
                )
                new_ids.append(new["id"])
                await record_event(
                    conn,
                    job_id,
                    "SEGMENT_SPLIT",
                    self.fence.node_id,
                    {
                        "segment_id": self.fence.segment_id,
                        "new_segment_id": new["id"],
                        "split_block": start,
                        "end_block": end,
                    },
                )
            await conn.execute("SELECT pg_notify(%s, %s)", (JOB_CHANGES_CHANNEL, str(job_id)))
        return new_ids

    async def rewind(self, manifest_hash: str, ancestor: int) -> list[str]:
        """After a reorg: retire the files past `ancestor` and move the checkpoint back.

        Returns the object keys of the retired files (kept in storage; never read again).
        """
        async with self.db.transaction() as conn:
            moved = await fetch_one(
                conn, "fence_rewind_checkpoint", {**self._key(), "checkpoint_block": ancestor}
            )
            if moved is None:
                raise self._lost()
            retired = await fetch_all(
                conn,
                "retire_files_after",
                {"revision_ids": list(self.revision_ids.values()), "block": ancestor},
            )
            await conn.execute("SELECT pg_notify(%s, %s)", (TABLE_CHANGES_CHANNEL, "retired"))
        return [row["path"] for row in retired]


async def committed_tail(
    db: MetadataDb, manifest_hash: str, from_block: int
) -> list[dict[str, Any]]:
    """Live files of a dataset revision that end at or after `from_block`, newest first."""
    return await db.fetch_all(
        "live_files_from", {"manifest_hash": manifest_hash, "from_block": from_block}
    )


def _hash_bytes(value: str) -> bytes:
    return bytes.fromhex(value[2:] if value.startswith("0x") else value)
