"""The store stage: the same writes and reads on the local disk and on S3 (moto on 127.0.0.1).

On the same block range of the bench chain, each store (`local`: a folder under
bench/work/store; `s3`: a bucket on moto's S3 server, `moto_server`, a child process on a
free port) is measured the same way, repetitions interleaved local then S3:
- *dump*: `ampd dump --data-dir DIR|s3://BUCKET/PREFIX` run by bench/measure.py; rows/s is
  every table's rows over the process's wall time.
- *job*: a controller and one `ampd worker` (both up first, sharing a fresh database of one
  managed PostgreSQL), the dataset registered and deployed through the Admin API; timed from
  the deploy request to the job being COMPLETED; rows/s is the committed rows over that time.
- *scans*: with the controller and worker stopped, an `ampd server` on the job's config
  (the same data dir) answers `SELECT * FROM "bench/chain".<table>` through JSON Lines and
  Flight, read by bench/query_client.py as in the query stage.
- *count*: a second job with `[writer] bytes = 1` and `AMP_EXTRACT_CHUNK_BLOCKS=1` commits
  one file per block and table; a fresh `ampd server` then answers
  `SELECT COUNT(*) FROM "bench/chain".blocks` over those 1,000 files: the first answer
  (cold) and the best of the next ones (warm), timed in this process around the HTTP call.

Every figure is compared with its target (`TARGETS`) and marked pass or fail. moto, the
database and every ampd process are always stopped, on errors too.
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import serving
from anvil import Anvil
from measure import fresh_cluster, last_json_line, log_tail
from s3_endpoint import MotoS3, S3EndpointError, moto_version  # noqa: F401 (re-exported)

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.append(str(REPO / "tests"))  # support.cluster, support.postgres: the e2e harness

from ampd.metadb.managed import ManagedPostgres  # noqa: E402
from support.cluster import Cluster  # noqa: E402

VENV_BIN = Path(sys.executable).parent
AMPD = VENV_BIN / "ampd"

STORES = ("local", "s3")
TABLES = serving.TABLES
SCAN_PATHS = ("jsonl", "flight")
# Scans per run, the median reported: a Flight scan takes a tenth of a second, where one
# scheduling hiccup moves the ratio by 0.2; a JSON Lines scan takes seconds.
SCAN_TIMES = {"jsonl": 1, "flight": 5}
NAMESPACE, NAME, VERSION = serving.NAMESPACE, serving.NAME, serving.VERSION
COUNT_FILES = 1000
COUNT_WARM_RUNS = 3

# S3's rows/s over the local disk's, at least; the warm COUNT(*) on S3, at most (seconds).
TARGETS = {"write_ratio": 0.8, "scan_ratio": 0.7, "count_warm_seconds": 1.0}

Log = Callable[[str], None]
Measured = serving.Measured


class StoreError(RuntimeError):
    """The stage cannot go on: moto, PostgreSQL or an ampd process failed."""


# -- the stage's context -----------------------------------------------------------------


class _Stage:
    """What every measurement needs: where things go, the node, the stores."""

    def __init__(
        self, *, work: Path, node: Anvil, first_block: int, last_block: int, provider: dict,
        manifest: dict, timeout: float, measured: Measured, log: Log, s3: MotoS3,
        pg: ManagedPostgres, bucket: str,
    ) -> None:  # fmt: skip
        self.work, self.node, self.provider, self.manifest = work, node, provider, manifest
        self.first_block, self.last_block = first_block, last_block
        self.timeout, self.measured, self.log = timeout, measured, log
        self.s3, self.pg, self.bucket = s3, pg, bucket
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def data_dir(self, store: str, name: str) -> str:
        if store == "s3":
            return f"s3://{self.bucket}/{name}"
        return str(self.work / "local" / name)

    def env(self, store: str) -> dict[str, str]:
        return self.s3.env if store == "s3" else {}

    def discard(self, store: str, name: str) -> None:
        """Drop a local output at once (an S3 one goes with moto at the end)."""
        if store == "local":
            shutil.rmtree(self.work / "local" / name, ignore_errors=True)


# -- ampd dump ---------------------------------------------------------------------------


def _dump(stage: _Stage, store: str, rep: int) -> dict:
    name = f"dump-{rep}"
    providers = stage.work / "providers"
    providers.mkdir(parents=True, exist_ok=True)
    body = {"kind": "evm-rpc", "network": "anvil", "url": stage.node.url, **stage.provider}
    (providers / "anvil.toml").write_text(
        "".join(f"{k} = {json.dumps(v)}\n" for k, v in body.items())
    )
    manifest = stage.work / "anvil.json"
    manifest.write_text(json.dumps(stage.manifest))
    data_dir = stage.data_dir(store, name)
    log_path = stage.logs / f"dump-{store}-{rep}.log"
    # `env` execs the dump, so measure.py still measures the dump's own process tree.
    command = [
        "env", *(f"{k}={v}" for k, v in stage.env(store).items()),
        str(AMPD), "dump", "--manifest", str(manifest), "--providers-dir", str(providers),
        "--data-dir", data_dir, "--start", str(stage.first_block), "--end", str(stage.last_block),
        "--no-progress",
    ]  # fmt: skip
    try:
        m = stage.measured(command, stage.timeout, stage.work / "measure.json", log_path)
    finally:
        stage.discard(store, name)
    summary = last_json_line(log_path)
    run = {
        "repeat": rep,
        "data_dir": data_dir,
        "wall_seconds": round(m["wall_seconds"], 3),
        "cpu_seconds": round(m["user_seconds"] + m["system_seconds"], 2),
        "peak_rss_mib": round(m["peak_rss_kib"] / 1024, 1),
        "log": str(log_path.relative_to(REPO)),
    }
    if m["timed_out"] or m["returncode"] != 0 or not summary or not summary.get("complete"):
        why = (
            f"timed out after {stage.timeout:g} s" if m["timed_out"] else f"exit {m['returncode']}"
        )
        raise StoreError(f"ampd dump to {data_dir}: {why}\n{log_tail(log_path)}")
    rows = sum(summary["rows"].values())
    run.update(
        rows=summary["rows"],
        rows_total=rows,
        files=summary["files"],
        output_mib=round(summary["bytes"] / 2**20, 1),
        rows_per_second=round(rows / m["wall_seconds"], 1),
    )
    return run


# -- a controller and one worker ----------------------------------------------------------


@contextmanager
def _deployment(
    stage: _Stage, store: str, name: str, writer: dict | None = None
) -> Iterator[Cluster]:
    """A config on `name`'s data dir, a fresh database; every process stopped at the end."""
    settings = {
        "data_dir": stage.data_dir(store, name),
        "segment_blocks": 100_000,  # the config's defaults: one segment, files by size
        "poll_interval_secs": 0.1,
        "provider": stage.provider,
        "writer": {"segment_flush_interval_secs": 600.0, **(writer or {})},
    }
    # The bench's Anvil as the node: Cluster uses only its URL.
    with fresh_cluster(
        stage.pg, stage.work / name, stage.node, settings, StoreError, f"{name} on {store}",
        after=lambda: stage.discard(store, name),
    ) as cluster:  # fmt: skip
        yield cluster


