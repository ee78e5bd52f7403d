"""Firehose datasets through the whole system: `ampd dump` and workers extract a real anvil
chain from a real gRPC Firehose server (support.firehose_server) on 127.0.0.1.

One anvil per module holds the call cases of support.firehose_chain (nested calls with
logs, reverted and failed calls, DELEGATECALL, STATICCALL, CREATE and CREATE2) and the varied
chain of support.chain (every transaction type); its Blocks are built once. The dumped
`blocks` and `logs` tables must equal an evm-rpc dump of the same node column for column
(the same schema); `transactions` the same where the kinds agree and the node's receipts
where they differ; `calls` the node's call tracer. Then faults (a stream cut mid-range and
UNAVAILABLE, recovered; a wrong token, refused at once), and a job of three workers with
one killed by SIGKILL, whose committed rows are exactly the chain's.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import grpc
import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ampd.metadb.managed import ManagedPostgres
from ampd.providers.firehose.tables import SCHEMAS
from support.anvil import Anvil
from support.chain import build_varied_chain
from support.cluster import Cluster
from support.dumps import run_dump, write_inputs
from support.firehose_blocks import build_blocks
from support.firehose_chain import build_call_chain
from support.firehose_checks import TRACER, raw, tracer_calls
from support.firehose_server import FirehoseServer
from support.postgres import create_database, drop_database
from support.procs import AMPD, run

pytestmark = [pytest.mark.timeout(300)]

TOKEN = "s3cret-token"
FAST_RETRY = {"AMP_FIREHOSE_RETRY_SECS": "0.05", "FH_TOKEN": TOKEN}
FIREHOSE_TABLES = tuple(SCHEMAS)
FEE_CAPS = ("max_fee_per_gas", "max_priority_fee_per_gas")


@pytest.fixture(scope="module")
def chain() -> Iterator[SimpleNamespace]:
    with Anvil() as anvil:
        build_call_chain(anvil)
        build_varied_chain(anvil)
        head = anvil.block_number()
        blocks = build_blocks(anvil.url, 0, head)
        yield SimpleNamespace(anvil=anvil, blocks=blocks, head=head)


@pytest.fixture(scope="module")
def rpc_dump(chain: SimpleNamespace, tmp_path_factory: pytest.TempPathFactory):
    """An evm-rpc dump of the same node and range: what the shared tables must equal."""
    folder = tmp_path_factory.mktemp("rpc")
    return run_dump(write_inputs(folder, chain.anvil.url), folder / "data", 0, chain.head).tables


def firehose_inputs(folder: Path, url: str, token: str = "${FH_TOKEN}") -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / "chain.json"
    manifest.write_text(json.dumps({"kind": "firehose", "network": "anvil"}))
    providers = folder / "providers"
    providers.mkdir(exist_ok=True)
    (providers / "fh.toml").write_text(
        f'kind = "firehose"\nnetwork = "anvil"\nurl = "{url}"\ntoken = "{token}"\n'
    )
    return manifest, providers


def dump_firehose(
    folder: Path, url: str, end: int, *extra: str, token: str = "${FH_TOKEN}",
    env: dict[str, str] | None = None, check: bool = True,
):  # fmt: skip  # noqa: ANN201
    manifest, providers = firehose_inputs(folder, url, token)
    command = [
        AMPD, "dump", "--manifest", str(manifest), "--providers-dir", str(providers),
        "--data-dir", str(folder / "data"), "--start", "0", "--end", str(end), "--no-progress",
        *extra,
    ]  # fmt: skip
    result = run(command, env={**FAST_RETRY, **(env or {})}, timeout=120)
    if check:
        assert result.returncode == 0, result.stderr
    tables = {}
    if result.returncode == 0:
        for table in FIREHOSE_TABLES:
            (revision,) = (folder / "data" / "_" / "chain" / table).iterdir()
            parts = [pq.read_table(p) for p in sorted(revision.glob("*.parquet"))]
            tables[table] = pa.concat_tables(parts).replace_schema_metadata(None)
    return result, tables


def assert_same(got: pa.Table, want: pa.Table, skip: tuple[str, ...] = ()) -> None:
    """Equal tables (but the columns `skip`), or the first column and row that differ."""
    assert got.schema == want.schema
    for name in want.schema.names:
        if name in skip:
            continue
        a, b = got.column(name).to_pylist(), want.column(name).to_pylist()
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert x == y, f"{name}, row {i}: {x!r} != {y!r}"


def by(table: pa.Table, *keys: str) -> pa.Table:
    return table.sort_by([(k, "ascending") for k in keys])


def test_ampd_dump_of_a_firehose_dataset_says_what_the_node_says(chain, rpc_dump, tmp_path):
    with FirehoseServer(chain.blocks, token=TOKEN) as server:
        _, tables = dump_firehose(tmp_path / "fh", server.url, chain.head)
        _, in_process = dump_firehose(tmp_path / "one", server.url, chain.head, "--processes", "0")
        assert server.last_metadata.get("authorization") == f"bearer {TOKEN}"
    for table in FIREHOSE_TABLES:
        assert tables[table].schema == SCHEMAS[table], table
        assert tables[table].equals(in_process[table]), f"{table}: fetch processes or not"
    # blocks and logs: Amp's firehose tables have the evm-rpc columns; every value the same.
    # Firehose's block has no requests hash (Amp writes null; the node has one from prague).
    assert_same(tables["blocks"], rpc_dump["blocks"], skip=("requests_hash",))
    assert tables["blocks"].column("requests_hash").null_count == tables["blocks"].num_rows
    logs = by(tables["logs"], "block_num", "log_index")
    assert logs.num_rows > 20
    assert_same(logs, by(rpc_dump["logs"], "block_num", "log_index"))
    check_transactions(chain.anvil, tables["transactions"], rpc_dump["transactions"])
    check_calls(chain.anvil, chain.head, tables["calls"])


def check_transactions(anvil: Anvil, fh: pa.Table, rpc: pa.Table) -> None:
    """Columns both kinds have in one type are equal; the rest as the node's receipts say."""
    assert fh.num_rows == rpc.num_rows > 10
    same = [
        f.name
        for f in fh.schema
        if f.name in rpc.schema.names and f.type == rpc.schema.field(f.name).type
    ]
    for name in same:
        if name in ("to", "gas_used", "status", "v", "r", "s", "gas_price", "value", *FEE_CAPS):
            continue  # below
        assert fh.column(name).equals(rpc.column(name)), name
    # Fee caps are a dynamic-fee transaction's (type 2 and up) only: null before, as Firehose.
    types = fh.column("type").to_pylist()
    for name in FEE_CAPS:
        for kind, got, want in zip(
            types, fh.column(name).to_pylist(), rpc.column(name).to_pylist(), strict=True
        ):
            assert got == (want if kind >= 2 else None), name
    # Firehose leaves a zero BigInt out, so a zero value is null (as in Amp); others equal.
    for got, want in zip(
        fh.column("value").to_pylist(), rpc.column("value").to_pylist(), strict=True
    ):
        assert got == (None if want == "0" else want)
    receipts = {}
    for n in sorted(set(fh.column("block_num").to_pylist())):
        for r in anvil.block_receipts(n) or []:
            receipts[raw(r["transactionHash"])] = r
    cumulative = {}
    for row in fh.to_pylist():
        r = receipts[row["tx_hash"]]
        previous = cumulative.get(row["block_num"], 0)
        cumulative[row["block_num"]] = int(r["cumulativeGasUsed"], 16)
        assert row["gas_used"] == int(r["gasUsed"], 16) == cumulative[row["block_num"]] - previous
        created = r.get("contractAddress")
        assert row["to"] == raw(created or r["to"]), "a creation's `to` is the new contract"
        assert (row["status"] == 1) == (r["status"] == "0x1"), row["tx_hash"].hex()
    assert set(fh.column("status").to_pylist()) >= {1}, "statuses"
    assert 1 in fh.column("status").to_pylist() and any(
        s != 1 for s in fh.column("status").to_pylist()
    )


