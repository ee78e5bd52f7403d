"""Headers of a hash-linked run of blocks (extract/chunk.py LinkedHeaders): made on demand,
checked as arrays when made, and only at their ends by the engine and the writers."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from ampd.extract.chunk import BlockHeader, LinkedHeaders, linked_headers
from ampd.extract.engine import ReorgDetected, _check_chain
from ampd.storage.parquet_writer import TableWriter, WriterSettings
from ampd.storage.paths import TableLocation, new_revision
from ampd.storage.store import LocalStore


def chain(first: int, count: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hashes, parent hashes and timestamps of `count` linked blocks from `first`."""
    rng = np.random.default_rng(seed)
    hashes = rng.integers(0, 256, (count + 1, 32), dtype=np.uint8)
    return hashes[1:], hashes[:-1].copy(), np.arange(first, first + count) * 12


def hexes(words: np.ndarray) -> list[str]:
    return ["0x" + w.tobytes().hex() for w in words]


def test_linked_headers_are_the_headers_of_their_blocks():
    hashes, parents, times = chain(100, 5)
    headers = linked_headers(100, hashes, parents, times)
    assert isinstance(headers, LinkedHeaders) and len(headers) == 5
    expected = [
        BlockHeader(100 + i, h, p, int(t))
        for i, (h, p, t) in enumerate(zip(hexes(hashes), hexes(parents), times, strict=True))
    ]
    assert list(headers) == expected
    assert headers[-1] == expected[-1] and headers[1:3] == expected[1:3]
    with pytest.raises(IndexError):
        headers[5]


def test_a_break_inside_gives_every_header_and_the_engine_finds_it():
    hashes, parents, times = chain(10, 6)
    parents[3] = 0  # block 13 does not follow block 12
    headers = linked_headers(10, hashes, parents, times)
    assert not isinstance(headers, LinkedHeaders) and len(headers) == 6
    with pytest.raises(ReorgDetected) as found:
        _check_chain(headers, None)
    assert found.value.block == 13


def test_the_engine_checks_linked_headers_where_they_meet_the_blocks_before():
    hashes, parents, times = chain(10, 6)
    headers = linked_headers(10, hashes, parents, times)
    before = hexes(parents[:1])[0]
    assert _check_chain(headers, before) == hexes(hashes[-1:])[0]
    with pytest.raises(ReorgDetected):
        _check_chain(headers, "0x" + "11" * 32)


async def test_a_writer_checks_linked_headers_at_their_first_block(tmp_path):
    schema = pa.schema([pa.field("_block_num", pa.uint64(), False)])
    location = TableLocation("ns", "ds", "t", new_revision())
    writer = TableWriter(LocalStore(tmp_path / "data"), location, schema, "n", WriterSettings())
    hashes, parents, times = chain(0, 8)
    first = linked_headers(0, hashes[:4], parents[:4], times[:4])
    rows = pa.record_batch([pa.array([1, 3], pa.uint64())], schema=schema)
    await writer.write(rows, first)
    gap = linked_headers(5, hashes[5:], parents[5:], times[5:])  # block 4 is missing
    with pytest.raises(ValueError, match="does not follow"):
        await writer.write(None, gap)
    other = chain(4, 4, seed=9)  # block 4 on, not on this chain
    with pytest.raises(ValueError, match="parent hash"):
        await writer.write(None, linked_headers(4, *other))
    closed = await writer.write(None, linked_headers(4, hashes[4:], parents[4:], times[4:]))
    assert closed is None and writer.current_range == (0, 7)
    done = await writer.close_file()
    assert (done.start_block, done.end_block, done.hash) == (0, 7, hexes(hashes[-1:])[0])
    assert done.prev_hash == hexes(parents[:1])[0]
