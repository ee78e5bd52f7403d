"""What each answer of the Admin API looks like as a table (without `--json`).

Pure functions, JSON in and a rich renderable out, so they can be tested without a server.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from ampd.cli.ampctl_output import (
    NONE,
    age,
    block_range,
    key_values,
    short_hash,
    size,
    status_text,
    table,
    timestamp,
)

# --- datasets ---


def dataset_registered(data: Mapping[str, Any]) -> RenderableType:
    name = f"{data.get('namespace')}/{data.get('name')}"
    tags = ["dev"] + ([data["version"]] if data.get("version") else [])
    return key_values(
        [
            ("Dataset", name),
            ("Tagged", tags),
            ("Manifest hash", data.get("manifest_hash")),
            ("Kind", data.get("kind")),
            ("Start block", data.get("start_block")),
            ("Finalized only", data.get("finalized_blocks_only")),
            ("Tables", data.get("tables")),
        ],
        title=f"Registered {name}",
    )


def dataset_list(data: Mapping[str, Any]) -> RenderableType:
    rows = [
        (f"{d.get('namespace')}/{d.get('name')}", d.get("latest_version"), d.get("versions"))
        for d in data.get("datasets", [])
    ]
    return table(("DATASET", "LATEST", "VERSIONS"), rows, empty="No datasets registered.")


def dataset_versions(data: Mapping[str, Any]) -> RenderableType:
    rows = [
        (
            v.get("version"),
            v.get("manifest_hash"),
            timestamp(v.get("created_at")),
            timestamp(v.get("updated_at")),
        )
        for v in data.get("versions", [])
    ]
    versions = table(
        ("VERSION", "MANIFEST HASH", "CREATED", "UPDATED"), rows, empty="No semantic versions."
    )
    tags = data.get("special_tags") or {}
    tag_rows = key_values((tag, tags.get(tag)) for tag in ("latest", "dev"))
    title = Text(f"{data.get('namespace')}/{data.get('name')}", style="bold underline")
    return Group(title, versions, Text(""), tag_rows)


def dataset_revision(data: Mapping[str, Any]) -> RenderableType:
    reference = f"{data.get('namespace')}/{data.get('name')}@{data.get('revision')}"
    return key_values(
        [
            ("Dataset", reference),
            ("Manifest hash", data.get("manifest_hash")),
            ("Kind", data.get("kind")),
            ("Start block", data.get("start_block")),
            ("Finalized only", data.get("finalized_blocks_only")),
            ("Tables", data.get("tables")),
        ]
    )


# --- jobs ---


def job_dataset(job: Mapping[str, Any]) -> str:
    d = job.get("descriptor") or {}
    return (
        f"{d.get('dataset_namespace')}/{d.get('dataset_name')}@{short_hash(d.get('manifest_hash'))}"
    )


def end_block_label(descriptor: Mapping[str, Any]) -> str:
    end = descriptor.get("end_block")
    return "continuous" if end is None else str(end)


def job_list(data: Mapping[str, Any]) -> RenderableType:
    rows = [
        (
            j.get("id"),
            status_text(j.get("status")),
            job_dataset(j),
            end_block_label(j.get("descriptor") or {}),
            j.get("node_id"),
            timestamp(j.get("created_at")),
            timestamp(j.get("updated_at")),
        )
        for j in data.get("jobs", [])
    ]
    out = table(
        ("ID", "STATUS", "DATASET", "END BLOCK", "NODE", "CREATED", "UPDATED"),
        rows,
        empty="No jobs match (the default filter is active jobs; try -s all).",
    )
    if data.get("next_cursor") is not None:
        hint = Text(f"More jobs: --after {data['next_cursor']}", style="dim")
        return Group(out, hint)
    return out


def job_detail(job: Mapping[str, Any]) -> RenderableType:
    d = job.get("descriptor") or {}
    return key_values(
        [
            ("Job", job.get("id")),
            ("Status", status_text(job.get("status"))),
            ("Dataset", f"{d.get('dataset_namespace')}/{d.get('dataset_name')}"),
            ("Manifest hash", d.get("manifest_hash")),
            ("Kind", d.get("kind")),
            ("End block", end_block_label(d)),
            ("Parallelism", d.get("max_writers")),
            ("Worker", d.get("worker_id") or "any"),
            ("Priority", d.get("priority")),
            ("Depends on", d.get("depends_on")),
            ("Node", job.get("node_id")),
            ("Created", timestamp(job.get("created_at"))),
            ("Updated", timestamp(job.get("updated_at"))),
        ]
    )


def error_detail(detail: Any) -> str:
    """`CODE: message` from a job's `detail`, or its JSON."""
    if isinstance(detail, Mapping) and detail.get("error_code"):
        return f"{detail['error_code']}: {detail.get('error_message', '')}"
    return json.dumps(detail, sort_keys=True)


