"""The JSON Lines endpoint (default port 1603): `POST /` with SQL, rows as NDJSON.

The response starts once the first batch is ready (so planning and execution errors still
get a proper status) and then streams batch by batch, compressed with gzip, deflate or
brotli when the client asks with Accept-Encoding.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator

import brotli
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ampd.logs import get_logger
from ampd.server.encoding import encode_batch
from ampd.sql.batches import BatchStream
from ampd.sql.catalog import Catalog
from ampd.sql.engine import Limits, QueryError, parse_query, plan

log = get_logger("server")


def _error(exc: QueryError) -> JSONResponse:
    if exc.status >= 500 and exc.code != "QUERY_TIMEOUT":
        log.error("query failed: %s: %s", exc.code, exc)
    return JSONResponse({"error_code": exc.code, "error_message": str(exc)}, status_code=exc.status)


class _Compressor:
    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        if encoding == "br":
            self._brotli = brotli.Compressor(quality=4)
        else:
            self._zlib = zlib.compressobj(6, zlib.DEFLATED, 31 if encoding == "gzip" else 15)

    def compress(self, data: bytes) -> bytes:
        return self._brotli.process(data) if self.encoding == "br" else self._zlib.compress(data)

    def flush(self) -> bytes:
        return self._brotli.finish() if self.encoding == "br" else self._zlib.flush()


def _pick_encoding(header: str) -> str | None:
    """The best encoding the client accepts (q > 0): br, then gzip, then deflate."""
    accepted = {}
    for part in header.split(","):
        name, _, params = part.strip().partition(";")
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        accepted[name.strip().lower()] = q
    for name in ("br", "gzip", "deflate"):
        if accepted.get(name, accepted.get("*", 0)) > 0:
            return name
    return None


def create_app(catalog: Catalog, limits: Limits) -> Starlette:
    async def health(_: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def query(request: Request) -> Response:
        try:
            parsed = parse_query(await request.body())
            if parsed.stream:
                raise QueryError(
                    400,
                    "STREAMING_NOT_SUPPORTED",
                    "streaming queries are served over Arrow Flight, not JSON Lines",
                )
            snapshot = await catalog.snapshot()
            frame = await asyncio.to_thread(plan, parsed.sql, snapshot, limits)
            stream = await BatchStream.open(frame, limits, snapshot)
            first = await stream.next_coalesced()
        except QueryError as exc:
            return _error(exc)
        encoding = _pick_encoding(request.headers.get("accept-encoding", ""))
        headers = {"content-encoding": encoding} if encoding else {}
        return StreamingResponse(
            _body(first, stream, encoding), media_type="application/x-ndjson", headers=headers
        )

    return Starlette(
        routes=[Route("/", query, methods=["POST"]), Route("/health", health, methods=["GET"])]
    )


async def _body(first, stream: BatchStream, encoding: str | None) -> AsyncIterator[bytes]:  # noqa: ANN001
    compressor = _Compressor(encoding) if encoding else None
    try:
        batch = first
        while batch is not None:
            data = await asyncio.to_thread(encode_batch, batch)
            if compressor is not None:
                data = compressor.compress(data)
            if data:
                yield data
            batch = await stream.next_coalesced()
    except QueryError as exc:
        # The status line is gone already: end the body with the error as a last line.
        log.warning("query failed while streaming: %s", exc)
        tail = f'{{"error_code":"{exc.code}","error_message":{_json_string(str(exc))}}}\n'.encode()
        yield compressor.compress(tail) if compressor is not None else tail
    finally:
        stream.cancel()
    if compressor is not None:
        yield compressor.flush()


def _json_string(text: str) -> str:
    import json

    return json.dumps(text)
