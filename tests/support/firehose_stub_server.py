"""A small Firehose gRPC server for the client's tests: synthetic blocks and fault switches.

    with StubFirehose(head=100, token="secret") as server:
        server.stream_faults.append(Cut(after=3))  # the next stream breaks after 3 blocks
        ...  # FirehoseClient(server.url, "secret")
        assert [c.request.cursor for c in server.calls] == ["", cursor_of(...)]

The server (grpcio's threaded one) runs in its own threads, so the client's event loop is
free. Blocks are made up but consistent: block n's parent hash is block n-1's hash, and a
cursor names the block it follows. Negative start blocks count back from `head` as the
protocol says (-1 is head - 1); past `head` a stream without a stop waits, as at a live
chain's tip, until the client goes away.
"""

from __future__ import annotations

import functools
import hashlib
import random
import socket
import threading
from collections import deque
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc

from ampd.providers.firehose.proto import ethereum_pb2 as eth
from ampd.providers.firehose.proto import firehose_pb2 as fh
from ampd.providers.firehose.proto import firehose_pb2_grpc as fh_grpc

BLOCK_TYPE_URL = "type.googleapis.com/sf.ethereum.type.v2.Block"


def block_hash(n: int) -> bytes:
    return hashlib.sha256(b"stub block %d" % n).digest()


def cursor_of(n: int) -> str:
    """The cursor the server sends with block `n` (a stream from it starts at n + 1)."""
    return f"stub:{n}:{block_hash(n)[:4].hex()}"


def block_of_cursor(cursor: str) -> int:
    """The block a cursor points at; text after a third `:` is ignored (padding)."""
    kind, number, check = cursor.split(":")[:3]
    n = int(number)
    if kind != "stub" or check != block_hash(n)[:4].hex():
        raise ValueError(f"not a cursor of this server: {cursor[:40]!r}")
    return n


def make_block(n: int, *, txs: int = 0, pad: int = 0, pad_random: bool = True) -> eth.Block:
    """Block `n`: a header, and `txs` transactions each with a call and two logs (6 make a
    benchmark-sized block: 6 transactions, 6 calls, 12 logs). `pad` bytes of extra data
    (random, or zeros that compress well) make it as large as a test needs."""
    rng = random.Random(n)
    block = eth.Block(number=n, hash=block_hash(n), ver=3, size=0)
    header = block.header
    header.number = n
    header.hash = block.hash
    header.parent_hash = block_hash(n - 1) if n > 0 else bytes(32)
    header.coinbase = rng.randbytes(20)
    header.state_root = rng.randbytes(32)
    header.gas_limit = 30_000_000
    header.timestamp.seconds = 1_700_000_000 + 12 * n
    header.base_fee_per_gas.bytes = (10**9).to_bytes(4, "big")
    if pad:
        header.extra_data = rng.randbytes(pad) if pad_random else bytes(pad)
    ordinal = 0
    for i in range(txs):
        sender, to = rng.randbytes(20), rng.randbytes(20)
        tx = block.transaction_traces.add(
            to=to, nonce=i, gas_limit=100_000, gas_used=50_000, input=rng.randbytes(200),
            r=rng.randbytes(32), s=rng.randbytes(32), v=b"\x01", type=2, index=i,
            hash=rng.randbytes(32), status=eth.SUCCEEDED, **{"from": sender},
        )  # fmt: skip
        tx.value.bytes = (10**18).to_bytes(8, "big")
        tx.gas_price.bytes = (2 * 10**9).to_bytes(4, "big")
        tx.receipt.cumulative_gas_used = 50_000 * (i + 1)
        tx.receipt.logs_bloom = rng.randbytes(256)
        call = tx.calls.add(
            index=1, depth=0, call_type=eth.CALL, caller=sender, address=to,
            gas_limit=100_000, gas_consumed=50_000, input=tx.input, return_data=rng.randbytes(32),
        )  # fmt: skip
        for _ in range(2):
            log = eth.Log(
                address=to, topics=[rng.randbytes(32) for _ in range(3)], data=rng.randbytes(64),
                index=ordinal, blockIndex=ordinal, ordinal=ordinal,
            )  # fmt: skip
            tx.receipt.logs.append(log)
            call.logs.append(log)
            ordinal += 1
        call.storage_changes.add(
            address=to, key=rng.randbytes(32), old_value=rng.randbytes(32),
            new_value=rng.randbytes(32), ordinal=ordinal,
        )  # fmt: skip
        ordinal += 1
    return block


@dataclass
class Cut:
    """A fault for one stream call: after `after` blocks, abort with `code` (None: end the
    stream cleanly, as if it were complete)."""

    after: int = 0
    code: grpc.StatusCode | None = grpc.StatusCode.UNAVAILABLE


@dataclass(frozen=True)
class Call:
    """A call the server received: `method` is "Blocks" or "Block"."""

    method: str
    request: Any
    metadata: dict[str, str]


