"""The Firehose client against a real gRPC server: ranges, cursors, auth, faults, size, TLS.

The server (tests/support/firehose_stub_server.py) runs on 127.0.0.1 in its own threads and
records every call, so each test checks both what the client yielded and what the server
saw: how many calls, with which cursor and metadata.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from contextlib import aclosing
from typing import Any

import grpc
import pytest

from ampd.providers.firehose.client import FirehoseClient, StreamItem
from ampd.providers.firehose.errors import (
    FirehoseAuthError,
    FirehoseDecodeError,
    FirehoseError,
    FirehoseRejectedError,
    FirehoseRetriesExhaustedError,
)
from ampd.providers.firehose.proto import firehose_pb2 as fh
from support.firehose_stub_server import (
    ByteCountingRelay,
    Cut,
    StubFirehose,
    block_hash,
    cursor_of,
    self_signed_certificate,
)

pytestmark = pytest.mark.timeout(60)

MiB = 1024 * 1024


@pytest.fixture
def server() -> Iterator[StubFirehose]:
    with StubFirehose(head=1000) as s:
        yield s


@pytest.fixture
def retry_lines() -> Iterator[list[str]]:
    """The client's retry warnings (a handler on its logger: independent of propagation)."""
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    logger = logging.getLogger("ampd.providers.firehose")
    handler, level = Collect(logging.WARNING), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def client(url: str, **settings: Any) -> FirehoseClient:
    # A tiny backoff and bounded attempts: a fault the client fails to survive fails fast.
    return FirehoseClient(url, **{"backoff_base": 0.001, "max_attempts": 5, **settings})


async def collect(c: FirehoseClient, start: int, stop: int | None, **kw: Any) -> list[StreamItem]:
    return [item async for item in c.stream(start, stop, **kw)]


def numbers(items: list[StreamItem]) -> list[int]:
    return [item.block.number for item in items]


# --- streaming ---


async def test_range_is_streamed_in_order(server: StubFirehose) -> None:
    async with client(server.url) as c:
        items = await collect(c, 5, 25)
    assert numbers(items) == list(range(5, 26))  # stop is inclusive
    for item in items:
        n = item.block.number
        assert item.step == fh.STEP_NEW
        assert item.cursor == cursor_of(n)
        assert item.block.hash == block_hash(n) == item.block.header.hash
        assert item.block.header.parent_hash == block_hash(n - 1)
        assert item.block.header.number == n
    (call,) = server.calls
    assert call.method == "Blocks"
    assert (call.request.start_block_num, call.request.stop_block_num) == (5, 25)
    assert not call.request.final_blocks_only and call.request.cursor == ""


async def test_final_blocks_only_is_requested(server: StubFirehose) -> None:
    async with client(server.url) as c:
        items = await collect(c, 0, 3, final_blocks_only=True)
    assert numbers(items) == [0, 1, 2, 3]
    assert {item.step for item in items} == {fh.STEP_FINAL}
    assert server.calls[0].request.final_blocks_only


async def test_cursor_resumes_after_its_block(server: StubFirehose) -> None:
    async with client(server.url) as c:
        items = await collect(c, 0, 30, cursor=cursor_of(10))
    assert numbers(items) == list(range(11, 31))
    assert server.calls[0].request.cursor == cursor_of(10)


async def test_unbounded_stream_ends_when_the_consumer_stops(server: StubFirehose) -> None:
    async with client(server.url) as c:
        got = []
        async with aclosing(c.stream(990, None)) as items:
            async for item in items:
                got.append(item.block.number)
                if len(got) == 5:
                    break
        assert got == list(range(990, 995))
        assert numbers(await collect(c, 995, 996)) == [995, 996]  # the client is still usable
    assert server.calls[0].request.stop_block_num == 0


async def test_stop_before_start_is_refused(server: StubFirehose) -> None:
    async with client(server.url) as c:
        with pytest.raises(ValueError, match=r"stop \(3\) is before start \(7\)"):
            await collect(c, 7, 3)
    assert server.calls == []


# --- authentication ---


async def test_bearer_token_is_sent_on_every_call() -> None:
    with StubFirehose(head=100, token="s3cret") as server:
        async with client(server.url, token="s3cret") as c:
            assert numbers(await collect(c, 1, 3)) == [1, 2, 3]
            assert (await c.fetch_block(7)).number == 7
    assert [call.metadata["authorization"] for call in server.calls] == ["bearer s3cret"] * 2


@pytest.mark.parametrize("token", ["wrong", None])
async def test_bad_token_fails_once_without_retries(token: str | None) -> None:
    with StubFirehose(head=100, token="s3cret") as server:
        async with client(server.url, token=token) as c:
            with pytest.raises(FirehoseAuthError) as stream_error:
                await collect(c, 1, 3)
            assert len(server.calls) == 1
            with pytest.raises(FirehoseAuthError) as fetch_error:
                await c.fetch_block(1)
            assert len(server.calls) == 2
    for e in (stream_error.value, fetch_error.value):
        assert server.url in str(e) and "invalid bearer token" in str(e)
        assert "UNAUTHENTICATED" in str(e) and e.code == grpc.StatusCode.UNAUTHENTICATED
        assert "s3cret" not in str(e)


