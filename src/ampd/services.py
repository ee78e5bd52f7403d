"""Running the long-lived services as processes: migrate, start, wait for a signal, stop.

A signal during start-up (waiting for the database, migrating, opening pools) cancels the
step in progress; what was started is stopped and the process exits 0.
"""

from __future__ import annotations

import asyncio

from ampd.config import Config
from ampd.controller.service import Controller
from ampd.extract.fetch_processes import FetchProcesses
from ampd.logs import get_logger
from ampd.metadb.connect import retry_start
from ampd.metadb.migrate import migrate
from ampd.runtime.signals import Interrupted, ShutdownSignal
from ampd.worker.service import Worker, WorkerError

log = get_logger("service")


class ServiceError(Exception):
    """A service cannot run; the message is the one line the user sees."""


async def _migrate_if_configured(shutdown: ShutdownSignal, config: Config, url: str) -> None:
    if config.metadata_db.auto_migrate:
        wait_secs = config.metadata_db.connect_timeout_secs
        # Each migration is one transaction: one cut short by a restart is simply run again.
        await shutdown.guard(
            retry_start(
                lambda: migrate(url, connect_timeout=wait_secs), timeout=wait_secs, what="migrate"
            )
        )


async def run_migrate_process(config: Config, url: str) -> None:
    """`ampd migrate`: a signal before the migrations are done stops it (exit 0); each
    migration is one transaction, so none is left half-applied."""
    shutdown = ShutdownSignal()
    shutdown.install()
    try:
        await shutdown.guard(migrate(url, connect_timeout=config.metadata_db.connect_timeout_secs))
    except Interrupted:
        log.warning("migrations interrupted by a signal; run `ampd migrate` again to finish")


async def run_controller_process(config: Config, url: str) -> None:
    shutdown = ShutdownSignal()
    shutdown.install()
    controller = Controller(config, url)
    try:
        await _migrate_if_configured(shutdown, config, url)
        await shutdown.guard(controller.start())
        await shutdown.wait()
    except Interrupted:
        log.info("stopped during start-up")
    finally:
        await controller.stop()


async def run_server_process(config: Config, url: str, services: frozenset[str]) -> None:
    from ampd.server.service import QueryServer

    shutdown = ShutdownSignal()
    shutdown.install()
    server = QueryServer(config, url, services)
    try:
        await _migrate_if_configured(shutdown, config, url)
        await shutdown.guard(server.start())
        await shutdown.wait()
    except Interrupted:
        log.info("stopped during start-up")
    finally:
        await server.stop()


async def run_worker_process(
    config: Config, url: str, node_id: str, fetchers: FetchProcesses | None = None
) -> None:
    shutdown = ShutdownSignal()
    shutdown.install()
    worker = Worker(config, url, node_id, fetchers)
    try:
        await _migrate_if_configured(shutdown, config, url)
        await shutdown.guard(worker.start())
    except WorkerError as exc:
        # Close what start() opened (the pool): left open, its tasks can hold up the exit.
        await worker.shutdown()
        raise ServiceError(str(exc)) from None
    except Interrupted:
        log.info("stopped during start-up")
        await worker.shutdown()
        return
    stop = asyncio.create_task(shutdown.wait())
    failed = asyncio.create_task(worker.failed.wait())
    await asyncio.wait({stop, failed}, return_when=asyncio.FIRST_COMPLETED)
    stop.cancel()
    failed.cancel()
    await worker.shutdown()
    if worker.fatal is not None:
        raise ServiceError(str(worker.fatal))
