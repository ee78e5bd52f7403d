"""The `ampd` command: solo, controller, worker, server, migrate.

Exit codes: 0 after a graceful shutdown, 1 for an invalid configuration or any error during
operation (one line on stderr first), 2 for a command-line usage error.

This module is the entry point: importing it means running `ampd`, so the first thing it
does, before its heavy imports, is to take SIGINT / SIGTERM (see runtime/process_signals.py)
and to turn transparent huge pages off (runtime/memory.py).
"""

# ruff: noqa: E402 - the signal handler goes in before the other imports
from __future__ import annotations

from ampd.runtime import memory, process_signals
from ampd.runtime.exit import exit_now

process_signals.install()
memory.no_huge_pages()  # before the allocators of pyarrow and DataFusion load

import asyncio
import gc
import re
from pathlib import Path
from typing import NoReturn

import click

from ampd import __version__
from ampd.config import Config, ConfigError, load_config
from ampd.logs import get_logger, setup_logging

log = get_logger("cli")

_NODE_ID = re.compile(r"^[a-zA-Z][a-zA-Z0-9_.-]*$")
_CONFIG_HELP = "Path of the TOML config file [env: AMP_CONFIG]."


def fail(message: str) -> NoReturn:
    """Print one `error:` line on stderr and exit 1."""
    click.echo(f"error: {message}", err=True)
    exit_now(1)


def _load(config_path: Path | None, **kwargs: object) -> Config:
    try:
        return load_config(config_path, **kwargs)  # type: ignore[arg-type]
    except ConfigError as exc:
        fail(str(exc))


def _require_config(ctx: click.Context, command: str) -> Config:
    path = ctx.obj["config"]
    if path is None:
        fail(f"`ampd {command}` needs a config file: pass --config PATH or set AMP_CONFIG")
    return _load(path)


def _require_db_url(config: Config, command: str) -> str:
    if config.metadata_db.url is None:
        fail(
            f"`ampd {command}` needs metadata_db.url in the config file "
            "(or AMP_CONFIG_METADATA_DB__URL)"
        )
    return config.metadata_db.url


def _selected(flags: dict[str, bool], all_services: tuple[str, ...]) -> frozenset[str]:
    """No service flag given: all of them; any given: only those."""
    chosen = frozenset(name for name, on in flags.items() if on)
    return chosen or frozenset(all_services)


def _service_flag(name: str, env: str, what: str):  # noqa: ANN202 - click decorator
    return click.option(
        f"--{name}",
        is_flag=True,
        default=False,
        envvar=env,
        help=f"Run the {what} [env: {env}]. Without any service flag, all services run.",
    )


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option(
    "--config",
    "config_path",
    envvar="AMP_CONFIG",
    type=click.Path(dir_okay=False, path_type=Path),
    help=_CONFIG_HELP,
)
@click.version_option(__version__, prog_name="ampd")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """ampd extracts blockchain data into Parquet files, coordinated through a PostgreSQL
    metadata database, and serves it over SQL.

    Log level: AMP_LOG=error|warn|info|debug|trace (default info).
    """
    try:
        setup_logging()
    except ValueError as exc:
        fail(str(exc))
    ctx.ensure_object(dict)
    ctx.obj["config"] = config_path


@cli.command()
@click.option(
    "--amp-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="AMP_DIR",
    help="Folder for data, providers, manifests and the managed database "
    "[env: AMP_DIR; default: ./.amp].",
)
@_service_flag("flight-server", "AMP_FLIGHT_SERVER", "Arrow Flight query server (port 1602)")
@_service_flag("jsonl-server", "AMP_JSONL_SERVER", "JSON Lines query server (port 1603)")
@_service_flag("admin-server", "AMP_ADMIN_SERVER", "Admin API (port 1610)")
@click.pass_context
def solo(
    ctx: click.Context,
    amp_dir: Path | None,
    flight_server: bool,
    jsonl_server: bool,
    admin_server: bool,
) -> None:
    """Run everything in one process: controller, an embedded worker (node id `worker`),
    query servers, and a managed PostgreSQL in AMP_DIR/metadb unless metadata_db.url is set.

    Config: --config, else AMP_DIR/config.toml, else built-in defaults.
    """
    from ampd.solo import SoloError, SoloOptions, run_solo
    from ampd.worker.service import WorkerError

    amp_dir = (amp_dir or Path.cwd() / ".amp").resolve()
    config_path = ctx.obj["config"]
    if config_path is None and (amp_dir / "config.toml").is_file():
        config_path = amp_dir / "config.toml"
    config = _load(config_path, base_dir=amp_dir, solo=True)
    services = _selected(
        {"flight": flight_server, "jsonl": jsonl_server, "admin": admin_server},
        ("admin", "jsonl", "flight"),
    )
    options = SoloOptions(
        amp_dir=amp_dir, config=config, services=services, fetchers=_forked_fetchers(config)
    )
    _run(
        run_solo(options),
        SoloError,
        WorkerError,
        *_service_errors(),
    )


