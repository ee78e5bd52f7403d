"""TableWriter: Parquet round trip, footer metadata, rollover, compression, errors."""

import copy
import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ampd.providers.evm_rpc.convert import block_headers, convert
from ampd.providers.evm_rpc.schema import TABLES
from ampd.storage.file_metadata import InvalidFileMetadata, read_file_metadata
from ampd.storage.parquet_writer import (
    ClosedFile,
    InvalidCompression,
    TableWriter,
    WriterSettings,
    parse_compression,
    read_closed_file,
)
from ampd.storage.paths import TableLocation, new_revision
from ampd.storage.store import LocalStore

DATA = Path(__file__).parents[1] / "data" / "evm"
NAME = re.compile(r"^\d{9,}-[0-9a-f]{16}\.parquet$")


@pytest.fixture(scope="module")
def pairs():
    return json.loads((DATA / "anvil_blocks.json").read_text())


@pytest.fixture
def store(tmp_path):
    return LocalStore(tmp_path / "data")


def writer(store, table="transactions", settings=None, **kw):
    location = TableLocation("test_ns", "anvil_ds", table, new_revision())
    return TableWriter(store, location, TABLES[table], "anvil", settings or WriterSettings(), **kw)


def chain(pairs, start, count, parent_hash=None):
    """`count` copies of the captured block 2 (5 txs, 10 logs) numbered from `start`, hash-chained."""
    template_block, template_receipts = pairs[2]
    out = []
    parent = parent_hash or "0x" + "00" * 32
    for n in range(start, start + count):
        block = copy.deepcopy(template_block)
        block["number"] = hex(n)
        block["hash"] = "0x" + n.to_bytes(32, "big").hex()
        block["parentHash"] = parent
        parent = block["hash"]
        out.append((block, copy.deepcopy(template_receipts)))
    return out


def read(store, closed: ClosedFile) -> pa.Table:
    return pq.read_table(store.local_path(closed.key))


# -- round trip -----------------------------------------------------------------------------


@pytest.mark.parametrize("table", ["blocks", "transactions", "logs"])
async def test_round_trip_schema_rows_and_footer(store, pairs, table):
    batches = convert(pairs)
    w = writer(store, table, end_block=2)
    closed = await w.write(batches[table], block_headers(pairs))
    assert closed is not None  # the last block closes the file

    back = read(store, closed)
    assert back.schema.equals(TABLES[table])
    assert back.equals(pa.Table.from_batches([batches[table]]))
    assert closed.rows == back.num_rows == batches[table].num_rows
    assert closed.bytes == os.path.getsize(store.local_path(closed.key))

    assert NAME.match(closed.file_name) and closed.file_name.startswith("000000000-")
    assert closed.key == f"test_ns/anvil_ds/{table}/{w.location.revision}/{closed.file_name}"
    assert closed.url == store.local_path(closed.key).as_uri()
    assert (closed.start_block, closed.end_block) == (0, 2)
    assert closed.prev_hash == pairs[0][0]["parentHash"]
    assert closed.hash == pairs[2][0]["hash"]
    assert closed.timestamp == int(pairs[2][0]["timestamp"], 16)


async def test_lists_are_stored_with_item_names(store, pairs):
    closed = await writer(store, end_block=2).write(
        convert(pairs)["transactions"], block_headers(pairs)
    )
    path = store.local_path(closed.key)
    parquet_schema = str(pq.ParquetFile(path).schema)
    assert "element" not in parquet_schema
    assert parquet_schema.count(" item ") + parquet_schema.count(" item;") >= 4
    # The Parquet schema alone (without the stored Arrow schema) gives the same names.
    plain = pq.ParquetFile(path).schema.to_arrow_schema()
    access = plain.field("access_list").type
    assert access.value_field.name == "item"
    assert access.value_type.field("storage_keys").type.value_field.name == "item"
    assert plain.field("blob_versioned_hashes").type.value_field.name == "item"
    assert plain.field("authorization_list").type.value_field.name == "item"


async def test_footer_key_value_metadata(store, pairs):
    closed = await writer(store, "logs", end_block=2).write(
        convert(pairs)["logs"], block_headers(pairs)
    )
    kv = pq.read_metadata(store.local_path(closed.key)).metadata
    assert kv[b"parent_file_ids"] == b"[]"
    assert kv[b"generation"] == b"0"
    meta = json.loads(kv[b"nozzle_metadata"])
    assert list(meta) == ["table", "filename", "created_at", "ranges"]
    assert meta["table"] == "logs" and meta["filename"] == closed.file_name
    assert set(meta["created_at"]) == {"secs", "nanos"}
    assert isinstance(meta["created_at"]["secs"], int) and 0 <= meta["created_at"]["nanos"] < 10**9
    assert meta["ranges"] == [
        {
            "numbers": {"start": 0, "end": 2},
            "network": "anvil",
            "hash": pairs[2][0]["hash"],
            "prev_hash": "0x" + "00" * 32,
            "timestamp": int(pairs[2][0]["timestamp"], 16),
        }
    ]
    assert closed.metadata == meta


