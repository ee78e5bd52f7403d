"""Schema migrations against a real PostgreSQL, through `ampd migrate` processes."""

from __future__ import annotations

import hashlib
from pathlib import Path

import psycopg
import pytest

from ampd.metadb.migrate import MigrationError, available_migrations, migrate
from support.procs import AMPD, Proc, run

EXPECTED_TABLES = {
    "workers",
    "manifests",
    "datasets",
    "dataset_versions",
    "dataset_tags",
    "jobs",
    "segments",
    "job_events",
    "table_revisions",
    "files",
    "footer_cache",
    "ampd_migrations",
}


def config_for(tmp_path: Path, url: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f'[metadata_db]\nurl = "{url}"\n')
    return path


def applied(url: str) -> list[tuple[int, str]]:
    with psycopg.connect(url) as conn:
        return conn.execute("SELECT version, name FROM ampd_migrations ORDER BY version").fetchall()


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {row[0] for row in rows}


def test_migrate_twice_second_is_a_noop(tmp_path: Path, db_url: str) -> None:
    config = config_for(tmp_path, db_url)
    first = run([AMPD, "--config", str(config), "migrate"])
    assert first.returncode == 0, first.stderr
    assert "applying migration 0001_initial" in first.stderr
    assert tables(db_url) >= EXPECTED_TABLES

    second = run([AMPD, "--config", str(config), "migrate"])
    assert second.returncode == 0, second.stderr
    assert "applying migration" not in second.stderr
    assert "up to date" in second.stderr
    assert applied(db_url) == [(m.version, m.name) for m in available_migrations()]


def test_two_migrate_processes_at_once_apply_the_schema_once(tmp_path: Path, db_url: str) -> None:
    config = config_for(tmp_path, db_url)
    procs = [
        Proc([AMPD, "--config", str(config), "migrate"], tmp_path / f"migrate{i}.log")
        for i in range(2)
    ]
    codes = [proc.wait(120) for proc in procs]
    assert codes == [0, 0], [proc.log() for proc in procs]
    logs = "".join(proc.log() for proc in procs)
    # Exactly one of the two applied the first migration; the other found it done.
    assert logs.count("applying migration 0001_initial") == 1
    assert applied(db_url) == [(m.version, m.name) for m in available_migrations()]


def test_env_url_overrides_the_file(tmp_path: Path, db_url: str) -> None:
    config = config_for(tmp_path, "postgresql:///no_such_db?host=/nonexistent")
    result = run(
        [AMPD, "--config", str(config), "migrate"], env={"AMP_CONFIG_METADATA_DB__URL": db_url}
    )
    assert result.returncode == 0, result.stderr
    assert tables(db_url) >= EXPECTED_TABLES


def test_unreachable_database_exits_1_with_one_line(tmp_path: Path) -> None:
    config = config_for(tmp_path, "postgresql:///x?host=/nonexistent-socket-dir")
    # Give up after 1 s, not the default 60 (the waiting is tested in test_connect.py).
    config.write_text(config.read_text() + "connect_timeout_secs = 1\n")
    result = run([AMPD, "--config", str(config), "migrate"])
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "nonexistent-socket-dir" in errors[0]


async def test_changed_migration_is_detected(db_url: str) -> None:
    await migrate(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE ampd_migrations SET checksum = %s WHERE version = 1",
            (hashlib.sha256(b"something else").hexdigest(),),
        )
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(db_url)


async def test_migration_from_a_newer_version_is_refused(db_url: str) -> None:
    await migrate(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO ampd_migrations (version, name, checksum) VALUES (9999, 'x', 'y')"
        )
    with pytest.raises(MigrationError, match="newer version"):
        await migrate(db_url)
