"""The gRPC client of one Firehose endpoint: the block stream, single blocks, and the head.

One channel per client (opened on first use, reconnecting by itself): TLS with the system's
root certificates for `https://`, plaintext for `http://`; requests sent gzip-compressed and
compressed answers accepted; messages up to 100 MiB either way; keepalive pings so a long
stream over a dead connection fails instead of hanging. The bearer token travels as
`authorization: bearer <token>` metadata on every call.

Transient statuses (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, UNKNOWN,
ABORTED, CANCELLED by the server) are retried after a backoff, up to `max_attempts` attempts
in a row that make no progress; any other status is raised at once (errors.py).

Parsing: with protobuf's upb backend a benchmark-sized answer (6 transactions, 6 calls, 12
logs: 12 KB) parses in 5-10 us and one of 200 transactions (380 KB) in about 0.12 ms, so
answers are parsed in the event loop. Only an answer over `INLINE_PARSE_BYTES` goes to a
worker thread, which keeps the loop's pauses short however large blocks grow.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import re
import ssl
from collections.abc import AsyncGenerator, Callable
from contextlib import aclosing
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import grpc
from google.protobuf.message import DecodeError

from ampd.logs import get_logger
from ampd.providers.config import strip_userinfo
from ampd.providers.firehose.errors import (
    FirehoseDecodeError,
    FirehoseError,
    FirehoseRetriesExhaustedError,
    describe_status,
    is_retryable,
    rejected,
)
from ampd.providers.firehose.proto import ethereum_pb2, firehose_pb2

__all__ = ["FirehoseClient", "StreamItem", "parse_endpoint"]

log = get_logger("providers.firehose")

MAX_MESSAGE_BYTES = 100 * 1024 * 1024
# Answers up to this size are parsed in the event loop (under a millisecond); larger ones
# in a worker thread.
INLINE_PARSE_BYTES = 2 * 1024 * 1024
BLOCK_TYPE = ethereum_pb2.Block.DESCRIPTOR.full_name  # sf.ethereum.type.v2.Block

_STREAM_METHOD = "/sf.firehose.v2.Stream/Blocks"
_FETCH_METHOD = "/sf.firehose.v2.Fetch/Block"
_EXPECTED_URL = "expected http://host[:port] (plaintext) or https://host[:port] (TLS)"
_TOKEN_RE = re.compile(r"[\x20-\x7e]+\Z")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class StreamItem:
    """One answer of the stream: `step` is a `firehose_pb2.ForkStep` (STEP_NEW, STEP_UNDO,
    STEP_FINAL); `cursor` resumes the stream right after this block."""

    step: int
    block: ethereum_pb2.Block
    cursor: str


class FirehoseClient:
    """A client for one Firehose endpoint. Use `async with`, or call `close()` when done.

    `display_url` is how errors and logs name the endpoint (default: `url` without
    credentials). A failure is retried after `backoff_base` seconds (5, as Amp), doubling
    with each further failure up to `backoff_cap`; `max_attempts` attempts in a row without
    progress (None: no limit) end in FirehoseRetriesExhaustedError. `call_timeout` is the
    deadline of each Fetch call and of the head's stream. `root_certificates` (PEM) replaces
    the system's roots for TLS. `idle_timeout`: a stream with a stop block that sends
    nothing for that long is taken as stalled and opened again from its cursor (a server
    still connected but no longer sending is not noticed otherwise).
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        display_url: str | None = None,
        backoff_base: float = 5.0,
        backoff_cap: float = 60.0,
        max_attempts: int | None = 20,
        call_timeout: float = 30.0,
        root_certificates: bytes | None = None,
        idle_timeout: float | None = None,
    ) -> None:
        if max_attempts is not None and max_attempts < 1:
            raise ValueError("max_attempts must be None or >= 1")
        if backoff_base < 0 or call_timeout <= 0:
            raise ValueError("backoff_base must be >= 0 and call_timeout > 0")
        if token is not None and token != "" and not _TOKEN_RE.match(token):
            raise ValueError("the Firehose token must be printable ASCII (no line breaks)")
        self.url = display_url or strip_userinfo(url)
        self.target, self.secure = parse_endpoint(url, shown=self.url)
        self.max_attempts = max_attempts
        self._backoff_base = backoff_base
        self._backoff_cap = max(backoff_cap, backoff_base)
        self._call_timeout = call_timeout
        self._idle_timeout = idle_timeout
        self._root_certificates = root_certificates
        self._metadata = (("authorization", f"bearer {token}"),) if token else ()
        self._methods: _Methods | None = None
        self._closed = False

    async def __aenter__(self) -> FirehoseClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel; calls still running end with a FirehoseError."""
        self._closed = True
        methods, self._methods = self._methods, None
        if methods is not None:
            await methods.channel.close(grace=None)

    # --- the API ---

    def stream(
        self,
        start: int,
        stop: int | None,
        *,
        final_blocks_only: bool = False,
        cursor: str | None = None,
    ) -> AsyncGenerator[StreamItem, None]:
        """The blocks from `start` to `stop` (inclusive; None or 0: no end), as the server
        sends them. A negative `start` counts back from the server's head; a `cursor`
        (from a StreamItem) takes precedence over `start`.

        A broken stream, or one that ends before `stop`, is opened again from the cursor
        of the last block yielded, so no block is yielded twice or skipped. Use it in
        `contextlib.aclosing` when you may stop early, so the call ends at once.
        """
        return self._stream(start, stop, final_blocks_only, cursor, timeout=None)

    async def fetch_block(self, number: int) -> ethereum_pb2.Block:
        """The canonical block `number`, through the Fetch service.

        Raises FirehoseRejectedError (NOT_FOUND for a block the server does not have),
        FirehoseAuthError, FirehoseDecodeError or FirehoseRetriesExhaustedError.
        """
        if number < 0:
            raise ValueError(f"a block number must be >= 0, got {number}")
        reference = firehose_pb2.SingleBlockRequest.BlockNumber(num=number)
        request = firehose_pb2.SingleBlockRequest(block_number=reference)
        failures = 0
        while True:
            fetch = self._open().fetch
            try:
                raw = await fetch(request, metadata=self._metadata, timeout=self._call_timeout)
            except grpc.aio.AioRpcError as e:
                code, problem = self._classify(e)
            except asyncio.CancelledError:
                self._raise_if_closed()
                raise
            else:
                return await _off_loop_if_large(_parse_single, raw, self.url)
            failures += 1
            await self._pause(failures, f"fetching block {number}", problem, code)

    async def head(self, *, final: bool = False) -> int:
        """The chain head as the server sees it: the first block of a stream started at
        -1 (as Amp does). By the protocol's arithmetic that is one block below the
        server's newest block, so it is a block the server can serve. With `final`, the
        newest final block (no deadline then: the server may wait for one to finalize).
        """
        timeout = None if final else self._call_timeout
        items = self._stream(-1, None, final, None, timeout=timeout)
        async with aclosing(items):
            async for item in items:
                return item.block.number
        raise AssertionError("unreachable: the stream only ends by raising")

    # --- streaming and retries ---

    async def _stream(
        self,
        start: int,
        stop: int | None,
        final_blocks_only: bool,
        cursor: str | None,
        *,
        timeout: float | None,
    ) -> AsyncGenerator[StreamItem, None]:
        if stop is not None and stop < 0:
            raise ValueError(f"stop must be None or >= 0, got {stop}")
        if stop and 0 <= stop < start:
            raise ValueError(f"stop ({stop}) is before start ({start})")
        what = f"stream of blocks {start}..{stop}" if stop else f"stream of blocks from {start}"
        resume_start, resume_cursor = start, cursor or ""
        reached: int | None = None  # the number of the last block yielded, but for undos
        failures = 0
        while True:
            request = firehose_pb2.Request(
                start_block_num=resume_start,
                stop_block_num=stop or 0,
                final_blocks_only=final_blocks_only,
                cursor=resume_cursor,
            )
            call = self._open().blocks(request, metadata=self._metadata, timeout=timeout)
            code: grpc.StatusCode | None = None
            try:
                idle = self._idle_timeout if stop else None  # a following stream may wait
                while True:
                    try:
                        raw = await asyncio.wait_for(call.read(), idle)
                    except grpc.aio.AioRpcError as e:
                        code, problem = self._classify(e)
                        break
                    except TimeoutError:
                        code, problem = None, f"no answer for {idle:g}s: the stream stalled"
                        break
                    except asyncio.CancelledError:
                        self._raise_if_closed()
                        raise
                    if raw is grpc.aio.EOF:
                        problem = _premature_end(stop, reached)
                        if problem is None:
                            return
                        break
                    item = await _off_loop_if_large(_parse_response, raw, self.url)
                    failures = 0
                    yield item
                    if item.step != firehose_pb2.STEP_UNDO:
                        reached = item.block.number
                    if item.cursor:
                        resume_cursor = item.cursor
                    else:  # a server without cursors: go on from the next number
                        resume_start, resume_cursor = item.block.number + 1, ""
            finally:
                call.cancel()
            failures += 1
            await self._pause(failures, what, problem, code, _resume_point(reached, cursor))

    def _classify(self, error: grpc.aio.AioRpcError) -> tuple[grpc.StatusCode, str]:
        """The status of a failed call and how it reads; raises when it is not retried."""
        code, details = error.code(), error.details() or ""
        if self._closed:
            raise FirehoseError(self.url, "the client was closed during the call", code) from None
        if not is_retryable(code, details):
            raise rejected(self.url, code, details) from None
        return code, describe_status(code, details)

    def _raise_if_closed(self) -> None:
        """gRPC cancels the calls of a channel being closed: when that, rather than a
        cancellation of the task, is why a call was cancelled, say so."""
        task = asyncio.current_task()
        if self._closed and (task is None or task.cancelling() == 0):
            raise FirehoseError(self.url, "the client was closed during the call") from None

    async def _pause(
        self,
        failures: int,
        what: str,
        problem: str,
        code: grpc.StatusCode | None,
        resume: str = "",
    ) -> None:
        """Wait before the next attempt, or raise when `failures` used up `max_attempts`."""
        if self.max_attempts is not None and failures >= self.max_attempts:
            raise FirehoseRetriesExhaustedError(self.url, f"{what}: {problem}", failures, code)
        ceiling = min(self._backoff_cap, self._backoff_base * 2 ** min(failures - 1, 32))
        delay = ceiling * (0.8 + 0.2 * random.random())  # jitter: streams do not retry in step
        of = f" of {self.max_attempts}" if self.max_attempts is not None else ""
        log.warning(
            "firehose endpoint %s: %s failed (%s); retrying%s in %.2fs (attempt %d%s)",
            self.url,
            what,
            problem,
            resume,
            delay,
            failures + 1,
            of,
        )
        await asyncio.sleep(delay)

    def _open(self) -> _Methods:
        if self._closed:
            raise FirehoseError(self.url, "the client is closed")
        if self._methods is None:
            options = _channel_options(self._backoff_base)
            if self.secure:
                roots = self._root_certificates or _system_roots()
                credentials = grpc.ssl_channel_credentials(root_certificates=roots)
                channel = grpc.aio.secure_channel(
                    self.target, credentials, options, compression=grpc.Compression.Gzip
                )
            else:
                channel = grpc.aio.insecure_channel(
                    self.target, options, compression=grpc.Compression.Gzip
                )
            self._methods = _Methods(channel)
        return self._methods


class _Methods:
    """The channel and its two calls. Answers come as bytes, to be parsed where it suits."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self.channel = channel
        self.blocks = channel.unary_stream(
            _STREAM_METHOD,
            request_serializer=firehose_pb2.Request.SerializeToString,
            response_deserializer=None,
        )
        self.fetch = channel.unary_unary(
            _FETCH_METHOD,
            request_serializer=firehose_pb2.SingleBlockRequest.SerializeToString,
            response_deserializer=None,
        )


