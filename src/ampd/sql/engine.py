"""SQL over committed files, on DataFusion, read-only, with memory and time limits.

Each query gets its own DataFusion session whose only catalog is the dataset snapshot
(`catalog.py`): no default tables, no URL tables, no file-reading table functions, and DDL,
DML and statements (SET, COPY, CREATE, INSERT, DROP ...) refused by the planner. Results
stream from DataFusion's threads (batches.py), so the event loop stays free and the whole
result is never held in memory.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import pyarrow as pa
from datafusion import RuntimeEnvBuilder, SessionConfig, SessionContext, SQLOptions
from datafusion.catalog import Catalog, Schema, Table

from ampd.logs import get_logger
from ampd.providers.config import ProviderConfigError, load_providers, select_providers
from ampd.sql.catalog import CatalogSnapshot, CommittedFile, RevisionTables
from ampd.sql.functions import (
    EthCaller,
    FunctionError,
    QualifiedCall,
    error_text,
    prepare,
    public_name,
    register_functions,
    restore_names,
)
from ampd.sql.references import base_schema, parse_reference, resolve, table_references
from ampd.sql.rules import QueryRuleError, check_plan

log = get_logger("server")

# Which files a plan reads: all (None), those ids, or ids per `(schema, table)` reading.
Only = frozenset[int] | Mapping[tuple[str, str], frozenset[int]] | None

# Statements that write or change something; refused before DataFusion sees them (the
# planner refuses DDL, DML and statements too: this gives the clearer message).
_WRITES = {
    "alter",
    "analyze",
    "attach",
    "begin",
    "call",
    "comment",
    "commit",
    "copy",
    "create",
    "deallocate",
    "delete",
    "detach",
    "drop",
    "execute",
    "grant",
    "insert",
    "install",
    "load",
    "merge",
    "prepare",
    "reset",
    "revoke",
    "rollback",
    "set",
    "start",
    "truncate",
    "unload",
    "update",
    "use",
    "vacuum",
}
_COMMENTS = re.compile(r"(--[^\n]*\n?)|(/\*.*?\*/)", re.DOTALL)
_SETTINGS = re.compile(
    r"\s+settings\s+((?:[a-z_][a-z0-9_]*\s*=\s*[a-z0-9_'\"]+\s*,?\s*)+);?\s*$", re.IGNORECASE
)
# `FROM '/path/file.parquet'` or `FROM 'https://...'`: DataFusion's URL tables, off here.
_FILE_TABLE = re.compile(r"\b(from|join)\s+'", re.IGNORECASE)
_PATHLIKE = re.compile(
    r"^(/|\./|\.\./|~|[a-z][a-z0-9+.-]*://)|\.(parquet|csv|json|ndjson|avro|arrow)$", re.IGNORECASE
)
_TABLE_NOT_FOUND = re.compile(r"table '(?:datafusion\.)?([^']+)' not found")


class QueryError(Exception):
    """A query the server refuses or that failed; `code` and `status` go on the wire."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True)
class ParsedQuery:
    sql: str  # without the SETTINGS clause
    stream: bool  # SETTINGS stream = true


def parse_query(raw: bytes | str) -> ParsedQuery:
    """Check the text and split off Amp's trailing `SETTINGS key = value, ...` clause.

    Raises QueryError: INVALID_SQL_STRING (empty, not UTF-8), SQL_NOT_ALLOWED (a statement
    that writes or changes something).
    """
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise QueryError(400, "INVALID_SQL_STRING", "the query is not valid UTF-8") from None
    # Comments are dropped only for the checks; DataFusion gets the text as written (a
    # string literal may contain "--").
    bare = _COMMENTS.sub(" ", raw).strip()
    if not bare:
        raise QueryError(400, "INVALID_SQL_STRING", "the query is empty")
    text = raw.strip()
    stream = False
    match = _SETTINGS.search(text)
    if match:
        for item in match.group(1).split(","):
            if not item.strip():
                continue
            key, _, value = item.partition("=")
            if key.strip().lower() == "stream":
                stream = value.strip().strip("'\"").lower() in ("true", "1")
        text = text[: match.start()]
    text = text.rstrip().rstrip(";")
    if _FILE_TABLE.search(bare):
        raise QueryError(
            400, "SQL_NOT_ALLOWED", "reading files or URLs is not allowed: query dataset tables"
        )
    first = re.match(r"\s*([A-Za-z_]+)", bare)
    if first and first.group(1).lower() in _WRITES:
        raise QueryError(
            400,
            "SQL_NOT_ALLOWED",
            f"only read-only queries are allowed, not {first.group(1).upper()}",
        )
    return ParsedQuery(text, stream)


