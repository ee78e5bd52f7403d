"""One owner for a writer's file at a time: a cancelled close leaves its thread to finish,
and abort waits for it; nothing a cancelled writer wrote is left behind; staging cleanup
removes only the files whose writer is gone."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from ampd.providers.evm_rpc.schema import TABLES
from ampd.storage import store as store_module
from ampd.storage.parquet_writer import TableWriter, WriterSettings
from ampd.storage.paths import TableLocation, new_revision
from ampd.storage.store import LocalStore
from support.writer_race import Block

TESTS = Path(__file__).resolve().parents[1]


def run_race(*args: str) -> dict:
    """Run support.writer_race in a child: a crash in pyarrow is its exit status, not ours."""
    child = subprocess.run(
        [sys.executable, "-m", "support.writer_race", *args],
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == 0, f"exit {child.returncode}\n{child.stdout}\n{child.stderr}"
    return json.loads(child.stdout.strip().splitlines()[-1])


def test_abort_waits_for_the_write_in_flight(tmp_path: Path) -> None:
    seen = run_race("gated", str(tmp_path / "data"))
    assert seen == {"abort_waited": True, "staging_left": [], "objects": 0}


def test_cancel_then_abort_at_any_moment_never_crashes(tmp_path: Path) -> None:
    seen = run_race("stress", str(tmp_path / "data"), "12")
    assert seen["staging_left"] == []
    assert seen["objects"] == seen["handed_out"]  # only files close_file returned remain


class SlowPutStore(LocalStore):
    """Puts take a while: long enough to cancel the caller in the middle of one."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.putting = asyncio.Event()

    async def put_file(self, local_path, key):  # noqa: ANN001
        self.putting.set()
        await asyncio.sleep(0.2)
        return await super().put_file(local_path, key)


def blocks_writer(store: LocalStore) -> TableWriter:
    location = TableLocation("ns", "ds", "blocks", new_revision())
    return TableWriter(store, location, TABLES["blocks"], "net", WriterSettings())


async def test_an_object_put_but_never_handed_out_is_deleted_by_abort(tmp_path: Path) -> None:
    store = SlowPutStore(tmp_path / "data")
    writer = blocks_writer(store)
    await writer.write(None, [Block(0)])
    closing = asyncio.create_task(writer.close_file())
    await store.putting.wait()
    closing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await closing
    await asyncio.sleep(0.4)  # the put finished behind the cancelled caller
    assert len(await store.list()) == 1
    await writer.abort()
    assert await store.list() == []
    assert list((tmp_path / "data" / ".staging").iterdir()) == []


async def test_a_cancelled_open_leaves_no_staging_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data")
    writer = blocks_writer(store)
    writing = asyncio.create_task(writer.write(None, [Block(0)]))
    await asyncio.sleep(0)  # the open is now in its thread
    writing.cancel()
    await asyncio.gather(writing, return_exceptions=True)
    await writer.abort()
    staging = tmp_path / "data" / ".staging"
    assert not staging.exists() or list(staging.iterdir()) == []


# -- staging cleanup ------------------------------------------------------------------------

HOLDER = textwrap.dedent(
    """
    import sys, time
    from ampd.storage.store import LocalStore
    staging = LocalStore(sys.argv[1]).new_staging_file(".parquet")
    staging.path.write_bytes(b"half a file")
    print(staging.path, flush=True)
    time.sleep(600)
    """
)


def hold_staging_file(root: Path) -> tuple[subprocess.Popen[str], Path]:
    """A real process that writes a staging file and keeps it, as a live writer does."""
    child = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(root)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    return child, Path(child.stdout.readline().strip())


def age(path: Path, seconds: float) -> None:
    past = time.time() - seconds
    os.utime(path, (past, past))


async def test_cleanup_removes_a_killed_writers_file_but_not_a_live_ones(
    tmp_path: Path,
) -> None:
    root = tmp_path / "data"
    live, live_file = hold_staging_file(root)
    dead, dead_file = hold_staging_file(root)
    try:
        dead.send_signal(signal.SIGKILL)
        dead.wait(10)
        # Both past the grace time: only the lock tells them apart, not the age.
        age(live_file, 3600)
        age(dead_file, store_module.STAGING_GRACE_SECS + 1)
        store = LocalStore(root)
        assert await store.cleanup_staging() == 1
        assert live_file.exists() and not dead_file.exists()
        # A file this very process is writing is just as safe.
        mine = store.new_staging_file()
        age(mine.path, 3600)
        assert await store.cleanup_staging() == 0 and mine.path.exists()
        mine.discard()
    finally:
        live.kill()
        live.wait(10)
    age(live_file, store_module.STAGING_GRACE_SECS + 1)
    assert await LocalStore(root).cleanup_staging() == 1
    assert not live_file.exists()


async def test_cleanup_leaves_a_fresh_unlocked_file_alone(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data")
    staging = store.new_staging_file()
    staging.release()  # unlocked, as in the instant between create and lock
    assert await store.cleanup_staging() == 0 and staging.path.exists()
    age(staging.path, store_module.STAGING_GRACE_SECS + 1)
    assert await store.cleanup_staging() == 1 and not staging.path.exists()


def test_release_keeps_the_file_discard_deletes_it(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "data")
    kept, gone = store.new_staging_file(), store.new_staging_file()
    kept.release()
    gone.discard()
    assert kept.path.exists() and not gone.path.exists()
