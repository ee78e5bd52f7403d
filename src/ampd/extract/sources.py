"""Finding the providers that serve a dataset's network, and opening them by kind."""

from __future__ import annotations

import asyncio
from pathlib import Path

from ampd.datasets.manifest import Manifest
from ampd.extract.chunk import SourceError
from ampd.extract.in_process import InProcessSource
from ampd.logs import get_logger
from ampd.providers.config import (
    ProviderConfig,
    ProviderConfigError,
    load_providers,
    select_providers,
)
from ampd.providers.kinds import source_kind

log = get_logger("extract")


def providers_for(manifest: Manifest, providers_dir: str | Path) -> list[ProviderConfig]:
    """Every provider whose kind and network match the manifest (blocking: the provider
    files may be in an object store).

    Raises ProviderConfigError when a provider file is invalid or none matches.
    """
    return select_providers(load_providers(providers_dir), manifest.kind, manifest.network)


def open_source(
    kind: str,
    providers: list[ProviderConfig],
    *,
    max_attempts: int | None = None,
    finalized: bool = False,
) -> InProcessSource:
    """The providers of `kind` as a source fetching and converting in this process
    (`finalized`: for a finalized-only dataset)."""
    found = source_kind(kind)
    return InProcessSource(found, found.open_pool(providers, max_attempts, finalized))


def head_source(providers_dir: str | Path):  # noqa: ANN201 - returns a HeadSource
    """A function giving the chain head for a manifest (None if no provider answers)."""

    async def head(manifest: Manifest) -> int | None:
        try:
            providers = await asyncio.to_thread(providers_for, manifest, providers_dir)
            source = open_source(
                manifest.kind, providers, max_attempts=3, finalized=manifest.finalized_blocks_only
            )
        except (ProviderConfigError, ValueError) as exc:
            log.warning("no head for network %s: %s", manifest.network, exc)
            return None
        async with source:
            try:
                return await source.head(finalized=manifest.finalized_blocks_only)
            except (SourceError, OSError) as exc:
                log.warning("no head for network %s: %s", manifest.network, exc)
                return None

    return head
