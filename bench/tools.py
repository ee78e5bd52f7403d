"""The tools under test: how each is invoked on a block range and how its output rows are counted.

Every tool runs as a subprocess of bench/measure.py (see there for how time and memory are
taken). A tool is described by a `Tool`: its command for a range and an output directory,
and a function that counts blocks, transactions and logs rows in what it wrote (or printed).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
VENV_BIN = Path(sys.executable).parent
AMPD = VENV_BIN / "ampd"
AMPCTL = VENV_BIN / "ampctl"

TABLES = ("blocks", "transactions", "logs")

# The floor's settings, tuned on this machine against anvil (see docs/benchmarks.md);
# `run.py --tune-floor` sweeps them again.
FLOOR_BATCH_SIZE = 200
FLOOR_CONCURRENCY = 2


@dataclass
class Tool:
    """One tool as the harness sees it; `unavailable` (a reason) when it cannot run here."""

    name: str
    command: Callable[[str, int, int, Path], list[str]]
    count_rows: Callable[[Path, Path], dict[str, int]]  # (output dir, its log) -> rows per table
    settings: dict = field(default_factory=dict)
    version: str | None = None
    unavailable: str | None = None


def _count_parquet(out_dir: Path, table_of: Callable[[Path], str | None]) -> dict[str, int]:
    rows = dict.fromkeys(TABLES, 0)
    for path in out_dir.rglob("*.parquet"):
        table = table_of(path)
        if table in rows:
            rows[table] += pq.read_metadata(path).num_rows
    return rows


def _count_csv(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open(newline="") as f:
        return max(0, sum(1 for _ in csv.reader(f)) - 1)  # minus the header


def _last_json_line(log: Path) -> dict:
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError(f"no JSON summary line in {log}")


# -- the floor ---------------------------------------------------------------------------


def floor_tool(batch_size: int, concurrency: int) -> Tool:
    def command(url: str, start: int, end: int, out_dir: Path) -> list[str]:
        return [
            sys.executable, str(BENCH / "floor.py"), "--url", url,
            "--start", str(start), "--end", str(end),
            "--batch-size", str(batch_size), "--concurrency", str(concurrency),
        ]  # fmt: skip

    def count_rows(out_dir: Path, log: Path) -> dict[str, int]:
        summary = _last_json_line(log)
        return {table: summary[table] for table in TABLES}

    return Tool(
        "floor",
        command,
        count_rows,
        settings={"batch_size_calls": batch_size, "concurrency": concurrency},
        version="bench/floor.py (httpx " + _httpx_version() + ")",
    )


def _httpx_version() -> str:
    import httpx

    return httpx.__version__


# -- ampd dump ---------------------------------------------------------------------------


def ampd_dump_available() -> str | None:
    """None when `ampd dump` exists, else why it cannot run."""
    if not os.access(AMPD, os.X_OK):
        return f"{AMPD} not found (run `make setup`)"
    try:
        done = subprocess.run(
            [str(AMPD), "dump", "--help"], capture_output=True, text=True, timeout=60
        )
    except subprocess.TimeoutExpired:
        return "`ampd dump --help` timed out"
    if done.returncode != 0:
        first = (done.stderr or done.stdout).strip().splitlines()
        return "not available: `ampd dump --help` exited " + (
            f"{done.returncode} ({first[-1]})" if first else str(done.returncode)
        )
    return None


def ampd_version() -> str | None:
    try:
        done = subprocess.run([str(AMPD), "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip().split()[-1] if done.returncode == 0 and done.stdout.strip() else None


def write_manifest(path: Path) -> str:
    """The manifest ampd dumps with: `ampctl manifest generate`'s when it works, else minimal."""
    try:
        done = subprocess.run(
            [str(AMPCTL), "manifest", "generate", "--kind", "evm-rpc", "--network", "anvil"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        if done.returncode == 0:
            json.loads(done.stdout)
            path.write_text(done.stdout)
            return "ampctl manifest generate --kind evm-rpc --network anvil"
    except (OSError, subprocess.TimeoutExpired, ValueError):
        pass
    path.write_text(json.dumps({"kind": "evm-rpc", "network": "anvil", "start_block": 0}))
    return "minimal"


def ampd_tool(
    work_dir: Path, batch_size: int, concurrency: int, extra_args: tuple[str, ...] = ()
) -> Tool:
    config_dir = work_dir / "ampd"
    providers = config_dir / "providers"
    manifest = config_dir / "anvil.json"

    def command(url: str, start: int, end: int, out_dir: Path) -> list[str]:
        providers.mkdir(parents=True, exist_ok=True)
        (providers / "anvil.toml").write_text(
            'kind = "evm-rpc"\nnetwork = "anvil"\n'
            f'url = "{url}"\nrpc_batch_size = {batch_size}\n'
            f"concurrent_request_limit = {concurrency}\n"
        )
        return [
            str(AMPD), "dump", "--manifest", str(manifest), "--providers-dir", str(providers),
            "--data-dir", str(out_dir), "--start", str(start), "--end", str(end),
            *extra_args,
        ]  # fmt: skip

    def count_rows(out_dir: Path, log: Path) -> dict[str, int]:
        # <data_dir>/<namespace>/<dataset>/<table>/<revision>/<file>.parquet
        return _count_parquet(out_dir, lambda p: p.parent.parent.name)

    unavailable = ampd_dump_available()
    settings = {
        "rpc_batch_size": batch_size,
        "concurrent_request_limit": concurrency,
        "extra_args": list(extra_args),
    }
    if unavailable is None:
        config_dir.mkdir(parents=True, exist_ok=True)
        settings["manifest"] = write_manifest(manifest)
    return Tool("ampd dump", command, count_rows, settings, ampd_version(), unavailable=unavailable)


# -- the peers ---------------------------------------------------------------------------


def cryo_tool(python: Path, version: str | None, error: str | None) -> Tool:
    def command(url: str, start: int, end: int, out_dir: Path) -> list[str]:
        return [
            str(python), str(BENCH / "peer_cryo.py"), "--url", url,
            "--start", str(start), "--end", str(end), "--output-dir", str(out_dir),
        ]  # fmt: skip

    def count_rows(out_dir: Path, log: Path) -> dict[str, int]:
        # network_31337__<datatype>__<first>_to_<last>.parquet
        return _count_parquet(out_dir, lambda p: p.name.split("__")[1])

    settings = {
        "call": 'cryo.freeze(["blocks", "transactions", "logs"], blocks=["A:B+1"], rpc=URL, '
        "output_dir=DIR)",
        "options": "cryo defaults: chunk size 1000 blocks, 4 chunks at once, "
        "unlimited concurrent requests, parquet",
    }
    return Tool("cryo", command, count_rows, settings, version, unavailable=error)


def ethereum_etl_tool(python: Path, version: str | None, error: str | None) -> Tool:
    batch_size, max_workers = 100, 5

    def command(url: str, start: int, end: int, out_dir: Path) -> list[str]:
        return [
            str(python), str(BENCH / "peer_ethereum_etl.py"), "--url", url,
            "--start", str(start), "--end", str(end), "--output-dir", str(out_dir),
            "--batch-size", str(batch_size), "--max-workers", str(max_workers),
        ]  # fmt: skip

    def count_rows(out_dir: Path, log: Path) -> dict[str, int]:
        return {table: _count_csv(out_dir / f"{table}.csv") for table in TABLES}

    settings = {
        "pipeline": "export_blocks_and_transactions, extract_csv_column --column hash, "
        "export_receipts_and_logs (CSV)",
        "batch_size": batch_size,
        "max_workers": max_workers,
    }
    return Tool("ethereum-etl", command, count_rows, settings, version, unavailable=error)