def check_calls(anvil: Anvil, head: int, calls: pa.Table) -> None:
    """One row per call the node's tracer shows whose state was kept, in execution order,
    with its depth, parties, value and input."""
    expected = []
    for n in range(head + 1):
        block = anvil.block(n, full=True)
        for i, tx in enumerate(block["transactions"]):
            frames = tracer_calls(anvil.rpc("debug_traceTransaction", tx["hash"], TRACER))
            failed: set[int] = set()
            for index, frame in enumerate(frames, start=1):
                if frame.get("error") or frame["parent"] in failed:
                    failed.add(index)
                    continue
                kept_value = frame.get("value")
                expected.append(
                    (n, i, index, frame["depth"], raw(frame["from"]), raw(frame["to"]),
                     raw(frame.get("input") or "0x"), int(kept_value, 16) if kept_value else None)
                )  # fmt: skip
    rows = [
        (r["block_num"], r["tx_index"], r["index"], r["depth"], r["caller"], r["address"],
         r["input"], None if r["value"] is None else int(r["value"]))
        for r in calls.to_pylist()
    ]  # fmt: skip
    assert len(rows) > 20
    # A DELEGATECALL's value is its parent's and a STATICCALL has none: compare the rest.
    assert [r[:7] for r in rows] == [e[:7] for e in expected]
    for got, want in zip(rows, expected, strict=True):
        if want[7] is not None and got[7] is not None:
            assert got[7] == want[7], got


