"""ampd on an S3 data dir when the store misbehaves: a worker killed with -9 in the middle of
a multipart upload leaves no object the metadata DB points at, and another worker finishes
its segments exactly; wrong credentials and malformed `data_dir` URLs stop the worker and
`ampd dump` with one line naming `data_dir` and the URL, before anything is written."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest

from ampd.metadb.managed import ManagedPostgres
from ampd.storage.cloud import UPLOAD_CHUNK_BYTES, open_cloud_store
from support.anvil import Anvil
from support.cluster import Cluster, assert_exact_output, fill_chain, fill_chain_with_calldata
from support.dumps import dump_command, write_inputs
from support.postgres import create_database, drop_database
from support.procs import run
from support.s3 import moto_s3, moto_s3_with_auth
from support.s3_faults import S3Fault, S3FaultProxy

pytestmark = [pytest.mark.timeout(400)]

SEGMENT_BLOCKS = 20  # x 7 transactions x 100 kB of calldata: ~14 MB, two parts a segment


@pytest.fixture(scope="module")
def chain() -> Iterator[tuple[Anvil, int]]:
    with Anvil(hardfork="cancun") as anvil:
        fill_chain(anvil, 10, txs_per_block=4)  # blocks with logs
        yield anvil, fill_chain_with_calldata(anvil, 60)


def host_env(root: Path, name: str, base: dict[str, str]) -> dict[str, str]:
    """A process's own HOME and TMPDIR (its staging area), with `base` on top."""
    home = root / f"host-{name}"
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return {**base, "HOME": str(home), "TMPDIR": str(home / "tmp")}


def error_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("error:")]


def registered_workers(db_url: str) -> int:
    """Workers in the metadata DB (none when it was never even migrated)."""
    with psycopg.connect(db_url) as conn:
        if conn.execute("SELECT to_regclass('workers')").fetchone()[0] is None:
            return 0
        return conn.execute("SELECT count(*) FROM workers").fetchone()[0]


