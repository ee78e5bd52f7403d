"""ampd on an S3 data dir (moto's S3 server on 127.0.0.1): a controller, workers and a query
server that share nothing but the PostgreSQL URL and an `s3://` URL, each with a HOME and
TMPDIR of its own (and run in that HOME), extract a job exactly, fail over a killed worker, and
serve the node's counts over JSON Lines and Flight; no process leaves a Parquet file on its
local disk."""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pyarrow.flight as flight
import pytest

from ampd.metadb.managed import ManagedPostgres
from support.anvil import Anvil
from support.cluster import Cluster, assert_exact_output, fill_chain
from support.postgres import create_database, drop_database
from support.procs import AMPD, Proc, run
from support.s3 import S3Endpoint, moto_s3

pytestmark = [pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def chain() -> Iterator[tuple[Anvil, int]]:
    with Anvil(hardfork="cancun") as anvil:
        yield anvil, fill_chain(anvil, 300, txs_per_block=2)


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Endpoint]:
    with moto_s3() as endpoint:
        yield endpoint


@pytest.fixture
def bucket(s3: S3Endpoint, monkeypatch: pytest.MonkeyPatch) -> str:
    for name, value in s3.env.items():  # this process reads the output through them too
        monkeypatch.setenv(name, value)
    name = f"amp-{uuid.uuid4().hex[:10]}"
    s3.create_bucket(name)
    return name


def host_env(root: Path, name: str, s3: S3Endpoint) -> tuple[dict[str, str], Path]:
    """A process's own 'machine': a working directory, HOME and TMPDIR of its own."""
    home = root / f"host-{name}"
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return {**s3.env, "HOME": str(home), "TMPDIR": str(home / "tmp")}, home


def parquet_files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*.parquet") if "ampd-staging" not in p.parts]


def test_processes_sharing_only_two_urls_extract_fail_over_and_serve(
    tmp_path: Path,
    pg_cluster: ManagedPostgres,
    chain,
    s3: S3Endpoint,
    bucket: str,  # noqa: ANN001
) -> None:
    anvil, head = chain
    url = create_database(pg_cluster)
    data_dir = f"s3://{bucket}/amp/data"
    cluster = Cluster(
        tmp_path / "cluster",
        url,
        anvil,
        {
            "data_dir": data_dir,
            "segment_blocks": 50,
            "worker_timeout_secs": 3,
            "provider": {"rate_limit_per_minute": 1200},
        },
    )
    slow = {"AMP_EXTRACT_CHUNK_BLOCKS": "5", "AMP_EXTRACT_CHUNKS_IN_FLIGHT": "1"}
    homes = []
    try:
        env, home = host_env(tmp_path, "controller", s3)
        homes.append(home)
        cluster.start_controller(env=env, cwd=home)
        for node in ("w1", "w2", "w3"):
            env, home = host_env(tmp_path, node, s3)
            homes.append(home)
            cluster.start_worker(node, env={**env, **slow}, cwd=home)
        manifest_hash = cluster.register()
        job_id = cluster.deploy({"end_block": str(head), "parallelism": 6})
        assert len(cluster.segments(job_id)) >= 6

        def mid_segment() -> str | None:
            for seg in cluster.segments(job_id):
                if seg["status"] == "RUNNING" and seg["checkpoint_block"] is not None:
                    return seg["node_id"]
            return None

        victim = cluster.wait_until(mid_segment, what="a worker mid-segment")
        cluster.procs[victim].signal(signal.SIGKILL)
        job = cluster.wait_job(job_id, timeout=180)
        assert job["status"] == "COMPLETED", cluster.logs()
        assert any(s["epoch"] >= 2 for s in cluster.segments(job_id)), "no failover happened"
        counts = assert_exact_output(cluster, manifest_hash, 0, head)
        # The killed worker's uncommitted objects were deleted by whoever took its segment:
        # the bucket holds exactly the committed files.
        committed = {f"amp/data/{f['path']}" for f in cluster.committed_files(manifest_hash)}
        assert set(s3.keys(bucket)) == committed

        env, home = host_env(tmp_path, "server", s3)
        homes.append(home)
        _, jsonl, port = cluster.start_server(env=env, cwd=home)
        answer = httpx.post(
            jsonl,
            content='SELECT count(*) AS n FROM "test/chain".transactions',
            timeout=60,
        )
        assert answer.status_code == 200, answer.text
        assert json.loads(answer.text.splitlines()[0])["n"] == counts["transactions"]
        client = flight.connect(f"grpc://127.0.0.1:{port}")
        sql = b'SELECT count(*) AS n FROM "test/chain".logs'
        info = client.get_flight_info(flight.FlightDescriptor.for_command(sql))
        logs = client.do_get(info.endpoints[0].ticket).read_all()
        assert logs.column("n")[0].as_py() == counts["logs"] > 0
        client.close()
    finally:
        cluster.stop_all()
        drop_database(pg_cluster, url)
    for home in homes:  # nothing but (cleaned) staging on any process's own disk
        assert parquet_files_under(home) == [], home
        staging = home / "tmp" / "ampd-staging"
        leftovers = [p for p in staging.rglob("*") if p.is_file()] if staging.exists() else []
        assert leftovers == [] or home.name == f"host-{victim}", leftovers
    assert parquet_files_under(cluster.root) == []


