"""The distributed stage: the floor, `ampd dump` and jobs of one and of three workers, on the
local node and on a remote one.

The remote node is the same anvil behind bench/latency_proxy.py (its own process), which
holds every request for a fixed delay before forwarding it. On the same block range, for
each node, repetitions interleaved:
- *floor* and *ampd dump*: run and measured as in the extract stage (run.py's `run_tool`);
- *one worker*: a controller and one `ampd worker`, up and idle on a fresh database of one
  managed PostgreSQL with the dataset registered, timed from the deploy request to the job's
  COMPLETED; the range is one segment;
- *three workers*: the same with three workers and the range cut into six segments, two
  each (one worker would gain nothing from them: its segments share its fetch processes
  and so its provider limits);
- *two join*: the one-segment job on one worker, two more started once a quarter of the
  range is committed (they get work when the controller splits the running segment).
Last, on the local node, from the deploy request of a 1,000-block job to its first committed
file; and, given a large range, the floor, `ampd dump` and one worker on it (the local node
only: behind the proxy it would take an hour). A job's status, files and workers' heartbeats are read from its metadata database
(every 50 ms, 20 ms for the first-file job), so that the polling costs the controller
nothing; the largest gap between two heartbeats of a worker (they are due every second) is
held against its target on the local one-worker job, the worker extracting flat out.

CPU seconds are those of the tool's own processes: the floor's or the dump's process tree
(bench/measure.py), the controller's and the workers' trees for a job (/proc/PID/stat
read just before the deploy and at COMPLETED). anvil, the proxy and PostgreSQL are not
counted; the proxy's and PostgreSQL's CPU are recorded beside each run. Every figure is
held against its target (distributed_report.TARGETS). The proxy, the database and every
ampd process are always stopped, on errors too.
"""

from __future__ import annotations

import math
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import distributed_report
import psycopg
import tools
from latency_proxy import LatencyProxy, ProxyError
from measure import fresh_cluster, last_json_line, tree_cpu_seconds

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.append(str(REPO / "tests"))  # support.cluster, support.postgres: the e2e harness

from ampd.metadb.managed import ManagedPostgres, ManagedPostgresError  # noqa: E402
from support.cluster import Cluster  # noqa: E402

NODES = ("local", "remote")
RUNS, RUN_NAMES = distributed_report.RUNS, distributed_report.RUN_NAMES
NAMESPACE, NAME, VERSION = "bench", "chain", "1.0.0"
REF = f"{NAMESPACE}/{NAME}/versions/{VERSION}"
TABLES = tools.TABLES
FIRST_FILE_BLOCKS = distributed_report.FIRST_FILE_BLOCKS
JOIN_AT = 0.25  # of the range committed when the two workers join
POLL_SECONDS, FIRST_FILE_POLL_SECONDS = 0.05, 0.02
# Behind the remote node every process has REMOTE_IN_FLIGHT requests of REMOTE_BATCH_BLOCKS
# blocks (a block is 2 calls: eth_getBlockByNumber and eth_getBlockReceipts) in flight.
REMOTE_BATCH_BLOCKS, REMOTE_IN_FLIGHT = 10, 2
# Files close at 4 MiB (Arrow bytes, about 1,200 blocks of the bench chain), so a job
# commits as it goes and the joiners can be started at a quarter of the range.
WRITER = {"bytes": 4 * 2**20, "segment_flush_interval_secs": 600.0}

Log = Callable[[str], None]
# (tool, node URL, blocks, repetition, timeout) -> run.py's run_tool figures
RunTool = Callable[[tools.Tool, str, int, int, float], dict]
# On the large range: the local node's floor, dump and one worker (the overhead targets).
LARGE_RUNS = ("floor", "dump", "one_worker")


class DistributedError(RuntimeError):
    """The stage cannot go on: PostgreSQL or the latency proxy failed."""


class _JobFailed(RuntimeError):
    """One job run failed (recorded with its error; the stage goes on)."""


