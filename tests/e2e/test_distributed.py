"""Controller and workers as real processes on a real PostgreSQL and a real anvil:
assignment, failover, fencing, graceful shutdown, lost notifications, database restarts,
running segments split for workers that join."""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from ampd.metadb.managed import ManagedPostgres
from support.anvil import Anvil
from support.cluster import Cluster, assert_exact_output, fill_chain
from support.faultproxy import Fault, FaultProxy
from support.postgres import create_database, drop_database
from support.procs import AMPD, children_of, gone_within, run

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


def test_heartbeats_keep_their_pace_while_a_worker_extracts_flat_out(
    make_cluster, chain, record_property
) -> None:  # noqa: ANN001
    """Six segments on one worker at full speed, small chunks and a file per chunk: the
    most work its event loop does. Its heartbeats (every second) must not fall behind.
    However fast the machine, the worker is kept at it for at least three heartbeats: the
    range is extracted again, as another dataset (another start block), until they are seen."""
    anvil, head = chain
    cluster = make_cluster(segment_blocks=100, writer={"bytes": 1})
    cluster.start_controller()
    cluster.start_worker("busy", env={"AMP_EXTRACT_CHUNK_BLOCKS": "10"})
    beats: list[float] = []
    with psycopg.connect(cluster.db_url, autocommit=True) as conn:
        for start in range(10):
            name = f"chain{start}"
            manifest = {"kind": "evm-rpc", "network": "anvil", "start_block": start}
            manifest_hash = cluster.register(name=name, manifest=manifest)
            job_id = cluster.deploy({"end_block": str(head)}, ref=f"test/{name}/versions/1.0.0")
            while cluster.job(job_id)["status"] not in ("COMPLETED", "FAILED", "FATAL", "ERROR"):
                (at,) = conn.execute(
                    "SELECT extract(epoch FROM heartbeat_at) FROM workers WHERE node_id = 'busy'"
                ).fetchone()
                if not beats or float(at) != beats[-1]:
                    beats.append(float(at))
                time.sleep(0.05)
            assert cluster.job(job_id)["status"] == "COMPLETED", cluster.logs()
            assert_exact_output(cluster, manifest_hash, start, head)
            if len(beats) >= 3:
                break
    gaps = [b - a for a, b in zip(beats, beats[1:], strict=False)]
    assert len(gaps) >= 2, f"ten jobs ended before two heartbeats: {beats}"
    record_property("largest_heartbeat_gap_secs", round(max(gaps), 3))
    print(f"largest heartbeat gap {max(gaps):.3f} s over {len(gaps)} heartbeats")
    # The real bound is worker_timeout_secs (5 s): a gap that long looks like a dead worker.
    assert max(gaps) < 3.0, gaps


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


# Slow extraction down (20 requests/s per worker, 5-block fetches, files closed every
# second) so that a test can act while a segment is half done, whatever the machine.
SLOW = {"provider": {"rate_limit_per_minute": 1200}}
SLOW_ENV = {"AMP_EXTRACT_CHUNK_BLOCKS": "5", "AMP_EXTRACT_CHUNKS_IN_FLIGHT": "1"}


def running_segment_of(cluster: Cluster, job_id: int, node: str) -> dict | None:
    """A segment `node` runs that has committed something but is not finished."""
    for seg in cluster.segments(job_id):
        if (
            seg["node_id"] == node
            and seg["status"] == "RUNNING"
            and seg["checkpoint_block"] is not None
            and seg["checkpoint_block"] < seg["end_block"]
        ):
            return seg
    return None


def objects_on_disk(cluster: Cluster) -> set[str]:
    return {
        str(p.relative_to(cluster.data_dir))
        for p in cluster.data_dir.rglob("*.parquet")
        if not any(part.startswith(".") for part in p.relative_to(cluster.data_dir).parts)
    }


# A slow node: each request answered 0.5 s late, one request per 10-block fetch (a batch),
# few fetches at once. A worker waits on the node for most of its time and takes several
# seconds over the range, so that workers started meanwhile find most of it still to do.
SPLIT_ENV = {"AMP_EXTRACT_CHUNK_BLOCKS": "10", "AMP_EXTRACT_CHUNKS_IN_FLIGHT": "1"}
SLOW_NODE_DELAY_SECS = 0.5
SLOW_NODE_BATCH = 20  # a fetch's calls: a block and its receipts, for each of 10 blocks


