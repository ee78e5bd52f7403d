"""Serve an ASGI app with uvicorn on a socket we bind ourselves.

Binding first lets a port of 0 pick a free port and lets us log the real address; uvicorn's
own signal handling is disabled because the process's `ShutdownSignal` owns the signals.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

from ampd.config import split_addr
from ampd.logs import get_logger

log = get_logger("runtime")


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class HttpService:
    """One HTTP listener (Admin API, JSON Lines) running as an asyncio task."""

    def __init__(self, name: str, app: Any, addr: str) -> None:
        self.name = name
        self._app = app
        self._addr = addr
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.bound: tuple[str, int] | None = None

    async def start(self) -> tuple[str, int]:
        """Bind and start serving; returns the bound (host, port). Raises OSError if busy."""
        host, port = split_addr(self._addr)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            sock.close()
            raise OSError(f"{self.name} cannot listen on {self._addr}: {exc.strerror}") from exc
        sock.listen(1024)
        sock.setblocking(False)
        self.bound = sock.getsockname()[:2]
        config = uvicorn.Config(self._app, log_config=None, access_log=False, lifespan="off")
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name=self.name)
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        log.info("%s listening on http://%s:%d", self.name, *self.bound)
        return self.bound

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        log.info("%s stopped", self.name)
