"""Providers: TOML files in `providers_dir` (a folder or an object-store URL), over HTTP."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from ampd.controller.admin_api import ApiError, context, read_json
from ampd.providers.config import (
    ProviderConfigError,
    UnknownProviderKind,
    load_provider,
    load_providers,
    parse_provider,
)

router = APIRouter(tags=["providers"])
_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise ApiError(
            400,
            "INVALID_PROVIDER_NAME",
            f"invalid provider name {name!r}: expected [a-z_][a-z0-9_]*",
        )


@router.post("/providers", status_code=201)
async def create_provider(request: Request) -> JSONResponse:
    """Create or replace `<providers_dir>/<name>.toml`."""
    body = await read_json(request, "INVALID_REQUEST_BODY")
    if not isinstance(body, dict) or not isinstance(body.get("name"), str):
        raise ApiError(
            400, "INVALID_REQUEST_BODY", "the body must be an object with a string 'name'"
        )
    name = body["name"]
    fields = {key: value for key, value in body.items() if key != "name"}
    try:
        provider = parse_provider(name, fields)
    except ProviderConfigError as exc:
        raise ApiError(400, "INVALID_REQUEST_BODY", str(exc)) from None
    folder = context(request).providers_dir
    # Replaced whole: readers see the old file or the new one, never half of one.
    await asyncio.to_thread(folder.write, f"{name}.toml", provider.to_toml().encode())
    return JSONResponse(provider.to_public_dict(), status_code=201)


@router.get("/providers")
async def list_providers(request: Request) -> dict[str, Any]:
    try:
        providers = await asyncio.to_thread(load_providers, context(request).providers_dir)
    except ProviderConfigError as exc:
        raise ApiError(500, "PROVIDER_CONFIG_ERROR", str(exc)) from None
    return {"providers": [p.to_public_dict() for p in providers]}


@router.get("/providers/{name}")
async def get_provider(request: Request, name: str) -> dict[str, Any]:
    _check_name(name)
    folder = context(request).providers_dir
    try:
        provider = await asyncio.to_thread(load_provider, folder, f"{name}.toml")
        return provider.to_public_dict()
    except FileNotFoundError:
        raise ApiError(404, "PROVIDER_NOT_FOUND", f"provider {name} not found") from None
    except UnknownProviderKind as exc:  # another program's file: not a provider of ampd's
        raise ApiError(404, "PROVIDER_NOT_FOUND", str(exc)) from None
    except ProviderConfigError as exc:
        raise ApiError(500, "PROVIDER_CONFIG_ERROR", str(exc)) from None


@router.delete("/providers/{name}", status_code=204)
async def delete_provider(request: Request, name: str) -> Response:
    _check_name(name)
    await asyncio.to_thread(context(request).providers_dir.delete, f"{name}.toml")
    return Response(status_code=204)
