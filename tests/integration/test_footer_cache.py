"""The query server's footer cache over a real S3 endpoint (moto) and a local data dir: tables
planned from footer bytes alone, files without a stored footer read once from the store, bad
stored footers ignored, and eviction under the memory budget never changing an answer."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datafusion import SessionContext
from datafusion.catalog import Table

from ampd.sql.catalog import CommittedFile
from ampd.sql.footer_cache import FooterCache
from ampd.storage.cloud import CloudStore, open_cloud_store
from ampd.storage.footer import InvalidFooter, footer_bytes, parse_footer
from ampd.storage.store import LocalStore, ObjectStore
from support.s3 import S3Endpoint, moto_s3

SCHEMA = pa.schema([("block_num", pa.uint64(), False), ("value", pa.int64())])


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Endpoint]:
    with moto_s3() as endpoint:
        yield endpoint


@pytest.fixture
def store(s3: S3Endpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CloudStore:
    for name, value in s3.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    bucket = f"b-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(bucket)
    return open_cloud_store(f"s3://{bucket}/data")


@pytest.fixture(params=["s3", "local"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """The S3 store, or a local data dir (whose tables of many files use the cache too)."""
    if request.param == "s3":
        return request.getfixturevalue("store")
    return LocalStore(tmp_path / "data")


async def write(
    store: ObjectStore, file_id: int, first: int, rows: int
) -> tuple[CommittedFile, bytes]:
    """A committed-looking file of `rows` blocks from `first`, and its footer."""
    staging = store.new_staging_file(".parquet")
    numbers = list(range(first, first + rows))
    table = pa.table({"block_num": pa.array(numbers, pa.uint64()), "value": numbers}, SCHEMA)
    pq.write_table(table, staging.path, row_group_size=4)
    footer = footer_bytes(staging.path)
    staging.release()
    key = f"t/{file_id:03}.parquet"
    size = await store.put_file(staging.path, key)
    return CommittedFile(file_id, store.url(key), first, first + rows - 1, rows, key, size), footer


def query(cache: FooterCache, files: list[CommittedFile], sql: str) -> list[tuple]:
    ctx = SessionContext()
    ctx.register_table("t", Table(cache.dataset(SCHEMA, files)))
    result = ctx.sql(sql).to_arrow_table()
    return [tuple(row.values()) for row in result.to_pylist()]


def test_footer_bytes_are_the_end_of_the_file_and_parse_back(tmp_path: Path) -> None:
    path = tmp_path / "f.parquet"
    pq.write_table(pa.table({"a": [1, 2, 3]}), path)
    footer = footer_bytes(path)
    assert path.read_bytes().endswith(footer)
    assert parse_footer(footer).num_rows == 3
    with pytest.raises(InvalidFooter, match="PAR1"):
        parse_footer(footer[:-1])
    with pytest.raises(InvalidFooter, match="does not match"):
        parse_footer(footer[10:])
    (tmp_path / "short").write_bytes(b"PAR1")
    with pytest.raises(InvalidFooter, match="too short"):
        footer_bytes(tmp_path / "short")


async def test_tables_are_planned_from_stored_footers(any_store: ObjectStore) -> None:
    store = any_store
    written = [await write(store, i, i * 10, 10) for i in range(1, 6)]
    files = [f for f, _ in written]
    cache = FooterCache(store, budget_bytes=1 << 30)
    await cache.load(files, {f.id: footer for f, footer in written})
    assert len(cache) == 5 and cache.missing(files) == []
    assert query(cache, files, "SELECT count(*), sum(value) FROM t") == [(50, sum(range(10, 60)))]
    assert query(cache, files, "SELECT block_num FROM t WHERE block_num = 42") == [(42,)]
    assert cache.hits == 10 and cache.misses == 0
    # Loading again changes nothing: ids never change.
    await cache.load(files, {})
    assert len(cache) == 5


async def test_files_without_a_usable_stored_footer_are_read_from_the_store(
    any_store: ObjectStore,
) -> None:
    store = any_store
    written = [await write(store, i, i * 10, 10) for i in range(1, 4)]
    files = [f for f, _ in written]
    stored = {written[0][0].id: written[0][1], written[1][0].id: b"not a footer"}  # none for 3
    cache = FooterCache(store, budget_bytes=1 << 30)
    await cache.load(files, stored)
    assert len(cache) == 3
    assert query(cache, files, "SELECT count(*), min(block_num), max(block_num) FROM t") == [
        (30, 10, 39)
    ]
    assert cache.misses == 0


async def test_eviction_keeps_the_budget_and_the_answers(any_store: ObjectStore) -> None:
    store = any_store
    written = [await write(store, i, i * 10, 10) for i in range(1, 7)]
    files = [f for f, _ in written]
    one = len(written[0][1])
    cache = FooterCache(store, budget_bytes=2 * one + one // 2)  # room for two
    await cache.load(files, {f.id: footer for f, footer in written})
    assert len(cache) == 2 and cache.weight <= cache.budget
    assert cache.missing(files) == [f.id for f in files[:4]]  # the oldest went first
    assert query(cache, files, "SELECT count(*), sum(value) FROM t") == [(60, sum(range(10, 70)))]
    assert cache.misses == 4 and cache.hits == 2


async def test_empty_files_and_an_unknown_key(any_store: ObjectStore) -> None:
    store = any_store
    written, footer = await write(store, 1, 0, 0)
    cache = FooterCache(store, budget_bytes=1 << 20)
    await cache.load([written], {written.id: footer})
    assert query(cache, [written], "SELECT count(*) FROM t") == [(0,)]
    with pytest.raises(FileNotFoundError, match="not a committed file"):
        cache.fs.open_input_file("t/never-committed.parquet")


async def test_a_row_groups_column_chunks_come_in_one_ranged_get(
    store: CloudStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scan reads the chunks it needs of a row group with one request, skipping gaps of
    up to 1 MiB (a request costs more than reading past a small unneeded column)."""
    staging = store.new_staging_file(".parquet")
    n = 2_000
    table = pa.table(
        {
            "block_num": pa.array(range(n), pa.uint64()),
            "skipped": pa.array([uuid.uuid4().bytes * 8 for _ in range(n)]),  # ~256 KiB
            "value": pa.array(range(n), pa.int64()),
        }
    )
    pq.write_table(table, staging.path, compression="none")
    footer = footer_bytes(staging.path)
    staging.release()
    size = await store.put_file(staging.path, "t/wide.parquet")
    wide = CommittedFile(1, store.url("t/wide.parquet"), 0, n - 1, n, "t/wide.parquet", size)
    cache = FooterCache(store, budget_bytes=1 << 30)
    await cache.load([wide], {wide.id: footer})
    reads: list[tuple[int, int]] = []
    read_range = store.read_range

    def counted(key: str, start: int, length: int) -> pa.Buffer:
        reads.append((start, length))
        return read_range(key, start, length)

    monkeypatch.setattr(store, "read_range", counted)
    ctx = SessionContext()
    ctx.register_table("t", Table(cache.dataset(table.schema, [wide])))
    result = ctx.sql("SELECT sum(block_num), sum(value) FROM t").to_arrow_table()
    assert result.to_pylist() == [
        {"sum(t.block_num)": sum(range(n)), "sum(t.value)": sum(range(n))}
    ]
    assert len(reads) == 1, reads
    assert reads[0][1] > 256 * 1024  # the skipped column's bytes were read past, not apart
