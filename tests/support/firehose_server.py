"""A real gRPC Firehose server for tests: sf.firehose.v2 Stream/Blocks and Fetch/Block.

`FirehoseServer(blocks)` serves prebuilt `sf.ethereum.type.v2.Block` messages (or their
serialized bytes) on 127.0.0.1, from a grpcio server with a thread pool; use it as a context
manager, and `url` (`http://127.0.0.1:PORT`) to reach it. Semantics are Firehose's:

- `start_block_num` inclusive, negative counting back from the head (-1 is head - 1), a
  start before the first block held starting there; `stop_block_num` inclusive, 0 for none:
  the stream ends once it sent the stop block as STEP_NEW or STEP_FINAL (or at once when a
  cursor is already past it); a start after the stop is INVALID_ARGUMENT.
- Without `final_blocks_only` every block is sent as STEP_NEW; with it only final blocks
  (at least `final_depth` below the head) are sent, as STEP_FINAL.
- After the newest block a stream without a stop (or short of it) waits for blocks
  `append`ed or `reorg`ed in (`follow=True`, as Firehose), or ends (`follow=False`).
- `reorg(blocks)` makes `blocks` canonical from their first block on: a stream that had
  sent the abandoned blocks receives STEP_UNDO for each (highest first), then STEP_NEW for
  the new branch. A cursor (see `support.firehose_store`) resumes right after its block,
  undoing first down to the common ancestor when that block was abandoned since.
- With a `token`, calls need metadata `authorization: bearer <token>` (UNAUTHENTICATED
  otherwise). Requests may be gzip-compressed (`accept_gzip=False` refuses them, which tells
  a test its client compresses); answers are gzip-compressed when the client accepts it
  (`gzip_responses`). Messages up to 100 MiB both ways.

Faults, for tests: `fail_next` (the next calls fail with a status), `cut_streams` (the next
streams stop after N messages, with UNAVAILABLE or quietly), `message_delay`/`call_delay`.
Counters: `blocks_calls`, `fetch_calls`, `messages_sent`, `active_streams`, `last_metadata`,
`requests` (method, request) of every call.

As a process: `python -m support.firehose_server --blocks FILE [--port P] [--token T]` (or
`--rpc-url URL --from N --to M` to build them from a node) prints its URL once listening and
serves until SIGTERM or SIGINT; `support.firehose_process` runs it so from a test.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from ampd.providers.firehose.proto import ethereum_pb2, firehose_pb2

from .firehose_blocks import build_blocks, read_serialized
from .firehose_rpc import BatchRpc
from .firehose_store import ChainStore, Cursor, Entry

MAX_MESSAGE_BYTES = 100 * 1024 * 1024
_BATCH = 256  # messages prepared per lock acquisition
_NONE = grpc.StatusCode.OK


class FirehoseServer:
    """See the module docstring."""

    def __init__(
        self,
        blocks: Iterable[ethereum_pb2.Block | bytes] = (),
        *,
        token: str | None = None,
        final_depth: int = 0,
        follow: bool = True,
        port: int = 0,
        max_workers: int = 32,
        gzip_responses: bool = True,
        accept_gzip: bool = True,
    ) -> None:
        self.token = token
        self.follow = follow
        self._store = ChainStore(final_depth)
        self._store.append([Entry.of(b) for b in blocks])
        self._cond = threading.Condition()
        self._stopping = False
        self._port = port
        self._max_workers = max_workers
        self._gzip_responses = gzip_responses
        self._accept_gzip = accept_gzip
        self._server: grpc.Server | None = None
        self._pool: ThreadPoolExecutor | None = None
        self.port: int | None = None
        self.message_delay = 0.0
        self.call_delay = 0.0
        self._failures: list[tuple[str | None, grpc.StatusCode, str]] = []
        self._cuts: list[tuple[int, grpc.StatusCode]] = []
        self.reset_counters()

    # --- lifecycle ---

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the server is not started")
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FirehoseServer:
        handlers = [
            grpc.method_handlers_generic_handler(
                "sf.firehose.v2.Stream",
                {
                    "Blocks": grpc.unary_stream_rpc_method_handler(
                        self._blocks,
                        request_deserializer=firehose_pb2.Request.FromString,
                        response_serializer=_raw,
                    )
                },
            ),
            grpc.method_handlers_generic_handler(
                "sf.firehose.v2.Fetch",
                {
                    "Block": grpc.unary_unary_rpc_method_handler(
                        self._fetch,
                        request_deserializer=firehose_pb2.SingleBlockRequest.FromString,
                        response_serializer=_raw,
                    )
                },
            ),
        ]
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.so_reuseport", 0),
            # Bit 0: identity, 1: deflate, 2: gzip.
            ("grpc.compression_enabled_algorithms_bitset", 0b111 if self._accept_gzip else 0b011),
        ]
        self._pool = ThreadPoolExecutor(self._max_workers, thread_name_prefix="firehose")
        self._server = grpc.server(
            self._pool,
            handlers=handlers,
            options=options,
            compression=grpc.Compression.Gzip if self._gzip_responses else None,
        )
        self.port = self._server.add_insecure_port(f"127.0.0.1:{self._port}")
        self._server.start()
        return self

    def stop(self, grace: float | None = 1.0) -> None:
        """Stop serving (open streams are cancelled) and wait for every handler; idempotent."""
        server, self._server = self._server, None
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if server is not None:
            server.stop(grace).wait()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> FirehoseServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- the chain ---

    @property
    def head(self) -> int | None:
        with self._cond:
            return self._store.head

    @property
    def lib(self) -> int | None:
        """The newest final block number (None while none is final)."""
        with self._cond:
            return self._store.lib

    @property
    def final_depth(self) -> int:
        return self._store.final_depth

    @final_depth.setter
    def final_depth(self, depth: int) -> None:
        with self._cond:
            self._store.final_depth = depth
            self._cond.notify_all()

    def block(self, number: int) -> ethereum_pb2.Block | None:
        """The canonical block `number`, if held."""
        with self._cond:
            entry = self._store.at(number)
        return entry.block() if entry else None

    def append(self, blocks: Iterable[ethereum_pb2.Block | bytes]) -> None:
        """Add blocks on top of the head; waiting streams send them."""
        entries = [Entry.of(b) for b in blocks]
        with self._cond:
            self._store.append(entries)
            self._cond.notify_all()

    def reorg(self, blocks: Iterable[ethereum_pb2.Block | bytes]) -> list[int]:
        """Replace the canonical chain from the first given block's number on with `blocks`
        (a fork, possibly longer or shorter): the first one's parent must be canonical and
        the first one above the final block (so `final_depth` must exceed the depth of the
        reorg). Returns the numbers of the abandoned blocks, highest first."""
        entries = [Entry.of(b) for b in blocks]
        with self._cond:
            abandoned = self._store.replace(entries)
            self._cond.notify_all()
        return [e.number for e in abandoned]

    # --- faults and counters ---

    def fail_next(
        self,
        count: int = 1,
        code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
        details: str = "injected failure",
        method: str | None = None,
    ) -> None:
        """The next `count` calls (of `method`, "Blocks" or "Block", or any) fail with `code`
        before sending anything."""
        with self._cond:
            self._failures += [(method, code, details)] * count

    def cut_streams(
        self, after: int, count: int = 1, code: grpc.StatusCode | None = grpc.StatusCode.UNAVAILABLE
    ) -> None:
        """The next `count` Blocks streams end after sending `after` messages: failing with
        `code`, or (code None) just ending, as a server going away cleanly would."""
        with self._cond:
            self._cuts += [(after, code or _NONE)] * count

    def reset_counters(self) -> None:
        with self._cond:
            self.blocks_calls = 0
            self.fetch_calls = 0
            self.messages_sent = 0
            self.active_streams = 0
            self.last_metadata: dict[str, str] = {}
            self.requests: list[tuple[str, Any]] = []

    def _begin(self, method: str, request: Any, context: grpc.ServicerContext) -> None:
        metadata = {m.key: m.value for m in context.invocation_metadata()}
        with self._cond:
            if method == "Blocks":
                self.blocks_calls += 1
            else:
                self.fetch_calls += 1
            self.last_metadata = metadata
            self.requests.append((method, request))
            failure = next((f for f in self._failures if f[0] in (None, method)), None)
            if failure is not None:
                self._failures.remove(failure)
        if self.call_delay:
            time.sleep(self.call_delay)
        if failure is not None:
            context.abort(failure[1], failure[2])
        if self.token is not None:
            scheme, _, value = metadata.get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or value.strip() != self.token:
                context.abort(
                    grpc.StatusCode.UNAUTHENTICATED,
                    "this Firehose server needs metadata `authorization: bearer <token>` "
                    "with its token; the call had "
                    + ("a wrong token" if "authorization" in metadata else "none"),
                )

    # --- Stream/Blocks ---

    def _blocks(self, request: firehose_pb2.Request, context: grpc.ServicerContext) -> Iterator:
        self._begin("Blocks", request, context)
        final_only, stop = request.final_blocks_only, request.stop_block_num
        with self._cond:
            try:
                tip, next_number = self._store.resume(
                    request.cursor, request.start_block_num, final_only
                )
            except ValueError as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
            cut = self._cuts.pop(0) if self._cuts else None
            self.active_streams += 1
        if stop and next_number > stop and not request.cursor:
            self._end_stream()
            context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"start block {next_number} is after stop block {stop}",
            )
        context.add_callback(self._wake)
        sent, limit = 0, cut[0] if cut is not None else None
        try:
            while limit is None or sent < limit:
                with self._cond:
                    batch, tip, next_number, done = self._prepare(
                        tip, next_number, final_only, stop, context
                    )
                if self._stopping:
                    context.abort(grpc.StatusCode.UNAVAILABLE, "the Firehose server is stopping")
                for message in batch[: None if limit is None else limit - sent]:
                    if self.message_delay:
                        time.sleep(self.message_delay)
                    yield message
                    sent += 1
                    with self._cond:
                        self.messages_sent += 1
                if done and (limit is None or sent < limit):
                    return
        finally:
            self._end_stream()
        if cut[1] != _NONE:
            context.abort(cut[1], f"injected: stream cut after {sent} messages")

    def _end_stream(self) -> None:
        with self._cond:
            self.active_streams -= 1

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _prepare(self, tip, next_number, final_only, stop, context):
        """Under the lock: wait for something to send; return (messages, tip, next, done)."""
        while True:
            if self._stopping or not context.is_active():
                return [], tip, next_number, True
            batch, tip, next_number, done = self._store.plan(
                tip, next_number, final_only, stop, _BATCH
            )
            if batch or done:
                return batch, tip, next_number, done
            if not self.follow:
                return [], tip, next_number, True
            self._cond.wait(timeout=1.0)

    # --- Fetch/Block ---

    def _fetch(self, request: firehose_pb2.SingleBlockRequest, context) -> bytes:
        self._begin("Block", request, context)
        kind = request.WhichOneof("reference")
        with self._cond:
            if kind == "block_number":
                entry = self._store.at(request.block_number.num)
            elif kind == "block_hash_and_number":
                wanted = request.block_hash_and_number
                digest = wanted.hash.removeprefix("0x")
                try:
                    entry = self._store.known.get(bytes.fromhex(digest))
                except ValueError:
                    entry = None
                if entry is not None and entry.number != wanted.num:
                    entry = None
            elif kind == "cursor":
                try:
                    cursor = Cursor.decode(request.cursor.cursor)
                except ValueError as e:
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
                entry = self._store.known.get(cursor.hash)
            else:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, "no block reference given")
        if entry is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"block not found ({kind})")
        return entry.frame  # a SingleBlockResponse holds the block in field 1 too


def _raw(data: bytes) -> bytes:
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve Firehose blocks over gRPC on 127.0.0.1.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--blocks", help="a block file (support.firehose_blocks.save_blocks)")
    source.add_argument("--rpc-url", help="build the blocks from this node")
    parser.add_argument("--from", dest="start", type=int, default=0)
    parser.add_argument("--to", dest="end", type=int)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--token")
    parser.add_argument("--final-depth", type=int, default=0)
    parser.add_argument("--no-follow", action="store_true", help="end streams at the head")
    parser.add_argument("--no-gzip-responses", action="store_true")
    args = parser.parse_args(argv)

    if args.blocks:
        blocks: Iterable[bytes | ethereum_pb2.Block] = read_serialized(args.blocks)
    else:
        end = args.end
        if end is None:
            end = int(BatchRpc(args.rpc_url).results([("eth_blockNumber", [])])[0], 16)
        blocks = build_blocks(args.rpc_url, args.start, end)
    server = FirehoseServer(
        blocks,
        token=args.token,
        final_depth=args.final_depth,
        follow=not args.no_follow,
        port=args.port,
        gzip_responses=not args.no_gzip_responses,
    )
    stopped = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopped.set())
    with server:
        print(server.url, flush=True)
        stopped.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
