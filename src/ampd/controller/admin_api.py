"""The Admin API (HTTP, default port 1610), as a FastAPI application.

Endpoints are added by the controller's features; this module builds the app and the
parts every endpoint shares.
"""

from __future__ import annotations

from fastapi import FastAPI

from ampd import __version__


def create_app() -> FastAPI:
    """The Admin API application."""
    app = FastAPI(title="ampd Admin API", version=__version__)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app