# --- retries ---


async def test_unavailable_twice_then_success(server: StubFirehose, retry_lines: list[str]) -> None:
    server.stream_faults.extend([Cut(0), Cut(0)])
    async with client(server.url) as c:
        items = await collect(c, 10, 19)
    assert numbers(items) == list(range(10, 20))
    assert len(server.calls) == 3
    assert len(retry_lines) == 2
    assert all("UNAVAILABLE" in line and server.url in line for line in retry_lines)


@pytest.mark.parametrize(
    "code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, None], ids=str
)
async def test_cut_stream_resumes_from_the_cursor(
    server: StubFirehose, retry_lines: list[str], code: grpc.StatusCode | None
) -> None:
    """Broken after 4 and then 3 blocks (or, with None, ended early without an error)."""
    server.stream_faults.extend([Cut(4, code), Cut(3, code)])
    async with client(server.url) as c:
        items = await collect(c, 0, 19)
    assert numbers(items) == list(range(20))  # each block exactly once
    assert [call.request.cursor for call in server.calls] == ["", cursor_of(3), cursor_of(6)]
    assert len(retry_lines) == 2
    if code is None:
        assert "before the stop block 19" in retry_lines[0]


async def test_progress_resets_the_attempt_count(server: StubFirehose) -> None:
    server.stream_faults.extend([Cut(2)] * 4)  # four failures, each after some progress
    async with client(server.url, max_attempts=2) as c:
        assert numbers(await collect(c, 0, 9)) == list(range(10))
    assert len(server.calls) == 5


async def test_gives_up_after_max_attempts(server: StubFirehose) -> None:
    server.always_fail = grpc.StatusCode.UNAVAILABLE
    async with client(server.url, max_attempts=3) as c:
        with pytest.raises(FirehoseRetriesExhaustedError) as stream_error:
            await collect(c, 0, 9)
        assert len(server.calls) == 3
        with pytest.raises(FirehoseRetriesExhaustedError) as fetch_error:
            await c.fetch_block(1)
        assert len(server.calls) == 6
    for e in (stream_error.value, fetch_error.value):
        assert e.attempts == 3 and e.code == grpc.StatusCode.UNAVAILABLE
        assert server.url in str(e) and "after 3 attempts" in str(e)
        assert "UNAVAILABLE: injected UNAVAILABLE" in str(e)


async def test_unreachable_server_gives_up_naming_the_url() -> None:
    with StubFirehose() as server:
        url = server.url  # a port that was just free and now refuses connections
    async with client(url, max_attempts=2) as c:
        with pytest.raises(FirehoseRetriesExhaustedError, match="UNAVAILABLE") as e:
            await collect(c, 0, 1)
    assert url in str(e.value)


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, FirehoseRejectedError),
        (grpc.StatusCode.NOT_FOUND, FirehoseRejectedError),
        (grpc.StatusCode.UNIMPLEMENTED, FirehoseRejectedError),
        (grpc.StatusCode.FAILED_PRECONDITION, FirehoseRejectedError),
        (grpc.StatusCode.PERMISSION_DENIED, FirehoseAuthError),
    ],
    ids=lambda v: getattr(v, "name", ""),
)
async def test_refusals_are_raised_at_once(
    server: StubFirehose, code: grpc.StatusCode, error: type[FirehoseError]
) -> None:
    server.stream_faults.append(Cut(2, code))
    got = []
    async with client(server.url) as c:
        with pytest.raises(error) as e:
            async for item in c.stream(0, 9):
                got.append(item.block.number)
    assert got == [0, 1] and len(server.calls) == 1
    assert e.value.code == code
    assert server.url in str(e.value) and f"{code.name}: injected {code.name}" in str(e.value)


async def test_wrong_payload_type_is_a_decode_error(server: StubFirehose) -> None:
    server.type_url = "type.googleapis.com/sf.near.type.v1.Block"
    async with client(server.url) as c:
        with pytest.raises(FirehoseDecodeError, match="sf.near.type.v1.Block") as e:
            await collect(c, 0, 3)
        with pytest.raises(FirehoseDecodeError, match="sf.near.type.v1.Block"):
            await c.fetch_block(0)
    assert "sf.ethereum.type.v2.Block" in str(e.value) and len(server.calls) == 2


async def test_close_during_a_stream_ends_it_with_an_error(server: StubFirehose) -> None:
    c = client(server.url)
    got = []
    with pytest.raises(FirehoseError, match="closed"):
        async for item in c.stream(0, None):
            got.append(item.block.number)
            if len(got) == 3:
                await c.close()
    assert got == [0, 1, 2]


