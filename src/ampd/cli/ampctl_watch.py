"""`ampctl job progress --watch`: a live view of a job's tables until the job finishes.

One bar per table (current block against the job's end block); for a continuous job the
block number and its rate instead. The end block comes from the descriptor when it is a
number, else from the job's segments (deployed with `latest` or `-N`, the controller
resolved it into segment bounds), else from the SCHEDULED event.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rich.console import Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from ampd.cli import ampctl_output as out
from ampd.cli import ampctl_views as views
from ampd.cli.ampctl_args import TERMINAL_STATUSES
from ampd.cli.ampctl_client import AdminClient, AdminError, Unreachable, path

FAILED_STATUSES = ("ERROR", "FATAL")
# A controller restart should not end a long watch; a dead one should, eventually.
RECONNECT_FOR_SECONDS = 30.0
_RATE_WINDOW_SECONDS = 10.0


@dataclass(frozen=True)
class Target:
    """Where the job stops: `end` is None for a continuous job (or when nobody can tell)."""

    start: int | None
    end: int | None


def job_target(
    job: Mapping[str, Any], segments: list[Mapping[str, Any]], events: list[Mapping[str, Any]]
) -> Target:
    """The job's block range from its descriptor, segments and events (see the module doc)."""
    descriptor = job.get("descriptor") or {}
    starts = [s["start_block"] for s in segments if isinstance(s.get("start_block"), int)]
    start = min(starts) if starts else None
    end = descriptor.get("end_block")
    if end is None:
        return Target(start, None)
    if isinstance(end, int) or (isinstance(end, str) and end.isdigit()):
        return Target(start, int(end))
    ends = [s.get("end_block") for s in segments]
    if ends and all(isinstance(e, int) for e in ends):
        return Target(start, max(ends))
    for event in events:
        detail = event.get("detail") or {}
        if event.get("event_type") == "SCHEDULED" and isinstance(detail.get("end_block"), int):
            return Target(start, detail["end_block"])
    return Target(start, None)


@dataclass
class _Rates:
    """Blocks per second per table over the last few seconds."""

    samples: dict[str, deque[tuple[float, int]]] = field(default_factory=dict)

    def add(self, table: str, current: int | None, now: float) -> None:
        if current is None:
            return
        window = self.samples.setdefault(table, deque())
        window.append((now, current))
        while len(window) > 2 and now - window[0][0] > _RATE_WINDOW_SECONDS:
            window.popleft()

    def of(self, table: str) -> float | None:
        window = self.samples.get(table)
        if not window or len(window) < 2 or window[-1][0] <= window[0][0]:
            return None
        return (window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0])


def render(
    job: Mapping[str, Any],
    target: Target,
    progress: Mapping[str, Any],
    rates: _Rates | None = None,
    note: str | None = None,
) -> RenderableType:
    """The job's header line and one row per table (a bar when the end block is known)."""
    status = progress.get("job_status") or job.get("status")
    bounds = out.block_range(target.start, target.end)
    if target.end is None and (job.get("descriptor") or {}).get("end_block") is None:
        bounds += " (continuous)"
    header = Text.assemble(
        (f"Job {job.get('id')}  ", "bold"),
        f"{views.job_dataset(job)}  ",
        out.status_text(status),
        f"  blocks {bounds}",
    )
    if note:
        header.append(f"  {note}", style="yellow")
    grid = Table(box=None, header_style="bold", pad_edge=False, padding=(0, 2, 0, 0))
    for column in ("TABLE", "PROGRESS", "BLOCK", "%", "RATE", "FILES", "SIZE"):
        if column == "RATE" and rates is None:
            continue
        grid.add_column(column, justify="left" if column in ("TABLE", "PROGRESS") else "right")
    tables = progress.get("tables") or {}
    for name, table in sorted(tables.items()):
        current = table.get("current_block")
        start = table.get("start_block", target.start) or 0
        if target.end is not None:
            total = max(1, target.end - start + 1)
            done = 0 if current is None else min(total, max(0, current - start + 1))
            bar: RenderableType = ProgressBar(total=total, completed=done, width=40)
            block = f"{_or_none(current)}/{target.end}"
            percent = f"{100 * done / total:.1f}%"
        else:
            bar = Text("following the chain head", style="dim")
            block = f"#{_or_none(current)}"
            percent = out.NONE
        row: list[RenderableType] = [Text(name), bar, Text(block), Text(percent)]
        if rates is not None:
            rate = rates.of(name)
            row.append(Text(out.NONE if rate is None else f"{rate:,.1f} blk/s"))
        row += [
            Text(str(table.get("files_count", 0))),
            Text(out.size(table.get("total_size_bytes"))),
        ]
        grid.add_row(*row)
    body: RenderableType = grid if tables else Text("No tables written yet.", style="dim")
    return Group(header, body)


