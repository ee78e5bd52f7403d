"""A small batching JSON-RPC client over HTTP: many calls in one POST, on a kept-alive socket.

The test support's own client (it shares nothing with ampd's), used to read a node fast
enough to build thousands of Firehose blocks: `BatchRpc(url).batch(calls)` returns each
call's answer object in order, `results(calls)` the results, raising `RpcError`.
"""

from __future__ import annotations

import http.client
from typing import Any
from urllib.parse import urlsplit

import orjson


class RpcError(RuntimeError):
    """A JSON-RPC call answered with an error object."""

    def __init__(self, method: str, error: dict[str, Any]) -> None:
        super().__init__(f"{method}: {error}")
        self.method = method
        self.error = error


class BatchRpc:
    """A small JSON-RPC client sending many calls in one HTTP POST, on a kept-alive socket."""

    def __init__(self, url: str, timeout: float = 120.0) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"expected an http:// URL, got {url!r}")
        self.host, self.port = parts.hostname, parts.port or 80
        self.path = parts.path or "/"
        self.timeout = timeout
        self._conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def batch(self, calls: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
        """Send `calls` as one batch; return each call's answer (`result` or `error`), in order."""
        if not calls:
            return []
        body = orjson.dumps(
            [
                {"jsonrpc": "2.0", "id": i, "method": m, "params": p}
                for i, (m, p) in enumerate(calls)
            ]
        )
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
            try:
                self._conn.request("POST", self.path, body, {"Content-Type": "application/json"})
                response = self._conn.getresponse()
                data = response.read()
                break
            except (ConnectionError, http.client.HTTPException):
                self.close()  # a kept-alive socket the node closed: try once on a new one
                if attempt == 2:
                    raise
        answers = orjson.loads(data)
        if isinstance(answers, dict):  # the batch itself was refused
            raise RpcError("batch", answers.get("error", answers))
        by_id = {a["id"]: a for a in answers}
        return [by_id[i] for i in range(len(calls))]

    def results(self, calls: list[tuple[str, list[Any]]]) -> list[Any]:
        """Like `batch`, raising RpcError on the first error."""
        out = []
        for (method, _), answer in zip(calls, self.batch(calls), strict=True):
            if "error" in answer:
                raise RpcError(method, answer["error"])
            out.append(answer["result"])
        return out