# --- Fetch and the head ---


async def test_fetch_block(server: StubFirehose) -> None:
    server.fetch_faults.append(grpc.StatusCode.UNAVAILABLE)
    async with client(server.url) as c:
        block = await c.fetch_block(7)
        assert block.number == 7 and block.hash == block_hash(7)
        assert len(server.calls_of("Block")) == 2  # the UNAVAILABLE one, retried
        with pytest.raises(FirehoseRejectedError, match="block 5000 not found") as e:
            await c.fetch_block(5000)
    assert e.value.code == grpc.StatusCode.NOT_FOUND
    assert len(server.calls_of("Block")) == 3
    assert server.calls_of("Block")[0].request.block_number.num == 7


async def test_head_is_the_first_block_of_a_stream_from_minus_one(server: StubFirehose) -> None:
    async with client(server.url) as c:
        head = await c.head()
    # The protocol resolves -1 to the server's head minus one (1000 - 1 here).
    assert head == server.head - 1
    (call,) = server.calls
    assert call.request.start_block_num == -1 and call.request.stop_block_num == 0


# --- the wire: compression, message size, TLS ---


async def test_requests_are_sent_gzip_compressed() -> None:
    # A highly compressible cursor (the server ignores text after its third ':') makes
    # the request 1 MiB before compression.
    cursor = cursor_of(4) + ":" + "0" * MiB
    with StubFirehose(head=100) as server, ByteCountingRelay(server.port) as relay:
        async with client(relay.url) as c:
            assert numbers(await collect(c, 0, 6, cursor=cursor)) == [5, 6]
        assert server.calls[0].request.cursor == cursor
        assert relay.sent < MiB // 20


async def test_gzip_compressed_answers_are_accepted() -> None:
    with StubFirehose(head=100, pad=MiB, pad_random=False) as server:
        server.compress_responses = True
        with ByteCountingRelay(server.port) as relay:
            async with client(relay.url) as c:
                items = await collect(c, 0, 4)
                block = await c.fetch_block(9)
    assert numbers(items) == [0, 1, 2, 3, 4] and block.number == 9
    assert all(len(item.block.header.extra_data) == MiB for item in items)
    assert relay.received < MiB // 10  # six blocks of 1 MiB came in far fewer bytes


async def test_messages_over_the_default_4_mib_limit_pass() -> None:
    with StubFirehose(head=10, pad=6 * MiB) as server:
        async with client(server.url) as c:
            items = await collect(c, 0, 2)
            block = await c.fetch_block(3)
        # The same answers overflow a channel with gRPC's default limit.
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            fetch = channel.unary_unary("/sf.firehose.v2.Fetch/Block")
            request = fh.SingleBlockRequest(block_number={"num": 3}).SerializeToString()
            with pytest.raises(grpc.aio.AioRpcError) as e:
                await fetch(request)
    assert numbers(items) == [0, 1, 2] and block.number == 3
    assert {len(item.block.header.extra_data) for item in items} == {6 * MiB}
    assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


@pytest.mark.skipif(
    importlib.util.find_spec("cryptography") is None,
    reason="the cryptography package is not installed: no certificate to test TLS with",
)
async def test_tls_with_a_given_root_certificate() -> None:
    key, cert = self_signed_certificate()
    with StubFirehose(head=50, tls=(key, cert), token="t") as server:
        assert server.url.startswith("https://")
        async with client(server.url, token="t", root_certificates=cert) as c:
            assert numbers(await collect(c, 1, 3)) == [1, 2, 3]
            assert (await c.fetch_block(4)).number == 4
        # Without that root the system's roots do not trust the certificate.
        async with client(server.url, token="t", max_attempts=1) as c:
            with pytest.raises(FirehoseRetriesExhaustedError, match="UNAVAILABLE"):
                await c.fetch_block(4)
    assert len(server.calls) == 2  # the untrusted connection never reached the server


# --- configuration ---


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://firehose.example:443", "scheme 'ftp'"),
        ("firehose.example:443", "no scheme"),
        ("https://", "no host"),
        ("http://firehose.example:99999", "out of range"),
        ("https://firehose.example:443/v2", "no path"),
    ],
)
def test_invalid_url_is_a_clear_value_error(url: str, why: str) -> None:
    with pytest.raises(ValueError) as e:
        FirehoseClient(url)
    message = str(e.value)
    assert url in message and why in message
    assert "expected http://host[:port] (plaintext) or https://host[:port] (TLS)" in message


def test_url_scheme_chooses_tls_and_default_port() -> None:
    assert (FirehoseClient("https://fh.example").target, FirehoseClient("https://a").secure) == (
        "fh.example:443",
        True,
    )
    plain = FirehoseClient("http://[::1]:9000")
    assert (plain.target, plain.secure) == ("[::1]:9000", False)