def parse_endpoint(url: str, *, shown: str | None = None) -> tuple[str, bool]:
    """The gRPC target (`host:port`) of a Firehose URL, and whether it uses TLS.

    The port defaults to 443 for https and 80 for http. Raises ValueError naming the URL
    (as `shown`) and what is expected.
    """
    shown = shown or strip_userinfo(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise ValueError(f"invalid Firehose URL {shown!r} ({e}): {_EXPECTED_URL}") from None
    if parts.scheme not in ("http", "https"):
        scheme = f"scheme {parts.scheme!r}" if "://" in url else "no scheme"
        raise ValueError(f"invalid Firehose URL {shown!r} ({scheme}): {_EXPECTED_URL}")
    if not parts.hostname:
        raise ValueError(f"invalid Firehose URL {shown!r} (no host): {_EXPECTED_URL}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(
            f"invalid Firehose URL {shown!r} (a gRPC endpoint has no path or query): "
            f"{_EXPECTED_URL}"
        )
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            f"invalid Firehose URL {shown!r} (credentials belong in the provider's token): "
            f"{_EXPECTED_URL}"
        )
    secure = parts.scheme == "https"
    host = parts.hostname
    if ":" in host:  # IPv6
        host = f"[{host}]"
    return f"{host}:{port or (443 if secure else 80)}", secure