def test_a_cut_stream_and_unavailable_are_retried_and_the_output_is_the_same(
    chain, rpc_dump, tmp_path
):
    with FirehoseServer(chain.blocks, token=TOKEN) as server:
        server.fail_next(2, grpc.StatusCode.UNAVAILABLE)
        server.cut_streams(after=3, count=2)
        _, tables = dump_firehose(tmp_path, server.url, chain.head, "--processes", "0")
        assert server.blocks_calls >= 5, "two refused calls and two cut streams, then resumed"
    assert_same(tables["blocks"], rpc_dump["blocks"], skip=("requests_hash",))
    logs = by(tables["logs"], "block_num", "log_index")
    assert_same(logs, by(rpc_dump["logs"], "block_num", "log_index"))


def test_a_finalized_only_dataset_streams_final_blocks_only(chain, rpc_dump, tmp_path):
    with FirehoseServer(chain.blocks, token=TOKEN) as server:  # every block is final here
        manifest, providers = firehose_inputs(tmp_path, server.url)
        manifest.write_text(
            json.dumps({"kind": "firehose", "network": "anvil", "finalized_blocks_only": True})
        )
        command = [
            AMPD, "dump", "--manifest", str(manifest), "--providers-dir", str(providers),
            "--data-dir", str(tmp_path / "data"), "--start", "0", "--end", str(chain.head),
            "--no-progress", "--processes", "0",
        ]  # fmt: skip
        result = run(command, env=FAST_RETRY, timeout=120)
        assert result.returncode == 0, result.stderr
        streams = [r for method, r in server.requests if method == "Blocks"]
        assert streams and all(r.final_blocks_only for r in streams)
    assert json.loads(result.stdout)["rows"]["blocks"] == rpc_dump["blocks"].num_rows


def test_a_stalled_stream_is_opened_again_from_its_cursor(chain, rpc_dump, tmp_path):
    """A server that keeps the stream open but stops sending: after AMP_FIREHOSE_IDLE_SECS
    the chunk's stream is opened again from its cursor, and the output is the same."""
    with FirehoseServer(chain.blocks, token=TOKEN) as server:
        server.message_delay = 3.0  # the first stream sends nothing for 3 s (idle limit 0.5 s)

        def unstall() -> None:
            while server.blocks_calls < 2:
                time.sleep(0.01)
            server.message_delay = 0.0

        thaw = threading.Thread(target=unstall, daemon=True)
        thaw.start()
        _, tables = dump_firehose(
            tmp_path, server.url, chain.head, "--processes", "0",
            env={"AMP_FIREHOSE_IDLE_SECS": "0.5", "AMP_EXTRACT_CHUNKS_IN_FLIGHT": "1"},
        )  # fmt: skip
        thaw.join(5)
        assert server.blocks_calls >= 2, "the stalled stream was opened again"
    assert_same(tables["blocks"], rpc_dump["blocks"], skip=("requests_hash",))


