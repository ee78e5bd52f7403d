"""`ampd solo` as a real process: managed PostgreSQL, migration, signals, crash recovery."""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from ampd.metadb.migrate import available_migrations
from support.procs import AMPD, Proc, kill_postgres_in, run

pytestmark = pytest.mark.timeout(180)

SOLO_ENV = {
    "AMP_CONFIG": "",
    # Port 0: a free port, logged by solo; tests never collide with another listener.
    "AMP_CONFIG_ADMIN_API_ADDR": "127.0.0.1:0",
    "AMP_CONFIG_JSONL_ADDR": "127.0.0.1:0",
    "AMP_CONFIG_FLIGHT_ADDR": "127.0.0.1:0",
}


@pytest.fixture
def amp_dir(tmp_path: Path) -> Iterator[Path]:
    folder = tmp_path / "amp"
    yield folder
    kill_postgres_in(folder)


class Solo:
    def __init__(self, amp_dir: Path, log_name: str) -> None:
        self.proc = Proc(
            [AMPD, "solo", "--amp-dir", str(amp_dir)], amp_dir.parent / log_name, env=SOLO_ENV
        )

    def wait_up(self) -> str:
        """Wait for the ready line; returns the admin API's base URL."""
        match = self.proc.wait_for_log(r"admin API listening on (http://[0-9.]+:\d+)")
        self.proc.wait_for_log(r"ampd solo is up")
        return match.group(1)


def db_url(amp_dir: Path) -> str:
    return f"postgresql:///postgres?host={amp_dir / 'metadb'}"


def postmaster_pid(amp_dir: Path) -> int:
    return int((amp_dir / "metadb" / "postmaster.pid").read_text().splitlines()[0])


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def test_solo_starts_migrates_serves_and_stops_on_sigterm(amp_dir: Path) -> None:
    solo = Solo(amp_dir, "solo.log")
    try:
        admin = solo.wait_up()
        for folder in ("data", "providers", "manifests", "metadb"):
            assert (amp_dir / folder).is_dir()
        assert (amp_dir / "metadb" / ".s.PGSQL.5432").is_socket()
        with psycopg.connect(db_url(amp_dir)) as conn:
            versions = conn.execute("SELECT version FROM ampd_migrations").fetchall()
        assert versions == [(m.version,) for m in available_migrations()]
        assert httpx.get(f"{admin}/healthz").status_code == 200
        assert re.search(
            r"metadata database: postgresql:///postgres\?host=\S+/metadb", solo.proc.log()
        )
        pg_pid = postmaster_pid(amp_dir)

        solo.proc.signal(signal.SIGTERM)
        assert solo.proc.wait(60) == 0
        assert not alive(pg_pid), "managed PostgreSQL must stop with solo"
        assert "managed PostgreSQL stopped" in solo.proc.log()
    finally:
        solo.proc.stop()


def test_second_start_reuses_the_cluster(amp_dir: Path) -> None:
    first = Solo(amp_dir, "first.log")
    try:
        first.wait_up()
        with psycopg.connect(db_url(amp_dir), autocommit=True) as conn:
            conn.execute("CREATE TABLE marker (v text)")
            conn.execute("INSERT INTO marker VALUES ('kept')")
        first.proc.signal(signal.SIGINT)
        assert first.proc.wait(60) == 0
    finally:
        first.proc.stop()

    second = Solo(amp_dir, "second.log")
    try:
        second.wait_up()
        assert "creating the managed PostgreSQL cluster" not in second.proc.log()
        assert "applying migration" not in second.proc.log()
        with psycopg.connect(db_url(amp_dir)) as conn:
            assert conn.execute("SELECT v FROM marker").fetchall() == [("kept",)]
    finally:
        second.proc.stop()
    assert second.proc.popen.returncode == 0


def test_start_after_kill_9_cleans_up_the_stale_server(amp_dir: Path) -> None:
    first = Solo(amp_dir, "first.log")
    first.wait_up()
    with psycopg.connect(db_url(amp_dir), autocommit=True) as conn:
        conn.execute("CREATE TABLE marker AS SELECT 42 AS v")
    stale_pid = postmaster_pid(amp_dir)
    first.proc.signal(signal.SIGKILL)
    first.proc.wait(30)
    assert alive(stale_pid), "the orphaned postgres outlives a killed solo"

    second = Solo(amp_dir, "second.log")
    try:
        second.wait_up()
        assert "stopping a stale PostgreSQL server" in second.proc.log()
        assert not alive(stale_pid)
        assert postmaster_pid(amp_dir) != stale_pid
        with psycopg.connect(db_url(amp_dir)) as conn:
            assert conn.execute("SELECT v FROM marker").fetchall() == [(42,)]
    finally:
        second.proc.stop()
    assert second.proc.popen.returncode == 0


def test_second_solo_on_the_same_amp_dir_is_refused(amp_dir: Path) -> None:
    first = Solo(amp_dir, "first.log")
    try:
        first.wait_up()
        result = run([AMPD, "solo", "--amp-dir", str(amp_dir)], env=SOLO_ENV, timeout=60)
        assert result.returncode == 1
        assert "another ampd solo is running" in result.stderr
        assert first.proc.popen.poll() is None
    finally:
        first.proc.stop()


def test_missing_postgres_binaries_is_one_clear_line(amp_dir: Path) -> None:
    env = {**SOLO_ENV, "PATH": str(Path(AMPD).parent), "AMP_PG_SEARCH_PATHS": "/nonexistent/*/bin"}
    result = run([AMPD, "solo", "--amp-dir", str(amp_dir)], env=env, timeout=60)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1
    assert "initdb" in errors[0] and "install" in errors[0]


def test_config_toml_in_amp_dir_is_used(amp_dir: Path) -> None:
    amp_dir.mkdir(parents=True)
    (amp_dir / "config.toml").write_text('data_dir = "parquet"\nunknown_thing = 1\n')
    result = run([AMPD, "solo", "--amp-dir", str(amp_dir)], env=SOLO_ENV, timeout=60)
    assert result.returncode == 1
    assert "unknown config key 'unknown_thing'" in result.stderr
    assert str(amp_dir / "config.toml") in result.stderr
