"""Moving JSON-RPC messages to a provider and back: HTTP(S), WebSocket and IPC.

A transport takes an encoded request (one call or a batch array) and returns the decoded
answer. It knows nothing of methods or retries: any failure is a `TransportFailure`, which
the client classifies and retries. WebSocket and IPC carry many requests on one
connection, told apart by their JSON-RPC ids, and reconnect after the connection breaks.
"""

from __future__ import annotations

import asyncio
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import InvalidStatus

from ampd.providers.evm_rpc.errors import TransportFailure, status_failure

log = logging.getLogger("ampd.providers.evm_rpc")

# Answers bigger than this are decoded in a worker thread so the event loop keeps running
# (None: every answer is decoded on the loop's thread; see decode_on_loop_thread).
_DECODE_IN_THREAD_BYTES: int | None = 1 << 20


def decode_on_loop_thread() -> None:
    """From now on, decode every answer in this process on the event loop's thread.

    For a process whose event loop does nothing but fetch (an `ampd dump` worker), nothing
    needs to keep running meanwhile, and the hand-off to a thread costs more than the
    decoding: the two threads take turns holding the GIL. Measured on 20,000 anvil blocks,
    a dump worker used 1.82 CPU-seconds decoding inline against 2.0 to 2.3 through a thread.
    """
    global _DECODE_IN_THREAD_BYTES
    _DECODE_IN_THREAD_BYTES = None


def _decode_in_thread(size: int) -> bool:
    return _DECODE_IN_THREAD_BYTES is not None and size > _DECODE_IN_THREAD_BYTES


async def decode_json(data: bytes | str) -> Any:
    """Decode one JSON answer; malformed or truncated JSON is a (retryable) TransportFailure."""
    try:
        if _decode_in_thread(len(data)):
            return await asyncio.to_thread(orjson.loads, data)
        return orjson.loads(data)
    except (ValueError, UnicodeDecodeError) as e:  # orjson.JSONDecodeError is a ValueError
        raise TransportFailure(f"malformed JSON in answer ({len(data)} bytes): {e}") from None


class Transport(ABC):
    """Sends one encoded JSON-RPC request and returns the decoded answer."""

    @abstractmethod
    async def request(self, body: bytes, ids: Sequence[int]) -> Any:
        """Send `body` (whose calls carry `ids`); return the answer, or raise TransportFailure."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close connections; the transport is not used afterwards."""


def open_transport(
    url: str, headers: Mapping[str, str], *, max_connections: int, timeout: float
) -> Transport:
    """The transport for `url`'s scheme. Connections are made lazily, on the first request."""
    scheme = urlsplit(url).scheme
    if scheme in ("http", "https"):
        return HttpTransport(url, headers, max_connections=max_connections, timeout=timeout)
    if scheme in ("ws", "wss"):
        return WsTransport(url, headers, timeout=timeout)
    if scheme == "ipc":
        return IpcTransport(urlsplit(url).path)
    raise ValueError(f"unsupported URL scheme '{scheme}'")


class HttpTransport(Transport):
    """POSTs each request on a keep-alive connection pool sized to the concurrency limit.

    aiohttp, for its C HTTP parser: answers of several megabytes are the normal case here,
    and reading them is a large part of an extractor's CPU time.
    """

    def __init__(
        self, url: str, headers: Mapping[str, str], *, max_connections: int, timeout: float
    ) -> None:
        self._url = url
        self._headers = {"Content-Type": "application/json", **headers}
        self._max_connections = max_connections
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Made on first use: a session belongs to the event loop that creates it.
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections, limit_per_host=self._max_connections
            )
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                connector=connector,
                timeout=self._timeout,
                auto_decompress=True,
            )
        return self._session

    async def request(self, body: bytes, ids: Sequence[int]) -> Any:
        return await decode_json(await self.request_bytes(body))

    async def request_bytes(self, body: bytes) -> bytes:
        """POST `body`; the answer's bytes as they came (a 200 answer), or TransportFailure."""
        try:
            async with self._client().post(self._url, data=body) as response:
                content = await response.read()
                status, reason = response.status, response.reason or ""
        except TimeoutError:
            raise TransportFailure("timed out (no complete answer within timeout_secs)") from None
        except aiohttp.ClientError as e:
            raise TransportFailure(f"connection error: {type(e).__name__}: {e}") from None
        if status != 200:
            raise status_failure(status, reason, content)
        return content

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()


