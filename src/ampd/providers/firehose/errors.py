"""What can go wrong talking to a Firehose endpoint, and which gRPC statuses are worth a retry.

Every error names the endpoint by its URL as it should be shown (placeholders kept,
credentials removed); the bearer token never appears.
"""

from __future__ import annotations

import grpc

# Statuses a later attempt may not see: the server or the network was briefly unwell.
# CANCELLED is here because a call this client cancels itself never raises it: one
# that arrives was cancelled by the server or a proxy (a restart, a drained node).
RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.CANCELLED,
    }
)

AUTH_STATUSES = frozenset({grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED})


class FirehoseError(Exception):
    """A request to a Firehose endpoint failed. `code` is the last gRPC status, when any."""

    def __init__(self, url: str, detail: str, code: grpc.StatusCode | None = None) -> None:
        self.url = url
        self.detail = detail
        self.code = code
        super().__init__(f"firehose endpoint {url}: {detail}")


class FirehoseRejectedError(FirehoseError):
    """The server refused the request with a status retrying cannot change (INVALID_ARGUMENT,
    NOT_FOUND, UNIMPLEMENTED, FAILED_PRECONDITION, ...): raised at once, never retried."""


class FirehoseAuthError(FirehoseRejectedError):
    """The server refused the credentials (UNAUTHENTICATED or PERMISSION_DENIED): a missing
    or wrong `token`."""


class FirehoseRetriesExhaustedError(FirehoseError):
    """A transient fault persisted through every allowed attempt (`max_attempts`)."""

    def __init__(self, url: str, detail: str, attempts: int, code: grpc.StatusCode | None) -> None:
        self.attempts = attempts
        super().__init__(url, f"gave up after {attempts} attempts: {detail}", code)


class FirehoseDecodeError(FirehoseError):
    """The server answered with something that is not an Ethereum block (a wrong payload
    type, a missing block, bytes that do not parse): not retried."""


def is_retryable(code: grpc.StatusCode, details: str) -> bool:
    """Whether a call that ended with `code` may succeed when made again.

    RESOURCE_EXHAUSTED usually means the server is rate limiting, which passes; but gRPC
    also uses it for a message over the size limit, which no retry can fix.
    """
    if code is grpc.StatusCode.RESOURCE_EXHAUSTED and "larger than max" in details:
        return False
    return code in RETRYABLE


def describe_status(code: grpc.StatusCode, details: str | None) -> str:
    """`UNAVAILABLE: connection refused`: the status as it reads in an error or a log line."""
    details = (details or "").strip()
    return f"{code.name}: {details}" if details else code.name


def rejected(url: str, code: grpc.StatusCode, details: str | None) -> FirehoseRejectedError:
    """The error for a status that is not retried, with a hint for the usual cause."""
    status = describe_status(code, details)
    if code in AUTH_STATUSES:
        return FirehoseAuthError(
            url, f"the server refused the credentials ({status}); check the provider's token", code
        )
    if code is grpc.StatusCode.UNIMPLEMENTED:
        status += " (is this a Firehose endpoint?)"
    return FirehoseRejectedError(url, f"the server refused the request ({status})", code)