def files_table(
    ctx: SessionContext,
    name: str,
    files: tuple[CommittedFile, ...],
    snapshot: CatalogSnapshot,
    schema: pa.Schema,
) -> Table:
    """One table: the union of its committed Parquet files with its schema (no
    footer inference). A remote data dir's tables, and a local one's of MANY_FILES files or
    more (`CatalogSnapshot.from_footers`), are read through cached footers (footer_cache.py);
    a local table of fewer files natively by DataFusion, which scans a few large files faster
    but opens and parses every file's footer for each query."""
    if not files:
        return ctx.from_arrow(schema.empty_table()).into_view()
    if snapshot.from_footers(files):
        return Table(snapshot.footers.dataset(schema, files))
    frame = None
    for f in files:
        part = ctx.read_parquet(f.path, schema=schema)
        frame = part if frame is None else frame.union(part)
    return frame.into_view()


_LISTING = re.compile(r"^\s*show\b|\binformation_schema\b", re.IGNORECASE)


def _lists_tables(sql: str) -> bool:
    return bool(_LISTING.search(_COMMENTS.sub(" ", sql)))


def _named_tables(sql: str, snapshot: CatalogSnapshot) -> Iterator[tuple[str, str, RevisionTables]]:
    """(schema name as written, table name, its revision) of each dataset table the query
    names that exists in `snapshot`."""
    for schema_name, table_name in table_references(sql):
        key = resolve(base_schema(schema_name), snapshot.schemas)
        revision = snapshot.schemas.get(key) if key is not None else None
        if revision is not None and table_name in revision.tables:
            yield schema_name, table_name, revision


def query_tables(sql: str, snapshot: CatalogSnapshot) -> list[tuple[RevisionTables, str]]:
    """The dataset tables `sql` reads: (revision, table name), each once, in query order."""
    found: dict[tuple[str, str], RevisionTables] = {}
    for _, table_name, revision in _named_tables(sql, snapshot):
        found.setdefault((revision.manifest_hash, table_name), revision)
    return [(revision, table) for (_, table), revision in found.items()]


def _register(
    ctx: SessionContext,
    sql: str,
    snapshot: CatalogSnapshot,
    only: Only,
) -> None:
    """Register the dataset tables the query names (and nothing else) in a fresh catalog.

    Tables are registered before planning: DataFusion cannot read file metadata from
    inside a catalog lookup.
    """
    catalog = Catalog.memory_catalog()
    schemas: dict[str, Schema] = {}
    for schema_name, table_name, revision in _named_tables(sql, snapshot):
        files = revision.tables.get(table_name, ())
        if only is not None:
            ids = (
                only.get((schema_name, table_name), frozenset())
                if isinstance(only, Mapping)
                else only
            )
            files = tuple(f for f in files if f.id in ids)
        if schema_name not in schemas:
            schemas[schema_name] = Schema.memory_schema()
            catalog.register_schema(schema_name, schemas[schema_name])
        table = files_table(ctx, table_name, files, snapshot, revision.schema(table_name))
        schemas[schema_name].register_table(table_name, table)
    if _lists_tables(sql):
        # SHOW TABLES / information_schema: every dataset by its `ns/name`, with its tables'
        # columns (no files needed to list them).
        for name in sorted(n for n in snapshot.datasets() if n in snapshot.schemas):
            if name not in schemas:
                schemas[name] = Schema.memory_schema()
                catalog.register_schema(name, schemas[name])
            for table_name in snapshot.schemas[name].tables:
                if schemas[name].table_exist(table_name):
                    continue
                schema = snapshot.schemas[name].schema(table_name)
                empty = ctx.from_arrow(schema.empty_table()).into_view()
                schemas[name].register_table(table_name, empty)
    catalog.register_schema("public", Schema.memory_schema())
    ctx.register_catalog_provider("datafusion", catalog)


