"""The query server's read path on each cloud: a Parquet file written through CloudStore is
read back by DataFusion's own object store for that cloud (`server/object_stores.py`),
configured from the same environment variables."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datafusion import SessionContext

from ampd.server import object_stores
from ampd.server.object_stores import register_data_store
from ampd.storage.cloud import open_cloud_store
from support.clouds import SCHEMES, endpoint, new_bucket


@pytest.fixture(scope="module", params=SCHEMES)
def cloud(request: pytest.FixtureRequest) -> Iterator[tuple[str, Any]]:
    with endpoint(request.param) as running:
        yield request.param, running


@pytest.fixture(autouse=True)
def fresh_stores() -> Iterator[None]:
    object_stores._store.cache_clear()  # each endpoint has a port of its own
    yield
    object_stores._store.cache_clear()


async def test_datafusion_reads_what_the_store_wrote(
    cloud: tuple[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scheme, running = cloud
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    data_dir = f"{scheme}://{new_bucket(running, monkeypatch)}/amp/data"
    store = open_cloud_store(data_dir)
    table = pa.table(
        {
            "block_num": pa.array(range(500), pa.uint64()),
            "hash": pa.array([f"0x{i:064x}" for i in range(500)]),
        }
    )
    staging = store.new_staging_file(".parquet")
    pq.write_table(table, staging.path, row_group_size=100)  # several ranged reads
    staging.release()
    key = "ns/ds/blocks/r/000000000-0000000000000000.parquet"
    await store.put_file(staging.path, key)

    ctx = SessionContext()
    register_data_store(ctx, data_dir)
    rows = ctx.read_parquet(store.url(key)).sort("block_num").to_arrow_table()
    assert rows.cast(table.schema).equals(table)  # strings come back as string_view
    ctx.register_parquet("blocks", store.url(key))
    answer = ctx.sql(
        "SELECT count(*) AS n, max(block_num) AS top FROM blocks WHERE block_num >= 250"
    )
    assert answer.to_pylist() == [{"n": 250, "top": 499}]
