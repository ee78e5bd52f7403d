"""`"ns/name".eth_call(...)` through the SQL engine against a contract on a real anvil.

The contract keeps one word: a call with no input returns it, a call with a 32-byte input
stores it (sent as a transaction), any other input reverts with the 4 bytes `deadbeef`.
Each answer is compared with what anvil itself says to the same eth_call.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from ampd.sql.catalog import CatalogSnapshot, RevisionTables
from ampd.sql.engine import Limits, QueryError, classify, plan
from support.anvil import DEV_ACCOUNTS, Anvil
from support.chain import assemble, deploy_code, wait_for_receipt

REVERT_DATA = bytes.fromhex("deadbeef")
STORE_RUNTIME = assemble(
    [
        "CALLDATASIZE", "ISZERO", ("PUSH_LABEL", "read"), "JUMPI",
        ("PUSH", 32), "CALLDATASIZE", "EQ", ("PUSH_LABEL", "write"), "JUMPI",
        ("PUSH", REVERT_DATA), ("PUSH", 0), "MSTORE", ("PUSH", 4), ("PUSH", 28), "REVERT",
        ("LABEL", "read"), ("PUSH", 0), "SLOAD", ("PUSH", 0), "MSTORE",
        ("PUSH", 32), ("PUSH", 0), "RETURN",
        ("LABEL", "write"), ("PUSH", 0), "CALLDATALOAD", ("PUSH", 0), "SSTORE", "STOP",
    ]
)  # fmt: skip
DATASET = "test/chain"


@pytest.fixture(scope="module")
def node() -> Iterator[dict]:
    """anvil with the contract, its word set to 7 and then to 9 in two later blocks."""
    with Anvil() as anvil:
        sender = DEV_ACCOUNTS[0]
        deploy = anvil.send({"from": sender, "data": "0x" + deploy_code(STORE_RUNTIME).hex()})
        contract = wait_for_receipt(anvil, deploy)["contractAddress"]
        blocks = {}
        for value in (7, 9):
            tx = anvil.send({"from": sender, "to": contract, "data": "0x" + f"{value:064x}"})
            blocks[value] = int(wait_for_receipt(anvil, tx)["blockNumber"], 16)
        yield {"anvil": anvil, "contract": contract, "blocks": blocks}


def snapshot_with_provider(url: str, folder: Path) -> CatalogSnapshot:
    """The dataset (under two references) on network anvil, one provider file for `url`."""
    folder.mkdir()
    (folder / "anvil.toml").write_text(f'kind = "evm-rpc"\nnetwork = "anvil"\nurl = "{url}"\n')
    revision = RevisionTables("0" * 64, {}, "evm-rpc", "anvil")
    return CatalogSnapshot(
        {DATASET: revision, f"{DATASET}@1.0.0": revision}, providers_dir=str(folder)
    )


@pytest.fixture
def snapshot(node: dict, tmp_path: Path) -> CatalogSnapshot:
    return snapshot_with_provider(node["anvil"].url, tmp_path / "providers")


def run(sql: str, snapshot: CatalogSnapshot) -> list[dict]:
    """The rows of `sql`; a failure while it runs classified as the server does."""
    frame = plan(sql, snapshot, Limits())
    try:
        batches = frame.collect()
    except Exception as exc:  # noqa: BLE001 - DataFusion raises one type for all errors
        raise classify(exc, snapshot) from None
    return pa.Table.from_batches(batches).to_pylist()


def node_says(node: dict, data: str | None, block: str) -> dict:
    """What anvil answers to the same eth_call, as Amp's struct: data and message."""
    tx = {"to": node["contract"], **({"input": data} if data is not None else {})}
    answer = node["anvil"].rpc_raw("eth_call", tx, block)
    if "error" in answer:
        error = answer["error"]
        raw = error.get("data")
        return {
            "data": bytes.fromhex(raw[2:]) if isinstance(raw, str) else None,
            "message": error.get("message") or None,
        }
    return {"data": bytes.fromhex(answer["result"][2:]), "message": None}


def call_sql(node: dict, input_sql: str, block_sql: str, ref: str = DATASET) -> str:
    return (
        f"SELECT \"{ref}\".eth_call(NULL, evm_encode_hex('{node['contract']}'), {input_sql}, "
        f"{block_sql}) AS r"
    )


def test_reads_the_state_at_each_block_as_the_node_does(node: dict, snapshot) -> None:  # noqa: ANN001
    seven, nine = node["blocks"][7], node["blocks"][9]
    for block, word in ((seven - 1, 0), (seven, 7), (nine, 9)):
        for block_sql in (
            f"'{block}'",
            str(block),
            f"'{hex(block)}'",
            f"arrow_cast({block}, 'UInt64')",
        ):
            rows = run(call_sql(node, "NULL", block_sql), snapshot)
            assert rows == [{"r": {"data": word.to_bytes(32, "big"), "message": None}}]
            assert rows[0]["r"] == node_says(node, None, hex(block))
    latest = run(call_sql(node, "NULL", "'latest'"), snapshot)
    assert latest[0]["r"]["data"] == (9).to_bytes(32, "big")