def _or_none(value: Any) -> str:
    return out.NONE if value is None else str(value)


class ProgressWatch:
    """Poll a job's progress every `interval` seconds until the job reaches a terminal status."""

    def __init__(self, client: AdminClient, job_id: int, interval: float = 1.0) -> None:
        self.client = client
        self.job_id = job_id
        self.interval = interval
        self.job: dict[str, Any] = {}
        self.target = Target(None, None)
        self.rates = _Rates()
        self._last_answer = time.monotonic()

    def _call(self, *segments: str | int) -> Any:
        """GET, retrying a lost connection for up to RECONNECT_FOR_SECONDS; None while retrying."""
        try:
            answer = self.client.get(path(*segments))
        except Unreachable:
            if time.monotonic() - self._last_answer > RECONNECT_FOR_SECONDS:
                raise
            return None
        self._last_answer = time.monotonic()
        return answer

    def _load_job(self) -> None:
        self.job = self.client.get(path("jobs", self.job_id))
        segments = self.client.get(path("jobs", self.job_id, "segments")).get("segments", [])
        events: list[dict[str, Any]] = []
        descriptor_end = (self.job.get("descriptor") or {}).get("end_block")
        if isinstance(descriptor_end, str) and not descriptor_end.isdigit():
            events = self.client.get(path("jobs", self.job_id, "events")).get("events", [])
        self.target = job_target(self.job, segments, events)

    def run(self, live: Live | None) -> dict[str, Any]:
        """Watch until a terminal status; returns the last progress answer."""
        self._load_job()
        progress: dict[str, Any] = {"job_status": self.job.get("status"), "tables": {}}
        while True:
            answer = self._call("jobs", self.job_id, "progress")
            note = None
            if answer is None:
                note = f"(cannot reach {self.client.base_url}; retrying)"
            else:
                progress = answer
                now = time.monotonic()
                for name, table in (progress.get("tables") or {}).items():
                    self.rates.add(name, table.get("current_block"), now)
            if live is not None:
                live.update(render(self.job, self.target, progress, self.rates, note))
            if answer is not None and progress.get("job_status") in TERMINAL_STATUSES:
                return progress
            time.sleep(self.interval)


def watch(client: AdminClient, job_id: int, interval: float, as_json: bool) -> int:
    """Run the watch; print the final state; return the exit code (1 for ERROR/FATAL)."""
    watcher = ProgressWatch(client, job_id, interval)
    if as_json:
        final = watcher.run(None)
        out.print_json(final)
    else:
        console = out.console()
        try:
            with Live(console=console, transient=True, refresh_per_second=4) as live:
                final = watcher.run(live)
        except KeyboardInterrupt:
            console.print(Text(f"Stopped watching; job {job_id} carries on.", style="dim"))
            return 130
        out.show(render(watcher.job, watcher.target, final))
    status = final.get("job_status")
    if status in FAILED_STATUSES:
        detail = final.get("detail")
        reason = views.error_detail(detail) if detail is not None else "no detail recorded"
        raise AdminError(f"job {job_id} ended {status}: {reason}")
    return 0
