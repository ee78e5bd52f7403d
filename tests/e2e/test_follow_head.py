"""Continuous jobs on a real anvil: following the head, the finalized tag, reorgs, and a
PostgreSQL restart in the middle of a job."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from ampd.metadb.managed import ManagedPostgres
from support.anvil import Anvil
from support.cluster import Cluster, assert_exact_output, fill_chain
from support.postgres import create_database, drop_database, running_cluster

pytestmark = [pytest.mark.timeout(300)]


@pytest.fixture
def anvil() -> Iterator[Anvil]:
    with Anvil(hardfork="cancun") as node:
        yield node


@pytest.fixture
def cluster(tmp_path: Path, pg_cluster: ManagedPostgres, anvil: Anvil) -> Iterator[Cluster]:
    url = create_database(pg_cluster)
    made = Cluster(tmp_path / "cluster", url, anvil, {"poll_interval_secs": 0.2})
    yield made
    made.stop_all()
    drop_database(pg_cluster, url)


def wait_committed(cluster: Cluster, manifest_hash: str, block: int, timeout: float = 30) -> float:
    began = time.monotonic()
    cluster.wait_until(
        lambda: cluster.committed_to(manifest_hash) >= block,
        timeout=timeout,
        what=f"block {block} committed",
    )
    return time.monotonic() - began


def test_blocks_mined_after_deploy_are_committed_within_3s(cluster: Cluster, anvil: Anvil) -> None:
    head = fill_chain(anvil, 150, txs_per_block=2)
    cluster.start_controller()
    cluster.start_worker("w")
    manifest_hash = cluster.register()
    job_id = cluster.deploy({"end_block": None, "parallelism": 2})
    wait_committed(cluster, manifest_hash, head)
    delays = []
    for _ in range(5):
        mined = fill_chain(anvil, 1, txs_per_block=1) if not delays else anvil.mine(1)
        delays.append(wait_committed(cluster, manifest_hash, mined, timeout=30))
    assert max(delays) < 3.0, f"commit delays after mining: {delays}"
    assert cluster.job(job_id)["status"] == "RUNNING"
    assert_exact_output(cluster, manifest_hash, 0, cluster.committed_to(manifest_hash))
    tails = [s for s in cluster.segments(job_id) if s["end_block"] is None]
    assert len(tails) == 1, "a continuous job has exactly one open tail segment"


def test_finalized_only_follows_the_finalized_tag(cluster: Cluster, anvil: Anvil) -> None:
    head = anvil.mine(150)
    cluster.start_controller()
    cluster.start_worker("w")
    manifest = {"kind": "evm-rpc", "network": "anvil", "finalized_blocks_only": True}
    manifest_hash = cluster.register(name="finalized", manifest=manifest)
    cluster.deploy({"end_block": None}, ref="test/finalized/versions/1.0.0")
    finalized = int(anvil.rpc("eth_getBlockByNumber", "finalized", False)["number"], 16)
    assert finalized == head - 64
    wait_committed(cluster, manifest_hash, finalized)
    time.sleep(1.0)  # several polls: it must not go past the finalized block
    assert cluster.committed_to(manifest_hash) == finalized
    assert_exact_output(cluster, manifest_hash, 0, finalized)


def test_reorg_at_the_head_ends_on_the_canonical_chain(cluster: Cluster, anvil: Anvil) -> None:
    head = fill_chain(anvil, 60, txs_per_block=2)
    cluster.start_controller()
    cluster.start_worker("w")
    manifest_hash = cluster.register()
    cluster.deploy({"end_block": None})
    wait_committed(cluster, manifest_hash, head)
    replaced = anvil.block(head - 3, full=False)["hash"]
    anvil.rpc("anvil_reorg", 5, [])  # the last 5 blocks are mined again, without their txs
    assert anvil.block(head - 3, full=False)["hash"] != replaced
    new_head = anvil.mine(2)
    wait_committed(cluster, manifest_hash, new_head)
    cluster.wait_until(
        lambda: "reorg at block" in cluster.procs["w"].log(), timeout=10, what="the reorg logged"
    )
    assert_exact_output(cluster, manifest_hash, 0, new_head)
    with psycopg.connect(cluster.db_url) as conn:
        retired = conn.execute(
            "SELECT count(*) FROM files WHERE retired_at IS NOT NULL"
        ).fetchone()[0]
    assert retired >= 3, "the files past the fork were retired, in every table"


def test_postgres_restart_mid_job(tmp_path: Path, anvil: Anvil) -> None:
    head = fill_chain(anvil, 300, txs_per_block=2)
    with running_cluster(tmp_path / "own-pg" / "metadb") as pg:
        url = create_database(pg)
        cluster = Cluster(
            tmp_path / "cluster",
            url,
            anvil,
            {"segment_blocks": 100, "provider": {"rate_limit_per_minute": 1200}},
        )
        slow = {"AMP_EXTRACT_CHUNK_BLOCKS": "5", "AMP_EXTRACT_CHUNKS_IN_FLIGHT": "1"}
        try:
            cluster.start_controller()
            cluster.start_worker("w1", env=slow)
            cluster.start_worker("w2", env=slow)
            manifest_hash = cluster.register()
            job_id = cluster.deploy({"end_block": str(head)})
            cluster.wait_until(
                lambda: any(s["checkpoint_block"] is not None for s in cluster.segments(job_id)),
                what="progress before the restart",
            )
            pg.stop(fast=True)
            time.sleep(10)
            pg.start()
            job = cluster.wait_job(job_id, timeout=180)
            assert job["status"] == "COMPLETED", cluster.logs()
            for name, proc in cluster.procs.items():
                assert proc.popen.poll() is None, f"{name} exited:\n{proc.log()}"
            assert "reconnected to the metadata database" in cluster.procs["w1"].log()
            assert_exact_output(cluster, manifest_hash, 0, head)
        finally:
            cluster.stop_all()
