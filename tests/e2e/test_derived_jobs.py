"""Derived datasets materialized by workers: a deployed derived dataset becomes a job whose
segments workers run through the same writers and fence as raw ones, its rows exactly the
node's, following its dependency as it commits, and exact after a worker's kill -9."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator

import psycopg
import pytest

from ampd.datasets.manifest import manifest_hash
from ampd.metadb.managed import ManagedPostgres
from support.anvil import Anvil
from support.cluster import Cluster, fill_chain
from support.derived import even_logs_manifest, field, node_even_logs
from support.postgres import create_database, drop_database, running_cluster

pytestmark = [pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory, pg_cluster: ManagedPostgres) -> Iterator[dict]:
    with Anvil() as anvil:
        head = fill_chain(anvil, 40, txs_per_block=2)
        url = create_database(pg_cluster)
        cluster = Cluster(
            tmp_path_factory.mktemp("derivedjobs"),
            url,
            anvil,
            {"poll_interval_secs": 0.2, "writer": {"bytes": 1}},
        )
        try:
            cluster.start_controller()
            cluster.start_worker("w1", env={"AMP_EXTRACT_CHUNK_BLOCKS": "4"})
            yield {"cluster": cluster, "anvil": anvil, "head": head}
        finally:
            cluster.stop_all()
            drop_database(pg_cluster, url)


def rows_of(cluster: Cluster, hash_: str) -> list[tuple]:
    table = cluster.read_table(hash_, "even_logs")
    if not table.num_rows:
        return []
    cols = [table.column(c).to_pylist() for c in ("block_num", "tx_hash", "log_index", "address")]
    return sorted(zip(*cols, strict=True))


def register(cluster: Cluster, name: str, manifest: dict) -> str:
    with cluster.api() as api:
        body = {"namespace": "test", "name": name, "version": "1.0.0", "manifest": manifest}
        response = api.post("/datasets", json=body)
    assert response.status_code == 201, response.text
    return response.json()["manifest_hash"]


def test_a_bounded_derived_job_materializes_the_nodes_rows(env: dict):
    cluster, anvil, head = env["cluster"], env["anvil"], env["head"]
    cluster.register()  # test/chain
    raw_job = cluster.deploy({"end_block": str(head)})
    assert cluster.wait_job(raw_job)["status"] == "COMPLETED"
    manifest = even_logs_manifest("test/chain@1.0.0")
    hash_ = register(cluster, "evens", manifest)
    assert hash_ == manifest_hash(manifest)
    job = cluster.deploy({"end_block": "latest"}, ref="test/evens/versions/1.0.0")
    done = cluster.wait_job(job)
    assert done["status"] == "COMPLETED", done
    with psycopg.connect(cluster.db_url) as conn:
        kind = conn.execute("SELECT descriptor->>'kind' FROM jobs WHERE id = %s", (job,)).fetchone()
    assert kind == ("materialize-derived",)
    expected = node_even_logs(anvil, 0, head)
    assert rows_of(cluster, hash_) == expected and len(expected) > 40
    tagged = cluster.read_table(hash_, "tagged")
    assert sorted(tagged.column("t").to_pylist()) == sorted(f"log-{r[2]}" for r in expected)
    files = [f for f in cluster.committed_files(hash_) if f["table"] == "even_logs"]
    assert len(files) > 3, "committed as it went, range by range"


def following(cluster: Cluster, anvil: Anvil, name: str) -> tuple[int, int, str]:
    """A continuous raw job `name` and a continuous derived job `<name>_evens` over it,
    caught up with 6 new blocks: (raw job, derived job, derived manifest hash)."""
    register(cluster, name, {"kind": "evm-rpc", "network": "anvil", "start_block": 0})
    raw_job = cluster.deploy({"end_block": None}, ref=f"test/{name}/versions/1.0.0")
    hash_ = register(cluster, f"{name}_evens", even_logs_manifest(f"test/{name}@1.0.0"))
    job = cluster.deploy({"end_block": None}, ref=f"test/{name}_evens/versions/1.0.0")
    head = fill_chain(anvil, 6, txs_per_block=2)
    cluster.wait_until(
        lambda: rows_of(cluster, hash_) == node_even_logs(anvil, 0, head),
        timeout=60,
        what="the derived job caught up with its dependency",
    )
    return raw_job, job, hash_


def test_a_continuous_derived_job_follows_its_dependency_and_survives_kill_9(env: dict):
    cluster, anvil = env["cluster"], env["anvil"]
    raw_job, job, hash_ = following(cluster, anvil, "tail")
    # A worker killed with SIGKILL: a new one takes the segments over; nothing is doubled.
    cluster.procs["w1"].popen.send_signal(signal.SIGKILL)
    cluster.procs["w1"].popen.wait(10)
    head = fill_chain(anvil, 6, txs_per_block=2)
    cluster.start_worker("w2", env={"AMP_EXTRACT_CHUNK_BLOCKS": "4"})
    cluster.wait_until(
        lambda: rows_of(cluster, hash_) == node_even_logs(anvil, 0, head),
        timeout=90,
        what="the derived job caught up after the kill",
    )
    with cluster.api() as api:
        for job_id in (job, raw_job):
            api.put(f"/jobs/{job_id}/stop")


def test_a_reorg_in_the_dependency_is_recomputed_in_the_derived_dataset(env: dict):
    cluster, anvil = env["cluster"], env["anvil"]
    raw_job, job, hash_ = following(cluster, anvil, "forked")
    head = anvil.block_number()
    before = node_even_logs(anvil, head - 4, head)
    anvil.rpc("anvil_reorg", 5, [])  # the last 5 blocks are mined again, without their txs
    new_head = anvil.mine(2)
    assert before and not node_even_logs(anvil, head - 4, new_head), "the reorg dropped logs"
    cluster.wait_until(
        lambda: rows_of(cluster, hash_) == node_even_logs(anvil, 0, new_head),
        timeout=60,
        what="the derived dataset on the new chain",
    )
    logs = "".join(proc.log() for name, proc in cluster.procs.items() if name.startswith("w"))
    assert logs.count("reorg at block") >= 2, "both the raw and the derived segment rewound"
    with cluster.api() as api:
        for job_id in (job, raw_job):
            api.put(f"/jobs/{job_id}/stop")


def test_a_derived_dataset_starts_where_its_dependency_does(env: dict):
    cluster, anvil = env["cluster"], env["anvil"]
    head = anvil.block_number()
    register(cluster, "late", {"kind": "evm-rpc", "network": "anvil", "start_block": 7})
    raw_job = cluster.deploy({"end_block": str(head)}, ref="test/late/versions/1.0.0")
    assert cluster.wait_job(raw_job)["status"] == "COMPLETED"
    hash_ = register(cluster, "late_evens", even_logs_manifest("test/late@1.0.0"))
    job = cluster.deploy({"end_block": "latest"}, ref="test/late_evens/versions/1.0.0")
    done = cluster.wait_job(job, timeout=60)
    assert done["status"] == "COMPLETED", done
    assert [s["start_block"] for s in cluster.segments(job)][:1] == [7]
    assert rows_of(cluster, hash_) == node_even_logs(anvil, 7, head)


def test_a_frozen_worker_cannot_commit_derived_rows_after_failover(env: dict):
    """SIGSTOP the worker of a continuous derived job until its segments go to another
    worker; thawed, its commits are refused by the fence, and the output stays exact."""
    cluster, anvil = env["cluster"], env["anvil"]
    raw_job, job, hash_ = following(cluster, anvil, "frozen")
    live = [p for n, p in cluster.procs.items() if n.startswith("w") and p.popen.poll() is None]
    (frozen,) = live  # the one worker: the raw and the derived segments are both its
    frozen.signal(signal.SIGSTOP)
    try:
        cluster.start_worker("w3", env={"AMP_EXTRACT_CHUNK_BLOCKS": "4"})
        head = fill_chain(anvil, 6, txs_per_block=2)
        cluster.wait_until(
            lambda: rows_of(cluster, hash_) == node_even_logs(anvil, 0, head),
            timeout=90,
            what="the derived job caught up on the other worker",
        )
    finally:
        frozen.signal(signal.SIGCONT)
    head = fill_chain(anvil, 4, txs_per_block=2)
    cluster.wait_until(
        lambda: rows_of(cluster, hash_) == node_even_logs(anvil, 0, head),
        timeout=90,
        what="the derived job after the thaw",
    )
    with cluster.api() as api:
        for job_id in (job, raw_job):
            api.put(f"/jobs/{job_id}/stop")


def test_a_derived_job_survives_a_metadata_database_restart(tmp_path, env: dict):
    """The metadata database goes away under a continuous raw job and a continuous derived
    one over it, and comes back: both carry on, the derived rows exactly the node's."""
    anvil = env["anvil"]
    with running_cluster(tmp_path / "own-pg" / "metadb") as pg:
        url = create_database(pg)
        cluster = Cluster(tmp_path / "cluster", url, anvil, {"poll_interval_secs": 0.2})
        try:
            cluster.start_controller()
            cluster.start_worker("w1", env={"AMP_EXTRACT_CHUNK_BLOCKS": "4"})
            raw_job, job, hash_ = following(cluster, anvil, "restarted")
            pg.stop(fast=True)
            head = fill_chain(anvil, 4, txs_per_block=2)  # mined while the database is down
            time.sleep(3)  # an outage long enough for every process to notice it
            pg.start()
            head = fill_chain(anvil, 2, txs_per_block=2)
            cluster.wait_until(
                lambda: rows_of(cluster, hash_) == node_even_logs(anvil, 0, head),
                timeout=120,
                what="the derived job caught up after the restart",
            )
            for name, proc in cluster.procs.items():
                assert proc.popen.poll() is None, f"{name} exited:\n{proc.log()}"
            assert "reconnected to the metadata database" in cluster.procs["w1"].log()
            with cluster.api() as api:
                for job_id in (job, raw_job):
                    api.put(f"/jobs/{job_id}/stop")
        finally:
            cluster.stop_all()


