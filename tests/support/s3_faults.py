"""An HTTP proxy in front of an S3 endpoint (moto) that breaks requests on purpose, and counts it.

    with S3FaultProxy(s3.url, [S3Fault("slow_down", request="upload_part", nth=2)]) as proxy:
        ...  # AWS_ENDPOINT=proxy.url (proxy.env(s3) gives the whole set)
        assert proxy.injected["slow_down"] == 1

    rng = random.Random(seed)  # or at random: about one request in five answered with a 500
    S3FaultProxy(s3.url, [S3Fault("http_500", probability=0.2, rng=rng)])

An aiohttp server runs in its own thread and event loop, so synchronous and asynchronous
tests can use it alike. Each request is classified by what it does in S3 (`put`,
`create_multipart`, `upload_part`, `complete_multipart`, `get`, `list`, ...), matched
against every fault, and the first listed that fires is applied; otherwise it is forwarded
upstream unchanged (Host header included, so a signature stays valid). Every fault acts
before the upstream sees the request, as a server that failed to apply it would.
"""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

FAULT_KINDS = (
    "http_500",  # 500 InternalError
    "slow_down",  # 503 with S3's SlowDown error body: throttling
    "reset",  # read the request, then abort the connection without answering
    "stall",  # read the request, answer nothing for `delay` seconds, then drop it
    "hold",  # keep the request until `release()` (or `delay` seconds), then forward it
)

REQUEST_KINDS = (
    "put",  # a whole object in one PUT
    "create_multipart",  # POST ?uploads
    "upload_part",  # PUT ?partNumber=&uploadId=
    "complete_multipart",  # POST ?uploadId=
    "abort_multipart",  # DELETE ?uploadId=
    "get",
    "head",
    "list",
    "delete",
    "other",
)

_SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message><RequestId>injected</RequestId></Error>"
)
_INTERNAL_ERROR = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError</Code>'
    b"<Message>We encountered an internal error. Please try again.</Message>"
    b"<RequestId>injected</RequestId></Error>"
)
# Hop-by-hop headers are the proxy's own business on each side.
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "upgrade"}


def request_kind(method: str, path: str, query: dict[str, str]) -> str:
    """What an S3 request does, from its method and query (path-style addressing)."""
    key = path.strip("/").partition("/")[2]
    if method == "PUT" and "partNumber" in query and "uploadId" in query:
        return "upload_part"
    if method == "POST" and "uploads" in query:
        return "create_multipart"
    if method == "POST" and "uploadId" in query:
        return "complete_multipart"
    if method == "DELETE" and "uploadId" in query:
        return "abort_multipart"
    if method == "PUT" and key:
        return "put"
    if method == "GET" and not key:
        return "list"
    kinds = {"GET": "get", "HEAD": "head", "DELETE": "delete"}
    return kinds.get(method, "other") if key else "other"


@dataclass
class S3Fault:
    """Inject `kind` into requests of `request` kind (any if None): the `nth` of them, the
    `first` K, every `every`th one, each with `probability` (drawn from `rng`, a seeded
    `random.Random` for a replayable run), or (none of these given) all of them. `delay` is
    how long a stall lasts (make it longer than the client's timeout), or a hold at most."""

    kind: str
    request: str | None = None
    nth: int | None = None
    first: int | None = None
    every: int | None = None
    probability: float | None = None
    rng: random.Random | None = field(default=None, repr=False)
    delay: float = 30.0
    matched: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {FAULT_KINDS}")
        if self.request is not None and self.request not in REQUEST_KINDS:
            raise ValueError(f"unknown request kind {self.request!r}; expected {REQUEST_KINDS}")
        if self.probability is not None and self.rng is None:
            self.rng = random.Random()

    def fires(self, request: str) -> bool:
        if self.request is not None and self.request != request:
            return False
        self.matched += 1
        if self.nth is not None:
            return self.matched == self.nth
        if self.first is not None:
            return self.matched <= self.first
        if self.every is not None:
            return self.matched % self.every == 0
        if self.probability is not None:
            assert self.rng is not None
            return self.rng.random() < self.probability
        return True


