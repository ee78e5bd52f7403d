"""The Admin API (HTTP, default port 1610), as a FastAPI application.

Errors are JSON `{"error_code", "error_message"}` with a 4xx/5xx status; bad input never
gives a 500. Path and query parameters are taken as strings and checked here, so a bad
value gets the API's own error code instead of a framework-generated one.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ampd import __version__
from ampd.controller.deploy import Deployer
from ampd.datasets.registry import DatasetRegistry, RegistryError
from ampd.logs import get_logger
from ampd.metadb.db import MetadataDb
from ampd.metadb.jobs import JobStore
from ampd.metadb.workers import WorkerStore
from ampd.storage.folder import Folder

log = get_logger("admin")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class AdminContext:
    """What the endpoints work with; one per controller process."""

    db: MetadataDb
    registry: DatasetRegistry
    jobs: JobStore
    workers: WorkerStore
    deployer: Deployer
    providers_dir: Folder  # storage/folder.py: a local folder or an object-store URL
    data_dir: str
    token: str | None = None


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error_code": code, "error_message": message}, status_code=status)


def rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat()


async def read_json(request: Request, code: str, *, required: bool = True) -> Any:
    """The request body as JSON; raises ApiError(400, code) if missing or malformed."""
    raw = await request.body()
    if not raw.strip():
        if required:
            raise ApiError(400, code, "a JSON request body is required")
        return None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, code, f"the request body is not valid JSON: {exc}") from None


def context(request: Request) -> AdminContext:
    return request.app.state.ctx


def create_app(ctx: AdminContext | None = None) -> FastAPI:
    """The Admin API application; without a context only /healthz and /openapi.json work."""
    from ampd.controller.routes import datasets, files, jobs, providers, schema, workers

    app = FastAPI(title="ampd Admin API", version=__version__, docs_url=None, redoc_url=None)
    app.state.ctx = ctx

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.middleware("http")
    async def authenticate(request: Request, call_next):  # noqa: ANN001, ANN202
        token = ctx.token if ctx is not None else None
        if token and request.url.path != "/healthz":
            given = request.headers.get("authorization", "")
            expected = f"Bearer {token}"
            if not hmac.compare_digest(given.encode(), expected.encode()):
                return error_response(401, "UNAUTHORIZED", "missing or invalid bearer token")
        return await call_next(request)

    @app.exception_handler(ApiError)
    async def on_api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.code, str(exc))

    @app.exception_handler(RegistryError)
    async def on_registry_error(_: Request, exc: RegistryError) -> JSONResponse:
        status = {"DATASET_NOT_FOUND": 404, "MANIFEST_NOT_FOUND": 404}.get(exc.code, 400)
        return error_response(status, exc.code, str(exc))

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, "INVALID_REQUEST", str(exc.errors()[:3]))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}
        return error_response(
            exc.status_code, codes.get(exc.status_code, "HTTP_ERROR"), str(exc.detail)
        )

    @app.exception_handler(Exception)
    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return error_response(500, "INTERNAL_ERROR", f"{type(exc).__name__}: {exc}")

    if ctx is not None:
        for module in (datasets, jobs, workers, providers, files, schema):
            app.include_router(module.router)
    return app