class _Multiplexed(Transport):
    """One connection, many requests in flight, answers routed back by JSON-RPC id."""

    def __init__(self) -> None:
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._connect_lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    @abstractmethod
    async def _connect(self) -> None:
        """Open the connection (raising TransportFailure) and remember it."""

    @abstractmethod
    async def _send(self, body: bytes) -> None: ...

    @abstractmethod
    async def _read_forever(self) -> None:
        """Read answers and `_dispatch` them until the connection ends (by raising)."""

    @abstractmethod
    async def _disconnect(self) -> None: ...

    async def request(self, body: bytes, ids: Sequence[int]) -> Any:
        await self._ensure_connected()
        answer: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        for i in ids:
            self._pending[i] = answer
        try:
            await self._send(body)
            return await answer
        finally:
            for i in ids:
                if self._pending.get(i) is answer:
                    del self._pending[i]

    async def aclose(self) -> None:
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self._disconnect()
        self._fail_pending(TransportFailure("transport closed"))

    async def _ensure_connected(self) -> None:
        if self._reader is not None and not self._reader.done():
            return
        async with self._connect_lock:
            if self._closed:
                raise TransportFailure("transport closed", retryable=False)
            if self._reader is not None and not self._reader.done():
                return
            await self._disconnect()
            await self._connect()
            self._reader = asyncio.create_task(self._read_loop())

    async def _read_loop(self) -> None:
        try:
            await self._read_forever()
            failure = TransportFailure("connection closed by the provider")
        except asyncio.CancelledError:
            raise
        except TransportFailure as e:
            failure = e
        except Exception as e:  # any read error ends this connection; requests get retried
            failure = TransportFailure(f"connection lost: {type(e).__name__}: {e}")
        log.debug("%s connection ended: %s", type(self).__name__, failure.reason)
        self._fail_pending(failure)

    def _dispatch(self, answer: Any) -> None:
        """Hand an answer to the request it belongs to; drop answers nobody waits for."""
        members = answer if isinstance(answer, list) else [answer]
        for member in members:
            if isinstance(member, dict):
                future = self._pending.get(member.get("id"))  # type: ignore[arg-type]
                if future is not None:
                    if not future.done():
                        future.set_result(answer)
                    return
        log.debug("dropping an answer no request waits for: %.200r", answer)

    def _fail_pending(self, failure: TransportFailure) -> None:
        for future in set(self._pending.values()):
            if not future.done():
                future.set_exception(failure)
        self._pending.clear()