async def test_file_can_be_registered_again_from_storage_alone(store, pairs):
    closed = await writer(store, end_block=2).write(
        convert(pairs)["transactions"], block_headers(pairs)
    )
    again = await read_closed_file(store, closed.key)
    assert again == closed
    info = read_file_metadata(str(store.local_path(closed.key)))
    assert info["nozzle_metadata"] == closed.metadata
    assert (info["parent_file_ids"], info["generation"], info["num_rows"]) == ([], 0, 8)


async def test_read_metadata_of_a_foreign_file(store, tmp_path):
    path = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"a": [1]}), path)
    with pytest.raises(InvalidFileMetadata, match="nozzle_metadata"):
        read_file_metadata(str(path))
    path.write_bytes(b"not parquet")
    with pytest.raises(InvalidFileMetadata, match="not a readable Parquet file"):
        read_file_metadata(str(path))


# -- block accounting -----------------------------------------------------------------------


async def test_blocks_without_rows_are_covered(store, pairs):
    batches = convert(pairs)
    headers = block_headers(pairs)
    w = writer(store, "logs")
    # blocks 0 and 1 have no logs
    assert await w.write(None, headers[:1]) is None
    assert await w.write(batches["logs"].slice(0, 0), headers[1:2]) is None
    assert w.current_range == (0, 1) and w.rows == 0
    assert await w.write(batches["logs"], headers[2:]) is None
    closed = await w.close_file()
    assert (closed.start_block, closed.end_block, closed.rows) == (0, 2, 10)
    assert await w.close_file() is None  # nothing open any more


async def test_accepts_tables_as_well_as_batches(store, pairs):
    blocks = chain(pairs, 1, 4)
    table = pa.Table.from_batches(
        [convert(blocks[:2])["transactions"], convert(blocks[2:])["transactions"]]
    )
    closed = await writer(store, end_block=4).write(table, block_headers(blocks))
    assert read(store, closed).equals(table.combine_chunks())


async def test_a_file_with_no_rows_still_records_its_range(store, pairs):
    w = writer(store, "logs")
    await w.write(None, block_headers(pairs)[:2])
    closed = await w.close_file()
    assert closed.rows == 0 and (closed.start_block, closed.end_block) == (0, 1)
    back = read(store, closed)
    assert back.num_rows == 0 and back.schema.equals(TABLES["logs"])
    assert closed.hash == pairs[1][0]["hash"]


async def test_end_block_closes_the_file(store, pairs):
    blocks = chain(pairs, 100, 10)
    w = writer(store, end_block=104)
    assert await w.write(convert(blocks[:3])["transactions"], block_headers(blocks[:3])) is None
    closed = await w.write(convert(blocks[3:5])["transactions"], block_headers(blocks[3:5]))
    assert (closed.start_block, closed.end_block, closed.rows) == (100, 104, 25)
    assert closed.file_name.startswith("000000100-")
    with pytest.raises(ValueError, match="past the writer's last block 104"):
        await w.write(None, block_headers(blocks[5:6]))


# -- rollover -------------------------------------------------------------------------------


async def test_rollover_by_bytes(store, pairs):
    settings = WriterSettings(max_row_group_bytes=8_000, max_file_bytes=10_000)
    blocks = chain(pairs, 1, 60)
    w = writer(store, settings=settings)
    closed = []
    for i in range(0, 60, 3):
        part = blocks[i : i + 3]
        got = await w.write(convert(part)["transactions"], block_headers(part))
        if got:
            closed.append(got)
    last = await w.close_file()
    if last:
        closed.append(last)
    assert len(closed) >= 3
    # contiguous, hash-chained, every block once
    assert closed[0].start_block == 1 and closed[-1].end_block == 60
    for a, b in zip(closed, closed[1:], strict=False):
        assert b.start_block == a.end_block + 1
        assert b.prev_hash == a.hash
    assert sum(c.rows for c in closed) == 60 * 5
    for c in closed[:-1]:
        assert c.bytes >= 10_000  # closed at the limit (the footer comes on top)
        assert pq.ParquetFile(store.local_path(c.key)).metadata.num_row_groups >= 2
    rows = pa.concat_tables([read(store, c) for c in closed])
    assert rows.column("block_num").to_pylist() == [n for n in range(1, 61) for _ in range(5)]


