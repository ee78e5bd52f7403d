"""The Arrow Flight endpoint (default port 1602).

`GetFlightInfo` takes a CMD descriptor holding either a Flight SQL `CommandStatementQuery`
packed in a protobuf `Any` (what Flight SQL drivers and Amp's client send) or the SQL text
itself, and returns one endpoint whose ticket `DoGet` runs. `DoGet` streams the schema and
the record batches as DataFusion produces them.

Streaming queries (`SETTINGS stream = true`, or the `amp-stream: true` header) first send
what is committed, then stay open and send the rows of each newly committed block range, in
block order, each batch tagged with its range in `app_metadata`.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pyarrow as pa
import pyarrow.flight as flight

from ampd.config import split_addr
from ampd.logs import get_logger
from ampd.sql.batches import BatchStream
from ampd.sql.catalog import Catalog, CatalogSnapshot, CommittedFile
from ampd.sql.engine import Limits, QueryError, parse_query, plan

log = get_logger("server")

STATEMENT_QUERY_TYPE = "type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery"
_NON_INCREMENTAL = ("Aggregate:", "Distinct", "Limit:", "Sort:", "Window", "Join")


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


class _HeaderMiddleware(flight.ServerMiddleware):
    def __init__(self, headers: dict[str, Any]) -> None:
        self.headers = headers


class _HeaderMiddlewareFactory(flight.ServerMiddlewareFactory):
    def start_call(self, info: flight.CallInfo, headers: dict[str, Any]) -> _HeaderMiddleware:
        return _HeaderMiddleware(headers)


class _Server(flight.FlightServerBase):
    def __init__(
        self, location: str, catalog: Catalog, limits: Limits, loop: asyncio.AbstractEventLoop
    ) -> None:
        super().__init__(location, middleware={"headers": _HeaderMiddlewareFactory()})
        self._catalog = catalog
        self._limits = limits
        self._loop = loop

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
            stream = parsed.stream or _headers(context).get("amp-stream", "").lower() == "true"
            frame = plan(parsed.sql, self._snapshot(), self._limits)
            if stream:
                _check_incremental(frame)
            schema = frame.schema()
        except QueryError as exc:
            raise _flight_error(exc) from None
        except UnicodeDecodeError:
            raise pa.ArrowInvalid("INVALID_SQL_STRING: the query is not valid UTF-8") from None
        ticket = flight.Ticket(json.dumps({"sql": parsed.sql, "stream": stream}).encode())
        return flight.FlightInfo(schema, descriptor, [flight.FlightEndpoint(ticket, [])], -1, -1)

    def do_get(
        self, context: flight.ServerCallContext, ticket: flight.Ticket
    ) -> flight.FlightDataStream:
        try:
            request = json.loads(ticket.ticket)
            sql, stream = request["sql"], bool(request.get("stream"))
        except (ValueError, KeyError, TypeError):
            # A client may also send the SQL itself as the ticket.
            try:
                parsed = parse_query(ticket.ticket)
            except QueryError as exc:
                raise _flight_error(exc) from None
            sql, stream = parsed.sql, parsed.stream
        stream = stream or _headers(context).get("amp-stream", "").lower() == "true"
        try:
            snapshot = self._snapshot()
            frame = plan(sql, snapshot, self._limits)
            if stream:
                _check_incremental(frame)
            batches = self._run(BatchStream.open(frame, self._limits, snapshot))
        except QueryError as exc:
            raise _flight_error(exc) from None
        schema = batches.schema
        if not stream:
            return flight.GeneratorStream(schema, self._batches(batches))
        return flight.GeneratorStream(schema, self._streaming(sql, snapshot, batches, context))

    def _run(self, coroutine):  # noqa: ANN001, ANN202
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _batches(self, batches: BatchStream) -> Iterator[pa.RecordBatch]:
        try:
            yield from batches.iterate_from_thread(self._loop, coalesce=True)
        except QueryError as exc:
            raise _flight_error(exc) from None

    def _streaming(
        self,
        sql: str,
        snapshot: CatalogSnapshot,
        first: BatchStream,
        context: flight.ServerCallContext,
    ) -> Iterator[Any]:
        """The committed rows, then each newly committed block range as it lands."""
        seen = {
            f.id
            for rev in snapshot.schemas.values()
            for files in rev.tables.values()
            for f in files
        }
        try:
            for batch in first.iterate_from_thread(self._loop):
                yield (
                    batch,
                    pa.py_buffer(json.dumps({"ranges": [], "ranges_complete": True}).encode()),
                )
            while not context.is_cancelled():
                current = self._wait_for_change(snapshot.version)
                if current is None:
                    continue
                snapshot = current
                for (start, end), files in _new_ranges(snapshot, seen):
                    frame = plan(sql, snapshot, self._limits, only=files)
                    metadata = pa.py_buffer(
                        json.dumps(
                            {
                                "ranges": [{"numbers": {"start": start, "end": end}}],
                                "ranges_complete": True,
                            }
                        ).encode()
                    )
                    batches = self._run(
                        BatchStream.open(frame, replace(self._limits, timeout_secs=0), snapshot)
                    )
                    for batch in batches.iterate_from_thread(self._loop):
                        yield batch, metadata
                    seen.update(f.id for fs in files.values() for f in fs)
        except QueryError as exc:
            raise _flight_error(exc) from None

    def _wait_for_change(self, version: int) -> CatalogSnapshot | None:
        async def wait() -> CatalogSnapshot | None:
            try:
                await asyncio.wait_for(self._catalog.changed.wait(), 1.0)
            except TimeoutError:
                return None
            self._catalog.changed.clear()
            snapshot = await self._catalog.snapshot()
            return snapshot if snapshot.version != version else None

        return asyncio.run_coroutine_threadsafe(wait(), self._loop).result()


def _check_incremental(frame) -> None:  # noqa: ANN001
    text = str(frame.logical_plan().display_indent())
    for marker in _NON_INCREMENTAL:
        if marker in text:
            name = marker.rstrip(":").upper()
            raise QueryError(
                400,
                "INVALID_ARGUMENT",
                f"streaming queries must be incremental (filters and projections over one table); "
                f"this plan has {name}",
            )


def _new_ranges(
    snapshot: CatalogSnapshot, seen: set[int]
) -> list[tuple[tuple[int, int], dict[str, tuple[CommittedFile, ...]]]]:
    """Files committed since `seen`, grouped by block range (all tables), in block order."""
    groups: dict[tuple[int, int], dict[str, list[CommittedFile]]] = {}
    for revision in snapshot.schemas.values():
        for table, files in revision.tables.items():
            for f in files:
                if f.id not in seen:
                    tables = groups.setdefault((f.start_block, f.end_block), {})
                    if f not in tables.setdefault(table, []):
                        tables[table].append(f)
    return [
        (span, {table: tuple(files) for table, files in groups[span].items()})
        for span in sorted(groups)
    ]


class FlightService:
    """The Flight server on its own thread, started and stopped from the event loop."""

    def __init__(self, catalog: Catalog, limits: Limits, addr: str) -> None:
        self._catalog = catalog
        self._limits = limits
        self._addr = addr
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
                location, self._catalog, self._limits, asyncio.get_running_loop()
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
