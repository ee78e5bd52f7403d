"""Graceful shutdown on SIGINT / SIGTERM; a second signal exits at once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Callable

from ampd.logs import get_logger

log = get_logger("runtime")


class ShutdownSignal:
    """An event set by the first SIGINT or SIGTERM.

    The second signal calls `on_second` (to stop child processes at once) and exits the
    process with code 1 immediately: whatever was not committed is not committed, and the
    commit fence keeps the output correct.
    """

    def __init__(self, on_second: Callable[[], None] | None = None) -> None:
        self.event = asyncio.Event()
        self._on_second = on_second
        self._count = 0

    def install(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._received, sig)

    def _received(self, sig: signal.Signals) -> None:
        self._count += 1
        if self._count == 1:
            log.info(
                "received %s: shutting down gracefully (send it again to exit at once)", sig.name
            )
            self.event.set()
            return
        log.warning("received %s again: exiting at once", sig.name)
        if self._on_second is not None:
            try:
                self._on_second()
            except Exception:  # noqa: BLE001 - exiting regardless
                log.exception("immediate shutdown hook failed")
        sys.stderr.flush()
        os._exit(1)

    async def wait(self) -> None:
        await self.event.wait()