class MemoryBudget:
    """The server's `max_mem_mb`, shared by the queries it runs (thread-safe).

    DataFusion's Python binding gives every session its own memory pool and cannot share
    one, so the budget is held by admission: a running query holds its whole pool (see
    `Limits.pool_mb`) from its execution's start to its end, and a query whose pool does not
    fit waits for running ones to end. The pools of the queries running at once so never
    add up to more than the budget."""

    def __init__(self, total_mb: int) -> None:
        self.total_mb = total_mb
        self._held = 0
        self._lock = threading.Lock()

    @property
    def held_mb(self) -> int:
        with self._lock:
            return self._held

    def try_hold(self, mb: int) -> bool:
        with self._lock:
            if self._held + mb > self.total_mb:
                return False
            self._held += mb
            return True

    def release(self, mb: int) -> None:
        with self._lock:
            self._held = max(0, self._held - mb)


@dataclass(frozen=True)
class Limits:
    max_mem_mb: int = 0  # a query's own pool, `query_max_mem_mb`; 0: unlimited
    timeout_secs: float = 300.0  # 0: unlimited
    budget: MemoryBudget | None = None  # the server's `max_mem_mb`, shared by all queries

    @property
    def pool_mb(self) -> int:
        """A query's memory pool: its own limit, within the server's budget (0: none)."""
        if self.budget is None:
            return self.max_mem_mb
        total = self.budget.total_mb
        return min(self.max_mem_mb, total) if self.max_mem_mb else total


_OPTIONS = SQLOptions().with_allow_ddl(False).with_allow_dml(False).with_allow_statements(False)


def plan(
    sql: str,
    snapshot: CatalogSnapshot,
    limits: Limits,
    only: Only = None,
):  # noqa: ANN201
    """A DataFusion DataFrame for `sql` over `snapshot` (or, with `only`, over just the files
    of those ids in the tables it reads, in one partition: part of a streaming query's
    microbatch; a mapping gives each reading, by its `(schema, table)` name, its own ids).

    Raises QueryError with the API's codes.
    """
    runtime = RuntimeEnvBuilder()
    if limits.pool_mb:
        runtime = runtime.with_greedy_memory_pool(limits.pool_mb * 1024 * 1024)
    config = (
        SessionConfig()
        .with_information_schema(_lists_tables(sql))
        .with_default_catalog_and_schema("datafusion", "public")
    )
    if only is not None:
        # A microbatch's part: one partition reads its files in turn, so rows keep the
        # files' block order.
        config = config.with_target_partitions(1)
    ctx = SessionContext(config, runtime)
    try:
        _register(ctx, sql, snapshot, only)
        register_functions(ctx)
        # Amp's EVM functions whose result type depends on a literal (a signature) become
        # calls of UDFs registered for those literals (docs/feat/sql-functions.md).
        prepared = prepare(ctx, sql, _eth_callers(snapshot))
        frame = restore_names(ctx.sql_with_options(prepared, _OPTIONS))
        check_plan(frame)
        return frame
    except QueryError:
        raise
    except QueryRuleError as exc:
        raise QueryError(400, "INVALID_PLAN", str(exc)) from None
    except FunctionError as exc:
        raise QueryError(400, "INVALID_PLAN", public_name(str(exc))) from None
    except Exception as exc:  # noqa: BLE001 - DataFusion raises one exception type for all
        raise classify(exc, snapshot) from None


