"""Footers on a remote data dir: every committed file's footer is in the metadata DB, equal to
the object's own, and the query server plans from them: with the S3 endpoint gone, COUNT(*)
over every file is still answered (no request reaches the store), while a query that needs
data pages fails with the store's error."""

from __future__ import annotations

import json
import struct
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from ampd.metadb.managed import ManagedPostgres
from support.anvil import Anvil
from support.cluster import Cluster, assert_exact_output, fill_chain
from support.postgres import create_database, drop_database
from support.s3 import moto_s3

pytestmark = [pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def chain() -> Iterator[tuple[Anvil, int]]:
    with Anvil(hardfork="cancun") as anvil:
        yield anvil, fill_chain(anvil, 30, txs_per_block=2)


def query(url: str, sql: str) -> httpx.Response:
    return httpx.post(url, content=sql, timeout=60)


def test_queries_plan_from_footers_kept_in_the_metadata_db(
    tmp_path: Path,
    pg_cluster: ManagedPostgres,
    chain,  # noqa: ANN001
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    anvil, head = chain
    url = create_database(pg_cluster)
    cluster: Cluster | None = None
    try:
        with moto_s3() as s3:  # this test's own endpoint: it is stopped half-way
            for name, value in s3.env.items():
                monkeypatch.setenv(name, value)
            bucket = f"amp-{uuid.uuid4().hex[:10]}"
            s3.create_bucket(bucket)
            cluster = Cluster(
                tmp_path / "cluster",
                url,
                anvil,
                # A file per 5-block chunk: many small files per table.
                {"data_dir": f"s3://{bucket}/amp", "segment_blocks": 15, "writer": {"bytes": 1}},
            )
            chunks = {"AMP_EXTRACT_CHUNK_BLOCKS": "5", "AMP_EXTRACT_CHUNKS_IN_FLIGHT": "1"}
            cluster.start_controller(env=s3.env)
            cluster.start_worker("w1", env={**s3.env, **chunks})
            manifest_hash = cluster.register()
            job_id = cluster.deploy({"end_block": str(head)})
            assert cluster.wait_job(job_id, timeout=180)["status"] == "COMPLETED", cluster.logs()
            counts = assert_exact_output(cluster, manifest_hash, 0, head)
            check_footers(url, s3.client(), bucket, min_files=3 * (head + 1) // 5)
            for name in ("w1", "controller"):  # stopped while their store is still there
                cluster.procs.pop(name).stop()
            _, jsonl, _ = cluster.start_server(env=s3.env)
        # The endpoint is gone: only the metadata DB is left.
        for table in ("blocks", "transactions", "logs"):
            answer = query(jsonl, f'SELECT count(*) AS n FROM "test/chain".{table}')
            assert answer.status_code == 200, answer.text
            assert json.loads(answer.text.splitlines()[0])["n"] == counts[table], table
        answer = query(jsonl, 'SELECT sum(gas_used) AS g FROM "test/chain".blocks')
        assert answer.status_code == 500, answer.text
        error = answer.json()
        assert (
            error["error_code"] == "QUERY_FAILED" and "Connection refused" in error["error_message"]
        )
        assert "Traceback" not in error["error_message"]
    finally:
        if cluster is not None:
            cluster.stop_all()
        drop_database(pg_cluster, url)


def check_footers(url: str, client: Any, bucket: str, min_files: int) -> None:
    """A footer per committed file, equal to the last bytes of the object."""
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT f.path, f.object_size, c.footer FROM files f "
            "LEFT JOIN footer_cache c ON c.file_id = f.id WHERE f.retired_at IS NULL"
        ).fetchall()
    assert len(rows) >= min_files
    for key, size, footer in rows:
        assert footer is not None, f"no footer stored for {key}"
        footer = bytes(footer)
        obj = client.get_object(Bucket=bucket, Key=f"amp/{key}")["Body"].read()
        assert len(obj) == size and obj.endswith(footer), key
        (length,) = struct.unpack("<I", footer[-8:-4])
        assert length + 8 == len(footer) < size


def test_a_local_table_of_many_files_is_planned_from_cached_footers_too(
    tmp_path: Path, pg_cluster: ManagedPostgres
) -> None:
    """A local data dir with a file per block (MANY_FILES or more per table) is planned from
    the footers in the metadata DB: with every file's own footer broken on disk, COUNT(*)
    and a sum over data pages still answer as before."""
    from ampd.sql.catalog import MANY_FILES

    url = create_database(pg_cluster)
    with Anvil(hardfork="cancun") as anvil:
        head = fill_chain(anvil, MANY_FILES + 5, txs_per_block=1)
        cluster = Cluster(
            tmp_path / "cluster", url, anvil, {"segment_blocks": head + 1, "writer": {"bytes": 1}}
        )
        try:
            cluster.start_controller()
            chunks = {"AMP_EXTRACT_CHUNK_BLOCKS": "1", "AMP_EXTRACT_CHUNKS_IN_FLIGHT": "2"}
            cluster.start_worker("w1", env=chunks)
            manifest_hash = cluster.register()
            job_id = cluster.deploy({"end_block": str(head)})
            assert cluster.wait_job(job_id, timeout=180)["status"] == "COMPLETED", cluster.logs()
            counts = assert_exact_output(cluster, manifest_hash, 0, head)
            files = cluster.committed_files(manifest_hash)
            assert sum(1 for f in files if f["table"] == "blocks") >= MANY_FILES
            _, jsonl, _ = cluster.start_server()
            sql = 'SELECT count(*) AS n FROM "test/chain".blocks'
            assert json.loads(query(jsonl, sql).text.splitlines()[0])["n"] == counts["blocks"]
            total = 'SELECT sum(gas_used) AS g FROM "test/chain".blocks'
            before = json.loads(query(jsonl, total).text.splitlines()[0])["g"]
            for path in cluster.data_dir.rglob("*.parquet"):  # the footer's length and magic
                with path.open("r+b") as f:
                    f.seek(-8, 2)
                    f.write(b"\0" * 8)
            for table in ("blocks", "transactions", "logs"):
                answer = query(jsonl, f'SELECT count(*) AS n FROM "test/chain".{table}')
                assert answer.status_code == 200, answer.text
                assert json.loads(answer.text.splitlines()[0])["n"] == counts[table], table
            answer = query(jsonl, total)
            assert answer.status_code == 200, answer.text
            assert json.loads(answer.text.splitlines()[0])["g"] == before
        finally:
            cluster.stop_all()
            drop_database(pg_cluster, url)
