"""`ampctl worker`: list the worker nodes and inspect one."""

from __future__ import annotations

import click

from ampd.cli import ampctl_views as views
from ampd.cli.ampctl_args import WORKER_ID, AliasedGroup, admin_options
from ampd.cli.ampctl_client import get_and_emit, path


@click.group(cls=AliasedGroup)
def worker() -> None:
    """See the worker nodes and their heartbeats."""


@worker.command(name="list", aliases=("ls",))
@admin_options
@click.pass_context
def list_(ctx: click.Context) -> None:
    """List workers: status (active, stale, stopped), active segments, last heartbeat."""
    get_and_emit(ctx, "/workers", views.worker_list)


@worker.command(aliases=("get",))
@click.argument("node_id", metavar="NODE_ID", type=WORKER_ID)
@admin_options
@click.pass_context
def inspect(ctx: click.Context, node_id: str) -> None:
    """Show a worker: build information, registration time, last heartbeat."""
    get_and_emit(ctx, path("workers", node_id), views.worker_detail)