def _eth_callers(snapshot: CatalogSnapshot):  # noqa: ANN202 - a prepare EthCallers
    """The EthCaller of the dataset that qualifies an eth_call: its network's providers."""
    made: dict[str, EthCaller] = {}

    def caller(site: QualifiedCall) -> EthCaller:
        key = resolve(site.qualifier, snapshot.schemas)
        if key is None:
            missing = _missing_dataset(site.qualifier, snapshot)
            raise missing or QueryError(
                404, "DATASET_NOT_FOUND", f"dataset {site.qualifier!r} not found"
            )
        if key not in made:
            revision = snapshot.schemas[key]
            if snapshot.providers_dir is None:
                raise FunctionError(f"{site.written}: no providers_dir is configured")
            try:
                providers = select_providers(
                    load_providers(snapshot.providers_dir), revision.kind, revision.network
                )
            except ProviderConfigError as exc:
                raise FunctionError(f"{site.written}: {exc}") from None
            made[key] = EthCaller(providers)
        return made[key]

    return caller


def classify(exc: Exception, snapshot: CatalogSnapshot) -> QueryError:
    """Map a DataFusion error to the API's error codes."""
    message = str(exc)
    own = error_text(message)
    if own is not None:  # one of the EVM functions refused its input while running
        return QueryError(500, "QUERY_FAILED", public_name(own))
    if "Invalid function" in message:
        return QueryError(400, "FUNCTION_REFERENCE_RESOLUTION", public_name(_clean(message)))
    if "ParserError" in message or "SQL error" in message:
        return QueryError(400, "SQL_PARSE_ERROR", _clean(message))
    if (
        "DDL not supported" in message
        or "DML not supported" in message
        or "Statement not supported" in message
    ):
        return QueryError(400, "SQL_NOT_ALLOWED", _clean(message))
    if "table function" in message and "not found" in message:
        return QueryError(400, "SQL_NOT_ALLOWED", _clean(message))
    missing = _TABLE_NOT_FOUND.search(message)
    if missing:
        name = missing.group(1).removeprefix("public.")
        if _PATHLIKE.search(name):
            return QueryError(
                400, "SQL_NOT_ALLOWED", f"reading files or URLs is not allowed: {name!r}"
            )
        schema = name.rsplit(".", 1)[0] if "." in name else ""
        if schema and schema != "public":
            missing_dataset = _missing_dataset(schema, snapshot)
            if missing_dataset is not None:
                return missing_dataset
        return QueryError(404, "TABLE_NOT_FOUND", f"table {name!r} not found")
    if "Resources exhausted" in message:
        return QueryError(
            500,
            "QUERY_FAILED",
            f"query exceeded its memory pool (query_max_mem_mb, within max_mem_mb): {_clean(message)}",
        )
    return QueryError(500, "QUERY_FAILED", _clean(message))


def _missing_dataset(schema: str, snapshot: CatalogSnapshot) -> QueryError | None:
    """DATASET_NOT_FOUND naming what `schema` lacks (the dataset, or its revision), or None
    when it names a dataset revision the catalog has."""
    if resolve(schema, snapshot.schemas) is not None:
        return None
    reference = parse_reference(schema)
    if reference is None:
        return QueryError(
            404,
            "DATASET_NOT_FOUND",
            f"dataset {schema!r} not found: expected [namespace/]name[@revision]",
        )
    if reference.revision is not None and reference.dataset in snapshot.datasets():
        return QueryError(
            404,
            "DATASET_NOT_FOUND",
            f"revision {reference.revision!r} of dataset {reference.dataset!r} not found",
        )
    return QueryError(404, "DATASET_NOT_FOUND", f"dataset {reference.dataset!r} not found")


def no_memory(limits: Limits) -> QueryError:
    """A query whose memory pool did not fit in the server's budget within its time limit."""
    budget = limits.budget
    assert budget is not None
    return QueryError(
        500,
        "QUERY_FAILED",
        f"Resources exhausted: the query's memory pool of {limits.pool_mb} MB did not fit in "
        f"max_mem_mb = {budget.total_mb} within query_timeout_secs = {limits.timeout_secs:g} "
        f"({budget.held_mb} MB held by running queries)",
    )


def timed_out(limits: Limits) -> QueryError:
    return QueryError(
        500,
        "QUERY_TIMEOUT",
        f"query cancelled: it ran longer than query_timeout_secs = {limits.timeout_secs:g}",
    )


def _clean(message: str) -> str:
    return " ".join(message.split())[:2000]
