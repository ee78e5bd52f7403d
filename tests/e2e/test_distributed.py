"""Controller and workers as real processes on a real PostgreSQL and a real anvil:
assignment, failover, fencing, graceful shutdown, lost notifications, database restarts."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from ampd.metadb.managed import ManagedPostgres
from support.anvil import Anvil
from support.cluster import Cluster, assert_exact_output, fill_chain
from support.postgres import create_database, drop_database
from support.procs import AMPD, run

pytestmark = [pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def chain() -> Iterator[tuple[Anvil, int]]:
    """A node with 600 blocks of transactions and logs, shared by the tests of this module."""
    with Anvil(hardfork="cancun") as anvil:
        head = fill_chain(anvil, 600, txs_per_block=2)
        yield anvil, head


@pytest.fixture
def make_cluster(tmp_path: Path, pg_cluster: ManagedPostgres, chain) -> Iterator:  # noqa: ANN001
    made: list[tuple[Cluster, str]] = []

    def make(**settings) -> Cluster:  # noqa: ANN003
        url = create_database(pg_cluster)
        cluster = Cluster(tmp_path / f"c{len(made)}", url, chain[0], settings)
        made.append((cluster, url))
        return cluster

    yield make
    for cluster, url in made:
        cluster.stop_all()
        drop_database(pg_cluster, url)


def test_three_workers_share_a_job_and_output_is_exact(make_cluster, chain) -> None:  # noqa: ANN001
    anvil, head = chain
    cluster = make_cluster()
    cluster.start_controller()
    for node in ("w1", "w2", "w3"):
        cluster.start_worker(node)
    manifest_hash = cluster.register()
    job_id = cluster.deploy({"end_block": str(head), "parallelism": 6})
    assert len(cluster.segments(job_id)) >= 6
    job = cluster.wait_job(job_id)
    assert job["status"] == "COMPLETED", cluster.logs()
    completed = cluster.completed_by(job_id)
    assert set(completed) == {"w1", "w2", "w3"}, completed
    counts = assert_exact_output(cluster, manifest_hash, 0, head)
    assert counts["transactions"] >= 2 * 600 and counts["logs"] > 0


def test_deploy_without_workers_waits_then_starts(make_cluster, chain) -> None:  # noqa: ANN001
    anvil, head = chain
    cluster = make_cluster()
    cluster.start_controller()
    manifest_hash = cluster.register()
    job_id = cluster.deploy({"end_block": "100"})
    time.sleep(1.0)  # several scheduler passes with nobody to assign to
    assert cluster.job(job_id)["status"] == "SCHEDULED"
    assert all(s["status"] == "PENDING" for s in cluster.segments(job_id))
    cluster.start_worker("late")
    assert cluster.wait_job(job_id)["status"] == "COMPLETED"
    assert_exact_output(cluster, manifest_hash, 0, 100)


def test_second_worker_with_same_node_id_exits_1(make_cluster, chain) -> None:  # noqa: ANN001
    cluster = make_cluster()
    cluster.start_controller()
    first = cluster.start_worker("dup")
    second = run(
        [AMPD, "--config", str(cluster.config_path), "worker", "--node-id", "dup"], timeout=60
    )
    assert second.returncode == 1
    assert "node id 'dup' is already in use" in second.stderr
    assert first.popen.poll() is None, "the first worker keeps running"
    manifest_hash = cluster.register()
    job_id = cluster.deploy({"end_block": "50"})
    assert cluster.wait_job(job_id)["status"] == "COMPLETED"
    assert_exact_output(cluster, manifest_hash, 0, 50)