def test_a_wrong_token_fails_at_once_without_retries(chain, tmp_path):
    with FirehoseServer(chain.blocks, token=TOKEN) as server:
        started = time.monotonic()
        result, _ = dump_firehose(
            tmp_path, server.url, chain.head, "--processes", "0", token="not-the-token-42",
            env={"AMP_EXTRACT_CHUNKS_IN_FLIGHT": "1", "AMP_FIREHOSE_RETRY_SECS": "5"},
            check=False,
        )  # fmt: skip
        assert result.returncode == 1
        assert "provider 'fh'" in result.stderr and "UNAUTHENTICATED" in result.stderr
        assert "not-the-token-42" not in result.stderr, "the token is not shown"
        assert server.blocks_calls == 1, "refused credentials are not retried"
        assert time.monotonic() - started < 30


@pytest.fixture(scope="module")
def cluster_env(tmp_path_factory, pg_cluster: ManagedPostgres, chain) -> Iterator[dict]:
    url = create_database(pg_cluster)
    server = FirehoseServer(chain.blocks, token=TOKEN).start()
    node = SimpleNamespace(url=server.url)
    cluster = Cluster(
        tmp_path_factory.mktemp("fhjobs"), url, node,  # type: ignore[arg-type]
        {"segment_blocks": 4, "poll_interval_secs": 0.2,
         "provider": {"kind": "firehose", "url": server.url, "token": TOKEN}},
    )  # fmt: skip
    try:
        yield {"cluster": cluster, "server": server}
    finally:
        cluster.stop_all()
        server.stop()
        drop_database(pg_cluster, url)


def test_three_workers_extract_a_firehose_dataset_exactly_once_despite_a_kill_9(
    chain, rpc_dump, cluster_env
):
    cluster, server = cluster_env["cluster"], cluster_env["server"]
    env = {"AMP_EXTRACT_CHUNK_BLOCKS": "1", **FAST_RETRY}
    cluster.start_controller()
    for name in ("w1", "w2", "w3"):
        cluster.start_worker(name, env=env)
    manifest_hash = cluster.register(manifest={"kind": "firehose", "network": "anvil"})
    server.message_delay = 0.02  # slow enough that the kill lands mid-job
    job = cluster.deploy({"end_block": str(chain.head)})
    cluster.wait_until(
        lambda: any(f["table"] == "calls" for f in cluster.committed_files(manifest_hash)),
        what="a first committed file",
    )
    cluster.procs["w2"].popen.send_signal(signal.SIGKILL)
    cluster.procs["w2"].popen.wait(10)
    server.message_delay = 0
    done = cluster.wait_job(job, timeout=180)
    assert done["status"] == "COMPLETED", done
    tables = {t: cluster.read_table(manifest_hash, t) for t in FIREHOSE_TABLES}
    blocks = tables["blocks"].replace_schema_metadata(None).sort_by("block_num")
    assert_same(blocks, rpc_dump["blocks"], skip=("requests_hash",))  # each block once
    logs = by(tables["logs"].replace_schema_metadata(None), "block_num", "log_index")
    assert_same(logs, by(rpc_dump["logs"], "block_num", "log_index"))
    keys = list(
        zip(
            *(tables["calls"].column(c).to_pylist() for c in ("block_num", "tx_index", "index")),
            strict=True,
        )
    )
    assert len(keys) == len(set(keys)) > 20, "no call doubled"
    assert tables["transactions"].num_rows == rpc_dump["transactions"].num_rows
    # Progress per table, and the query server, as for an evm-rpc dataset.
    with cluster.api() as api:
        progress = api.get(f"/jobs/{job}/progress").json()["tables"]
    assert {t: p["current_block"] for t, p in progress.items()} == dict.fromkeys(
        FIREHOSE_TABLES, chain.head
    )
    _, jsonl, _ = cluster.start_server()
    sql = (
        "SELECT count(*) AS n, count(DISTINCT tx_hash) AS txs, max(depth) AS deepest "
        'FROM "test/chain".calls'
    )
    answer = httpx.post(jsonl, content=sql, timeout=60)
    assert answer.status_code == 200, answer.text
    (row,) = [json.loads(line) for line in answer.text.splitlines() if line]
    calls = tables["calls"]
    assert row == {
        "n": calls.num_rows,
        "txs": len(set(calls.column("tx_hash").to_pylist())),
        "deepest": max(calls.column("depth").to_pylist()),
    }
    assert row["deepest"] >= 2, "nested calls are there"
    assert os.environ.get("AMP_FIREHOSE_RETRY_SECS") is None  # the test's own env is untouched
