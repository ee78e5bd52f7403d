"""`ampd controller`: the Admin API plus the scheduler (when this controller leads)."""

from __future__ import annotations

import asyncio
import os
import socket

from ampd.config import Config
from ampd.controller.admin_api import AdminContext, create_app
from ampd.controller.deploy import Deployer
from ampd.controller.scheduler import Leadership, Scheduler, run_scheduler
from ampd.datasets.registry import DatasetRegistry
from ampd.extract.sources import head_source
from ampd.logs import get_logger
from ampd.metadb.connect import retry_start
from ampd.metadb.db import MetadataDb
from ampd.metadb.jobs import JobStore
from ampd.metadb.workers import WorkerStore
from ampd.runtime.http import HttpService
from ampd.storage.folder import FolderUnreadable, open_folder

log = get_logger("controller")


class Controller:
    """The controller's parts, started and stopped together."""

    def __init__(self, config: Config, url: str, *, serve_api: bool = True) -> None:
        self.config = config
        self.url = url
        self.serve_api = serve_api
        self.db = MetadataDb(url, pool_size=config.metadata_db.pool_size, name="controller")
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.api: HttpService | None = None

    def context(self) -> AdminContext:
        workers = WorkerStore(self.db, self.config.worker_timeout_secs)
        return AdminContext(
            db=self.db,
            registry=DatasetRegistry(self.db),
            jobs=JobStore(self.db),
            workers=workers,
            deployer=Deployer(
                self.db,
                workers,
                head_source(self.config.providers_dir),
                segment_blocks=self.config.segment_blocks,
            ),
            providers_dir=open_folder(self.config.providers_dir),
            data_dir=self.config.data_dir,
            token=self.config.admin_api_token,
        )

    async def start(self) -> None:
        wait_secs = self.config.metadata_db.connect_timeout_secs
        await self.db.open(timeout=wait_secs)
        ctx = self.context()
        try:  # an unreachable providers_dir is refused now, not at the first request
            await asyncio.to_thread(ctx.providers_dir.names, ".toml")
        except FolderUnreadable as exc:
            raise FolderUnreadable(f"providers_dir {exc}") from None
        registered = await retry_start(
            lambda: ctx.registry.register_directory(self.config.manifests_dir),
            timeout=wait_secs,
            what="controller start",
        )
        if registered:
            log.info("registered %d manifest(s) from %s", registered, self.config.manifests_dir)
        scheduler = Scheduler(
            self.db,
            worker_timeout_secs=self.config.worker_timeout_secs,
            max_retries=self.config.max_retries,
            split_min_blocks=self.config.split_min_blocks,
        )
        name = f"{socket.gethostname()}:{os.getpid()}"
        self._tasks.append(
            asyncio.create_task(
                run_scheduler(scheduler, Leadership(self.url), self._stop, node=name)
            )
        )
        if self.serve_api:
            self.api = HttpService("admin API", create_app(ctx), self.config.admin_api_addr)
            await self.api.start()

    async def stop(self) -> None:
        self._stop.set()
        if self.api is not None:
            await self.api.stop()
        for task in self._tasks:
            await task
        await self.db.close()