class StubFirehose(fh_grpc.StreamServicer, fh_grpc.FetchServicer):
    """Serves blocks 0..`head` on 127.0.0.1 (a free port); use as a context manager.

    Switches, set before or between calls: `stream_faults` (a Cut per coming stream call),
    `fetch_faults` (a status per coming Fetch call), `always_fail` (every call aborts with
    it), `type_url` (what the blocks claim to be), `compress_responses`. `token`, when
    set, must come as `authorization: bearer <token>`, else UNAUTHENTICATED. With `tls`
    (key PEM, certificate PEM) the server speaks TLS.
    """

    def __init__(
        self,
        head: int = 1000,
        *,
        token: str | None = None,
        txs: int = 0,
        pad: int = 0,
        pad_random: bool = True,
        tls: tuple[bytes, bytes] | None = None,
    ) -> None:
        self.head = head
        self.token = token
        self.stream_faults: deque[Cut] = deque()
        self.fetch_faults: deque[grpc.StatusCode] = deque()
        self.always_fail: grpc.StatusCode | None = None
        self.type_url = BLOCK_TYPE_URL
        self.compress_responses = False
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._payload = functools.lru_cache(maxsize=4096)(
            lambda n: make_block(n, txs=txs, pad=pad, pad_random=pad_random).SerializeToString()
        )
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        fh_grpc.add_StreamServicer_to_server(self, self._server)
        fh_grpc.add_FetchServicer_to_server(self, self._server)
        if tls is None:
            self.port = self._server.add_insecure_port("127.0.0.1:0")
            self.url = f"http://127.0.0.1:{self.port}"
        else:
            credentials = grpc.ssl_server_credentials([tls])
            self.port = self._server.add_secure_port("127.0.0.1:0", credentials)
            self.url = f"https://127.0.0.1:{self.port}"

    def __enter__(self) -> StubFirehose:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stopping.set()
        self._server.stop(grace=None).wait()

    def calls_of(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    # --- the services ---

    def Blocks(self, request: fh.Request, context: grpc.ServicerContext):  # noqa: N802
        fault = self._enter("Blocks", request, context, self.stream_faults)
        if self.compress_responses:
            context.set_compression(grpc.Compression.Gzip)
        step = fh.STEP_FINAL if request.final_blocks_only else fh.STEP_NEW
        start = self._start_of(request, context)
        stop = request.stop_block_num
        if stop and start > stop:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"start {start} is after stop {stop}")
        n, sent = start, 0
        while not stop or n <= stop:
            if fault is not None and sent == fault.after:
                if fault.code is None:
                    return
                context.abort(fault.code, f"injected {fault.code.name} after {sent} blocks")
            if n > self.head:  # the tip: wait for blocks that never come
                while context.is_active() and not self._stopping.wait(0.02):
                    pass
                return
            response = fh.Response(step=step, cursor=cursor_of(n))
            response.block.type_url = self.type_url
            response.block.value = self._payload(n)
            yield response
            n, sent = n + 1, sent + 1

    def Block(self, request: fh.SingleBlockRequest, context: grpc.ServicerContext):  # noqa: N802
        code = self._enter("Block", request, context, self.fetch_faults)
        if self.compress_responses:
            context.set_compression(grpc.Compression.Gzip)
        if code is not None:
            context.abort(code, f"injected {code.name}")
        if request.WhichOneof("reference") != "block_number":
            context.abort(grpc.StatusCode.UNIMPLEMENTED, "only block_number references")
        n = request.block_number.num
        if n > self.head:
            context.abort(grpc.StatusCode.NOT_FOUND, f"block {n} not found")
        response = fh.SingleBlockResponse()
        response.block.type_url = self.type_url
        response.block.value = self._payload(n)
        return response

    def _enter(self, method: str, request: Any, context: grpc.ServicerContext, faults: deque):
        """Record the call, check the token, apply `always_fail`; the call's fault, if any."""
        metadata = {m.key: m.value for m in context.invocation_metadata()}
        with self._lock:
            self.calls.append(Call(method, request, metadata))
            fault = faults.popleft() if faults else None
        if self.token is not None and metadata.get("authorization") != f"bearer {self.token}":
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "invalid bearer token")
        if self.always_fail is not None:
            context.abort(self.always_fail, f"injected {self.always_fail.name} (always)")
        return fault

    def _start_of(self, request: fh.Request, context: grpc.ServicerContext) -> int:
        if request.cursor:
            try:
                return block_of_cursor(request.cursor) + 1
            except ValueError as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        if request.start_block_num < 0:
            return max(0, self.head + request.start_block_num)
        return request.start_block_num


def self_signed_certificate() -> tuple[bytes, bytes]:
    """A key and a self-signed certificate (both PEM) for 127.0.0.1 and localhost."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    san = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return key_pem, cert.public_bytes(serialization.Encoding.PEM)


class ByteCountingRelay:
    """A TCP relay in front of `port` on 127.0.0.1 that counts the bytes each way, so a test
    can see whether the traffic was compressed. Use as a context manager."""

    def __init__(self, port: int) -> None:
        self._upstream = port
        self.sent = 0  # client to server
        self.received = 0  # server to client
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def __enter__(self) -> ByteCountingRelay:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self._thread.join(timeout=5)
        self._listener.close()
        with self._lock:
            for s in self._sockets:
                s.close()

    def _accept(self) -> None:
        self._listener.settimeout(0.05)  # wake up now and then to see whether to stop
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            client.settimeout(None)
            server = socket.create_connection(("127.0.0.1", self._upstream))
            with self._lock:
                self._sockets += [client, server]
            for src, dst, up in ((client, server, True), (server, client, False)):
                threading.Thread(target=self._pump, args=(src, dst, up), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:
                    if up:
                        self.sent += len(data)
                    else:
                        self.received += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