def run_with_joiners(
    make_cluster,  # noqa: ANN001
    anvil: Anvil,
    end: int,
    joiners: tuple[str, ...],
    after_deploy: Callable[[Cluster, int], None] | None = None,
) -> tuple[Cluster, str, int, float]:
    """Blocks 0..end as one segment on worker w1 behind a slow node; `joiners` start once
    its first file is committed. Returns the cluster, manifest hash, job id and the job's
    wall time (without the time the node was held for the joiners to start)."""
    with FaultProxy(anvil.url, [Fault("delay", delay=SLOW_NODE_DELAY_SECS)]) as slow:
        cluster = make_cluster(
            segment_blocks=100_000,
            split_min_blocks=20,
            provider={"url": slow.url, "rpc_batch_size": SLOW_NODE_BATCH},
        )
        cluster.start_controller()
        cluster.start_worker("w1", env=SPLIT_ENV)
        manifest_hash = cluster.register()
        began = time.monotonic()
        job_id = cluster.deploy({"end_block": str(end)})
        assert len(cluster.segments(job_id)) == 1
        if after_deploy is not None:
            after_deploy(cluster, job_id)
        cluster.wait_until(
            lambda: cluster.segments(job_id)[0]["checkpoint_block"] is not None,
            what="the first file committed",
        )
        # The node hangs while the workers start (that takes seconds on a busy machine):
        # they join a segment that is far from done, however long they take.
        slow.hold()
        held_at = time.monotonic()
        started = [cluster.start_worker(n, env=SPLIT_ENV, wait=False) for n in joiners]
        for joiner in started:
            joiner.wait_for_log(r"worker \S+ registered")
        held = time.monotonic() - held_at
        slow.release()
        job = cluster.wait_job(job_id)
        elapsed = time.monotonic() - began - held
    assert job["status"] == "COMPLETED", cluster.logs()
    return cluster, manifest_hash, job_id, elapsed


def assert_segments_tile(cluster: Cluster, job_id: int, end: int) -> list[dict]:
    """The job's segments cover 0..end without gap or overlap, each committed to its end."""
    segments = sorted(cluster.segments(job_id), key=lambda s: s["start_block"])
    assert segments[0]["start_block"] == 0 and segments[-1]["end_block"] == end
    for a, b in zip(segments, segments[1:], strict=False):
        assert b["start_block"] == a["end_block"] + 1, "segments leave a gap or overlap"
    assert all(s["checkpoint_block"] == s["end_block"] for s in segments)
    return segments


def test_workers_that_join_take_over_parts_of_a_running_segment(make_cluster, chain) -> None:  # noqa: ANN001
    end = 399
    cluster, manifest_hash, job_id, elapsed = run_with_joiners(
        make_cluster, chain[0], end, ("w2", "w3")
    )
    print(f"0..{end} on one slow node, two workers joining: {elapsed:.1f}s")
    segments = assert_segments_tile(cluster, job_id, end)
    assert set(cluster.completed_by(job_id)) == {"w1", "w2", "w3"}, segments
    with cluster.api() as api:
        events = api.get(f"/jobs/{job_id}/events").json()["events"]
    splits = [e["detail"] for e in events if e["event_type"] == "SEGMENT_SPLIT"]
    assert len(splits) == len(segments) - 1
    assert {s["new_segment_id"] for s in splits} == {s["id"] for s in segments[1:]}
    assert_exact_output(cluster, manifest_hash, 0, end)
    committed = {f["path"] for f in cluster.committed_files(manifest_hash)}
    assert objects_on_disk(cluster) == committed, "an uncommitted object was left behind"


def refuse_the_first_split(cluster: Cluster, job_id: int) -> None:
    """The database refuses the first segment inserted from now on (a split's record)."""
    with psycopg.connect(cluster.db_url, autocommit=True) as conn:
        conn.execute("CREATE SEQUENCE split_faults")
        conn.execute(
            """CREATE FUNCTION refuse_first_split() RETURNS trigger LANGUAGE plpgsql AS $$
               BEGIN
                 IF nextval('split_faults') = 1 THEN
                   RAISE EXCEPTION 'injected: the split is not recorded';
                 END IF;
                 RETURN NEW;
               END $$"""
        )
        conn.execute(
            "CREATE TRIGGER refuse_first_split BEFORE INSERT ON segments "
            "FOR EACH ROW EXECUTE FUNCTION refuse_first_split()"
        )