def _run_job(
    stage: _Stage, cluster: Cluster, store: str, last_block: int, worker_env: dict | None = None
) -> dict:
    """Controller and worker up, the dataset registered; deploy up to `last_block` (from the
    manifest's start block, 0) and wait for COMPLETED."""
    env = stage.env(store)
    cluster.start_controller(env=env)
    cluster.start_worker("w1", env={**env, **(worker_env or {})})
    manifest_hash = cluster.register(NAMESPACE, NAME, stage.manifest)
    started = time.monotonic()
    job_id = cluster.deploy(
        {"end_block": str(last_block)}, f"{NAMESPACE}/{NAME}/versions/{VERSION}"
    )
    while True:
        status = cluster.job(job_id)["status"]
        if status == "COMPLETED":
            break
        if status in ("STOPPED", "ERROR", "FATAL") or time.monotonic() - started > stage.timeout:
            raise StoreError(f"job {job_id} on {store} is {status}:\n{cluster.logs()}")
        time.sleep(0.05)
    seconds = time.monotonic() - started
    files = cluster.committed_files(manifest_hash)
    rows = {t: sum(f["rows"] for f in files if f["table"] == t) for t in TABLES}
    per_table = {t: sum(1 for f in files if f["table"] == t) for t in TABLES}
    cluster.procs["w1"].stop()
    cluster.procs["controller"].stop()
    return {
        "job_id": job_id,
        "seconds": round(seconds, 3),
        "rows": rows,
        "rows_total": sum(rows.values()),
        "files": per_table,
        "rows_per_second": round(sum(rows.values()) / seconds, 1),
    }


def _start_server(stage: _Stage, cluster: Cluster, store: str) -> tuple[str, str]:
    """`ampd server` on the cluster's config; its JSON Lines and Flight URLs."""
    env = {**stage.env(store), "AMP_CONFIG_QUERY_TIMEOUT_SECS": "0"}
    _, jsonl, port = cluster.start_server(env=env)
    return jsonl, f"grpc://127.0.0.1:{port}"


