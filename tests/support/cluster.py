"""A whole ampd deployment for end-to-end tests: controllers and workers as real processes
on a real PostgreSQL database, extracting from a real anvil.

`Cluster` writes one config file, starts processes on demand, talks to the Admin API, and
checks the committed output against the node, block by block.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq

from ampd.storage.store import open_store
from support.anvil import DEV_ACCOUNTS, Anvil
from support.chain import LOG_CONTRACT
from support.procs import AMPD, Proc

TERMINAL = ("COMPLETED", "STOPPED", "ERROR", "FATAL")


def fill_chain(anvil: Anvil, blocks: int, txs_per_block: int = 2) -> int:
    """Mine `blocks` blocks, each with `txs_per_block` transactions (log-emitting calls and
    plain transfers) and so with logs; returns the head."""
    sender = DEV_ACCOUNTS[0]
    deploy = anvil.send({"from": sender, "data": "0x" + LOG_CONTRACT.hex()})
    receipt = None
    for _ in range(200):  # automine answers before the receipt is queryable, now and then
        receipt = anvil.receipt(deploy)
        if receipt is not None:
            break
        time.sleep(0.05)
    assert receipt is not None, "the contract deployment was not mined"
    contract = receipt["contractAddress"]
    anvil.set_automine(False)
    try:
        for _ in range(blocks):
            for i in range(txs_per_block):
                account = DEV_ACCOUNTS[1 + i % (len(DEV_ACCOUNTS) - 1)]
                if i % 2 == 0:
                    anvil.send({"from": account, "to": contract, "gas": hex(200_000)})
                else:
                    anvil.send({"from": account, "to": sender, "value": hex(1000 + i)})
            anvil.rpc("evm_mine")
    finally:
        anvil.set_automine(True)
    return anvil.block_number()


def fill_chain_with_calldata(
    anvil: Anvil, blocks: int, txs_per_block: int = 7, calldata_bytes: int = 100_000, seed: int = 0
) -> int:
    """Mine `blocks` blocks of transfers carrying `calldata_bytes` of random (incompressible)
    input each, so the transactions table grows by about txs_per_block * calldata_bytes a
    block (7 * 100 kB is 2.1 M gas a transaction, most of a 30 M block); returns the head."""
    rng = random.Random(seed)
    anvil.set_automine(False)
    try:
        for _ in range(blocks):
            for i in range(txs_per_block):
                account = DEV_ACCOUNTS[1 + i % (len(DEV_ACCOUNTS) - 1)]
                data = "0x" + rng.randbytes(calldata_bytes).hex()
                anvil.send(
                    {"from": account, "to": DEV_ACCOUNTS[0], "data": data, "gas": hex(2_500_000)}
                )
            anvil.rpc("evm_mine")
    finally:
        anvil.set_automine(True)
    return anvil.block_number()


@dataclass
class Cluster:
    root: Path
    db_url: str
    anvil: Anvil
    settings: dict[str, Any] = field(default_factory=dict)
    procs: dict[str, Proc] = field(default_factory=dict)
    admin_url: str | None = None

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "providers").mkdir(exist_ok=True)
        base = {
            "data_dir": "data",
            "providers_dir": "providers",
            "manifests_dir": "manifests",
            "admin_api_addr": "127.0.0.1:0",
            "segment_blocks": 100,
            "worker_timeout_secs": 3,
            "reconcile_interval_secs": 60,
            "shutdown_timeout_secs": 20,
            "poll_interval_secs": 0.2,
            "max_retries": 3,
        }
        base.update({k: v for k, v in self.settings.items() if k not in ("writer", "provider")})
        lines = [f"{k} = {json.dumps(v)}" for k, v in base.items()]
        lines += ["[metadata_db]", f"url = {json.dumps(self.db_url)}", "pool_size = 4"]
        writer = {"segment_flush_interval_secs": 1.0, **self.settings.get("writer", {})}
        lines += ["[writer]"] + [f"{k} = {json.dumps(v)}" for k, v in writer.items()]
        self.config_path = self.root / "config.toml"
        self.config_path.write_text("\n".join(lines) + "\n")
        provider = {
            "kind": "evm-rpc",
            "network": "anvil",
            "url": self.anvil.url,
            **self.settings.get("provider", {}),
        }
        (self.root / "providers" / "anvil.toml").write_text(
            "".join(f"{k} = {json.dumps(v)}\n" for k, v in provider.items())
        )

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    # -- processes --

    def start_controller(
        self, name: str = "controller", env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> Proc:
        proc = Proc(
            [AMPD, "--config", str(self.config_path), "controller"],
            self.root / f"{name}.log",
            env=env,
            cwd=cwd,
        )
        self.procs[name] = proc
        match = proc.wait_for_log(r"admin API listening on (http://\S+)")
        if self.admin_url is None:
            self.admin_url = match.group(1)
        return proc

    def start_worker(
        self,
        node_id: str,
        env: dict[str, str] | None = None,
        wait: bool = True,
        cwd: Path | None = None,
    ) -> Proc:
        proc = Proc(
            [AMPD, "--config", str(self.config_path), "worker", "--node-id", node_id],
            self.root / f"{node_id}.log",
            env=env,
            cwd=cwd,
        )
        self.procs[node_id] = proc
        if wait:
            proc.wait_for_log(r"worker \S+ registered")
        return proc

    def start_server(
        self, name: str = "server", env: dict[str, str] | None = None, cwd: Path | None = None
    ) -> tuple[Proc, str, int]:
        """`ampd server` on free ports; returns the process, the JSON Lines URL, the Flight port."""
        ports = {"AMP_CONFIG_JSONL_ADDR": "127.0.0.1:0", "AMP_CONFIG_FLIGHT_ADDR": "127.0.0.1:0"}
        proc = Proc(
            [AMPD, "--config", str(self.config_path), "server"],
            self.root / f"{name}.log",
            env={**ports, **(env or {})},
            cwd=cwd,
        )
        self.procs[name] = proc
        jsonl = proc.wait_for_log(r"JSON Lines server listening on (http://\S+)").group(1)
        flight = int(proc.wait_for_log(r"Flight server listening on grpc://\S+:(\d+)").group(1))
        return proc, jsonl, flight

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.stop()

    def logs(self) -> str:
        return "\n".join(f"===== {name}\n{proc.log()[-4000:]}" for name, proc in self.procs.items())

    # -- Admin API --

    def api(self) -> httpx.Client:
        assert self.admin_url, "start a controller first"
        return httpx.Client(base_url=self.admin_url, timeout=30)

    def register(
        self, namespace: str = "test", name: str = "chain", manifest: dict | None = None
    ) -> str:
        manifest = manifest or {"kind": "evm-rpc", "network": "anvil", "start_block": 0}
        with self.api() as api:
            response = api.post(
                "/datasets",
                json={
                    "namespace": namespace,
                    "name": name,
                    "version": "1.0.0",
                    "manifest": manifest,
                },
            )
        assert response.status_code == 201, response.text
        return response.json()["manifest_hash"]

    def deploy(self, body: dict[str, Any], ref: str = "test/chain/versions/1.0.0") -> int:
        with self.api() as api:
            response = api.post(f"/datasets/{ref}/deploy", json=body)
        assert response.status_code == 202, response.text
        return response.json()["job_id"]

    def job(self, job_id: int) -> dict[str, Any]:
        with self.api() as api:
            return api.get(f"/jobs/{job_id}").json()

    def segments(self, job_id: int) -> list[dict[str, Any]]:
        with self.api() as api:
            return api.get(f"/jobs/{job_id}/segments").json()["segments"]

    def wait_job(
        self, job_id: int, statuses: tuple[str, ...] = TERMINAL, timeout: float = 120
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        job: dict[str, Any] = {}
        while time.monotonic() < deadline:
            job = self.job(job_id)
            if job["status"] in statuses:
                return job
            time.sleep(0.2)
        raise AssertionError(f"job {job_id} is {job.get('status')} after {timeout}s\n{self.logs()}")

    def wait_until(self, predicate, timeout: float = 60, what: str = "condition"):  # noqa: ANN001, ANN201
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"{what} not reached within {timeout}s\n{self.logs()}")

    # -- output --

    def committed_files(self, manifest_hash: str) -> list[dict[str, Any]]:
        with psycopg.connect(self.db_url) as conn:
            rows = conn.execute(
                """SELECT r.table_name, f.path, f.start_block, f.end_block, f.row_count
                   FROM files f JOIN table_revisions r ON r.id = f.table_revision_id
                   WHERE r.manifest_hash = %s AND r.active AND f.retired_at IS NULL
                   ORDER BY r.table_name, f.start_block""",
                (manifest_hash,),
            ).fetchall()
        return [
            {"table": t, "path": p, "start_block": s, "end_block": e, "rows": n}
            for t, p, s, e, n in rows
        ]

    def committed_to(self, manifest_hash: str) -> int:
        """The last block of the contiguous committed `blocks` prefix from block 0 (-1 if
        none)."""
        spans = sorted(
            (f["start_block"], f["end_block"])
            for f in self.committed_files(manifest_hash)
            if f["table"] == "blocks"
        )
        last = -1
        for start, end in spans:
            if start != last + 1:
                break
            last = end
        return last

    def read_table(self, manifest_hash: str, table: str) -> pa.Table:
        files = [f for f in self.committed_files(manifest_hash) if f["table"] == table]
        data_dir = str(self.settings.get("data_dir", ""))
        if "://" in data_dir:  # an object store: read through it (the test's env configures it)
            store = open_store(data_dir)
            tables = [pq.read_table(store.open(f["path"])) for f in files]
        else:
            tables = [pq.read_table(self.data_dir / f["path"]) for f in files]
        return pa.concat_tables(tables) if tables else pa.table({})

    def completed_by(self, job_id: int) -> Counter[str]:
        """How many of the job's segments each worker completed."""
        return Counter(s["node_id"] for s in self.segments(job_id) if s["status"] == "COMPLETED")


