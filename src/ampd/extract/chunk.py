"""What a source of blocks hands the extraction engine, whatever its kind.

A source (each kind under `providers/` has its own) turns block numbers into a Chunk: one
Arrow record batch per table of its kind, and a BlockHeader per block (what the Parquet
files record about the blocks they cover, and what the engine checks the hash chain with).
The engine writes whatever tables the target names; it knows no source kind.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["BlockHeader", "Chunk", "ChunkSource"]


@dataclass(frozen=True)
class BlockHeader:
    """What a Parquet file records about each block it covers."""

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
