"""What can go wrong talking to an EVM JSON-RPC provider, with the context to act on it.

Every error names the provider and its URL as written in the provider file (so a secret
that came from `${VAR}` stays a placeholder); the auth token never appears.
"""

from __future__ import annotations

from ampd.extract.chunk import SourceError


class RpcError(SourceError):
    """A request to a provider failed."""

    def __init__(self, provider: str, url: str, detail: str, method: str | None = None) -> None:
        self.provider = provider
        self.url = url
        self.method = method
        self.detail = detail
        where = f"provider '{provider}' ({url})"
        super().__init__(f"{where}: {method}: {detail}" if method else f"{where}: {detail}")


class ProviderRejectedError(RpcError):
    """The provider refused the request (HTTP 401/403/404 or another 4xx): not retried.

    Usually a wrong URL or a missing or wrong `auth_token` / `auth_header`.
    """

    def __init__(
        self, provider: str, url: str, detail: str, status: int, method: str | None = None
    ) -> None:
        self.status = status
        super().__init__(provider, url, detail, method)


class RetriesExhaustedError(RpcError):
    """A transient fault persisted through every allowed attempt (`max_attempts`)."""

    def __init__(
        self, provider: str, url: str, detail: str, attempts: int, method: str | None = None
    ) -> None:
        self.attempts = attempts
        super().__init__(provider, url, f"gave up after {attempts} attempts: {detail}", method)


class BlockNotFoundError(RpcError):
    """A block above the provider's head was asked for: it does not exist (yet)."""

    def __init__(self, provider: str, url: str, number: int, head: int) -> None:
        self.number = number
        self.head = head
        detail = f"block {number} not found: the provider's head is block {head}"
        super().__init__(provider, url, detail, "eth_getBlockByNumber")


class TransportFailure(Exception):
    """Raised by a transport: the request got no usable answer.

    `status` is the HTTP status (or the WebSocket handshake's) when there was one;
    `retryable` is False only for answers that retrying cannot change (4xx but 408/429).
    """

    def __init__(self, reason: str, *, status: int | None = None, retryable: bool = True) -> None:
        self.reason = reason
        self.status = status
        self.retryable = retryable
        super().__init__(reason)


def status_failure(status: int, phrase: str, body: bytes) -> TransportFailure:
    """Classify an HTTP status other than 200: 408, 429 and 5xx are transient; 3xx and other
    4xx are not (a moved or refused endpoint is a configuration problem)."""
    snippet = body[:200].decode(errors="replace").strip()
    reason = f"HTTP {status} {phrase}".rstrip() + (f": {snippet}" if snippet else "")
    retryable = status in (408, 429) or status >= 500 or status < 300
    if status in (401, 403):
        reason += " (check auth_token and auth_header)"
    return TransportFailure(reason, status=status, retryable=retryable)