def job_progress(data: Mapping[str, Any]) -> RenderableType:
    head = [("Job", data.get("job_id")), ("Status", status_text(data.get("job_status")))]
    if data.get("detail") is not None:
        head.append(("Error", Text(error_detail(data["detail"]), style="red")))
    tables = data.get("tables") or {}
    rows = [
        (
            name,
            t.get("start_block"),
            t.get("current_block"),
            t.get("files_count"),
            size(t.get("total_size_bytes")),
        )
        for name, t in sorted(tables.items())
    ]
    body = table(
        ("TABLE", "START BLOCK", "CURRENT BLOCK", "FILES", "SIZE"),
        rows,
        empty="No tables written yet.",
    )
    return Group(key_values(head), Text(""), body)


def job_events(data: Mapping[str, Any]) -> RenderableType:
    rows = [
        (
            e.get("id"),
            timestamp(e.get("created_at")),
            e.get("event_type"),
            e.get("node_id"),
            e.get("detail"),
        )
        for e in data.get("events", [])
    ]
    return table(("ID", "TIME", "EVENT", "NODE", "DETAIL"), rows, empty="No events.")


def job_segments(data: Mapping[str, Any]) -> RenderableType:
    rows = [
        (
            s.get("id"),
            block_range(s.get("start_block"), s.get("end_block")),
            s.get("checkpoint_block"),
            status_text(s.get("status")),
            s.get("node_id"),
            s.get("epoch"),
            s.get("attempts"),
            timestamp(s.get("updated_at")),
        )
        for s in data.get("segments", [])
    ]
    return table(
        ("ID", "BLOCKS", "CHECKPOINT", "STATUS", "NODE", "EPOCH", "ATTEMPTS", "UPDATED"),
        rows,
        empty="No segments (every block was already committed).",
    )


# --- workers ---


def worker_list(data: Mapping[str, Any]) -> RenderableType:
    rows = [
        (
            w.get("node_id"),
            status_text(w.get("status")),
            _load(w.get("active_segments"), w.get("capacity")),
            f"{timestamp(w.get('heartbeat_at')) or NONE}  {age(w.get('heartbeat_at'))}".rstrip(),
        )
        for w in data.get("workers", [])
    ]
    return table(
        ("NODE ID", "STATUS", "SEGMENTS / CAPACITY", "LAST HEARTBEAT"),
        rows,
        empty="No workers registered.",
    )


def _load(active: Any, capacity: Any) -> str:
    """Segments a worker runs of how many it runs at once: `2 / 4`."""
    return f"{NONE if active is None else active} / {NONE if capacity is None else capacity}"


def worker_detail(data: Mapping[str, Any]) -> RenderableType:
    info = data.get("info") or {}
    rows: list[tuple[str, Any]] = [
        ("Node ID", data.get("node_id")),
        ("Capacity", data.get("capacity")),
        ("Version", info.get("version")),
        ("Commit", info.get("commit_sha")),
        ("Commit time", timestamp(info.get("commit_timestamp"))),
        ("Build date", info.get("build_date")),
    ]
    known = {"version", "commit_sha", "commit_timestamp", "build_date"}
    rows += [
        (key.replace("_", " ").capitalize(), value)
        for key, value in sorted(info.items())
        if key not in known
    ]
    heartbeat = data.get("heartbeat_at")
    rows += [
        ("Created", timestamp(data.get("created_at"))),
        ("Registered", timestamp(data.get("registered_at"))),
        ("Last heartbeat", f"{timestamp(heartbeat) or NONE}  {age(heartbeat)}".rstrip()),
    ]
    return key_values(rows)


# --- providers ---

_PROVIDER_MAIN = ("name", "kind", "network", "url")


def provider_list(data: Mapping[str, Any]) -> RenderableType:
    rows = [
        (
            *(p.get(key) for key in _PROVIDER_MAIN),
            " ".join(f"{k}={v}" for k, v in sorted(p.items()) if k not in _PROVIDER_MAIN),
        )
        for p in data.get("providers", [])
    ]
    return table(
        ("NAME", "KIND", "NETWORK", "URL", "OPTIONS"), rows, empty="No providers registered."
    )


def provider_detail(data: Mapping[str, Any]) -> RenderableType:
    main = [
        ("Name", data.get("name")),
        ("Kind", data.get("kind")),
        ("Network", data.get("network")),
        ("URL", data.get("url")),
    ]
    rest = sorted((k, v) for k, v in data.items() if k not in _PROVIDER_MAIN)
    return key_values(main + rest)
