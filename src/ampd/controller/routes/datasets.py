"""Datasets and manifests: register, list, inspect, deploy, delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from ampd.controller.admin_api import ApiError, context, read_json
from ampd.controller.deploy import DeployError, DeployRequest
from ampd.controller.derived import check_derived
from ampd.controller.routes.jobs import job_info
from ampd.datasets.derived import DERIVED_KIND, DerivedManifest, DerivedManifestError, parse_derived
from ampd.datasets.manifest import InvalidManifest, Manifest, ManifestValidationError
from ampd.datasets.registry import HASH, Revision, check_name

router = APIRouter(tags=["datasets"])


def _describe(manifest: Manifest | DerivedManifest) -> dict[str, Any]:
    return {
        "manifest_hash": manifest.hash,
        "kind": manifest.kind,
        "start_block": manifest.start_block,
        "finalized_blocks_only": manifest.finalized_blocks_only,
        "tables": sorted(manifest.schemas),
    }


def _manifest_error(exc: Exception) -> ApiError:
    if isinstance(exc, InvalidManifest):
        return ApiError(400, "INVALID_MANIFEST", str(exc))
    if isinstance(exc, DerivedManifestError):
        return ApiError(400, "MANIFEST_VALIDATION_ERROR", f"{exc.code}: {exc}")
    return ApiError(400, "MANIFEST_VALIDATION_ERROR", str(exc))


async def _check_if_derived(request: Request, manifest: Any) -> None:
    """A derived manifest: its shape, then its SQL against the registered dependencies
    (controller/derived.py), before anything is stored."""
    if not (isinstance(manifest, dict) and manifest.get("kind") == DERIVED_KIND):
        return
    try:
        parsed = parse_derived(manifest)
    except (ManifestValidationError, DerivedManifestError) as exc:
        raise _manifest_error(exc) from None
    await check_derived(context(request).registry, parsed)


@router.post("/datasets", status_code=201)
async def register_dataset(request: Request) -> JSONResponse:
    """Register a manifest (object or stored hash) as `namespace/name`, optionally as a version."""
    body = await read_json(request, "INVALID_PAYLOAD_FORMAT")
    if not isinstance(body, dict):
        raise ApiError(400, "INVALID_PAYLOAD_FORMAT", "the body must be a JSON object")
    for key in ("namespace", "name"):
        if not isinstance(body.get(key), str):
            raise ApiError(400, "INVALID_PAYLOAD_FORMAT", f"'{key}' must be a string")
    version = body.get("version")
    if version is not None and not isinstance(version, str):
        raise ApiError(400, "INVALID_PAYLOAD_FORMAT", "'version' must be a string")
    manifest = body.get("manifest")
    if not isinstance(manifest, dict | str):
        raise ApiError(
            400, "INVALID_PAYLOAD_FORMAT", "'manifest' must be a JSON object or a manifest hash"
        )
    check_name(body["namespace"], body["name"])
    await _check_if_derived(request, manifest)
    try:
        parsed, version = await context(request).registry.register(
            body["namespace"], body["name"], manifest, version
        )
    except (InvalidManifest, ManifestValidationError) as exc:
        raise _manifest_error(exc) from None
    except DerivedManifestError as exc:
        raise _manifest_error(exc) from None
    result: dict[str, Any] = {"namespace": body["namespace"], "name": body["name"]}
    if version is not None:
        result["version"] = version
    result.update(_describe(parsed))
    return JSONResponse(result, status_code=201)


@router.get("/datasets")
async def list_datasets(request: Request) -> dict[str, Any]:
    return {"datasets": await context(request).registry.list_datasets()}


@router.get("/datasets/{namespace}/{name}/versions")
async def list_versions(request: Request, namespace: str, name: str) -> dict[str, Any]:
    return await context(request).registry.versions(namespace, name)


async def _resolve(request: Request, namespace: str, name: str, revision: str) -> Revision:
    return await context(request).registry.resolve(namespace, name, revision)


@router.get("/datasets/{namespace}/{name}/versions/{revision}")
async def get_revision(
    request: Request, namespace: str, name: str, revision: str
) -> dict[str, Any]:
    rev = await _resolve(request, namespace, name, revision)
    return {"namespace": namespace, "name": name, "revision": revision, **_describe(rev.manifest)}


@router.get("/datasets/{namespace}/{name}/versions/{revision}/manifest")
async def get_revision_manifest(request: Request, namespace: str, name: str, revision: str) -> Any:
    return (await _resolve(request, namespace, name, revision)).manifest.raw


@router.post("/datasets/{namespace}/{name}/versions/{revision}/deploy", status_code=202)
async def deploy(request: Request, namespace: str, name: str, revision: str) -> JSONResponse:
    """Start (or find) the job that materializes this dataset revision."""
    check_name(namespace, name)
    body = await read_json(request, "INVALID_BODY")
    try:
        deploy_request = DeployRequest.parse(body)
        rev = await _resolve(request, namespace, name, revision)
        job_id = await context(request).deployer.deploy(rev, deploy_request)
    except DeployError as exc:
        raise ApiError(exc.status, exc.code, str(exc)) from None
    return JSONResponse({"job_id": job_id}, status_code=202)


@router.get("/datasets/{namespace}/{name}/versions/{revision}/jobs")
async def revision_jobs(
    request: Request, namespace: str, name: str, revision: str
) -> dict[str, Any]:
    rev = await _resolve(request, namespace, name, revision)
    ctx = context(request)
    jobs = await ctx.jobs.of_revision(namespace, name, rev.manifest_hash)
    return {"jobs": [await job_info(ctx, job) for job in jobs]}


@router.delete("/datasets/{namespace}/{name}", status_code=204)
async def delete_dataset(request: Request, namespace: str, name: str) -> Response:
    await context(request).registry.delete(namespace, name)
    return Response(status_code=204)


@router.post("/manifests", status_code=201, tags=["manifests"])
async def register_manifest(request: Request) -> JSONResponse:
    body = await read_json(request, "INVALID_PAYLOAD_FORMAT")
    if not isinstance(body, dict):
        raise ApiError(400, "INVALID_PAYLOAD_FORMAT", "the body must be a manifest JSON object")
    await _check_if_derived(request, body)
    try:
        manifest = await context(request).registry.put_manifest(body)
    except (InvalidManifest, ManifestValidationError, DerivedManifestError) as exc:
        raise _manifest_error(exc) from None
    return JSONResponse({"hash": manifest.hash}, status_code=201)


@router.get("/manifests/{manifest_hash}", tags=["manifests"])
async def get_manifest(request: Request, manifest_hash: str) -> Any:
    if not HASH.match(manifest_hash):
        raise ApiError(
            400, "INVALID_PATH", f"invalid manifest hash {manifest_hash!r}: expected 64 hex digits"
        )
    manifest = await context(request).registry.get_manifest(manifest_hash)
    if manifest is None:
        raise ApiError(404, "MANIFEST_NOT_FOUND", f"no manifest with hash {manifest_hash}")
    return manifest
