"""What the query server can read: the committed files of every dataset revision.

The catalog is built from the metadata database only (never by listing storage) and kept
as an immutable snapshot: a query takes the snapshot current when it starts and sees
exactly the files committed by then. A LISTEN on `table_changes` and `dataset_changes`
marks the snapshot stale; the next query loads a fresh one.

Names: `"ns/name".table` is the `latest` version if there is one, else `dev`;
`"ns/name@version".table` is that version (also `@dev`, `@latest`, `@<manifest hash>`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pyarrow as pa

from ampd.logs import get_logger
from ampd.metadb.db import MetadataDb
from ampd.metadb.segments import TABLE_CHANGES_CHANNEL
from ampd.providers.kinds import source_kind
from ampd.sql.footer_cache import FooterCache
from ampd.storage.cloud import CloudStore
from ampd.storage.store import open_store

log = get_logger("server")

DATASET_CHANGES_CHANNEL = "dataset_changes"


@dataclass(frozen=True)
class CommittedFile:
    id: int
    path: str  # absolute local path, or the object's URL in a remote data dir
    start_block: int
    end_block: int
    rows: int
    key: str = ""  # the object key relative to the data dir
    size: int = 0  # the object's size in bytes
    hash: str = ""  # 0x hex hash of end_block
    prev_hash: str = ""  # 0x hex parent hash of start_block


@dataclass(frozen=True)
class RevisionTables:
    """The tables of one dataset revision: table name -> committed files in block order."""

    manifest_hash: str
    tables: dict[str, tuple[CommittedFile, ...]]
    kind: str = ""  # the manifest's kind and network: where eth_call finds its providers
    network: str = ""
    schemas: dict[str, pa.Schema] = field(default_factory=dict)  # the tables' schemas
    functions: tuple[Any, ...] = ()  # a derived revision's JavaScript functions (JsFunction)

    def schema(self, table: str) -> pa.Schema:
        """A table's schema: a derived dataset's declared one, or the one its raw kind
        writes."""
        return self.schemas.get(table) or _raw_schemas(self.kind)[table]


# From this many files a local table is planned from cached footers: DataFusion's own
# per-file scans cost ~3 ms of planning and footer parsing per file and query.
MANY_FILES = 64


def from_footers(remote: bool, files: Sequence[CommittedFile]) -> bool:
    """Whether a table of `files` is planned from cached footers: every table of a remote
    data dir, a local one of MANY_FILES files or more."""
    return remote or len(files) >= MANY_FILES


@dataclass(frozen=True)
class CatalogSnapshot:
    """Schema name (`ns/name`, `ns/name@rev`) -> the revision's tables."""

    schemas: dict[str, RevisionTables] = field(default_factory=dict)
    version: int = 0
    data_dir: str = ""  # where the files are
    footers: FooterCache | None = None  # the data dir's cached footers (footer_cache.py)
    remote: bool = False  # an object store: every table is read through `footers`
    providers_dir: str | None = None  # the providers eth_call uses (None: no eth_call)

    def from_footers(self, files: Sequence[CommittedFile]) -> bool:
        """Whether a table of `files` is planned from the cached footers."""
        return self.footers is not None and from_footers(self.remote, files)

    def datasets(self) -> set[str]:
        """The `ns/name` part of every schema."""
        return {name.split("@", 1)[0] for name in self.schemas}