def test_a_derived_dataset_over_a_derived_one(env: dict):
    """A derived dataset whose only dependency is derived: its SQL reads the other's table
    and calls its JavaScript function (`ev.tag`), its block headers come from the raw
    dataset under both."""
    cluster, anvil = env["cluster"], env["anvil"]
    head = anvil.block_number()
    register(cluster, "base", {"kind": "evm-rpc", "network": "anvil", "start_block": 0})
    raw_job = cluster.deploy({"end_block": str(head)}, ref="test/base/versions/1.0.0")
    assert cluster.wait_job(raw_job)["status"] == "COMPLETED"
    register(cluster, "base_evens", even_logs_manifest("test/base@1.0.0"))
    middle = cluster.deploy({"end_block": "latest"}, ref="test/base_evens/versions/1.0.0")
    assert cluster.wait_job(middle)["status"] == "COMPLETED"
    quarters = {
        "kind": "manifest",
        "dependencies": {"ev": "test/base_evens@1.0.0"},
        "tables": {
            "quarters": {
                "input": {
                    "sql": "SELECT block_num, log_index, ev.tag(log_index) AS t "
                    "FROM ev.even_logs WHERE log_index % 4 = 0"
                },
                "schema": {
                    "arrow": {
                        "fields": [
                            field("_block_num", "UInt64"),
                            field("block_num", "UInt64"),
                            field("log_index", "UInt32"),
                            field("t", "Utf8", True),
                        ]
                    }
                },
            }
        },
        "functions": {},
    }
    hash_ = register(cluster, "quarters", quarters)
    job = cluster.deploy({"end_block": "latest"}, ref="test/quarters/versions/1.0.0")
    done = cluster.wait_job(job, timeout=60)
    assert done["status"] == "COMPLETED", done
    table = cluster.read_table(hash_, "quarters")
    rows = sorted(
        zip(*(table.column(c).to_pylist() for c in ("block_num", "log_index", "t")), strict=True)
    )
    expected = [(n, i, f"log-{i}") for n, _, i, _ in node_even_logs(anvil, 0, head) if i % 4 == 0]
    assert rows == expected and expected
    files = cluster.committed_files(hash_)
    assert files and files[-1]["end_block"] == head, "committed through the raw head"
