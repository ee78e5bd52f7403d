"""The commit fence and job bookkeeping against a real PostgreSQL."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from ampd.metadb.db import MetadataDb
from ampd.metadb.jobs import JobStore
from ampd.metadb.migrate import migrate
from ampd.metadb.segments import Fence, FenceLost, SegmentFence, SegmentIncomplete

H = "0x" + "ab" * 32


@dataclass
class File:
    table: str
    start_block: int
    end_block: int
    file_name: str
    prev_hash: str = H
    hash: str = H
    rows: int = 1
    bytes: int = 100
    key: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)
    footer: bytes = b""

    def __post_init__(self) -> None:
        self.key = self.key or f"ns/ds/{self.table}/r/{self.file_name}"


def group(start: int, end: int, tag: str) -> list[File]:
    return [
        File(t, start, end, f"{start:09d}-{tag}-{t}.parquet")
        for t in ("blocks", "transactions", "logs")
    ]


@pytest.fixture
async def db(db_url: str):  # noqa: ANN201
    await migrate(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO workers (node_id) VALUES ('w1'), ('w2')")
        conn.execute(
            "INSERT INTO manifests (hash, kind, manifest) VALUES (%s, 'evm-rpc', '{}')", ("f" * 64,)
        )
        job = conn.execute(
            """INSERT INTO jobs (namespace, name, manifest_hash, descriptor, start_block, end_block)
               VALUES ('ns', 'ds', %s, '{}', 0, 99) RETURNING id""",
            ("f" * 64,),
        ).fetchone()[0]
        conn.execute(
            "INSERT INTO segments (job_id, start_block, end_block, status, node_id, epoch) VALUES (%s, 0, 99, 'ASSIGNED', 'w1', 1)",
            (job,),
        )
        for i, table in enumerate(("blocks", "transactions", "logs")):
            conn.execute(
                """INSERT INTO table_revisions (namespace, name, manifest_hash, table_name, revision, path)
                   VALUES ('ns', 'ds', %s, %s, gen_random_uuid(), %s)""",
                ("f" * 64, table, f"ns/ds/{table}/r{i}"),
            )
    async with MetadataDb(db_url, pool_size=2) as metadb:
        yield metadb


async def fence_for(db: MetadataDb, node: str, epoch: int) -> SegmentFence:
    rows = await db.fetch_all("active_table_revisions", {"manifest_hash": "f" * 64})
    segment = (await db.fetch_all("job_segments", {"job_id": 1}))[0]
    return SegmentFence(
        db, Fence(segment["id"], node, epoch), {r["table_name"]: r["id"] for r in rows}
    )


async def checkpoint(db: MetadataDb) -> int | None:
    return (await db.fetch_all("job_segments", {"job_id": 1}))[0]["checkpoint_block"]


async def file_count(db: MetadataDb) -> int:
    async with db.connection() as conn:
        return (await (await conn.execute("SELECT count(*) AS n FROM files")).fetchone())["n"]


async def test_commit_moves_the_checkpoint_and_inserts_every_table(db: MetadataDb) -> None:
    fence = await fence_for(db, "w1", 1)
    await fence.commit(group(0, 9, "a"))
    assert await checkpoint(db) == 9
    assert await file_count(db) == 3
    await fence.commit(group(10, 19, "b"))
    assert await checkpoint(db) == 19


async def test_commit_with_a_gap_or_an_overlap_is_refused(db: MetadataDb) -> None:
    fence = await fence_for(db, "w1", 1)
    await fence.commit(group(0, 9, "a"))
    with pytest.raises(FenceLost):
        await fence.commit(group(11, 19, "gap"))
    with pytest.raises(FenceLost):
        await fence.commit(group(5, 19, "overlap"))
    assert await checkpoint(db) == 9 and await file_count(db) == 3


async def test_stale_owner_or_epoch_commits_nothing(db: MetadataDb) -> None:
    stale = await fence_for(db, "w1", 1)
    async with db.connection() as conn:
        await conn.execute("UPDATE segments SET node_id = 'w2', epoch = 2")
    with pytest.raises(FenceLost):
        await stale.commit(group(0, 9, "late"))
    with pytest.raises(FenceLost):
        await (await fence_for(db, "w2", 1)).commit(group(0, 9, "old-epoch"))
    assert await checkpoint(db) is None and await file_count(db) == 0
    await (await fence_for(db, "w2", 2)).commit(group(0, 9, "owner"))
    assert await checkpoint(db) == 9


async def test_files_of_one_commit_must_share_a_range(db: MetadataDb) -> None:
    fence = await fence_for(db, "w1", 1)
    files = group(0, 9, "a")
    files[2] = File("logs", 0, 8, "000000000-x-logs.parquet")
    with pytest.raises(ValueError, match="same block range"):
        await fence.commit(files)
    assert await file_count(db) == 0


async def test_finish_and_rewind_are_fenced(db: MetadataDb) -> None:
    fence = await fence_for(db, "w1", 1)
    await fence.commit(group(0, 9, "a"))
    await fence.commit(group(10, 19, "b"))
    retired = await fence.rewind("f" * 64, 9)
    assert len(retired) == 3 and await checkpoint(db) == 9
    assert await fence.finish(1, "FAILED", "boom", retry_in=5) == 1
    with pytest.raises(FenceLost):  # FAILED gave the segment up
        await fence.commit(group(10, 19, "c"))


async def test_progress_is_the_unbroken_run_from_the_start(db: MetadataDb) -> None:
    fence = await fence_for(db, "w1", 1)
    await fence.commit(group(0, 9, "a"))
    async with db.connection() as conn:  # a later range committed by another segment
        await conn.execute(
            """INSERT INTO files (table_revision_id, file_name, path, object_size, row_count,
                                  start_block, end_block, prev_hash, hash, metadata)
               SELECT id, 'late.parquet', 'x', 50, 1, 20, 29, '\\x00', '\\x00', '{}'
               FROM table_revisions"""
        )
    progress = await JobStore(db).progress("f" * 64, 0)
    assert progress["blocks"] == {
        "current_block": 9,
        "start_block": 0,
        "files_count": 2,
        "total_size_bytes": 150,
    }
    await fence.commit(group(10, 19, "b"))
    assert (await JobStore(db).progress("f" * 64, 0))["logs"]["current_block"] == 29


async def segment_rows(db: MetadataDb) -> list[dict[str, Any]]:
    return await db.fetch_all("job_segments", {"job_id": 1})


async def test_commit_past_the_segment_end_is_refused(db: MetadataDb) -> None:
    fence = await fence_for(db, "w1", 1)  # the segment is 0..99
    await fence.commit(group(0, 89, "a"))
    with pytest.raises(FenceLost):
        await fence.commit(group(90, 109, "past"))
    assert await checkpoint(db) == 89 and await file_count(db) == 3
    await fence.commit(group(90, 99, "b"))
    assert await checkpoint(db) == 99


async def test_completed_only_with_the_checkpoint_at_the_end(db: MetadataDb) -> None:
    fence = await fence_for(db, "w1", 1)
    with pytest.raises(SegmentIncomplete, match="committed up to block none of 99"):
        await fence.finish(1, "COMPLETED")
    await fence.commit(group(0, 49, "a"))
    with pytest.raises(SegmentIncomplete, match="up to block 49 of 99"):
        await fence.finish(1, "COMPLETED")
    (row,) = await segment_rows(db)
    assert row["status"] == "RUNNING" and row["node_id"] == "w1", "a refused finish changes nothing"
    await fence.commit(group(50, 99, "b"))
    await fence.finish(1, "COMPLETED")
    assert (await segment_rows(db))[0]["status"] == "COMPLETED"
    with pytest.raises(FenceLost):  # not ours any more: lost, not incomplete
        await fence.finish(1, "COMPLETED")


async def test_split_ends_the_segment_and_adds_the_rest_as_pending(db: MetadataDb) -> None:
    fence = await fence_for(db, "w1", 1)
    await fence.commit(group(0, 19, "a"))
    (new_id,) = await fence.split(1, 99, [60])
    first, rest = await segment_rows(db)
    assert (first["start_block"], first["end_block"], first["status"]) == (0, 59, "RUNNING")
    assert rest["id"] == new_id
    assert (rest["start_block"], rest["end_block"], rest["checkpoint_block"]) == (60, 99, None)
    assert rest["status"] == "PENDING" and rest["node_id"] is None
    events = await db.fetch_all("list_job_events", {"job_id": 1})
    assert [e["detail"] for e in events if e["event_type"] == "SEGMENT_SPLIT"] == [
        {"segment_id": first["id"], "new_segment_id": new_id, "split_block": 60, "end_block": 99}
    ]
    with pytest.raises(FenceLost):  # the old end is gone: a repeated split does not land
        await fence.split(1, 99, [80])
    with pytest.raises(FenceLost):
        await fence.commit(group(20, 60, "past"))
    await fence.commit(group(20, 59, "b"))
    await fence.finish(1, "COMPLETED")
    assert [r["status"] for r in await segment_rows(db)] == ["COMPLETED", "PENDING"]


async def test_a_split_for_several_workers_makes_a_segment_for_each(db: MetadataDb) -> None:
    fence = await fence_for(db, "w1", 1)
    await fence.commit(group(0, 19, "a"))
    new_ids = await fence.split(1, 99, [40, 60, 80])
    rows = await segment_rows(db)
    assert [(r["start_block"], r["end_block"], r["status"]) for r in rows] == [
        (0, 39, "RUNNING"), (40, 59, "PENDING"), (60, 79, "PENDING"), (80, 99, "PENDING"),
    ]  # fmt: skip
    assert [r["id"] for r in rows[1:]] == new_ids
    events = await db.fetch_all("list_job_events", {"job_id": 1})
    assert [
        (e["detail"]["new_segment_id"], e["detail"]["split_block"], e["detail"]["end_block"])
        for e in events
        if e["event_type"] == "SEGMENT_SPLIT"
    ] == [(new_ids[0], 40, 59), (new_ids[1], 60, 79), (new_ids[2], 80, 99)]
    for bad in ([], [60, 40], [40, 40], [40, 100]):
        with pytest.raises(ValueError, match="not ascending"):
            await fence.split(1, 99, bad)
    assert len(await segment_rows(db)) == 4, "a refused split changes nothing"


async def test_split_is_fenced(db: MetadataDb) -> None:
    fence = await fence_for(db, "w1", 1)
    await fence.commit(group(0, 59, "a"))
    with pytest.raises(FenceLost):  # below the checkpoint: those blocks are committed
        await fence.split(1, 99, [50])
    with pytest.raises(FenceLost):  # another owner's epoch
        await (await fence_for(db, "w2", 1)).split(1, 99, [80])
    async with db.connection() as conn:
        await conn.execute("UPDATE segments SET node_id = 'w2', epoch = 2")
    with pytest.raises(FenceLost):  # reassigned
        await fence.split(1, 99, [80])
    assert [(r["end_block"]) for r in await segment_rows(db)] == [99]
