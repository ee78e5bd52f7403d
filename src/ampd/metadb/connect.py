"""Connecting at start-up: wait out a metadata database that is not up yet.

Transient failures (nothing listening yet, the socket not there, the server starting up or
shutting down, a name that does not resolve yet) are retried with capped exponential
backoff for up to `metadata_db.connect_timeout_secs`; anything else (a wrong database, role
or password, a malformed URL) fails at once, since waiting cannot fix it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit

import psycopg

from ampd.logs import get_logger

log = get_logger("metadb")

T = TypeVar("T")

INITIAL_DELAY_SECS = 0.1
MAX_DELAY_SECS = 2.0
_ATTEMPT_TIMEOUT_SECS = 10  # one connection attempt at most (a host that drops packets)
_REPEAT_LOG_SECS = 10.0  # the same error is logged again at most this often
TIMEOUT_KEY = "metadata_db.connect_timeout_secs"

# libpq and the server report connection failures as text only (no SQLSTATE reaches the
# client before a session exists), so transient failures are recognized by their message.
_TRANSIENT_MESSAGES = (
    "connection refused",
    "no such file or directory",  # the Unix socket is not there yet
    "the database system is starting up",  # 57P03
    "the database system is not yet accepting connections",  # 57P03
    "the database system is not accepting connections",  # 57P03
    "the database system is shutting down",  # 57P03
    "the database system is in recovery mode",  # 57P03
    "terminating connection due to administrator command",  # 57P01
    "server closed the connection unexpectedly",
    "terminating connection due to immediate shutdown",  # 57P01, a restart mid-session
    "terminating connection because of crash of another server process",
    "connection is bad",
    "connection is closed",
    "the connection is lost",
    "timeout expired",
    "connection timed out",
    "failed to resolve host",  # compose / k8s: the name resolves once the database runs
    "could not translate host name",
    "network is unreachable",
    "no route to host",
)


class DatabaseUnavailable(Exception):
    """The metadata database did not accept connections within the start-up bound."""


def redact_url(url: str) -> str:
    """The URL without its password (in the user part or as a `password=` parameter)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(unparsable URL)"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        netloc = f"{userinfo.split(':', 1)[0]}@{host}"
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "password"]
    shown = f"{parts.scheme}://{netloc}{parts.path}"  # urlunsplit would drop an empty host's //
    return f"{shown}?{urlencode(query, safe='/')}" if query else shown


def is_transient(exc: BaseException) -> bool:
    """Whether a failed connection attempt may succeed if tried again shortly."""
    if not isinstance(exc, psycopg.OperationalError | OSError):
        return False
    text = str(exc).lower()
    return any(message in text for message in _TRANSIENT_MESSAGES)


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


async def connect(url: str, *, timeout: float, **kwargs: Any) -> psycopg.AsyncConnection[Any]:
    """Connect to `url`, retrying transient failures for up to `timeout` seconds.

    Raises DatabaseUnavailable (naming the URL without password and the bound) once the
    bound has passed, or the psycopg error of a failure that is not transient, at once.
    """
    began = time.monotonic()
    deadline = began + timeout
    delay = INITIAL_DELAY_SECS
    attempt = 0
    last_logged: tuple[str, float] | None = None
    while True:
        attempt += 1
        remaining = deadline - time.monotonic()
        # Within the bound when there is one (libpq's minimum is 2 s); a lone attempt gets 10.
        per_attempt = (
            max(2, min(_ATTEMPT_TIMEOUT_SECS, math.ceil(remaining)))
            if timeout
            else _ATTEMPT_TIMEOUT_SECS
        )
        try:
            conn = await psycopg.AsyncConnection.connect(url, connect_timeout=per_attempt, **kwargs)
        except (psycopg.OperationalError, OSError) as exc:
            if not is_transient(exc):
                raise
            error = first_line(exc)
            now = time.monotonic()
            if now >= deadline:
                raise DatabaseUnavailable(
                    f"metadata database {redact_url(url)} did not accept connections within "
                    f"{timeout:g}s ({TIMEOUT_KEY}): {error}"
                ) from None
            if (
                last_logged is None
                or last_logged[0] != error
                or now - last_logged[1] >= _REPEAT_LOG_SECS
            ):
                log.warning(
                    "waiting for the metadata database %s (attempt %d, up to %gs, %s): %s",
                    redact_url(url),
                    attempt,
                    timeout,
                    TIMEOUT_KEY,
                    error,
                )
                last_logged = (error, now)
            await asyncio.sleep(min(delay, deadline - now))  # the last attempt is at the bound
            delay = min(delay * 2, MAX_DELAY_SECS)
            continue
        if attempt > 1:
            log.info(
                "metadata database %s is up (waited %.1fs)",
                redact_url(url),
                time.monotonic() - began,
            )
        return conn


async def wait_for_database(url: str, timeout: float) -> None:
    """Return once the database at `url` accepts a connection; raises as `connect` does."""
    conn = await connect(url, timeout=timeout)
    await conn.close()


async def retry_start(step: Callable[[], Awaitable[T]], *, timeout: float, what: str) -> T:
    """Run a start-up step, and run it again if the database goes away under it (a restart
    while the service starts), until `timeout` s after the first try; then, or for a failure
    that waiting cannot fix, the error propagates. The step must be safe to run again."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await step()
        except psycopg.OperationalError as exc:
            if not is_transient(exc) or time.monotonic() >= deadline:
                raise
            log.warning(
                "%s: lost the metadata database (%s); starting that step again",
                what,
                first_line(exc),
            )
            await asyncio.sleep(INITIAL_DELAY_SECS)
