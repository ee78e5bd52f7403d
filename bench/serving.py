"""The query stage: the extracted chain behind `ampd solo`, scanned in full through each way in.

`ampd solo` (its own amp dir under bench/work/query, its managed PostgreSQL, every port
chosen by the system) extracts the chain from the bench anvil through the Admin API:
`POST /providers`, `POST /datasets`, deploy up to the last block, wait for the job to be
COMPLETED. Then, per table, `SELECT * FROM "bench/chain".<table>` is read to the end by a
client subprocess (bench/query_client.py, measured by bench/measure.py) three ways: the
floor (DataFusion in the client, over the same committed Parquet files), JSON Lines and
Arrow Flight. While a scan runs, the server's own memory is watched: its peak RSS (VmHWM,
reset before each scan through /proc/PID/clear_refs; else VmRSS sampled every 20 ms) and
its CPU time. solo and its PostgreSQL are always stopped, on errors too.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
from measure import last_json_line, process_cpu_seconds

BENCH = Path(__file__).resolve().parent
AMPD = Path(sys.executable).parent / "ampd"

NAMESPACE, NAME, VERSION = "bench", "chain", "1.0.0"
DATASET = f"{NAMESPACE}/{NAME}"
TABLES = ("blocks", "transactions", "logs")
PATHS = ("floor", "jsonl", "flight")
PATH_NAMES = {
    "floor": "floor (DataFusion in-process)",
    "jsonl": "JSON Lines",
    "flight": "Arrow Flight",
}

_POLL_SECONDS = 0.02

Log = Callable[[str], None]
# (command, timeout, result file, log file) -> bench/measure.py's figures
Measured = Callable[[list[str], float, Path, Path], dict]


class ServeError(RuntimeError):
    """ampd solo could not be started, or did not extract the chain."""


# -- ampd solo ---------------------------------------------------------------------------


class Solo:
    """`ampd solo --amp-dir DIR` on free ports; a context manager that always stops it."""

    def __init__(self, amp_dir: Path, log_path: Path) -> None:
        self.amp_dir = amp_dir
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self.admin = self.jsonl = self.flight = self.db_url = ""

    @property
    def pid(self) -> int:
        assert self._proc is not None, "ampd solo is not running"
        return self._proc.pid

    def __enter__(self) -> Solo:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 180.0) -> None:
        env = {
            **os.environ,
            "AMP_CONFIG_ADMIN_API_ADDR": "127.0.0.1:0",
            "AMP_CONFIG_JSONL_ADDR": "127.0.0.1:0",
            "AMP_CONFIG_FLIGHT_ADDR": "127.0.0.1:0",
            "AMP_CONFIG_QUERY_TIMEOUT_SECS": "0",  # no limit: the harness has its own
        }
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as out:
            # Its own process group: a hard stop reaches its PostgreSQL too.
            self._proc = subprocess.Popen(
                [str(AMPD), "solo", "--amp-dir", str(self.amp_dir)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        self.admin = self._wait_for(r"admin API listening on (http://\S+)", deadline)
        self.jsonl = self._wait_for(r"JSON Lines server listening on (http://\S+)", deadline)
        self.flight = self._wait_for(r"Flight server listening on (grpc://\S+)", deadline)
        self.db_url = self._wait_for(r"metadata database: (postgresql://\S+)", deadline)
        self._wait_for(r"(ampd solo is up)", deadline)

    def _wait_for(self, pattern: str, deadline: float) -> str:
        while True:
            match = re.search(pattern, self.log_path.read_text(errors="replace"))
            if match:
                return match.group(1)
            if self._proc is None or self._proc.poll() is not None:
                raise ServeError(f"ampd solo exited at start:\n{self.tail()}")
            if time.monotonic() > deadline:
                raise ServeError(f"ampd solo did not log {pattern!r} in time:\n{self.tail()}")
            time.sleep(0.1)

    def stop(self, timeout: float = 90.0) -> None:
        """SIGTERM (solo stops its services and PostgreSQL), then SIGKILL to its whole group."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of its group
        except ProcessLookupError:
            pass
        proc.wait()

    def tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    # The server process's memory and CPU, from /proc.

    def status_kib(self, field: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        raise ServeError(f"no {field} in /proc/{self.pid}/status")

    def reset_peak(self) -> bool:
        """Reset VmHWM to the current RSS; False where the kernel does not allow it."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return self.status_kib("VmHWM") <= self.status_kib("VmRSS") + 1024

    def cpu_seconds(self) -> float:
        return process_cpu_seconds(self.pid, children=False)


class _RssSampler(threading.Thread):
    """Samples one process's VmRSS (the fallback where VmHWM cannot be reset)."""

    def __init__(self, solo: Solo) -> None:
        super().__init__(daemon=True)
        self.solo = solo
        self.peak_kib = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.peak_kib = max(self.peak_kib, self.solo.status_kib("VmRSS"))
            except (OSError, ServeError):
                return
            self._stop_event.wait(_POLL_SECONDS)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return self.peak_kib


# -- extracting the chain through the Admin API -------------------------------------------


def _call(client: httpx.Client, method: str, path: str, body: dict | None = None) -> dict:
    response = client.request(method, path, json=body)
    if response.status_code >= 400:
        raise ServeError(f"{method} {path}: {response.status_code} {response.text[:2000]}")
    return response.json()


def extract(
    solo: Solo, node_url: str, last_block: int, provider: dict, manifest: dict, timeout: float,
    log: Log,
) -> dict:  # fmt: skip
    """Register the provider and the dataset, deploy up to `last_block`, wait for COMPLETED."""
    with httpx.Client(base_url=solo.admin, timeout=60) as client:
        body = {"name": "anvil", "kind": "evm-rpc", "network": "anvil", "url": node_url, **provider}
        _call(client, "POST", "/providers", body)
        body = {"namespace": NAMESPACE, "name": NAME, "version": VERSION, "manifest": manifest}
        _call(client, "POST", "/datasets", body)
        started = time.monotonic()
        deploy = f"/datasets/{NAMESPACE}/{NAME}/versions/{VERSION}/deploy"
        job_id = _call(client, "POST", deploy, {"end_block": str(last_block)})["job_id"]
        shown = started
        while True:
            status = _call(client, "GET", f"/jobs/{job_id}")["status"]
            if status == "COMPLETED":
                break
            if status in ("STOPPED", "ERROR", "FATAL"):
                progress = _call(client, "GET", f"/jobs/{job_id}/progress")
                raise ServeError(
                    f"job {job_id} ended {status}: {progress.get('detail')}\n{solo.tail()}"
                )
            if time.monotonic() - started > timeout:
                raise ServeError(f"job {job_id} not COMPLETED after {timeout:g} s ({status})")
            if time.monotonic() - shown >= 15:
                shown = time.monotonic()
                tables = _call(client, "GET", f"/jobs/{job_id}/progress")["tables"]
                reached = min((t["current_block"] or 0) for t in tables.values()) if tables else 0
                log(f"  solo: job {job_id} {status}, every table up to block {reached:,}")
            time.sleep(0.5)
        seconds = time.monotonic() - started
    return {"job_id": job_id, "extract_seconds": round(seconds, 1)}


def committed_files(db_url: str, data_dir: Path) -> dict[str, dict]:
    """Per table: its committed (not retired) files' absolute paths, rows and bytes."""
    with psycopg.connect(db_url) as conn:
        found = conn.execute(
            """SELECT r.table_name, f.path, f.row_count FROM files f
               JOIN table_revisions r ON r.id = f.table_revision_id
               WHERE f.retired_at IS NULL ORDER BY r.table_name, f.start_block"""
        ).fetchall()
    tables: dict[str, dict] = {}
    for table, path, rows in found:
        entry = tables.setdefault(table, {"paths": [], "rows": 0, "parquet_bytes": 0})
        full = data_dir / path
        entry["paths"].append(str(full))
        entry["rows"] += rows
        entry["parquet_bytes"] += full.stat().st_size
    return tables


# -- the scans ----------------------------------------------------------------------------


def _client_command(path: str, sql: str, table: str, solo: Solo, files_list: Path) -> list[str]:
    base = [sys.executable, str(BENCH / "query_client.py"), path, "--sql", sql]
    if path == "floor":
        return [*base, "--files", str(files_list), "--table", f"{DATASET}.{table}"]
    return [*base, "--url", solo.jsonl if path == "jsonl" else solo.flight]


def scan(
    solo: Solo, path: str, table: str, files: dict, rep: int, work: Path, measured: Measured,
    timeout: float,
) -> dict:  # fmt: skip
    """One full scan of `table` through `path`, with the client's and the server's figures."""
    sql = f'SELECT * FROM "{DATASET}".{table}'
    files_list = work / f"files-{table}.json"
    files_list.write_text(json.dumps(files["paths"]))
    log_path = work.parent / "logs" / f"query-{path}-{table}-{rep}.log"
    command = _client_command(path, sql, table, solo, files_list)
    server = path != "floor"
    if server:
        rss_before = solo.status_kib("VmRSS")
        hwm_reset = solo.reset_peak()
        cpu_before = solo.cpu_seconds()
        sampler = _RssSampler(solo)
        sampler.start()
    try:
        m = measured(command, timeout, work / "measure.json", log_path)
    finally:
        if server:
            sampled_kib = sampler.stop()
    run: dict = {
        "table": table,
        "path": path,
        "repeat": rep,
        "sql": sql,
        "process_wall_seconds": round(m["wall_seconds"], 3),
        "client_peak_rss_mib": round(m["peak_rss_kib"] / 1024, 1),
        "client_cpu_seconds": round(m["user_seconds"] + m["system_seconds"], 2),
        "log": str(log_path.relative_to(BENCH.parent)),
    }
    if server:
        peak_kib = solo.status_kib("VmHWM") if hwm_reset else sampled_kib
        run.update(
            server_rss_before_mib=round(rss_before / 1024, 1),
            server_peak_rss_mib=round(max(peak_kib, sampled_kib) / 1024, 1),
            server_peak_rss_source="VmHWM (reset before the scan)"
            if hwm_reset
            else "VmRSS sampled",
            server_cpu_seconds=round(solo.cpu_seconds() - cpu_before, 2),
        )
    summary = last_json_line(log_path)
    if m["timed_out"] or m["returncode"] != 0 or summary is None:
        why = f"timed out after {timeout:g} s" if m["timed_out"] else f"exit {m['returncode']}"
        tail = (
            log_path.read_text(errors="replace").strip().splitlines()[-1:]
            if log_path.exists()
            else []
        )
        run.update(
            status="failed", error=f"{why}{': ' + tail[0] if tail else ''} (log: {run['log']})"
        )
        return run
    seconds = summary["seconds"]
    run.update(
        status="ok",
        rows=summary["rows"],
        bytes=summary["bytes"],
        batches=summary["batches"],
        wall_seconds=round(seconds, 3),
        first_batch_seconds=None
        if summary["first_batch_seconds"] is None
        else round(summary["first_batch_seconds"], 3),
        rows_per_second=round(summary["rows"] / seconds, 1),
        mb_per_second=round(summary["bytes"] / 1e6 / seconds, 2),
        rows_match=summary["rows"] == files["rows"],
    )
    return run


def summarize(runs: list[dict]) -> dict:
    """Medians over the repetitions of one (table, path) (ok repetitions only)."""
    ok = [r for r in runs if r["status"] == "ok"]
    if not ok:
        return {}

    def median(key: str) -> float | None:
        values = [r[key] for r in ok if r.get(key) is not None]
        return round(statistics.median(values), 3) if values else None

    wall = median("wall_seconds")
    return {
        "rows": ok[0]["rows"],
        "bytes": ok[0]["bytes"],
        "wall_seconds": wall,
        "rows_per_second": round(ok[0]["rows"] / wall, 1),
        "mb_per_second": round(ok[0]["bytes"] / 1e6 / wall, 2),
        "first_batch_seconds": median("first_batch_seconds"),
        "client_peak_rss_mib": median("client_peak_rss_mib"),
        "client_cpu_seconds": median("client_cpu_seconds"),
        "server_rss_before_mib": median("server_rss_before_mib"),
        "server_peak_rss_mib": median("server_peak_rss_mib"),
        "server_cpu_seconds": median("server_cpu_seconds"),
        "rows_match": all(r["rows_match"] for r in ok),
        "repeats_ok": len(ok),
    }


def run_stage(
    *, work: Path, node_url: str, first_block: int, last_block: int, tables: list[str],
    repeat: int, provider: dict, manifest: dict, timeout: float, keep: bool,
    measured: Measured, log: Log,
) -> dict:  # fmt: skip
    """The whole query stage; its results section. Raises ServeError when solo cannot serve."""
    amp_dir = work / "amp"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    section: dict = {
        "dataset": DATASET,
        "range": [first_block, last_block],
        "blocks": last_block - first_block + 1,
        "tables": tables,
        "repeat": repeat,
        "timeout_seconds": timeout,
        "provider": provider,
    }
    try:
        log(f"query stage: ampd solo extracting blocks 0..{last_block:,} (amp dir {amp_dir})")
        with Solo(amp_dir, work.parent / "logs" / "solo.log") as solo:
            section["server_rss_at_start_mib"] = round(solo.status_kib("VmRSS") / 1024, 1)
            section.update(extract(solo, node_url, last_block, provider, manifest, timeout, log))
            files = committed_files(solo.db_url, amp_dir / "data")
            section["server_rss_after_extract_mib"] = round(solo.status_kib("VmRSS") / 1024, 1)
            section["files"] = {
                t: {
                    "count": len(f["paths"]),
                    "rows": f["rows"],
                    "parquet_mib": round(f["parquet_bytes"] / 2**20, 1),
                }
                for t, f in files.items()
            }
            log(
                f"  extracted in {section['extract_seconds']:.0f} s: "
                + ", ".join(f"{t} {f['rows']:,} rows" for t, f in files.items())
            )
            missing = [t for t in tables if t not in files]
            if missing:
                raise ServeError(f"no committed files for {missing} after the job completed")
            runs: dict[tuple[str, str], list[dict]] = {(t, p): [] for t in tables for p in PATHS}
            for rep in range(1, repeat + 1):
                for table in tables:
                    for path in PATHS:
                        run = scan(solo, path, table, files[table], rep, work, measured, timeout)
                        runs[(table, path)].append(run)
                        _log_scan(run, repeat, log)
            section["server_rss_at_end_mib"] = round(solo.status_kib("VmRSS") / 1024, 1)
    finally:
        if not keep:
            shutil.rmtree(amp_dir, ignore_errors=True)
    section["scans"] = []
    for (table, path), table_runs in runs.items():
        median = summarize(table_runs)
        section["scans"].append(
            {
                "table": table,
                "path": path,
                "status": "ok" if median else "failed",
                "error": None if median else table_runs[-1].get("error"),
                "median": median,
                "runs": table_runs,
            }
        )
    return section


def _log_scan(run: dict, repeat: int, log: Log) -> None:
    head = f"  {run['table']} via {PATH_NAMES[run['path']]}, run {run['repeat']}/{repeat}: "
    if run["status"] != "ok":
        log(head + "failed: " + run["error"])
        return
    server = (
        f", server peak RSS {run['server_peak_rss_mib']:,.0f} MiB"
        f" (before {run['server_rss_before_mib']:,.0f})"
        if "server_peak_rss_mib" in run
        else ""
    )
    log(
        head + f"{run['rows']:,} rows in {run['wall_seconds']:.2f} s, "
        f"{run['rows_per_second']:,.0f} rows/s, {run['mb_per_second']:,.1f} MB/s, "
        f"client peak RSS {run['client_peak_rss_mib']:,.0f} MiB{server}"
    )
