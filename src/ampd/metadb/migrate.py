"""Schema migrations: numbered `.sql` files in `metadb/migrations`, applied in order.

Each migration runs in its own transaction and is recorded in `ampd_migrations` with a
checksum. A session-level advisory lock serializes processes that start at the same
moment: the second waits, then finds nothing left to do.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources

import psycopg

from ampd.logs import get_logger
from ampd.metadb.connect import connect

log = get_logger("metadb")

# pg_advisory_lock key for migrations: the first 8 bytes of sha256("ampd:migrations").
MIGRATION_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"ampd:migrations").digest()[:8], "big", signed=True
)
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


def _data_steps() -> dict[int, Callable[[psycopg.AsyncConnection], Awaitable[None]]]:
    """Migrations that also rewrite data: version -> the step (given the open transaction)."""
    from ampd.metadb.rehash import rehash_manifests

    return {4: rehash_manifests}


class MigrationError(Exception):
    """A migration failed or the recorded history does not match the files."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available_migrations() -> list[Migration]:
    """The migrations shipped with this version, in order."""
    folder = resources.files("ampd.metadb") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text()))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"duplicate migration numbers in {versions}")
    return found


async def migrate(
    url: str, *, connect_timeout: float = 60.0, until: int | None = None
) -> list[Migration]:
    """Apply the pending migrations to the database at `url` (up to version `until`, all by
    default); returns those applied. A migration with a data step (`_data_steps`) runs it
    in the same transaction, right after its SQL.

    Waits up to `connect_timeout` s for the database to come up (see `connect.connect`).
    Raises DatabaseUnavailable past that bound, MigrationError for a failed migration or a
    history that does not match the files.
    """
    migrations = [m for m in available_migrations() if until is None or m.version <= until]
    applied_now: list[Migration] = []
    async with await connect(url, timeout=connect_timeout, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS ampd_migrations (
                       version integer PRIMARY KEY,
                       name text NOT NULL,
                       checksum text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            cursor = await conn.execute("SELECT version, name, checksum FROM ampd_migrations")
            applied = {row[0]: (row[1], row[2]) for row in await cursor.fetchall()}
            known = {m.version for m in available_migrations()}
            unknown = sorted(set(applied) - known)
            if unknown:
                raise MigrationError(
                    f"the database has migrations {unknown} that this ampd version does not "
                    "know: it was migrated by a newer version"
                )
            for migration in migrations:
                recorded = applied.get(migration.version)
                if recorded is not None:
                    if recorded[1] != migration.checksum:
                        raise MigrationError(
                            f"migration {migration.version:04d}_{migration.name} was changed "
                            "after it was applied"
                        )
                    continue
                log.info("applying migration %04d_%s", migration.version, migration.name)
                try:
                    async with conn.transaction():
                        await conn.execute(migration.sql)
                        step = _data_steps().get(migration.version)
                        if step is not None:
                            await step(conn)
                        await conn.execute(
                            "INSERT INTO ampd_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                            (migration.version, migration.name, migration.checksum),
                        )
                except psycopg.OperationalError:
                    raise  # the connection, not the migration: rolled back, safe to run again
                except psycopg.Error as exc:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} failed: {exc}"
                    ) from exc
                applied_now.append(migration)
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    if not applied_now:
        log.info("metadata database schema is up to date (%d migrations)", len(migrations))
    return applied_now
