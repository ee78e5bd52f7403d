"""ampd on each cloud's data dir (moto's S3, Azurite, fake-gcs-server): `ampd dump` writes
its Parquet files straight to the bucket, none to its own disk, and they read back (ranged
reads through the store) as exactly the node's blocks, transactions and logs; a controller, a worker and a query server that share only the
PostgreSQL URL and the bucket's URL extract a job exactly and answer SQL over it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest

from ampd.metadb.managed import ManagedPostgres
from ampd.storage.cloud import open_cloud_store
from support.anvil import Anvil
from support.clouds import SCHEMES, endpoint, new_bucket
from support.cluster import Cluster, assert_exact_output, fill_chain
from support.expected import expected_tables, fetch_raw
from support.postgres import create_database, drop_database
from support.procs import AMPD, run

pytestmark = [pytest.mark.timeout(300)]
LAST_BLOCK = 59


@pytest.fixture(scope="module")
def chain() -> Iterator[tuple[Anvil, dict[str, int]]]:
    with Anvil(hardfork="cancun") as anvil:
        fill_chain(anvil, LAST_BLOCK + 1, txs_per_block=2)
        tables = expected_tables(fetch_raw(anvil, range(LAST_BLOCK + 1)))
        yield anvil, {name: len(rows) for name, rows in tables.items()}


@pytest.fixture(scope="module", params=SCHEMES)
def cloud(request: pytest.FixtureRequest) -> Iterator[tuple[str, Any]]:
    with endpoint(request.param) as running:
        yield request.param, running


async def test_dump_writes_to_the_bucket_and_reads_back(
    tmp_path: Path,
    chain: tuple[Anvil, dict[str, int]],
    cloud: tuple[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    anvil, counts = chain
    scheme, running = cloud
    bucket = new_bucket(running, monkeypatch)  # this process reads the output through it too
    providers = tmp_path / "providers"
    providers.mkdir()
    (providers / "anvil.toml").write_text(
        f'kind = "evm-rpc"\nnetwork = "anvil"\nurl = "{anvil.url}"\n'
    )
    manifest = tmp_path / "chain.json"
    manifest.write_text(json.dumps({"kind": "evm-rpc", "network": "anvil", "start_block": 0}))
    home = tmp_path / "home"
    (home / "tmp").mkdir(parents=True)
    env = {**running.env, "HOME": str(home), "TMPDIR": str(home / "tmp")}
    result = run(
        [AMPD, "dump", "--manifest", str(manifest), "--providers-dir", str(providers),
         "--data-dir", f"{scheme}://{bucket}/dumps", "--start", "0", "--end", str(LAST_BLOCK)],
        env=env,
        cwd=home,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    output = f"{scheme}://{bucket}/dumps/_/chain"
    assert summary["complete"] and summary["output"] == output
    assert [p for p in home.rglob("*.parquet") if "ampd-staging" not in p.parts] == []

    store = open_cloud_store(output)
    keys = [o.key for o in await store.list()]
    numbers = {}
    for table, expected in counts.items():
        files = [k for k in keys if k.startswith(f"{table}/")]
        read = [pq.read_table(store.open(k), columns=["block_num"]) for k in files]
        numbers[table] = sorted(n for t in read for n in t.column(0).to_pylist())
        assert len(numbers[table]) == expected > 0, (table, files)
    assert numbers["blocks"] == list(range(LAST_BLOCK + 1))


def test_a_cluster_on_the_bucket_extracts_exactly_and_serves(
    tmp_path: Path,
    pg_cluster: ManagedPostgres,
    chain: tuple[Anvil, dict[str, int]],
    cloud: tuple[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    anvil, counts = chain
    scheme, running = cloud
    bucket = new_bucket(running, monkeypatch)
    url = create_database(pg_cluster)
    settings = {"data_dir": f"{scheme}://{bucket}/amp", "segment_blocks": 20}
    cluster = Cluster(tmp_path / "cluster", url, anvil, settings)
    homes = {name: tmp_path / f"host-{name}" for name in ("controller", "w1", "server")}
    envs = {}
    for name, home in homes.items():  # each process a HOME and TMPDIR of its own
        (home / "tmp").mkdir(parents=True)
        envs[name] = {**running.env, "HOME": str(home), "TMPDIR": str(home / "tmp")}
    try:
        cluster.start_controller(env=envs["controller"])
        cluster.start_worker("w1", env=envs["w1"])
        manifest_hash = cluster.register()
        job_id = cluster.deploy({"end_block": str(LAST_BLOCK), "parallelism": 3})
        job = cluster.wait_job(job_id, timeout=180)
        assert job["status"] == "COMPLETED", cluster.logs()
        assert assert_exact_output(cluster, manifest_hash, 0, LAST_BLOCK) == counts

        _, jsonl, _ = cluster.start_server(env=envs["server"])
        sql = 'SELECT count(*) AS n, max(block_num) AS hi FROM "test/chain".transactions'
        answer = httpx.post(jsonl, content=sql, timeout=60)
        assert answer.status_code == 200, answer.text
        row = json.loads(answer.text.splitlines()[0])
        assert row == {"n": counts["transactions"], "hi": LAST_BLOCK}, row
    finally:
        cluster.stop_all()
        drop_database(pg_cluster, url)
    for home in homes.values():
        assert [p for p in home.rglob("*.parquet") if "ampd-staging" not in p.parts] == [], home
