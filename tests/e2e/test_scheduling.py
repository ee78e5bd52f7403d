"""Scheduling rules with real processes: dependencies, priority, worker pins, worker
capacity, retries with backoff up to max_retries, and fatal errors that are never retried."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import psycopg
import pytest

from ampd.metadb.managed import ManagedPostgres
from support.anvil import Anvil
from support.cluster import TERMINAL, Cluster, assert_exact_output
from support.faultproxy import Fault, FaultProxy
from support.postgres import create_database, drop_database

pytestmark = [pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def anvil() -> Iterator[Anvil]:
    with Anvil() as node:
        node.mine(200)
        yield node


@pytest.fixture
def make_cluster(tmp_path: Path, pg_cluster: ManagedPostgres, anvil: Anvil) -> Iterator:
    made: list[tuple[Cluster, str]] = []

    def make(node: Anvil | None = None, url: str | None = None, **settings) -> Cluster:  # noqa: ANN003
        db = create_database(pg_cluster)
        node = node or anvil
        cluster = Cluster(tmp_path / f"c{len(made)}", db, node, settings)
        if url is not None:  # point the provider somewhere else (a fault proxy)
            text = (cluster.root / "providers" / "anvil.toml").read_text()
            (cluster.root / "providers" / "anvil.toml").write_text(text.replace(node.url, url))
        made.append((cluster, db))
        return cluster

    yield make
    for cluster, db in made:
        cluster.stop_all()
        drop_database(pg_cluster, db)


def events(cluster: Cluster, job_id: int) -> list[dict]:
    with cluster.api() as api:
        return api.get(f"/jobs/{job_id}/events").json()["events"]


def test_dependent_job_waits_for_its_dependency(make_cluster) -> None:  # noqa: ANN001
    cluster = make_cluster()
    cluster.start_controller()
    first_hash = cluster.register(name="first")
    second_hash = cluster.register(
        name="second", manifest={"kind": "evm-rpc", "network": "anvil", "start_block": 1}
    )
    first = cluster.deploy({"end_block": "150"}, ref="test/first/versions/1.0.0")
    second = cluster.deploy(
        {"end_block": "150", "depends_on": [first]}, ref="test/second/versions/1.0.0"
    )
    cluster.start_worker("w")
    assert cluster.wait_job(first)["status"] == "COMPLETED"
    assert cluster.wait_job(second)["status"] == "COMPLETED"
    first_done = next(e for e in events(cluster, first) if e["event_type"] == "COMPLETED")
    second_assigned = next(
        e for e in events(cluster, second) if e["event_type"] == "SEGMENT_ASSIGNED"
    )
    assert datetime.fromisoformat(second_assigned["created_at"]) >= datetime.fromisoformat(
        first_done["created_at"]
    )
    assert_exact_output(cluster, first_hash, 0, 150)
    assert_exact_output(cluster, second_hash, 1, 150)


def test_higher_priority_is_assigned_first(make_cluster) -> None:  # noqa: ANN001
    cluster = make_cluster()
    cluster.start_controller()
    cluster.register(name="low")
    cluster.register(
        name="high", manifest={"kind": "evm-rpc", "network": "anvil", "start_block": 2}
    )
    low = cluster.deploy({"end_block": "50", "priority": 1}, ref="test/low/versions/1.0.0")
    high = cluster.deploy({"end_block": "50", "priority": 9}, ref="test/high/versions/1.0.0")
    cluster.start_worker("w")  # both wait until now, then go out in one pass
    assert cluster.wait_job(low)["status"] == cluster.wait_job(high)["status"] == "COMPLETED"
    first_low = min(e["id"] for e in events(cluster, low) if e["event_type"] == "SEGMENT_ASSIGNED")
    first_high = min(
        e["id"] for e in events(cluster, high) if e["event_type"] == "SEGMENT_ASSIGNED"
    )
    assert first_high < first_low


def test_prefix_pin_keeps_segments_on_matching_workers(make_cluster) -> None:  # noqa: ANN001
    cluster = make_cluster(segment_blocks=20)
    cluster.start_controller()
    for node in ("cpu-1", "gpu-1", "gpu-2"):
        cluster.start_worker(node)
    manifest_hash = cluster.register()
    job_id = cluster.deploy({"end_block": "119", "worker_id": "gpu*"})
    assert cluster.wait_job(job_id)["status"] == "COMPLETED"
    owners = {s["node_id"] for s in cluster.segments(job_id)}
    assert owners <= {"gpu-1", "gpu-2"} and len(owners) == 2, owners
    assert_exact_output(cluster, manifest_hash, 0, 119)
    with cluster.api() as api:
        exact = api.post(
            "/datasets/test/chain/versions/1.0.0/deploy",
            json={"end_block": "10", "worker_id": "cpu-9"},
        )
    assert exact.status_code == 400 and exact.json()["error_code"] == "WORKER_NOT_AVAILABLE"


def test_a_worker_never_runs_more_segments_than_its_capacity(make_cluster) -> None:  # noqa: ANN001
    cluster = make_cluster(segment_blocks=50, worker_max_segments=1)
    cluster.start_controller()
    cluster.start_worker("w")
    with cluster.api() as api:
        (worker,) = api.get("/workers").json()["workers"]
    assert worker["capacity"] == 1 and worker["active_segments"] == 0
    manifest_hash = cluster.register()
    job_id = cluster.deploy({"end_block": "149"})
    busy: list[int] = []  # segments assigned or running, at each look

    def finished() -> bool:
        busy.append(sum(s["status"] in ("ASSIGNED", "RUNNING") for s in cluster.segments(job_id)))
        return cluster.job(job_id)["status"] in TERMINAL

    cluster.wait_until(finished, timeout=60, what="the job finished")
    assert cluster.job(job_id)["status"] == "COMPLETED"
    assert max(busy) <= 1, busy
    segments = cluster.segments(job_id)
    assert len(segments) == 3
    # From the rows and events: each segment was assigned only after the one before it
    # completed (the completion is a segment's last update).
    assigned = {
        e["detail"]["segment_id"]: datetime.fromisoformat(e["created_at"])
        for e in events(cluster, job_id)
        if e["event_type"] == "SEGMENT_ASSIGNED"
    }
    runs = sorted(
        (assigned[s["id"]], datetime.fromisoformat(s["updated_at"]), s["status"]) for s in segments
    )
    assert [status for _, _, status in runs] == ["COMPLETED"] * 3
    for (_, completed, _), (next_assigned, _, _) in zip(runs, runs[1:], strict=False):
        assert next_assigned > completed, runs
    assert_exact_output(cluster, manifest_hash, 0, 149)


def test_failures_are_retried_with_backoff_then_error(make_cluster, anvil: Anvil) -> None:  # noqa: ANN001
    with FaultProxy(anvil.url, [Fault("http_403", method="eth_getBlockByNumber")]) as proxy:
        cluster = make_cluster(url=proxy.url, max_retries=2)
        cluster.start_controller()
        cluster.start_worker("w")
        cluster.register()
        job_id = cluster.deploy({"end_block": "20"})
        job = cluster.wait_job(job_id, timeout=120)
        assert job["status"] == "ERROR"
        with cluster.api() as api:
            progress = api.get(f"/jobs/{job_id}/progress").json()
        assert progress["detail"]["error_code"] == "SEGMENT_RETRIES_EXHAUSTED"
        assert "403" in progress["detail"]["error_message"]
        failures = [e for e in events(cluster, job_id) if e["event_type"] == "SEGMENT_FAILED"]
        assert len(failures) == 3  # the first try and max_retries = 2 retries
        times = [datetime.fromisoformat(e["created_at"]) for e in failures]
        gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)]
        assert gaps[1] > gaps[0] * 1.3, f"backoff does not grow: {gaps}"
        assert proxy.injected["http_403"] >= 3


def test_fatal_errors_are_not_retried(make_cluster, anvil: Anvil) -> None:  # noqa: ANN001
    with FaultProxy(anvil.url, [Fault("oversized_value", method="eth_getBlockByNumber")]) as proxy:
        cluster = make_cluster(url=proxy.url, max_retries=5)
        cluster.start_controller()
        cluster.start_worker("w")
        cluster.register()
        job_id = cluster.deploy({"end_block": "20"})
        job = cluster.wait_job(job_id, timeout=60)
        assert job["status"] == "FATAL"
        with cluster.api() as api:
            detail = api.get(f"/jobs/{job_id}/progress").json()["detail"]
        assert "gas_limit" in detail["error_message"] and "blocks" in detail["error_message"]
        segments = cluster.segments(job_id)
        assert [s["attempts"] for s in segments] == [1]
        with psycopg.connect(cluster.db_url) as conn:
            assigned = conn.execute(
                "SELECT count(*) FROM job_events WHERE job_id = %s AND event_type = 'SEGMENT_ASSIGNED'",
                (job_id,),
            ).fetchone()[0]
        assert assigned == 1, "a fatal segment is never handed out again"
        assert proxy.injected["oversized_value"] >= 1
        assert json.dumps(detail)
