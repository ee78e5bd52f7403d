"""What `ampd dump` writes, checked against the node itself, every column of every row.

A varied anvil chain (every transaction type the hardfork allows, contract creation, logs
with 0..4 topics, a reverted transaction, empty blocks) is dumped by a real `ampd dump`
process; the expected rows are built from the node's own JSON by `support.expected`, which
shares no code with ampd's converter. Two hardforks: prague (types 0..4, every optional block
field present) and london (no withdrawals, blob or beacon fields: their columns are null).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ampd.datasets.manifest import parse_manifest
from ampd.extract.engine import ExtractionTarget, Tuning, extract_range
from ampd.extract.sources import open_source, providers_for
from ampd.providers.evm_rpc.schema import TABLES
from ampd.storage.parquet_writer import ClosedFile, WriterSettings
from ampd.storage.paths import new_revision
from ampd.storage.store import open_store
from support.anvil import Anvil, find_cast
from support.chain import LOG_TOPICS, ChainInfo, build_varied_chain
from support.dumps import (
    DATASET,
    NAMESPACE,
    NETWORK,
    DumpInputs,
    DumpOutput,
    read_table,
    run_dump,
    write_inputs,
)
from support.expected import RawBlock, expected_tables, fetch_raw
from support.faultproxy import FaultProxy

pytestmark = pytest.mark.timeout(180)

_FILE_NAME = re.compile(r"^(\d{9,})-[0-9a-f]{16}\.parquet$")
_INDEX = {"blocks": None, "transactions": "tx_index", "logs": "log_index"}


@dataclass
class Node:
    anvil: Anvil
    chain: ChainInfo
    raw: dict[int, RawBlock]  # block number -> the node's JSON, genesis included
    expected: dict[str, list[dict[str, Any]]]

    @property
    def end(self) -> int:
        return self.chain.end


@pytest.fixture(scope="module", params=["prague", "london"])
def node(request: pytest.FixtureRequest) -> Iterator[Node]:
    if request.param == "prague" and find_cast() is None:
        pytest.skip(
            "cast not found: the blob (type 3) and set-code (type 4) transactions are "
            "sent with `cast send`; run `make setup` to install it"
        )
    with Anvil(hardfork=request.param) as anvil:
        chain = build_varied_chain(anvil)
        raw = fetch_raw(anvil, range(0, chain.end + 1))
        yield Node(anvil, chain, {r.number: r for r in raw}, expected_tables(raw))


@pytest.fixture(scope="module")
def dumped(node: Node, tmp_path_factory: pytest.TempPathFactory) -> DumpOutput:
    """The whole chain, genesis to head, dumped straight from anvil with default settings."""
    work = tmp_path_factory.mktemp("dump")
    return run_dump(write_inputs(work, node.anvil.url), work / "data", 0, node.end)


# -- helpers ----------------------------------------------------------------------------------


def assert_rows_equal(table: str, actual: list[dict], expected: list[dict]) -> None:
    """Equal row lists; on a difference, name the first row and the columns that differ."""
    for i, (got, want) in enumerate(zip(actual, expected, strict=False)):
        if got != want:
            diff = {
                c: (got.get(c), want.get(c))
                for c in sorted(set(got) | set(want))
                if got.get(c) != want.get(c)
            }
            where = f"block {want.get('block_num')}"
            pytest.fail(f"{table} row {i} ({where}) differs (column: (ampd, node)): {diff}")
    assert len(actual) == len(expected), f"{table}: {len(actual)} rows, expected {len(expected)}"


def assert_contract_schema(actual: pa.Schema, table: str) -> None:
    expected = TABLES[table]
    # `str` of a type spells nested names and nullability (list<item: ... not null>), which
    # pyarrow's type equality ignores for list items.
    describe = lambda s: [(f.name, str(f.type), f.nullable) for f in s]  # noqa: E731
    assert describe(actual) == describe(expected)
    assert actual.remove_metadata().equals(expected)


def assert_files_cover(table: str, files: list[Path], start: int, end: int, node: Node) -> None:
    """Footers say which blocks each file covers, with the node's hashes; together the files
    cover start..end with no gap or overlap, and each file's rows lie in its range."""
    ranges = []
    for path in files:
        match = _FILE_NAME.match(path.name)
        assert match, f"bad file name {path.name}"
        footer = pq.read_metadata(path)
        kv = {k.decode(): v.decode() for k, v in (footer.metadata or {}).items()}
        assert kv.get("parent_file_ids") == "[]" and kv.get("generation") == "0", kv.keys()
        meta = json.loads(kv["nozzle_metadata"])
        assert meta["table"] == table and meta["filename"] == path.name
        assert set(meta["created_at"]) == {"secs", "nanos"}
        (block_range,) = meta["ranges"]
        first, last = block_range["numbers"]["start"], block_range["numbers"]["end"]
        assert int(match.group(1)) == first
        assert block_range["network"] == NETWORK
        assert block_range["hash"] == node.raw[last].block["hash"].lower()
        assert block_range["prev_hash"] == node.raw[first].block["parentHash"].lower()
        assert block_range["timestamp"] == int(node.raw[last].block["timestamp"], 16)
        numbers = pq.read_table(path, columns=["_block_num"]).column(0).to_pylist()
        assert all(first <= n <= last for n in numbers), (path.name, first, last, numbers)
        ranges.append((first, last))
    ranges.sort()
    assert ranges[0][0] == start and ranges[-1][1] == end, ranges
    for (_, last), (first, _) in zip(ranges, ranges[1:], strict=False):
        assert first == last + 1, f"{table}: files not contiguous: {ranges}"