def assert_exact_output(
    cluster: Cluster, manifest_hash: str, start: int, end: int
) -> dict[str, int]:
    """The committed files hold exactly the chain's rows for start..end: every block once,
    every transaction and log once, matching the node's hashes. Returns row counts."""
    anvil = cluster.anvil
    files = cluster.committed_files(manifest_hash)
    for table in ("blocks", "transactions", "logs"):
        spans = sorted((f["start_block"], f["end_block"]) for f in files if f["table"] == table)
        assert spans, f"no committed files for {table}"
        assert spans[0][0] == start and spans[-1][1] == end, (
            f"{table} covers {spans[0][0]}..{spans[-1][1]}"
        )
        for (a0, a1), (b0, _) in zip(spans, spans[1:], strict=False):
            assert b0 == a1 + 1, f"{table}: gap or overlap between files {a0}..{a1} and {b0}.."

    blocks = cluster.read_table(manifest_hash, "blocks")
    numbers = blocks.column("block_num").to_pylist()
    assert sorted(numbers) == list(range(start, end + 1)), "blocks: missing or duplicate block"
    hashes = dict(zip(numbers, blocks.column("hash").to_pylist(), strict=True))

    txs = cluster.read_table(manifest_hash, "transactions")
    logs = cluster.read_table(manifest_hash, "logs")
    tx_keys = list(
        zip(txs.column("block_num").to_pylist(), txs.column("tx_index").to_pylist(), strict=True)
    )
    log_keys = list(
        zip(logs.column("block_num").to_pylist(), logs.column("log_index").to_pylist(), strict=True)
    )
    assert len(tx_keys) == len(set(tx_keys)), "duplicate transaction rows"
    assert len(log_keys) == len(set(log_keys)), "duplicate log rows"
    tx_per_block = Counter(b for b, _ in tx_keys)
    log_per_block = Counter(b for b, _ in log_keys)
    tx_hashes = set(txs.column("tx_hash").to_pylist())
    expected_txs = expected_logs = 0
    for number in range(start, end + 1):
        block = anvil.block(number, full=False)
        assert hashes[number] == bytes.fromhex(block["hash"][2:]), (
            f"block {number}: hash differs from the node"
        )
        assert tx_per_block[number] == len(block["transactions"]), (
            f"block {number}: transaction count"
        )
        for tx_hash in block["transactions"]:
            assert bytes.fromhex(tx_hash[2:]) in tx_hashes
        expected_txs += len(block["transactions"])
        if block["transactions"]:
            receipts = anvil.block_receipts(number)
            n_logs = sum(len(r["logs"]) for r in receipts)
            assert log_per_block[number] == n_logs, f"block {number}: log count"
            expected_logs += n_logs
    assert txs.num_rows == expected_txs and logs.num_rows == expected_logs
    return {"blocks": blocks.num_rows, "transactions": txs.num_rows, "logs": logs.num_rows}