class Catalog:
    """Keeps the current snapshot; `snapshot()` reloads it when it was marked stale."""

    def __init__(
        self,
        db: MetadataDb,
        data_dir: str,
        *,
        cache_size_mb: int = 1024,
        providers_dir: str | None = None,
    ) -> None:
        self.db = db
        self.data_dir = data_dir
        self.providers_dir = providers_dir
        self._store = open_store(data_dir)
        self.footers = FooterCache(self._store, cache_size_mb * 1024 * 1024)
        self.remote = isinstance(self._store, CloudStore)
        self._snapshot: CatalogSnapshot | None = None
        self._schemas: dict[str, tuple[dict[str, pa.Schema], tuple]] = {}  # derived manifests
        self._stale = True
        self._lock = asyncio.Lock()
        self._listener: asyncio.Task[None] | None = None
        self._version = 0
        self.changes = 0  # change notifications so far (what wait_for_change waits past)
        self._waiters: set[asyncio.Future[None]] = set()

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen(), name="catalog-listen")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener

    def mark_stale(self) -> None:
        self._stale = True
        self.changes += 1
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._waiters.clear()

    async def wait_for_change(self, seen: int, timeout: float) -> bool:
        """Wait until a change notification arrives after the `seen`-th (`self.changes` when
        the caller last looked), at most `timeout` seconds; True if one did. Any number of
        callers may wait at once (streaming queries, derived segments)."""
        if self.changes != seen:
            return True
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.add(waiter)
        try:
            await asyncio.wait_for(waiter, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            self._waiters.discard(waiter)

    async def snapshot(self) -> CatalogSnapshot:
        async with self._lock:
            if self._stale or self._snapshot is None:
                # Cleared before loading: a change during the load marks it stale again.
                self._stale = False
                self._snapshot = await self._load()
            return self._snapshot

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self.db.url, autocommit=True
                ) as conn:
                    await conn.execute(f"LISTEN {TABLE_CHANGES_CHANNEL}")
                    await conn.execute(f"LISTEN {DATASET_CHANGES_CHANNEL}")
                    self.mark_stale()  # whatever happened while we were not listening
                    async for _ in conn.notifies():
                        self.mark_stale()
            except (psycopg.Error, OSError) as exc:
                log.warning("catalog listener: %s; reconnecting", exc)
                self.mark_stale()
                await asyncio.sleep(0.5)

    def _derived(self, manifest_hash: str, manifest: dict) -> tuple[dict[str, pa.Schema], tuple]:
        """A derived manifest's declared schemas and its functions (parsed once per
        manifest)."""
        cached = self._schemas.get(manifest_hash)
        if cached is None:
            from ampd.datasets.registry import load_manifest

            parsed = load_manifest(manifest)
            cached = (dict(parsed.schemas), tuple(parsed.functions.values()))
            self._schemas[manifest_hash] = cached
        return cached

    async def _load(self) -> CatalogSnapshot:
        revisions: dict[str, RevisionTables] = {}
        by_hash: dict[str, dict[str, list[CommittedFile]]] = {}
        for row in await self.db.fetch_all("catalog_files"):
            tables = by_hash.setdefault(row["manifest_hash"], {})
            files = tables.setdefault(row["table_name"], [])
            if row["id"] is not None:
                files.append(
                    CommittedFile(
                        id=row["id"],
                        path=self._location(row["path"]),
                        start_block=row["start_block"],
                        end_block=row["end_block"],
                        rows=row["row_count"],
                        key=row["path"],
                        size=row["object_size"],
                        hash="0x" + bytes(row["hash"]).hex(),
                        prev_hash="0x" + bytes(row["prev_hash"]).hex(),
                    )
                )

        kinds: dict[str, tuple[str, str]] = {}  # manifest hash -> (kind, network)
        # manifest hash -> its tables' schemas and its functions
        derived: dict[str, tuple[dict[str, pa.Schema], tuple]] = {}

        def tables_of(manifest_hash: str) -> RevisionTables:
            # A registered revision that was never deployed has empty tables.
            tables = by_hash.get(manifest_hash, {})
            kind, network = kinds.get(manifest_hash, ("", ""))
            schemas, functions = derived.get(manifest_hash, (_raw_schemas(kind), ()))
            names = set(schemas)
            return RevisionTables(
                manifest_hash,
                {t: tuple(tables.get(t, ())) for t in sorted({*names, *tables})},
                kind,
                network,
                schemas,
                functions,
            )

        refs: dict[str, dict[str, str]] = {}
        for row in await self.db.fetch_all("catalog_references"):
            refs.setdefault(f"{row['namespace']}/{row['name']}", {})[row["ref"]] = row[
                "manifest_hash"
            ]
            kinds[row["manifest_hash"]] = (row["kind"], row["network"] or "")
            if row["derived"] is not None and row["manifest_hash"] not in derived:
                derived[row["manifest_hash"]] = self._derived(row["manifest_hash"], row["derived"])
        # Hashes manifests had before they became Amp's (migration 0004) name them still.
        old_hashes: dict[str, list[str]] = {}
        for row in await self.db.fetch_all("manifest_aliases"):
            old_hashes.setdefault(row["hash"], []).append(row["old_hash"])
        for dataset, named in refs.items():
            for ref, manifest_hash in named.items():
                tables = tables_of(manifest_hash)
                revisions[f"{dataset}@{ref}"] = tables
                for each in (manifest_hash, *old_hashes.get(manifest_hash, ())):
                    revisions[f"{dataset}@{each}"] = tables
            default = named.get("latest") or named.get("dev")
            if default is not None:
                revisions[dataset] = tables_of(default)
        # Only the footers of the tables planned from them (a local table of few files is not).
        live = [
            f
            for tables in by_hash.values()
            for files in tables.values()
            if from_footers(self.remote, files)
            for f in files
        ]
        wanted = self.footers.missing(live)
        rows = await self.db.fetch_all("footers_of_files", {"ids": wanted}) if wanted else []
        await self.footers.load(live, {r["file_id"]: bytes(r["footer"]) for r in rows})
        self._version += 1
        return CatalogSnapshot(
            revisions, self._version, self.data_dir, self.footers, self.remote, self.providers_dir
        )

    def _location(self, key: str) -> str:
        local = self._store.local_path(key)
        return str(local) if local is not None else self._store.url(key)


def _raw_schemas(kind: str) -> dict[str, pa.Schema]:
    """The tables a raw kind writes (evm-rpc's for a revision of no known kind)."""
    try:
        return dict(source_kind(kind or "evm-rpc").tables)
    except ValueError:
        return dict(source_kind("evm-rpc").tables)