def assert_same_tables(got: dict[str, pa.Table], want: dict[str, pa.Table]) -> None:
    for table in TABLES:
        assert got[table].schema.equals(want[table].schema), table
        if not got[table].equals(want[table]):
            assert_rows_equal(table, got[table].to_pylist(), want[table].to_pylist())
            pytest.fail(f"{table}: tables differ")


# -- the chain holds what the comparisons rely on ---------------------------------------------


def test_chain_covers_the_cases(node: Node) -> None:
    txs, logs, blocks = (node.expected[t] for t in ("transactions", "logs", "blocks"))
    types = {row["type"] for row in txs}
    assert types == ({0, 1, 2, 3, 4} if node.chain.hardfork == "prague" else {0, 1, 2})
    assert any(row["to"] is None for row in txs)  # contract creation
    assert any(row["status"] is False for row in txs)  # a reverted tx
    assert [row["access_list"] for row in txs if row["type"] == 0] == [None, None]
    assert any(row["access_list"] == [] for row in txs if row["type"] == 2)
    entries = [e for row in txs for e in row["access_list"] or []]
    assert any(e["storage_keys"] == [] for e in entries) and any(e["storage_keys"] for e in entries)
    topics = {sum(row[f"topic{i}"] is not None for i in range(4)) for row in logs}
    assert topics == {0, 1, 2, 3, 4}
    assert {row["topic3"] for row in logs} == {None, LOG_TOPICS[3]}
    with_txs = {row["block_num"] for row in txs}
    assert set(node.chain.empty_blocks) <= {row["block_num"] for row in blocks} - with_txs
    multi = [row for row in txs if row["block_num"] == node.chain.multi_tx_block]
    cumulative = [row["gas_used"] for row in multi]
    assert len(multi) == 5 and cumulative == sorted(set(cumulative))
    newer = node.chain.hardfork == "prague"
    mined = blocks[1:]  # anvil's genesis has blob gas fields whatever the hardfork
    for column in ("withdrawals_root", "blob_gas_used", "parent_beacon_root", "requests_hash"):
        assert all((row[column] is not None) == newer for row in mined), column
    if newer:
        (blob,) = [row for row in txs if row["type"] == 3]
        assert blob["blob_versioned_hashes"] and blob["max_fee_per_blob_gas"] > Decimal(0)
        (setcode,) = [row for row in txs if row["type"] == 4]
        assert len(setcode["authorization_list"]) == 1


