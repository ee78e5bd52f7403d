"""Graceful shutdown on SIGINT / SIGTERM; a second signal exits at once."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from ampd.logs import get_logger
from ampd.runtime import process_signals

log = get_logger("runtime")

T = TypeVar("T")


class Interrupted(Exception):
    """A signal arrived before a start-up step finished; the step was cancelled."""


class ShutdownSignal:
    """An event set by the first SIGINT or SIGTERM, including one received before
    `install()` (while the process was still importing or loading its config).

    The second signal calls `on_second` (to stop child processes at once) and exits the
    process with code 1 immediately: whatever was not committed is not committed, and the
    commit fence keeps the output correct.
    """

    def __init__(self, on_second: Callable[[], None] | None = None) -> None:
        self.event = asyncio.Event()
        self._on_second = on_second

    def install(self) -> None:
        """Take over the signals; a signal already recorded sets the event at once.

        The loop's own handlers wake it even when a signal lands on another thread; they
        count into `process_signals`, so a signal before and one after make two."""
        loop = asyncio.get_running_loop()
        # A signal landing while the handlers change hands could reach both the process's
        # handler and the loop's (its wakeup byte read once the loop's handler is there),
        # and count twice: exit 1 for one signal. Held until the loop's handlers are in.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, process_signals.SIGNALS)
        try:
            for sig in process_signals.SIGNALS:
                loop.add_signal_handler(sig, process_signals.deliver, sig)
            process_signals.listen(self._received)
            pending = process_signals.received()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        if pending:
            log.info(
                "received %s during start-up: shutting down gracefully (send it again to exit "
                "at once)",
                pending[0].name,
            )
            self.event.set()

    def _received(self, sig: signal.Signals, count: int) -> None:
        if count == 1:
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

    def check(self) -> None:
        """Raise Interrupted if a signal has come (before starting what cannot be cancelled)."""
        if self.event.is_set():
            raise Interrupted

    async def guard(self, step: Awaitable[T]) -> T:
        """Run a start-up step unless a signal comes first: then cancel it and raise
        Interrupted (after the step has finished cancelling)."""
        task = asyncio.ensure_future(step)
        if self.event.is_set():
            task.cancel()
        else:
            stop = asyncio.ensure_future(self.event.wait())
            try:
                await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
            except BaseException:
                task.cancel()
                raise
            finally:
                stop.cancel()
            if task.done():
                return task.result()
            task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception:  # noqa: BLE001 - the signal is the news; the step's failure is not
            log.debug("start-up step failed while being cancelled", exc_info=True)
        raise Interrupted
