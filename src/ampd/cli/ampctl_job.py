"""`ampctl job`: list, inspect, stop, rm, prune, progress, events, segments."""

from __future__ import annotations

import click

from ampd.cli import ampctl_output as out
from ampd.cli import ampctl_views as views
from ampd.cli.ampctl_args import (
    JOB_ID,
    PRUNE_FILTERS,
    STATUS_FILTER,
    TERMINAL_STATUSES,
    AliasedGroup,
    admin_options,
    settings,
)
from ampd.cli.ampctl_client import get_and_emit, open_client, path
from ampd.cli.ampctl_watch import watch

_PRUNED = {
    "terminal": "terminal (COMPLETED, STOPPED, ERROR, FATAL)",
    "completed": "COMPLETED",
    "stopped": "STOPPED",
    "error": "ERROR and FATAL",
}


@click.group(cls=AliasedGroup)
def job() -> None:
    """Follow, stop and clean up extraction jobs.

    Job statuses: SCHEDULED, RUNNING, STOP_REQUESTED, STOPPING, then one of the terminal
    COMPLETED, STOPPED, ERROR, FATAL.
    """


@job.command(name="list", aliases=("ls",))
@click.option(
    "-s",
    "--status",
    type=STATUS_FILTER,
    default="active",
    show_default=True,
    help="active (not terminal), all, or statuses separated by commas (completed,error).",
)
@click.option(
    "-l", "--limit", type=click.IntRange(1, 1000), help="At most this many jobs [default: 50]."
)
@click.option(
    "-a", "--after", type=JOB_ID, metavar="ID", help="Only jobs older than job ID (next page)."
)
@admin_options
@click.pass_context
def list_(ctx: click.Context, status: str, limit: int | None, after: int | None) -> None:
    """List jobs, newest first, a page at a time."""
    params = {"status": status, "limit": limit, "last_job_id": after}
    get_and_emit(ctx, "/jobs", views.job_list, params)


@job.command(aliases=("get",))
@click.argument("job_id", metavar="ID", type=JOB_ID)
@admin_options
@click.pass_context
def inspect(ctx: click.Context, job_id: int) -> None:
    """Show a job: status, dataset, end block, parallelism, node."""
    get_and_emit(ctx, path("jobs", job_id), views.job_detail)


@job.command()
@click.argument("job_id", metavar="ID", type=JOB_ID)
@admin_options
@click.pass_context
def stop(ctx: click.Context, job_id: int) -> None:
    """Ask a job to stop; its workers finish the block range they are on first.

    Stopping a job that is already stopping or finished changes nothing.
    """
    with open_client(ctx) as client:
        client.put(path("jobs", job_id, "stop"))
        result = client.get(path("jobs", job_id))
    status = result.get("status")
    if settings(ctx).json:
        out.print_json(result)
    elif status in TERMINAL_STATUSES and status != "STOPPED":
        out.show(out.text(f"Job {job_id} had already finished ({status}); nothing to stop."))
    else:
        out.show(out.text(f"Stop requested; job {job_id} is {status}."))


@job.command(aliases=("remove",))
@click.argument("job_id", metavar="ID", type=JOB_ID)
@admin_options
@click.pass_context
def rm(ctx: click.Context, job_id: int) -> None:
    """Delete a finished job (stop an active one first)."""
    with open_client(ctx) as client:
        client.delete(path("jobs", job_id))
    if settings(ctx).json:
        out.print_json({"job_id": job_id, "deleted": True})
    else:
        out.show(out.text(f"Removed job {job_id}."))


@job.command()
@click.option(
    "-s",
    "--status",
    type=click.Choice(PRUNE_FILTERS, case_sensitive=False),
    default="terminal",
    show_default=True,
    help="Which finished jobs to delete.",
)
@admin_options
@click.pass_context
def prune(ctx: click.Context, status: str) -> None:
    """Delete every finished job with the given status."""
    status = status.lower()
    with open_client(ctx) as client:
        client.delete("/jobs", {"status": status})
    if settings(ctx).json:
        out.print_json({"status": status, "deleted": True})
    else:
        out.show(out.text(f"Removed all {_PRUNED[status]} jobs."))


@job.command()
@click.argument("job_id", metavar="ID", type=JOB_ID)
@click.option(
    "-w",
    "--watch",
    "watch_",
    is_flag=True,
    help="Follow the job live, one bar per table, until it finishes; exit 1 if it "
    "ends ERROR or FATAL.",
)
@click.option(
    "--interval",
    type=click.FloatRange(0.1, 3600),
    default=1.0,
    show_default=True,
    help="Seconds between refreshes with --watch.",
)
@admin_options
@click.pass_context
def progress(ctx: click.Context, job_id: int, watch_: bool, interval: float) -> None:
    """Show how far each table of a job has got: current block, files, size."""
    with open_client(ctx) as client:
        if watch_:
            ctx.exit(watch(client, job_id, interval, settings(ctx).json))
        result = client.get(path("jobs", job_id, "progress"))
    out.emit(ctx, result, views.job_progress)


@job.command()
@click.argument("job_id", metavar="ID", type=JOB_ID)
@admin_options
@click.pass_context
def events(ctx: click.Context, job_id: int) -> None:
    """List a job's lifecycle events (scheduled, segment assignments, status changes)."""
    get_and_emit(ctx, path("jobs", job_id, "events"), views.job_events)


@job.command()
@click.argument("job_id", metavar="ID", type=JOB_ID)
@admin_options
@click.pass_context
def segments(ctx: click.Context, job_id: int) -> None:
    """List a job's segments: block ranges, checkpoints, owners, attempts."""
    get_and_emit(ctx, path("jobs", job_id, "segments"), views.job_segments)