# -- one dump, checked against the node -------------------------------------------------------


@pytest.mark.parametrize("table", list(TABLES))
def test_every_row_matches_the_node(dumped: DumpOutput, node: Node, table: str) -> None:
    assert_rows_equal(table, dumped.tables[table].to_pylist(), node.expected[table])
    # Timestamps are block seconds x 1e9 exactly (datetimes above keep only microseconds).
    nanos = dumped.tables[table]["timestamp"].cast(pa.int64()).to_pylist()
    seconds = [
        int(node.raw[row["block_num"]].block["timestamp"], 16) for row in node.expected[table]
    ]
    assert nanos == [s * 10**9 for s in seconds]


@pytest.mark.parametrize("table", list(TABLES))
def test_every_file_has_the_contract_schema(dumped: DumpOutput, table: str) -> None:
    for path in dumped.files[table]:
        assert_contract_schema(pq.read_schema(path), table)
    assert_contract_schema(dumped.tables[table].schema, table)


@pytest.mark.parametrize("table", list(TABLES))
def test_files_cover_every_block_with_the_node_hashes(
    dumped: DumpOutput, node: Node, table: str
) -> None:
    assert_files_cover(table, dumped.files[table], 0, node.end, node)


@pytest.mark.parametrize("table", list(TABLES))
def test_rows_are_ordered_by_block_then_index(dumped: DumpOutput, table: str) -> None:
    rows = dumped.tables[table].to_pylist()
    assert all(row["_block_num"] == row["block_num"] for row in rows)
    index = _INDEX[table]
    keys = [(row["block_num"], row[index] if index else 0) for row in rows]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    if index:  # indexes count from 0 in each block, without gaps
        by_block: dict[int, list[int]] = {}
        for block, i in keys:
            by_block.setdefault(block, []).append(i)
        assert all(v == list(range(len(v))) for v in by_block.values()), by_block


def test_layout_and_summary(dumped: DumpOutput, node: Node) -> None:
    summary = dumped.summary
    assert summary["blocks"] == node.end + 1
    assert summary["rows"] == {t: len(node.expected[t]) for t in TABLES}
    assert summary["files"] == sum(len(f) for f in dumped.files.values())
    assert summary["output"] == str(dumped.data_dir / NAMESPACE / DATASET)
    revisions = {path.parent.name for files in dumped.files.values() for path in files}
    assert len(revisions) == 1  # the three tables of one dump share a revision
    for table, files in dumped.files.items():
        for path in files:
            assert path.parent.parent == dumped.data_dir / NAMESPACE / DATASET / table


def test_a_middle_range_holds_exactly_its_blocks(node: Node, tmp_path: Path) -> None:
    start, end = node.chain.multi_tx_block, node.end - 1
    out = run_dump(write_inputs(tmp_path, node.anvil.url), tmp_path / "data", start, end)
    for table in TABLES:
        want = [row for row in node.expected[table] if start <= row["block_num"] <= end]
        assert_rows_equal(table, out.tables[table].to_pylist(), want)
        assert_files_cover(table, out.files[table], start, end, node)


# -- provider settings do not change the output -----------------------------------------------

VARIANTS = [
    pytest.param({"rpc_batch_size": 1}, ("--chunk-blocks", "2"), id="batch-1"),
    pytest.param({"rpc_batch_size": 50}, (), id="batch-50"),
    pytest.param({"fetch_receipts_per_tx": True}, (), id="receipts-per-tx"),
    pytest.param(
        {"fetch_receipts_per_tx": True, "rpc_batch_size": 50}, (), id="receipts-per-tx-batch-50"
    ),
]


