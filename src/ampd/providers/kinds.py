"""What each kind of raw dataset supplies the extraction engine, by kind name.

The engine, `ampd dump`, the worker and its fetch processes know no source kind: they ask
`source_kind(manifest.kind)` for the kind's tables and for how to open its providers, fetch
a chunk of blocks, convert it to Arrow, ask the head, and read one block's header (the
hash a reorg walk-back compares with what was committed). Each kind lives in its own folder
under `providers/` and declares a `KIND` in its `kind` module; modules load on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from ampd.extract.chunk import BlockHeader
from ampd.providers.config import EVM_RPC_KIND, FIREHOSE_KIND, ProviderConfig

__all__ = ["RAW_KINDS", "SourceKind", "source_kind"]


@dataclass(frozen=True)
class SourceKind:
    """A raw dataset kind. `pool` is what `open_pool` returns: an async context manager (with
    `aclose`) that the other functions take first."""

    name: str
    tables: Mapping[str, pa.Schema]  # the schemas its data is written with, in table order
    # (providers, max_attempts, finalized): `finalized` for a finalized-only dataset
    open_pool: Callable[[Sequence[ProviderConfig], int | None, bool], Any]
    fetch: Callable[[Any, Sequence[int]], Awaitable[Any]]  # (pool, numbers) -> fetched
    # (fetched) -> (batch per table, header per block); CPU work, run off the event loop.
    convert: Callable[[Any], tuple[dict[str, pa.RecordBatch], list[BlockHeader]]]
    head: Callable[[Any, bool], Awaitable[int]]  # (pool, finalized) -> last block
    # (pool, number) -> its header, None when the provider does not have that block
    header: Callable[[Any, int], Awaitable[BlockHeader | None]]
    # Set-up for a process that does nothing but fetch this kind (idempotent).
    in_fetch_process: Callable[[], None] = lambda: None


_MODULES = {
    EVM_RPC_KIND: "ampd.providers.evm_rpc.kind",
    FIREHOSE_KIND: "ampd.providers.firehose.kind",
}
RAW_KINDS = tuple(_MODULES)  # the raw dataset kinds, in the order errors name them


def source_kind(name: str) -> SourceKind:
    """The kind named `name`. Raises ValueError naming the kinds there are."""
    module = _MODULES.get(name)
    if module is None:
        known = ", ".join(f'"{k}"' for k in _MODULES)
        raise ValueError(f"no raw dataset kind {name!r}; expected one of {known}")
    return importlib.import_module(module).KIND
