"""`make demo`: the main job end to end, in a throwaway folder, stopping all it started.

1. anvil with a few thousand blocks of varied activity (every transaction type, contract
   logs with 0-4 topics, a reverted call, busy blocks and empty ones);
2. `ampd solo` on its managed PostgreSQL;
3. with `ampctl`: register the provider and the dataset, deploy, watch the progress;
4. the row count of each table, from the metadata database and read back from the files;
5. SQL over the chain through both query endpoints (JSON Lines and Arrow Flight).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from support.anvil import Anvil  # noqa: E402
from support.chain import build_varied_chain  # noqa: E402
from support.cluster import fill_chain  # noqa: E402

BIN = Path(sys.executable).parent
AMPD, AMPCTL = str(BIN / "ampd"), str(BIN / "ampctl")


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def ampctl(admin: str, *args: str, capture: bool = False) -> str:
    print("$ ampctl " + " ".join(args), flush=True)
    result = subprocess.run(
        [AMPCTL, "--admin-url", admin, *args],
        text=True,
        stdout=subprocess.PIPE if capture else None,
        check=False,
    )
    if result.returncode != 0:
        raise SystemExit(f"ampctl {' '.join(args)} failed with exit code {result.returncode}")
    return result.stdout or ""


def wait_for(log_path: Path, pattern: str, proc: subprocess.Popen[bytes]) -> re.Match[str]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        match = re.search(pattern, log_path.read_text())
        if match:
            return match
        if proc.poll() is not None:
            raise SystemExit(f"ampd solo exited early:\n{log_path.read_text()}")
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {pattern!r}:\n{log_path.read_text()}")


def main() -> int:
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="ampd-demo-") as tmp:
        work = Path(tmp)
        step("starting anvil and mining a few thousand blocks of varied activity")
        with Anvil() as anvil:
            varied = build_varied_chain(anvil)
            fill_chain(anvil, 2000, txs_per_block=3)
            anvil.mine(1000)  # quiet stretch: empty blocks
            head = fill_chain(anvil, 500, txs_per_block=1)
            print(
                f"anvil at {anvil.url}: head {head}; tx types {sorted({t.type for t in varied.txs})}"
            )
            code = run_solo(work, anvil.url, head)
    print(f"\ndemo finished in {time.monotonic() - began:.0f}s")
    return code


def run_solo(work: Path, node_url: str, head: int) -> int:
    amp_dir = work / "amp"
    log_path = work / "solo.log"
    step(f"starting ampd solo (amp dir {amp_dir}, log {log_path})")
    env = {
        **os.environ,
        "AMP_CONFIG_ADMIN_API_ADDR": "127.0.0.1:0",
        "AMP_CONFIG_JSONL_ADDR": "127.0.0.1:0",
        "AMP_CONFIG_FLIGHT_ADDR": "127.0.0.1:0",
        "AMP_CONFIG_SEGMENT_BLOCKS": "1000",
    }
    with open(log_path, "wb") as out:
        solo = subprocess.Popen(
            [AMPD, "solo", "--amp-dir", str(amp_dir)], stdout=out, stderr=subprocess.STDOUT, env=env
        )
    try:
        admin = wait_for(log_path, r"admin API listening on (http://\S+)", solo).group(1)
        db_url = wait_for(log_path, r"metadata database: (\S+)", solo).group(1)
        jsonl = wait_for(log_path, r"JSON Lines server listening on (http://\S+)", solo).group(1)
        flight_port = wait_for(
            log_path, r"Flight server listening on grpc://\S+:(\d+)", solo
        ).group(1)
        wait_for(log_path, r"ampd solo is up", solo)
        print(f"admin API at {admin}; metadata database {db_url}")

        step("registering the provider and the dataset, then deploying")
        provider = work / "anvil.toml"
        provider.write_text(
            f'kind = "evm-rpc"\nnetwork = "anvil"\nurl = "{node_url}"\nrpc_batch_size = 100\n'
        )
        ampctl(admin, "provider", "register", "anvil", str(provider))
        manifest = work / "manifest.json"
        ampctl(
            admin,
            "manifest",
            "generate",
            "--kind",
            "evm-rpc",
            "--network",
            "anvil",
            "-o",
            str(manifest),
        )
        ampctl(admin, "dataset", "register", "demo/chain", str(manifest), "--tag", "1.0.0")
        out = ampctl(
            admin,
            "dataset",
            "deploy",
            "demo/chain@1.0.0",
            "--end-block",
            "latest",
            "--parallelism",
            "4",
            capture=True,
        )
        print(out.strip())
        job_id = re.search(r"(\d+)", out).group(1)

        step(f"job {job_id}: progress until it completes")
        ampctl(admin, "job", "progress", job_id, "--watch")
        ampctl(admin, "job", "segments", job_id)
        ampctl(admin, "worker", "list")

        step("rows per table")
        report_rows(db_url, amp_dir / "data", head)

        step("SQL over the extracted chain")
        run_queries(jsonl, int(flight_port))
    finally:
        step("stopping ampd solo")
        solo.send_signal(signal.SIGTERM)
        code = solo.wait(60)
        print(f"ampd solo exited with code {code}")
    return code


def report_rows(db_url: str, data_dir: Path, head: int) -> None:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            """SELECT r.table_name, count(*), sum(f.row_count), min(f.start_block), max(f.end_block)
               FROM files f JOIN table_revisions r ON r.id = f.table_revision_id
               WHERE f.retired_at IS NULL GROUP BY r.table_name ORDER BY r.table_name"""
        ).fetchall()
        paths = dict(
            conn.execute(
                """SELECT r.table_name, array_agg(f.path) FROM files f
                   JOIN table_revisions r ON r.id = f.table_revision_id
                   WHERE f.retired_at IS NULL GROUP BY r.table_name"""
            ).fetchall()
        )
    print(f"{'table':<14}{'files':>7}{'rows':>10}{'rows read back':>16}   blocks")
    for table, files, count, first, last in rows:
        read_back = sum(pq.read_metadata(data_dir / p).num_rows for p in paths[table])
        print(f"{table:<14}{files:>7}{count:>10}{read_back:>16}   {first}..{last}")
        if read_back != count or last != head:
            raise SystemExit(f"{table}: committed rows and files disagree, or the range is short")


TOP_SENDERS = (
    'SELECT "from" AS sender, count(*) AS transactions FROM "demo/chain".transactions '
    "GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10"
)
LOGS_PER_BLOCK = (
    'SELECT block_num, count(*) AS logs FROM "demo/chain".logs '
    "GROUP BY block_num ORDER BY logs DESC, block_num LIMIT 5"
)


def run_queries(jsonl: str, flight_port: int) -> None:
    """The same questions through JSON Lines (HTTP) and Arrow Flight; both must agree."""
    import httpx
    import pyarrow.flight as flight

    client = flight.connect(f"grpc://127.0.0.1:{flight_port}")
    for title, sql in (
        ("the ten addresses that sent the most transactions", TOP_SENDERS),
        ("the blocks with the most logs (count of logs per block)", LOGS_PER_BLOCK),
    ):
        print(f"\n{title}\n$ curl -d '{sql}' {jsonl}")
        response = httpx.post(jsonl, content=sql, timeout=60)
        response.raise_for_status()
        rows = [json.loads(line) for line in response.text.splitlines()]
        for row in rows:
            print("  " + "  ".join(f"{k}={v}" for k, v in row.items()))
        info = client.get_flight_info(flight.FlightDescriptor.for_command(sql.encode()))
        table = client.do_get(info.endpoints[0].ticket).read_all()
        print(f"  Arrow Flight: {table.num_rows} rows, columns {table.column_names}")
        if table.num_rows != len(rows):
            raise SystemExit("JSON Lines and Flight disagree")


if __name__ == "__main__":
    sys.exit(main())