async def test_row_groups_are_capped_and_memory_bounded(store, pairs):
    settings = WriterSettings(max_row_group_bytes=10_000)
    blocks = chain(pairs, 1, 40)
    w = writer(store, settings=settings)
    for i in range(40):
        await w.write(convert(blocks[i : i + 1])["transactions"], block_headers(blocks[i : i + 1]))
        f = w._file
        assert f.buffered_bytes < settings.max_row_group_bytes
    closed = await w.close_file()
    meta = pq.ParquetFile(store.local_path(closed.key)).metadata
    assert meta.num_row_groups > 3
    assert meta.num_rows == 200


async def test_row_groups_encoded_in_the_background(store, pairs):
    """With row_group_rows, each write that leaves that many rows buffered starts a row
    group on a thread and returns before it is written; the file holds every row, in
    order, in one row group per such write."""
    blocks = chain(pairs, 1, 12)
    w = writer(store, settings=WriterSettings(row_group_rows=10))  # 5 transactions a block
    started = []
    for i in range(0, 12, 2):
        part = blocks[i : i + 2]
        await w.write(convert(part)["transactions"], block_headers(part))
        started.append(w._flushing is not None)
        assert w._file.buffered_rows == 0  # handed to the row group in flight
    assert all(started)
    closed = await w.close_file()
    meta = pq.ParquetFile(store.local_path(closed.key)).metadata
    assert meta.num_row_groups == 6
    back = read(store, closed)
    assert back.column("block_num").to_pylist() == [n for n in range(1, 13) for _ in range(5)]
    assert closed.rows == meta.num_rows == 60


async def test_a_failed_background_row_group_fails_the_next_write(store, pairs):
    """An error writing a background row group is not lost: the next write raises it
    (and the file is never handed out as if complete); abort still cleans up."""
    blocks = chain(pairs, 1, 4)
    w = writer(store, settings=WriterSettings(row_group_rows=1))
    await w.write(convert(blocks[:1])["transactions"], block_headers(blocks[:1]))
    await w._wait_idle()
    w._file.sink.close()  # the staging file goes away under the writer
    await w.write(convert(blocks[1:2])["transactions"], block_headers(blocks[1:2]))
    await w._wait_idle()  # that row group fails on its thread
    with pytest.raises(Exception, match="closed"):
        await w.write(convert(blocks[2:3])["transactions"], block_headers(blocks[2:3]))
    staging = w._file.path
    await w.abort()
    assert not staging.exists() and await store.list() == []


async def test_a_failed_background_row_group_fails_the_close(store, pairs):
    blocks = chain(pairs, 1, 2)
    w = writer(store, settings=WriterSettings(row_group_rows=1))
    await w.write(convert(blocks[:1])["transactions"], block_headers(blocks[:1]))
    await w._wait_idle()
    w._file.sink.close()
    await w.write(convert(blocks[1:])["transactions"], block_headers(blocks[1:]))
    with pytest.raises(Exception, match="closed"):
        await w.close_file()
    await w.abort()
    assert await store.list() == []


def test_row_group_rows_must_be_positive():
    with pytest.raises(ValueError, match="row_group_rows"):
        WriterSettings(row_group_rows=0)


async def test_rollover_by_interval_only_with_rows(store, pairs):
    now = [1000.0]
    w = writer(store, "logs", WriterSettings(flush_interval_secs=60), clock=lambda: now[0])
    headers = block_headers(pairs)
    batches = convert(pairs)
    assert await w.write(None, headers[:1]) is None
    now[0] += 120  # past the interval, but no rows yet: stays open
    assert await w.write(None, headers[1:2]) is None and not w.flush_due
    closed = await w.write(batches["logs"], headers[2:])  # rows arrive: due, closes
    assert closed is not None and (closed.start_block, closed.end_block) == (0, 2)


async def test_interval_counts_from_file_open(store, pairs):
    now = [0.0]
    w = writer(store, settings=WriterSettings(flush_interval_secs=60), clock=lambda: now[0])
    blocks = chain(pairs, 1, 4)
    assert await w.write(convert(blocks[:1])["transactions"], block_headers(blocks[:1])) is None
    now[0] = 59
    assert await w.write(convert(blocks[1:2])["transactions"], block_headers(blocks[1:2])) is None
    assert not w.flush_due
    now[0] = 60
    assert w.flush_due  # the caller may close it without more blocks
    closed = await w.close_file()
    assert (closed.start_block, closed.end_block) == (1, 2)
    # the next file opens at the next block, with a fresh interval
    assert await w.write(convert(blocks[2:3])["transactions"], block_headers(blocks[2:3])) is None
    assert w.current_range == (3, 3) and not w.flush_due