@cli.command()
@click.pass_context
def controller(ctx: click.Context) -> None:
    """Run the controller: the Admin API (port 1610) and the job scheduler.

    Several controllers may run against one database: all serve the API, one leads the
    scheduling, and another takes over within seconds when the leader dies."""
    from ampd.services import run_controller_process

    config = _require_config(ctx, "controller")
    url = _require_db_url(config, "controller")
    _run(run_controller_process(config, url), *_service_errors())


@cli.command()
@click.option(
    "--node-id",
    envvar="AMP_NODE_ID",
    help="Unique id of this worker, e.g. worker-01 [env: AMP_NODE_ID].",
)
@click.pass_context
def worker(ctx: click.Context, node_id: str | None) -> None:
    """Run a worker: register, heartbeat, take assigned segments and extract them."""
    config = _require_config(ctx, "worker")
    if not node_id:
        fail("`ampd worker` needs a node id: pass --node-id ID or set AMP_NODE_ID")
    if not _NODE_ID.match(node_id):
        fail(
            f"invalid node id {node_id!r}: expected a letter followed by letters, digits, "
            "'_', '.' or '-'"
        )
    url = _require_db_url(config, "worker")
    from ampd.services import run_worker_process

    _run(run_worker_process(config, url, node_id, _forked_fetchers(config)), *_service_errors())


@cli.command()
@_service_flag("flight-server", "AMP_FLIGHT_SERVER", "Arrow Flight query server")
@_service_flag("jsonl-server", "AMP_JSONL_SERVER", "JSON Lines query server")
@click.pass_context
def server(ctx: click.Context, flight_server: bool, jsonl_server: bool) -> None:
    """Serve SQL queries over the extracted data (JSON Lines and Arrow Flight)."""
    from ampd.services import run_server_process

    config = _require_config(ctx, "server")
    url = _require_db_url(config, "server")
    services = _selected({"flight": flight_server, "jsonl": jsonl_server}, ("jsonl", "flight"))
    _run(run_server_process(config, url, services), *_service_errors())


@cli.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Apply the metadata database schema migrations, then exit."""
    from ampd.services import run_migrate_process

    config = _require_config(ctx, "migrate")
    url = _require_db_url(config, "migrate")
    _run(run_migrate_process(config, url), *_service_errors())


def _forked_fetchers(config):  # noqa: ANN001, ANN202 - FetchProcesses | None
    """The worker's fetch processes, forked now: no thread or event loop exists yet, so they
    start in milliseconds with everything already imported."""
    from ampd.worker.service import fetch_processes

    fetchers = fetch_processes(config, start_method="fork")
    if fetchers is not None:
        fetchers.start()
    return fetchers


def _service_errors() -> tuple[type[Exception], ...]:
    from ampd.metadb.connect import DatabaseUnavailable
    from ampd.metadb.managed import ManagedPostgresError
    from ampd.metadb.migrate import MigrationError
    from ampd.services import ServiceError
    from ampd.storage.folder import FolderUnreadable

    return (
        ServiceError,
        ManagedPostgresError,
        MigrationError,
        DatabaseUnavailable,
        FolderUnreadable,
    )


def _run(coro, *expected: type[Exception]) -> None:  # noqa: ANN001
    """Run a command's coroutine; expected errors and database errors exit 1 with one line."""
    import psycopg

    try:
        try:
            asyncio.run(coro)
        finally:
            process_signals.install()  # closing the loop reset the handlers to the defaults
    except (*expected, psycopg.Error, OSError) as exc:
        fail(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
    except Exception as exc:  # noqa: BLE001 - the spec's exit code 1 with one line
        log.debug("unexpected error", exc_info=True)
        fail(f"{type(exc).__name__}: {exc}")


from ampd.cli.dump import dump  # noqa: E402 - registered after the group exists

cli.add_command(dump)


def main() -> None:
    try:
        cli(prog_name="ampd")
    finally:
        # Free what is left in reference cycles (object-store clients among it: Rust, with
        # threads of their own) while the interpreter is whole. Freed during finalization,
        # such a client can abort the process after its work is done.
        gc.collect()


if __name__ == "__main__":
    main()
