"""The process-wide SIGINT / SIGTERM handler, installed first thing by `ampd`.

Until a `ShutdownSignal` listens, a first signal is only recorded: imports, config loading
and start-up go on, then the service sees it and stops cleanly (exit 0). A second signal
exits at once with code 1. Imports nothing heavy, so it is in place within milliseconds.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM)  # SIGTERM last: once it is caught, both are

_received: list[signal.Signals] = []
# Called with the signal and how many this process has had so far.
_listener: Callable[[signal.Signals, int], None] | None = None


def install() -> None:
    """Handle SIGINT and SIGTERM from now on (main thread only, as `signal.signal`)."""
    for sig in SIGNALS:
        signal.signal(sig, _handle)


def installed() -> bool:
    return all(signal.getsignal(sig) is _handle for sig in SIGNALS)


def received() -> list[signal.Signals]:
    """The signals received so far, oldest first."""
    return list(_received)


def listen(callback: Callable[[signal.Signals, int], None] | None) -> None:
    """Route the following signals to `callback` (None: back to recording them)."""
    global _listener
    _listener = callback


def _handle(signum: int, frame: FrameType | None) -> None:
    deliver(signal.Signals(signum))


def deliver(sig: signal.Signals) -> None:
    """Count a signal and pass it on (also called by the event loop's own handler)."""
    _received.append(sig)
    if _listener is not None:
        _listener(sig, len(_received))
    elif len(_received) > 1:
        sys.stderr.write(f"received {sig.name} again: exiting at once\n")
        sys.stderr.flush()
        os._exit(1)