def test_dump_writes_to_s3(tmp_path: Path, chain, s3: S3Endpoint, bucket: str) -> None:  # noqa: ANN001
    anvil, head = chain
    providers = tmp_path / "providers"
    providers.mkdir()
    (providers / "anvil.toml").write_text(
        f'kind = "evm-rpc"\nnetwork = "anvil"\nurl = "{anvil.url}"\n'
    )
    manifest = tmp_path / "chain.json"
    manifest.write_text(json.dumps({"kind": "evm-rpc", "network": "anvil", "start_block": 0}))
    env, home = host_env(tmp_path, "dump", s3)
    result = run(
        [AMPD, "dump", "--manifest", str(manifest), "--providers-dir", str(providers),
         "--data-dir", f"s3://{bucket}/dumps", "--start", "0", "--end", "99"],
        env=env,
        cwd=home,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["complete"] and summary["output"] == f"s3://{bucket}/dumps/_/chain"
    assert parquet_files_under(home) == []
    assert os.environ["AWS_ENDPOINT"] == s3.url


def test_a_missing_bucket_is_one_clear_line_and_nothing_is_written(
    tmp_path: Path,
    pg_cluster: ManagedPostgres,
    chain,
    s3: S3Endpoint,
    bucket: str,  # noqa: ANN001
) -> None:
    anvil, _head = chain
    url = create_database(pg_cluster)
    missing = f"s3://no-such-{uuid.uuid4().hex[:8]}/amp"
    cluster = Cluster(tmp_path / "cluster", url, anvil, {"data_dir": missing})
    env, home = host_env(tmp_path, "w", s3)
    try:
        proc = cluster.start_worker("w1", env=env, wait=False)
        assert proc.wait(60) == 1
        errors = [line for line in proc.log().splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and f"data_dir {missing}" in errors[0], proc.log()
        assert "NoSuchBucket" in errors[0], errors[0]
        with psycopg.connect(url) as conn:  # the worker did not even register
            assert conn.execute("SELECT count(*) FROM workers").fetchone()[0] == 0
    finally:
        cluster.stop_all()
        drop_database(pg_cluster, url)
    assert parquet_files_under(home) == []


def test_providers_and_manifests_dirs_in_the_bucket(
    tmp_path: Path,
    pg_cluster: ManagedPostgres,
    chain,
    s3: S3Endpoint,
    bucket: str,  # noqa: ANN001
) -> None:
    """All three `*_dir` keys as s3:// URLs: manifests registered from the bucket at start,
    providers created, listed, read and deleted there over the Admin API, and a worker that
    reads its provider from the bucket extracts a job exactly."""
    anvil, _head = chain
    url = create_database(pg_cluster)
    root = f"s3://{bucket}/amp"
    client = s3.client()
    client.put_object(
        Bucket=bucket,
        Key="amp/manifests/tokens.json",
        Body=b'{"kind": "evm-rpc", "network": "anvil", "start_block": 7}',
    )
    client.put_object(Bucket=bucket, Key="amp/manifests/broken.json", Body=b'{"kind": 1}')
    settings = {
        "data_dir": f"{root}/data",
        "providers_dir": f"{root}/providers",
        "manifests_dir": f"{root}/manifests",
        "segment_blocks": 50,
    }
    cluster = Cluster(tmp_path / "cluster", url, anvil, settings)
    env, home = host_env(tmp_path, "controller", s3)
    try:
        controller = cluster.start_controller(env=env, cwd=home)
        with cluster.api() as api:
            revision = api.get("/datasets/_/tokens/versions/dev")
            assert revision.status_code == 200 and revision.json()["start_block"] == 7
            assert "broken.json" in controller.log()
            assert api.get("/providers").json() == {"providers": []}
            created = api.post(
                "/providers",
                json={"name": "node", "kind": "evm-rpc", "network": "anvil", "url": anvil.url},
            )
            assert created.status_code == 201, created.text
            assert api.get("/providers/node").json()["url"] == anvil.url
            assert [p["name"] for p in api.get("/providers").json()["providers"]] == ["node"]
        stored = client.get_object(Bucket=bucket, Key="amp/providers/node.toml")["Body"].read()
        assert anvil.url.encode() in stored

        wenv, whome = host_env(tmp_path, "w1", s3)
        cluster.start_worker("w1", env=wenv, cwd=whome)
        manifest_hash = cluster.register()
        job_id = cluster.deploy({"end_block": "99"})
        assert cluster.wait_job(job_id, timeout=120)["status"] == "COMPLETED", cluster.logs()
        assert_exact_output(cluster, manifest_hash, 0, 99)

        with cluster.api() as api:
            assert api.delete("/providers/node").status_code == 204
            assert api.get("/providers/node").status_code == 404
        listed = client.list_objects_v2(Bucket=bucket, Prefix="amp/providers/")
        assert listed.get("KeyCount", 0) == 0
    finally:
        cluster.stop_all()
        drop_database(pg_cluster, url)
    assert parquet_files_under(home) == [] and parquet_files_under(whome) == []


def test_an_unreachable_providers_dir_is_one_clear_line(
    tmp_path: Path,
    pg_cluster: ManagedPostgres,
    chain,
    s3: S3Endpoint,
    bucket: str,  # noqa: ANN001
) -> None:
    anvil, _head = chain
    url = create_database(pg_cluster)
    missing = f"s3://no-such-{uuid.uuid4().hex[:8]}/providers"
    settings = {"data_dir": f"s3://{bucket}/data", "providers_dir": missing}
    cluster = Cluster(tmp_path / "cluster", url, anvil, settings)
    env, home = host_env(tmp_path, "controller", s3)
    try:
        proc = Proc(
            [AMPD, "--config", str(cluster.config_path), "controller"],
            tmp_path / "controller.log",
            env=env,
            cwd=home,
        )
        cluster.procs["controller"] = proc  # stopped by stop_all if it did not exit
        assert proc.wait(60) == 1
        errors = [line for line in proc.log().splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and f"providers_dir {missing}" in errors[0], proc.log()
        assert "NoSuchBucket" in errors[0], errors[0]
    finally:
        cluster.stop_all()
        drop_database(pg_cluster, url)


def test_a_reorg_on_the_bucket_retires_files_and_queries_follow(
    tmp_path: Path,
    pg_cluster: ManagedPostgres,
    s3: S3Endpoint,
    bucket: str,
) -> None:
    """Reorg retirement is the same on S3: the files past the fork are retired (their
    objects stay, no query reads them) and the server answers the canonical chain."""
    url = create_database(pg_cluster)
    with Anvil(hardfork="cancun") as anvil:
        head = fill_chain(anvil, 40, txs_per_block=2)
        settings = {"data_dir": f"s3://{bucket}/amp", "poll_interval_secs": 0.2}
        cluster = Cluster(tmp_path / "cluster", url, anvil, settings)
        env, home = host_env(tmp_path, "node", s3)
        try:
            cluster.start_controller(env=env, cwd=home)
            worker = cluster.start_worker("w", env=env, cwd=home)
            manifest_hash = cluster.register()
            cluster.deploy({"end_block": None})

            def committed_through(block: int) -> bool:
                ends = [f["end_block"] for f in cluster.committed_files(manifest_hash)]
                return bool(ends) and max(ends) >= block

            cluster.wait_until(lambda: committed_through(head), timeout=60, what="the head")
            anvil.rpc("anvil_reorg", 5, [])  # the last 5 blocks again, without their txs
            new_head = anvil.mine(2)
            cluster.wait_until(lambda: committed_through(new_head), timeout=60, what="new head")
            cluster.wait_until(lambda: "reorg at block" in worker.log(), timeout=10, what="reorg")
            counts = assert_exact_output(cluster, manifest_hash, 0, new_head)
            with psycopg.connect(url) as conn:
                retired = conn.execute(
                    "SELECT path FROM files WHERE retired_at IS NOT NULL"
                ).fetchall()
            assert len(retired) >= 3
            keys = set(s3.keys(bucket))
            assert all(f"amp/{path}" in keys for (path,) in retired)

            _, jsonl, _ = cluster.start_server(env=env, cwd=home)
            sql = 'SELECT count(*) AS n, max(block_num) AS hi FROM "test/chain".transactions'
            answer = httpx.post(jsonl, content=sql, timeout=60)
            assert answer.status_code == 200, answer.text
            row = json.loads(answer.text.splitlines()[0])
            assert row["n"] == counts["transactions"] and row["hi"] <= new_head
        finally:
            cluster.stop_all()
            drop_database(pg_cluster, url)