@dataclass
class _Stage:
    work: Path
    urls: dict[str, str]  # node -> URL
    providers: dict[str, dict]  # node -> the workers' provider settings
    tools: dict[tuple[str, str], tools.Tool]  # (node, "floor" | "dump") -> tool
    timeouts: dict[str, float]
    first_block: int
    last_block: int
    expected_rows: dict[str, int]
    manifest: dict
    run_tool: RunTool
    log: Log
    pg: ManagedPostgres
    proxy: LatencyProxy

    @property
    def blocks(self) -> int:
        return self.last_block - self.first_block + 1


def remote_settings() -> dict:
    """The remote node's provider settings: REMOTE_IN_FLIGHT requests of REMOTE_BATCH_BLOCKS
    blocks in flight per fetch process. `ampd dump` and `ampd worker` fetch in one process
    per CPU by default (`--processes`, `worker_processes`) and divide
    `concurrent_request_limit` among them (extract/parallel.py's share_limits; a worker's
    segments share its processes and limits), so the limit is REMOTE_IN_FLIGHT times the
    processes. The floor, one process, gets the same requests in flight as the dump."""
    processes = os.cpu_count() or 1
    return {
        "rpc_batch_size": 2 * REMOTE_BATCH_BLOCKS,
        "fetch_processes": processes,
        "concurrent_request_limit": REMOTE_IN_FLIGHT * processes,
    }


# -- the floor and ampd dump -----------------------------------------------------------------


def _tool_run(stage: _Stage, node: str, kind: str, rep: int) -> dict:
    tool = stage.tools[(node, kind)]
    if tool.unavailable:
        return {"repeat": rep, "status": "not available", "error": tool.unavailable}
    proxy_cpu = stage.proxy.cpu_seconds()
    run = stage.run_tool(tool, stage.urls[node], stage.blocks, rep, stage.timeouts[node])
    run["proxy_cpu_seconds"] = round(stage.proxy.cpu_seconds() - proxy_cpu, 2)
    if run["status"] == "ok" and not run["rows_match"]:
        run.update(status="failed", error=f"rows {run['rows']}, expected {run['expected_rows']}")
    return run


# -- jobs ------------------------------------------------------------------------------------


@contextmanager
def _cluster(stage: _Stage, node: str, name: str, segment_blocks: int) -> Iterator[Cluster]:
    """A config and a fresh database for one job; every process stopped at the end."""
    root = stage.work / name
    settings = {
        "data_dir": str(root / "data"),
        "segment_blocks": segment_blocks,
        "worker_timeout_secs": 10,  # 2 busy cores: a late heartbeat must not cost a segment
        "provider": stage.providers[node],
        "writer": WRITER,
    }
    with fresh_cluster(
        stage.pg, root, SimpleNamespace(url=stage.urls[node]), settings, _JobFailed, name,
        after=lambda: shutil.rmtree(root / "data", ignore_errors=True),
    ) as cluster:  # fmt: skip
        yield cluster


def _committed_blocks(db: psycopg.Connection) -> int:
    """Blocks in committed files of the blocks table (the database holds one job only)."""
    row = db.execute(
        """SELECT coalesce(sum(f.end_block - f.start_block + 1), 0)
           FROM files f JOIN table_revisions r ON r.id = f.table_revision_id
           WHERE r.table_name = 'blocks' AND f.retired_at IS NULL"""
    ).fetchone()
    return int(row[0]) if row else 0


def _heartbeats(db: psycopg.Connection, beats: dict[str, list[float]]) -> None:
    """Append each worker's heartbeat time when it changed since the last poll."""
    for node_id, at in db.execute(
        "SELECT node_id, extract(epoch FROM heartbeat_at)::float8 FROM workers"
    ).fetchall():
        seen = beats.setdefault(node_id, [])
        if not seen or at != seen[-1]:
            seen.append(at)


def _largest_gap(beats: dict[str, list[float]]) -> float | None:
    """The longest time between two heartbeats of one worker (None: too few beats)."""
    gaps = [b - a for seen in beats.values() for a, b in zip(seen, seen[1:], strict=False)]
    return round(max(gaps), 3) if gaps else None