class S3FaultProxy:
    """See the module docstring. Use as a context manager, or `start()` and `stop()`."""

    def __init__(self, upstream: str, faults: Iterable[S3Fault] = ()) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = 0
        self._faults = list(faults)
        self._changed = threading.Condition()  # guards the counters; notified on each change
        self._injected: Counter[str] = Counter()
        self._requests: Counter[str] = Counter()
        self._in_flight: Counter[str] = Counter()
        self._held: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, base: dict[str, str]) -> dict[str, str]:
        """`base` (an S3Endpoint's env) with AWS_ENDPOINT pointing here."""
        return {**base, "AWS_ENDPOINT": self.url}

    # --- what happened ---

    @property
    def injected(self) -> Counter[str]:
        """How many times each fault kind was injected."""
        with self._changed:
            return Counter(self._injected)

    @property
    def requests(self) -> Counter[str]:
        """Requests received, by request kind."""
        with self._changed:
            return Counter(self._requests)

    @property
    def in_flight(self) -> Counter[str]:
        """Requests received and not yet answered (or dropped), by request kind."""
        with self._changed:
            return +self._in_flight

    def wait_for(self, predicate, timeout: float) -> bool:  # noqa: ANN001
        """Block until `predicate(proxy)` holds (checked on each request event) or `timeout`."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout)

    def set_faults(self, *faults: S3Fault) -> None:
        """Replace the faults (their counts start from zero)."""
        with self._changed:
            self._faults = list(faults)

    def release(self) -> None:
        """Let held requests through, and stop holding new ones."""
        with self._changed:
            self._faults = [f for f in self._faults if f.kind != "hold"]
        if self._loop is not None and self._held is not None:
            self._loop.call_soon_threadsafe(self._held.set)

    # --- lifecycle ---

    def start(self) -> S3FaultProxy:
        self._thread = threading.Thread(target=self._run, name="s3-fault-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(timeout=10)
        if self._error is not None:
            raise RuntimeError("S3 fault proxy failed to start") from self._error
        if not self._ready.is_set():
            raise RuntimeError("S3 fault proxy did not start within 10s")
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        self.release()
        if self._loop is not None and self._stopping is not None:
            self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(timeout=10)
        self._thread = None

    def __enter__(self) -> S3FaultProxy:
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
        self._held = asyncio.Event()
        timeout = aiohttp.ClientTimeout(total=120)
        async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as upstream:

            async def handle(request: web.Request) -> web.StreamResponse:
                return await self._handle(request, upstream)

            app = web.Application(client_max_size=1 << 30)
            app.router.add_route("*", "/{tail:.*}", handle)
            runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self._ready.set()
            await self._stopping.wait()
            await runner.cleanup()

    # --- HTTP ---

    async def _handle(
        self, request: web.Request, upstream: aiohttp.ClientSession
    ) -> web.StreamResponse:
        kind = request_kind(request.method, request.path, dict(request.query))
        with self._changed:
            self._requests[kind] += 1
            self._in_flight[kind] += 1
            # Every fault counts every request of its kind, so `nth` means the nth such request.
            fired = [f for f in self._faults if f.fires(kind)]
            fault = fired[0] if fired else None
            self._changed.notify_all()
        try:
            try:
                body = await request.read()
            except ConnectionError:  # the client went away mid-request (killed, or timed out)
                return web.Response()
            if fault is not None:
                answer = await self._inject(fault, request)
                if answer is not None:
                    return answer
            return await self._forward(request, body, upstream)
        finally:
            with self._changed:
                self._in_flight[kind] -= 1
                self._changed.notify_all()

    async def _inject(self, fault: S3Fault, request: web.Request) -> web.StreamResponse | None:
        """Apply `fault`: the answer to send, or None to forward the request after all."""
        self._count(fault.kind)
        if fault.kind == "http_500":
            return web.Response(status=500, body=_INTERNAL_ERROR, content_type="application/xml")
        if fault.kind == "slow_down":
            return web.Response(status=503, body=_SLOW_DOWN, content_type="application/xml")
        if fault.kind == "hold":
            assert self._held is not None
            try:
                await asyncio.wait_for(self._held.wait(), fault.delay)
            except TimeoutError:
                pass
            return None
        if fault.kind == "stall":
            await asyncio.sleep(fault.delay)
        assert request.transport is not None
        request.transport.abort()  # reset, or the end of a stall: no answer at all
        return web.Response()  # never sent: the connection is gone

    def _count(self, kind: str) -> None:
        with self._changed:
            self._injected[kind] += 1
            self._changed.notify_all()

    async def _forward(
        self, request: web.Request, body: bytes, upstream: aiohttp.ClientSession
    ) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        async with upstream.request(
            request.method,
            self.upstream + request.rel_url.raw_path_qs,
            headers=headers,
            data=body if body or request.method in ("PUT", "POST") else None,
            allow_redirects=False,
            skip_auto_headers=("User-Agent", "Content-Type", "Accept-Encoding"),
        ) as answer:
            content = await answer.read()
            out = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP_BY_HOP}
            response = web.Response(status=answer.status, body=content, headers=out)
            if request.method == "HEAD":  # the object's length, not the (empty) body's
                response.headers["Content-Length"] = answer.headers.get("Content-Length", "0")
            return response