class WsTransport(_Multiplexed):
    """JSON-RPC over one WebSocket (text frames); auth headers go in the handshake."""

    def __init__(self, url: str, headers: Mapping[str, str], *, timeout: float) -> None:
        super().__init__()
        self._url = url
        self._headers = dict(headers)
        self._timeout = timeout
        self._ws: ClientConnection | None = None

    async def _connect(self) -> None:
        try:
            self._ws = await websockets.connect(
                self._url,
                additional_headers=self._headers,
                max_size=None,  # a block with its transactions can be many megabytes
                open_timeout=self._timeout,
            )
        except InvalidStatus as e:
            response = e.response
            phrase = response.reason_phrase or ""
            raise status_failure(response.status_code, phrase, response.body or b"") from None
        except (OSError, TimeoutError, websockets.WebSocketException) as e:
            raise TransportFailure(f"cannot connect: {type(e).__name__}: {e}") from None

    async def _send(self, body: bytes) -> None:
        assert self._ws is not None
        try:
            await self._ws.send(body.decode())
        except websockets.WebSocketException as e:
            raise TransportFailure(f"connection lost: {type(e).__name__}: {e}") from None

    async def _read_forever(self) -> None:
        assert self._ws is not None
        async for message in self._ws:
            try:
                answer = await decode_json(message)
            except TransportFailure as e:
                # No id to route it by: the request it answers times out and is retried.
                log.warning("provider sent malformed JSON over WebSocket: %s", e.reason)
                continue
            self._dispatch(answer)

    async def _disconnect(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()


class IpcTransport(_Multiplexed):
    """JSON-RPC over a Unix socket: requests newline-terminated, answers split by `JsonStream`."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self._path = path
        self._reader_stream: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self) -> None:
        try:
            self._reader_stream, self._writer = await asyncio.open_unix_connection(self._path)
        except OSError as e:
            raise TransportFailure(f"cannot connect to {self._path}: {e}") from None

    async def _send(self, body: bytes) -> None:
        assert self._writer is not None
        try:
            self._writer.write(body + b"\n")
            await self._writer.drain()
        except OSError as e:
            raise TransportFailure(f"connection lost: {e}") from None

    async def _read_forever(self) -> None:
        assert self._reader_stream is not None
        stream = JsonStream()
        while chunk := await self._reader_stream.read(1 << 20):
            if _decode_in_thread(stream.buffered + len(chunk)):
                answers = await asyncio.to_thread(stream.feed, chunk)
            else:
                answers = stream.feed(chunk)
            for answer in answers:
                self._dispatch(answer)

    async def _disconnect(self) -> None:
        writer, self._writer = self._writer, None
        self._reader_stream = None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass


class JsonStream:
    """Splits a byte stream into JSON values.

    Nodes write one compact JSON value per line, which is the fast path; values split
    over several lines or written back to back are decoded too. A line that cannot be
    completed by what follows is dropped (the request it answered then times out).
    """

    _decoder = json.JSONDecoder()

    def __init__(self) -> None:
        self._buf = bytearray()
        self._checked = 0  # bytes of _buf known not to end a complete value

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Any]:
        """Add bytes; return the values now complete."""
        self._buf += data
        values: list[Any] = []
        while True:
            end = self._buf.find(b"\n", self._checked)
            if end < 0:
                tail = self._buf.rstrip()
                if not tail.endswith((b"}", b"]")) or len(tail) <= self._checked:
                    return values
                end = len(tail) - 1
            found = self._decode(end + 1)
            if found is None:
                self._checked = end + 1
                if end + 1 >= len(self._buf):
                    return values
                continue
            values.extend(found)

    def _decode(self, end: int) -> list[Any] | None:
        """Decode `_buf[:end]` as whole values and consume it, or return None if it is not."""
        try:
            text = self._buf[:end].decode()
            values = self._decode_all(text)
        except (ValueError, UnicodeDecodeError):
            # Perhaps a value continues on the next line; perhaps the text before the
            # last line is garbage and the last line is a whole value on its own.
            last = self._buf.rfind(b"\n", 0, end - 1) + 1
            if last == 0:
                return None
            try:
                values = self._decode_all(self._buf[last:end].decode())
            except (ValueError, UnicodeDecodeError):
                return None
            if not all(isinstance(v, dict | list) for v in values):
                return None
            log.warning("dropping %d bytes of malformed JSON from the IPC stream", last)
        del self._buf[:end]
        self._checked = 0
        return values

    @classmethod
    def _decode_all(cls, text: str) -> list[Any]:
        values, pos, n = [], 0, len(text)
        while True:
            while pos < n and text[pos] in " \t\r\n":
                pos += 1
            if pos == n:
                return values
            value, pos = cls._decoder.raw_decode(text, pos)
            values.append(value)
