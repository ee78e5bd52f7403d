"""A remote node for the benchmark: every HTTP request forwarded to a node after a fixed delay.

    python bench/latency_proxy.py --target URL --delay-ms MS

Listens on 127.0.0.1 on a free port, keeps connections alive and takes any number of
requests at once: each request is read whole, held for the delay (an asyncio sleep, so the
waits of concurrent requests overlap), then sent to the target over a pool of keep-alive
connections without a limit; the target's status, content type and body go back as they
came. Prints `listening on http://127.0.0.1:PORT` once it accepts connections, and on SIGTERM
or SIGINT a JSON line of what it forwarded, then exits 0.

It runs as a process of its own, so its event loop never waits for the harness's. As the
harness's `LatencyProxy` (a context manager) it is started, waited for and always stopped;
its CPU time (`cpu_seconds`) shows whether it could be the bottleneck.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from measure import process_cpu_seconds

_FORWARDED_HEADERS = ("Content-Type", "Content-Encoding")


class ProxyError(RuntimeError):
    """The proxy did not start."""


class LatencyProxy:
    """bench/latency_proxy.py as a child process in front of `target`; `url` is where to send."""

    def __init__(self, target: str, delay_ms: float, log_path: Path) -> None:
        self.target, self.delay_ms, self.log_path = target, delay_ms, log_path
        self.url = ""
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> LatencyProxy:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [sys.executable, __file__, "--target", self.target, "--delay-ms", f"{self.delay_ms:g}"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 30
        while not self.url:
            found = re.search(r"listening on (http://\S+)", self.log_path.read_text())
            if found:
                self.url = found.group(1)
            elif self._proc.poll() is not None or time.monotonic() > deadline:
                text = self.log_path.read_text(errors="replace")[-2000:]
                self.__exit__()
                raise ProxyError(f"the latency proxy did not start:\n{text}")
            else:
                time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def cpu_seconds(self) -> float:
        """The proxy's user + system CPU seconds so far."""
        assert self._proc is not None, "the proxy is not running"
        return process_cpu_seconds(self._proc.pid)


async def serve(target: str, delay: float) -> dict:
    from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

    counts = {"requests": 0, "errors": 0}
    # limit=0: no cap on connections to the target; every request in flight gets its own.
    session = ClientSession(
        connector=TCPConnector(limit=0), timeout=ClientTimeout(total=600), auto_decompress=False
    )

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        await asyncio.sleep(delay)
        counts["requests"] += 1
        headers = {"Content-Type": request.headers.get("Content-Type", "application/json")}
        try:
            async with session.request(
                request.method, target + request.path_qs, data=body, headers=headers
            ) as answer:
                payload = await answer.read()
                kept = {h: answer.headers[h] for h in _FORWARDED_HEADERS if h in answer.headers}
                return web.Response(body=payload, status=answer.status, headers=kept)
        except OSError as exc:  # the node went away: a 502, as a real proxy would answer
            counts["errors"] += 1
            return web.Response(status=502, text=f"latency proxy: {exc}")

    app = web.Application(client_max_size=1 << 30)
    app.router.add_route("*", "/{tail:.*}", forward)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(f"listening on http://127.0.0.1:{port} (delay {delay * 1000:g} ms)", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()
    await session.close()
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="the node's URL")
    parser.add_argument("--delay-ms", type=float, required=True, help="added to every request")
    args = parser.parse_args()
    if args.delay_ms < 0:
        parser.error("--delay-ms must be >= 0")
    counts = asyncio.run(serve(args.target.rstrip("/"), args.delay_ms / 1000))
    usage = os.times()
    print(json.dumps({**counts, "cpu_seconds": round(usage.user + usage.system, 2)}), flush=True)


if __name__ == "__main__":
    main()
