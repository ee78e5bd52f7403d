"""Logging: one line per event, with the component and (for workers) the node id.

`AMP_LOG` sets the level: error | warn | info (default) | debug | trace.
"""

from __future__ import annotations

import contextvars
import logging
import os
import sys
import time
import traceback

TRACE = 5
logging.addLevelName(TRACE, "TRACE")
logging.addLevelName(logging.WARNING, "WARN")

_LEVELS = {
    "error": logging.ERROR,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
    "trace": TRACE,
}

# The node id of the worker whose task logs the line; set per asyncio task.
node_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("node_id", default=None)


class _LineFormatter(logging.Formatter):
    """`2026-11-30T12:00:00.123Z INFO  worker node_id=w1: message` on one line."""

    def formatException(self, ei) -> str:  # noqa: ANN001, N802 - logging's name
        # With an explicit limit: the query server sets sys.tracebacklimit to 0 (flight.py).
        return "".join(traceback.format_exception(*ei, limit=1000)).rstrip("\n")

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        millis = int(record.msecs)
        component = record.name.removeprefix("ampd.")
        node = node_id_var.get()
        where = f"{component} node_id={node}" if node else component
        message = record.getMessage()
        if record.exc_info:
            exc = record.exc_info[1]
            message = f"{message}: {type(exc).__name__}: {exc}"
            if record.levelno <= logging.DEBUG or logging.getLogger("ampd").isEnabledFor(
                logging.DEBUG
            ):
                message += " | " + self.formatException(record.exc_info).replace("\n", " | ")
        message = message.replace("\n", " | ")
        return f"{stamp}.{millis:03d}Z {record.levelname:<5} {where}: {message}"


def parse_level(value: str | None) -> int:
    """Map an `AMP_LOG` value to a logging level; raises ValueError naming the bad value."""
    if not value:
        return logging.INFO
    level = _LEVELS.get(value.strip().lower())
    if level is None:
        raise ValueError(
            f"invalid AMP_LOG={value!r}: expected one of error, warn, info, debug, trace"
        )
    return level


def setup_logging(level: str | None = None) -> None:
    """Send ampd's log lines to stderr at the level from `level` or `AMP_LOG`."""
    resolved = parse_level(level if level is not None else os.environ.get("AMP_LOG"))
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LineFormatter())
    root = logging.getLogger("ampd")
    root.handlers[:] = [handler]
    root.setLevel(resolved)
    root.propagate = False
    # Libraries speak only when something is wrong.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "httpx", "httpcore", "psycopg"):
        logging.getLogger(name).setLevel(max(resolved, logging.WARNING))
        logging.getLogger(name).handlers[:] = [handler]
        logging.getLogger(name).propagate = False
    # The pool warns on every reconnect attempt; MetadataDb logs an outage once instead.
    pool_level = resolved if resolved <= logging.DEBUG else logging.ERROR
    logging.getLogger("psycopg.pool").setLevel(pool_level)


def get_logger(component: str) -> logging.Logger:
    """The logger of one component (`controller`, `worker`, `metadb`, ...)."""
    return logging.getLogger(f"ampd.{component}")
