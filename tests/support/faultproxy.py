"""An HTTP JSON-RPC proxy in front of anvil that breaks requests on purpose, and counts it.

    with FaultProxy(anvil.url, [Fault("http_503", first=2)]) as proxy:
        ...  # point a provider at proxy.url
        assert proxy.injected["http_503"] == 2

    rng = random.Random(seed)  # or at random: about one request in ten answered with a 500
    FaultProxy(anvil.url, [Fault("http_500", probability=0.1, rng=rng)])

    proxy.hold()  # requests wait here (the node seems to hang) until
    proxy.release()

A small HTTP/1.1 server (h11 on asyncio, keep-alive) runs in its own thread and event
loop, so synchronous and asynchronous tests can use it alike. Each request is matched
against the faults in order; the first that fires is applied, otherwise the request is
forwarded to the upstream node unchanged. It also records what a test may want to check:
requests, calls per method, headers, and the most requests in flight at once.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import h11
import httpx

FAULT_KINDS = (
    "reset",  # close the connection without answering
    "delay",  # answer only after `delay` seconds (past the client's timeout)
    "http_401",  # and any other http_NNN: answer with that status
    "http_403",
    "http_404",
    "http_429",
    "http_500",
    "http_502",
    "http_503",
    "rpc_error",  # a JSON-RPC error object in place of the (first) result
    "malformed",  # a body that is not JSON
    "truncated",  # the real answer cut in half (with a matching Content-Length)
    "batch_missing_id",  # a batch answer with one member left out
    "null_block",  # `null` for the first eth_getBlockByNumber(number) in the request
    "receipts_mismatch",  # a receipt left out of eth_getBlockReceipts, or a null receipt
    "oversized_value",  # a block whose gasLimit does not fit in UInt64 (not transient: fatal)
    "object_access_lists",  # every `"accessList": []` of a batch's blocks sent as `{}`
)


@dataclass
class Fault:
    """Inject `kind` into requests carrying `method` (any if None): the `first` K of them,
    or `every` Nth one, or each one with `probability` (drawn from `rng`, a seeded
    `random.Random` for a replayable run), or (none of these given) all of them."""

    kind: str
    method: str | None = None
    first: int | None = None
    every: int | None = None
    delay: float = 2.0
    probability: float | None = None
    rng: random.Random | None = field(default=None, repr=False)
    matched: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS and not re.fullmatch(r"http_\d{3}", self.kind):
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {FAULT_KINDS}")
        if self.probability is not None:
            if not 0.0 <= self.probability <= 1.0:
                raise ValueError(f"probability must be within 0..1, not {self.probability}")
            if self.rng is None:
                self.rng = random.Random()

    def fires(self, methods: list[str]) -> bool:
        if self.method is not None and self.method not in methods:
            return False
        self.matched += 1
        if self.first is not None:
            return self.matched <= self.first
        if self.every is not None:
            return self.matched % self.every == 0
        if self.probability is not None:
            assert self.rng is not None
            return self.rng.random() < self.probability
        return True


class FaultProxy:
    """See the module docstring. Use as a context manager, or `start()` and `stop()`."""

    def __init__(
        self,
        upstream: str,
        faults: Iterable[Fault] = (),
        *,
        require_header: tuple[str, str] | None = None,
        latency: float = 0.0,
    ) -> None:
        self.upstream = upstream
        self.require_header = require_header
        self.latency = latency
        self.port = 0
        self._faults = list(faults)
        self._lock = threading.Lock()
        self._injected: Counter[str] = Counter()
        self._calls: Counter[str] = Counter()
        self._requests = 0
        self._rejected = 0
        self._in_flight = 0
        self._max_in_flight = 0
        self._headers: list[dict[str, str]] = []
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._held = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # --- what happened ---

    @property
    def injected(self) -> Counter[str]:
        """How many times each fault kind was injected."""
        with self._lock:
            return Counter(self._injected)

    @property
    def calls(self) -> Counter[str]:
        """JSON-RPC calls received, by method (each member of a batch counts)."""
        with self._lock:
            return Counter(self._calls)

    @property
    def requests(self) -> int:
        """HTTP requests received (a batch is one)."""
        with self._lock:
            return self._requests

    @property
    def rejected(self) -> int:
        """Requests refused with 401 for lacking `require_header`."""
        with self._lock:
            return self._rejected

    @property
    def max_in_flight(self) -> int:
        with self._lock:
            return self._max_in_flight

    @property
    def headers(self) -> list[dict[str, str]]:
        """Each request's headers, names lower-cased."""
        with self._lock:
            return list(self._headers)

    def set_faults(self, *faults: Fault) -> None:
        """Replace the faults (their counts start from zero)."""
        with self._lock:
            self._faults = list(faults)

    def hold(self) -> None:
        """From now on, requests wait (unanswered, not failed) until `release`."""
        self._held = True

    def release(self) -> None:
        """Let the held requests, and those after them, go on."""
        self._held = False

    def reset_stats(self) -> None:
        with self._lock:
            self._injected.clear()
            self._calls.clear()
            self._requests = self._rejected = self._max_in_flight = 0
            self._headers.clear()

    # --- lifecycle ---

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=10)
        if self._error is not None:
            raise RuntimeError("fault proxy failed to start") from self._error
        if not self._ready.is_set():
            raise RuntimeError("fault proxy did not start within 10s")
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as e:  # surfaced by start()
            self._error = e
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        handlers: set[asyncio.Task[None]] = set()
        async with httpx.AsyncClient(timeout=60) as upstream:

            async def on_connect(
                reader: asyncio.StreamReader, writer: asyncio.StreamWriter
            ) -> None:
                task = asyncio.current_task()
                assert task is not None
                handlers.add(task)
                try:
                    await self._connection(reader, writer, upstream)
                finally:
                    handlers.discard(task)

            server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            self._ready.set()
            await self._stopping.wait()
            server.close()
            for task in list(handlers):
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)
            await server.wait_closed()

    # --- HTTP ---

    async def _connection(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        upstream: httpx.AsyncClient,
    ) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            while True:
                request = await self._read_request(conn, reader)
                if request is None:
                    return
                keep_open = await self._answer(conn, writer, upstream, *request)
                if not keep_open or conn.our_state is not h11.DONE:
                    return
                try:
                    conn.start_next_cycle()
                except h11.ProtocolError:
                    return
        except (ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> tuple[h11.Request, bytes] | None:
        request: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert request is not None
                return request, bytes(body)
            elif isinstance(event, h11.ConnectionClosed):
                return None

    async def _answer(
        self,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        upstream: httpx.AsyncClient,
        request: h11.Request,
        body: bytes,
    ) -> bool:
        """Answer one request; False when the connection must be dropped."""
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        members = payload if isinstance(payload, list) else [payload]
        methods = [m.get("method", "") for m in members if isinstance(m, dict)]
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        with self._lock:
            self._requests += 1
            self._calls.update(methods)
            self._headers.append(headers)
            self._in_flight += 1
            self._max_in_flight = max(self._max_in_flight, self._in_flight)
            fault = next((f for f in self._faults if f.fires(methods)), None)
        try:
            if self.require_header is not None:
                name, value = self.require_header
                if headers.get(name.lower()) != value:
                    with self._lock:
                        self._rejected += 1
                    await self._send(conn, writer, 401, b'{"error":"unauthorized"}')
                    return True
            while self._held:
                await asyncio.sleep(0.01)
            if self.latency:
                await asyncio.sleep(self.latency)
            if fault is not None:
                answered = await self._inject(fault, conn, writer, upstream, payload, body)
                if answered is not None:
                    return answered
            status, content = await self._forward(upstream, body)
            await self._send(conn, writer, status, content)
            return True
        finally:
            with self._lock:
                self._in_flight -= 1

    async def _inject(
        self,
        fault: Fault,
        conn: h11.Connection,
        writer: asyncio.StreamWriter,
        upstream: httpx.AsyncClient,
        payload: Any,
        body: bytes,
    ) -> bool | None:
        """Apply `fault`; return whether to keep the connection, or None if it did not apply."""
        kind = fault.kind
        if kind == "reset":
            self._count(kind)
            writer.transport.abort()
            return False
        if kind == "delay":
            self._count(kind)
            await asyncio.sleep(fault.delay)
            return None  # then answer normally, if the client still listens
        if kind.startswith("http_"):
            self._count(kind)
            status = int(kind.removeprefix("http_"))
            await self._send(conn, writer, status, b'{"error":"injected"}')
            return True
        if kind == "malformed":
            self._count(kind)
            await self._send(conn, writer, 200, b'{"jsonrpc":"2.0","id":1,"result":0x12,,}')
            return True
        status, content = await self._forward(upstream, body)
        if kind == "truncated":
            self._count(kind)
            await self._send(conn, writer, status, content[: len(content) // 2])
            return True
        changed = _alter(kind, payload, json.loads(content))
        if changed is None:
            return None  # nothing to alter in this request: forward unchanged
        self._count(kind)
        await self._send(conn, writer, status, json.dumps(changed).encode())
        return True

    def _count(self, kind: str) -> None:
        with self._lock:
            self._injected[kind] += 1

    async def _forward(self, upstream: httpx.AsyncClient, body: bytes) -> tuple[int, bytes]:
        response = await upstream.post(
            self.upstream, content=body, headers={"Content-Type": "application/json"}
        )
        return response.status_code, response.content

    @staticmethod
    async def _send(
        conn: h11.Connection, writer: asyncio.StreamWriter, status: int, content: bytes
    ) -> None:
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(content)))]
        writer.write(conn.send(h11.Response(status_code=status, headers=headers)))
        writer.write(conn.send(h11.Data(data=content)))
        writer.write(conn.send(h11.EndOfMessage()))
        await writer.drain()


