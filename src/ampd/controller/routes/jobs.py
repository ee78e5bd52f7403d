"""Jobs: list, inspect, stop, delete, progress, events, segments."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from ampd.controller.admin_api import AdminContext, ApiError, context, rfc3339
from ampd.metadb.jobs import ACTIVE, ALL_STATUSES, TERMINAL, Job

router = APIRouter(tags=["jobs"])

_MAX_ID = 2**63 - 1
_PRUNE = {
    "terminal": TERMINAL,
    "completed": ("COMPLETED",),
    "stopped": ("STOPPED",),
    "error": ("ERROR", "FATAL"),
}


def parse_job_id(raw: str) -> int:
    if not raw.isdigit() or not 0 < int(raw) <= _MAX_ID:
        raise ApiError(
            400, "INVALID_JOB_ID", f"invalid job id {raw!r}: expected a positive integer"
        )
    return int(raw)


async def _job_or_404(ctx: AdminContext, raw_id: str) -> Job:
    job = await ctx.jobs.get(parse_job_id(raw_id))
    if job is None:
        raise ApiError(404, "JOB_NOT_FOUND", f"job {raw_id} not found")
    return job


async def job_info(ctx: AdminContext, job: Job) -> dict[str, Any]:
    """JobInfo; `node_id` is the owner of the lowest unfinished segment."""
    segments = await ctx.jobs.segments(job.id)
    owner = next(
        (s.node_id for s in segments if s.node_id and s.status in ("ASSIGNED", "RUNNING")), None
    )
    return {
        "id": job.id,
        "created_at": rfc3339(job.created_at),
        "updated_at": rfc3339(job.updated_at),
        "node_id": owner,
        "status": job.status,
        "descriptor": job.descriptor,
    }


@router.get("/jobs")
async def list_jobs(
    request: Request, limit: str = "50", last_job_id: str | None = None, status: str = "active"
) -> dict[str, Any]:
    if not limit.lstrip("-").isdigit():
        raise ApiError(
            400, "INVALID_QUERY_PARAMETERS", f"invalid limit {limit!r}: expected an integer"
        )
    count = int(limit)
    if count <= 0:
        raise ApiError(400, "LIMIT_INVALID", "limit must be greater than 0")
    if count > 1000:
        raise ApiError(400, "LIMIT_TOO_LARGE", f"limit {count} is larger than 1000")
    cursor = None
    if last_job_id is not None:
        if not last_job_id.isdigit() or not 0 < int(last_job_id) <= _MAX_ID:
            raise ApiError(
                400,
                "INVALID_QUERY_PARAMETERS",
                f"invalid last_job_id {last_job_id!r}: expected a positive integer",
            )
        cursor = int(last_job_id)
    statuses: tuple[str, ...] | None
    if status.lower() == "all":
        statuses = None
    elif status.lower() == "active":
        statuses = ACTIVE
    else:
        statuses = tuple(part.strip().upper() for part in status.split(",") if part.strip())
        wrong = [s for s in statuses if s not in ALL_STATUSES]
        if wrong or not statuses:
            raise ApiError(
                400,
                "INVALID_QUERY_PARAMETERS",
                f"invalid status {status!r}: expected active, all or a list of {', '.join(ALL_STATUSES)}",
            )
    ctx = context(request)
    jobs = await ctx.jobs.list(count, cursor, statuses)
    result: dict[str, Any] = {"jobs": [await job_info(ctx, job) for job in jobs]}
    if len(jobs) == count:
        result["next_cursor"] = jobs[-1].id
    return result


@router.delete("/jobs", status_code=204)
async def prune_jobs(request: Request, status: str | None = None) -> Response:
    if status is None or status.lower() not in _PRUNE:
        raise ApiError(
            400,
            "INVALID_QUERY_PARAM",
            f"status is required: one of {', '.join(_PRUNE)} (got {status!r})",
        )
    await context(request).jobs.delete_with_status(_PRUNE[status.lower()])
    return Response(status_code=204)


@router.get("/jobs/{job_id}")
async def get_job(request: Request, job_id: str) -> dict[str, Any]:
    ctx = context(request)
    return await job_info(ctx, await _job_or_404(ctx, job_id))


@router.put("/jobs/{job_id}/stop")
async def stop_job(request: Request, job_id: str) -> Response:
    ctx = context(request)
    job = await _job_or_404(ctx, job_id)
    await ctx.jobs.request_stop(job.id)
    return Response(status_code=200)


@router.delete("/jobs/{job_id}", status_code=204)
async def delete_job(request: Request, job_id: str) -> Response:
    ctx = context(request)
    if not await ctx.jobs.delete(parse_job_id(job_id)):
        raise ApiError(409, "JOB_CONFLICT", f"job {job_id} is still active: stop it first")
    return Response(status_code=204)


@router.get("/jobs/{job_id}/progress")
async def job_progress(request: Request, job_id: str) -> dict[str, Any]:
    ctx = context(request)
    job = await _job_or_404(ctx, job_id)
    tables = await ctx.jobs.progress(job.manifest_hash, job.start_block)
    result: dict[str, Any] = {"job_id": job.id, "job_status": job.status, "tables": tables}
    if job.status in ("ERROR", "FATAL") and job.detail:
        result["detail"] = job.detail
    return result


@router.get("/jobs/{job_id}/events")
async def job_events(request: Request, job_id: str) -> dict[str, Any]:
    ctx = context(request)
    job = await _job_or_404(ctx, job_id)
    events = [
        {
            "id": e["id"],
            "created_at": rfc3339(e["created_at"]),
            "node_id": e["node_id"],
            "event_type": e["event_type"],
            **({"detail": e["detail"]} if e["detail"] is not None else {}),
        }
        for e in await ctx.jobs.events(job.id)
    ]
    return {"job_id": job.id, "events": events}


@router.get("/jobs/{job_id}/segments")
async def job_segments(request: Request, job_id: str) -> dict[str, Any]:
    ctx = context(request)
    job = await _job_or_404(ctx, job_id)
    segments = [
        {
            "id": s.id,
            "start_block": s.start_block,
            "end_block": s.end_block,
            "checkpoint_block": s.checkpoint_block,
            "status": s.status,
            "node_id": s.node_id,
            "epoch": s.epoch,
            "attempts": s.attempts,
            "updated_at": rfc3339(s.updated_at),
        }
        for s in await ctx.jobs.segments(job.id)
    ]
    return {"job_id": job.id, "segments": segments}