def test_a_split_that_is_not_recorded_is_run_again_from_its_checkpoint(
    make_cluster,  # noqa: ANN001
    chain,  # noqa: ANN001
) -> None:
    end = 199
    cluster, manifest_hash, job_id, _ = run_with_joiners(
        make_cluster, chain[0], end, ("w2",), after_deploy=refuse_the_first_split
    )
    log = cluster.procs["w1"].log()
    assert "injected: the split is not recorded" in log
    # The run stopped at its shortened end, its completion was refused, and reconciliation
    # ran the segment again, under the same epoch, from its checkpoint.
    refused = re.search(r"segment 1 cannot complete: it is committed up to block (\d+) of 199", log)
    assert refused, log
    assert f"segment 1 (job {job_id}, epoch 1): blocks 0..{end} from {int(refused[1]) + 1}" in log
    assert "Traceback" not in log
    first = assert_segments_tile(cluster, job_id, end)[0]
    assert first["epoch"] == 1 and first["node_id"] == "w1"
    assert_exact_output(cluster, manifest_hash, 0, end)
    committed = {f["path"] for f in cluster.committed_files(manifest_hash)}
    assert objects_on_disk(cluster) == committed, "an uncommitted object was left behind"


def test_kill_9_worker_mid_segment_is_taken_over(make_cluster, chain) -> None:  # noqa: ANN001
    anvil, head = chain
    cluster = make_cluster(segment_blocks=150, worker_timeout_secs=3, worker_processes=2, **SLOW)
    cluster.start_controller()
    victim = cluster.start_worker("a-victim", env=SLOW_ENV)
    manifest_hash = cluster.register()
    job_id = cluster.deploy({"end_block": "299"})  # two segments, both on the only worker
    cluster.wait_until(
        lambda: running_segment_of(cluster, job_id, "a-victim"), what="victim mid-segment"
    )
    cluster.start_worker("b-survivor", env=SLOW_ENV)
    fetchers = children_of(victim.pid)
    assert len(fetchers) == 2, "a fetch process per core"
    victim.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    victim.wait(10)
    # The kernel kills the fetch processes with their worker: none is left running.
    assert gone_within(fetchers, within=5), f"orphaned fetch processes: {fetchers}"

    def taken_over() -> float | None:
        segs = cluster.segments(job_id)
        unfinished = [s for s in segs if s["status"] != "COMPLETED"]
        if all(s["node_id"] == "b-survivor" for s in unfinished):
            return time.monotonic() - killed_at
        return None

    elapsed = cluster.wait_until(taken_over, timeout=30, what="segments owned by the survivor")
    assert elapsed <= 3 + 2, f"failover took {elapsed:.1f}s"
    assert cluster.wait_job(job_id)["status"] == "COMPLETED"
    assert_exact_output(cluster, manifest_hash, 0, 299)
    assert any(s["epoch"] >= 2 for s in cluster.segments(job_id)), "reassignment bumps the epoch"
    committed = {f["path"] for f in cluster.committed_files(manifest_hash)}
    assert objects_on_disk(cluster) == committed, "an uncommitted object was left behind"


def test_frozen_worker_cannot_commit_after_reassignment(make_cluster, chain) -> None:  # noqa: ANN001
    anvil, head = chain
    # Reconciliation would also notice the lost segment; keep it out of the way so that the
    # fence is what stops the commit.
    cluster = make_cluster(segment_blocks=1000, reconcile_interval_secs=600, **SLOW)
    cluster.start_controller()
    frozen = cluster.start_worker("a-frozen", env=SLOW_ENV)
    manifest_hash = cluster.register()
    job_id = cluster.deploy({"end_block": "149"})
    first = cluster.wait_until(
        lambda: running_segment_of(cluster, job_id, "a-frozen"), what="frozen mid-segment"
    )
    frozen.signal(signal.SIGSTOP)
    try:
        cluster.start_worker("b-thawed", env=SLOW_ENV)
        cluster.wait_until(
            lambda: any(s["node_id"] == "b-thawed" for s in cluster.segments(job_id)),
            timeout=30,
            what="reassignment to b-thawed",
        )
        assert cluster.wait_job(job_id)["status"] == "COMPLETED"
    finally:
        frozen.signal(signal.SIGCONT)
    # Back from the freeze, the old owner finishes the file in hand and tries to commit it:
    # the fence refuses (new epoch) and it deletes its object.
    frozen.wait_for_log(r"no longer owned by a-frozen at epoch 1", timeout=60)
    assert frozen.popen.poll() is None, "the fenced-out worker keeps running"
    segments = cluster.segments(job_id)
    assert segments[0]["epoch"] > first["epoch"]
    assert_exact_output(cluster, manifest_hash, 0, 149)
    committed = {f["path"] for f in cluster.committed_files(manifest_hash)}
    assert objects_on_disk(cluster) == committed, "an uncommitted object was left behind"


