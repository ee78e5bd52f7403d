"""The Arrow Flight endpoint (default port 1602).

`GetFlightInfo` takes a CMD descriptor holding either a Flight SQL `CommandStatementQuery`
packed in a protobuf `Any` (what Flight SQL drivers and Amp's client send) or the SQL text
itself, and returns one endpoint whose ticket `DoGet` runs. `DoGet` streams the schema and
the record batches as DataFusion produces them.

Streaming queries (`SETTINGS stream = true`, or the `amp-stream: true` header) first send
what is committed, then stay open and send the rows of each newly committed block range, in
block order, as microbatches in Amp's protocol (sql/microbatches.py).
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

from ampd.config import split_addr
from ampd.logs import get_logger
from ampd.sql.batches import BatchStream
from ampd.sql.catalog import Catalog, CatalogSnapshot
from ampd.sql.engine import Limits, QueryError, parse_query, plan, query_tables
from ampd.sql.microbatches import (
    Cursor,
    CursorError,
    Microbatch,
    committed,
    end_of,
    metadata,
    new_microbatches,
    parse_cursor,
    query_ranges,
    resumed,
)
from ampd.sql.rules import QueryRuleError, check_incremental, check_streamable, has_joins
from ampd.sql.stream_joins import StreamJoin

log = get_logger("server")

STATEMENT_QUERY_TYPE = "type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery"


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ValueError("truncated protobuf varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> dict[int, bytes]:
    """The length-delimited fields of a protobuf message (all that Any and
    CommandStatementQuery carry); other wire types are skipped."""
    out: dict[int, bytes] = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ValueError("truncated protobuf field")
            out[number] = data[pos : pos + length]
            pos += length
        elif wire == 0:
            _, pos = _varint(data, pos)
        elif wire == 1:
            pos += 8
        elif wire == 5:
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
    return out


def command_sql(command: bytes) -> str:
    """The SQL in a Flight descriptor command: a packed CommandStatementQuery, or raw SQL."""
    try:
        outer = _fields(command)
        if outer.get(1, b"").decode("utf-8", "replace") == STATEMENT_QUERY_TYPE:
            return _fields(outer.get(2, b"")).get(1, b"").decode("utf-8")
    except ValueError:
        pass
    return command.decode("utf-8")


def _flight_error(exc: QueryError) -> Exception:
    text = f"{exc.code}: {exc}"
    if exc.status >= 500 and exc.code != "QUERY_TIMEOUT":
        log.error("query failed: %s", text)
    if exc.status == 404:
        return KeyError(text)
    if exc.status < 500:
        return pa.ArrowInvalid(text)
    if exc.code == "QUERY_TIMEOUT":
        return flight.FlightTimedOutError(text)
    return flight.FlightInternalError(text)


def _headers(context: flight.ServerCallContext) -> dict[str, str]:
    headers: dict[str, str] = {}
    try:
        for key, values in context.get_middleware("headers").headers.items():  # type: ignore[union-attr]
            headers[key.lower()] = values[-1] if isinstance(values, list) else values
    except (AttributeError, KeyError):
        pass
    return headers


def _stream_header(headers: dict[str, str], setting: bool) -> bool:
    """Whether the query streams: the `amp-stream` header (true/1, false/0) overrides the
    query's `SETTINGS stream`."""
    value = headers.get("amp-stream", "").strip().lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    return setting


class _HeaderMiddleware(flight.ServerMiddleware):
    def __init__(self, headers: dict[str, Any]) -> None:
        self.headers = headers


class _HeaderMiddlewareFactory(flight.ServerMiddlewareFactory):
    def start_call(self, info: flight.CallInfo, headers: dict[str, Any]) -> _HeaderMiddleware:
        return _HeaderMiddleware(headers)


