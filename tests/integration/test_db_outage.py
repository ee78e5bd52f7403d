"""A PostgreSQL outage under an open `MetadataDb` pool: calls recover within 2 s of the
database's return, and a worker's graceful shutdown stays within its bound meanwhile.

Each test has its own cluster (not the session one), since it kills and restarts it:
`kill()` is an immediate shutdown (SIGQUIT), like `pg_ctl -m immediate restart`.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from ampd.metadb.db import MetadataDb
from ampd.metadb.managed import ManagedPostgres
from support.postgres import running_cluster
from support.procs import AMPD, Proc

RECOVERY_SECS = 2.0  # the target: the next call succeeds within 2 s of the database's return
SHUTDOWN_MARGIN_SECS = 4.0  # past shutdown_timeout_secs: process exit, pool close


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ManagedPostgres]:
    with running_cluster(tmp_path / "pg") as pg:
        yield pg


async def select_one(db: MetadataDb) -> int:
    async with db.connection() as conn:
        cursor = await conn.execute("SELECT 1")
        row = await cursor.fetchone()
        return row["?column?"]


async def held_select_one(db: MetadataDb) -> int:
    async with db.connection() as conn:
        await asyncio.sleep(0.2)  # held, so that the others need connections of their own
        cursor = await conn.execute("SELECT 1")
        return (await cursor.fetchone())["?column?"]


@pytest.mark.parametrize("outage_secs", [1.0, 5.0])
async def test_query_during_outage_succeeds_soon_after_the_database_returns(
    cluster: ManagedPostgres, outage_secs: float
) -> None:
    db = MetadataDb(cluster.url, pool_size=4, name="outage-test")
    await db.open()
    try:
        # Several idle connections, all broken by the restart: each is discarded at once.
        assert await asyncio.gather(*(held_select_one(db) for _ in range(3))) == [1, 1, 1]
        cluster.kill()
        during = asyncio.create_task(select_one(db))
        await asyncio.sleep(outage_secs)
        assert not during.done(), "a call during a short outage waits for the database"
        await asyncio.to_thread(cluster.start)  # returns once it accepts connections
        back = time.monotonic()
        assert await asyncio.wait_for(during, RECOVERY_SECS) == 1
        assert await asyncio.wait_for(select_one(db), RECOVERY_SECS) == 1
        assert time.monotonic() - back < RECOVERY_SECS
    finally:
        await db.close()


async def test_call_after_a_restart_nobody_saw_succeeds_at_once(cluster: ManagedPostgres) -> None:
    db = MetadataDb(cluster.url, pool_size=2, name="outage-test")
    await db.open()
    try:
        assert await select_one(db) == 1
        cluster.kill()
        await asyncio.sleep(1.0)
        await asyncio.to_thread(cluster.start)
        assert await asyncio.wait_for(select_one(db), RECOVERY_SECS) == 1
    finally:
        await db.close()


def test_worker_shutdown_with_the_database_down_ends_within_its_bound(
    cluster: ManagedPostgres, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        'data_dir = "data"\nshutdown_timeout_secs = 3\n'
        f'[metadata_db]\nurl = "{cluster.url}"\npool_size = 2\n'
    )
    worker = Proc([AMPD, "--config", str(config), "worker", "--node-id", "w1"], tmp_path / "w1.log")
    try:
        worker.wait_for_log(r"worker w1 registered")
        cluster.kill()
        time.sleep(0.5)  # the heartbeat notices and starts reconnecting
        began = time.monotonic()
        worker.signal(signal.SIGTERM)
        assert worker.wait(60) == 0, worker.log()
        assert time.monotonic() - began < 3 + SHUTDOWN_MARGIN_SECS, worker.log()
        assert "could not release segments on shutdown" in worker.log()
    finally:
        worker.stop()


def test_worker_heartbeats_resume_within_2s_of_the_database_return(
    cluster: ManagedPostgres, tmp_path: Path
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'data_dir = "data"\n[metadata_db]\nurl = "{cluster.url}"\npool_size = 2\n')
    worker = Proc([AMPD, "--config", str(config), "worker", "--node-id", "w1"], tmp_path / "w1.log")
    try:
        worker.wait_for_log(r"worker w1 registered")
        with psycopg.connect(cluster.url, autocommit=True) as conn:
            conn.execute("CHECKPOINT")  # synchronous_commit=off: keep the schema across the kill
        cluster.kill()
        worker.wait_for_log(r"heartbeat failed")
        time.sleep(3.0)  # long enough for a backoff to grow past the target
        cluster.start()
        back = time.monotonic()
        worker.wait_for_log(r"reconnected to the metadata database", timeout=30)
        assert time.monotonic() - back < RECOVERY_SECS, worker.log()
    finally:
        worker.stop()


async def test_a_transaction_left_idle_is_ended_and_its_row_locks_freed(db_url: str) -> None:
    """A client frozen mid-transaction must not hold a segment's row lock for ever."""
    async with MetadataDb(db_url, pool_size=2, idle_in_transaction_timeout=0.5) as db:
        async with db.connection() as setup:
            await setup.execute("CREATE TABLE held (id int PRIMARY KEY)")
            await setup.execute("INSERT INTO held VALUES (1)")
        with pytest.raises(psycopg.errors.IdleInTransactionSessionTimeout):
            async with db.transaction() as frozen:
                await frozen.execute("SELECT id FROM held WHERE id = 1 FOR UPDATE")
                async with db.connection() as other:
                    # Waits for the idle transaction to be ended, then gets the lock.
                    await asyncio.wait_for(
                        other.execute("SELECT id FROM held WHERE id = 1 FOR UPDATE"), 10
                    )
                await frozen.execute("SELECT 1")  # its session was ended meanwhile
        async with db.connection() as after:  # the pool replaced the ended session
            assert await (await after.execute("SELECT 1 AS one")).fetchone() == {"one": 1}


async def test_a_start_up_step_cut_by_a_restart_runs_again(cluster: ManagedPostgres) -> None:
    """The database restarts under a start-up step (a worker registering, migrations): the
    step is run again once it is back, instead of the service exiting 1."""
    from ampd.metadb.connect import connect, retry_start

    attempts: list[str] = []

    async def step() -> int:
        conn = await connect(cluster.url, timeout=30, autocommit=True)
        try:
            attempts.append("connected")
            if len(attempts) == 1:  # the first time, the database goes away under the step
                await asyncio.to_thread(cluster.kill)
                restart = asyncio.ensure_future(asyncio.to_thread(cluster.start))
            cursor = await conn.execute("SELECT 42")
            return (await cursor.fetchone())[0]
        finally:
            await conn.close()
            if len(attempts) == 1:
                await restart

    assert await retry_start(step, timeout=30, what="test start") == 42
    assert attempts == ["connected", "connected"]


async def test_a_start_up_step_failing_for_good_is_not_retried(cluster: ManagedPostgres) -> None:
    from ampd.metadb.connect import retry_start

    calls = 0

    async def step() -> None:
        nonlocal calls
        calls += 1
        async with await psycopg.AsyncConnection.connect(cluster.url) as conn:
            await conn.execute("SELECT * FROM no_such_table")

    with pytest.raises(psycopg.errors.UndefinedTable):
        await retry_start(step, timeout=30, what="test start")
    assert calls == 1