# -- the scans ----------------------------------------------------------------------------


def _scan(
    stage: _Stage, store: str, urls: tuple[str, str], table: str, path: str, rows: int, rep: int
) -> dict:
    sql = f'SELECT * FROM "{NAMESPACE}/{NAME}".{table}'
    url = urls[0] if path == "jsonl" else urls[1]
    command = [sys.executable, str(BENCH / "query_client.py"), path, "--sql", sql, "--url", url]
    command += ["--times", str(SCAN_TIMES[path])]
    log_path = stage.logs / f"scan-{store}-{path}-{table}-{rep}.log"
    m = stage.measured(command, stage.timeout, stage.work / "measure.json", log_path)
    summary = last_json_line(log_path)
    if m["timed_out"] or m["returncode"] != 0 or summary is None:
        raise StoreError(f"{path} scan of {table} on {store} failed:\n{log_tail(log_path)}")
    if summary["rows"] != rows:
        raise StoreError(f"{path} scan of {table} on {store}: {summary['rows']} rows, not {rows}")
    return {
        "repeat": rep,
        "rows": summary["rows"],
        "bytes": summary["bytes"],
        "wall_seconds": round(summary["seconds"], 3),
        "all_seconds": summary.get("all_seconds"),
        "rows_per_second": round(summary["rows"] / summary["seconds"], 1),
        "log": str(log_path.relative_to(REPO)),
    }


# -- COUNT(*) over many files --------------------------------------------------------------


def _count(stage: _Stage, store: str) -> dict:
    """A job of one file per block and table, then COUNT(*) of blocks: cold, then warm."""
    # The manifest starts at block 0: blocks 0..999, a fetch (and so a file) per block.
    with _deployment(stage, store, "count", writer={"bytes": 1}) as cluster:
        job = _run_job(stage, cluster, store, COUNT_FILES - 1, {"AMP_EXTRACT_CHUNK_BLOCKS": "1"})
        if job["files"]["blocks"] != COUNT_FILES:
            raise StoreError(f"the count job committed {job['files']} files, not {COUNT_FILES}")
        jsonl, _ = _start_server(stage, cluster, store)
        sql = f'SELECT COUNT(*) AS n FROM "{NAMESPACE}/{NAME}".blocks'
        timings, requests = [], []
        with httpx.Client(timeout=stage.timeout) as client:
            for _ in range(1 + COUNT_WARM_RUNS):
                logged = stage.s3.requests()
                began = time.monotonic()
                answer = client.post(jsonl, content=sql)
                timings.append(time.monotonic() - began)
                time.sleep(0.2)  # moto logs a request just after answering it
                requests.append(stage.s3.requests() - logged)
                if answer.status_code != 200:
                    raise StoreError(f"{sql} on {store}: {answer.status_code} {answer.text[:500]}")
                n = json.loads(answer.text.splitlines()[0])["n"]
                if n != job["rows"]["blocks"]:
                    raise StoreError(f"{sql} on {store} answered {n}, not {job['rows']['blocks']}")
    return {
        "files": job["files"]["blocks"],
        "rows": job["rows"]["blocks"],
        "job_seconds": job["seconds"],
        "cold_seconds": round(timings[0], 3),
        "warm_seconds": [round(t, 3) for t in timings[1:]],
        "best_warm_seconds": round(min(timings[1:]), 3),
        "s3_requests": requests if store == "s3" else None,  # per query, cold first
    }


# -- the stage ----------------------------------------------------------------------------


def _median(runs: list[dict], key: str = "rows_per_second") -> float:
    return round(statistics.median(r[key] for r in runs), 1)


