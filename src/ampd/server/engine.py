"""SQL over committed files, on DataFusion, read-only, with memory and time limits.

Each query gets its own DataFusion session whose only catalog is the dataset snapshot
(`catalog.py`): no default tables, no URL tables, no file-reading table functions, and DDL,
DML and statements (SET, COPY, CREATE, INSERT, DROP ...) refused by the planner. Results
stream batch by batch from a worker thread, so the event loop stays free and the whole
result is never held in memory.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.dataset as pads
from datafusion import RuntimeEnvBuilder, SessionConfig, SessionContext, SQLOptions
from datafusion.catalog import CatalogProvider, SchemaProvider, Table

from ampd.logs import get_logger
from ampd.providers.evm_rpc.schema import TABLES
from ampd.server.catalog import CatalogSnapshot, CommittedFile

log = get_logger("server")

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
    first = re.match(r"\s*([A-Za-z_]+)", bare)
    if first and first.group(1).lower() in _WRITES:
        raise QueryError(
            400,
            "SQL_NOT_ALLOWED",
            f"only read-only queries are allowed, not {first.group(1).upper()}",
        )
    return ParsedQuery(text, stream)


class _Schema(SchemaProvider):
    def __init__(self, tables: dict[str, tuple[CommittedFile, ...]]) -> None:
        self._tables = tables

    def table_names(self) -> set[str]:
        return set(self._tables)

    def table_exist(self, name: str) -> bool:
        return name in self._tables

    def table(self, name: str) -> Table | None:
        files = self._tables.get(name)
        if files is None:
            return None
        schema = TABLES.get(name)
        dataset = pads.dataset([f.path for f in files], schema=schema, format="parquet")
        return Table(dataset)


class _Catalog(CatalogProvider):
    def __init__(
        self, snapshot: CatalogSnapshot, only: dict[str, tuple[CommittedFile, ...]] | None
    ) -> None:
        self._snapshot = snapshot
        self._only = only

    def schema_names(self) -> set[str]:
        return set(self._snapshot.schemas)

    def schema(self, name: str) -> _Schema | None:
        revision = self._snapshot.schemas.get(name)
        if revision is None:
            return None
        return _Schema(revision.tables if self._only is None else self._only)


@dataclass(frozen=True)
class Limits:
    max_mem_mb: int = 0  # 0: unlimited
    timeout_secs: float = 300.0  # 0: unlimited


_OPTIONS = SQLOptions().with_allow_ddl(False).with_allow_dml(False).with_allow_statements(False)


def plan(
    sql: str,
    snapshot: CatalogSnapshot,
    limits: Limits,
    only: dict[str, tuple[CommittedFile, ...]] | None = None,
):  # noqa: ANN201
    """A DataFusion DataFrame for `sql` over `snapshot` (or, with `only`, over just those
    files for every table name: used to run a streaming query on newly committed files).

    Raises QueryError with the API's codes.
    """
    runtime = RuntimeEnvBuilder()
    if limits.max_mem_mb:
        runtime = runtime.with_greedy_memory_pool(limits.max_mem_mb * 1024 * 1024)
    config = (
        SessionConfig()
        .with_information_schema(False)
        .with_default_catalog_and_schema("datafusion", "public")
    )
    ctx = SessionContext(config, runtime)
    ctx.register_catalog_provider("datafusion", _Catalog(snapshot, only))
    try:
        return ctx.sql_with_options(sql, _OPTIONS)
    except Exception as exc:  # noqa: BLE001 - DataFusion raises one exception type for all
        raise classify(exc, snapshot) from None


def classify(exc: Exception, snapshot: CatalogSnapshot) -> QueryError:
    """Map a DataFusion error to the API's error codes."""
    message = str(exc)
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
        name = missing.group(1)
        schema = name.rsplit(".", 1)[0] if "." in name else ""
        if schema and schema != "public" and schema not in snapshot.schemas:
            return QueryError(404, "DATASET_NOT_FOUND", f"dataset {schema!r} not found")
        return QueryError(404, "TABLE_NOT_FOUND", f"table {name!r} not found")
    if "Resources exhausted" in message:
        return QueryError(
            500, "QUERY_FAILED", f"query exceeded query_max_mem_mb: {_clean(message)}"
        )
    return QueryError(500, "QUERY_FAILED", _clean(message))


def _clean(message: str) -> str:
    return " ".join(message.split())[:2000]


class BatchStream:
    """Pull record batches from a DataFusion stream on a daemon thread, one ahead.

    `__aiter__` yields pyarrow RecordBatches; a batch that does not arrive within the query's
    time limit (counted from the start) ends the stream with QueryError(QUERY_TIMEOUT) and
    tells the thread to stop pulling. Dropping the stream stops it too.
    """

    def __init__(self, dataframe, limits: Limits, snapshot: CatalogSnapshot) -> None:  # noqa: ANN001
        self._frame = dataframe
        self._limits = limits
        self._snapshot = snapshot
        self._queue: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=2)
        self._cancelled = threading.Event()
        self._started = time.monotonic()
        self.schema: pa.Schema = dataframe.schema()
        self._thread = threading.Thread(target=self._pull, name="query", daemon=True)
        self._thread.start()

    def _pull(self) -> None:
        try:
            stream = self._frame.execute_stream()
            for batch in stream:
                if self._cancelled.is_set():
                    return
                self._put(("batch", batch.to_pyarrow()))
            self._put(("end", None))
        except Exception as exc:  # noqa: BLE001 - handed to the consumer
            self._put(("error", classify(exc, self._snapshot)))

    def _put(self, item: tuple[str, object]) -> None:
        while not self._cancelled.is_set():
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def cancel(self) -> None:
        self._cancelled.set()

    def _remaining(self) -> float | None:
        if not self._limits.timeout_secs:
            return None
        return self._limits.timeout_secs - (time.monotonic() - self._started)

    def next_item(self) -> pa.RecordBatch | None:
        """Blocking: the next batch, or None at the end. Raises QueryError."""
        remaining = self._remaining()
        try:
            if remaining is not None and remaining <= 0:
                raise queue.Empty
            kind, value = self._queue.get(timeout=remaining)
        except queue.Empty:
            self.cancel()
            raise QueryError(
                500,
                "QUERY_TIMEOUT",
                f"query cancelled: it ran longer than query_timeout_secs = {self._limits.timeout_secs:g}",
            ) from None
        if kind == "batch":
            return value  # type: ignore[return-value]
        if kind == "error":
            self.cancel()
            raise value  # type: ignore[misc]
        return None

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        try:
            while (batch := self.next_item()) is not None:
                yield batch
        finally:
            self.cancel()

    async def __aiter__(self) -> AsyncIterator[pa.RecordBatch]:
        import asyncio

        try:
            while (batch := await asyncio.to_thread(self.next_item)) is not None:
                yield batch
        finally:
            self.cancel()
