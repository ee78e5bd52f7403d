"""Workers: list and inspect."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request

from ampd.controller.admin_api import ApiError, context, rfc3339

router = APIRouter(tags=["workers"])
_NODE_ID = re.compile(r"^[a-zA-Z][a-zA-Z0-9_.-]*$")


@router.get("/workers")
async def list_workers(request: Request) -> dict[str, Any]:
    rows = await context(request).workers.list()
    return {
        "workers": [
            {
                "node_id": r["node_id"],
                "heartbeat_at": rfc3339(r["heartbeat_at"]),
                "status": "stopped"
                if r["status"] == "stopped"
                else ("stale" if r["stale"] else "active"),
                "active_segments": r["active_segments"],
                "capacity": r["capacity"],
            }
            for r in rows
        ]
    }


@router.get("/workers/{node_id}")
async def get_worker(request: Request, node_id: str) -> dict[str, Any]:
    if not _NODE_ID.match(node_id):
        raise ApiError(400, "INVALID_WORKER_ID", f"invalid worker id {node_id!r}")
    row = await context(request).workers.get(node_id)
    if row is None:
        raise ApiError(404, "WORKER_NOT_FOUND", f"worker {node_id} not found")
    return {
        "node_id": row["node_id"],
        "capacity": row["capacity"],
        "info": row["info"],
        "created_at": rfc3339(row["created_at"]),
        "registered_at": rfc3339(row["registered_at"]),
        "heartbeat_at": rfc3339(row["heartbeat_at"]),
    }
