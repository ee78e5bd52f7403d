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
from typing import Any, NamedTuple, Protocol, overload

import numpy as np

__all__ = [
    "BlockHeader",
    "Chunk",
    "ChunkSource",
    "ConversionError",
    "LinkedHeaders",
    "SourceError",
    "linked_headers",
]


class BlockHeader(NamedTuple):
    """What a Parquet file records about each block it covers (a named tuple: made by
    the ten thousand per chunk, three times cheaper than a frozen dataclass)."""

    number: int
    hash: str  # 0x hex
    parent_hash: str  # 0x hex
    timestamp: int  # seconds


class LinkedHeaders(Sequence[BlockHeader]):
    """The headers of consecutive blocks whose hash chain holds inside them, checked once
    as whole arrays when they were made (`linked_headers`): the engine and the writers
    check only where they meet the blocks before them. A header is made when asked for (a
    derived chunk of 20,000 blocks no longer makes 20,000 of them, nor checks them one by
    one in the engine and in each writer)."""

    linked = True

    def __init__(
        self, first: int, hashes: np.ndarray, parents: np.ndarray, timestamps: np.ndarray
    ) -> None:
        self.first = first
        self._hashes, self._parents, self._timestamps = hashes, parents, timestamps

    def __len__(self) -> int:
        return len(self._hashes)

    @overload
    def __getitem__(self, index: int) -> BlockHeader: ...

    @overload
    def __getitem__(self, index: slice) -> list[BlockHeader]: ...

    def __getitem__(self, index: int | slice) -> BlockHeader | list[BlockHeader]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return BlockHeader(
            self.first + index,
            "0x" + self._hashes[index].tobytes().hex(),
            "0x" + self._parents[index].tobytes().hex(),
            int(self._timestamps[index]),
        )


def linked_headers(
    first: int, hashes: np.ndarray, parents: np.ndarray, timestamps: np.ndarray
) -> Sequence[BlockHeader]:
    """The headers of blocks first, first + 1, ... (`hashes`, `parents`: (n, 32) uint8;
    `timestamps`: seconds): LinkedHeaders when each parent hash is the previous block's
    hash, else a list of every header (where the engine finds the break and rewinds)."""
    linked = LinkedHeaders(first, hashes, parents, timestamps)
    if len(hashes) > 1 and not np.array_equal(parents[1:], hashes[:-1]):
        return list(linked)
    return linked


@dataclass(frozen=True)
class Chunk:
    """Consecutive blocks, converted: one record batch per table, and the block headers."""

    batches: dict[str, Any]
    headers: Sequence[BlockHeader]


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
