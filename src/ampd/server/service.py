"""`ampd server` (and solo's query endpoints): JSON Lines over HTTP and Arrow Flight."""

from __future__ import annotations

from ampd.config import Config
from ampd.logs import get_logger
from ampd.metadb.db import MetadataDb
from ampd.runtime.http import HttpService
from ampd.sql.catalog import Catalog
from ampd.sql.engine import Limits, MemoryBudget
from ampd.storage.store import open_store

log = get_logger("server")


class QueryServer:
    """The catalog plus the selected endpoints (`jsonl`, `flight`)."""

    def __init__(self, config: Config, url: str, services: frozenset[str]) -> None:
        self.config = config
        self.services = services
        self.db = MetadataDb(url, pool_size=min(config.metadata_db.pool_size, 4), name="server")
        self.catalog = Catalog(
            self.db,
            config.data_dir,
            cache_size_mb=config.writer.cache_size_mb,
            providers_dir=config.providers_dir,
        )
        self.limits = Limits(
            max_mem_mb=config.query_max_mem_mb,
            timeout_secs=config.query_timeout_secs,
            budget=MemoryBudget(config.max_mem_mb) if config.max_mem_mb else None,
        )
        self.jsonl: HttpService | None = None
        self.flight = None

    async def start(self) -> None:
        from ampd.server.jsonl import create_app

        await open_store(self.config.data_dir).check()
        await self.db.open(timeout=self.config.metadata_db.connect_timeout_secs)
        await self.catalog.start()
        if "jsonl" in self.services:
            self.jsonl = HttpService(
                "JSON Lines server", create_app(self.catalog, self.limits), self.config.jsonl_addr
            )
            await self.jsonl.start()
        if "flight" in self.services:
            from ampd.server.flight import FlightService

            self.flight = FlightService(
                self.catalog,
                self.limits,
                self.config.flight_addr,
                self.config.server_microbatch_max_interval,
                self.config.keep_alive_secs,
            )
            await self.flight.start()

    async def stop(self) -> None:
        if self.flight is not None:
            await self.flight.stop()
        if self.jsonl is not None:
            await self.jsonl.stop()
        await self.catalog.stop()
        await self.db.close()