def freeze_outside_a_transaction(cluster: Cluster, proc) -> None:  # noqa: ANN001
    """SIGSTOP `proc` at a moment when none of its database sessions is inside a
    transaction (a worker frozen mid-commit would hold the segment's row lock)."""
    with psycopg.connect(cluster.db_url, autocommit=True) as conn:
        for _ in range(50):
            proc.signal(signal.SIGSTOP)
            time.sleep(0.05)
            busy = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state LIKE 'idle in transaction%' AND pid <> pg_backend_pid()"
            ).fetchone()[0]
            if not busy:
                return
            proc.signal(signal.SIGCONT)
            time.sleep(0.05)
    raise AssertionError("the worker was inside a transaction at every try")


def test_zombie_aborted_mid_commit_leaves_no_uncommitted_object(make_cluster, chain) -> None:  # noqa: ANN001
    """A frozen worker comes back after its segment was reassigned and completed, puts its
    file group into the store, and is aborted by reconciliation while its commit waits:
    the objects it put are deleted, though the new owner's orphan cleanup ran long before."""
    cluster = make_cluster(segment_blocks=1000, reconcile_interval_secs=600, **SLOW)
    cluster.start_controller()
    zombie = cluster.start_worker("a-zombie", env=SLOW_ENV)
    manifest_hash = cluster.register()
    job_id = cluster.deploy({"end_block": "149"})
    seg = cluster.wait_until(
        lambda: running_segment_of(cluster, job_id, "a-zombie"), what="zombie mid-segment"
    )
    freeze_outside_a_transaction(cluster, zombie)
    with psycopg.connect(cluster.db_url) as lock:
        try:
            cluster.start_worker("b-owner", env=SLOW_ENV)
            assert cluster.wait_job(job_id)["status"] == "COMPLETED"
            # A slow database: the zombie's next commit waits (its files already in the store),
            # for the table, since a fenced-out update would not wait for a locked row.
            lock.execute("LOCK TABLE segments IN SHARE MODE")
        finally:
            zombie.signal(signal.SIGCONT)

        def zombie_commit_waiting() -> bool:
            with psycopg.connect(cluster.db_url, autocommit=True) as conn:
                return bool(
                    conn.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        " AND wait_event_type = 'Lock' AND query LIKE '%%checkpoint_block%%'"
                    ).fetchone()[0]
                )

        cluster.wait_until(zombie_commit_waiting, timeout=60, what="the zombie's commit waiting")
        with psycopg.connect(cluster.db_url, autocommit=True) as conn:  # a reconcile, now
            conn.execute("SELECT pg_notify('job_actions', %s)", ('{"node_id": "a-zombie"}',))
        zombie.wait_for_log(rf"segment {seg['id']} is no longer ours; aborting", timeout=30)
        lock.rollback()
    zombie.wait_for_log(rf"segment {seg['id']}: aborted", timeout=30)
    assert zombie.popen.poll() is None, "the aborted worker keeps running"
    assert_exact_output(cluster, manifest_hash, 0, 149)
    committed = {f["path"] for f in cluster.committed_files(manifest_hash)}
    assert objects_on_disk(cluster) == committed, "the zombie left an uncommitted object"


def test_sigterm_mid_job_exits_0_and_another_worker_finishes(make_cluster, chain) -> None:  # noqa: ANN001
    anvil, head = chain
    cluster = make_cluster(segment_blocks=1000, shutdown_timeout_secs=15, **SLOW)
    cluster.start_controller()
    leaving = cluster.start_worker("a-leaving", env=SLOW_ENV)
    manifest_hash = cluster.register()
    job_id = cluster.deploy({"end_block": "199"})
    cluster.wait_until(lambda: running_segment_of(cluster, job_id, "a-leaving"), what="mid-segment")
    cluster.start_worker("b-staying", env=SLOW_ENV)
    leaving.signal(signal.SIGTERM)
    began = time.monotonic()
    assert leaving.wait(30) == 0, leaving.log()
    assert time.monotonic() - began <= 15
    assert "released 1 segment(s)" in leaving.log()
    job = cluster.wait_job(job_id)
    assert job["status"] == "COMPLETED"
    assert cluster.segments(job_id)[0]["node_id"] == "b-staying"
    assert_exact_output(cluster, manifest_hash, 0, 199)
    with cluster.api() as api:
        workers = {w["node_id"]: w["status"] for w in api.get("/workers").json()["workers"]}
    assert workers["a-leaving"] == "stopped"
    committed = {f["path"] for f in cluster.committed_files(manifest_hash)}
    assert objects_on_disk(cluster) == committed