# --- helpers ---


def _channel_options(backoff_base: float) -> list[tuple[str, int | str]]:
    # The channel's own reconnect backoff stays short (at most 5 s, like Amp's retry), so
    # an attempt after our backoff finds a channel trying to connect rather than one still
    # waiting out a long reconnect delay of its own.
    reconnect_ms = max(10, min(1000, int(backoff_base * 1000)))
    return [
        ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
        ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 0),
        ("grpc.initial_reconnect_backoff_ms", reconnect_ms),
        ("grpc.min_reconnect_backoff_ms", reconnect_ms),
        ("grpc.max_reconnect_backoff_ms", max(reconnect_ms, 5000)),
        ("grpc.primary_user_agent", "ampd"),
    ]


@functools.cache
def _system_roots() -> bytes | None:
    """The system's CA bundle (PEM), or None to let gRPC use its bundled roots."""
    if os.environ.get("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH"):
        return None  # the operator chose gRPC's roots file
    paths = ssl.get_default_verify_paths()
    for candidate in (os.environ.get("SSL_CERT_FILE"), paths.cafile, paths.openssl_cafile):
        if candidate and os.path.isfile(candidate):
            return Path(candidate).read_bytes()
    return None


async def _off_loop_if_large(parse: Callable[[bytes, str], T], raw: bytes, url: str) -> T:
    """`parse(raw, url)`: in the event loop when `raw` is small, else in a worker thread."""
    if len(raw) > INLINE_PARSE_BYTES:
        return await asyncio.to_thread(parse, raw, url)
    return parse(raw, url)


