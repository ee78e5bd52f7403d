"""`ampctl dataset`: register, deploy, list, inspect, versions, manifest."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from ampd.cli import ampctl_output as out
from ampd.cli import ampctl_views as views
from ampd.cli.ampctl_args import (
    DATASET_NAME,
    DATASET_REFERENCE,
    END_BLOCK,
    VERSION,
    WORKER_SELECTOR,
    AliasedGroup,
    DatasetName,
    DatasetReference,
    admin_options,
    settings,
)
from ampd.cli.ampctl_client import get_and_emit, open_client, path


def _revision_path(ref: DatasetReference, *rest: str) -> str:
    return path("datasets", ref.namespace, ref.name, "versions", ref.revision, *rest)


@click.group(cls=AliasedGroup)
def dataset() -> None:
    """Register, deploy and inspect datasets.

    A dataset is NAMESPACE/NAME; a revision of it is NAMESPACE/NAME@REV where REV is a
    version (1.0.0), `latest`, `dev` or a 64-hex manifest hash. Without @REV a reference
    means @latest.
    """


@dataset.command(aliases=("reg",))
@click.argument("fqn", metavar="NS/NAME", type=DATASET_NAME)
@click.argument(
    "manifest_file",
    metavar="FILE",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option("-t", "--tag", type=VERSION, help="Also tag this manifest with a version (semver).")
@admin_options
@click.pass_context
def register(ctx: click.Context, fqn: DatasetName, manifest_file: Path, tag: str | None) -> None:
    """Register the manifest in FILE (JSON) as dataset NS/NAME.

    The `dev` tag moves to this manifest; with --tag it is also stored as that version,
    and `latest` moves to it when it is the highest version.
    """
    try:
        manifest = json.loads(manifest_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise click.BadParameter(
            f"{manifest_file} is not a JSON manifest: {exc}", param_hint="FILE"
        ) from None
    if not isinstance(manifest, dict):
        raise click.BadParameter(f"{manifest_file} must hold a JSON object", param_hint="FILE")
    body: dict[str, Any] = {"namespace": fqn.namespace, "name": fqn.name, "manifest": manifest}
    if tag is not None:
        body["version"] = tag
    with open_client(ctx) as client:
        result = client.post("/datasets", body)
    out.emit(ctx, result, views.dataset_registered)


@dataset.command(aliases=("dep",))
@click.argument("reference", metavar="NS/NAME[@REV]", type=DATASET_REFERENCE)
@click.option(
    "--end-block",
    type=END_BLOCK,
    help="Stop at: `latest` (the chain head now), a block number N, or -N (N blocks behind "
    "the head). Without it the job follows the chain continuously.",
)
@click.option(
    "--parallelism",
    type=click.IntRange(1, 10_000),
    default=1,
    show_default=True,
    help="How many segments may be extracted at once, across workers.",
)
@click.option(
    "--worker-id",
    type=WORKER_SELECTOR,
    help="Run only on this worker node id, or on workers whose id starts with PREFIX*.",
)
@admin_options
@click.pass_context
def deploy(
    ctx: click.Context,
    reference: DatasetReference,
    end_block: str | None,
    parallelism: int,
    worker_id: str | None,
) -> None:
    """Start the job that extracts dataset revision NS/NAME@REV; prints the job id.

    Deploying a revision that already has an active job with the same options returns
    that job's id.
    """
    body: dict[str, Any] = {"end_block": end_block, "parallelism": parallelism}
    if worker_id is not None:
        body["worker_id"] = worker_id
    with open_client(ctx) as client:
        result = client.post(_revision_path(reference, "deploy"), body)
    if settings(ctx).json:
        out.print_json(result)
    else:
        out.show(out.text(f"Deployed {reference} as job {result.get('job_id')}"))


@dataset.command(name="list", aliases=("ls",))
@admin_options
@click.pass_context
def list_(ctx: click.Context) -> None:
    """List the registered datasets with their versions."""
    get_and_emit(ctx, "/datasets", views.dataset_list)


@dataset.command(aliases=("get",))
@click.argument("reference", metavar="NS/NAME[@REV]", type=DATASET_REFERENCE)
@admin_options
@click.pass_context
def inspect(ctx: click.Context, reference: DatasetReference) -> None:
    """Show a dataset revision: manifest hash, kind, start block, tables."""
    get_and_emit(ctx, _revision_path(reference), views.dataset_revision)


@dataset.command()
@click.argument("fqn", metavar="NS/NAME", type=DATASET_NAME)
@admin_options
@click.pass_context
def versions(ctx: click.Context, fqn: DatasetName) -> None:
    """List the versions of NS/NAME and where the `latest` and `dev` tags point."""
    get_and_emit(ctx, path("datasets", fqn.namespace, fqn.name, "versions"), views.dataset_versions)


@dataset.command()
@click.argument("reference", metavar="NS/NAME[@REV]", type=DATASET_REFERENCE)
@admin_options
@click.pass_context
def manifest(ctx: click.Context, reference: DatasetReference) -> None:
    """Print the manifest JSON of a dataset revision."""
    with open_client(ctx) as client:
        result = client.get(_revision_path(reference, "manifest"))
    out.print_json(result)
