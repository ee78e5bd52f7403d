"""`ampctl manifest generate`: write a dataset manifest locally (no server involved)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ampd.cli.ampctl_args import AliasedGroup
from ampd.providers.kinds import RAW_KINDS as _KINDS


@click.group(cls=AliasedGroup)
def manifest() -> None:
    """Create dataset manifests."""


@manifest.command()
@click.option("--kind", type=click.Choice(_KINDS), required=True, help="The dataset kind.")
@click.option("--network", required=True, help="The network name providers are matched on.")
@click.option(
    "--start-block",
    type=click.IntRange(0, 2**64 - 1),
    default=0,
    show_default=True,
    help="First block to extract.",
)
@click.option(
    "--finalized-blocks-only", is_flag=True, help="Extract only blocks the chain has finalized."
)
@click.option(
    "-o",
    "--out",
    "output",
    type=click.Path(path_type=Path),
    help="Write to this file (or to KIND.json in this directory) instead of stdout.",
)
def generate(
    kind: str, network: str, start_block: int, finalized_blocks_only: bool, output: Path | None
) -> None:
    """Generate a manifest with the extractor's tables and schemas.

    Register it with `ampctl dataset register NS/NAME FILE`.
    """
    # pyarrow is slow to import; only this command needs it.
    from ampd.datasets.manifest import (
        InvalidManifest,
        ManifestValidationError,
        generate_manifest,
    )

    try:
        document = generate_manifest(kind, network, start_block, finalized_blocks_only)
    except (InvalidManifest, ManifestValidationError) as exc:
        raise click.UsageError(str(exc)) from None
    rendered = json.dumps(document, indent=2) + "\n"
    if output is None:
        click.echo(rendered, nl=False)
        return
    if output.is_dir():
        output = output / f"{kind}.json"
    try:
        output.write_text(rendered)
    except OSError as exc:
        raise click.FileError(str(output), hint=exc.strerror or str(exc)) from None
    click.echo(f"wrote {output}", err=True)
