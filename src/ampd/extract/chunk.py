"""What a source of blocks hands the extraction engine, whatever its kind.

A source (each kind under `providers/` has its own) turns block numbers into a Chunk: one
Arrow record batch per table of its kind, and a BlockHeader per block (what the Parquet
files record about the blocks they cover, and what the engine checks the hash chain with).
The engine writes whatever tables the target names; it knows no source kind. A value a
kind's converter cannot represent in its column is a ConversionError, fatal to the job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

__all__ = ["BlockHeader", "Chunk", "ChunkSource", "ConversionError", "SourceError"]


class BlockHeader(NamedTuple):
    """What a Parquet file records about each block it covers (a named tuple: made by
    the ten thousand per chunk, three times cheaper than a frozen dataclass)."""

    number: int
    hash: str  # 0x hex
    parent_hash: str  # 0x hex
    timestamp: int  # seconds


@dataclass(frozen=True)
class Chunk:
    """Consecutive blocks, converted: one record batch per table, and the block headers."""

    batches: dict[str, Any]
    headers: list[BlockHeader]


class ChunkSource(Protocol):
    """Fetches and converts consecutive blocks (a kind's in-process source, or its fetch
    processes: extract/parallel.py)."""

    async def chunk(self, numbers: Sequence[int]) -> Chunk: ...

    async def head(self, finalized: bool = False) -> int: ...

    async def header(self, number: int) -> BlockHeader | None: ...


class SourceError(Exception):
    """A provider could not give the blocks (down, refusing, out of retries): the job is
    retried later. Each kind's errors derive from it (evm-rpc's RpcError, firehose's)."""


class ConversionError(ValueError):
    """A value that cannot be represented in its column. Fatal: a retry fetches the same value."""

    def __init__(self, block_num: int | None, table: str, column: str, value: Any, reason: str):
        self.block_num = block_num
        self.table = table
        self.column = column
        self.value = value
        self.reason = reason
        text = repr(value)
        if len(text) > 100:
            text = text[:97] + "..."
        where = "a block" if block_num is None else f"block {block_num}"
        super().__init__(f"{where}: cannot convert {table}.{column} = {text}: {reason}")