# -- abort and errors -----------------------------------------------------------------------


async def test_abort_deletes_the_staging_file(store, pairs):
    w = writer(store)
    await w.write(convert(pairs)["transactions"], block_headers(pairs))
    staging = w._file.path
    assert staging.exists()
    await w.abort()
    assert not staging.exists()
    assert await store.list() == []
    assert await w.close_file() is None


class FlakyStore(LocalStore):
    """Refuses the first put, like a store that is briefly unreachable."""

    failures = 1

    async def put_file(self, local_path, key):
        if self.failures:
            self.failures -= 1
            raise OSError("store unavailable")
        return await super().put_file(local_path, key)


async def test_close_can_be_retried_after_a_failed_put(tmp_path, pairs):
    store = FlakyStore(tmp_path / "data")
    w = writer(store, "logs")
    await w.write(convert(pairs)["logs"], block_headers(pairs))
    with pytest.raises(OSError, match="unavailable"):
        await w.close_file()
    closed = await w.close_file()
    assert closed.rows == 10 and read(store, closed).num_rows == 10
    assert not any((store.root / ".staging").iterdir())


async def test_blocks_must_follow_each_other(store, pairs):
    headers = block_headers(pairs)
    w = writer(store)
    await w.write(None, headers[:1])
    with pytest.raises(ValueError, match="block 2 does not follow block 0"):
        await w.write(None, headers[2:])


async def test_hash_chain_must_hold(store, pairs):
    a = chain(pairs, 1, 2)
    b = chain(pairs, 3, 1, parent_hash="0x" + "ee" * 32)
    w = writer(store)
    await w.write(None, block_headers(a))
    with pytest.raises(ValueError, match="parent hash"):
        await w.write(None, block_headers(b))


async def test_rows_must_belong_to_the_blocks(store, pairs):
    batches = convert(pairs)
    w = writer(store)
    with pytest.raises(ValueError, match="outside the blocks"):
        await w.write(batches["transactions"], block_headers(pairs)[:2])
    with pytest.raises(ValueError, match="without the blocks"):
        await w.write(batches["transactions"], [])


async def test_schema_must_match(store, pairs):
    w = writer(store, "logs")
    with pytest.raises(ValueError, match="schema"):
        await w.write(convert(pairs)["transactions"], block_headers(pairs))


# -- compression ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec,parsed,codec",
    [
        ("zstd(1)", ("zstd", 1), "ZSTD"),
        ("zstd(9)", ("zstd", 9), "ZSTD"),
        ("zstd", ("zstd", 1), "ZSTD"),
        ("ZSTD(3)", ("zstd", 3), "ZSTD"),
        ("lz4", ("lz4", None), "LZ4"),
        ("gzip", ("gzip", None), "GZIP"),
        ("gzip(6)", ("gzip", 6), "GZIP"),
        ("brotli", ("brotli", None), "BROTLI"),
        ("snappy", ("snappy", None), "SNAPPY"),
        ("uncompressed", ("none", None), "UNCOMPRESSED"),
    ],
)
async def test_compression(store, pairs, spec, parsed, codec):
    assert parse_compression(spec) == parsed
    w = writer(store, "logs", WriterSettings(compression=spec), end_block=2)
    closed = await w.write(convert(pairs)["logs"], block_headers(pairs))
    column = pq.ParquetFile(store.local_path(closed.key)).metadata.row_group(0).column(0)
    assert column.compression.startswith(codec)


@pytest.mark.parametrize(
    "spec,match",
    [
        ("zstd(0)", "level must be 1..22"),
        ("zstd(23)", "level must be 1..22"),
        ("zstd(x)", "unknown compression"),
        ("lz4(2)", "lz4 takes no level"),
        ("gzip(10)", "level must be 0..9"),
        ("lzo", "unknown compression 'lzo'"),
        ("", "unknown compression"),
    ],
)
def test_bad_compression_is_a_clear_error(spec, match):
    with pytest.raises(InvalidCompression, match=re.escape(match)):
        parse_compression(spec)
    with pytest.raises(InvalidCompression):
        WriterSettings(compression=spec)


def test_settings_from_config():
    config = SimpleNamespace(
        compression="lz4", max_row_group_mb=2, bytes=1000, segment_flush_interval_secs=5
    )
    s = WriterSettings.from_config(config)
    assert s == WriterSettings("lz4", 2 * 1024 * 1024, 1000, 5.0)
    assert WriterSettings() == WriterSettings("zstd(1)", 512 * 1024 * 1024, 2**31, 600.0)