def _parse_response(raw: bytes, url: str) -> StreamItem:
    response = firehose_pb2.Response()
    block = _parse_block(response, raw, url)  # parses `response` first
    return StreamItem(response.step, block, response.cursor)


def _parse_single(raw: bytes, url: str) -> ethereum_pb2.Block:
    return _parse_block(firehose_pb2.SingleBlockResponse(), raw, url)


def _parse_block(
    response: firehose_pb2.Response | firehose_pb2.SingleBlockResponse, raw: bytes, url: str
) -> ethereum_pb2.Block:
    """Parse `raw` into `response` and the block it carries."""
    what = "a stream answer" if isinstance(response, firehose_pb2.Response) else "a Fetch answer"
    try:
        response.ParseFromString(raw)
    except DecodeError as e:
        raise FirehoseDecodeError(url, f"{what} does not parse: {e}") from None
    if not response.HasField("block"):
        raise FirehoseDecodeError(url, f"{what} carries no block")
    payload = response.block
    # An Any's type is the last segment of its URL: type.googleapis.com/<full name>.
    if payload.type_url.rpartition("/")[2] != BLOCK_TYPE:
        raise FirehoseDecodeError(
            url,
            f"expected blocks of type {BLOCK_TYPE}, got {payload.type_url!r} "
            "(is this an Ethereum Firehose endpoint?)",
        )
    try:
        return ethereum_pb2.Block.FromString(payload.value)
    except DecodeError as e:
        raise FirehoseDecodeError(url, f"a {BLOCK_TYPE} does not parse: {e}") from None


def _premature_end(stop: int | None, reached: int | None) -> str | None:
    """Why a stream that ended without error is not complete (None when it is)."""
    if not stop:
        return "the server ended a stream that has no stop block"
    if reached is not None and reached >= stop:
        return None
    at = f"after block {reached}" if reached is not None else "before any block"
    return f"the server ended the stream {at}, before the stop block {stop}"


def _resume_point(reached: int | None, cursor: str | None) -> str:
    if reached is not None:
        return f" after block {reached}"
    return " from the given cursor" if cursor else ""
