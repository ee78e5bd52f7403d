"""The query server's read path on each cloud: a Parquet file written through CloudStore is
planned from its footer (stored, or read once from the store) and scanned by DataFusion
with ranged reads (`sql/footer_cache.py`), configured from the environment variables."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datafusion import SessionContext
from datafusion.catalog import Table

from ampd.sql.catalog import CommittedFile
from ampd.sql.footer_cache import FooterCache
from ampd.storage.cloud import open_cloud_store
from ampd.storage.footer import footer_bytes
from support.clouds import SCHEMES, endpoint, new_bucket


@pytest.fixture(scope="module", params=SCHEMES)
def cloud(request: pytest.FixtureRequest) -> Iterator[tuple[str, Any]]:
    with endpoint(request.param) as running:
        yield request.param, running


@pytest.mark.parametrize("footer_stored", [True, False], ids=["stored-footer", "store-footer"])
async def test_datafusion_reads_what_the_store_wrote(
    cloud: tuple[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, footer_stored: bool
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
    footer = footer_bytes(staging.path)
    staging.release()
    key = "ns/ds/blocks/r/000000000-0000000000000000.parquet"
    size = await store.put_file(staging.path, key)

    file = CommittedFile(1, store.url(key), 0, 499, 500, key, size)
    cache = FooterCache(store, budget_bytes=1 << 20)
    await cache.load([file], {1: footer} if footer_stored else {})
    assert len(cache) == 1
    ctx = SessionContext()
    ctx.register_table("blocks", Table(cache.dataset(table.schema, [file])))
    rows = ctx.sql("SELECT * FROM blocks ORDER BY block_num").to_arrow_table()
    assert rows.equals(table)
    answer = ctx.sql(
        "SELECT count(*) AS n, max(block_num) AS top FROM blocks WHERE block_num >= 250"
    )
    assert answer.to_pylist() == [{"n": 250, "top": 499}]