def test_assignment_without_notify_is_started_by_reconciliation(make_cluster, chain) -> None:  # noqa: ANN001
    anvil, head = chain
    cluster = make_cluster(reconcile_interval_secs=1)
    controller = cluster.start_controller()
    manifest_hash = cluster.register()
    job_id = cluster.deploy({"end_block": "80"})
    controller.stop()  # nobody will assign or notify from here on
    worker = cluster.start_worker("quiet")
    with psycopg.connect(cluster.db_url, autocommit=True) as conn:
        # What the scheduler does, minus the NOTIFY.
        conn.execute(
            "UPDATE segments SET status = 'ASSIGNED', node_id = 'quiet', epoch = epoch + 1 WHERE job_id = %s",
            (job_id,),
        )

    def done() -> bool:
        with psycopg.connect(cluster.db_url) as conn:
            rows = conn.execute(
                "SELECT status FROM segments WHERE job_id = %s", (job_id,)
            ).fetchall()
        return all(r[0] == "COMPLETED" for r in rows)

    cluster.wait_until(done, timeout=30, what="segments completed by reconciliation")
    assert "segment" in worker.log() and "completed" in worker.log()
    cluster.admin_url = None
    cluster.start_controller("controller2")
    assert cluster.wait_job(job_id)["status"] == "COMPLETED"
    assert_exact_output(cluster, manifest_hash, 0, 80)


def test_stop_keeps_files_and_redeploy_resumes_from_checkpoint(make_cluster, chain) -> None:  # noqa: ANN001
    anvil, head = chain
    cluster = make_cluster(segment_blocks=1000, **SLOW)
    cluster.start_controller()
    cluster.start_worker("w", env=SLOW_ENV)
    manifest_hash = cluster.register()
    job_id = cluster.deploy({"end_block": "199"})
    cluster.wait_until(lambda: running_segment_of(cluster, job_id, "w"), what="mid-segment")
    with cluster.api() as api:
        assert api.put(f"/jobs/{job_id}/stop").status_code == 200
        assert api.put(f"/jobs/{job_id}/stop").status_code == 200  # idempotent
    assert cluster.wait_job(job_id)["status"] == "STOPPED"
    kept = cluster.committed_files(manifest_hash)
    assert kept, "files committed before the stop stay committed"
    done_to = max(f["end_block"] for f in kept)
    assert done_to < 199
    for f in kept:
        assert (cluster.data_dir / f["path"]).is_file()

    second = cluster.deploy({"end_block": "199"})
    assert second != job_id
    first_segment = cluster.segments(second)[0]
    assert first_segment["start_block"] == done_to + 1, "committed blocks are not planned again"
    assert cluster.wait_job(second)["status"] == "COMPLETED"
    assert_exact_output(cluster, manifest_hash, 0, 199)
    still = {f["path"] for f in cluster.committed_files(manifest_hash)}
    assert {f["path"] for f in kept} <= still


def test_leader_killed_another_controller_takes_over(make_cluster, chain) -> None:  # noqa: ANN001
    anvil, head = chain
    cluster = make_cluster()
    first = cluster.start_controller("c1")
    first.wait_for_log("now leads the scheduler")
    cluster.admin_url = None
    second = cluster.start_controller("c2")  # serves the API, does not lead
    time.sleep(1.5)
    assert "now leads" not in second.log()
    first.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    first.wait(10)
    second.wait_for_log("now leads the scheduler", timeout=15)
    assert time.monotonic() - killed_at <= 10
    cluster.start_worker("w")
    manifest_hash = cluster.register()
    job_id = cluster.deploy({"end_block": "60"})
    assert cluster.wait_job(job_id)["status"] == "COMPLETED"
    assert_exact_output(cluster, manifest_hash, 0, 60)