def test_a_revert_answers_its_data_and_message(node: dict, snapshot) -> None:  # noqa: ANN001
    rows = run(call_sql(node, "X'01'", "'latest'"), snapshot)
    expected = node_says(node, "0x01", "latest")
    assert expected["data"] == REVERT_DATA and expected["message"]
    assert rows == [{"r": expected}]
    # The struct's fields are reachable as Amp's docs write them.
    sql = (
        f"SELECT (\"{DATASET}\".eth_call(NULL, evm_encode_hex('{node['contract']}'), X'01', "
        "'latest')).message AS m"
    )
    assert run(sql, snapshot) == [{"m": expected["message"]}]


def test_many_rows_one_answer_each(node: dict, snapshot) -> None:  # noqa: ANN001
    seven, nine = node["blocks"][7], node["blocks"][9]
    sql = (
        f"SELECT b, \"{DATASET}@1.0.0\".eth_call(NULL, evm_encode_hex('{node['contract']}'), "
        "NULL, b) AS r FROM (SELECT arrow_cast(column1, 'UInt64') AS b FROM (VALUES "
        + ", ".join(f"({b})" for b in (seven, nine, seven, nine - 1))
        + ")) ORDER BY b"
    )
    rows = run(sql, snapshot)
    words = {seven: 7, nine - 1: 7, nine: 9}
    assert [(r["b"], r["r"]["data"]) for r in rows] == sorted(
        (b, words[b].to_bytes(32, "big")) for b in (seven, nine, seven, nine - 1)
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ("evm_encode_hex('{c}'), evm_encode_hex('{c}'), X'01', 'latest'", None),
        ("X'01', evm_encode_hex('{c}'), NULL, 'latest'", "'from' address is not a valid address"),
        ("NULL, X'01', NULL, 'latest'", "'to' address is not a valid address"),
        ("NULL, evm_encode_hex('{c}'), 'ab', 'latest'", "input data is not a valid data"),
        (
            "NULL, evm_encode_hex('{c}'), NULL, 1.5",
            "'block' is not a valid block number or tag: Float64",
        ),
        ("NULL, evm_encode_hex('{c}'), NULL", "expected 4 arguments, but got 3"),
    ],
)
def test_argument_types_amp_refuses(node: dict, snapshot, args: str, message: str | None) -> None:  # noqa: ANN001
    sql = f'SELECT "{DATASET}".eth_call({args.format(c=node["contract"])}) AS r'
    if message is None:  # a sender is allowed
        assert run(sql, snapshot)[0]["r"]["message"]
        return
    with pytest.raises(QueryError) as refused:
        run(sql, snapshot)
    assert refused.value.code == "INVALID_PLAN"
    assert str(refused.value) == f'"{DATASET}".eth_call: {message}'


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("'soon'", 'block is not a valid integer, "0x" prefixed hex integer, or tag'),
        ("arrow_cast(NULL, 'Utf8')", "'block' is NULL"),
        ("-1", "block number cannot be negative: -1"),
    ],
)
def test_bad_blocks_fail_the_query(node: dict, snapshot, block: str, message: str) -> None:  # noqa: ANN001
    with pytest.raises(QueryError) as failed:
        run(call_sql(node, "NULL", block), snapshot)
    assert message in str(failed.value)
    assert "Traceback" not in str(failed.value)


def test_unknown_dataset_and_missing_providers(node: dict, snapshot, tmp_path: Path) -> None:  # noqa: ANN001
    with pytest.raises(QueryError) as missing:
        run(call_sql(node, "NULL", "'latest'", ref="test/nope"), snapshot)
    assert missing.value.code == "DATASET_NOT_FOUND"
    empty = tmp_path / "none"
    empty.mkdir()
    bare = CatalogSnapshot(snapshot.schemas, providers_dir=str(empty))
    with pytest.raises(QueryError) as no_provider:
        run(call_sql(node, "NULL", "'latest'"), bare)
    assert str(no_provider.value).startswith(f'"{DATASET}".eth_call: ')
    assert "anvil" in str(no_provider.value)


def test_a_dead_provider_answers_unexpected_rpc_error(node: dict, tmp_path: Path) -> None:
    from support.anvil import free_port

    snapshot = snapshot_with_provider(f"http://127.0.0.1:{free_port()}", tmp_path / "gone")
    rows = run(call_sql(node, "NULL", "'latest'"), snapshot)
    assert rows == [{"r": {"data": None, "message": "unexpected rpc error"}}]
    assert json.dumps(rows, default=str)
