"""Files: one committed Parquet file by id."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from ampd.controller.admin_api import ApiError, context

router = APIRouter(tags=["files"])


@router.get("/files/{file_id}")
async def get_file(request: Request, file_id: str) -> dict[str, Any]:
    if not file_id.isdigit() or not 0 < int(file_id) < 2**63:
        raise ApiError(
            400, "INVALID_FILE_ID", f"invalid file id {file_id!r}: expected a positive integer"
        )
    ctx = context(request)
    row = await ctx.db.fetch_one("get_file", {"id": int(file_id)})
    if row is None:
        raise ApiError(404, "FILE_NOT_FOUND", f"file {file_id} not found")
    base = ctx.data_dir.rstrip("/")
    url = f"{base}/{row['path']}" if "://" in base else f"file://{base}/{row['path']}"
    return {
        "id": row["id"],
        "location_id": row["table_revision_id"],
        "file_name": row["file_name"],
        "url": url,
        "object_size": row["object_size"],
        "metadata": row["metadata"],
    }