def _alter(kind: str, request: Any, answer: Any) -> Any | None:
    """The upstream `answer` with `kind` applied, or None when this request offers no target."""
    requests = request if isinstance(request, list) else [request]
    answers = answer if isinstance(answer, list) else [answer]
    by_id = {a.get("id"): a for a in answers if isinstance(a, dict)}
    if kind == "batch_missing_id":
        if not isinstance(answer, list) or len(answer) < 2:
            return None
        return answer[:-1]
    if kind == "object_access_lists":
        # Another JSON shape for a value that means the same to a reader of dicts (an empty
        # object is as falsy as an empty list).
        altered = False
        for a in answers:
            result = a.get("result") if isinstance(a, dict) else None
            for tx in (result or {}).get("transactions", []) if isinstance(result, dict) else []:
                if isinstance(tx, dict) and tx.get("accessList") == []:
                    tx["accessList"], altered = {}, True
        return answer if altered else None
    for call in requests:
        if not isinstance(call, dict) or call.get("id") not in by_id:
            continue
        target = by_id[call["id"]]
        method, params = call.get("method"), call.get("params") or []
        if kind == "rpc_error":
            target.pop("result", None)
            target["error"] = {"code": -32603, "message": "injected internal error"}
            return answer
        if kind == "null_block" and method == "eth_getBlockByNumber":
            if params and isinstance(params[0], str) and params[0].startswith("0x"):
                target["result"] = None
                return answer
        if kind == "oversized_value" and method == "eth_getBlockByNumber":
            if params and str(params[0]).startswith("0x") and target.get("result"):
                target["result"]["gasLimit"] = "0x" + "f" * 24
                return answer
        if kind == "receipts_mismatch":
            if method == "eth_getBlockReceipts" and target.get("result"):
                target["result"] = target["result"][:-1]
                return answer
            if method == "eth_getTransactionReceipt" and target.get("result"):
                target["result"] = None
                return answer
    return None
