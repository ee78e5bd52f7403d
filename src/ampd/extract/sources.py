"""Finding the providers that serve a dataset's network."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ampd.datasets.manifest import Manifest
from ampd.logs import get_logger
from ampd.providers.config import (
    ProviderConfig,
    ProviderConfigError,
    load_providers,
    select_providers,
)
from ampd.providers.evm_rpc.errors import RpcError
from ampd.providers.evm_rpc.pool import ProviderPool

log = get_logger("extract")


def providers_for(manifest: Manifest, providers_dir: str | Path) -> list[ProviderConfig]:
    """Every provider whose kind and network match the manifest (blocking: the provider
    files may be in an object store).

    Raises ProviderConfigError when a provider file is invalid or none matches.
    """
    return select_providers(load_providers(providers_dir), manifest.kind, manifest.network)


def open_pool(
    manifest: Manifest, providers_dir: str | Path, *, max_attempts: int | None = None
) -> ProviderPool:
    """A pool over `providers_for(manifest, providers_dir)` in this process (blocking)."""
    return ProviderPool(providers_for(manifest, providers_dir), max_attempts=max_attempts)


def head_source(providers_dir: str | Path):  # noqa: ANN201 - returns a HeadSource
    """A function giving the chain head for a manifest (None if no provider answers)."""

    async def head(manifest: Manifest) -> int | None:
        try:
            pool = await asyncio.to_thread(open_pool, manifest, providers_dir, max_attempts=3)
        except (ProviderConfigError, ValueError) as exc:
            log.warning("no head for network %s: %s", manifest.network, exc)
            return None
        async with pool:
            try:
                return await pool.head(finalized=manifest.finalized_blocks_only)
            except (RpcError, OSError) as exc:
                log.warning("no head for network %s: %s", manifest.network, exc)
                return None

    return head
