"""A continuous firehose job through a chain reorganization served by a real gRPC Firehose
server (support.firehose_server) on 127.0.0.1.

One anvil per module holds a fork: a common chain (blocks with log-emitting calls and
transfers), then branch A (four blocks of two transactions) mined, built as Firehose Blocks
and abandoned with `evm_revert`, then branch B (six blocks of other senders' transactions,
one or three a block) mined in its place; anvil keeps branch B. The server first serves the
common chain and branch A, which the worker of a job following the head commits; then
`reorg` makes branch B canonical. The worker must see that the block past its committed
head does not follow it, walk back with Fetch/Block to the last block of the common chain
(the files up to it stay as they were), retire every file of branch A ("reorg at block" in
its log), and extract branch B: the committed `blocks`, `transactions`, `logs` and `calls`
then hold exactly the node's rows, and no row of branch A. A block appended after the
reorg is followed as usual.

The worker sees as head one block below the server's newest one (Amp's arithmetic for a
stream from -1), so it commits up to `server.head - 1`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pyarrow as pa
import pytest

from ampd.metadb.managed import ManagedPostgres
from ampd.providers.firehose.proto import ethereum_pb2 as pb
from support.anvil import DEV_ACCOUNTS, Anvil
from support.chain import wait_for_receipt
from support.cluster import Cluster, assert_exact_output, fill_chain
from support.firehose_blocks import build_blocks
from support.firehose_server import FirehoseServer
from support.postgres import create_database, drop_database

pytestmark = [pytest.mark.timeout(300)]

TOKEN = "reorg-token"
WORKER_ENV = {"AMP_FIREHOSE_RETRY_SECS": "0.05", "AMP_EXTRACT_CHUNK_BLOCKS": "1"}
FINAL_DEPTH = 10  # deeper than the reorg (4 blocks): the fork point is not final
FIREHOSE_TABLES = ("blocks", "transactions", "logs", "calls")
REWIND = re.compile(r"reorg at block (\d+); retired (\d+) file\(s\), resuming after block (\d+)")
BRANCH_B_COUNTS = [3, 1, 3, 1, 3, 1]  # transactions per block of branch B (A: 2 each)


@dataclass
class Fork:
    anvil: Anvil  # holds the common chain and branch B
    base: int  # the last block of the common chain
    branch_a: list[pb.Block]  # 0..base + 4: the common chain and the abandoned branch
    branch_b: list[pb.Block]  # base + 1..base + 6: the branch that replaces it

    @property
    def abandoned(self) -> list[pb.Block]:
        return self.branch_a[self.base + 1 :]


def _mine_branch(anvil: Anvil, contract: str, counts: list[int], senders: list[str]) -> None:
    """One block per count, of that many transactions from `senders` in turn: log-emitting
    calls to `contract` and transfers, alternately."""
    anvil.set_automine(False)
    try:
        for n, count in enumerate(counts):
            txs = []
            for i in range(count):
                sender = senders[i % len(senders)]
                if i % 2 == 0:
                    tx = {"from": sender, "to": contract, "gas": hex(200_000)}
                else:
                    tx = {"from": sender, "to": DEV_ACCOUNTS[0], "value": hex(7000 + 10 * n + i)}
                txs.append(anvil.send(tx))
            anvil.rpc("evm_mine")
            for tx_hash in txs:
                assert wait_for_receipt(anvil, tx_hash) is not None, tx_hash
    finally:
        anvil.set_automine(True)


@pytest.fixture(scope="module")
def fork() -> Iterator[Fork]:
    with Anvil() as anvil:
        base = fill_chain(anvil, 10, txs_per_block=2)  # block 1 deploys the log contract
        (deploy,) = anvil.block(1, full=False)["transactions"]
        contract = anvil.receipt(deploy)["contractAddress"]
        snapshot = anvil.rpc("evm_snapshot")
        _mine_branch(anvil, contract, [2, 2, 2, 2], DEV_ACCOUNTS[1:3])
        assert anvil.block_number() == base + 4
        branch_a = build_blocks(anvil.url, 0, base + 4)
        assert anvil.rpc("evm_revert", snapshot) is True
        assert anvil.block_number() == base
        _mine_branch(anvil, contract, BRANCH_B_COUNTS, DEV_ACCOUNTS[3:6])
        branch_b = build_blocks(anvil.url, base + 1, base + 6)
        # The common chain is the node's; the branches share no block and no transaction.
        for block in branch_a[: base + 1]:
            assert block.hash == node_hash(anvil, block.number)
        fork = Fork(anvil, base, branch_a, branch_b)
        assert not block_hashes(fork.abandoned) & block_hashes(branch_b)
        assert not tx_hashes(fork.abandoned) & tx_hashes(branch_b)
        yield fork


def node_hash(anvil: Anvil, number: int) -> bytes:
    return bytes.fromhex(anvil.block(number, full=False)["hash"][2:])


def block_hashes(blocks: list[pb.Block]) -> set[bytes]:
    return {b.hash for b in blocks}


def tx_hashes(blocks: list[pb.Block]) -> set[bytes]:
    return {t.hash for b in blocks for t in b.transaction_traces}


@pytest.fixture
def env(tmp_path: Path, pg_cluster: ManagedPostgres, fork: Fork) -> Iterator[dict]:
    url = create_database(pg_cluster)
    # Served at first: the common chain and the first block of branch A, so that the worker
    # (whose head is one below the server's) commits exactly the common chain.
    server = FirehoseServer(
        fork.branch_a[: fork.base + 2], token=TOKEN, final_depth=FINAL_DEPTH
    ).start()
    cluster = Cluster(
        tmp_path / "cluster", url, fork.anvil,
        {"poll_interval_secs": 0.2,
         "provider": {"kind": "firehose", "url": server.url, "token": TOKEN}},
    )  # fmt: skip
    try:
        yield {"cluster": cluster, "server": server}
    finally:
        cluster.stop_all()
        server.stop()
        drop_database(pg_cluster, url)


def committed_blocks(cluster: Cluster, manifest_hash: str) -> list[tuple[int, bytes]]:
    """(block_num, hash) of every committed `blocks` row, in block order."""
    table = cluster.read_table(manifest_hash, "blocks")
    if table.num_rows == 0:
        return []
    return sorted(
        zip(table.column("block_num").to_pylist(), table.column("hash").to_pylist(), strict=True)
    )


def wait_for_chain(
    cluster: Cluster, manifest_hash: str, want: list[tuple[int, bytes]], what: str
) -> None:
    cluster.wait_until(
        lambda: (
            cluster.committed_to(manifest_hash) >= want[-1][0]
            and committed_blocks(cluster, manifest_hash) == want
        ),
        timeout=90,
        what=what,
    )


def node_chain(anvil: Anvil, last: int) -> list[tuple[int, bytes]]:
    return [(n, node_hash(anvil, n)) for n in range(last + 1)]


def retired_paths(cluster: Cluster) -> set[str]:
    with psycopg.connect(cluster.db_url) as conn:
        rows = conn.execute("SELECT path FROM files WHERE retired_at IS NOT NULL").fetchall()
    return {path for (path,) in rows}


def test_a_reorg_served_by_firehose_is_rewound_to_the_fork_and_replaced_by_the_new_branch(
    fork: Fork, env: dict
) -> None:
    cluster, server, anvil, base = env["cluster"], env["server"], fork.anvil, fork.base
    cluster.start_controller()
    cluster.start_worker("w", env=WORKER_ENV)
    manifest_hash = cluster.register(manifest={"kind": "firehose", "network": "anvil"})
    job = cluster.deploy({"end_block": None})

    # The common chain, then branch A on top of it (in files of their own).
    wait_for_chain(cluster, manifest_hash, node_chain(anvil, base), "the common chain committed")
    server.append(fork.branch_a[base + 2 :])
    branch_a_head = base + 3  # one below the server's head
    on_branch_a = [(b.number, b.hash) for b in fork.branch_a[: branch_a_head + 1]]
    wait_for_chain(cluster, manifest_hash, on_branch_a, "branch A committed")
    files = cluster.committed_files(manifest_hash)
    kept = {f["path"] for f in files if f["end_block"] <= base}
    abandoned = {f["path"] for f in files if f["start_block"] > base}
    assert kept | abandoned == {f["path"] for f in files}, "no file spans the fork point"
    assert {f["table"] for f in files if f["path"] in abandoned} == set(FIREHOSE_TABLES)
    txs = rows(cluster.read_table(manifest_hash, "transactions"), "block_num", "tx_hash")
    assert {h for n, h in txs if n > base} == tx_hashes(fork.abandoned[:3])
    assert not retired_paths(cluster)

    # Branch B becomes canonical from block base + 1 on; it is longer, so the head moves on.
    undone = server.reorg(fork.branch_b[:5])
    assert undone == list(range(base + 4, base, -1))
    new_head = server.head - 1
    assert new_head == base + 4
    wait_for_chain(cluster, manifest_hash, node_chain(anvil, new_head), "branch B committed")
    log = cluster.wait_until(
        lambda: REWIND.search(cluster.procs["w"].log()), timeout=30, what="the rewind logged"
    )
    # The first block past the committed head did not follow it; the walk-back found the
    # common chain's last block still canonical and retired exactly branch A's files.
    assert log.groups() == (str(base + 4), str(len(abandoned)), str(base))
    assert cluster.procs["w"].log().count("reorg at block") == 1
    files = cluster.committed_files(manifest_hash)
    live = {f["path"] for f in files}
    assert kept <= live, "the files of the common chain are kept as they were"
    assert not abandoned & live and abandoned == retired_paths(cluster)
    assert_exact_output(cluster, manifest_hash, 0, new_head)
    check_branch_b(cluster, manifest_hash, fork, new_head)

    # Following goes on on branch B.
    server.append(fork.branch_b[5:])
    wait_for_chain(
        cluster, manifest_hash, node_chain(anvil, new_head + 1), "the block after the reorg"
    )
    assert_exact_output(cluster, manifest_hash, 0, new_head + 1)
    check_branch_b(cluster, manifest_hash, fork, new_head + 1)
    assert cluster.procs["w"].log().count("reorg at block") == 1
    assert cluster.job(job)["status"] == "RUNNING"

    with cluster.api() as api:
        assert api.put(f"/jobs/{job}/stop").status_code == 200
    assert cluster.wait_job(job, timeout=60)["status"] == "STOPPED"


def check_branch_b(cluster: Cluster, manifest_hash: str, fork: Fork, last: int) -> None:
    """No committed row of any table is of branch A; those past the fork point are branch
    B's, transaction for transaction (in each block's order), as the node has them."""
    anvil, base = fork.anvil, fork.base
    gone_blocks, gone_txs = block_hashes(fork.abandoned), tx_hashes(fork.abandoned)
    tables = {t: cluster.read_table(manifest_hash, t) for t in FIREHOSE_TABLES}
    assert not gone_blocks & set(tables["blocks"]["hash"].to_pylist())
    for table in ("transactions", "logs", "calls"):
        assert not gone_txs & set(tables[table]["tx_hash"].to_pylist()), table
        assert not gone_blocks & set(tables[table]["block_hash"].to_pylist()), table
    txs = sorted(
        row
        for row in rows(tables["transactions"], "block_num", "tx_index", "tx_hash")
        if row[0] > base
    )
    blocks = {n: anvil.block(n, full=False)["transactions"] for n in range(base + 1, last + 1)}
    want = [
        (n, i, bytes.fromhex(h[2:])) for n, hashes in blocks.items() for i, h in enumerate(hashes)
    ]
    assert txs == want
    assert [len(hashes) for hashes in blocks.values()] == BRANCH_B_COUNTS[: last - base]
    # One root call per transaction (its inner calls, if any, below it).
    roots = sorted(
        (n, h)
        for n, h, depth in rows(tables["calls"], "block_num", "tx_hash", "depth")
        if n > base and depth == 0
    )
    assert roots == sorted((n, h) for n, _, h in want)
    # The log-emitting calls' logs (assert_exact_output counted them per block).
    logged = {h for n, h in rows(tables["logs"], "block_num", "tx_hash") if n > base}
    assert logged and logged <= {h for _, _, h in want}


def rows(table: pa.Table, *columns: str) -> list[tuple]:
    return list(zip(*(table.column(c).to_pylist() for c in columns), strict=True))
