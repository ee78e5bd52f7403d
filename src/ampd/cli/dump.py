"""`ampd dump`: extract a block range to Parquet on one machine, with no metadata database."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import click

from ampd.datasets.manifest import InvalidManifest, ManifestValidationError, parse_manifest
from ampd.extract.chunk import SourceError
from ampd.extract.engine import ExtractionTarget, Tuning, extract_range
from ampd.extract.parallel import ProcessPoolSource
from ampd.extract.sources import open_source
from ampd.providers.config import ProviderConfigError, load_providers, select_providers
from ampd.runtime.exit import exit_now
from ampd.runtime.signals import ShutdownSignal
from ampd.storage.parquet_writer import ClosedFile, InvalidCompression, WriterSettings
from ampd.storage.paths import new_revision
from ampd.storage.store import StoreUnavailable, open_store


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


@click.command()
@click.option(
    "--manifest",
    "manifest_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Raw dataset manifest JSON (kind evm-rpc or firehose).",
)
@click.option(
    "--providers-dir",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of provider TOML files.",
)
@click.option(
    "--data-dir",
    required=True,
    help="Where the Parquet files go: a folder, file://, s3://BUCKET[/PREFIX], "
    "gs://BUCKET[/PREFIX] or az://CONTAINER[/PREFIX].",
)
@click.option("--start", "start", required=True, type=click.IntRange(min=0), help="First block.")
@click.option(
    "--end", "end", required=True, type=click.IntRange(min=0), help="Last block (inclusive)."
)
@click.option(
    "--namespace", default="_", show_default=True, help="Dataset namespace in the output path."
)
@click.option(
    "--name",
    default=None,
    help="Dataset name in the output path [default: the manifest file's stem].",
)
@click.option(
    "--compression",
    default="zstd(1)",
    show_default=True,
    help="zstd(N), lz4, gzip, brotli, snappy or uncompressed.",
)
@click.option(
    "--max-row-group-mb",
    default=32,
    show_default=True,
    type=click.IntRange(min=1),
    help="Arrow data buffered per table before a row group is written (bounds memory).",
)
@click.option(
    "--max-file-mb",
    default=2048,
    show_default=True,
    type=click.IntRange(min=1),
    help="A file closes at this size.",
)
@click.option(
    "--chunk-blocks",
    default=None,
    type=click.IntRange(min=1),
    help="Blocks per fetch [default: sized to the chain, 100 to 1,000 blocks of about "
    "16,000 rows].",
)
@click.option(
    "--chunks-in-flight",
    default=4,
    show_default=True,
    type=click.IntRange(min=1),
    help="Fetches running at once.",
)
@click.option(
    "--processes",
    default=None,
    type=click.IntRange(min=0),
    help="Worker processes that fetch and convert (0: all in this process) [default: one per CPU].",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar [default: when stderr is a terminal].",
)
def dump(
    manifest_path: Path,
    providers_dir: Path,
    data_dir: str,
    start: int,
    end: int,
    namespace: str,
    name: str | None,
    compression: str,
    max_row_group_mb: int,
    max_file_mb: int,
    chunk_blocks: int | None,
    chunks_in_flight: int,
    processes: int | None,
    progress: bool | None,
) -> None:
    """Extract blocks START..END (inclusive) of a dataset into Parquet files, like cryo:
    no database, no controller. Prints a summary as JSON on stdout."""
    if end < start:
        _fail(f"--end {end} is before --start {start}")
    try:
        manifest = parse_manifest(manifest_path.read_bytes())
        settings = WriterSettings(
            compression=compression,
            max_row_group_bytes=max_row_group_mb * 1024 * 1024,
            max_file_bytes=max_file_mb * 1024 * 1024,
        )
        providers = select_providers(load_providers(providers_dir), manifest.kind, manifest.network)
        workers = (os.cpu_count() or 1) if processes is None else processes
        if workers > 0:
            # No thread or event loop exists yet: forking is safe, and workers start at once.
            pool = ProcessPoolSource(
                manifest.kind,
                providers,
                workers,
                start_method="fork",
                finalized=manifest.finalized_blocks_only,
            )
            pool.start()
        else:
            pool = open_source(manifest.kind, providers, finalized=manifest.finalized_blocks_only)
        store = open_store(data_dir)  # after the fork: a remote store's client starts threads
    except (InvalidManifest, ManifestValidationError) as exc:
        _fail(f"{manifest_path}: {exc}")
    except (ProviderConfigError, InvalidCompression, ValueError) as exc:
        _fail(str(exc))
    dataset = name or manifest_path.stem.replace("-", "_")
    revision = new_revision()
    target = ExtractionTarget(
        network=manifest.network,
        schemas=manifest.schemas,
        store=store,
        writer=settings,
        table_prefixes={t: f"{namespace}/{dataset}/{t}/{revision}" for t in manifest.schemas},
    )
    show = sys.stderr.isatty() if progress is None else progress
    try:
        summary = asyncio.run(
            _run(pool, target, start, end, Tuning(chunk_blocks, chunks_in_flight), show)
        )
    except (SourceError, StoreUnavailable) as exc:
        click.echo(f"error: {exc}", err=True)
        exit_now(1)  # the fetch processes are gone; the store client's threads may not be
    output = f"{namespace}/{dataset}"
    summary["output"] = str(store.local_path(output) or store.url(output))  # a folder, or a URL
    click.echo(json.dumps(summary))
    # Everything is written and closed: leave without finalizing the interpreter, which
    # would spend a measurable part of a short dump freeing what the process still holds.
    exit_now(0)


async def _run(
    pool, target: ExtractionTarget, start: int, end: int, tuning: Tuning, show: bool
) -> dict:  # noqa: ANN001
    files: list[ClosedFile] = []

    async def commit(group: list[ClosedFile]) -> None:
        files.extend(group)

    async with pool:  # the fetch processes end on every way out, a refused store included
        await target.store.check()
        await target.store.cleanup_staging()  # what killed writers left in this data dir
        total = end - start + 1
        began = time.monotonic()
        # SIGINT / SIGTERM: the files in hand are closed and kept, and the summary says where
        # the dump stopped (a second signal exits at once).
        shutdown = ShutdownSignal()
        shutdown.install()
        if show:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            columns = (
                TextColumn("[bold]dump"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} blocks"),
                TextColumn("{task.fields[rate]:.0f} blocks/s"),
                TextColumn("{task.fields[rows]} rows"),
                TimeRemainingColumn(),
            )
            with Progress(*columns, transient=False) as bar:
                task = bar.add_task("dump", total=total, rate=0.0, rows=0)

                def report(done: int, rows: dict[str, int]) -> None:
                    elapsed = max(time.monotonic() - began, 1e-6)
                    bar.update(task, completed=done, rate=done / elapsed, rows=sum(rows.values()))

                last = await extract_range(
                    pool,
                    target,
                    start,
                    end,
                    commit,
                    tuning=tuning,
                    progress=report,
                    stop=shutdown.event,
                )
        else:
            last = await extract_range(
                pool, target, start, end, commit, tuning=tuning, stop=shutdown.event
            )
    elapsed = time.monotonic() - began
    rows = {t: sum(f.rows for f in files if f.table == t) for t in target.schemas}
    done = last - start + 1
    if last < start:  # a signal before the first block (even during start-up)
        click.echo(f"dump stopped by a signal: no block written, {start}..{end} are not", err=True)
    elif last < end:
        click.echo(
            f"dump stopped by a signal: blocks {start}..{last} are written, "
            f"{last + 1}..{end} are not",
            err=True,
        )
    return {
        "blocks": done,
        "complete": last >= end,
        "last_block": last,
        "rows": rows,
        "files": len(files),
        "bytes": sum(f.bytes for f in files),
        "seconds": round(elapsed, 3),
        "blocks_per_sec": round(done / elapsed, 1) if elapsed else None,
    }
