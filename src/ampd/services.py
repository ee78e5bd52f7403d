"""Running the long-lived services as processes: migrate, start, wait for a signal, stop."""

from __future__ import annotations

import asyncio

from ampd.config import Config
from ampd.controller.service import Controller
from ampd.logs import get_logger
from ampd.metadb.migrate import migrate
from ampd.runtime.signals import ShutdownSignal
from ampd.worker.service import Worker, WorkerError

log = get_logger("service")


class ServiceError(Exception):
    """A service cannot run; the message is the one line the user sees."""


async def run_controller_process(config: Config, url: str) -> None:
    shutdown = ShutdownSignal()
    shutdown.install()
    if config.metadata_db.auto_migrate:
        await migrate(url)
    controller = Controller(config, url)
    await controller.start()
    try:
        await shutdown.wait()
    finally:
        await controller.stop()


async def run_server_process(config: Config, url: str, services: frozenset[str]) -> None:
    from ampd.server.service import QueryServer

    shutdown = ShutdownSignal()
    shutdown.install()
    if config.metadata_db.auto_migrate:
        await migrate(url)
    server = QueryServer(config, url, services)
    await server.start()
    try:
        await shutdown.wait()
    finally:
        await server.stop()


async def run_worker_process(config: Config, url: str, node_id: str) -> None:
    shutdown = ShutdownSignal()
    shutdown.install()
    if config.metadata_db.auto_migrate:
        await migrate(url)
    worker = Worker(config, url, node_id)
    try:
        await worker.start()
    except WorkerError as exc:
        raise ServiceError(str(exc)) from None
    stop = asyncio.create_task(shutdown.wait())
    failed = asyncio.create_task(worker.failed.wait())
    await asyncio.wait({stop, failed}, return_when=asyncio.FIRST_COMPLETED)
    stop.cancel()
    failed.cancel()
    await worker.shutdown()
    if worker.fatal is not None:
        raise ServiceError(str(worker.fatal))