def run_stage(
    *, work: Path, node: Anvil, first_block: int, last_block: int, repeat: int,
    provider: dict, manifest: dict, timeout: float, measured: Measured, log: Log,
) -> dict:  # fmt: skip
    """The whole store stage; its results section. Raises StoreError when it cannot finish
    (S3EndpointError when moto's S3 server does not start)."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    section: dict = {
        "range": [first_block, last_block],
        "blocks": last_block - first_block + 1,
        "repeat": repeat,
        "provider": provider,
        "count_files": COUNT_FILES,
        "targets": TARGETS,
    }
    dumps: dict[str, list[dict]] = {s: [] for s in STORES}
    jobs: dict[str, list[dict]] = {s: [] for s in STORES}
    scans: dict[tuple[str, str, str], list[dict]] = {}
    counts: dict[str, dict] = {}
    pg = ManagedPostgres(work / "pg")
    with MotoS3(work / "logs" / "moto.log") as s3:
        section["s3"] = {"endpoint": s3.url, "server": f"moto_server {moto_version()}"}
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        s3.create_bucket(bucket)
        pg.start()
        try:
            stage = _Stage(
                work=work, node=node, first_block=first_block, last_block=last_block,
                provider=provider, manifest=manifest, timeout=timeout, measured=measured,
                log=log, s3=s3, pg=pg, bucket=bucket,
            )  # fmt: skip
            for rep in range(1, repeat + 1):
                for store in STORES:
                    run = _dump(stage, store, rep)
                    dumps[store].append(run)
                    log(
                        f"  store: ampd dump to {store}, run {rep}/{repeat}: {run['rows_total']:,} "
                        f"rows in {run['wall_seconds']:.1f} s, {run['rows_per_second']:,.0f} rows/s"
                    )
            for rep in range(1, repeat + 1):
                for store in STORES:
                    with _deployment(stage, store, f"job-{rep}") as cluster:
                        job = _run_job(stage, cluster, store, last_block)
                        jobs[store].append({"repeat": rep, **job})
                        log(
                            f"  store: one-worker job on {store}, run {rep}/{repeat}: "
                            f"{job['rows_total']:,} rows in {job['seconds']:.1f} s, "
                            f"{job['rows_per_second']:,.0f} rows/s"
                        )
                        urls = _start_server(stage, cluster, store)
                        for table in TABLES:
                            for path in SCAN_PATHS:
                                run = _scan(
                                    stage, store, urls, table, path, job["rows"][table], rep
                                )
                                scans.setdefault((table, path, store), []).append(run)
                                log(
                                    f"    {table} via {serving.PATH_NAMES[path]} on {store}: "
                                    f"{run['rows']:,} rows in {run['wall_seconds']:.2f} s, "
                                    f"{run['rows_per_second']:,.0f} rows/s"
                                )
            for store in STORES:
                log(f"  store: a job committing {COUNT_FILES:,} files per table on {store}")
                counts[store] = _count(stage, store)
                c = counts[store]
                log(
                    f"    COUNT(*) over {c['files']:,} files on {store}: cold {c['cold_seconds']:.3f} s, "
                    f"best warm {c['best_warm_seconds']:.3f} s (job {c['job_seconds']:.0f} s)"
                )
        finally:
            pg.stop(fast=True)
    section["dump"] = {s: {"runs": dumps[s], "rows_per_second": _median(dumps[s])} for s in STORES}
    section["job"] = {s: {"runs": jobs[s], "rows_per_second": _median(jobs[s])} for s in STORES}
    section["scans"] = [
        {
            "table": table,
            "path": path,
            **{
                s: {
                    "runs": scans[(table, path, s)],
                    "rows_per_second": _median(scans[(table, path, s)]),
                }
                for s in STORES
            },
        }
        for table in TABLES
        for path in SCAN_PATHS
    ]
    section["count"] = counts
    section["measures"] = measures(section)
    return section


def measures(section: dict) -> list[dict]:
    """Each measure's local and S3 figures, S3/local, its target and whether S3 meets it."""
    found = []

    def ratio(name: str, local: float, s3: float, target: float) -> None:
        r = s3 / local if local else 0.0
        found.append(
            {
                "measure": name,
                "unit": "rows/s",
                "local": local,
                "s3": s3,
                "ratio": round(r, 3),
                "target": f">= {target:g} x local",
                "pass": r >= target,
            }
        )

    ratio("ampd dump", section["dump"]["local"]["rows_per_second"],
          section["dump"]["s3"]["rows_per_second"], TARGETS["write_ratio"])  # fmt: skip
    ratio("one-worker job", section["job"]["local"]["rows_per_second"],
          section["job"]["s3"]["rows_per_second"], TARGETS["write_ratio"])  # fmt: skip
    for scan in section["scans"]:
        name = f"scan {scan['table']} ({serving.PATH_NAMES[scan['path']]})"
        ratio(name, scan["local"]["rows_per_second"], scan["s3"]["rows_per_second"],
              TARGETS["scan_ratio"])  # fmt: skip
    counts = section["count"]
    limit = TARGETS["count_warm_seconds"]
    for kind in ("cold", "best_warm"):
        local, s3 = counts["local"][f"{kind}_seconds"], counts["s3"][f"{kind}_seconds"]
        found.append(
            {
                "measure": f"COUNT(*) over {counts['s3']['files']:,} files, "
                + ("cold" if kind == "cold" else "warm (best)"),
                "unit": "s",
                "local": local,
                "s3": s3,
                "ratio": round(s3 / local, 3) if local else None,
                "target": f"< {limit:g} s on S3" if kind == "best_warm" else None,
                "pass": s3 < limit if kind == "best_warm" else None,
            }
        )
    return found