class _Server(flight.FlightServerBase):
    def __init__(
        self,
        location: str,
        catalog: Catalog,
        limits: Limits,
        loop: asyncio.AbstractEventLoop,
        microbatch_blocks: int = 1000,
        keep_alive_secs: float = 30.0,
    ) -> None:
        super().__init__(location, middleware={"headers": _HeaderMiddlewareFactory()})
        self._catalog = catalog
        self._limits = limits
        self._loop = loop
        self._microbatch_blocks = microbatch_blocks
        self._keep_alive_secs = keep_alive_secs

    def _snapshot(self) -> CatalogSnapshot:
        return self._run(self._catalog.snapshot())

    def get_flight_info(
        self, context: flight.ServerCallContext, descriptor: flight.FlightDescriptor
    ) -> flight.FlightInfo:
        if descriptor.descriptor_type != flight.DescriptorType.CMD:
            raise pa.ArrowInvalid("INVALID_ARGUMENT: only command descriptors (SQL) are supported")
        try:
            sql = command_sql(descriptor.command)
            parsed = parse_query(sql)
            headers = _headers(context)
            stream = _stream_header(headers, parsed.stream)
            resume = headers.get("amp-resume", "")
            if stream:
                parse_cursor(resume)  # a malformed cursor is refused here, before DoGet
            frame = plan(parsed.sql, self._snapshot(), self._limits)
            if stream:
                _check_incremental(frame, parsed.sql)
            schema = frame.schema()
        except QueryError as exc:
            raise _flight_error(exc) from None
        except CursorError as exc:
            raise pa.ArrowInvalid(f"INVALID_ARGUMENT: {exc}") from None
        except UnicodeDecodeError:
            raise pa.ArrowInvalid("INVALID_SQL_STRING: the query is not valid UTF-8") from None
        ticket = flight.Ticket(
            json.dumps({"sql": parsed.sql, "stream": stream, "resume": resume}).encode()
        )
        return flight.FlightInfo(schema, descriptor, [flight.FlightEndpoint(ticket, [])], -1, -1)

    def do_get(
        self, context: flight.ServerCallContext, ticket: flight.Ticket
    ) -> flight.FlightDataStream:
        headers = _headers(context)
        try:
            request = json.loads(ticket.ticket)
            sql, stream = request["sql"], bool(request.get("stream"))
            resume = str(request.get("resume") or headers.get("amp-resume", ""))
        except (ValueError, KeyError, TypeError):
            # A client may also send the SQL itself as the ticket.
            try:
                parsed = parse_query(ticket.ticket)
            except QueryError as exc:
                raise _flight_error(exc) from None
            sql, stream = parsed.sql, _stream_header(headers, parsed.stream)
            resume = headers.get("amp-resume", "")
        try:
            cursor = parse_cursor(resume) if stream else None
        except CursorError as exc:
            raise pa.ArrowInvalid(f"INVALID_ARGUMENT: {exc}") from None
        try:
            snapshot = self._snapshot()
            frame = plan(sql, snapshot, self._limits)
            if stream:
                _check_incremental(frame, sql)
                # Each microbatch runs a plan of its own files: this one gives the schema.
                schema = frame.schema()
                join = StreamJoin.of(sql, snapshot) if has_joins(frame) else None
                return flight.GeneratorStream(
                    schema, self._streaming(sql, snapshot, schema, context, cursor, join)
                )
            batches = self._run(BatchStream.open(frame, self._limits, snapshot))
        except QueryError as exc:
            raise _flight_error(exc) from None
        ranges = query_ranges(query_tables(sql, snapshot))
        return flight.GeneratorStream(batches.schema, self._batches(batches, ranges))

    def _run(self, coroutine):  # noqa: ANN001, ANN202
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _batches(self, batches: BatchStream, ranges: list[dict]) -> Iterator[Any]:
        """A batch query's rows, tagged with the block ranges it read as Amp tags them, and
        an empty batch saying the ranges are complete at the end."""
        try:
            for batch in batches.iterate_from_thread(self._loop, coalesce=True):
                yield batch, metadata(ranges, False)
        except QueryError as exc:
            raise _flight_error(exc) from None
        yield end_of(batches.schema, ranges)

    def _streaming(
        self,
        sql: str,
        snapshot: CatalogSnapshot,
        schema: pa.Schema,
        context: flight.ServerCallContext,
        cursor: Cursor | None = None,
        join: StreamJoin | None = None,
    ) -> Iterator[Any]:
        """What is committed (after `cursor`'s blocks), then each block range committed
        since, in block order, as microbatches (sql/microbatches.py).

        While nothing new comes, every `keep_alive_secs` an empty batch repeats the last
        watermark (the last microbatch's ranges, complete; none before the first), which
        keeps idle connections open and tells Amp's client nothing new."""
        tables = query_tables(sql, snapshot)
        seen: set[int] = set(resumed(tables, cursor)) if cursor else set()
        pending = committed(tables, frozenset(seen), self._microbatch_blocks)
        watermark: list[dict] = []
        sent = time.monotonic()
        try:
            while True:
                for batch in pending:
                    if join is None:
                        yield from self._microbatch(sql, snapshot, batch)
                    else:
                        yield from self._joined(join, snapshot, batch, frozenset(seen))
                    yield end_of(schema, batch.ranges)
                    seen.update(batch.files)
                    watermark, sent = batch.ranges, time.monotonic()
                pending = []
                while not context.is_cancelled() and not pending:
                    current = self._wait_for_change(snapshot.version)
                    if current is not None:
                        snapshot = current
                        pending = new_microbatches(query_tables(sql, snapshot), seen)
                    if not pending and time.monotonic() - sent >= self._keep_alive_secs:
                        yield end_of(schema, watermark)
                        sent = time.monotonic()
                if context.is_cancelled():
                    return
        except QueryError as exc:
            raise _flight_error(exc) from None

    def _microbatch(self, sql: str, snapshot: CatalogSnapshot, batch: Microbatch) -> Iterator[Any]:
        """The query's rows in the files of one microbatch, one block range after the other
        (no time limit: a stream lasts), each tagged with the microbatch's ranges."""
        limits = replace(self._limits, timeout_secs=0)
        for part in batch.parts:
            frame = plan(sql, snapshot, self._limits, only=part)
            rows = self._run(BatchStream.open(frame, limits, snapshot))
            for data in rows.iterate_from_thread(self._loop):
                yield data, metadata(batch.ranges, False)

    def _joined(
        self, join: StreamJoin, snapshot: CatalogSnapshot, batch: Microbatch, seen: frozenset[int]
    ) -> Iterator[Any]:
        """A join's rows made by one microbatch: per part, in block order, the rows of its
        update terms (sql/stream_joins.py), the part then counting as read."""
        limits = replace(self._limits, timeout_secs=0)
        history = seen
        for part in batch.parts:
            for term in join.terms(snapshot, part, history):
                frame = plan(join.sql, snapshot, self._limits, only=term)
                rows = self._run(BatchStream.open(frame, limits, snapshot))
                for data in rows.iterate_from_thread(self._loop):
                    yield data, metadata(batch.ranges, False)
            history = history | part

    def _wait_for_change(self, version: int) -> CatalogSnapshot | None:
        async def wait() -> CatalogSnapshot | None:
            seen = self._catalog.changes
            snapshot = await self._catalog.snapshot()
            if snapshot.version == version:  # nothing new loaded yet: wait for a change
                if not await self._catalog.wait_for_change(seen, 1.0):
                    return None
                snapshot = await self._catalog.snapshot()
            return snapshot if snapshot.version != version else None

        return asyncio.run_coroutine_threadsafe(wait(), self._loop).result()