def test_a_worker_killed_mid_upload_leaves_only_complete_committed_files(
    tmp_path: Path,
    pg_cluster: ManagedPostgres,
    chain: tuple[Anvil, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    anvil, head = chain
    db_url = create_database(pg_cluster)
    bucket = f"amp-{uuid.uuid4().hex[:10]}"
    with moto_s3() as s3, S3FaultProxy(s3.url) as doomed, S3FaultProxy(s3.url) as healthy:
        s3.create_bucket(bucket)
        for name, value in s3.env.items():  # this process reads the output through them
            monkeypatch.setenv(name, value)
        cluster = Cluster(
            tmp_path / "cluster",
            db_url,
            anvil,
            {
                "data_dir": f"s3://{bucket}/amp",
                "segment_blocks": SEGMENT_BLOCKS,
                "worker_timeout_secs": 3,
                "writer": {"segment_flush_interval_secs": 600},  # one file a segment
            },
        )
        # w1's part uploads are held by its proxy: it is surely mid-upload when killed.
        doomed.set_faults(S3Fault("hold", request="upload_part", delay=300))
        try:
            cluster.start_controller(env=host_env(tmp_path, "controller", s3.env))
            cluster.start_worker("w1", env=host_env(tmp_path, "w1", doomed.env(s3.env)))
            manifest_hash = cluster.register()
            job_id = cluster.deploy({"end_block": str(head), "parallelism": 2})

            # A part received whole and held, its answer not yet sent: w1 waits mid-upload.
            held = doomed.wait_for(lambda p: p.injected["hold"] > 0, timeout=180)
            assert held, f"w1 never uploaded a part\n{cluster.logs()}"
            assert doomed.in_flight["upload_part"] > 0
            cluster.procs["w1"].signal(signal.SIGKILL)
            cluster.procs["w1"].wait(30)
            cluster.start_worker("w2", env=host_env(tmp_path, "w2", healthy.env(s3.env)))

            job = cluster.wait_job(job_id, timeout=240)
            assert job["status"] == "COMPLETED", cluster.logs()
            assert any(s["epoch"] >= 2 for s in cluster.segments(job_id)), "no failover"
            assert healthy.requests["upload_part"] >= 2, "w2 wrote no multipart file"

            # Every committed file is a whole object: its footer readable, its rows as the DB says.
            files = cluster.committed_files(manifest_hash)
            store = open_cloud_store(f"s3://{bucket}/amp")
            for f in files:
                assert asyncio.run(store.exists(f["path"])), f"{f['path']} is committed, not stored"
                with store.open(f["path"]) as handle:
                    assert pq.read_metadata(handle).num_rows == f["rows"], f["path"]
            big = [f for f in files if f["table"] == "transactions"]
            sizes = [asyncio.run(store.size(f["path"])) for f in big]
            assert max(sizes) > UPLOAD_CHUNK_BYTES, "no transactions file went in parts"
            assert_exact_output(cluster, manifest_hash, 0, head)

            # What the kill left: multipart uploads never completed, invisible as objects.
            open_uploads = s3.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
            assert open_uploads, "w1's upload was not in progress"
            objects = set(s3.keys(bucket))
            committed = {f"amp/{f['path']}" for f in files}
            for upload in open_uploads:
                assert upload["Key"] not in objects and upload["Key"] not in committed
        finally:
            doomed.release()
            cluster.stop_all()
            drop_database(pg_cluster, db_url)


# --- wrong credentials and malformed URLs ---


@pytest.fixture(scope="module")
def node() -> Iterator[Anvil]:
    with Anvil() as anvil:
        anvil.mine(5)
        yield anvil


def dump(tmp_path: Path, anvil: Anvil, data_dir: str, env: dict[str, str]):  # noqa: ANN201
    inputs = write_inputs(tmp_path / "inputs", anvil.url)
    command = dump_command(inputs, data_dir, 0, 4, "--processes", "0")  # type: ignore[arg-type]
    return run(command, env=host_env(tmp_path, f"dump-{uuid.uuid4().hex[:6]}", env), timeout=120)


def test_wrong_credentials_stop_worker_and_dump_before_anything_is_written(
    tmp_path: Path, pg_cluster: ManagedPostgres, node: Anvil, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket = f"amp-{uuid.uuid4().hex[:10]}"
    with moto_s3_with_auth(tmp_path / "moto.log", (bucket,)) as s3:
        url = f"s3://{bucket}/amp"
        for name, value in s3.env.items():  # the right key works: the store is reachable
            monkeypatch.setenv(name, value)
        asyncio.run(open_cloud_store(url).check())
        wrong = {**s3.env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}

        db_url = create_database(pg_cluster)
        cluster = Cluster(tmp_path / "cluster", db_url, node, {"data_dir": url})
        try:
            proc = cluster.start_worker("w1", env=host_env(tmp_path, "w1", wrong), wait=False)
            assert proc.wait(120) == 1, proc.log()
            errors = error_lines(proc.log())
            assert len(errors) == 1, proc.log()
            assert errors[0].startswith(f"error: data_dir {url}: SignatureDoesNotMatch"), errors
            assert registered_workers(db_url) == 0
        finally:
            cluster.stop_all()
            drop_database(pg_cluster, db_url)

        result = dump(tmp_path, node, url, wrong)
        assert result.returncode == 1, result.stderr
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith(f"error: data_dir {url}: SignatureDoesNotMatch"), lines

        unknown = dump(tmp_path, node, url, {**s3.env, "AWS_ACCESS_KEY_ID": "AKIANOBODY"})
        assert unknown.returncode == 1
        assert error_lines(unknown.stderr)[0].startswith(
            f"error: data_dir {url}: InvalidAccessKeyId"
        )
        assert s3.keys(bucket) == []  # nothing was written by any of them


BAD_URLS = ["ftp://x", "s3://", "s3://Bad_Bucket!"]


@pytest.mark.parametrize("data_dir", BAD_URLS)
def test_a_malformed_data_dir_is_one_line_for_dump(
    tmp_path: Path, node: Anvil, data_dir: str
) -> None:
    result = dump(tmp_path, node, data_dir, {})
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith(f"error: data_dir {data_dir!r}: "), lines
    assert not list(tmp_path.rglob("*.parquet"))


@pytest.mark.parametrize("data_dir", BAD_URLS)
def test_a_malformed_data_dir_is_one_line_for_the_worker(
    tmp_path: Path, pg_cluster: ManagedPostgres, node: Anvil, data_dir: str
) -> None:
    db_url = create_database(pg_cluster)
    cluster = Cluster(tmp_path / "cluster", db_url, node, {"data_dir": data_dir})
    try:
        proc = cluster.start_worker("w1", env=host_env(tmp_path, "w1", {}), wait=False)
        assert proc.wait(60) == 1
        lines = [line for line in proc.log().splitlines() if line.strip()]
        assert len(lines) == 1, proc.log()
        assert "'data_dir'" in lines[0] and repr(data_dir) in lines[0], lines
        assert registered_workers(db_url) == 0
    finally:
        cluster.stop_all()
        drop_database(pg_cluster, db_url)
    assert not list(tmp_path.rglob("*.parquet"))


def test_a_missing_gcs_service_account_is_one_line_for_dump(tmp_path: Path, node: Anvil) -> None:
    missing = tmp_path / "no-such-service-account.json"
    result = dump(
        tmp_path, node, "gs://amp-data/amp", {"GOOGLE_SERVICE_ACCOUNT_PATH": str(missing)}
    )
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: data_dir 'gs://amp-data/amp': "), lines
    assert str(missing) in lines[0], lines
    assert not list(tmp_path.rglob("*.parquet"))
