"""The Admin API over HTTP for ampctl: one synchronous httpx client and its errors.

Every failure becomes an `AdminError`, which click prints as one `error: ...` line on
stderr before exiting with code 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import click
import httpx

from ampd import __version__
from ampd.cli import ampctl_output as out
from ampd.cli.ampctl_args import settings

if TYPE_CHECKING:
    from rich.console import RenderableType


class AdminError(click.ClickException):
    """A call failed; the message says what to do. Exit code 1."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True, file=file)


class ApiError(AdminError):
    """The server answered with an error: `code` and `message` are its `error_code` and `error_message`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.error_message = message


class Unreachable(AdminError):
    """No answer from the Admin API: refused, unresolvable, timed out, dropped."""


def path(*segments: str | int) -> str:
    """A URL path from raw segments, each percent-encoded."""
    return "/" + "/".join(quote(str(s), safe="") for s in segments)


class AdminClient:
    """Calls to one Admin API; returns decoded JSON (None for an empty answer)."""

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        headers = {"User-Agent": f"ampctl/{__version__}", "Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def get(self, url_path: str, params: dict[str, Any] | None = None) -> Any:
        return self._request("GET", url_path, params=params)

    def post(self, url_path: str, body: Any) -> Any:
        return self._request("POST", url_path, json=body)

    def put(self, url_path: str) -> Any:
        return self._request("PUT", url_path)

    def delete(self, url_path: str, params: dict[str, Any] | None = None) -> Any:
        return self._request("DELETE", url_path, params=params)

    def _request(self, method: str, url_path: str, **kwargs: Any) -> Any:
        """Raises ApiError for a 4xx/5xx answer and Unreachable when there is no answer."""
        if kwargs.get("params"):
            kwargs["params"] = {k: v for k, v in kwargs["params"].items() if v is not None}
        try:
            response = self._http.request(method, url_path, **kwargs)
        except httpx.TimeoutException:
            raise Unreachable(
                f"the Admin API at {self.base_url} did not answer {method} {url_path} "
                f"within {self.timeout:g}s"
            ) from None
        except httpx.TransportError as exc:
            reason = (str(exc).splitlines() or [""])[0] or type(exc).__name__
            raise Unreachable(
                f"cannot reach the Admin API at {self.base_url}: {reason} "
                "(set --admin-url or AMP_ADMIN_URL)"
            ) from None
        if response.is_error:
            raise _api_error(response)
        if response.status_code == 204 or not response.content.strip():
            return None
        try:
            return response.json()
        except ValueError:
            raise AdminError(
                f"{method} {self.base_url}{url_path}: HTTP {response.status_code} "
                f"with a body that is not JSON: {_snippet(response.text)}"
            ) from None


def _api_error(response: httpx.Response) -> ApiError:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error_code"), str):
        return ApiError(
            response.status_code, body["error_code"], str(body.get("error_message", ""))
        )
    # Not the Admin API's error shape: a proxy, or some other server on that port.
    return ApiError(
        response.status_code,
        f"HTTP_{response.status_code}",
        f"{response.request.method} {response.request.url}: {_snippet(response.text) or response.reason_phrase}",
    )


def _snippet(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "…"


def open_client(ctx: click.Context) -> AdminClient:
    """The client for this invocation's `--admin-url` and `--auth-token`.

    Raises click.UsageError (exit 2) for an admin URL that is not http(s)://HOST[:PORT].
    """
    config = settings(ctx)
    parts = urlsplit(config.admin_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise click.UsageError(
            f"invalid admin URL {config.admin_url!r}: expected http://HOST:PORT "
            "(from --admin-url or AMP_ADMIN_URL)"
        )
    return AdminClient(config.admin_url, config.auth_token)


def get_and_emit(
    ctx: click.Context,
    url: str,
    render: Callable[[Any], RenderableType],
    params: dict[str, Any] | None = None,
) -> None:
    """GET `url` from the Admin API and print the answer (JSON under `--json`)."""
    with open_client(ctx) as client:
        result = client.get(url, params) if params is not None else client.get(url)
    out.emit(ctx, result, render)