@pytest.mark.parametrize(("provider", "args"), VARIANTS)
def test_provider_settings_give_identical_output(
    dumped: DumpOutput,
    node: Node,
    tmp_path: Path,
    provider: dict[str, Any],
    args: tuple[str, ...],
) -> None:
    # Through a pass-through proxy, to see that the setting really changed the requests.
    with FaultProxy(node.anvil.url) as proxy:
        inputs = write_inputs(tmp_path, proxy.url, **provider)
        out = run_dump(inputs, tmp_path / "data", 0, node.end, *args)
    assert_same_tables(out.tables, dumped.tables)
    calls = proxy.calls
    if provider.get("fetch_receipts_per_tx"):
        assert calls["eth_getBlockReceipts"] == 0
        assert calls["eth_getTransactionReceipt"] == len(node.expected["transactions"])
    else:
        # Each block's receipts are asked for beside the block, empty blocks included.
        assert calls["eth_getTransactionReceipt"] == 0
        assert calls["eth_getBlockReceipts"] == node.end + 1
    if provider.get("rpc_batch_size", 0) > 1:
        assert proxy.requests < sum(calls.values())  # calls went in batches


# -- many files: the engine in-process with a tiny file size ----------------------------------


async def _extract(node: Node, tmp: Path, settings: WriterSettings) -> list[list[ClosedFile]]:
    inputs: DumpInputs = write_inputs(tmp, node.anvil.url)
    manifest = parse_manifest(inputs.manifest.read_bytes())
    revision = new_revision()
    target = ExtractionTarget(
        network=NETWORK,
        schemas=manifest.schemas,
        store=open_store(tmp / "data"),
        writer=settings,
        table_prefixes={t: f"{NAMESPACE}/{DATASET}/{t}/{revision}" for t in TABLES},
    )
    groups: list[list[ClosedFile]] = []

    async def commit(group: list[ClosedFile]) -> None:
        groups.append(list(group))

    providers = providers_for(manifest, inputs.providers_dir)
    async with open_source(manifest.kind, providers, max_attempts=5) as source:
        last = await extract_range(
            source,
            target,
            0,
            node.end,
            commit,
            tuning=Tuning(chunk_blocks=1, chunks_in_flight=2),
        )
    assert last == node.end
    return groups


def _group_tables(tmp: Path, groups: list[list[ClosedFile]]) -> dict[str, list[Path]]:
    files: dict[str, list[Path]] = {t: [] for t in TABLES}
    for group in groups:
        for f in group:
            files[f.table].append(tmp / "data" / f.key)
    return files


async def test_file_rollover_keeps_tables_aligned_and_complete(
    node: Node, dumped: DumpOutput, tmp_path: Path
) -> None:
    one = await _extract(node, tmp_path / "one", WriterSettings())
    assert [[(f.table, f.start_block, f.end_block) for f in g] for g in one] == [
        [(t, 0, node.end) for t in TABLES]
    ]
    tiny = WriterSettings(max_file_bytes=1024, max_row_group_bytes=256)
    many = await _extract(node, tmp_path / "many", tiny)
    assert len(many) >= 3, f"only {len(many)} file groups: the size limit did not roll files"

    # Each group holds one file per table, all covering the same blocks; groups follow
    # each other without a gap from block 0 to the end.
    next_block = 0
    for group in many:
        assert [f.table for f in group] == list(TABLES)
        assert len({(f.start_block, f.end_block, f.hash, f.prev_hash) for f in group}) == 1
        first = group[0]
        assert first.start_block == next_block
        assert first.hash == node.raw[first.end_block].block["hash"].lower()
        assert first.prev_hash == node.raw[first.start_block].block["parentHash"].lower()
        next_block = first.end_block + 1
    assert next_block == node.end + 1

    one_files, many_files = (
        _group_tables(tmp_path / "one", one),
        _group_tables(tmp_path / "many", many),
    )
    for table in TABLES:
        assert_files_cover(table, many_files[table], 0, node.end, node)
        union = read_table(many_files[table], TABLES[table])
        single = read_table(one_files[table], TABLES[table])
        assert union.equals(single), table
        assert union.equals(dumped.tables[table]), table
        assert_rows_equal(table, union.to_pylist(), node.expected[table])