def _job_status(db: psycopg.Connection, job_id: int) -> str:
    row = db.execute("SELECT status FROM jobs WHERE id = %s", (job_id,)).fetchone()
    return row[0] if row else "missing"


def _job(stage: _Stage, node: str, kind: str, rep: int) -> dict:
    """One job, services up and idle: its wall time from the deploy request to COMPLETED, the
    CPU its controller and workers took meanwhile, and when its first file was committed.
    The job's status and files are polled in the metadata database (the Admin API would
    charge the polling to the controller's CPU)."""
    first = stage.first_block
    last = first + FIRST_FILE_BLOCKS - 1 if kind == "first_file" else stage.last_block
    blocks = last - first + 1
    three = kind == "three_workers"
    segment_blocks = math.ceil(blocks / 6) if three else blocks
    poll = FIRST_FILE_POLL_SECONDS if kind == "first_file" else POLL_SECONDS
    marks: dict = {}
    beats: dict[str, list[float]] = {}  # worker -> its heartbeat times seen while the job ran
    with _cluster(stage, node, f"{kind}-{node}-{rep}", segment_blocks) as cluster:
        cluster.start_controller()
        for i in range(1, 4 if three else 2):
            cluster.start_worker(f"w{i}")
        manifest_hash = cluster.register(NAMESPACE, NAME, stage.manifest)
        with psycopg.connect(cluster.db_url, autocommit=True) as db:

            def done(status: str) -> bool:
                committed, now = _committed_blocks(db), time.monotonic() - started
                _heartbeats(db, beats)
                if status != "SCHEDULED" and "running_seconds" not in marks:
                    marks["running_seconds"] = round(now, 3)  # its first segment assigned
                if committed and "first_file_seconds" not in marks:
                    marks["first_file_seconds"] = round(now, 3)
                if kind == "two_join" and not marks.get("joined_at_seconds"):
                    if committed >= JOIN_AT * blocks:  # two more workers join
                        marks.update(joined_at_seconds=round(now, 3), joined_at_blocks=committed)
                        for node_id in ("w2", "w3"):
                            cluster.start_worker(node_id, wait=False)
                return status == "COMPLETED"

            before = {n: tree_cpu_seconds(p.pid) for n, p in cluster.procs.items()}
            pg_cpu, proxy_cpu = tree_cpu_seconds(stage.pg.pid or 0), stage.proxy.cpu_seconds()
            started = time.monotonic()
            job_id = cluster.deploy({"end_block": str(last)}, REF)
            marks["deploy_request_seconds"] = round(time.monotonic() - started, 3)
            while not done(status := _job_status(db, job_id)):
                if status in ("STOPPED", "ERROR", "FATAL"):
                    raise _JobFailed(f"job {job_id} is {status}:\n{cluster.logs()}")
                if time.monotonic() - started > stage.timeouts[node]:
                    raise _JobFailed(f"job {job_id} is {status} after {stage.timeouts[node]:g} s")
                time.sleep(poll)
            seconds = time.monotonic() - started
            cpu = {
                n: tree_cpu_seconds(p.pid) - before.get(n, 0.0) for n, p in cluster.procs.items()
            }
            pg_cpu = tree_cpu_seconds(stage.pg.pid or 0) - pg_cpu
            proxy_cpu = stage.proxy.cpu_seconds() - proxy_cpu
        files = cluster.committed_files(manifest_hash)
        segments = cluster.segments(job_id)
    by_worker: dict[str, int] = {}
    for s in segments:
        by_worker[s["node_id"]] = (
            by_worker.get(s["node_id"], 0) + s["end_block"] - s["start_block"] + 1
        )
    rows = {t: sum(f["rows"] for f in files if f["table"] == t) for t in TABLES}
    expected = {t: n // stage.blocks * blocks for t, n in stage.expected_rows.items()}
    run = {
        "repeat": rep,
        "status": "ok" if rows == expected else "failed",
        "job_id": job_id,
        "segment_blocks": segment_blocks,
        "wall_seconds": round(seconds, 3),
        "cpu_seconds": round(sum(cpu.values()), 2),
        "cpu_by_process": {n: round(c, 2) for n, c in cpu.items()},
        "postgres_cpu_seconds": round(pg_cpu, 2),
        "proxy_cpu_seconds": round(proxy_cpu, 2),
        "blocks": blocks,
        "blocks_per_second": round(blocks / seconds, 1),
        "rows": rows,
        "files_per_table": sum(1 for f in files if f["table"] == "blocks"),
        "segments": len(segments),
        "blocks_by_worker": by_worker,
        "largest_heartbeat_gap_seconds": _largest_gap(beats),
        **marks,
    }
    if run["status"] != "ok":
        run["error"] = f"committed rows {rows}, expected {expected}"
    return run


# -- the stage -------------------------------------------------------------------------------


def _summary(runs: list[dict], keys: tuple[str, ...]) -> dict:
    ok = [r for r in runs if r["status"] == "ok"]
    if not ok:
        return {}
    out = {k: round(statistics.median(r[k] for r in ok), 3) for k in keys}
    if "wall_seconds" in out:
        out["blocks_per_second"] = round(ok[0]["blocks"] / out["wall_seconds"], 1)
    return {**out, "repeats_ok": len(ok)}


def _logged(stage: _Stage, node: str, kind: str, rep: int, repeat: int, run: dict) -> None:
    where = f"{RUN_NAMES[kind]} on the {node} node, run {rep}/{repeat}"
    if run["status"] != "ok":
        stage.log(f"  distributed: {where}: {run['status']}: {run['error'].splitlines()[0]}")
        return
    line = (
        f"  distributed: {where}: {run['blocks']:,} blocks in {run['wall_seconds']:.1f} s "
        f"({run['blocks_per_second']:,.0f} blocks/s), CPU {run['cpu_seconds']:.1f} s"
    )
    if node == "remote":
        line += f", latency proxy CPU {run['proxy_cpu_seconds']:.2f} s"
    if "first_file_seconds" in run:
        line += f"; first file committed at {run['first_file_seconds']:.3f} s"
    if "joined_at_seconds" in run:
        line += (
            f"; 2 workers joined at {run['joined_at_seconds']:.1f} s "
            f"({run['joined_at_blocks']:,} blocks committed)"
        )
    stage.log(line)


def run_stage(
    *, work: Path, node_url: str, first_block: int, last_block: int, expected_rows: dict,
    repeat: int, latency_ms: float, floor: tuple[int, int], provider: dict, manifest: dict,
    timeouts: dict[str, float], run_tool: RunTool, log: Log,
    large: tuple[int, dict, float] | None = None,
) -> dict:  # fmt: skip
    """The whole distributed stage; its results section. `floor` is the floor's (batch size,
    concurrency) and `provider` ampd's provider settings on the local node; `large`, the
    large range's (last block, expected rows, timeout) when there is one. Raises
    DistributedError when PostgreSQL or the latency proxy cannot be started."""
    shutil.rmtree(work, ignore_errors=True)
    (work / "logs").mkdir(parents=True)
    remote = remote_settings()
    batch, limit = remote["rpc_batch_size"], remote["concurrent_request_limit"]
    made = {
        ("local", "floor"): tools.floor_tool(*floor),
        ("local", "dump"): tools.ampd_tool(
            work / "local", provider["rpc_batch_size"], provider["concurrent_request_limit"]
        ),
        ("remote", "floor"): tools.floor_tool(batch, limit),
        ("remote", "dump"): tools.ampd_tool(work / "remote", batch, limit),
    }
    section: dict = {
        "range": [first_block, last_block],
        "blocks": last_block - first_block + 1,
        "repeat": repeat,
        "node_latency_ms": latency_ms,
        "local": {"floor": made[("local", "floor")].settings, "provider": provider},
        "remote": {"floor": made[("remote", "floor")].settings, **remote},
        "writer": WRITER,
        "join_at": JOIN_AT,
        "expected_rows": expected_rows,
        "targets": distributed_report.TARGETS,
    }
    runs: dict[tuple[str, str], list[dict]] = {(n, k): [] for n in NODES for k in RUNS}
    first_files: list[dict] = []
    large_runs: dict[str, list[dict]] = {k: [] for k in LARGE_RUNS}
    pg = ManagedPostgres(work / "pg")
    manifest = {**manifest, "start_block": first_block}  # jobs cover the dump's range
    try:
        with LatencyProxy(node_url, latency_ms, work / "logs" / "latency-proxy.log") as proxy:
            pg.start()
            try:
                stage = _Stage(
                    work=work, urls={"local": node_url, "remote": proxy.url},
                    providers={"local": provider, "remote": {
                        "rpc_batch_size": batch, "concurrent_request_limit": limit,
                    }},
                    tools={key: replace(t, name=f"{t.name} {key[0]}") for key, t in made.items()},
                    timeouts=timeouts, first_block=first_block, last_block=last_block,
                    expected_rows=expected_rows, manifest=manifest, run_tool=run_tool, log=log,
                    pg=pg, proxy=proxy,
                )  # fmt: skip
                for rep in range(1, repeat + 1):
                    for node in NODES:
                        for kind in RUNS:
                            run = _one(stage, node, kind, rep)
                            runs[(node, kind)].append(run)
                            _logged(stage, node, kind, rep, repeat, run)
                for rep in range(1, repeat + 1):
                    first_files.append(_one(stage, "local", "first_file", rep))
                    _logged(stage, "local", "first_file", rep, repeat, first_files[-1])
                if large is not None:
                    big = replace(
                        stage, last_block=large[0], expected_rows=large[1],
                        timeouts={**stage.timeouts, "local": large[2]},
                    )  # fmt: skip
                    for rep in range(1, repeat + 1):
                        for kind in LARGE_RUNS:
                            large_runs[kind].append(_one(big, "local", kind, rep))
                            _logged(big, "local", kind, rep, repeat, large_runs[kind][-1])
            finally:
                pg.stop(fast=True)
    except (ProxyError, ManagedPostgresError) as exc:
        raise DistributedError(str(exc)) from None
    # What the proxy says it forwarded, and the CPU it took in all (printed as it exits).
    section["latency_proxy"] = last_json_line(work / "logs" / "latency-proxy.log")
    if section["latency_proxy"]:
        p = section["latency_proxy"]
        log(f"  distributed: the latency proxy forwarded {p['requests']:,} requests "
            f"({p['errors']} failed) with {p['cpu_seconds']:.1f} s of CPU in all")  # fmt: skip
    keys = ("wall_seconds", "cpu_seconds", "proxy_cpu_seconds")
    section["runs"] = [
        {
            "node": node,
            "run": kind,
            "name": RUN_NAMES[kind],
            "runs": runs[(node, kind)],
            "median": _summary(runs[(node, kind)], keys),
        }
        for node in NODES
        for kind in RUNS
    ]
    section["first_file"] = {
        "runs": first_files,
        "median": _summary(
            first_files,
            ("deploy_request_seconds", "running_seconds", "first_file_seconds", "wall_seconds"),
        ),
    }
    if large is not None:
        section["large"] = {
            "range": [first_block, large[0]],
            "blocks": large[0] - first_block + 1,
            "expected_rows": large[1],
            "runs": [
                {
                    "node": "local",
                    "run": kind,
                    "name": RUN_NAMES[kind],
                    "runs": large_runs[kind],
                    "median": _summary(large_runs[kind], keys),
                }
                for kind in LARGE_RUNS
            ],
        }
    section["measures"] = distributed_report.measures(section)
    return section


def _one(stage: _Stage, node: str, kind: str, rep: int) -> dict:
    if kind in ("floor", "dump"):
        return _tool_run(stage, node, kind, rep)
    try:
        return _job(stage, node, kind, rep)
    except _JobFailed as exc:
        return {"repeat": rep, "status": "failed", "error": str(exc)}
