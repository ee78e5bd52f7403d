"""`ampd solo`: every service in one process, on a managed PostgreSQL unless a URL is set.

Layout of the amp dir: `data/`, `providers/`, `manifests/`, `metadb/` (managed cluster),
`config.toml` (optional). One solo per amp dir: a lock file refuses a second one.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from ampd.config import Config
from ampd.controller.service import Controller
from ampd.extract.fetch_processes import FetchProcesses
from ampd.logs import get_logger
from ampd.metadb.managed import ManagedPostgres
from ampd.metadb.migrate import migrate
from ampd.runtime.signals import Interrupted, ShutdownSignal
from ampd.worker.service import Worker

log = get_logger("solo")

EMBEDDED_WORKER_ID = "worker"


class SoloError(Exception):
    """Solo cannot start: the message says why and what to do."""


@dataclass(frozen=True)
class SoloOptions:
    amp_dir: Path
    config: Config
    services: frozenset[str]
    # The embedded worker's fetch processes, forked before anything else started.
    fetchers: FetchProcesses | None = None


def prepare_amp_dir(amp_dir: Path, config: Config) -> None:
    """Create the amp dir and the local folders the config points at."""
    amp_dir.mkdir(parents=True, exist_ok=True)
    for folder in (config.providers_dir, config.manifests_dir, config.data_dir):
        if "://" not in folder:  # object-store URLs need no folders
            Path(folder).mkdir(parents=True, exist_ok=True)


def _lock_amp_dir(amp_dir: Path) -> int:
    fd = os.open(amp_dir / ".solo.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SoloError(f"another ampd solo is running with amp dir {amp_dir}") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


async def run_solo(options: SoloOptions) -> None:
    """Run until SIGINT/SIGTERM, then stop every service and the managed PostgreSQL."""
    prepare_amp_dir(options.amp_dir, options.config)
    lock_fd = _lock_amp_dir(options.amp_dir)
    managed: ManagedPostgres | None = None
    shutdown = ShutdownSignal(on_second=lambda: managed.kill() if managed else None)
    shutdown.install()
    controller: Controller | None = None
    worker: Worker | None = None
    server = None
    starting: asyncio.Future[str] | None = None
    wait_secs = options.config.metadata_db.connect_timeout_secs
    try:
        url = options.config.metadata_db.url
        if url is None:
            managed = ManagedPostgres(options.amp_dir / "metadb")
            # A thread cannot be cancelled: a signal waits for it, then stops the server.
            shutdown.check()
            starting = asyncio.ensure_future(asyncio.to_thread(managed.start))
            url = await shutdown.guard(asyncio.shield(starting))
            log.info("metadata database: %s", url)
        if options.config.metadata_db.auto_migrate:
            await shutdown.guard(migrate(url, connect_timeout=wait_secs))
        controller = Controller(options.config, url, serve_api="admin" in options.services)
        await shutdown.guard(controller.start())
        worker = Worker(options.config, url, EMBEDDED_WORKER_ID, options.fetchers)
        await shutdown.guard(worker.start())
        query_services = options.services & {"jsonl", "flight"}
        if query_services:
            from ampd.server.service import QueryServer

            server = QueryServer(options.config, url, frozenset(query_services))
            await shutdown.guard(server.start())
        log.info("ampd solo is up (amp dir %s)", options.amp_dir)
        await shutdown.wait()
    except Interrupted:
        log.info("stopped during start-up")
    finally:
        if server is not None:
            await server.stop()
        if worker is not None:
            await worker.shutdown()  # stops the fetch processes too
        elif options.fetchers is not None:
            await options.fetchers.aclose()
        if controller is not None:
            await controller.stop()
        if starting is not None:
            with contextlib.suppress(Exception):
                await starting
        if managed is not None:
            await asyncio.to_thread(managed.stop)
        os.close(lock_fd)
    log.info("ampd solo stopped")