def _check_incremental(frame, sql: str) -> None:  # noqa: ANN001
    try:
        check_incremental(frame)
        check_streamable(frame, sql)
    except QueryRuleError as exc:
        raise QueryError(400, "INVALID_QUERY", str(exc)) from None


class FlightService:
    """The Flight server on its own thread, started and stopped from the event loop."""

    def __init__(
        self,
        catalog: Catalog,
        limits: Limits,
        addr: str,
        microbatch_blocks: int = 1000,
        keep_alive_secs: float = 30.0,
    ) -> None:
        """`microbatch_blocks`: the most blocks a streaming query's microbatch spans
        (`server_microbatch_max_interval`); `keep_alive_secs`: how long an idle stream
        waits before a keep-alive batch (`keep_alive_interval`)."""
        self._catalog = catalog
        self._limits = limits
        self._addr = addr
        self._microbatch_blocks = microbatch_blocks
        self._keep_alive_secs = keep_alive_secs
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port: int | None = None

    async def start(self) -> None:
        # pyarrow sends a handler's exception to the client with its formatted traceback
        # (our frames and file paths); with no frames allowed, only the message goes. ampd's
        # own log lines still show whole tracebacks (logs.py passes a limit).
        sys.tracebacklimit = 0
        host, port = split_addr(self._addr)
        location = f"grpc+tcp://{host}:{port}"
        try:
            self._server = _Server(
                location,
                self._catalog,
                self._limits,
                asyncio.get_running_loop(),
                self._microbatch_blocks,
                self._keep_alive_secs,
            )
        except pa.ArrowException as exc:
            raise OSError(f"Flight server cannot listen on {self._addr}: {exc}") from exc
        self.port = self._server.port
        self._thread = threading.Thread(target=self._server.serve, name="flight", daemon=True)
        self._thread.start()
        log.info("Flight server listening on grpc://%s:%d", host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            await asyncio.to_thread(self._server.shutdown)
            log.info("Flight server stopped")
