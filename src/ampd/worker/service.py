"""`ampd worker`: register, heartbeat, take assigned segments, run them, reconcile.

Connections: one holds the node-id lock and sends heartbeats; one LISTENs for assignments;
a small pool serves the segment runs. NOTIFY is the fast path; reconciliation (every
`reconcile_interval_secs`, and after every reconnect) compares the segments the database
says this worker owns with the runs it has, so a lost notification delays work but never
loses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from ampd import __version__
from ampd.config import Config
from ampd.extract.fetch_processes import FetchProcesses
from ampd.logs import get_logger, node_id_var
from ampd.metadb.connect import DatabaseUnavailable, connect, retry_start
from ampd.metadb.db import MetadataDb
from ampd.metadb.jobs import JOB_ACTIONS_CHANNEL
from ampd.metadb.segments import SegmentFence
from ampd.metadb.workers import heartbeat, register, try_lock_node_id
from ampd.sql.catalog import Catalog
from ampd.sql.derived_range import warm_up
from ampd.storage.store import open_store
from ampd.worker.segment_run import SegmentInfo, SegmentRun, StopMode

log = get_logger("worker")

HEARTBEAT_SECS = 1.0


class WorkerError(Exception):
    """The worker cannot start or must exit: one clear line for the user."""


def build_info() -> dict[str, Any]:
    """What `GET /workers/{id}` shows about this build."""
    sha, stamp = "unknown", None
    source = Path(__file__).resolve().parents[3]
    if (source / ".git").exists():
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                ["git", "-C", str(source), "log", "-1", "--format=%H %cI"],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.split()
            sha, stamp = out[0], out[1]
    return {
        "version": __version__,
        "commit_sha": sha,
        "commit_timestamp": stamp,
        "build_date": datetime.now(UTC).date().isoformat(),
        "python": platform.python_version(),
    }


def fetch_processes(config: Config, start_method: str = "spawn") -> FetchProcesses | None:
    """The processes a worker extracts in (`worker_processes`, one per CPU by default), not
    started yet; None when it extracts in its own process."""
    count = config.worker_processes
    if count is None:
        count = os.cpu_count() or 1
    return FetchProcesses(count, start_method=start_method) if count > 0 else None


class Worker:
    def __init__(
        self, config: Config, url: str, node_id: str, fetchers: FetchProcesses | None = None
    ) -> None:
        """`fetchers`: processes started before any thread existed (`ampd worker` forks
        them first thing); without them the worker spawns its own at start. It stops them
        on shutdown either way."""
        self.config = config
        self.url = url
        self.node_id = node_id
        self.db = MetadataDb(
            url, pool_size=min(config.metadata_db.pool_size, 4), name=f"worker-{node_id}"
        )
        self.store = open_store(config.data_dir)
        self.fetchers = fetchers if fetchers is not None else fetch_processes(config)
        self.runs: dict[int, SegmentRun] = {}
        self._catalog: Catalog | None = None  # for derived segments, started on first use
        self._lock_conn: psycopg.AsyncConnection[Any] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._reconcile_now = asyncio.Event()
        # Keys of cut-short commits the database could not be asked about yet.
        self._unsettled: list[tuple[SegmentFence, list[str]]] = []
        self._accepting = True
        self.fatal: WorkerError | None = None
        self.failed = asyncio.Event()  # set when the worker must exit with an error

    async def start(self) -> None:
        """Take the node id, register, start heartbeats, listening and reconciliation.

        Raises WorkerError if the node id is in use, StoreUnavailable if the data store
        cannot be used; nothing is written in either case.
        """
        token = node_id_var.set(self.node_id)  # tasks created below inherit it
        try:
            if self.fetchers is not None:
                # From the event loop's thread, which lives as long as the worker: the
                # kernel kills the processes when the thread that started them ends.
                self.fetchers.start()
            await self.store.check()  # a missing bucket fails here, before anything is written
            wait_secs = self.config.metadata_db.connect_timeout_secs
            await retry_start(lambda: self._join(wait_secs), timeout=wait_secs, what="worker start")
            log.info("worker %s registered", self.node_id)
            await self._clean_up_storage()
            self._tasks = [
                asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
                asyncio.create_task(self._listen_loop(), name="listen"),
                asyncio.create_task(self._reconcile_loop(), name="reconcile"),
                asyncio.create_task(self._warm_up(), name="warm-up"),
            ]
        finally:
            node_id_var.reset(token)

    async def _join(self, wait_secs: float) -> None:
        """Open the pool, take the node id, register: again from the top if the database
        goes away meanwhile (the lock dies with its connection)."""
        await self.db.open(timeout=wait_secs)  # waits for a database not up yet
        self._lock_conn = await self._connect_and_lock(wait_secs)
        try:
            await register(
                self._lock_conn, self.node_id, build_info(), self.config.worker_max_segments
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await self._lock_conn.close()
            self._lock_conn = None
            raise

    async def _connect_and_lock(self, wait_secs: float = 0) -> psycopg.AsyncConnection[Any]:
        """A connection holding the node-id lock; transient connection failures are retried
        for `wait_secs`. Raises WorkerError if another worker holds the lock,
        DatabaseUnavailable or psycopg.Error if the database cannot be reached."""
        conn = await connect(self.url, timeout=wait_secs, autocommit=True)
        try:
            locked = await try_lock_node_id(conn, self.node_id)
        except BaseException:
            await conn.close()  # cancelled or failed: the lock must not outlive us
            raise
        if not locked:
            await conn.close()
            raise WorkerError(
                f"node id {self.node_id!r} is already in use by another running worker"
            )
        return conn

    # -- heartbeats --

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                assert self._lock_conn is not None
                await heartbeat(self._lock_conn, self.node_id)
            except (psycopg.Error, OSError) as exc:
                log.warning("heartbeat failed: %s; reconnecting", exc)
                await self._relock()
                continue
            await asyncio.sleep(HEARTBEAT_SECS)

    async def _relock(self) -> None:
        """Reconnect after the database came back, taking the node-id lock again."""
        if self._lock_conn is not None:
            with contextlib.suppress(Exception):
                await self._lock_conn.close()
        delay = 0.1
        while True:
            try:
                conn = await self._connect_and_lock()
            except WorkerError as exc:
                self._die(exc)
                return
            except (psycopg.Error, OSError, DatabaseUnavailable):
                conn = None
            if conn is not None:
                try:
                    await register(
                        conn, self.node_id, build_info(), self.config.worker_max_segments
                    )
                except (psycopg.Error, OSError):
                    with contextlib.suppress(Exception):
                        await conn.close()  # it holds the lock: the next attempt needs it free
                    conn = None
            if conn is None:
                # Capped at 0.5 s: heartbeats resume within a second of the database's return.
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
                continue
            self._lock_conn = conn
            log.info("reconnected to the metadata database")
            self._reconcile_now.set()
            return

    def _die(self, error: WorkerError) -> None:
        log.error("%s", error)
        self.fatal = error
        self.failed.set()

    # -- assignments --

    async def _listen_loop(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(self.url, autocommit=True) as conn:
                    await conn.execute(f"LISTEN {JOB_ACTIONS_CHANNEL}")
                    self._reconcile_now.set()  # anything sent while we were not listening
                    async for notice in conn.notifies():
                        self._on_notice(notice.payload)
            except (psycopg.Error, OSError) as exc:
                log.warning("listening for assignments failed: %s; reconnecting", exc)
                await asyncio.sleep(0.5)

    def _on_notice(self, payload: str) -> None:
        try:
            action = json.loads(payload)
        except json.JSONDecodeError:
            return
        if action.get("node_id") != self.node_id:
            return
        log.debug("notified: %s", action)
        if action.get("action") == "split":
            run = self.runs.get(action.get("segment_id"))
            parts = action.get("parts", 2)
            if not isinstance(parts, int) or isinstance(parts, bool) or parts < 2:
                log.warning("ignored a split notice with parts=%r (expected an int >= 2)", parts)
                return
            if run is not None and run.segment.epoch == action.get("epoch"):
                run.request_split(self.config.split_min_blocks, parts)
            return
        if action.get("action") == "stop":
            run = self.runs.get(action.get("segment_id"))
            if run is not None and run.segment.epoch == action.get("epoch"):
                run.request_stop(StopMode.STOP)
        self._reconcile_now.set()

    async def _clean_up_storage(self) -> None:
        """Remove what dead writers left: staging files nobody holds, and the objects of
        cut-short commits that the database has since said did not land."""
        with contextlib.suppress(OSError):
            removed = await self.store.cleanup_staging()
            if removed:
                log.info("removed %d staging file(s) of writers that are gone", removed)
        unsettled, self._unsettled = self._unsettled, []
        for fence, keys in unsettled:
            try:
                for key in await asyncio.wait_for(fence.uncommitted(keys), 5.0):
                    await self.store.delete(key)
            except (psycopg.Error, OSError, TimeoutError) as exc:
                log.debug("uncommitted objects still unsettled: %s", exc)
                self._unsettled.append((fence, keys))

    def _hand_off(self, fence: SegmentFence, keys: list[str]) -> None:
        self._unsettled.append((fence, keys))

    async def _reconcile_loop(self) -> None:
        while True:
            try:
                await asyncio.wait_for(
                    self._reconcile_now.wait(), self.config.reconcile_interval_secs
                )
            except TimeoutError:
                pass
            self._reconcile_now.clear()
            try:
                await self._clean_up_storage()
                await self.reconcile()
            except (psycopg.Error, OSError) as exc:
                log.warning("reconciliation failed: %s", exc)
                await asyncio.sleep(0.5)
                self._reconcile_now.set()

    async def reconcile(self) -> None:
        """Start the segments the database gives us that we do not run; stop the others."""
        owned = {
            row["id"]: row
            for row in await self.db.fetch_all("owned_segments", {"node_id": self.node_id})
        }
        for segment_id, run in list(self.runs.items()):
            row = owned.get(segment_id)
            if row is None or row["epoch"] != run.segment.epoch:
                log.info("segment %d is no longer ours; aborting its run", segment_id)
                run.request_stop(StopMode.ABORT)
            elif row["job_status"] not in ("SCHEDULED", "RUNNING"):
                run.request_stop(StopMode.STOP)
        if not self._accepting:
            return
        for segment_id, row in owned.items():
            run = self.runs.get(segment_id)
            if run is not None and run.segment.epoch == row["epoch"]:
                continue
            if row["job_status"] not in ("SCHEDULED", "RUNNING"):
                self._start(row, stop_mode=StopMode.STOP)
            else:
                self._start(row)

    def _start(self, row: dict[str, Any], stop_mode: StopMode | None = None) -> None:
        info = SegmentInfo(
            id=row["id"],
            job_id=row["job_id"],
            epoch=row["epoch"],
            start_block=row["start_block"],
            end_block=row["end_block"],
            checkpoint_block=row["checkpoint_block"],
            attempts=row["attempts"],
            manifest_hash=row["manifest_hash"],
            namespace=row["namespace"],
            name=row["name"],
        )
        run = SegmentRun(
            self.db,
            self.config,
            self.store,
            self.node_id,
            info,
            self._hand_off,
            self.fetchers,
            self.derived_catalog,
        )
        if stop_mode is not None:
            run.request_stop(stop_mode)
        self.runs[info.id] = run
        run.task = asyncio.create_task(self._supervise(run), name=f"segment-{info.id}")

    async def _warm_up(self) -> None:
        """Ready what derived segments use, once, in the background: the SQL engine's first
        evaluation (on a thread) and the listening catalog."""
        began = time.monotonic()
        try:
            await asyncio.to_thread(warm_up)
            await self.derived_catalog()
        except Exception as exc:  # noqa: BLE001 - only an optimisation: the first chunks pay
            log.warning("warming up the SQL engine failed: %s", exc)
            return
        log.debug("SQL engine warmed up in %.3f s", time.monotonic() - began)

    async def derived_catalog(self) -> Catalog:
        """The catalog this worker's derived segments read their dependencies from: one for
        all of them, told of every commit by the database (LISTEN), started on first use."""
        if self._catalog is None:
            self._catalog = Catalog(self.db, self.config.data_dir)
            await self._catalog.start()
        return self._catalog

    async def _supervise(self, run: SegmentRun) -> None:
        try:
            await run.run()
        except asyncio.CancelledError:
            pass
        finally:
            if self.runs.get(run.segment.id) is run:
                del self.runs[run.segment.id]
            if run.rerun:
                self._reconcile_now.set()

    # -- shutdown --

    async def shutdown(self) -> None:
        """Graceful: let each run commit its file in hand (bounded), release our segments,
        mark ourselves stopped. The commit fence keeps this safe if it is cut short.

        Takes at most `shutdown_timeout_secs` plus a few seconds, even with the database
        down. Safe after a `start()` that was cancelled or failed part way."""
        grace = 2.0  # for cancelled tasks to unwind, and for the release when runs took it all
        deadline = asyncio.get_running_loop().time() + self.config.shutdown_timeout_secs
        self._accepting = False
        runs = list(self.runs.values())
        for run in runs:
            run.request_stop(StopMode.RELEASE)
        tasks = [run.task for run in runs if run.task is not None]
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=self.config.shutdown_timeout_secs)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=grace)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=grace)
        if self._lock_conn is not None:  # only the holder of the node id may release its work
            budget = max(deadline - asyncio.get_running_loop().time(), grace)
            try:
                async with asyncio.timeout(budget):
                    released = await self.db.fetch_all(
                        "release_segments_of", {"node_id": self.node_id}
                    )
                    await self.db.execute("mark_worker_stopped", {"node_id": self.node_id})
                    if released:
                        await self.db.notify("job_changes", "released")
                log.info("released %d segment(s); worker %s stopped", len(released), self.node_id)
            except (psycopg.Error, TimeoutError) as exc:
                log.warning(
                    "could not release segments on shutdown (failover will): %s",
                    str(exc) or f"no database connection within {budget:.1f}s",
                )
        if self.fetchers is not None:
            await self.fetchers.aclose()
        if self._catalog is not None:
            await self._catalog.stop()
        await self.db.close(timeout=grace)
        if self._lock_conn is not None:
            with contextlib.suppress(Exception):
                await self._lock_conn.close()
